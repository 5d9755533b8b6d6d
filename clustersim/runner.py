"""Experiment runner: a validated scenario in, a complete results folder out.

Results folder (DESIGN.md): ``scenario.toml`` (fully resolved, with seed and package versions),
``summary.json`` (KPIs), ``timeseries.parquet`` (bus voltages, line loadings and device states per
plant step), ``figures/voltage_heatmap.png``. Every file is written to a temporary name in the
same folder and moved into place, so a killed run leaves each file either complete or absent.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tomli_w

from clustersim.errors import PartitionError, ScenarioError
from clustersim.experiments import atomic_write as _atomic
from clustersim.scenario import Scenario, resolved_dict
from clustersim.sim import cases, kpi, profiles, resources
from clustersim.sim.plant import Plant, PlantRecord

__all__ = ["RunResult", "build_plant", "default_out_dir", "run_scenario", "write_results"]

MESSAGE_COLUMNS = [
    "kind",
    "src",
    "dst",
    "step",
    "round",
    "seq",
    "bytes",
    "t_send_s",
    "t_deliver_s",
    "lost",
    "late",
    "rejected",
    "reason",
]
"""columns of messages.parquet: one row per protocol message, as its receiver judged it
(``rejected`` rows: refused by the receiver's guard, ``reason`` says why)"""

IMPLEMENTED_MODES = ("none", "local", "centralized", "clustered", "active-only", "reactive-only")
CLUSTER_MODES = ("clustered", "active-only", "reactive-only")
SIMBENCH_CODES = {
    "simbench-mv-rural": "1-MV-rural--0-sw",
    "simbench-mv-semiurb": "1-MV-semiurb--0-sw",
}
WALL_CLOCK_KEYS = (
    "control_wall_time_s",
    "control_critical_path_s",
    "run_loop_wall_time_s",
    "wall_time_s",
)
"""summary.json keys measured on the wall clock: the only ones that differ between two runs of
the same scenario and seed"""
_VERSIONED = (
    "clustersim",
    "pandapower",
    "numpy",
    "pandas",
    "scipy",
    "pymoo",
    "simbench",
    "networkx",
)


@dataclass
class RunResult:
    summary: dict[str, Any]
    out_dir: Path


def package_versions() -> dict[str, str]:
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def child_seeds(seed: int, n: int = 4) -> list[int]:
    """Independent integer seeds for the pipeline stages (profiles, partition, control, comm),
    derived with ``numpy.random.SeedSequence.spawn`` (the one seeding rule of DESIGN.md)."""
    return [int(c.generate_state(1)[0]) for c in np.random.SeedSequence(seed).spawn(n)]


def resource_set(scenario: Scenario) -> resources.ResourceSet:
    """The scenario's devices: its preset plus any explicit device tables."""
    rc = scenario.resources
    base = resources.load_preset(rc.preset) if rc.preset else resources.ResourceSet()
    extra = {k: v for k, v in rc.model_dump().items() if k != "preset" and v}
    if not extra:
        return base
    added = resources.parse_resources(extra, source="[resources]")
    try:
        return resources.ResourceSet(
            name=base.name,
            case=base.case,
            description=base.description,
            devices=[*base.devices, *added.devices],
        )
    except ValueError as exc:
        raise ScenarioError(str(exc).splitlines()[-1].strip(), key="resources") from None


def build_profiles(scenario: Scenario, seed: int) -> profiles.Profiles:
    pc = scenario.profiles
    days = max(1, math.ceil(scenario.run.duration_h / 24.0))
    if pc.source == "synthetic":
        return profiles.synthetic(days, seed=seed, load_sigma=pc.load_sigma, start_day=pc.day)
    code = pc.simbench_code or SIMBENCH_CODES.get(scenario.case.name, "1-MV-rural--0-sw")
    return profiles.from_simbench(code, day=pc.day, days=days, seed=seed, load_sigma=pc.load_sigma)


def build_plant(scenario: Scenario) -> Plant:
    """Case + resources + profiles → a plant ready to run the scenario's horizon."""
    seeds = child_seeds(scenario.run.seed)
    net = cases.load_case(scenario.case.name)
    res = resource_set(scenario)
    if res.case and res.case != scenario.case.name:
        raise ScenarioError(
            f"preset {res.name!r} is written for case {res.case!r}, not {scenario.case.name!r}",
            key="resources.preset",
        )
    prof = build_profiles(scenario, seeds[0])
    n_steps = round(scenario.run.duration_h * 3600 / scenario.run.plant_step_s)
    if n_steps < 1:
        raise ScenarioError("shorter than one plant step", key="run.duration_h")
    return Plant(net, res, prof, plant_step_s=scenario.run.plant_step_s, n_steps=n_steps)


def scenario_partition(scenario: Scenario) -> tuple[Any, Any]:
    """The partition the scenario's ``[partition]`` table asks for, on the scenario's own case,
    resources, profiles and channel model. Returns ``(partition, context)``."""
    from clustersim.partition.context import build_context
    from clustersim.partition.methods import run_partition

    seeds = child_seeds(scenario.run.seed)
    ctx = build_context(
        cases.load_case(scenario.case.name),
        resource_set(scenario),
        build_profiles(scenario, seeds[0]),
        comm=scenario.comm,
        name=scenario.case.name,
    )
    pc = scenario.partition
    part = run_partition(
        ctx, pc.method, pc.clusters, seed=seeds[1], min_size=pc.min_size, max_size=pc.max_size
    )
    return part, ctx


def default_out_dir(scenario: Scenario, root: Path = Path("results")) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return root / f"{scenario.name or 'run'}-seed{scenario.run.seed}-{stamp}"


def control_settings(scenario: Scenario) -> Any:
    """The agents' view of the scenario's ``[control]`` and ``[run]`` tables."""
    from clustersim.agents.control import ControlSettings
    from clustersim.agents.problem import CostSettings

    c = scenario.control
    return ControlSettings(
        interval_s=c.interval_s,
        optimizer=c.optimizer,
        pop_size=c.pop_size,
        generations=c.generations,
        patience=c.patience,
        compromise=c.compromise,
        weights=(c.weights[0], c.weights[1], c.weights[2]),
        voltage_objective=c.voltage_objective,
        correction_gain=c.correction_gain,
        warm_start=c.warm_start,
        vm_min_pu=scenario.run.vm_min_pu,
        vm_max_pu=scenario.run.vm_max_pu,
        costs=CostSettings(
            tap_operation=c.tap_operation_cost,
            capacitor_switching=c.capacitor_switching_cost,
            storage_per_mwh=c.storage_cost_per_mwh,
        ),
    )


def write_results(
    out_dir: Path,
    scenario: Scenario,
    summary: dict[str, Any],
    record: PlantRecord,
    control: Any = None,
    cosim: Any = None,
) -> None:
    """Write the results folder (each file atomically): the tables first, then the figures
    drawn from those tables (:func:`clustersim.figures.draw_run_figures`), then ``report.html``."""
    from clustersim.figures import draw_run_figures, pareto_frame
    from clustersim.report import write_report

    out_dir.mkdir(parents=True, exist_ok=True)
    doc = resolved_dict(scenario)
    doc["provenance"] = {**package_versions(), "seed": str(scenario.run.seed)}
    with _atomic(out_dir / "scenario.toml", "wb") as fh:
        tomli_w.dump(doc, fh)
    with _atomic(out_dir / "summary.json") as fh:
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
            with _atomic(out_dir / f"{name}.parquet", "wb") as fh:
                frame.to_parquet(fh, index=False)
    draw_run_figures(out_dir)
    write_report(out_dir, "run")


def run_scenario(
    scenario: Scenario,
    out_dir: Path | None = None,
    *,
    on_start: Callable[[int], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> RunResult:
    """Run a scenario to the end and write its results folder."""
    if scenario.control.mode not in IMPLEMENTED_MODES:
        raise ScenarioError(
            f"mode {scenario.control.mode!r} is not available in this version "
            f"(available: {', '.join(IMPLEMENTED_MODES)})",
            key="control.mode",
        )
    t0 = time.perf_counter()
    plant = build_plant(scenario)
    out_dir = out_dir or default_out_dir(scenario)
    # the [partition] table's clusters: written for every run; only the cluster modes use them,
    # elsewhere a partition that cannot be made is recorded in the summary, not fatal
    partition_info: dict[str, Any]
    try:
        part, pctx = scenario_partition(scenario)
    except PartitionError as exc:
        if scenario.control.mode in CLUSTER_MODES:
            raise ScenarioError(str(exc), key="partition") from None
        partition_info = {"method": scenario.partition.method, "error": str(exc)}
    else:
        from clustersim.partition_report import write_partition

        write_partition(part, pctx, out_dir)
        partition_info = {
            "method": part.method,
            "k": part.k,
            "tau": part.metrics["tau"],
            "rho": part.metrics["rho"],
            **{k: bool(part.constraints[k]) for k in ("connected", "size_ok", "resources_ok")},
        }
    clusters = None
    mode = scenario.control.mode
    if mode in CLUSTER_MODES:
        clusters = _clusters_of(part, pctx, mode)
    if on_start is not None:
        on_start(plant.n_steps)
    from clustersim.control_loop import OPTIMIZING_MODES, ControlLog, run_control

    t_ctl = time.perf_counter()
    cosim = None
    if mode in OPTIMIZING_MODES:
        from clustersim.cosim import run_cosim

        cosim = run_cosim(
            scenario,
            plant,
            control_settings(scenario),
            clusters=clusters,
            seed=child_seeds(scenario.run.seed)[2],
            progress=progress,
        )
        control = ControlLog(
            rows=cosim.control_rows,
            fronts=cosim.fronts,
            rejected=cosim.rejected,
            controllers=cosim.controllers,
        )
    else:
        control = run_control(
            plant,
            mode,
            control_settings(scenario),
            clusters=clusters,
            seed=child_seeds(scenario.run.seed)[2],
            local_settings=scenario.control.local,
            progress=progress,
        )
    loop_s = time.perf_counter() - t_ctl
    record = plant.record
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
    write_results(out_dir, scenario, summary, record, control, cosim)
    return RunResult(summary=summary, out_dir=out_dir)


def _clusters_of(part: Any, pctx: Any, mode: str) -> dict[str, list[int]]:
    if not part.constraints["connected"]:
        raise ScenarioError(
            f"partition {part.method!r} gives a disconnected cluster; mode {mode!r} needs "
            "connected clusters (choose another [partition] method)",
            key="partition.method",
        )
    return {f"C{c + 1}": [pctx.buses[i] for i in nodes] for c, nodes in enumerate(part.clusters())}


def scenario_clusters(scenario: Scenario) -> dict[str, list[int]]:
    """The clusters (name → bus indices) the scenario's partition gives its agents."""
    try:
        part, pctx = scenario_partition(scenario)
    except PartitionError as exc:
        raise ScenarioError(str(exc), key="partition") from None
    return _clusters_of(part, pctx, scenario.control.mode)
