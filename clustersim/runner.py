"""The runner: a validated scenario in, a complete results folder out.

Results folder: ``scenario.toml`` (fully resolved, with seed and package versions),
``summary.json`` (KPIs), ``timeseries.parquet`` (bus voltages, line loadings and device states per
plant step), ``figures/voltage_heatmap.png``. Every file is written to a temporary name in the
same folder and moved into place, so a killed run leaves each file either complete or absent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import tomli_w

from clustersim.agents.control import CLUSTER_MODES, OPTIMIZING_MODES
from clustersim.assemble.build import (
    build_plant,
    clusters_of,
    control_settings,
    package_versions,
    scenario_partition,
)
from clustersim.assemble.seeds import Stage, stage_seed
from clustersim.broker.transport import without_password
from clustersim.cosim.local_loop import ControlLog, run_control
from clustersim.cosim.run import CosimResult, run_cosim
from clustersim.errors import PartitionError, ScenarioError
from clustersim.fileio import atomic_write
from clustersim.results.figures import draw_run_figures, pareto_frame
from clustersim.results.partition import write_partition
from clustersim.results.report import write_report
from clustersim.results.tables import MESSAGE_COLUMNS, WALL_CLOCK_COLUMNS, WALL_CLOCK_KEYS
from clustersim.scenario import Scenario, resolved_dict
from clustersim.sim import kpi
from clustersim.sim.plant import Plant, PlantRecord

__all__ = ["RunResult", "default_out_dir", "run_scenario", "write_results"]


@dataclass
class RunResult:
    """A finished run: its ``summary.json`` content and its results folder."""

    summary: dict[str, Any]
    out_dir: Path


def default_out_dir(scenario: Scenario, root: Path = Path("results")) -> Path:
    """``results/<scenario>-seed<seed>-<timestamp>``: a run's default results folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return root / f"{scenario.name or 'run'}-seed{scenario.run.seed}-{stamp}"


def write_results(
    out_dir: Path,
    scenario: Scenario,
    summary: dict[str, Any],
    record: PlantRecord,
    control: ControlLog | None = None,
    cosim: CosimResult | None = None,
) -> None:
    """Write the results folder (each file atomically): the tables first, then the figures
    drawn from those tables (:func:`clustersim.results.figures.draw_run_figures`), then
    ``report.html``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = resolved_dict(scenario)
    if doc.get("comm", {}).get("broker"):  # no secret in any output
        doc["comm"]["broker"] = without_password(doc["comm"]["broker"])
    doc["provenance"] = {**package_versions(), "seed": str(scenario.run.seed)}
    with atomic_write(out_dir / "scenario.toml", "wb") as fh:
        tomli_w.dump(doc, fh)
    with atomic_write(out_dir / "summary.json") as fh:
        json.dump(summary, fh, indent=2, sort_keys=False)
        fh.write("\n")
    tables: dict[str, pd.DataFrame | None] = {
        "timeseries": record.to_frame().iloc[: summary["steps"]]
    }
    if cosim is not None:
        tables["messages"] = pd.DataFrame(cosim.message_rows, columns=MESSAGE_COLUMNS)
        tables["steps"] = cosim.steps
        tables["agent_steps"] = cosim.agent_steps
    if control is not None and control.rows:
        tables["control"] = control.frame()
        if control.fronts:
            tables["pareto"] = pareto_frame(control.fronts)
    for name, frame in tables.items():
        if frame is not None:
            with atomic_write(out_dir / f"{name}.parquet", "wb") as fh:
                frame.to_parquet(fh, index=False)
    draw_run_figures(out_dir)
    write_report(out_dir, "run")


def _partition(
    scenario: Scenario, out_dir: Path
) -> tuple[dict[str, Any], dict[str, list[int]] | None]:
    """The ``[partition]`` table's clusters, written for every run (``partition.json`` and its
    figure). Returns the summary's ``partition`` entry and, for the cluster modes, the agents'
    clusters. Only the cluster modes need a partition: elsewhere one that cannot be made is
    recorded in the summary, not fatal."""
    mode = scenario.control.mode
    try:
        part, pctx = scenario_partition(scenario)
    except PartitionError as exc:
        if mode in CLUSTER_MODES:
            raise ScenarioError(str(exc), key="partition") from None
        return {"method": scenario.partition.method, "error": str(exc)}, None
    write_partition(part, pctx, out_dir)
    info = {
        "method": part.method,
        "k": part.k,
        "tau": part.metrics["tau"],
        "rho": part.metrics["rho"],
        **{k: bool(part.constraints[k]) for k in ("connected", "size_ok", "resources_ok")},
    }
    return info, (clusters_of(part, pctx, mode) if mode in CLUSTER_MODES else None)


def _control(
    scenario: Scenario,
    plant: Plant,
    clusters: dict[str, list[int]] | None,
    progress: Callable[[int], None] | None,
) -> tuple[ControlLog, CosimResult | None]:
    """Run the plant's horizon under the scenario's control mode: a co-simulation for the
    optimizing modes, the in-process loop for ``none`` and ``local``."""
    mode = scenario.control.mode
    if mode not in OPTIMIZING_MODES:
        log = run_control(plant, mode, local_settings=scenario.control.local, progress=progress)
        return log, None
    cosim = run_cosim(
        scenario,
        plant,
        control_settings(scenario),
        clusters=clusters,
        seed=stage_seed(scenario.run.seed, Stage.CONTROL),
        progress=progress,
    )
    log = ControlLog(
        rows=cosim.control_rows,
        fronts=cosim.fronts,
        rejected=cosim.rejected,
        controllers=cosim.controllers,
    )
    return log, cosim


def run_scenario(
    scenario: Scenario,
    out_dir: Path | None = None,
    *,
    on_start: Callable[[int], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> RunResult:
    """Run a scenario to the end and write its results folder."""
    t0 = time.perf_counter()
    plant = build_plant(scenario)
    out_dir = out_dir or default_out_dir(scenario)
    partition_info, clusters = _partition(scenario, out_dir)
    if on_start is not None:
        on_start(plant.n_steps)
    t_ctl = time.perf_counter()
    control, cosim = _control(scenario, plant, clusters, progress)
    loop_s = time.perf_counter() - t_ctl
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "case": scenario.case.name,
        "mode": scenario.control.mode,
        "seed": scenario.run.seed,
        "duration_h": scenario.run.duration_h,
        "plant_step_s": scenario.run.plant_step_s,
        "profiles": plant.profiles.source,
        "resources": plant.resources.counts(),
        "partition": partition_info,
        "controllers": len(control.controllers),
    }
    summary.update(
        kpi.summarize(plant, vm_min_pu=scenario.run.vm_min_pu, vm_max_pu=scenario.run.vm_max_pu)
    )
    summary.update(control.totals())
    summary["setpoints_rejected"] = len(control.rejected)
    if cosim is not None:
        summary.update(cosim.summary)
    summary["run_loop_wall_time_s"] = round(loop_s, 3)
    summary["powerflow_failure_steps"] = list(plant.powerflow_failures)
    summary["wall_time_s"] = round(time.perf_counter() - t0, 3)
    summary["wall_clock_keys"] = [*WALL_CLOCK_KEYS]
    summary["wall_clock_columns"] = {t: [*cols] for t, cols in WALL_CLOCK_COLUMNS.items()}
    write_results(out_dir, scenario, summary, plant.record, control, cosim)
    return RunResult(summary=summary, out_dir=out_dir)
