"""Experiment jobs shared by ``compare``, ``sweep`` and ``reproduce``.

An experiment is a list of :class:`Job` s, each one ``run_scenario`` call writing its own
results folder ``OUT/runs/<label>/``. :func:`run_jobs` runs them in this process (``jobs=1``)
or in a pool of *spawned* worker processes (a run starts asyncio, a broker and threads, so no
process with threads is ever forked). A job that fails (a scenario the runner refuses, a
partition that cannot be controlled, any exception of a run) is recorded in its
:class:`Outcome` and the others go on; a worker that dies takes only its own jobs with it.

Every table of an experiment is built from the files the runs wrote (``summary.json``), and
every figure from the tables read back from disk (``timeseries.parquet``, ``sweep.parquet``), so
each figure is traceable to a table in the output folder.

:func:`repeat_seeds` derives the seeds of repeats from a base seed by the one seeding rule of
:mod:`clustersim.assemble.seeds`.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from threadpoolctl import threadpool_limits

from clustersim.assemble.seeds import spawn_seeds
from clustersim.errors import ClusterSimError
from clustersim.fileio import incomplete_reason, safe_label, write_text
from clustersim.runner import run_scenario
from clustersim.scenario import load_scenario, resolved_dict

__all__ = [
    "Hooks",
    "Job",
    "Outcome",
    "default_out",
    "execute",
    "finished_outcome",
    "repeat_seeds",
    "run_jobs",
    "run_remote",
]


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
        """The run finished and its ``summary.json`` was read back."""
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


def repeat_seeds(base_seed: int, repeats: int) -> list[int]:
    """Seeds of ``repeats`` repeats derived from ``base_seed`` by the one seeding rule
    (:func:`clustersim.assemble.seeds.spawn_seeds`): raising ``repeats`` keeps the earlier
    seeds."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    return spawn_seeds(base_seed, repeats)


def default_out(kind: str, name: str = "", root: Path = Path("results")) -> Path:
    """``results/<kind>-<name>-<timestamp>``: an experiment's default output folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return root / safe_label(f"{kind}-{name}-{stamp}" if name else f"{kind}-{stamp}")


# -------------------------------------------------------------------------------- runs


def execute(
    job: Job,
    on_start: Callable[[int], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run one job (in this process or a worker); returns ``{"error": None | message,
    "error_type", "error_key", "wall_s"}`` (picklable, small).

    The job's folder is replaced (``run_scenario(..., overwrite=True)``), so a stale
    ``summary.json`` of an earlier experiment in the same output folder can never stand in for
    this run; a run that fails keeps its folder with ``complete.json`` saying why."""
    t0 = time.perf_counter()
    try:
        sc = load_scenario(job.scenario, overrides=list(job.overrides), seed=job.seed)
        run_scenario(sc, job.out_dir, overwrite=True, on_start=on_start, progress=progress)
    except ClusterSimError as exc:
        return {
            "error": str(exc),
            "error_type": type(exc).__name__,
            "error_key": getattr(exc, "key", None),
            "wall_s": time.perf_counter() - t0,
        }
    except Exception as exc:  # a sweep outlives any one run; the traceback stays in its folder
        write_text(job.out_dir / "error.txt", traceback.format_exc())
        return {
            "error": f"{type(exc).__name__}: {exc}".splitlines()[0],
            "error_type": type(exc).__name__,
            "error_key": None,
            "wall_s": time.perf_counter() - t0,
        }
    return {"error": None, "wall_s": time.perf_counter() - t0}


def _worker_init() -> None:
    """One BLAS / OpenMP thread per worker: the pool already uses every core it was given."""
    threadpool_limits(1)


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


def finished_outcome(job: Job) -> Outcome | None:
    """The outcome of a job whose run folder is complete (its summary read back); ``None``
    when the run is missing, failed or unfinished."""
    if incomplete_reason(job.out_dir) is not None:
        return None
    out = _outcome(job, {})
    return out if out.ok else None


def run_jobs(
    jobs: Sequence[Job],
    n_jobs: int = 1,
    hooks: Hooks | None = None,
    *,
    scheduler: str | None = None,
) -> list[Outcome]:
    """Run ``jobs`` and return their outcomes in the order given.

    ``n_jobs == 1``: one after the other in this process. ``n_jobs > 1``: in a pool of that
    many spawned worker processes (one BLAS thread each). ``scheduler``: instead, on the Dask
    cluster of that scheduler address (:func:`run_remote`; ``n_jobs`` is then the cluster's).

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
        if scheduler:
            _run_dask(jobs, scheduler, finish)
        elif n_jobs == 1 or total <= 1:
            for i, job in enumerate(jobs):
                start = None
                if hooks.on_run_start is not None:
                    cb = hooks.on_run_start
                    start = lambda n, j=job, cb=cb: cb(j, n)  # noqa: E731
                finish(i, _outcome(job, execute(job, start, hooks.on_step)))
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
            pool.submit(execute, job): i for i, job in enumerate(jobs)
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


# ------------------------------------------------------------------------------ Dask
_ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""a remote run's numeric libraries use one thread, as the local pool's workers do"""


def _resolved(job: Job) -> str:
    """The job's scenario resolved (file, overrides and seed applied), as TOML text: what a
    remote worker runs, so that it needs neither the scenario file nor the overrides."""
    sc = load_scenario(job.scenario, overrides=list(job.overrides), seed=job.seed)
    return tomli_w.dumps(resolved_dict(sc))


def run_remote(scenario_toml: str) -> tuple[dict[str, Any], bytes]:
    """Run one job on a Dask worker: the resolved scenario ``scenario_toml`` in a child
    interpreter (``python -m clustersim.studies.remote``; a worker process is daemonic and may
    not start the agents' processes, a child interpreter may), into a temporary folder.
    Returns the job's result (as a local run's) and its results folder as a gzipped tar, so the
    workers need no file system shared with the client."""
    with tempfile.TemporaryDirectory(prefix="clustersim-") as tmp:
        root = Path(tmp)
        (root / "scenario.toml").write_text(scenario_toml)
        out = root / "run"
        cmd = [sys.executable, "-m", "clustersim.studies.remote", str(root / "scenario.toml")]
        proc = subprocess.run(
            [*cmd, str(out)], capture_output=True, text=True, env={**os.environ, **_ONE_THREAD}
        )
        try:
            res = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            res = {"error": f"run process failed (exit {proc.returncode}): {last}"}
        buf = io.BytesIO()
        if out.is_dir():
            with tarfile.open(fileobj=buf, mode="w:gz") as tar:
                tar.add(out, arcname=".")
        return res, buf.getvalue()


def _unpack(archive: bytes, out_dir: Path) -> None:
    """Replace ``out_dir`` with the run folder in ``archive`` (from :func:`run_remote`)."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    if archive:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            tar.extractall(out_dir, filter="data")


def _run_dask(jobs: Sequence[Job], address: str, finish: Callable[[int, Outcome], None]) -> None:
    """The jobs as tasks of the Dask cluster at ``address``, each finished as it completes; a
    task whose worker died is re-run by Dask elsewhere, and recorded as failed once Dask gives
    up on it. Interrupted: the tasks not finished are cancelled."""
    from distributed import Client, as_completed  # the optional [dask] extra

    try:
        client = Client(address, timeout=30)
    except OSError as exc:
        raise ClusterSimError(f"Dask scheduler {address}: cannot connect ({exc})") from None
    futures: dict[Any, int] = {}
    try:
        for i, job in enumerate(jobs):
            try:
                text = _resolved(job)
            except ClusterSimError as exc:
                finish(i, Outcome(job=job, error=str(exc), error_type=type(exc).__name__))
                continue
            key = f"clustersim-{job.label}-{uuid.uuid4().hex[:8]}"
            futures[client.submit(run_remote, text, key=key, pure=False)] = i
        for fut in as_completed(list(futures)):
            i = futures[fut]
            try:
                res, archive = fut.result()
            except Exception as exc:  # KilledWorker: the task's workers died every time
                why = f"Dask task failed ({type(exc).__name__}: {exc})".splitlines()[0]
                res, archive = {"error": why, "error_type": type(exc).__name__}, b""
            _unpack(archive, jobs[i].out_dir)
            finish(i, _outcome(jobs[i], res))
    except BaseException:
        client.cancel(list(futures), force=True)
        raise
    finally:
        client.close()
