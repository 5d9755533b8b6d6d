"""``clustersim reproduce NAME``: the studies of the source papers, one command each.

- ``cluster-voltage-control`` — the cluster voltage control paper (51-bus feeder, five
  scenarios: no control, centralized, active power only, reactive power only, clustered;
  built-ins ``ieee51-ga-{none,centralized,active,reactive,clustered}``): voltage band, full-day
  maximum voltage deviation, losses and cost per scenario (its scenario table), maximum
  deviation per bus (its Fig. 5a), voltage at the worst bus and losses over the day.
- ``ev-ec-hi`` — the EV/EC paper (hierarchical clustering HI, EV and exchange stations,
  ieee33/123): clustered control on the HI, K-means, K-medoids and spectral partitions against
  centralized control; voltage deviation at the most fluctuating node (the bus whose voltage
  varies most, by standard deviation over the day, in the uncontrolled run) and the scheduling
  time (``control_wall_time_s``: the agents' solve times summed; ``control_critical_path_s``:
  the slowest agent per control step, summed); the voltage at that node over the day per
  method (its Fig. 6). A baseline partition with a disconnected cluster cannot be controlled
  cluster by cluster: the runner refuses it and the table says so; nothing is repaired.
- ``delay-sweep`` — ``ieee33-ev-clustered`` in the evening peak (17:00–20:00), centralized
  control and the clustered agents with each coordination mode (boundary rounds, value tables,
  ADMM), one factor moved at a time away from the scenario's own channel and interval
  (:data:`DELAY_FACTORS`: latency from 0.1 s to twice the 60 s deadline and a heavy-tailed one,
  control interval 1/5/15 min, loss 0–30 % independent or in bursts), each point over three
  seeds: the KPIs' mean and min–max per point, and where each protocol breaks down.

Each writes ``OUT/<study>.csv`` and ``OUT/<study>.md`` (the table, also printed),
``OUT/figures/*.png`` drawn from the tables and run folders, ``OUT/runs/<label>/``,
``OUT/reproduce.json``, ``OUT/report.html`` and, last, ``OUT/complete.json``
(:mod:`clustersim.runner`, "Integrity of a results folder"). ``quick`` (tests, smoke runs)
prepends :data:`QUICK_OVERRIDES` (2 h, a light optimizer budget, in-memory transport) and uses
smaller grids / one case; the full studies are what the README reports.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clustersim.errors import ScenarioError
from clustersim.fileio import safe_label, write_json
from clustersim.results.figures import pyplot, save_figure
from clustersim.results.report import write_report
from clustersim.results.tables import read_timeseries, write_captions, write_table
from clustersim.runner import results_folder
from clustersim.scenario import load_scenario
from clustersim.studies.compare import (
    compare_captions,
    compare_figures,
    most_fluctuating_bus,
    plan_compare,
    plot_bus_voltage,
    run_compare,
    with_run_id,
)
from clustersim.studies.jobs import Hooks, Job, Outcome, repeat_seeds, run_jobs

__all__ = ["DISCONNECTED", "STUDIES", "ReproduceResult", "reproduce", "run_status"]

QUICK_OVERRIDES = (
    "run.start_h=18",
    "run.duration_h=2",
    "control.pop_size=12",
    "control.generations=4",
    "control.round_generations=2",
    "comm.transport=memory",
)
"""``reproduce --quick``: two hours of the evening peak (18:00-20:00, when the feeders sag and
control decides the voltage) and a light optimizer budget (tests, smoke runs)"""

DISCONNECTED = "partition disconnected: not controllable"


@dataclass
class ReproduceResult:
    """A finished study: its folder, the full and the shown tables, the runs' outcomes."""

    out_dir: Path
    study: str
    frame: pd.DataFrame
    """<study>.csv"""
    shown: pd.DataFrame
    """<study>.md"""
    figures: list[Path] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyArgs:
    """What every study is run with: ``--quick``, the ``--set`` overrides of every run (quick
    ones first), the common seed (``None``: the scenarios'), the worker count, the progress
    hooks."""

    quick: bool
    overrides: list[str]
    seed: int | None
    n_jobs: int
    hooks: Hooks | None
    scheduler: str | None = None


def _rel(out_dir: Path, paths: Sequence[Path]) -> list[str]:
    return [p.relative_to(out_dir).as_posix() for p in paths]


# ------------------------------------------------------------ cluster-voltage-control

CVC_SCENARIOS = (
    ("ieee51-ga-none", 1),
    ("ieee51-ga-centralized", 2),
    ("ieee51-ga-active", 3),
    ("ieee51-ga-reactive", 4),
    ("ieee51-ga-clustered", 5),
)
"""the cluster voltage control paper's scenarios 1–5 and their built-ins"""


def _cluster_voltage_control(out_dir: Path, a: StudyArgs) -> ReproduceResult:
    """The cluster voltage control paper's five scenarios on its 51-bus feeder: the scenario
    table (voltage band, full-day max deviation, losses, cost) and Fig. 5a."""
    names = [n for n, _ in CVC_SCENARIOS]
    got = run_compare(
        names,
        out_dir,
        overrides=a.overrides,
        seed=a.seed,
        n_jobs=a.n_jobs,
        hooks=a.hooks,
        scheduler=a.scheduler,
    )
    frame = got.frame.copy()
    frame.insert(0, "paper_scenario", [k for _, k in CVC_SCENARIOS])
    shown = pd.DataFrame(
        {
            "scenario": [f"{k}" for _, k in CVC_SCENARIOS],
            "label": frame["label"],
            "mode": frame["mode"],
        }
    )
    band = []
    for lo, hi in zip(_col(frame, "min_vm_pu"), _col(frame, "max_vm_pu"), strict=True):
        band.append("–" if not np.isfinite(lo) else f"{lo:.3f}–{hi:.3f}")
    shown["voltage band p.u."] = band
    for key, title in (
        ("max_abs_voltage_deviation_pu", "max |V−1| p.u."),
        ("mean_abs_voltage_deviation_pu", "mean |V−1| p.u."),
        ("voltage_violation_bus_hours", "violation bus·h"),
        ("energy_losses_mwh", "losses MWh"),
        ("energy_cost", "cost"),
        ("switching_operations", "switchings"),
    ):
        shown[title] = _col(frame, key)
    if frame["error"].notna().any():
        shown["status"] = frame["error"].fillna("ok")
    run0 = got.scenarios[0].run
    figures, bus = compare_figures(
        got.outcomes, out_dir / "figures", (run0.vm_min_pu, run0.vm_max_pu)
    )
    write_captions(
        out_dir,
        compare_captions(out_dir, got.outcomes, figures, bus, ["cluster-voltage-control.csv"]),
    )
    return ReproduceResult(
        out_dir=out_dir,
        study="cluster-voltage-control",
        frame=frame,
        shown=shown,
        figures=figures,
        outcomes=got.outcomes,
        details={"seed": got.seed, "worst_bus": bus, "scenarios": names},
    )


def _col(frame: pd.DataFrame, key: str) -> np.ndarray:
    if key not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[key], errors="coerce").to_numpy(dtype=float)


# --------------------------------------------------------------------------- ev-ec-hi

EV_EC_CASES = (("ieee33", "ieee33-ev"), ("ieee123", "ieee123-ev"))
EV_EC_METHODS = (
    ("none", "no control", "none", None),
    ("centralized", "centralized", "centralized", None),
    ("hi", "HI", "clustered", "hi"),
    ("kmeans", "K-means", "clustered", "kmeans"),
    ("kmedoids", "K-medoids", "clustered", "kmedoids"),
    ("spectral", "spectral", "clustered", "spectral"),
)
"""(label suffix, name in the table, scenario suffix, partition method)"""


def _partition_connected(run_dir: Path) -> bool | None:
    try:
        doc = json.loads((run_dir / "partition.json").read_text())
    except (OSError, ValueError):
        return None
    got = doc.get("constraints", {}).get("connected")
    return None if got is None else bool(got)


def run_status(o: Outcome, *, clustered: bool) -> str:
    """``ok``, :data:`DISCONNECTED` for a clustered run the runner refused because its
    partition (as written to the run's ``partition.json``) has a disconnected cluster, else
    the run's error."""
    if o.ok:
        return "ok"
    if clustered and (
        _partition_connected(o.job.out_dir) is False
        or (o.error_type == "ScenarioError" and "disconnected" in (o.error or ""))
    ):
        return DISCONNECTED
    return o.error or "failed"


def _ev_ec_row(o: Outcome, meta: dict[str, Any], node: str | None) -> dict[str, Any]:
    """One run's row of ``ev-ec-hi.csv``: its status, the deviation at the case's most
    fluctuating ``node`` (from its timeseries) and its summary KPIs."""
    row: dict[str, Any] = {**meta, "label": o.job.label, "node": node}
    row["partition_connected"] = _partition_connected(o.job.out_dir)
    row["status"] = run_status(o, clustered=bool(meta["partition"]))
    dev_max = dev_mean = np.nan
    if o.ok and node is not None:
        ts = read_timeseries(o.job.out_dir)
        dev = (ts[f"vm_pu.{node}"] - 1.0).abs()
        dev_max, dev_mean = float(dev.max()), float(dev.mean())
    s = o.summary or {}
    row.update(
        max_abs_voltage_deviation_at_node_pu=dev_max,
        mean_abs_voltage_deviation_at_node_pu=dev_mean,
        control_wall_time_s=s.get("control_wall_time_s", np.nan) if o.ok else np.nan,
        control_critical_path_s=s.get("control_critical_path_s", np.nan) if o.ok else np.nan,
        max_abs_voltage_deviation_pu=s.get("max_abs_voltage_deviation_pu", np.nan),
        voltage_violation_bus_hours=s.get("voltage_violation_bus_hours", np.nan),
        energy_losses_mwh=s.get("energy_losses_mwh", np.nan),
        run_dir=Path("runs", o.job.label).as_posix(),
        error=o.error,
    )
    return row


def _ev_ec_hi(out_dir: Path, a: StudyArgs) -> ReproduceResult:
    """The EV/EC paper's comparison of partitions for clustered control (ieee33, ieee123):
    deviation at the most fluctuating node and scheduling time per method, Fig. 6."""
    cases = EV_EC_CASES[:1] if a.quick else EV_EC_CASES
    jobs = []
    meta = []
    common_seed = a.seed
    plans = []
    for case, prefix in cases:
        names = [f"{prefix}-{suffix}" for _, _, suffix, _ in EV_EC_METHODS]
        extra = [[f"partition.method={m}"] if m else [] for *_, m in EV_EC_METHODS]
        # the same plant, profiles and seed for every method of a case (plan_compare checks)
        _labels, _loaded, case_seed = plan_compare(names, a.overrides, common_seed)
        common_seed = case_seed if common_seed is None else common_seed
        plans.append((case, names, extra))
    assert common_seed is not None
    for case, names, extra in plans:
        for (key, title, _suffix, method), name, more in zip(
            EV_EC_METHODS, names, extra, strict=True
        ):
            label = f"{case}-{key}"
            jobs.append(_job(out_dir, label, name, [*a.overrides, *more], common_seed))
            meta.append({"case": case, "method": title, "partition": method or ""})
    outcomes = run_jobs(jobs, a.n_jobs, a.hooks, scheduler=a.scheduler)
    rows = []
    nodes: dict[str, str | None] = {}
    for case, _names, _extra in plans:
        ref = next(
            o
            for o, m in zip(outcomes, meta, strict=True)
            if m["case"] == case and m["method"] == "no control"
        )
        nodes[case] = most_fluctuating_bus(ref.job.out_dir) if ref.ok else None
    for o, m in zip(outcomes, meta, strict=True):
        rows.append(_ev_ec_row(o, m, nodes[m["case"]]))
    frame = pd.DataFrame(rows)
    shown = frame[["case", "method", "status", "node"]].copy()
    for key, title in (
        ("max_abs_voltage_deviation_at_node_pu", "max |V−1| at node p.u."),
        ("mean_abs_voltage_deviation_at_node_pu", "mean |V−1| at node p.u."),
        ("control_wall_time_s", "control s"),
        ("control_critical_path_s", "critical path s"),
        ("max_abs_voltage_deviation_pu", "max |V−1| p.u."),
        ("voltage_violation_bus_hours", "violation bus·h"),
    ):
        shown[title] = _col(frame, key)
    return ReproduceResult(
        out_dir=out_dir,
        study="ev-ec-hi",
        frame=frame,
        shown=shown,
        outcomes=outcomes,
        details={
            "seed": common_seed,
            "most_fluctuating_node": nodes,
            "cases": [c for c, _ in cases],
        },
    )


def _ev_ec_hi_figures(out_dir: Path, result: ReproduceResult) -> list[Path]:
    """From ``ev-ec-hi.csv`` and the runs' timeseries: voltage at the most fluctuating node per
    method and case (EV/EC paper, Fig. 6), and the scheduling time per method."""
    table = pd.read_csv(out_dir / "ev-ec-hi.csv", dtype={"node": str})
    figures = []
    captions: dict[Path, tuple[str, Sequence[str]]] = {}
    for case, g in table.groupby("case", sort=False):
        node = g["node"].dropna()
        if node.empty:
            continue
        runs = [
            (str(r.method), out_dir / str(r.run_dir)) for r in g.itertuples() if r.status == "ok"
        ]
        fig_path = plot_bus_voltage(
            runs,
            str(node.iloc[0]),
            out_dir / "figures" / f"ev-ec-hi_{case}_node{node.iloc[0]}.png",
            title=f"{case}: voltage at the most fluctuating node {node.iloc[0]}",
        )
        figures.append(fig_path)
        captions[fig_path] = (
            f"{case}: voltage at the most fluctuating node {node.iloc[0]} (largest standard "
            "deviation over the run without control) per method (EV/EC paper, Fig. 6).",
            [
                "ev-ec-hi.csv",
                *(f"{d.relative_to(out_dir).as_posix()}/timeseries.parquet" for _, d in runs),
            ],
        )
    plt = pyplot()
    cases = list(dict.fromkeys(table["case"]))
    fig, axes = plt.subplots(1, len(cases), figsize=(6 * len(cases), 4), squeeze=False)
    for ax, case in zip(axes[0], cases, strict=True):
        g = table[(table["case"] == case) & (table["method"] != "no control")]
        x = np.arange(len(g))
        wall = pd.to_numeric(g["control_wall_time_s"], errors="coerce").to_numpy(dtype=float)
        crit = pd.to_numeric(g["control_critical_path_s"], errors="coerce").to_numpy(dtype=float)
        ax.bar(x - 0.2, np.nan_to_num(wall), 0.4, label="control time (sum of solves)")
        ax.bar(x + 0.2, np.nan_to_num(crit), 0.4, label="critical path")
        for i, st in enumerate(g["status"]):
            if st != "ok":
                ax.text(
                    i,
                    0,
                    "not run" if st != DISCONNECTED else "disconnected",
                    rotation=90,
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    color="r",
                )
        ax.set_xticks(x, list(g["method"]))
        ax.set_ylabel("s")
        ax.set_title(f"{case}: scheduling time")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig_path = save_figure(fig, out_dir / "figures" / "ev-ec-hi_control_time.png")
    figures.append(fig_path)
    captions[fig_path] = (
        "Scheduling time per method: the agents' solve times summed over the run, and the "
        "critical path (the slowest agent per control step, summed).",
        ["ev-ec-hi.csv"],
    )
    write_captions(out_dir, captions)
    return figures


def _job(out_dir: Path, label: str, scenario: str, overrides: list[str], seed: int) -> Any:

    return Job(
        label=label,
        scenario=scenario,
        overrides=with_run_id(overrides, f"rep-{label}"),
        seed=seed,
        out_dir=out_dir / "runs" / label,
    )


# ------------------------------------------------------------------------ delay-sweep

DELAY_SCENARIO = "ieee33-ev-clustered"
DELAY_WINDOW = ("run.start_h=17", "run.duration_h=3")
"""the evening peak, when the far end of the feeder sags and control decides the voltage"""
DELAY_PROTOCOLS: dict[str, tuple[str, ...]] = {
    "centralized": ("control.mode=centralized",),
    "boundary": ("control.coordination=boundary",),
    "value-table": ("control.coordination=value-table",),
    "admm": ("control.coordination=admm", "control.coordination_rounds=4"),
}
"""the control protocols compared: the central agent, and the clustered agents with each
coordination mode (ADMM with 4 rounds: it needs more than one exchange to move)"""
DELAY_FACTORS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("base", "base", ()),
    ("latency", "0.1 s", ("comm.latency.mean_ms=100",)),
    ("latency", "1 s", ("comm.latency.mean_ms=1000",)),
    ("latency", "10 s", ("comm.latency.mean_ms=10000",)),
    ("latency", "30 s", ("comm.latency.mean_ms=30000",)),
    ("latency", "60 s", ("comm.latency.mean_ms=60000",)),
    ("latency", "120 s", ("comm.latency.mean_ms=120000",)),
    ("latency", "Pareto 10 s", ("comm.latency.dist=pareto", "comm.latency.mean_ms=10000")),
    ("interval", "1 min", ("control.interval_s=60",)),
    ("interval", "5 min", ("control.interval_s=300",)),
    ("loss", "10 %", ("comm.loss.p=0.1",)),
    ("loss", "30 %", ("comm.loss.p=0.3",)),
    ("loss", "30 % bursts", ("comm.loss.model=gilbert", "comm.loss.p=0.3")),
)
"""one factor at a time around the base point, the scenario's own channel and interval
(lognormal latency of mean 50 ms, σ 0.5; 1 % Bernoulli loss; 15 min interval, 60 s deadline):
latency from 0.1 s to twice the deadline, and a heavy-tailed one (Pareto, α 1.5, mean 10 s);
control interval; loss rate, independent or in bursts (Gilbert–Elliott, mean burst 4)"""
DELAY_FACTORS_QUICK = ("base", "30 s", "30 % bursts")
DELAY_SEEDS, DELAY_SEEDS_QUICK = 3, 2
DELAY_KPIS = (
    ("voltage_violation_bus_hours", "violation bus·h"),
    ("max_abs_voltage_deviation_pu", "max |V−1| p.u."),
    ("mean_abs_voltage_deviation_pu", "mean |V−1| p.u."),
    ("energy_losses_mwh", "losses MWh"),
    ("messages_lost", "lost msgs"),
    ("messages_late", "late msgs"),
    ("coordination_rounds_mean", "rounds"),
    ("mean_age_of_information_s", "age of information s"),
    ("primal_residual_vm_pu", "boundary residual p.u."),
)


def _delay_window(a: StudyArgs) -> tuple[str, ...]:
    """The overrides that put the runs in the evening peak (``--quick`` has its own window)."""
    return () if a.quick else DELAY_WINDOW


def _delay_plan(out_dir: Path, a: StudyArgs) -> tuple[list[Job], list[dict[str, Any]]]:
    """One job per protocol, factor level and seed, and each job's row keys."""
    base = load_scenario(DELAY_SCENARIO, overrides=a.overrides, seed=a.seed)
    seeds = repeat_seeds(base.run.seed, DELAY_SEEDS_QUICK if a.quick else DELAY_SEEDS)
    window = _delay_window(a)
    factors = [f for f in DELAY_FACTORS if not a.quick or f[1] in DELAY_FACTORS_QUICK]
    jobs, meta = [], []
    for protocol, sets in DELAY_PROTOCOLS.items():
        for factor, level, point in factors:
            for r, seed in enumerate(seeds):
                label = safe_label(f"{protocol}_{factor}_{level}_r{r}", 64)
                over = [*window, *a.overrides, *sets, *point]
                jobs.append(_job(out_dir, label, DELAY_SCENARIO, over, seed))
                meta.append({"protocol": protocol, "factor": factor, "level": level, "seed": seed})
    return jobs, meta


def _window_h(a: StudyArgs) -> list[float]:
    """Start and end hour of the study's runs."""
    run = load_scenario(DELAY_SCENARIO, overrides=[*a.overrides, *_delay_window(a)]).run
    return [run.start_h, run.start_h + run.duration_h]


def _delay_sweep(out_dir: Path, a: StudyArgs) -> ReproduceResult:
    """Each control protocol on ieee33-ev-clustered in the evening peak, one channel or control
    factor changed at a time around the base point, over several seeds: the KPIs' mean and
    spread (min–max over seeds) per point (``delay-sweep.csv``; every run in
    ``delay-sweep-runs.csv``)."""
    jobs, meta = _delay_plan(out_dir, a)
    outcomes = run_jobs(jobs, a.n_jobs, a.hooks, scheduler=a.scheduler)
    runs = []
    for o, m in zip(outcomes, meta, strict=True):
        row: dict[str, Any] = {**m, "run_dir": f"runs/{o.job.label}", "error": o.error}
        for key, _ in DELAY_KPIS:
            v = (o.summary or {}).get(key)
            row[key] = float(v) if isinstance(v, int | float) and o.ok else np.nan
        runs.append(row)
    per_run = pd.DataFrame(runs)
    write_table(out_dir, "delay-sweep-runs", per_run, per_run, title="delay-sweep: every run")
    rows = []
    for (protocol, factor, level), g in per_run.groupby(
        ["protocol", "factor", "level"], sort=False
    ):
        ok = g["error"].isna()
        row = {"protocol": protocol, "factor": factor, "level": level}
        row |= {"runs_ok": int(ok.sum()), "runs": len(g)}
        for key, _ in DELAY_KPIS:
            vals = g.loc[ok, key].dropna()
            row[key] = float(vals.mean()) if len(vals) else np.nan
            row[f"{key}_min"] = float(vals.min()) if len(vals) else np.nan
            row[f"{key}_max"] = float(vals.max()) if len(vals) else np.nan
        row["error"] = "; ".join(str(e) for e in g["error"].dropna()) or None
        rows.append(row)
    table = pd.DataFrame(rows)
    shown = table[["protocol", "factor", "level"]].copy()
    for key, title in DELAY_KPIS:
        shown[title] = [
            _spread(m, lo, hi)
            for m, lo, hi in zip(table[key], table[f"{key}_min"], table[f"{key}_max"], strict=True)
        ]
    if table["error"].notna().any():
        shown["status"] = table["error"].fillna("ok")
    return ReproduceResult(
        out_dir=out_dir,
        study="delay-sweep",
        frame=table,
        shown=shown,
        outcomes=outcomes,
        details={
            "scenario": DELAY_SCENARIO,
            "window_h": _window_h(a),
            "seeds": sorted({m["seed"] for m in meta}),
            "protocols": {k: list(v) for k, v in DELAY_PROTOCOLS.items()},
            "factors": [[f, lv, list(p)] for f, lv, p in DELAY_FACTORS],
        },
    )


def _spread(mean: float, lo: float, hi: float) -> str:
    """``mean [min–max]`` of a KPI over seeds, in 3 significant digits."""
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.3g} [{lo:.3g}–{hi:.3g}]"


def _delay_figures(out_dir: Path, result: ReproduceResult) -> list[Path]:
    """From ``delay-sweep.csv``: per factor (latency, interval, loss), the violation and the
    max |V−1| of every protocol at each level (the base point first), the seeds' mean with their
    min–max as a bar."""
    table = pd.read_csv(out_dir / "delay-sweep.csv")
    factors = [f for f in ("latency", "interval", "loss") if f in set(table["factor"])]
    plt = pyplot()
    kpis = (
        ("voltage_violation_bus_hours", "violation bus·h"),
        ("max_abs_voltage_deviation_pu", "max |V−1| p.u."),
    )
    fig, axes = plt.subplots(len(kpis), len(factors), figsize=(5 * len(factors), 7), squeeze=False)
    for col, factor in enumerate(factors):
        for row, (key, title) in enumerate(kpis):
            ax = axes[row][col]
            for k, (protocol, g) in enumerate(table.groupby("protocol", sort=False)):
                part = pd.concat([g[g["factor"] == "base"], g[g["factor"] == factor]])
                x = np.arange(len(part)) + (k - 1.5) * 0.08
                err = [part[key] - part[f"{key}_min"], part[f"{key}_max"] - part[key]]
                ax.errorbar(x, part[key], yerr=err, marker="o", capsize=3, label=protocol)
                ax.set_xticks(np.arange(len(part)), list(part["level"]), rotation=30, fontsize=8)
            ax.set_ylabel(title)
            ax.set_title(f"{factor}" if row == 0 else "")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("ieee33-ev, evening peak: control protocols against latency, interval and loss")
    path = save_figure(fig, out_dir / "figures" / "delay-sweep.png")
    write_captions(
        out_dir,
        {
            path: (
                "Violation and max |V−1| per control protocol as one factor moves away from the "
                "base point (first tick): mean over the seeds, min–max as the bar.",
                ["delay-sweep.csv"],
            )
        },
    )
    return [path]


# ------------------------------------------------------------------------------ entry

Study = Callable[[Path, "StudyArgs"], ReproduceResult]
STUDIES: dict[str, tuple[Study, Callable[[Path, ReproduceResult], list[Path]] | None, str]] = {
    "cluster-voltage-control": (
        _cluster_voltage_control,
        None,
        "51-bus, five scenarios (none, centralized, active-only, reactive-only, clustered)",
    ),
    "ev-ec-hi": (
        _ev_ec_hi,
        _ev_ec_hi_figures,
        "ieee33/123: clustered control on HI, K-means, K-medoids, spectral vs centralized",
    ),
    "delay-sweep": (
        _delay_sweep,
        _delay_figures,
        "ieee33-ev evening peak: latency, control interval and loss one at a time, for "
        "centralized control and each coordination mode, over seeds",
    ),
}


def reproduce(
    study: str,
    out_dir: Path,
    *,
    quick: bool = False,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    n_jobs: int = 1,
    hooks: Hooks | None = None,
    overwrite: bool = False,
    scheduler: str | None = None,
) -> ReproduceResult:
    """Run ``study`` (one of :data:`STUDIES`) and write its folder (module docstring) as a
    results folder (:func:`clustersim.runner.results_folder`: refused when in use, or not empty
    without ``overwrite``; ``complete.json`` written last)."""
    if study not in STUDIES:
        raise ScenarioError(f"unknown study (studies: {', '.join(STUDIES)})", source=study)
    every = [*(QUICK_OVERRIDES if quick else ()), *overrides]
    required = (f"{study}.csv", f"{study}.md", "reproduce.json", "report.html")
    with results_folder(out_dir, overwrite=overwrite, required=required):
        return _reproduce(study, out_dir, StudyArgs(quick, every, seed, n_jobs, hooks, scheduler))


def _reproduce(study: str, out_dir: Path, args: StudyArgs) -> ReproduceResult:
    """The study's runs, table, figures, ``reproduce.json`` and report, into ``out_dir``."""
    quick, every = args.quick, args.overrides
    run, figures, desc = STUDIES[study]
    result = run(out_dir, args)
    write_table(
        out_dir, study, result.frame, result.shown, title=f"{study}{' (quick)' if quick else ''}"
    )
    if figures is not None:
        result.figures = [*result.figures, *figures(out_dir, result)]
    write_json(
        out_dir / "reproduce.json",
        {
            "kind": "reproduce",
            "title": f"reproduce {study}{' (quick)' if quick else ''}",
            "description": desc,
            "study": study,
            "quick": quick,
            "overrides": every,
            **result.details,
            "runs": {o.job.label: Path("runs", o.job.label).as_posix() for o in result.outcomes},
            "failed": {o.job.label: o.error for o in result.outcomes if not o.ok},
            "tables": [f"{study}.csv", f"{study}.md"],
            "figures": sorted(set(_rel(out_dir, result.figures))),
        },
    )
    write_report(out_dir, "reproduce")
    return result
