"""The runner: a validated scenario in, a complete results folder out.

Results folder: ``scenario.toml`` (fully resolved, with seed and package versions),
``summary.json`` (KPIs), ``timeseries.parquet`` (bus voltages, line loadings and device states per
plant step), ``figures/voltage_heatmap.png``, ``report.html`` and, written last,
``complete.json``. Every file is written to a temporary name in the same folder and moved into
place, so a killed run leaves each file either complete or absent.

Integrity of a results folder (a run's here; a compare, sweep or reproduce folder's in
:mod:`clustersim.studies`, by the same :func:`results_folder`):

- **lock**: the writer holds an exclusive ``flock`` on ``<folder>/.lock`` (which holds its pid
  and is removed at the end); a second writer of the folder is refused in one line naming the
  folder and that pid, before it computes or writes anything.
- **overwrite**: a folder that holds anything (files starting with ``.`` aside) is refused,
  also before anything is computed or written, unless ``overwrite``: then its contents are
  removed, every ``complete.json`` in it first, so a half-replaced folder never reads as
  complete. Only a results folder is replaced (one holding a file a results folder holds,
  such as ``complete.json``, ``summary.json`` or ``runs/``), never an unrelated folder.
- **complete marker**: ``complete.json`` says ``{"complete": false, "reason": "running",
  "pid": ..., "started": ...}`` from the start; after a failure ``reason`` is the exception's
  first line (``"interrupted"`` for Ctrl-C and :func:`mark_incomplete`'s default); its last
  rewrite, after the tables, the figures and ``report.html`` and only once the required files
  are in place, is ``{"complete": true, ..., "files": [...]}`` (the folder's files but
  ``report.html``, which ``clustersim report`` rewrites, and ``runs/``, whose run folders have
  their own marker). A run that fails before writing any result leaves the folder as it found
  it (absent, or empty), so the same command can be given again.
  :func:`clustersim.fileio.incomplete_reason` reads the marker back; ``clustersim report``
  warns on a folder that is not complete.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import tomli_w

from clustersim.agents.control import CLUSTER_MODES, OPTIMIZING_MODES
from clustersim.agents.optimizer import implementation
from clustersim.assemble.build import (
    build_plant,
    clusters_of,
    control_settings,
    package_versions,
    scenario_partition,
)
from clustersim.assemble.check import cluster_devices, device_warnings
from clustersim.assemble.seeds import Stage, stage_seed
from clustersim.broker.transport import without_password
from clustersim.cosim.local_loop import ControlLog, run_control
from clustersim.cosim.plant_node import coordination_frame
from clustersim.cosim.run import CosimResult, run_cosim
from clustersim.errors import ClusterSimError, PartitionError, RunError, ScenarioError
from clustersim.fileio import (
    COMPLETE_FILE,
    LOCK_FILE,
    RUNNING,
    FolderBusy,
    atomic_write,
    folder_lock,
    incomplete_reason,
    lock_holder,
    read_marker,
    write_marker,
)
from clustersim.results.figures import draw_run_figures, pareto_frame
from clustersim.results.partition import write_partition
from clustersim.results.report import write_report
from clustersim.results.tables import MESSAGE_COLUMNS, WALL_CLOCK_COLUMNS, WALL_CLOCK_KEYS
from clustersim.scenario import Scenario, resolved_dict
from clustersim.sim import kpi
from clustersim.sim.plant import Plant, PlantRecord

__all__ = [
    "INTERRUPTED",
    "RUN_FILES",
    "RunResult",
    "claim_out_dir",
    "default_out_dir",
    "mark_incomplete",
    "results_folder",
    "run_scenario",
    "write_results",
]

INTERRUPTED = "interrupted"
"""``complete.json``'s reason for a run stopped by Ctrl-C or a termination signal"""
RUN_FILES = ("scenario.toml", "summary.json", "timeseries.parquet", "report.html")
"""the files without which a run folder is not marked complete"""
_RESULTS_NAMES = frozenset(
    {
        COMPLETE_FILE,
        "summary.json",
        "scenario.toml",
        "partition.json",
        "timeseries.parquet",
        "report.html",
        "error.txt",
        "runs",
        "compare.json",
        "compare.csv",
        "sweep.json",
        "sweep.parquet",
        "reproduce.json",
    }
)
"""entries by which a folder is known as a results folder (``overwrite`` replaces no other)"""


@dataclass
class RunResult:
    """A finished run: its ``summary.json`` content and its results folder."""

    summary: dict[str, Any]
    out_dir: Path


def default_out_dir(scenario: Scenario, root: Path = Path("results")) -> Path:
    """``results/<scenario>-seed<seed>-<timestamp>``: a run's default results folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return root / f"{scenario.name or 'run'}-seed{scenario.run.seed}-{stamp}"


# ------------------------------------------------------------------------- the results folder


def _entries(folder: Path) -> list[Path]:
    """What ``folder`` holds, names starting with ``.`` (the lock, temporary files) aside."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _busy_error(busy: FolderBusy) -> ClusterSimError:
    who = f"process {busy.pid}" if busy.pid is not None else "another process"
    return ClusterSimError(
        f"{busy.folder}: results folder in use: {who} is writing it (it holds "
        f"{busy.folder / LOCK_FILE}); wait for it to end or choose another --out"
    )


def _refuse_used(out_dir: Path, *, held: bool = False) -> None:
    """ClusterSimError (nothing written) unless ``out_dir`` is absent or empty; naming the
    process that holds its lock, if any (``held``: this caller holds it)."""
    entries = _entries(out_dir)
    if not entries:
        return
    busy = None if held else lock_holder(out_dir)
    if busy is not None:
        raise _busy_error(busy)
    if any(p.name in _RESULTS_NAMES for p in entries):
        why = incomplete_reason(out_dir)
        state = "a complete results folder" if why is None else f"an incomplete one: {why}"
    else:
        state = f"{len(entries)} entries, e.g. {entries[0].name!r}"
    raise ClusterSimError(
        f"{out_dir}: results folder is not empty ({state}); give --overwrite to replace its "
        "contents, or choose another --out"
    )


def _clear(out_dir: Path) -> None:
    """Remove what ``out_dir`` holds but its lock: every ``complete.json`` first (a folder
    half-cleared never reads as complete), then the rest. Only a results folder is cleared."""
    entries = _entries(out_dir)
    if entries and not any(p.name in _RESULTS_NAMES for p in entries):
        raise ClusterSimError(
            f"{out_dir}: not a results folder (it holds {entries[0].name!r} and no "
            f"{COMPLETE_FILE} or summary.json); --overwrite replaces only results folders"
        )
    for marker in sorted(out_dir.rglob(COMPLETE_FILE), key=lambda p: len(p.parts)):
        marker.unlink()
    for p in out_dir.iterdir():
        if p.name == LOCK_FILE:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


@contextmanager
def claim_out_dir(
    out_dir: Path, *, overwrite: bool = False, resume: bool = False
) -> Iterator[Path]:
    """Hold ``out_dir`` for writing (created if absent) until the block ends: its lock
    (:func:`clustersim.fileio.folder_lock`), and its contents removed when ``overwrite``, kept
    when ``resume`` (an experiment that adds what it misses). ClusterSimError, before anything
    is written, when another process holds the folder (naming its pid) or, without
    ``overwrite`` or ``resume``, when the folder is not empty."""
    out_dir = Path(out_dir)
    if not (overwrite or resume):
        _refuse_used(out_dir)
    with ExitStack() as stack:
        try:
            stack.enter_context(folder_lock(out_dir))
        except FolderBusy as exc:
            raise _busy_error(exc) from None
        if overwrite:
            _clear(out_dir)
        elif not resume:
            _refuse_used(out_dir, held=True)  # again: a writer may have come in between
        yield out_dir


def _reason(exc: BaseException) -> str:
    """``complete.json``'s reason for ``exc``: :data:`INTERRUPTED` for Ctrl-C (or an exit),
    else the first line of ``<type>: <message>``."""
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return INTERRUPTED
    text = f"{type(exc).__name__}: {exc}".strip()
    return (text.splitlines() or [type(exc).__name__])[0]


def mark_incomplete(out_dir: Path, reason: str = INTERRUPTED) -> bool:
    """Record in ``out_dir/complete.json`` that the folder is not complete and why (one line:
    :data:`INTERRUPTED`, an exception's message). A folder already marked complete stays so (its
    files are all in place), and a folder that does not exist is not created. Returns whether the
    marker was written; never raises ``OSError`` (on a full disk the marker written at the start,
    reason ``running``, stays, which says incomplete too)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return False
    doc = read_marker(out_dir)
    if doc is not None and doc.get("complete") is True:
        return False
    try:
        write_marker(out_dir, complete=False, reason=reason)
    except OSError:
        return False
    return True


def _mark_complete(out_dir: Path, required: Iterable[str]) -> None:
    """The last write of a results folder: ``complete.json`` saying complete, with the folder's
    files (``report.html`` and ``runs/`` aside). ClusterSimError when a required file is
    missing."""
    missing = [name for name in required if not (out_dir / name).is_file()]
    if missing:
        raise ClusterSimError(f"{out_dir}: not complete: {', '.join(missing)} missing")
    files = [
        rel.as_posix()
        for rel in (p.relative_to(out_dir) for p in sorted(out_dir.rglob("*")) if p.is_file())
        if not any(part.startswith(".") for part in rel.parts)
        and rel.parts[0] != "runs"
        and rel.as_posix() not in (COMPLETE_FILE, "report.html")
    ]
    write_marker(out_dir, complete=True, files=files)


def _forget_or_record(out_dir: Path, exc: BaseException) -> bool:
    """After a failure: a folder holding nothing but its marker loses it (returns True),
    else the marker records why (returns False)."""
    if [p.name for p in _entries(out_dir)] in ([], [COMPLETE_FILE]):
        with suppress(OSError):
            (out_dir / COMPLETE_FILE).unlink()
        return True
    mark_incomplete(out_dir, _reason(exc))
    return False


@contextmanager
def results_folder(
    out_dir: Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    required: Iterable[str] = (),
) -> Iterator[Path]:
    """Write a results folder in the block (module docstring): claim it
    (:func:`claim_out_dir`, ``resume``: keeping what it holds), mark it incomplete
    (``running``), yield it; when the block ends normally mark it complete (the ``required``
    files must be there), when it raises record why and raise again. A block that fails before
    writing anything leaves no marker, and no folder when the folder did not exist before."""
    out_dir = Path(out_dir)
    existed = out_dir.exists()
    nothing_written = False
    try:
        with claim_out_dir(out_dir, overwrite=overwrite, resume=resume):
            try:
                write_marker(out_dir, complete=False, reason=RUNNING)
                yield out_dir
                _mark_complete(out_dir, required)
            except BaseException as exc:
                nothing_written = _forget_or_record(out_dir, exc)
                raise
    finally:
        if nothing_written and not existed:
            with suppress(OSError):
                out_dir.rmdir()


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
    ``report.html``. ``complete.json`` is not written here: :func:`run_scenario` holds the folder
    (:func:`results_folder`) and marks it complete after this returns."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = resolved_dict(scenario)
    if doc.get("comm", {}).get("broker"):  # no secret in any output
        doc["comm"]["broker"] = without_password(doc["comm"]["broker"])
    doc["provenance"] = {**package_versions(), "seed": str(scenario.run.seed)}
    if scenario.control.mode in OPTIMIZING_MODES:
        doc["provenance"]["optimizer"] = implementation(scenario.control.optimizer)
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
        if cosim.round_rows:
            tables["coordination"] = coordination_frame(cosim.round_rows)
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
    overwrite: bool = False,
    on_start: Callable[[int], None] | None = None,
    progress: Callable[[int], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> RunResult:
    """Run a scenario to the end and write its results folder.

    A case the plant cannot run (islanded, meshed) is refused before anything is written; the
    folder is refused before anything runs when it is in use, or not empty without
    ``overwrite`` (:func:`results_folder`). A run that lost an agent for good (``summary.json``
    ``agents_lost``) raises :class:`~clustersim.errors.RunError` after its complete folder is
    written, unless ``[comm] accept_fallback``."""
    out_dir = Path(out_dir or default_out_dir(scenario))
    t0 = time.perf_counter()
    plant = build_plant(scenario)
    with results_folder(out_dir, overwrite=overwrite, required=RUN_FILES):
        summary = _run(scenario, plant, out_dir, t0, on_start, progress, on_warning)
    lost = summary.get("agents_lost") or []
    if lost and not scenario.comm.accept_fallback:
        raise RunError(
            f"agent(s) {', '.join(lost)} lost for good: their devices ran under local fallback "
            f"to the end (results in {out_dir}; set [comm] accept_fallback = true to accept)"
        )
    return RunResult(summary=summary, out_dir=out_dir)


def _run(
    scenario: Scenario,
    plant: Plant,
    out_dir: Path,
    t0: float,
    on_start: Callable[[int], None] | None,
    progress: Callable[[int], None] | None,
    on_warning: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The run itself, into a folder already claimed: partition, control, KPIs, files (``t0``:
    when the run began, for its wall time). Returns the summary (with ``warnings`` when there
    are any, each also given to ``on_warning`` before the run starts)."""
    partition_info, clusters = _partition(scenario, out_dir)
    per_cluster = cluster_devices(plant.net, plant.resources, clusters) if clusters else None
    warnings = device_warnings(scenario.control.mode, plant.resources, per_cluster)
    if on_warning is not None:
        for w in warnings:
            on_warning(w)
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
        "start_h": scenario.run.start_h,
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
    if warnings:
        summary["warnings"] = warnings
    summary["run_loop_wall_time_s"] = round(loop_s, 3)
    summary["powerflow_failure_steps"] = list(plant.powerflow_failures)
    summary["wall_time_s"] = round(time.perf_counter() - t0, 3)
    summary["wall_clock_keys"] = [*WALL_CLOCK_KEYS]
    summary["wall_clock_columns"] = {t: [*cols] for t, cols in WALL_CLOCK_COLUMNS.items()}
    write_results(out_dir, scenario, summary, plant.record, control, cosim)
    return summary
