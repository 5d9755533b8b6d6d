"""In-process control loop: the plant and the controllers of a control mode in simulated time.

Time model (DESIGN.md): the plant runs at its step (default 60 s); at the start of every control
interval (default 900 s) each optimizing controller reads the plant's last measurement, decides,
and its setpoints take effect at that plant step. In this in-process loop no message is delayed
or lost (issue 5 adds the broker and the channel model); compute time is not simulated, the
measured solve time is reported.

``local`` mode runs the Volt-VAR droop and the OLTC line-drop compensation
(:mod:`clustersim.agents.local`) after every plant step instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from clustersim.agents.control import ControlSettings, Decision, build_controllers
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
    "messages_sent",
)
"""columns of control.parquet in a run over a transport (clustersim.cosim)"""

OPTIMIZING_MODES = ("centralized", "clustered", "active-only", "reactive-only")


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
            # agents that run in parallel (issue 5) wait only for the slowest one per interval
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


def _log_decision(log: ControlLog, d: Decision, time_s: float) -> None:
    r = d.result
    log.rows.append(
        {
            "interval": d.interval,
            "time_s": time_s,
            "controller": d.controller,
            "n_var": d.n_var,
            "f_voltage_pu": float(r.f[0]),
            "f_loss_mw": float(r.f[1]),
            "f_cost": float(r.f[2]),
            "cv": float(r.cv),
            "feasible": bool(r.cv <= 1e-12),
            "solve_time_s": float(d.solve_time_s),
            "evaluations": int(r.evaluations),
            "generations": int(r.generations),
            "vm_pred_min_pu": float(np.min(d.vm_pred_pu)) if d.vm_pred_pu.size else np.nan,
            "vm_pred_max_pu": float(np.max(d.vm_pred_pu)) if d.vm_pred_pu.size else np.nan,
            "setpoints": json.dumps(d.setpoints, sort_keys=True),
        }
    )
    log.fronts[(d.interval, d.controller)] = (r.front_f, r.f, r.population_f, r.population_cv)


def run_control(
    plant: Plant,
    mode: str,
    settings: ControlSettings,
    *,
    clusters: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    local_settings: Any = None,
    progress: Callable[[int], None] | None = None,
) -> ControlLog:
    """Run the plant to the end of its horizon under control mode ``mode``."""
    log = ControlLog()
    if mode == "none":
        plant.run(progress=progress)
        return log
    if mode == "local":
        from clustersim.agents.local import LocalController

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
    if mode not in OPTIMIZING_MODES:
        raise ValueError(f"unknown control mode {mode!r}")
    controllers = build_controllers(plant, mode, settings, clusters=clusters, seed=seed)
    log.controllers = [c.name for c in controllers]
    spi = max(1, settings.interval_s // plant.plant_step_s)
    while plant.step_index < plant.n_steps:
        k = plant.step_index
        if k % spi == 0:
            meas = plant.measure()
            for c in controllers:
                d = c.decide(k // spi, meas)
                _log_decision(log, d, float(k * plant.plant_step_s))
                _apply(plant, d.setpoints, log)
        plant.step()
        if progress is not None:
            progress(plant.step_index)
    return log
