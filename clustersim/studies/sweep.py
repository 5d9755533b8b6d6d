"""``clustersim sweep``: one scenario over a parameter grid, with repeats, in processes.

``--grid key.path=v1,v2,...`` names a scenario key (any key ``--set`` takes) and its values,
each parsed like a ``--set`` value (a TOML value, else text), so ``control.mode=clustered,
centralized`` and ``comm.latency.mean_ms=0,50,200`` are both grid axes; commas inside quotes,
arrays and inline tables do not split. The points are the product of the axes in the order
given (point ``p`` has the axis indices ``numpy.unravel_index(p, shape)``). Each point runs
``--repeats`` times with the seeds :func:`clustersim.studies.jobs.repeat_seeds` derives from the
base seed; every point uses the same seeds, so two points differ only by their parameters.

Output folder::

    sweep.parquet   one row per (point, repeat): the grid keys with their values, point, repeat,
                    seed, label, run_dir, error, every scalar KPI of the run's summary.json
    sweep.csv       the same rows
    sweep.md        mean (± std over repeats) of the headline KPIs per point
    sweep.json      base scenario, grid, repeats, seeds, overrides, KPIs of the figures
    figures/<kpi>.png   one axis: the KPI against the value (mean, ± std, min–max band, every
                    repeat); two axes: a heatmap of the mean; more: one heatmap of the first two
                    axes per combination of the others
    runs/<label>/   each run's results folder
    report.html     the sweep's report
    complete.json   written last (:mod:`clustersim.runner`, "Integrity of a results folder")

A point that fails (the runner refuses it, its run raises) has its ``error`` filled in and the
sweep goes on; ``sweep.parquet`` is written once the runs are over (also when interrupted, and
then ``complete.json`` says ``interrupted``), and every finished run keeps its folder.
"""

from __future__ import annotations

import itertools
import json
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from clustersim.errors import ClusterSimError, ScenarioError
from clustersim.fileio import atomic_write, safe_label, write_json
from clustersim.results.figures import pyplot, save_figure
from clustersim.results.report import write_report
from clustersim.results.tables import (
    HEADLINE_KPIS,
    SUMMARY_KPIS,
    markdown_table,
    scalar_kpis,
    write_captions,
)
from clustersim.runner import results_folder
from clustersim.scenario import Scenario, load_scenario, parse_value
from clustersim.studies.jobs import (
    Hooks,
    Job,
    Outcome,
    finished_outcome,
    repeat_seeds,
    run_jobs,
)

__all__ = [
    "DEFAULT_KPIS",
    "SWEEP_FILES",
    "SweepPlan",
    "SweepResult",
    "check_key",
    "parse_grid",
    "plan_sweep",
    "run_sweep",
    "sweep_figures",
    "sweep_runs",
]

DEFAULT_KPIS = (
    "max_abs_voltage_deviation_pu",
    "voltage_violation_bus_hours",
    "energy_losses_mwh",
    "energy_cost",
    "messages_lost",
    "coordination_rounds_mean",
    "mean_age_of_information_s",
    "boundary_mismatch_pu",
)
"""KPIs drawn by default (those a sweep's runs report)"""

SWEEP_FILES = ("sweep.parquet", "sweep.csv", "sweep.md", "sweep.json", "report.html")
"""the files without which a sweep folder is not marked complete"""

_TITLES = {
    **HEADLINE_KPIS,
    "messages_lost": "lost messages",
    "coordination_rounds_mean": "coordination rounds",
    "mean_age_of_information_s": "age of information s",
    "boundary_mismatch_pu": "boundary mismatch p.u.",
}


# --------------------------------------------------------------------------- the grid


def _split_values(text: str) -> list[str]:
    """Split on commas outside quotes, brackets and braces."""
    out, cur, depth, quote = [], [], 0, ""
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return out


def parse_grid(specs: Sequence[str]) -> dict[str, list[str]]:
    """``["key.path=v1,v2", ...]`` → ``{key.path: [v1 text, v2 text]}`` (order kept).

    ScenarioError (source ``--grid``) for a spec without ``=``, an empty value, a repeated key
    or a repeated value, and for ``run.seed`` (the seeds come from ``--seed`` and ``--repeats``).
    """
    grid: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise ScenarioError(f"expected key.path=v1,v2,..., got {spec!r}", source="--grid")
        if key in grid:
            raise ScenarioError("given twice", source="--grid", key=key)
        if key == "run.seed":
            raise ScenarioError(
                "the seeds of a sweep come from --seed and --repeats", source="--grid", key=key
            )
        items = _split_values(values)
        if any(not v for v in items):
            raise ScenarioError(f"empty value in {values!r}", source="--grid", key=key)
        if len(set(items)) != len(items):
            raise ScenarioError(f"repeated value in {values!r}", source="--grid", key=key)
        grid[key] = items
    if not grid:
        raise ScenarioError("give at least one --grid key.path=v1,v2,...", source="--grid")
    return grid


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            got = _model_of(arg)
            if got is not None:
                return got
    return None


def check_key(key: str) -> None:
    """ScenarioError unless ``key`` names a key of the scenario schema (a table's free-form
    entries — device tables, lists — are not checked past their name)."""
    model: type[BaseModel] | None = Scenario
    parts = key.split(".")
    for i, part in enumerate(parts):
        if model is None:
            # a scalar key with more path below it; dict- or list-valued keys stop the check
            return
        fields = model.model_fields
        if part not in fields:
            raise ScenarioError("unknown key", source="--grid", key=".".join(parts[: i + 1]))
        ann = fields[part].annotation
        sub = _model_of(ann)
        if sub is None and i < len(parts) - 1:
            origin = typing.get_origin(ann)
            if origin in (dict, list) or ann is Any:
                return
            raise ScenarioError("is not a table", source="--grid", key=".".join(parts[: i + 1]))
        model = sub


def _column_value(text: str) -> Any:
    v = parse_value(text)
    return v if isinstance(v, bool | int | float | str) else text


# ----------------------------------------------------------------------------- plan


@dataclass
class SweepPlan:
    """A validated sweep: the scenario, the grid (key → values as text), repeats and seeds."""

    scenario: str
    name: str
    grid: dict[str, list[str]]
    repeats: int
    base_seed: int
    seeds: list[int]
    overrides: list[str]
    points: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        """The grid's keys, in axis order."""
        return list(self.grid)

    @property
    def shape(self) -> tuple[int, ...]:
        """Number of values per axis."""
        return tuple(len(v) for v in self.grid.values())

    def point_overrides(self, p: int) -> list[str]:
        """The ``--set`` overrides of grid point ``p``."""
        return [f"{k}={v}" for k, v in zip(self.grid, self.points[p], strict=True)]

    def label(self, p: int, r: int) -> str:
        """``p<point>_<values>_r<repeat>``: unique (the values part is cut to fit, never the
        point and repeat numbers)."""
        slug = safe_label("_".join(safe_label(v, 16) for v in self.points[p]), 56)
        return f"p{p:03d}_{slug}_r{r:02d}"

    def jobs(self, out_dir: Path) -> list[Job]:
        """One job per point and repeat, each in ``out_dir/runs/<label>``."""
        jobs = []
        user_run_id = any(o.split("=", 1)[0].strip() == "comm.run_id" for o in self.overrides)
        for p in range(len(self.points)):
            for r, seed in enumerate(self.seeds):
                label = self.label(p, r)
                rid = safe_label(f"sw-p{p:03d}-r{r:02d}-{self.name}", 64)
                extra = () if user_run_id else (f"comm.run_id={rid}",)
                jobs.append(
                    Job(
                        label=label,
                        scenario=self.scenario,
                        overrides=(*self.overrides, *self.point_overrides(p), *extra),
                        seed=seed,
                        out_dir=out_dir / "runs" / label,
                    )
                )
        return jobs


def plan_sweep(
    scenario: str,
    grid_specs: Sequence[str],
    *,
    repeats: int = 1,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    kpis: Sequence[str] = (),
) -> SweepPlan:
    """Parse and check everything before a run starts: the grid syntax, every key against the
    scenario schema, the KPIs to draw against :data:`SUMMARY_KPIS`, and every point's scenario
    (a value out of range is refused here, naming the point, not hours into the sweep)."""
    if repeats < 1:
        raise ScenarioError("must be at least 1", source="--repeats")
    unknown = [k for k in kpis if k not in SUMMARY_KPIS]
    if unknown:
        raise ScenarioError(
            f"unknown KPI {unknown[0]!r}; the KPIs are: {', '.join(SUMMARY_KPIS)}", source="--kpi"
        )
    grid = parse_grid(grid_specs)
    for key in grid:
        check_key(key)
    base = load_scenario(scenario, overrides=list(overrides), seed=seed)
    base_seed = base.run.seed
    plan = SweepPlan(
        scenario=scenario,
        name=base.name,
        grid=grid,
        repeats=repeats,
        base_seed=base_seed,
        seeds=repeat_seeds(base_seed, repeats),
        overrides=list(overrides),
        points=list(itertools.product(*grid.values())),
    )
    for p in range(len(plan.points)):
        point = plan.point_overrides(p)
        try:
            load_scenario(scenario, overrides=[*overrides, *point], seed=base_seed)
        except ScenarioError as exc:
            raise ScenarioError(f"{exc}", source=f"--grid point {' '.join(point)}") from None
    return plan


# ------------------------------------------------------------------------------ run


@dataclass
class SweepResult:
    """A finished sweep: its folder, plan, table, shown table, outcomes and warnings."""

    out_dir: Path
    plan: SweepPlan
    frame: pd.DataFrame
    """sweep.parquet, as read back"""
    shown: pd.DataFrame
    """sweep.md"""
    figures: list[Path] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Outcome]:
        """The runs that ended without a readable summary."""
        return [o for o in self.outcomes if not o.ok]


def _rows(plan: SweepPlan, outcomes: Sequence[Outcome]) -> pd.DataFrame:
    rows = []
    n_rep = plan.repeats
    for i, o in enumerate(outcomes):
        p, r = divmod(i, n_rep)
        row: dict[str, Any] = {
            k: _column_value(v) for k, v in zip(plan.grid, plan.points[p], strict=True)
        }
        row.update(
            point=p,
            repeat=r,
            seed=plan.seeds[r],
            label=o.job.label,
            run_dir=Path("runs", o.job.label).as_posix(),
            error=o.error,
        )
        if o.summary is not None:
            row.update({k: v for k, v in scalar_kpis(o.summary).items() if k not in row})
        rows.append(row)
    frame = pd.DataFrame(rows)
    # a column that mixes text and numbers (e.g. an all-null KPI filled in some runs) is text
    for col in frame.columns:
        if frame[col].dtype == object:
            kinds = {type(v) for v in frame[col] if v is not None and v == v}
            if len(kinds) > 1:
                frame[col] = frame[col].map(lambda v: None if v is None else str(v))
    return frame


def _write_frame(out_dir: Path, frame: pd.DataFrame) -> None:
    with atomic_write(out_dir / "sweep.parquet", "wb") as fh:
        frame.to_parquet(fh, index=False)
    with atomic_write(out_dir / "sweep.csv") as fh:
        frame.to_csv(fh, index=False)


def point_table(frame: pd.DataFrame, keys: Sequence[str], kpis: Sequence[str]) -> pd.DataFrame:
    """Per point: the grid values, runs ok / repeats, mean of ``kpis`` (as "mean ± std" text
    when repeated): sweep.md and the printed table."""
    rows = []
    for _p, g in frame.groupby("point", sort=True):
        row: dict[str, Any] = {k: g[k].iloc[0] for k in keys}
        ok = g["error"].isna()
        row["runs ok"] = f"{int(ok.sum())}/{len(g)}"
        for kpi in kpis:
            title = _TITLES.get(kpi, kpi)
            vals = pd.to_numeric(g.loc[ok, kpi], errors="coerce") if kpi in g else pd.Series([])
            vals = vals.dropna()
            if vals.empty:
                row[title] = None
            elif len(vals) > 1:
                row[title] = f"{vals.mean():.4g} ± {vals.std(ddof=1):.2g}"
            else:
                row[title] = float(vals.mean())
        rows.append(row)
    return pd.DataFrame(rows)


def _sweep_doc(plan: SweepPlan, n_jobs: int) -> dict[str, Any]:
    """The head of ``sweep.json``: what was asked (grid, repeats, seeds and their rule)."""
    return {
        "kind": "sweep",
        "title": f"sweep of {plan.name}: {' × '.join(plan.keys)}",
        "description": f"{len(plan.points)} point(s) × {plan.repeats} repeat(s) of "
        f"{plan.scenario}; one row per run in sweep.parquet",
        "scenario": plan.scenario,
        "name": plan.name,
        "grid": {k: [_column_value(v) for v in vs] for k, vs in plan.grid.items()},
        "grid_text": plan.grid,
        "repeats": plan.repeats,
        "seed": plan.base_seed,
        "seeds": plan.seeds,
        "seed_rule": "SeedSequence(seed).spawn(repeats)[r].generate_state(1)[0]",
        "overrides": plan.overrides,
        "points": len(plan.points),
        "point_order": "product of the grid axes in key order (numpy.unravel_index)",
        "jobs": n_jobs,
    }


def _drawable(frame: pd.DataFrame, kpis: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """The KPIs to draw (asked, else :data:`DEFAULT_KPIS`) that have a numeric value in some
    run, and a warning for each asked one that has none."""
    warnings: list[str] = []
    drawn = []
    for k in list(kpis) if kpis else list(DEFAULT_KPIS):
        vals = pd.to_numeric(frame[k], errors="coerce") if k in frame else None
        if vals is None or not np.isfinite(vals.to_numpy(dtype=float)).any():
            if kpis:
                warnings.append(f"KPI {k!r} has no numeric value in any run; no figure")
            continue
        drawn.append(k)
    return drawn, warnings


def run_sweep(
    plan: SweepPlan,
    out_dir: Path,
    *,
    n_jobs: int = 1,
    kpis: Sequence[str] | None = None,
    hooks: Hooks | None = None,
    overwrite: bool = False,
    scheduler: str | None = None,
) -> SweepResult:
    """Run the plan's jobs and write the sweep folder (module docstring) with its
    ``report.html``, as a results folder (:func:`clustersim.runner.results_folder`: refused when
    in use, or not empty without ``overwrite``; ``complete.json`` written last). ``kpis``: the
    KPIs of the figures and of sweep.md (default :data:`DEFAULT_KPIS`, those the runs
    report)."""
    with results_folder(out_dir, overwrite=overwrite, required=SWEEP_FILES):
        res = sweep_runs(plan, out_dir, n_jobs=n_jobs, kpis=kpis, hooks=hooks, scheduler=scheduler)
        write_report(out_dir, "sweep")
    return res


def resume_sweep(
    out_dir: Path,
    *,
    n_jobs: int = 1,
    kpis: Sequence[str] | None = None,
    hooks: Hooks | None = None,
    scheduler: str | None = None,
) -> SweepResult:
    """Finish the sweep in ``out_dir``: its plan read back from ``sweep.json`` (and checked
    again), only the runs that are missing, failed or unfinished run, the tables, figures and
    report rewritten over all of them. ``kpis``: default those the sweep drew."""
    out_dir = Path(out_dir)
    try:
        doc = json.loads((out_dir / "sweep.json").read_text())
    except (OSError, ValueError) as exc:
        raise ClusterSimError(
            f"{out_dir}: no readable sweep.json ({exc}): not a sweep folder, or one whose "
            "sweep stopped before writing its plan"
        ) from None
    if not isinstance(doc, dict) or doc.get("kind") != "sweep":
        raise ClusterSimError(f"{out_dir}: sweep.json is not a sweep's plan")
    specs = [f"{k}={','.join(vs)}" for k, vs in doc["grid_text"].items()]
    asked = list(kpis or doc.get("kpis") or ())
    plan = plan_sweep(
        doc["scenario"],
        specs,
        repeats=int(doc["repeats"]),
        overrides=doc.get("overrides", []),
        seed=int(doc["seed"]),
        kpis=asked,
    )
    if plan.seeds != doc.get("seeds"):
        raise ClusterSimError(f"{out_dir}: the plan read back gives other seeds than sweep.json")
    with results_folder(out_dir, resume=True, required=SWEEP_FILES):
        res = sweep_runs(
            plan,
            out_dir,
            n_jobs=n_jobs,
            kpis=asked or None,
            hooks=hooks,
            resume=True,
            scheduler=scheduler,
        )
        write_report(out_dir, "sweep")
    return res


def _run_missing(
    jobs: Sequence[Job],
    n_jobs: int,
    hooks: Hooks | None,
    resume: bool,
    scheduler: str | None = None,
) -> list[Outcome]:
    """The outcomes of ``jobs`` in order: with ``resume`` those already complete read back,
    the others run (:func:`~clustersim.studies.jobs.run_jobs`, whose interrupt carries the
    outcomes so far, merged the same way)."""
    done: dict[int, Outcome] = {}
    for i, job in enumerate(jobs if resume else ()):
        out = finished_outcome(job)
        if out is not None:
            done[i] = out
    todo = [i for i in range(len(jobs)) if i not in done]

    def merged(ran: Sequence[Outcome]) -> list[Outcome]:
        got = dict(zip(todo, ran, strict=True))
        return [done.get(i) or got[i] for i in range(len(jobs))]

    try:
        return merged(run_jobs([jobs[i] for i in todo], n_jobs, hooks, scheduler=scheduler))
    except KeyboardInterrupt as exc:
        partial = getattr(exc, "outcomes", None)
        if partial is not None:
            exc.outcomes = merged(partial)  # type: ignore[attr-defined]
        raise


def sweep_runs(
    plan: SweepPlan,
    out_dir: Path,
    *,
    n_jobs: int = 1,
    kpis: Sequence[str] | None = None,
    hooks: Hooks | None = None,
    resume: bool = False,
    scheduler: str | None = None,
) -> SweepResult:
    """Run the plan's jobs (``resume``: only those whose run folder is not complete) and write
    the sweep's tables and figures into ``out_dir``, a folder the caller holds
    (:func:`run_sweep`, :func:`resume_sweep`, a study of :mod:`clustersim.studies.reproduce`);
    no report. ``sweep.json`` holds the plan from the start, so that an interrupted sweep can be
    resumed."""
    jobs = plan.jobs(out_dir)
    doc = _sweep_doc(plan, n_jobs)
    doc["kpis"] = list(kpis or [])
    write_json(out_dir / "sweep.json", {**doc, "interrupted": True})
    try:
        outcomes = _run_missing(jobs, n_jobs, hooks, resume, scheduler)
    except KeyboardInterrupt as exc:
        partial = getattr(exc, "outcomes", None)
        if partial is not None:
            _write_frame(out_dir, _rows(plan, partial))
        raise
    _write_frame(out_dir, _rows(plan, outcomes))
    frame = pd.read_parquet(out_dir / "sweep.parquet")
    drawn, warnings = _drawable(frame, kpis)
    figures = sweep_figures(frame, plan.keys, drawn, out_dir / "figures", shape=plan.shape)
    with atomic_write(out_dir / "sweep.md") as fh:
        fh.write(f"# sweep of {plan.name} ({plan.repeats} repeat(s), seed {plan.base_seed})\n\n")
        shown = point_table(frame, plan.keys, drawn)
        fh.write(markdown_table(shown))
    write_captions(
        out_dir,
        {
            f: (
                f"{_TITLES.get(k, k)} against the grid ({' × '.join(plan.keys)}); "
                + (
                    "mean, ± std and min–max over repeats."
                    if len(plan.keys) == 1
                    else "mean over repeats per cell."
                ),
                ["sweep.parquet", "sweep.json"],
            )
            for f, k in zip(figures, drawn, strict=True)
        },
    )
    doc.update(
        kpis=drawn,
        failed={o.job.label: o.error for o in outcomes if not o.ok},
        tables=["sweep.parquet", "sweep.csv", "sweep.md"],
        figures=[p.relative_to(out_dir).as_posix() for p in figures],
    )
    write_json(out_dir / "sweep.json", doc)
    return SweepResult(
        out_dir=out_dir,
        plan=plan,
        frame=frame,
        shown=shown,
        figures=figures,
        outcomes=outcomes,
        warnings=warnings,
    )


# -------------------------------------------------------------------------- figures


def _axis_labels(frame: pd.DataFrame, key: str, n: int, coord: np.ndarray) -> list[str]:
    labels = [""] * n
    for c, v in zip(coord, frame[key], strict=True):
        labels[int(c)] = f"{v:g}" if isinstance(v, float) else str(v)
    return labels


def sweep_figures(
    frame: pd.DataFrame,
    keys: Sequence[str],
    kpis: Sequence[str],
    folder: Path,
    *,
    shape: tuple[int, ...] | None = None,
) -> list[Path]:
    """``folder/<kpi>.png`` for each KPI, from the sweep table (its ``point`` column and the
    grid's ``shape`` give each row's axis indices)."""
    plt = pyplot()
    if frame.empty or not kpis:
        return []
    if shape is None:
        shape = tuple(int(frame[k].nunique(dropna=False)) for k in keys)
    coords = np.array(np.unravel_index(frame["point"].to_numpy(dtype=int), shape))
    ok = frame["error"].isna().to_numpy()
    out = []
    for kpi in kpis:
        vals = pd.to_numeric(frame[kpi], errors="coerce").to_numpy(dtype=float)
        vals = np.where(ok, vals, np.nan)
        title = _TITLES.get(kpi, kpi)
        if len(keys) == 1:
            fig = _curve(plt, frame, keys[0], shape[0], coords[0], vals, title)
        else:
            fig = _heatmaps(plt, frame, keys, shape, coords, vals, title)
        path = folder / f"{safe_label(kpi)}.png"
        out.append(save_figure(fig, path))
    return out


def _curve(
    plt: Any, frame: pd.DataFrame, key: str, n: int, coord: np.ndarray, vals: np.ndarray, title: str
) -> Any:
    """One axis: each repeat, the mean, ± std and the min–max band across repeats."""
    labels = _axis_labels(frame, key, n, coord)
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in frame[key])
    xs = np.array([float(v) for v in labels]) if numeric else np.arange(n, dtype=float)
    groups = [vals[coord == i] for i in range(n)]
    finite = [g[np.isfinite(g)] for g in groups]
    mean = np.array([g.mean() if g.size else np.nan for g in finite])
    std = np.array([g.std(ddof=1) if g.size > 1 else 0.0 for g in finite])
    lo = np.array([g.min() if g.size else np.nan for g in finite])
    hi = np.array([g.max() if g.size else np.nan for g in finite])
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, g in enumerate(finite):
        ax.scatter(np.full(g.size, xs[i]), g, s=10, c="0.6", zorder=2)
    ax.fill_between(xs, lo, hi, color="C0", alpha=0.15, label="min–max")
    ax.errorbar(xs, mean, yerr=std, color="C0", marker="o", capsize=3, label="mean ± std")
    failed = [i for i, g in enumerate(finite) if g.size == 0]
    for i in failed:
        ax.axvline(xs[i], color="r", ls=":", lw=1)
    if not numeric:
        ax.set_xticks(xs, labels)
    ax.set_xlabel(key)
    ax.set_ylabel(title)
    reps = max((g.size for g in groups), default=0)
    ax.set_title(f"{title} vs {key} ({reps} repeat(s){', failed: dotted' if failed else ''})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _mean_grid(
    coords: np.ndarray, vals: np.ndarray, combo: Sequence[int], nx_: int, ny: int
) -> np.ndarray:
    """``(ny, nx_)`` mean over repeats of the finite values of the rows whose third and later
    axis indices are ``combo`` (NaN where none)."""
    g = np.full((ny, nx_), np.nan)
    sel = np.ones(len(vals), dtype=bool)
    for j, c in enumerate(combo):
        sel &= coords[2 + j] == c
    for ix in range(nx_):
        for iy in range(ny):
            cell = vals[sel & (coords[0] == ix) & (coords[1] == iy)]
            cell = cell[np.isfinite(cell)]
            if cell.size:
                g[iy, ix] = cell.mean()
    return g


def _annotate_cells(ax: Any, g: np.ndarray, vmin: float, vmax: float) -> None:
    """Write each cell's value (``failed`` in red where NaN) in a colour readable on its fill."""
    ny, nx_ = g.shape
    for iy in range(ny):
        for ix in range(nx_):
            v = g[iy, ix]
            if not np.isfinite(v):
                txt, color = "failed", "r"
            else:
                txt, color = f"{v:.3g}", ("k" if (v - vmin) > 0.6 * (vmax - vmin) else "w")
            ax.text(ix, iy, txt, ha="center", va="center", fontsize=7, color=color)


def _heatmaps(
    plt: Any,
    frame: pd.DataFrame,
    keys: Sequence[str],
    shape: tuple[int, ...],
    coords: np.ndarray,
    vals: np.ndarray,
    title: str,
) -> Any:
    """Two axes: a heatmap of the mean over repeats; more: one per combination of the rest."""
    nx_, ny = shape[0], shape[1]
    rest = list(itertools.product(*(range(n) for n in shape[2:])))
    rest_labels = [
        _axis_labels(frame, k, n, coords[2 + j])
        for j, (k, n) in enumerate(zip(keys[2:], shape[2:], strict=True))
    ]
    grids = [_mean_grid(coords, vals, combo, nx_, ny) for combo in rest]
    finite = np.concatenate([g[np.isfinite(g)] for g in grids])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.5 * abs(vmin or 1.0), vmax + 0.5 * abs(vmax or 1.0)
    ncol = min(3, len(grids))
    nrow = math.ceil(len(grids) / ncol)
    fig, axes = plt.subplots(
        nrow,
        ncol,
        figsize=(4.2 * ncol + 1.2, 3.4 * nrow + 0.6),
        squeeze=False,
        layout="constrained",
    )
    xl = _axis_labels(frame, keys[0], nx_, coords[0])
    yl = _axis_labels(frame, keys[1], ny, coords[1])
    im = None
    for n, (combo, g) in enumerate(zip(rest, grids, strict=True)):
        ax = axes[n // ncol][n % ncol]
        im = ax.imshow(g, origin="lower", aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax)
        _annotate_cells(ax, g, vmin, vmax)
        long = max((len(t) for t in xl), default=0) * nx_ > 40
        ax.set_xticks(range(nx_), xl, rotation=30 if long else 0, ha="right" if long else "center")
        ax.set_yticks(range(ny), yl)
        ax.set_xlabel(keys[0])
        ax.set_ylabel(keys[1])
        if combo:
            ax.set_title(
                ", ".join(
                    f"{k}={rest_labels[j][c]}"
                    for j, (k, c) in enumerate(zip(keys[2:], combo, strict=True))
                ),
                fontsize=9,
            )
    for n in range(len(grids), nrow * ncol):
        axes[n // ncol][n % ncol].axis("off")
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), label=title)
    fig.suptitle(f"{title} (mean over repeats)")
    return fig
