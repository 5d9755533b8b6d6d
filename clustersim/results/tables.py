"""The tables of a results folder: their columns, Markdown and CSV forms, and readers.

Every figure and report section is drawn from these tables as written to disk, so each is
traceable to a file in the folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clustersim.fileio import atomic_write, write_json

__all__ = [
    "HEADLINE_KPIS",
    "MESSAGE_COLUMNS",
    "SUMMARY_KPIS",
    "WALL_CLOCK_COLUMNS",
    "WALL_CLOCK_KEYS",
    "fmt_cell",
    "markdown_table",
    "read_timeseries",
    "scalar_kpis",
    "vm_columns",
    "write_captions",
    "write_table",
]

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

WALL_CLOCK_KEYS = (
    "control_wall_time_s",
    "control_critical_path_s",
    "run_loop_wall_time_s",
    "agents_online_wall_s",
    "wall_time_s",
    "messages_duplicate",
    "transport_events",
    "provenance",
)
"""summary.json keys that differ between two runs of the same scenario and seed, and the only
ones: times measured on the wall clock, what the broker's connections did (redelivered
messages, reconnects), and the provenance (the run id, whose random part each run draws)"""
WALL_CLOCK_COLUMNS = {
    "control.parquet": ("solve_time_s",),
    "messages.parquet": ("bytes",),
}
"""table columns that depend on the wall clock: measured solve times, and the payload sizes of
setpoints, which carry those times"""

SUMMARY_KPIS: tuple[str, ...] = (
    "agents_online_wall_s",
    "boundary_mismatch_pu",
    "capacitor_switching",
    "control_critical_path_s",
    "control_steps",
    "control_wall_time_s",
    "controllers",
    "coordination_rounds_mean",
    "duration_h",
    "energy_cost",
    "energy_import_mwh",
    "energy_losses_mwh",
    "evaluations",
    "generations_mean",
    "latency_p50_ms",
    "latency_p95_ms",
    "max_abs_voltage_deviation_at_worst_bus_pu",
    "max_abs_voltage_deviation_pu",
    "max_line_loading_percent",
    "max_vm_pu",
    "mean_abs_voltage_deviation_at_worst_bus_pu",
    "mean_abs_voltage_deviation_pu",
    "mean_age_of_information_s",
    "messages_duplicate",
    "messages_late",
    "messages_lost",
    "messages_rejected",
    "messages_sent",
    "min_vm_pu",
    "plant_step_s",
    "powerflow_failures",
    "primal_residual_p_mw",
    "primal_residual_vm_pu",
    "run_loop_wall_time_s",
    "seed",
    "setpoints_rejected",
    "start_h",
    "steps",
    "switching_operations",
    "table_age_max_intervals",
    "table_age_mean_intervals",
    "tap_operations",
    "voltage_violation_bus_hours",
    "wall_time_s",
)
"""the numeric entries of summary.json: the KPIs a sweep can draw"""

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


def fmt_cell(v: Any) -> str:
    """A table cell: floats to 4 significant digits, None/NaN as an en dash, booleans as
    yes/no, ``|`` and newlines escaped for Markdown."""
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
        lines.append("| " + " | ".join(fmt_cell(v) for v in row) + " |")
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
    """The ``vm_pu.<bus>`` columns of a timeseries table."""
    return [c for c in ts.columns if c.startswith("vm_pu.")]
