"""Fixtures shared by the agents' tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from clustersim.agents.control import ControlSettings, build_controllers
from clustersim.agents.node import find_ties
from clustersim.sim import cases, profiles
from clustersim.sim.plant import Plant
from clustersim.sim.resources import load_preset


@pytest.fixture(scope="session")
def clusters33() -> dict[str, list[int]]:
    """The HI partition of ieee33 (5 clusters, 3-10 buses) as bus indices; C1 holds the slack."""
    return {
        "C1": [0, 1, 2, 3, 4, 18, 19, 20, 21],
        "C2": [5, 25, 26, 27, 28, 29, 30, 31, 32],
        "C3": [6, 7, 8, 9, 10, 11],
        "C4": [12, 13, 14, 15, 16, 17],
        "C5": [22, 23, 24],
    }


CHAIN_DEVICES = ("OLTC", "CB1", "CB2")
CHAIN_CHILD = list(range(6, 18))
"""ieee33 buses 7-18 (the main feeder's far end, with CB2) below the tie 6 → 7; the root holds
the slack, the OLTC and CB1"""
SUMSQ = ControlSettings(
    pop_size=16,
    generations=20,
    patience=0,
    compromise="weighted",
    weights=(1.0, 0.0, 0.0),
    voltage_objective="sumsq",
)
"""a criterion that decomposes over the tree: the sum of squared deviations, the voltage band as a
constraint (feasible first), the weighted compromise on deviation alone; a budget (16 × 21
evaluations) that lets every problem of the chain be enumerated"""


@dataclass
class Chain:
    """The two-cluster chain: measurement, cluster controllers, the central controller, the
    tie."""

    meas: Any
    ctls: dict[str, Any]
    central: Any
    tie: Any

    def joint(self, setpoints):
        """The whole network's (F, G) for the clusters' setpoints together."""
        prep = self.central.prepare(80, self.meas)
        x = np.array([setpoints[lv.device][lv.quantity] for lv in self.central.active])
        F, G, _ = prep.problem.objectives(x[None, :])
        return F[0], G[0]

    def optimum(self):
        """The enumerated centralized optimum of f1 over the feasible decisions (and the
        number of decisions enumerated)."""
        prep = self.central.prepare(80, self.meas)
        X = prep.optimizer.candidates()
        F, G, _ = prep.problem.objectives(X)
        feasible = np.maximum(G, 0).sum(axis=1) <= 0
        return F[feasible, 0].min(), len(X)


@pytest.fixture(scope="module")
def chain():
    """ieee33 with only the OLTC and two capacitor banks, at 20:00 (interval 80): both
    clusters' and the whole network's decisions are small enough to be enumerated."""
    rs = load_preset("ieee33-ev")
    rs = rs.model_copy(update={"devices": [d for d in rs.devices if d.name in CHAIN_DEVICES]})
    plant = Plant(cases.load_case(rs.case), rs, profiles.synthetic(1, seed=3), plant_step_s=900)
    plant.run(80)
    root = [b for b in range(33) if b not in CHAIN_CHILD]
    clusters = {"C1": root, "C2": CHAIN_CHILD}
    ctls = {c.name: c for c in build_controllers(plant, "clustered", SUMSQ, clusters=clusters)}
    (central,) = build_controllers(plant, "centralized", SUMSQ)
    (tie,) = find_ties(plant.net, clusters)
    return Chain(plant.measure(), ctls, central, tie)
