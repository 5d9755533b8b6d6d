"""The in-process loop of the control modes without agents, and the control log of a run.

``none``: the plant runs its horizon with every device at its initial setting. ``local``: after
every plant step, the Volt-VAR droop at inverters and SVCs and the OLTC / regulator line-drop
compensation (:mod:`clustersim.agents.local`) set the devices from their own buses' voltages.
The optimizing modes run as a co-simulation (:mod:`clustersim.cosim.run`); their decisions fill
the same :class:`ControlLog`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from clustersim.agents.local import LocalController, LocalSettings
from clustersim.errors import MessageError
from clustersim.sim.plant import Plant

__all__ = ["ControlLog", "run_control"]

EXTRA_COLUMNS = (
    "solves",
    "compute_s",
    "t_sent_s",
    "applied_step",
    "lost",
    "late",
    "age_of_information_s",
    "rounds_attempted",
    "rounds_completed",
    "boundary_pred_vm_pu",
    "boundary_used_vm_pu",
    "table_age",
    "messages_sent",
)
"""columns of control.parquet in a run over a transport (:mod:`clustersim.cosim.run`)"""


@dataclass
class ControlLog:
    """What the controllers decided, one row per control step and controller."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    fronts: dict[tuple[int, str], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict
    )
    """(interval, controller) → (front objectives, chosen objectives, final population's
    objectives, its constraint violations), for the Pareto figures"""
    rejected: list[str] = field(default_factory=list)
    controllers: list[str] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        """``control.parquet``: one row per control step and controller."""
        cols = [
            "interval",
            "time_s",
            "controller",
            "n_var",
            "f_voltage_pu",
            "f_loss_mw",
            "f_cost",
            "cv",
            "feasible",
            "solve_time_s",
            "evaluations",
            "generations",
            "vm_pred_min_pu",
            "vm_pred_max_pu",
            "setpoints",
        ]
        extra = [c for c in EXTRA_COLUMNS if self.rows and c in self.rows[0]]
        return pd.DataFrame(self.rows, columns=cols + extra)

    def totals(self) -> dict[str, Any]:
        """The control KPIs of ``summary.json`` (wall time, critical path, evaluations, ...)."""
        if not self.rows:
            return {
                "control_wall_time_s": 0.0,
                "control_critical_path_s": 0.0,
                "evaluations": 0,
                "control_steps": 0,
                "generations_mean": 0.0,
            }
        df = self.frame()
        return {
            "control_wall_time_s": round(float(df.solve_time_s.sum()), 3),
            # agents that run in parallel wait only for the slowest one per interval
            "control_critical_path_s": round(
                float(df.groupby("interval").solve_time_s.max().sum()), 3
            ),
            "evaluations": int(df.evaluations.sum()),
            "control_steps": int(df.interval.nunique()),
            "generations_mean": round(float(df.generations.mean()), 2),
        }


def _apply(plant: Plant, setpoints: Mapping[str, Mapping[str, float]], log: ControlLog) -> None:
    for dev, values in setpoints.items():
        try:
            plant.set_setpoint(dev, **values)
        except MessageError as exc:  # a decision outside a device's range: counted, dropped
            log.rejected.append(str(exc))


def run_control(
    plant: Plant,
    mode: str,
    *,
    local_settings: LocalSettings | None = None,
    progress: Callable[[int], None] | None = None,
) -> ControlLog:
    """Run the plant to the end of its horizon under control mode ``none`` or ``local``."""
    log = ControlLog()
    if mode == "none":
        plant.run(progress=progress)
        return log
    if mode == "local":
        local = LocalController(
            plant.net,
            plant.resources,
            plant.where,
            settings=local_settings,
            plant_step_s=plant.plant_step_s,
        )
        log.controllers = ["local"]
        while plant.step_index < plant.n_steps:
            k = plant.step_index
            plant.step()
            sp = local.setpoints(plant.measure())
            if sp:
                log.rows.append(
                    {
                        "interval": k,
                        "time_s": float(k * plant.plant_step_s),
                        "controller": "local",
                        "n_var": len(sp),
                        "setpoints": json.dumps(sp, sort_keys=True),
                    }
                )
            _apply(plant, sp, log)
            if progress is not None:
                progress(plant.step_index)
        return log
    raise ValueError(f"mode {mode!r} runs as a co-simulation, not in this loop")
