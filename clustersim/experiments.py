"""Experiment machinery shared by ``compare``, ``sweep`` and ``reproduce``.

An experiment is a list of :class:`Job` s, each one ``run_scenario`` call writing its own
results folder ``OUT/runs/<label>/``. :func:`run_jobs` runs them in this process (``jobs=1``)
or in a pool of *spawned* worker processes (a run starts asyncio, a broker and threads, so no
process with threads is ever forked). A job that fails (a scenario the runner refuses, a
partition that cannot be controlled, any exception of a run) is recorded in its
:class:`Outcome` and the others go on; a worker that dies takes only its own jobs with it.

Every table of an experiment is built from the files the runs wrote (``summary.json``), and
every figure from the tables read back from disk (``timeseries.parquet``, ``sweep.parquet``), so
each figure is traceable to a table in the output folder (DESIGN.md).

Seeding (DESIGN.md, one seeding rule): :func:`repeat_seeds` derives the seeds of repeats from a
base seed with ``numpy.random.SeedSequence.spawn``; global random state is never touched.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from clustersim.errors import ClusterSimError

__all__ = [
    "HEADLINE_KPIS",
    "QUICK_OVERRIDES",
    "Hooks",
    "Job",
    "Outcome",
    "atomic_write",
    "default_out",
    "markdown_table",
    "read_timeseries",
    "repeat_seeds",
    "run_jobs",
    "safe_label",
    "scalar_kpis",
    "write_captions",
    "write_json",
    "write_table",
]

HEADLINE_KPIS: dict[str, str] = {
    "voltage_violation_bus_hours": "violation bus·h",
    "max_abs_voltage_deviation_pu": "max |V−1| p.u.",
    "mean_abs_voltage_deviation_pu": "mean |V−1| p.u.",
    "min_vm_pu": "min V p.u.",
    "max_vm_pu": "max V p.u.",
    "energy_losses_mwh": "losses MWh",
    "energy_cost": "cost",
    "switching_operations": "switchings",
    "control_wall_time_s": "control s",
    "control_critical_path_s": "critical path s",
}
"""summary.json keys shown in the Markdown and printed tables, with their column headers"""

QUICK_OVERRIDES = (
    "run.duration_h=2",
    "control.pop_size=12",
    "control.generations=4",
    "control.round_generations=2",
    "comm.transport=memory",
)
"""``reproduce --quick``: a short horizon and a light optimizer budget (tests, smoke runs)"""


@dataclass(frozen=True)
class Job:
    """One run of an experiment: ``load_scenario(scenario, overrides=..., seed=...)`` written to
    ``out_dir`` (``OUT/runs/<label>``)."""

    label: str
    scenario: str
    overrides: tuple[str, ...]
    seed: int | None
    out_dir: Path


@dataclass
class Outcome:
    """What became of a job: ``summary`` (read back from its ``summary.json``) or ``error``."""

    job: Job
    summary: dict[str, Any] | None = None
    error: str | None = None
    error_type: str | None = None
    error_key: str | None = None
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.summary is not None


@dataclass
class Hooks:
    """Progress callbacks of an experiment (all optional): ``on_plan(n_runs)`` before the runs,
    ``on_done(outcome, done, total)`` after each, and, when runs are serial (``jobs=1``),
    ``on_run_start(job, n_steps)`` and ``on_step(k)`` for the plant steps of the current run."""

    on_plan: Callable[[int], None] | None = None
    on_done: Callable[[Outcome, int, int], None] | None = None
    on_run_start: Callable[[Job, int], None] | None = None
    on_step: Callable[[int], None] | None = None


def safe_label(text: str, limit: int = 80) -> str:
    """``text`` as a folder name / topic level: ``[A-Za-z0-9_.-]``, at most ``limit`` chars."""
    out = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "run"
    return out[:limit]


def repeat_seeds(base_seed: int, repeats: int) -> list[int]:
    """Seeds of ``repeats`` repeats derived from ``base_seed``:
    ``SeedSequence(base_seed).spawn(repeats)[r].generate_state(1)[0]``. A spawned child does not
    depend on how many siblings it has, so raising ``repeats`` keeps the earlier seeds."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    children = np.random.SeedSequence(int(base_seed)).spawn(repeats)
    return [int(c.generate_state(1)[0]) for c in children]


def default_out(kind: str, name: str = "", root: Path = Path("results")) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return root / safe_label(f"{kind}-{name}-{stamp}" if name else f"{kind}-{stamp}")


# ------------------------------------------------------------------------------- files


@contextmanager
def atomic_write(path: Path, mode: str = "w") -> Iterator[Any]:
    """Write to a temporary file beside ``path`` and move it into place (complete or absent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, doc: Any) -> None:
    with atomic_write(path) as fh:
        json.dump(doc, fh, indent=2, default=_json_default)
        fh.write("\n")


def write_captions(out_dir: Path, captions: Mapping[Path, tuple[str, Sequence[str]]]) -> None:
    """Merge ``{figure path: (caption, source tables relative to out_dir)}`` into
    ``out_dir/figures/captions.json``, which the report uses to name each figure's tables."""
    path = out_dir / "figures" / "captions.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    for fig, (caption, sources) in captions.items():
        doc[fig.name] = {"caption": caption, "sources": list(sources)}
    write_json(path, doc)


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, Path):
        return v.as_posix()
    raise TypeError(f"not JSON serializable: {type(v).__name__}")


def _fmt_cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, float | np.floating):
        return f"{float(v):.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table of ``frame`` (numbers right-aligned, 4 significant digits)."""
    cols = [str(c) for c in frame.columns]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    lines = [
        "| " + " | ".join(c.replace("|", "\\|") for c in cols) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt_cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write_table(
    folder: Path, stem: str, full: pd.DataFrame, shown: pd.DataFrame, title: str = ""
) -> tuple[Path, Path]:
    """``folder/<stem>.csv`` (``full``, machine names) and ``folder/<stem>.md`` (``shown``)."""
    csv_path, md_path = folder / f"{stem}.csv", folder / f"{stem}.md"
    with atomic_write(csv_path) as fh:
        full.to_csv(fh, index=False)
    with atomic_write(md_path) as fh:
        if title:
            fh.write(f"# {title}\n\n")
        fh.write(markdown_table(shown))
    return csv_path, md_path


def scalar_kpis(summary: dict[str, Any]) -> dict[str, Any]:
    """The scalar entries of a ``summary.json`` (numbers, strings, booleans, nulls)."""
    return {
        k: v for k, v in summary.items() if v is None or isinstance(v, bool | int | float | str)
    }


def read_timeseries(run_dir: Path) -> pd.DataFrame:
    """A run's ``timeseries.parquet`` with non-converged steps' voltages and losses as NaN."""
    ts = pd.read_parquet(run_dir / "timeseries.parquet")
    if "converged" in ts:
        bad = ~ts["converged"].astype(bool)
        cols = [c for c in ts.columns if c.startswith("vm_pu.") or c == "p_loss_mw"]
        ts.loc[bad, cols] = np.nan
    return ts


def vm_columns(ts: pd.DataFrame) -> list[str]:
    return [c for c in ts.columns if c.startswith("vm_pu.")]


def write_report_if_available(
    folder: Path, kind: Literal["compare", "sweep", "reproduce"]
) -> Path | None:
    """``report.html`` of an experiment folder (``clustersim.report.write_report``), when that
    module is installed."""
    try:
        from clustersim.report import write_report
    except ImportError:
        return None
    return write_report(folder, kind)


# -------------------------------------------------------------------------------- runs


def _execute(
    job: Job,
    on_start: Callable[[int], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run one job (in this process or a worker); returns ``{"error": None | message,
    "error_type", "error_key", "wall_s"}`` (picklable, small).

    The job's folder is replaced, so a stale ``summary.json`` of an earlier experiment in the
    same output folder can never stand in for this run."""
    from clustersim.runner import run_scenario
    from clustersim.scenario import load_scenario

    t0 = time.perf_counter()
    if job.out_dir.exists():
        shutil.rmtree(job.out_dir)
    try:
        sc = load_scenario(job.scenario, overrides=list(job.overrides), seed=job.seed)
        run_scenario(sc, job.out_dir, on_start=on_start, progress=progress)
    except ClusterSimError as exc:
        return {
            "error": str(exc),
            "error_type": type(exc).__name__,
            "error_key": getattr(exc, "key", None),
            "wall_s": time.perf_counter() - t0,
        }
    except Exception as exc:  # a sweep outlives any one run; the traceback stays in its folder
        job.out_dir.mkdir(parents=True, exist_ok=True)
        (job.out_dir / "error.txt").write_text(traceback.format_exc())
        return {
            "error": f"{type(exc).__name__}: {exc}".splitlines()[0],
            "error_type": type(exc).__name__,
            "error_key": None,
            "wall_s": time.perf_counter() - t0,
        }
    return {"error": None, "wall_s": time.perf_counter() - t0}


def _worker_init() -> None:
    """One BLAS / OpenMP thread per worker: the pool already uses every core it was given."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # pragma: no cover - threadpoolctl is a dependency; never fatal
        pass


def _outcome(job: Job, res: dict[str, Any]) -> Outcome:
    out = Outcome(
        job=job,
        error=res.get("error"),
        error_type=res.get("error_type"),
        error_key=res.get("error_key"),
        wall_s=float(res.get("wall_s", 0.0)),
    )
    if out.error is None:
        path = job.out_dir / "summary.json"
        try:
            out.summary = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            out.error = f"run wrote no readable summary.json ({exc})"
            out.error_type = type(exc).__name__
    return out


def run_jobs(jobs: Sequence[Job], n_jobs: int = 1, hooks: Hooks | None = None) -> list[Outcome]:
    """Run ``jobs`` and return their outcomes in the order given.

    ``n_jobs == 1``: one after the other in this process. ``n_jobs > 1``: in a pool of that
    many spawned worker processes (one BLAS thread each).

    On ``KeyboardInterrupt`` the runs not finished yet are recorded as "not run (interrupted)"
    and the exception is re-raised with the list of outcomes in its ``outcomes`` attribute, so
    the caller can still write what was computed.
    """
    if n_jobs < 1:
        raise ValueError("n_jobs must be at least 1")
    hooks = hooks or Hooks()
    total = len(jobs)
    results: dict[int, Outcome] = {}
    if hooks.on_plan is not None:
        hooks.on_plan(total)

    def finish(i: int, out: Outcome) -> None:
        results[i] = out
        if hooks.on_done is not None:
            hooks.on_done(out, len(results), total)

    try:
        if n_jobs == 1 or total <= 1:
            for i, job in enumerate(jobs):
                start = None
                if hooks.on_run_start is not None:
                    cb = hooks.on_run_start
                    start = lambda n, j=job, cb=cb: cb(j, n)  # noqa: E731
                finish(i, _outcome(job, _execute(job, start, hooks.on_step)))
        else:
            _run_pool(jobs, min(n_jobs, total), finish)
    except KeyboardInterrupt as exc:
        exc.outcomes = [  # type: ignore[attr-defined]
            results.get(i) or Outcome(job=j, error="not run (interrupted)")
            for i, j in enumerate(jobs)
        ]
        raise
    return [results[i] for i in range(total)]


def _run_pool(jobs: Sequence[Job], workers: int, finish: Callable[[int, Outcome], None]) -> None:
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init)
    try:
        futures: dict[Future[dict[str, Any]], int] = {
            pool.submit(_execute, job): i for i, job in enumerate(jobs)
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                i = futures[fut]
                try:
                    res = fut.result()
                except Exception as exc:  # BrokenProcessPool: the worker died (killed, OOM)
                    res = {
                        "error": f"worker process failed ({type(exc).__name__}: {exc})",
                        "error_type": type(exc).__name__,
                    }
                finish(i, _outcome(jobs[i], res))
    except BaseException:
        # interrupted: stop this pool's own workers now rather than wait for their runs (a
        # terminal's Ctrl-C reaches them anyway; a signal to this process alone does not)
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        raise
    pool.shutdown(wait=True)
