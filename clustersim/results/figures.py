"""Figures of a results folder, each drawn from one or two of the folder's tables.

Every figure is traceable to a table in the results folder: every function here
takes the table as it was written (a data frame read back from the parquet file, or the
``summary.json`` mapping), never the live simulation objects, and :func:`draw_run_figures`
redraws every table-based figure of a run from its folder alone:

| figure | drawn from |
|---|---|
| ``voltage_heatmap.png`` | ``timeseries.parquet`` (``time_s``, ``vm_pu.<bus>``) |
| ``pareto_<controller>.png`` | ``pareto.parquet`` at the interval of the worst voltage in ``timeseries.parquet`` |
| ``messages_timeline.png`` | ``messages.parquet`` |
| ``coordination.png`` | ``coordination.parquet`` at the interval of the worst voltage in ``timeseries.parquet`` |
| ``kpi_bars.png`` | ``summary.json`` |
| ``partition.png`` | ``partition.json`` (drawn by :mod:`clustersim.results.partition` with the grid) |

:data:`FIGURE_SOURCES` states the same for the report's captions. Every PNG is written
atomically (temporary name in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm

from clustersim.assemble.build import resource_set
from clustersim.errors import ClusterSimError
from clustersim.fileio import atomic_write
from clustersim.scenario import validate_scenario

__all__ = [
    "FIGURE_SOURCES",
    "PARETO_COLUMNS",
    "FigureInfo",
    "coordination_rounds",
    "draw_run_figures",
    "figure_info",
    "kpi_bars",
    "messages_timeline",
    "pareto_figures",
    "pareto_frame",
    "voltage_heatmap",
    "worst_interval",
]


@dataclass(frozen=True)
class FigureInfo:
    """What a figure shows and the tables of the results folder it is drawn from."""

    caption: str
    sources: tuple[str, ...]


FIGURE_SOURCES: dict[str, FigureInfo] = {
    "kpi_bars.png": FigureInfo(
        "Headline KPIs of the run: voltage deviation against its limit, violation, losses, "
        "cost, messages and control time.",
        ("summary.json",),
    ),
    "voltage_heatmap.png": FigureInfo(
        "Bus voltage magnitude per plant step (bus × time); red above 1 p.u., blue below, "
        "the black lines on the colour bar are the voltage limits.",
        ("timeseries.parquet",),
    ),
    "partition.png": FigureInfo(
        "The partition: buses coloured by cluster, pilot buses as stars.",
        ("partition.json",),
    ),
    "messages_timeline.png": FigureInfo(
        "Every protocol message on its link (top) at its simulated send time, lost, late and "
        "rejected ones marked; one-way latency of the delivered ones (bottom).",
        ("messages.parquet",),
    ),
    "coordination.png": FigureInfo(
        "Coordination rounds at the control interval with the worst voltage: per tie, the "
        "boundary voltage the parent's decision holds and the one the child's assumed (top), "
        "the draw the child predicts and the one the parent assumed (middle), and their "
        "residuals (bottom, log scale).",
        ("coordination.parquet", "timeseries.parquet"),
    ),
    "voltage_envelope.png": FigureInfo(
        "Lowest, mean and highest bus voltage per plant step, with the voltage limits.",
        ("timeseries.parquet",),
    ),
    "devices.png": FigureInfo(
        "Device trajectories: tap positions, capacitor steps, reactive power of SVCs and "
        "inverters, storage state of charge and power, EV and exchange-station demand (a "
        "panel with more than ten devices shows their range and mean).",
        ("timeseries.parquet", "scenario.toml"),
    ),
    "pareto_*.png": FigureInfo(
        "The controller's final population and Pareto front at the control interval with the "
        "worst voltage deviation; the star is the compromise it chose.",
        ("pareto.parquet", "timeseries.parquet"),
    ),
}
"""figure file name (or glob) → caption and source tables, for the report"""

PARETO_COLUMNS = [
    "interval",
    "controller",
    "set",
    "f_voltage_pu",
    "f_loss_mw",
    "f_cost",
    "cv",
]
"""columns of pareto.parquet: one row per objective vector; ``set`` is ``population`` (the final
population, with its constraint violation ``cv``), ``front`` (the returned Pareto front) or
``chosen`` (the compromise the controller applied)"""

_CONVERGED_F = 1e3
"""objective vectors at or above this are the optimizer's penalty for a failed power flow"""


def figure_info(name: str) -> FigureInfo | None:
    """Caption and sources of a figure file name (``None`` when it is not one of ours)."""
    if name in FIGURE_SOURCES:
        return FIGURE_SOURCES[name]
    for pattern, info in FIGURE_SOURCES.items():
        if fnmatch.fnmatchcase(name, pattern):
            return info
    return None


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (figures are files only)."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): pyplot picks its backend on import

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 110, *, tight: bool = True) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (laid out tight unless it has a layout
    engine or ``tight`` is false) and close it."""
    try:
        if tight and fig.get_layout_engine() is None:
            fig.tight_layout()
        with atomic_write(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=dpi)
    finally:
        pyplot().close(fig)
    return path


# ----------------------------------------------------------------------------- voltage heatmap
def voltage_heatmap(
    path: Path,
    timeseries: pd.DataFrame,
    *,
    vm_min_pu: float = 0.95,
    vm_max_pu: float = 1.05,
    plant_step_s: float = 60.0,
    title: str = "",
) -> Path:
    """Bus × time heatmap of the ``vm_pu.<bus>`` columns of ``timeseries.parquet``."""
    plt = pyplot()

    cols = [c for c in timeseries.columns if c.startswith("vm_pu.")]
    labels = [c.removeprefix("vm_pu.") for c in cols]
    vm = timeseries[cols].to_numpy(dtype=float).T  # bus × time
    hours = timeseries["time_s"].to_numpy(dtype=float) / 3600.0
    finite = np.isfinite(vm).any()
    lo = min(float(np.nanmin(vm)) if finite else 0.95, vm_min_pu - 0.01)
    hi = max(float(np.nanmax(vm)) if finite else 1.05, vm_max_pu + 0.01)
    fig, ax = plt.subplots(figsize=(10, max(3.0, min(12.0, 0.09 * vm.shape[0] + 2))))
    step_h = (hours[1] - hours[0]) if len(hours) > 1 else plant_step_s / 3600
    start = hours[0] if len(hours) else 0.0
    end = (hours[-1] if len(hours) else 0.0) + step_h
    im = ax.imshow(
        vm,
        aspect="auto",
        origin="lower",
        cmap="RdBu_r",
        interpolation="nearest",
        norm=TwoSlopeNorm(vcenter=1.0, vmin=min(lo, 0.999), vmax=max(hi, 1.001)),
        extent=(start, end, -0.5, vm.shape[0] - 0.5),
    )
    every = max(1, len(labels) // 25)
    ax.set_yticks(range(0, len(labels), every), [labels[i] for i in range(0, len(labels), every)])
    ax.set_xlabel("time (h)")
    ax.set_ylabel("bus")
    ax.set_title(f"{title}bus voltage; limits {vm_min_pu}–{vm_max_pu} p.u.")
    cb = fig.colorbar(im, ax=ax)
    cb.set_label("vm_pu")
    for lim in (vm_min_pu, vm_max_pu):
        cb.ax.axhline(lim, color="k", lw=1)
    return save_figure(fig, path, 110)


def voltage_envelope(
    path: Path,
    timeseries: pd.DataFrame,
    *,
    vm_min_pu: float = 0.95,
    vm_max_pu: float = 1.05,
    title: str = "",
) -> Path:
    """Lowest, mean and highest of the ``vm_pu.<bus>`` columns per step, with the limits."""
    plt = pyplot()
    vm = timeseries[[c for c in timeseries.columns if c.startswith("vm_pu.")]].to_numpy(float)
    hours = timeseries["time_s"].to_numpy(dtype=float) / 3600.0
    with np.errstate(all="ignore"):
        lo, mean, hi = np.nanmin(vm, axis=1), np.nanmean(vm, axis=1), np.nanmax(vm, axis=1)
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.fill_between(hours, lo, hi, color="tab:blue", alpha=0.25, step="post", label="min–max")
    ax.step(hours, mean, where="post", color="tab:blue", lw=1.2, label="mean over buses")
    for lim in (vm_min_pu, vm_max_pu):
        ax.axhline(lim, color="tab:red", ls="--", lw=1)
    ax.set_xlabel("time (h)")
    ax.set_ylabel("voltage (p.u.)")
    ax.set_title(f"{title}voltage envelope; limits {vm_min_pu}–{vm_max_pu} p.u.")
    ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path, 110)


_MAX_LINES = 10
"""a device panel draws one line per device up to this many, else their range and mean"""


def _device_panels(
    timeseries: pd.DataFrame, kinds: Mapping[str, str], capacity_mwh: Mapping[str, float]
) -> list[tuple[str, pd.DataFrame]]:
    """(y label, one column per device) of each device panel that has data."""
    cols = list(timeseries.columns)

    def pick(suffix: str, want: set[str] | None = None) -> pd.DataFrame:
        names = [c for c in cols if c.endswith(suffix) and not c.startswith("vm_pu.")]
        if want is not None:  # the devices themselves, not their parts (an exchange's battery)
            names = [c for c in names if kinds.get(c.removesuffix(suffix)) in want]
        return timeseries[names].rename(columns=lambda c: c.removesuffix(suffix))

    energy = pick(".energy_mwh")
    soc = energy.apply(lambda s: 100.0 * s / capacity_mwh[s.name] if s.name in capacity_mwh else s)
    soc_label = "state of charge %" if set(energy.columns) <= set(capacity_mwh) else "energy MWh"
    storage_p = timeseries[[f"{n}.p_mw" for n in energy.columns if f"{n}.p_mw" in cols]]
    panels = [
        ("tap position", pick(".tap_pos")),
        ("capacitor steps", pick(".step")),
        ("reactive power Mvar", pick(".q_mvar")),
        (soc_label, soc),
        ("storage power MW (charging > 0)", storage_p.rename(columns=lambda c: c[:-5])),
        ("EV / exchange demand MW", pick(".p_mw", {"ev", "exchange"})),
    ]
    return [(label, frame) for label, frame in panels if frame.shape[1]]


def device_trajectories(
    path: Path,
    timeseries: pd.DataFrame,
    *,
    kinds: Mapping[str, str] | None = None,
    capacity_mwh: Mapping[str, float] | None = None,
    title: str = "",
) -> Path | None:
    """One panel per device quantity over the run (module registry ``devices.png``); ``kinds``:
    device name → kind, ``capacity_mwh``: storage name → capacity (for the state of charge).
    ``None`` when the run has no devices."""
    panels = _device_panels(timeseries, kinds or {}, capacity_mwh or {})
    if not panels:
        return None
    plt = pyplot()
    hours = timeseries["time_s"].to_numpy(dtype=float) / 3600.0
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.0 * len(panels) + 0.8), sharex=True)
    for ax, (label, frame) in zip(np.atleast_1d(axes), panels, strict=True):
        if frame.shape[1] <= _MAX_LINES:
            for name in frame.columns:
                ax.step(hours, frame[name].to_numpy(float), where="post", lw=1, label=name)
            ax.legend(fontsize=7, ncol=min(5, frame.shape[1]), loc="upper left")
        else:
            v = frame.to_numpy(float)
            ax.fill_between(hours, v.min(axis=1), v.max(axis=1), alpha=0.3, step="post")
            ax.step(hours, v.mean(axis=1), where="post", lw=1.2, label=f"mean of {v.shape[1]}")
            ax.legend(fontsize=7, loc="upper left")
        ax.set_ylabel(label, fontsize=8)
    np.atleast_1d(axes)[-1].set_xlabel("time (h)")
    fig.suptitle(f"{title}device trajectories")
    return save_figure(fig, path, 110)


def _devices_of(doc: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, float]]:
    """Device name → kind and storage name → capacity of a results folder's scenario (empty
    when the scenario cannot be read back)."""
    try:
        rs = resource_set(validate_scenario(dict(doc), source="scenario.toml"))
    except ClusterSimError:
        return {}, {}
    kinds = {d.name: str(d.kind) for d in rs.devices}
    capacity = {d.name: d.e_mwh for d in rs.devices if d.kind == "ess"}
    capacity |= {f"{d.name}:battery": d.e_mwh for d in rs.devices if d.kind == "exchange"}
    return kinds, capacity


# ----------------------------------------------------------------------------- pareto fronts
def pareto_frame(fronts: Mapping[tuple[int, str], Any]) -> pd.DataFrame:
    """The ``pareto.parquet`` table from a control log's ``fronts`` mapping
    ``(interval, controller) → (front F, chosen f, population F, population cv)``."""
    parts: list[pd.DataFrame] = []
    for (interval, name), (front, chosen, pop_f, pop_cv) in sorted(fronts.items()):
        for kind, f, cv in (
            ("population", pop_f, pop_cv),
            ("front", front, None),
            ("chosen", np.atleast_2d(chosen), None),
        ):
            f = np.asarray(f, dtype=float).reshape(-1, 3)
            if not len(f):
                continue
            cvs = (
                np.asarray(cv, dtype=float).reshape(-1)
                if cv is not None
                else np.full(len(f), np.nan)
            )
            parts.append(
                pd.DataFrame(
                    {
                        "interval": int(interval),
                        "controller": str(name),
                        "set": kind,
                        "f_voltage_pu": f[:, 0],
                        "f_loss_mw": f[:, 1],
                        "f_cost": f[:, 2],
                        "cv": cvs,
                    }
                )
            )
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in PARETO_COLUMNS})
    return pd.concat(parts, ignore_index=True)[PARETO_COLUMNS]


def worst_interval(timeseries: pd.DataFrame, *, interval_s: float, plant_step_s: float) -> int:
    """Control interval holding the plant step with the largest max |V−1| (-1: no voltages)."""
    vm = timeseries.filter(like="vm_pu.").to_numpy(dtype=float)
    if not vm.size or not np.isfinite(vm).any():
        return -1
    dev = np.nanmax(np.where(np.isfinite(vm), np.abs(vm - 1.0), -np.inf), axis=1)
    worst_step = int(np.argmax(dev))
    spi = max(1, int(interval_s // plant_step_s))
    return worst_step // spi


def pareto_figures(
    folder: Path,
    pareto: pd.DataFrame,
    timeseries: pd.DataFrame,
    *,
    interval_s: float = 900.0,
    plant_step_s: float = 60.0,
    title: str = "",
) -> list[Path]:
    """``pareto_<controller>.png`` for each controller of ``pareto.parquet``: its front at the
    control interval that covers the plant step with the worst voltage deviation."""
    plt = pyplot()
    interval = worst_interval(timeseries, interval_s=interval_s, plant_step_s=plant_step_s)
    if interval < 0 or pareto.empty:
        return []
    at = pareto[pareto["interval"] == interval]
    written = []
    t_h = interval * interval_s / 3600
    for name in sorted(at["controller"].unique(), key=_natural):
        rows = at[at["controller"] == name]
        pop = rows[rows["set"] == "population"]
        front = rows[rows["set"] == "front"][["f_voltage_pu", "f_loss_mw", "f_cost"]].to_numpy()
        chosen = rows[rows["set"] == "chosen"][["f_voltage_pu", "f_loss_mw", "f_cost"]].to_numpy()
        if not len(front):
            continue
        pop_f = pop[["f_voltage_pu", "f_loss_mw", "f_cost"]].to_numpy(dtype=float)
        pop_cv = pop["cv"].to_numpy(dtype=float)
        ok = pop_f[:, 0] < _CONVERGED_F  # candidates whose power flow converged
        feas = ok & (pop_cv <= 1e-12)
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        pairs = (
            (0, 1, "voltage deviation (p.u.)", "losses (MW)"),
            (0, 2, "voltage deviation (p.u.)", "cost"),
        )
        for ax, (i, j, xl, yl) in zip(axes, pairs, strict=True):
            ax.scatter(
                pop_f[ok & ~feas, i],
                pop_f[ok & ~feas, j],
                s=8,
                c="0.75",
                marker="x",
                label="infeasible",
            )
            ax.scatter(pop_f[feas, i], pop_f[feas, j], s=8, c="0.45", label="feasible")
            sc_ = ax.scatter(
                front[:, i], front[:, j], c=front[:, 3 - i - j], cmap="viridis", s=22, label="front"
            )
            if len(chosen):
                ax.scatter(chosen[:1, i], chosen[:1, j], marker="*", s=160, c="red", label="chosen")
            ax.set_xlabel(xl)
            ax.set_ylabel(yl)
            fig.colorbar(sc_, ax=ax, label=("cost" if j == 1 else "losses (MW)"))
            ax.legend(loc="best", fontsize=7)
        fig.suptitle(
            f"{title}{name} front at control step {interval} ({t_h:.2f} h, worst voltage); "
            f"front {len(front)} of {int(ok.sum())}, {int(feas.sum())} feasible"
        )
        written.append(save_figure(fig, folder / f"pareto_{name}.png", 100))
    return written


# ----------------------------------------------------------------------------- coordination
def coordination_rounds(
    path: Path, coordination: pd.DataFrame, interval: int, *, title: str = ""
) -> Path | None:
    """``coordination.png``: the boundary values of every tie over the coordination rounds of
    control interval ``interval`` (rows of ``coordination.parquet``), and their residuals.
    None when the interval has no round with both sides of a tie."""
    rows = coordination[coordination["interval"] == interval].dropna(subset=["residual_vm_pu"])
    if rows.empty:
        return None
    plt = pyplot()
    fig, (a_v, a_p, a_r) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    for k, (tie, g) in enumerate(rows.groupby("tie", sort=True)):
        g = g.sort_values("round")
        colour = f"C{k % 10}"
        label = f"{g.parent.iloc[0]}→{g.child.iloc[0]} ({tie})"
        a_v.plot(g["round"], g.vm_parent_pu, "-o", c=colour, label=f"{label} parent")
        a_v.plot(g["round"], g.vm_child_pu, "--x", c=colour, label=f"{label} child")
        a_p.plot(g["round"], g.p_child_mw, "-o", c=colour)
        a_p.plot(g["round"], g.p_parent_mw, "--x", c=colour)
        floor = 1e-7  # exact agreement drawn at the floor of the log axis
        a_r.semilogy(g["round"], np.maximum(g.residual_vm_pu, floor), "-o", c=colour)
        a_r.semilogy(g["round"], np.maximum(g.residual_p_mw, floor), ":s", c=colour)
    a_v.set_ylabel("boundary voltage (p.u.)")
    a_p.set_ylabel("tie draw P (MW)")
    a_r.set_ylabel("residual (p.u. ○, MW □)")
    a_r.set_xlabel("coordination round")
    a_r.set_xticks(sorted(rows["round"].unique()))
    a_v.legend(loc="best", fontsize=6, ncol=2)
    a_p.set_title("solid: child's prediction, dashed: parent's assumption", fontsize=8)
    fig.suptitle(f"{title}coordination at control step {interval}")
    return save_figure(fig, path, 100)


# ----------------------------------------------------------------------------- message timeline
_KIND_ORDER = {"meas": 0, "clock": 1, "setpoint": 2, "boundary": 3, "status": 4, "log": 5}
_KIND_COLOUR = {
    "meas": "#4c78a8",
    "setpoint": "#54a24b",
    "boundary": "#b279a2",
    "clock": "#9d755d",
    "status": "#bab0ac",
    "log": "#bab0ac",
}


def _natural(s: str) -> tuple[Any, ...]:
    """Sort key putting C2 before C10."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(s)))


def _flag(messages: pd.DataFrame, col: str) -> np.ndarray:
    if col not in messages:
        return np.zeros(len(messages), dtype=bool)
    return messages[col].fillna(False).to_numpy(dtype=bool)


def _latency_panel(
    ax: Any,
    t_h: np.ndarray,
    lat_ms: np.ndarray,
    kinds: np.ndarray,
    delivered: np.ndarray,
    late: np.ndarray,
) -> None:
    """One-way latency of the delivered messages over their send time, by kind (late ones as
    triangles); a log scale when the latencies span more than a factor of 20."""
    if not delivered.any():
        ax.text(0.5, 0.5, "no message delivered", ha="center", va="center", transform=ax.transAxes)
        return
    for kind in sorted(set(kinds[delivered]), key=lambda k: _KIND_ORDER.get(k, 9)):
        sel = delivered & (kinds == kind) & ~late
        if sel.any():
            ax.scatter(t_h[sel], lat_ms[sel], s=6, c=_KIND_COLOUR.get(kind, "0.5"))
    if (delivered & late).any():
        sel = delivered & late
        ax.scatter(t_h[sel], lat_ms[sel], s=14, marker="^", c="#f58518")
    pos = lat_ms[delivered]
    if np.nanmin(pos) > 0 and np.nanmax(pos) / max(np.nanmin(pos), 1e-9) > 20:
        ax.set_yscale("log")


def messages_timeline(path: Path, messages: pd.DataFrame, *, title: str = "") -> Path | None:
    """Per-link timeline of ``messages.parquet`` (lost, late and rejected messages marked) over
    the one-way latency of the delivered messages. ``None`` (nothing written) without rows."""
    if messages.empty:
        return None
    plt = pyplot()
    m = messages.reset_index(drop=True)
    links = sorted(
        {(str(k), str(s), str(d)) for k, s, d in zip(m["kind"], m["src"], m["dst"], strict=True)},
        key=lambda t: (_KIND_ORDER.get(t[0], 9), _natural(t[1]), _natural(t[2])),
    )
    row_of = {link: i for i, link in enumerate(links)}
    y = np.array(
        [row_of[(str(k), str(s), str(d))] for k, s, d in zip(m.kind, m.src, m.dst, strict=True)]
    )
    t_h = m["t_send_s"].to_numpy(dtype=float) / 3600.0
    lost, late, rejected = _flag(m, "lost"), _flag(m, "late"), _flag(m, "rejected")
    ok = ~(lost | late | rejected)
    n_links = len(links)
    top_h = max(2.0, min(11.0, 0.22 * n_links + 0.8))
    fig, (ax, ax2) = plt.subplots(
        2,
        1,
        figsize=(10, top_h + 2.6),
        sharex=True,
        gridspec_kw={"height_ratios": [top_h, 2.2]},
    )
    kinds = m["kind"].astype(str).to_numpy()
    for kind in sorted(set(kinds), key=lambda k: _KIND_ORDER.get(k, 9)):
        sel = ok & (kinds == kind)
        if sel.any():
            ax.scatter(
                t_h[sel],
                y[sel],
                marker="|",
                s=40,
                c=_KIND_COLOUR.get(kind, "0.5"),
                label=f"{kind} delivered ({int(sel.sum())})",
            )
    for sel, marker, colour, what in (
        (late, "^", "#f58518", "late"),
        (lost, "x", "#e45756", "lost"),
        (rejected, "s", "#6f2da8", "rejected"),
    ):
        if sel.any():
            ax.scatter(
                t_h[sel], y[sel], marker=marker, s=30, c=colour, label=f"{what} ({int(sel.sum())})"
            )
    ax.set_yticks(range(n_links), [f"{k} {s}→{d}" for k, s, d in links])
    ax.tick_params(axis="y", labelsize=6 if n_links > 30 else 8)
    ax.set_ylim(-0.7, n_links - 0.3)
    ax.invert_yaxis()
    ax.grid(axis="x", color="0.9")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    ax.set_title(
        f"{title}{len(m)} messages on {n_links} links: {int(lost.sum())} lost, "
        f"{int(late.sum())} late, {int(rejected.sum())} rejected"
    )
    delivered = ~lost & np.isfinite(m["t_deliver_s"].to_numpy(dtype=float))
    lat_ms = (m["t_deliver_s"].to_numpy(dtype=float) - m["t_send_s"].to_numpy(dtype=float)) * 1e3
    _latency_panel(ax2, t_h, lat_ms, kinds, delivered, late)
    ax2.set_ylabel("latency (ms)")
    ax2.set_xlabel("simulated send time (h)")
    ax2.grid(color="0.9")
    return save_figure(fig, path, 100)


# ----------------------------------------------------------------------------- KPI bars
_KPI_PANELS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("max |V−1| (p.u.)", (("max_abs_voltage_deviation_pu", "max"),)),
    ("voltage violation (bus·h)", (("voltage_violation_bus_hours", "violation"),)),
    ("energy losses (MWh)", (("energy_losses_mwh", "losses"),)),
    ("energy cost", (("energy_cost", "cost"),)),
    (
        "messages",
        (
            ("messages_sent", "sent"),
            ("messages_lost", "lost"),
            ("messages_late", "late"),
            ("messages_rejected", "rejected"),
        ),
    ),
    (
        "control time (s)",
        (("control_wall_time_s", "total"), ("control_critical_path_s", "critical path")),
    ),
)


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int | float | np.integer | np.floating):
        f = float(v)
        return f if np.isfinite(f) else None
    return None


def kpi_bars(
    path: Path,
    runs: Mapping[str, Mapping[str, Any]],
    *,
    voltage_limit_pu: float | None = 0.05,
    title: str = "",
) -> Path:
    """Small bar panels of the headline KPIs of one or several ``summary.json`` mappings
    (``runs``: label → summary); a KPI a run does not have (no messages in mode ``none``) is
    left out of its panel. ``voltage_limit_pu`` draws the allowed max |V−1| as a dashed line."""
    plt = pyplot()
    labels = list(runs)

    def drawn(keys: Sequence[tuple[str, str]]) -> bool:
        vals = [_number(runs[r].get(k)) for r in labels for k, _ in keys]
        given = [v for v in vals if v is not None]
        # an all-zero panel says nothing, unless zero is the news (no violation)
        return bool(given) and (any(given) or keys[0][0] == "voltage_violation_bus_hours")

    panels = [(name, keys) for name, keys in _KPI_PANELS if drawn(keys)]
    ncol = 3
    nrow = max(1, -(-len(panels) // ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(10, 2.7 * nrow + 0.5), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax in axes.flat[len(panels) :]:
        ax.set_axis_off()
    for ax, (name, keys) in zip(axes.flat, panels, strict=False):
        width = (0.8 if len(labels) > 1 else 0.6) / len(keys)
        lowest = 0.0
        for j, (key, sub) in enumerate(keys):
            vals = [_number(runs[r].get(key)) for r in labels]
            xs = [i + (j - (len(keys) - 1) / 2) * width for i in range(len(labels))]
            shown = [(x, v) for x, v in zip(xs, vals, strict=True) if v is not None]
            if not shown:
                continue
            lowest = min(lowest, *(v for _, v in shown))
            bars = ax.bar(
                [x for x, _ in shown],
                [v for _, v in shown],
                width=width * 0.92,
                color=cmap(j % 10) if len(keys) > 1 else cmap(0),
                label=sub if len(keys) > 1 else None,
            )
            ax.bar_label(bars, labels=[f"{v:.3g}" for _, v in shown], fontsize=7, padding=1)
        if _is_voltage(keys) and voltage_limit_pu is not None:
            ax.axhline(voltage_limit_pu, color="#e45756", ls="--", lw=1, label="limit")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(len(labels)), labels if len(labels) > 1 else [""] * len(labels))
        ax.tick_params(axis="x", labelsize=8, rotation=20 if len(labels) > 3 else 0)
        ax.tick_params(axis="y", labelsize=7)
        ax.margins(y=0.18)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        if lowest >= 0:  # counts and magnitudes: the axis starts at zero, all-zero shows 0..1
            ax.set_ylim(0.0, ax.get_ylim()[1] if ax.get_ylim()[1] > 0 else 1.0)
        ax.spines[["top", "right"]].set_visible(False)
        if len(keys) > 1 or _is_voltage(keys):
            ax.legend(fontsize=7, frameon=False, loc="upper right")
    fig.suptitle(title.rstrip(": ") or "KPIs", fontsize=11)
    return save_figure(fig, path, 100)


def _is_voltage(keys: Sequence[tuple[str, str]]) -> bool:
    return any(k == "max_abs_voltage_deviation_pu" for k, _ in keys)


# ----------------------------------------------------------------------------- a run folder
def _read_parquet(path: Path) -> pd.DataFrame | None:
    return pd.read_parquet(path) if path.is_file() else None


def draw_run_figures(folder: Path) -> list[Path]:
    """Draw every table-based figure of the run results folder ``folder`` into
    ``folder/figures`` from the folder's own files (``scenario.toml`` for the title, the limits
    and the devices): the voltage heatmap and envelope, the device trajectories, the Pareto
    figures (when ``pareto.parquet`` has rows), the coordination rounds, the message timeline
    (when ``messages.parquet`` has rows) and the KPI bars. Returns the paths written.
    ``partition.png`` is drawn with the partition itself (it needs the grid)."""
    folder = Path(folder)
    figs = folder / "figures"
    doc: dict[str, Any] = {}
    if (folder / "scenario.toml").is_file():
        doc = tomllib.loads((folder / "scenario.toml").read_text())
    run = doc.get("run", {})
    ctl = doc.get("control", {})
    summary: dict[str, Any] = {}
    if (folder / "summary.json").is_file():
        summary = json.loads((folder / "summary.json").read_text())
    name = str(doc.get("name") or summary.get("scenario") or "run")
    mode = ctl.get("mode", summary.get("mode", "?"))
    seed = run.get("seed", summary.get("seed", "?"))
    title = f"{name} ({mode}, seed {seed}): "
    vm_min = float(run.get("vm_min_pu", 0.95))
    vm_max = float(run.get("vm_max_pu", 1.05))
    written: list[Path] = []
    ts = _read_parquet(folder / "timeseries.parquet")
    if ts is not None:
        written += _timeseries_figures(folder, ts, doc, summary, title)
    messages = _read_parquet(folder / "messages.parquet")
    if messages is not None and not messages.empty:
        got = messages_timeline(figs / "messages_timeline.png", messages, title=title)
        if got is not None:
            written.append(got)
    if summary:
        written.append(
            kpi_bars(
                figs / "kpi_bars.png",
                {name: summary},
                voltage_limit_pu=max(1.0 - vm_min, vm_max - 1.0),
                title=title,
            )
        )
    return written


def _timeseries_figures(
    folder: Path, ts: pd.DataFrame, doc: Mapping[str, Any], summary: Mapping[str, Any], title: str
) -> list[Path]:
    """The figures of :func:`draw_run_figures` drawn from ``timeseries.parquet`` (``ts``),
    alone or with the Pareto and coordination tables."""
    figs = folder / "figures"
    run, ctl = doc.get("run", {}), doc.get("control", {})
    vm_min = float(run.get("vm_min_pu", 0.95))
    vm_max = float(run.get("vm_max_pu", 1.05))
    step_s = float(run.get("plant_step_s", summary.get("plant_step_s", 60)))
    interval_s = float(ctl.get("interval_s", 900))
    written = [
        voltage_heatmap(
            figs / "voltage_heatmap.png",
            ts,
            vm_min_pu=vm_min,
            vm_max_pu=vm_max,
            plant_step_s=step_s,
            title=title,
        ),
        voltage_envelope(
            figs / "voltage_envelope.png", ts, vm_min_pu=vm_min, vm_max_pu=vm_max, title=title
        ),
    ]
    kinds, capacity = _devices_of(doc)
    got = device_trajectories(
        figs / "devices.png", ts, kinds=kinds, capacity_mwh=capacity, title=title
    )
    written += [got] if got is not None else []
    pareto = _read_parquet(folder / "pareto.parquet")
    if pareto is not None and not pareto.empty:
        written += pareto_figures(
            figs, pareto, ts, interval_s=interval_s, plant_step_s=step_s, title=title
        )
    coord = _read_parquet(folder / "coordination.parquet")
    if coord is not None and not coord.empty:
        n = worst_interval(ts, interval_s=interval_s, plant_step_s=step_s)
        got = coordination_rounds(figs / "coordination.png", coord, n, title=title)
        written += [got] if got is not None else []
    return written
