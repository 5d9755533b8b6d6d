"""The one seeding rule: every seed of a run is derived from the scenario's ``run.seed`` with
``numpy.random.SeedSequence.spawn``; global random state is never touched.

A spawned child does not depend on how many siblings it has, so ``spawn_seeds(s, n)[i]`` is the
same for every ``n > i``: the pipeline stages below keep their seeds when a stage is added, and
raising the number of repeats of an experiment keeps the earlier repeats' seeds.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

__all__ = ["Stage", "spawn_seeds", "stage_seed"]


class Stage(IntEnum):
    """The pipeline stages, in the order their seeds are spawned from ``run.seed``."""

    PROFILES = 0
    PARTITION = 1
    CONTROL = 2
    COMM = 3


def spawn_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent integer seeds: ``SeedSequence(seed).spawn(n)[i].generate_state(1)[0]``."""
    if n < 1:
        raise ValueError("n must be at least 1")
    return [int(c.generate_state(1)[0]) for c in np.random.SeedSequence(int(seed)).spawn(n)]


def stage_seed(seed: int, stage: Stage) -> int:
    """The seed of pipeline ``stage`` of a run with seed ``seed``."""
    return spawn_seeds(seed, len(Stage))[stage]
