"""The co-simulation as a :class:`mesa.Model`: one model step is one control interval.

Its agents are the plant and one :class:`NodeAgent` per control agent (the agent itself when it
runs in this process, a proxy of an out-of-process agent otherwise: the model only sees what the
plant node learnt about it). What an interval does — measurements out, setpoints in, plant steps
— is the ``run_interval`` callable the experiment runner gives (this module may not import the
agents); the model steps it, keeps each node's latest state, and its :class:`mesa.DataCollector`
produces the per-interval tables of the results folder:

- model level (``steps.parquet``): interval, time, voltage band and worst deviation over the
  interval's plant steps, violation bus-hours, energy losses, and whatever interval counters the
  runner reports (messages sent, lost, late; agents in fallback);
- agent level (``agent_steps.parquet``): per interval and node, the state the runner reports
  (setpoint arrival, lost / late, age of information, rounds, fallback).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import mesa
import numpy as np
import pandas as pd

from clustersim.sim.plant import Plant

__all__ = ["AGENT_FIELDS", "CoSimModel", "NodeAgent"]

AGENT_FIELDS = (
    "role",
    "setpoint_received",
    "lost",
    "late",
    "t_arrival_s",
    "age_of_information_s",
    "rounds_completed",
    "fallback",
)

IntervalFn = Callable[[int], Mapping[str, Any]]
"""``run_interval(n)`` → ``{"nodes": {name: state}, "counters": {name: number}}``"""


class NodeAgent(mesa.Agent):
    """The plant or one control agent (or its proxy); ``state`` is its latest interval state."""

    def __init__(self, model: CoSimModel, name: str, role: str) -> None:
        super().__init__(model)
        self.name = name
        self.role = role
        self.state: dict[str, Any] = {"role": role}

    def field(self, key: str) -> Any:
        """Value of ``key`` in the node's latest interval state (None when absent)."""
        return self.state.get(key)


class CoSimModel(mesa.Model):
    """The co-simulation (see module docstring). ``nodes``: agent names in a fixed order."""

    def __init__(
        self,
        plant: Plant,
        nodes: Sequence[str],
        run_interval: IntervalFn,
        *,
        interval_s: int,
        vm_min_pu: float = 0.95,
        vm_max_pu: float = 1.05,
        seed: int = 0,
    ) -> None:
        super().__init__(seed=seed)
        self.plant = plant
        self.run_interval = run_interval
        self.interval_s = int(interval_s)
        self.spi = max(1, self.interval_s // plant.plant_step_s)
        self.n_intervals = -(-plant.n_steps // self.spi)
        self.vm_min_pu = vm_min_pu
        self.vm_max_pu = vm_max_pu
        self.interval = 0
        self.counters: dict[str, Any] = {}
        self.kpis: dict[str, float] = {}
        self.plant_node = NodeAgent(self, "plant", "plant")
        self.nodes = {name: NodeAgent(self, name, "agent") for name in nodes}
        model_reporters: dict[str, Any] = {
            "interval": lambda m: m.interval,
            "time_h": lambda m: m.interval * m.interval_s / 3600.0,
        }
        for key in ("vm_min_pu", "vm_max_pu", "max_abs_dev_pu", "violation_bus_h", "losses_mwh"):
            model_reporters[key] = _kpi_reporter(key)
        self._counter_rows: list[dict[str, Any]] = []
        self.datacollector = mesa.DataCollector(
            model_reporters=model_reporters,
            agent_reporters={"node": "name", **{f: _agent_reporter(f) for f in AGENT_FIELDS}},
        )

    def step(self) -> None:
        """One control interval."""
        n = self.interval
        k0 = self.plant.step_index
        out = self.run_interval(n)
        for name, state in out.get("nodes", {}).items():
            agent = self.plant_node if name == "plant" else self.nodes.get(name)
            if agent is not None:
                agent.state = {"role": agent.role, **state}
        self.counters = dict(out.get("counters", {}))
        self._counter_rows.append(self.counters)
        self.kpis = self._interval_kpis(k0, self.plant.step_index)
        self.datacollector.collect(self)
        self.interval += 1
        if self.interval >= self.n_intervals or self.plant.step_index >= self.plant.n_steps:
            self.running = False

    def _interval_kpis(self, k0: int, k1: int) -> dict[str, float]:
        rec = self.plant.record
        ok = rec.converged[k0:k1]
        vm = rec.vm_pu[k0:k1][ok]
        dt_h = self.plant.dt_h
        if not vm.size or np.all(np.isnan(vm)):
            return {k: float("nan") for k in ("vm_min_pu", "vm_max_pu", "max_abs_dev_pu")} | {
                "violation_bus_h": 0.0,
                "losses_mwh": 0.0,
            }
        with np.errstate(invalid="ignore"):
            viol = float(np.sum((vm < self.vm_min_pu) | (vm > self.vm_max_pu)) * dt_h)
        return {
            "vm_min_pu": float(np.nanmin(vm)),
            "vm_max_pu": float(np.nanmax(vm)),
            "max_abs_dev_pu": float(np.nanmax(np.abs(vm - 1.0))),
            "violation_bus_h": viol,
            "losses_mwh": float(np.nansum(rec.p_loss_mw[k0:k1][ok]) * dt_h),
        }

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(steps, agent_steps)``: the DataCollector's model and agent tables, with the
        runner's interval counters as extra model columns."""
        model = self.datacollector.get_model_vars_dataframe().reset_index(drop=True)
        counters = pd.DataFrame(self._counter_rows)
        if len(counters) == len(model):
            model = pd.concat([model, counters], axis=1)
        agents = self.datacollector.get_agent_vars_dataframe().reset_index()
        agents = agents.rename(columns={"Step": "model_step", "AgentID": "agent_id"})
        return model, agents


def _kpi_reporter(key: str) -> Callable[[CoSimModel], float]:
    return lambda m: m.kpis.get(key, float("nan"))


def _agent_reporter(key: str) -> Callable[[NodeAgent], Any]:
    return lambda a: a.state.get(key)
