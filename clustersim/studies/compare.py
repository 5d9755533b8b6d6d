"""``clustersim compare``: scenarios side by side on identical plant, profiles and seed.

Output folder::

    compare.csv        one row per scenario: label, scenario, mode, error, run_dir, every scalar KPI
    compare.md         the headline KPIs (the README's KPI table)
    compare.json       scenario labels, seed, overrides, the bus of the voltage figure
    figures/voltage_worst_bus.png       voltage over the day at one bus, every scenario
    figures/max_deviation_per_bus.png   max |V−1| per bus over the day, every scenario
    figures/losses.png                  network losses over the day, every scenario
    runs/<label>/      each scenario's full results folder
    report.html        the comparison's report
    complete.json      written last (:mod:`clustersim.runner`, "Integrity of a results folder")

The figures are those of the source papers: voltage at the worst bus over the day per method
(the EV/EC paper — hierarchical clustering HI, EV and exchange stations, ieee33/123 — Fig. 6),
maximum voltage deviation per bus (the cluster voltage control paper — 51-bus, five scenarios —
Fig. 5a) and losses over the day. They are drawn from the runs' ``timeseries.parquet`` files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clustersim.errors import ScenarioError
from clustersim.fileio import safe_label, write_json
from clustersim.results.figures import pyplot, save_figure
from clustersim.results.report import write_report
from clustersim.results.tables import (
    HEADLINE_KPIS,
    read_timeseries,
    scalar_kpis,
    vm_columns,
    write_captions,
    write_table,
)
from clustersim.runner import results_folder
from clustersim.scenario import load_scenario
from clustersim.studies.jobs import Hooks, Job, Outcome, run_jobs

__all__ = [
    "COMPARE_FILES",
    "CompareResult",
    "CompareRuns",
    "compare",
    "compare_figures",
    "kpi_frame",
    "most_fluctuating_bus",
    "plot_bus_voltage",
    "plot_losses",
    "plot_max_deviation_per_bus",
    "run_compare",
    "worst_bus",
    "write_compare",
]

COMPARE_FILES = ("compare.csv", "compare.md", "compare.json", "report.html")
"""the files without which a compare folder is not marked complete"""

SAME_PLANT_KEYS = (
    "case.name",
    "resources",
    "profiles",
    "run.duration_h",
    "run.plant_step_s",
    "run.vm_min_pu",
    "run.vm_max_pu",
)
"""scenario keys that must agree for a comparison to be on identical plant and profiles"""


@dataclass
class CompareResult:
    """A finished compare: its folder, the full and the shown KPI tables, the runs' outcomes."""

    out_dir: Path
    frame: pd.DataFrame
    """compare.csv"""
    shown: pd.DataFrame
    """compare.md"""
    figures: list[Path] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def failed(self) -> list[Outcome]:
        """The runs that ended without a readable summary."""
        return [o for o in self.outcomes if not o.ok]


def _get(doc: dict[str, Any], dotted: str) -> Any:
    node: Any = doc
    for k in dotted.split("."):
        node = node[k]
    return node


def with_run_id(overrides: Sequence[str], run_id: str) -> tuple[str, ...]:
    """``overrides`` plus a unique topic namespace, unless the user chose one: runs that share a
    broker (``--set comm.broker=...``) must not hear each other."""
    if any(o.split("=", 1)[0].strip() == "comm.run_id" for o in overrides):
        return tuple(overrides)
    return (*overrides, f"comm.run_id={safe_label(run_id, 64)}")


def plan_compare(
    scenarios: Sequence[str], overrides: Sequence[str] = (), seed: int | None = None
) -> tuple[list[str], list[Any], int]:
    """Load and check the scenarios: labels, validated scenarios, the common seed.

    The seed is ``seed`` or the first scenario's ``run.seed``, the same for every scenario.
    Scenarios that differ in case, resources, profiles or horizon are refused (ScenarioError
    naming the key): the comparison is on identical plant and profiles or not at all.
    """
    if not scenarios:
        raise ScenarioError("give at least one scenario", source="compare")
    first = load_scenario(scenarios[0], overrides=list(overrides), seed=seed)
    common_seed = first.run.seed if seed is None else int(seed)
    loaded = [first] + [
        load_scenario(s, overrides=list(overrides), seed=common_seed) for s in scenarios[1:]
    ]
    ref = loaded[0].model_dump(mode="json")
    for sc in loaded[1:]:
        doc = sc.model_dump(mode="json")
        for key in SAME_PLANT_KEYS:
            if _get(doc, key) != _get(ref, key):
                a, b = _get(ref, key), _get(doc, key)
                shown = f" ({a!r} vs {b!r})" if not isinstance(a, dict) else ""
                raise ScenarioError(
                    f"{loaded[0].name} and {sc.name} differ{shown}; compare runs scenarios on "
                    "identical plant and profiles (align them with --set)",
                    source="compare",
                    key=key,
                )
    labels: list[str] = []
    for sc, arg in zip(loaded, scenarios, strict=True):
        base = safe_label(sc.name or Path(arg).stem)
        label, n = base, 2
        while label in labels:
            label, n = f"{base}-{n}", n + 1
        labels.append(label)
    return labels, loaded, common_seed


def kpi_frame(outcomes: Sequence[Outcome], labels: Sequence[str], modes: Sequence[str]) -> Any:
    """One row per run: label, scenario, mode, error, run_dir, every scalar KPI."""
    rows = []
    for o, label, mode in zip(outcomes, labels, modes, strict=True):
        row: dict[str, Any] = {
            "label": label,
            "scenario": o.job.scenario,
            "mode": mode,
            "error": o.error,
            "run_dir": Path("runs", label).as_posix(),
        }
        if o.summary is not None:
            row.update({k: v for k, v in scalar_kpis(o.summary).items() if k not in row})
        rows.append(row)
    return pd.DataFrame(rows)


def headline(frame: pd.DataFrame, first: Sequence[str] = ("label", "mode")) -> pd.DataFrame:
    """The columns of the Markdown table (headline KPIs with human headers, a status column
    when a run failed)."""
    cols = [c for c in first if c in frame]
    out = frame[cols].copy()
    for key, title in HEADLINE_KPIS.items():
        out[title] = frame[key] if key in frame else np.nan
    if "error" in frame and frame["error"].notna().any():
        out["status"] = frame["error"].fillna("ok")
    return out


@dataclass
class CompareRuns:
    """The runs of a compare: labels, resolved scenarios, common seed, outcomes and KPI table,
    with what they were asked with (scenario arguments, common overrides, worker count)."""

    labels: list[str]
    scenarios: list[Any]
    seed: int
    outcomes: list[Outcome]
    frame: pd.DataFrame
    out_dir: Path
    sources: list[str]
    overrides: list[str]
    n_jobs: int


def compare(
    scenarios: Sequence[str],
    out_dir: Path,
    *,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    n_jobs: int = 1,
    hooks: Hooks | None = None,
    overwrite: bool = False,
    scheduler: str | None = None,
) -> CompareResult:
    """``clustersim compare``: check the scenarios (:func:`plan_compare`, before anything is
    written), then run them and write the comparison folder as a results folder
    (:func:`clustersim.runner.results_folder`: refused when in use, or not empty without
    ``overwrite``; ``complete.json`` written last)."""
    plan_compare(scenarios, overrides, seed)
    with results_folder(out_dir, overwrite=overwrite, required=COMPARE_FILES):
        got = run_compare(
            scenarios,
            out_dir,
            overrides=overrides,
            seed=seed,
            n_jobs=n_jobs,
            hooks=hooks,
            scheduler=scheduler,
        )
        return write_compare(got)


def run_compare(
    scenarios: Sequence[str],
    out_dir: Path,
    *,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    n_jobs: int = 1,
    hooks: Hooks | None = None,
    job_overrides: Sequence[Sequence[str]] | None = None,
    scheduler: str | None = None,
) -> CompareRuns:
    """Run the scenarios (checked by :func:`plan_compare`) into ``out_dir/runs/<label>`` and
    collect their KPI table; ``out_dir`` is a folder the caller holds (:func:`compare`, a study
    of :mod:`clustersim.studies.reproduce`). ``job_overrides``: extra overrides per scenario,
    after the common ones."""
    labels, loaded, common_seed = plan_compare(scenarios, overrides, seed)
    extra = list(job_overrides) if job_overrides is not None else [()] * len(scenarios)
    jobs = [
        Job(
            label=label,
            scenario=arg,
            overrides=with_run_id([*overrides, *more], f"cmp{i}-{label}"),
            seed=common_seed,
            out_dir=out_dir / "runs" / label,
        )
        for i, (label, arg, more) in enumerate(zip(labels, scenarios, extra, strict=True))
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes = run_jobs(jobs, n_jobs, hooks, scheduler=scheduler)
    frame = kpi_frame(outcomes, labels, [sc.control.mode for sc in loaded])
    return CompareRuns(
        labels,
        loaded,
        common_seed,
        outcomes,
        frame,
        out_dir,
        list(scenarios),
        list(overrides),
        n_jobs,
    )


def compare_figures(
    outcomes: Sequence[Outcome], folder: Path, limits: tuple[float, float], prefix: str = ""
) -> tuple[list[Path], str | None]:
    """The three overlay figures of the successful runs; returns them and the bus of the
    voltage figure (the worst bus of the first successful run)."""
    runs = [(o.job.label, o.job.out_dir) for o in outcomes if o.ok]
    if not runs:
        return [], None
    bus = worst_bus(runs[0][1])
    return [
        plot_bus_voltage(
            runs,
            bus,
            folder / f"{prefix}voltage_worst_bus.png",
            title=f"voltage at bus {bus} (worst bus of {runs[0][0]})",
            limits=limits,
        ),
        plot_max_deviation_per_bus(
            runs, folder / f"{prefix}max_deviation_per_bus.png", title="max |V−1| per bus"
        ),
        plot_losses(runs, folder / f"{prefix}losses.png", title="network losses"),
    ], bus


def compare_captions(
    out_dir: Path,
    outcomes: Sequence[Outcome],
    figures: Sequence[Path],
    bus: str | None,
    tables: Sequence[str],
) -> dict[Path, tuple[str, list[str]]]:
    """Captions (and source tables) of :func:`compare_figures`' figures for captions.json."""
    ts = [
        (o.job.out_dir / "timeseries.parquet").relative_to(out_dir).as_posix()
        for o in outcomes
        if o.ok
    ]
    texts = {
        "voltage_worst_bus": f"Voltage at bus {bus} (the worst bus of the first run) over the "
        "run, one line per scenario (EV/EC paper, Fig. 6).",
        "max_deviation_per_bus": "Maximum |V−1| of each bus over the run, one line per "
        "scenario (cluster voltage control paper, Fig. 5a).",
        "losses": "Network losses (lines and transformers) over the run, one line per scenario.",
    }
    out = {}
    for f in figures:
        key = next((k for k in texts if f.stem.endswith(k)), None)
        if key is not None:
            out[f] = (texts[key], [*tables, *ts])
    return out


def write_compare(got: CompareRuns) -> CompareResult:
    """Write the comparison folder of finished runs (module docstring): compare.csv/.md/.json,
    the overlay figures and report.html."""
    out_dir = got.out_dir
    shown = headline(got.frame)
    write_table(out_dir, "compare", got.frame, shown, title=f"compare (seed {got.seed})")
    run0 = got.scenarios[0].run
    figures, bus = compare_figures(
        got.outcomes, out_dir / "figures", (run0.vm_min_pu, run0.vm_max_pu)
    )
    write_captions(out_dir, compare_captions(out_dir, got.outcomes, figures, bus, ["compare.csv"]))
    first_ok = next((o.job.label for o in got.outcomes if o.ok), None)
    write_json(
        out_dir / "compare.json",
        {
            "kind": "compare",
            "title": "compare: " + " vs ".join(got.labels),
            "description": f"the scenarios on identical plant, profiles and seed {got.seed}",
            "scenarios": got.labels,
            "sources": got.sources,
            "seed": got.seed,
            "overrides": got.overrides,
            "jobs": got.n_jobs,
            "worst_bus": {"bus": bus, "from": first_ok},
            "runs": {o.job.label: Path("runs", o.job.label).as_posix() for o in got.outcomes},
            "failed": {o.job.label: o.error for o in got.outcomes if not o.ok},
            "tables": ["compare.csv", "compare.md"],
            "figures": [p.relative_to(out_dir).as_posix() for p in figures],
        },
    )
    write_report(out_dir, "compare")
    return CompareResult(
        out_dir=out_dir, frame=got.frame, shown=shown, figures=figures, outcomes=got.outcomes
    )


# ----------------------------------------------------------------------------- figures


def _bus_of(col: str) -> str:
    return col.split(".", 1)[1]


def worst_bus(run_dir: Path) -> str:
    """Label of the bus with the largest max |V−1| in a run (from its timeseries.parquet)."""
    ts = read_timeseries(run_dir)
    dev = (ts[vm_columns(ts)] - 1.0).abs().max(axis=0, skipna=True)
    return _bus_of(str(dev.idxmax()))


def most_fluctuating_bus(run_dir: Path) -> str:
    """Label of the bus whose voltage has the largest standard deviation over the run — the
    EV/EC paper's "most fluctuating node" (hierarchical clustering HI, ieee33/123, Fig. 6)."""
    ts = read_timeseries(run_dir)
    std = ts[vm_columns(ts)].std(axis=0, skipna=True)
    return _bus_of(str(std.idxmax()))


def _finish(fig: Any, ax: Any, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    """Label ``ax``, add a grid and the legend, and save ``fig`` to ``path``."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)


def plot_bus_voltage(
    runs: Sequence[tuple[str, Path]],
    bus: str,
    path: Path,
    *,
    title: str = "",
    limits: tuple[float, float] | None = (0.95, 1.05),
) -> Path:
    """Voltage at ``bus`` over the run, one line per run (EV/EC paper, Fig. 6)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    for label, run_dir in runs:
        ts = read_timeseries(run_dir)
        col = f"vm_pu.{bus}"
        if col in ts:
            ax.plot(ts["time_s"] / 3600.0, ts[col], label=label, lw=1.3)
    if limits is not None:
        for lim in limits:
            ax.axhline(lim, color="k", lw=0.8, ls="--")
    return _finish(
        fig, ax, path, "time (h)", f"vm_pu at bus {bus}", title or f"voltage at bus {bus}"
    )


def plot_max_deviation_per_bus(
    runs: Sequence[tuple[str, Path]], path: Path, *, title: str = ""
) -> Path:
    """Max |V−1| per bus over the run, one line per run (cluster voltage control paper,
    51-bus five-scenario study, Fig. 5a)."""
    plt = pyplot()
    first = read_timeseries(runs[0][1])
    buses = [_bus_of(c) for c in vm_columns(first)]
    fig, ax = plt.subplots(figsize=(max(8.0, min(16.0, 0.12 * len(buses) + 4)), 4))
    x = np.arange(len(buses))
    for label, run_dir in runs:
        ts = read_timeseries(run_dir)
        dev = [
            float((ts[f"vm_pu.{b}"] - 1.0).abs().max()) if f"vm_pu.{b}" in ts else np.nan
            for b in buses
        ]
        ax.plot(x, dev, marker="o", ms=3, lw=1.0, label=label)
    every = max(1, len(buses) // 30)
    ax.set_xticks(x[::every], buses[::every], rotation=90 if len(buses) > 40 else 0)
    return _finish(fig, ax, path, "bus", "max |V−1| (p.u.)", title or "max |V−1| per bus")


def plot_losses(runs: Sequence[tuple[str, Path]], path: Path, *, title: str = "") -> Path:
    """Network losses (``p_loss_mw``, lines and transformers) over the run, one line per run."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    for label, run_dir in runs:
        ts = read_timeseries(run_dir)
        ax.plot(ts["time_s"] / 3600.0, ts["p_loss_mw"] * 1000.0, label=label, lw=1.2)
    return _finish(fig, ax, path, "time (h)", "losses (kW)", title or "network losses")
