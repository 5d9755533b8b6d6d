"""The one seeding rule: stage seeds are SeedSequence children of run.seed."""

from __future__ import annotations

import numpy as np
import pytest

from clustersim.assemble.seeds import Stage, spawn_seeds, stage_seed
from clustersim.studies.jobs import repeat_seeds


def test_spawn_seeds_follow_seed_sequence():
    """spawn_seeds(s, n)[i] is SeedSequence(s).spawn(n)[i].generate_state(1)[0]."""
    want = [int(c.generate_state(1)[0]) for c in np.random.SeedSequence(42).spawn(5)]
    assert spawn_seeds(42, 5) == want


def test_child_seeds_do_not_depend_on_sibling_count():
    """Asking for more children keeps the earlier ones (stages and repeats stay stable)."""
    assert spawn_seeds(7, 9)[:4] == spawn_seeds(7, 4)
    assert repeat_seeds(7, 3) == spawn_seeds(7, 3)


def test_stage_seeds_are_distinct_and_seed_dependent():
    """Each stage has its own seed, and another run seed gives other stage seeds."""
    seeds = [stage_seed(1, s) for s in Stage]
    assert len(set(seeds)) == len(Stage)
    assert stage_seed(2, Stage.COMM) != stage_seed(1, Stage.COMM)
    assert stage_seed(1, Stage.CONTROL) == spawn_seeds(1, len(Stage))[Stage.CONTROL]


def test_spawn_seeds_rejects_zero():
    """At least one seed is asked for."""
    with pytest.raises(ValueError):
        spawn_seeds(1, 0)
