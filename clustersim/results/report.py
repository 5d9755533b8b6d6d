"""``report.html``: one self-contained page for a run, a compare, a sweep or a reproduce folder.

:func:`write_report` reads only the files already in the folder (tables, ``summary.json``,
``scenario.toml``, ``figures/*.png``) and writes ``folder/report.html`` atomically. The page
has inline CSS, images inline as base64 data URIs, no script and no external resource, so it
can be mailed or archived as one file. Every text taken from the folder is escaped.

What a page holds:

- every kind: a warning first when the folder is not marked complete
  (:func:`completion_warning`);
- run: header (scenario, mode, case, seed, horizon), warnings (faults, failed power flows,
  broken partition constraints), a card grid of the headline KPIs, the figures with captions
  naming the table each is drawn from, the partition (clusters, pilot buses, metrics), agents
  and messages tables (from ``control.parquet`` / ``messages.parquet``), the full KPI table,
  the folder's files, and provenance (versions, seed, resolved ``scenario.toml``);
- compare / sweep / reproduce: header and definition (``compare.json`` / ``sweep.json`` /
  ``reproduce.json``), one card per run, the study's table (``compare.csv``, ``sweep.parquet``
  or ``sweep.csv`` with a mean ± std table over repeats, ``<study>.csv``), the figures, the run
  folders (with links to their own reports), files and provenance.

A figure's caption comes from :data:`clustersim.results.figures.FIGURE_SOURCES`, or from an optional
``figures/captions.json`` (``{"file.png": {"caption": "...", "sources": ["compare.csv"]}}``)
that a study writes beside its figures; a figure with neither says its source is not stated.
"""

from __future__ import annotations

import base64
import fnmatch
import html
import importlib.resources
import json
import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow.parquet as pq

from clustersim.errors import ClusterSimError
from clustersim.fileio import RUNNING, incomplete_reason, read_marker, write_text
from clustersim.results.figures import figure_info

__all__ = ["ReportKind", "completion_warning", "detect_kind", "write_report"]

ReportKind = Literal["run", "compare", "sweep", "reproduce"]
KINDS: tuple[str, ...] = ("run", "compare", "sweep", "reproduce")
MAX_TABLE_ROWS = 500
"""rows of a study table shown in the page (the file holds them all)"""


def e(v: Any) -> str:
    """HTML-escaped text of ``v``."""
    return html.escape(str(v), quote=True)


# ----------------------------------------------------------------------------- formatting
def _fmt_number(v: float, digits: int) -> str:
    """An int or float for people: thin-space thousands from 10,000 on (from ``10**digits`` for
    floats), ``digits`` significant digits, NaN as an en dash."""
    if isinstance(v, int):
        return f"{v:,}".replace(",", "\u2009") if abs(v) >= 10_000 else str(v)
    if not math.isfinite(v):
        return "–" if math.isnan(v) else str(v)
    if v == 0:
        return "0"
    if abs(v) >= 10**digits:
        return f"{v:,.0f}".replace(",", "\u2009")
    return f"{v:.{digits}g}"


def fmt(v: Any, digits: int = 4) -> str:
    """A value for people: floats to ``digits`` significant digits, None/NaN as an en dash."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | float):
        return _fmt_number(v, digits)
    if hasattr(v, "item") and not isinstance(v, str | bytes):  # numpy scalar
        try:
            return fmt(v.item(), digits)
        except (TypeError, ValueError):
            pass
    if isinstance(v, Mapping):
        return ", ".join(f"{k} {fmt(x, digits)}" for k, x in v.items()) or "–"
    if isinstance(v, list | tuple):
        if all(isinstance(x, str | int | float | bool) or x is None for x in v):
            return ", ".join(fmt(x, digits) for x in v) or "–"
        return json.dumps(v, default=str)
    return str(v)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out += _flatten(v, key + ".")
        else:
            out.append((key, v))
    return out


# ----------------------------------------------------------------------------- folder reading
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def _read_table(path: Path) -> pd.DataFrame | None:
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        if path.suffix == ".csv":
            return pd.read_csv(path)
    except (OSError, ValueError, ImportError):
        return None
    return None


@dataclass
class RunInfo:
    """What the report shows of one run folder."""

    folder: Path
    summary: dict[str, Any]
    scenario: dict[str, Any]
    scenario_text: str

    @property
    def name(self) -> str:
        return str(self.scenario.get("name") or self.summary.get("scenario") or self.folder.name)

    @property
    def provenance(self) -> dict[str, Any]:
        p = self.scenario.get("provenance")
        return dict(p) if isinstance(p, Mapping) else {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.summary.get(key, default)


def _run_info(folder: Path) -> RunInfo:
    summary = _read_json(folder / "summary.json")
    text = ""
    if (folder / "scenario.toml").is_file():
        text = (folder / "scenario.toml").read_text(errors="replace")
    return RunInfo(
        folder=folder,
        summary=summary if isinstance(summary, dict) else {},
        scenario=_read_toml(folder / "scenario.toml"),
        scenario_text=text,
    )


def detect_kind(folder: Path) -> ReportKind:
    """The kind of results folder ``folder`` is, from the files it holds."""
    folder = Path(folder)
    if (folder / "compare.json").is_file() or (folder / "compare.csv").is_file():
        return "compare"
    if (folder / "sweep.json").is_file() or any(
        (folder / f).is_file() for f in ("sweep.parquet", "sweep.csv")
    ):
        return "sweep"
    if (folder / "reproduce.json").is_file():
        return "reproduce"
    if (folder / "summary.json").is_file():
        return "run"
    marker = read_marker(folder)
    if marker is not None and marker.get("complete") is not True:
        raise ClusterSimError(
            f"{folder} is an incomplete results folder without a report to draw (no "
            f"summary.json yet): {incomplete_reason(folder)}"
        )
    raise ClusterSimError(
        f"{folder} is not a results folder (no summary.json, compare.json, sweep.json or "
        "reproduce.json)"
    )


def completion_warning(folder: Path) -> str | None:
    """One line when ``folder`` is not marked complete: its ``complete.json`` is absent, says
    incomplete and why, or lists a file that is gone
    (:func:`clustersim.fileio.incomplete_reason`). ``None`` when it is complete, and while this
    very process is writing the folder (the report drawn as its last file before the marker)."""
    doc = read_marker(folder) or {}
    if doc.get("reason") == RUNNING and doc.get("pid") == os.getpid():
        return None
    why = incomplete_reason(folder)
    return None if why is None else f"incomplete results folder: {why}"


def _completion_notes(folder: Path) -> list[str]:
    warning = completion_warning(folder)
    return [] if warning is None else [warning]


# ----------------------------------------------------------------------------- html pieces
_CSS = (importlib.resources.files("clustersim.results") / "report.css").read_text(encoding="utf-8")
"""the report's style sheet, package data beside this module"""


def _page(kind: str, title: str, desc: str, chips: Sequence[tuple[str, Any]], body: str) -> str:
    chips_html = "".join(f"<li>{e(k)} <b>{e(fmt(v))}</b></li>" for k, v in chips)
    toc = "".join(
        f'<a href="#{e(anchor)}">{e(label)}</a>'
        for anchor, label in _TOC_ORDER
        if f'id="{anchor}"' in body
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} — clustersim {e(kind)} report</title>"
        f"<style>{_CSS}</style></head><body>"
        f'<header class="top"><div class="inner"><div class="kind">clustersim · {e(kind)} report'
        f"</div><h1>{e(title)}</h1>"
        + (f'<p class="desc">{e(desc)}</p>' if desc else "")
        + f'<ul class="chips">{chips_html}</ul><nav class="toc">{toc}</nav></div></header>'
        f"<main>{body}</main>"
        "<footer>written by clustersim from the files of this folder; every figure names the "
        "table it is drawn from</footer></body></html>\n"
    )


_TOC_ORDER = (
    ("notes", "Warnings"),
    ("kpis", "KPIs"),
    ("definition", "Definition"),
    ("runs-cards", "Runs"),
    ("table", "Results table"),
    ("figures", "Figures"),
    ("partition", "Partition"),
    ("agents", "Agents"),
    ("messages", "Messages"),
    ("kpi-table", "All KPIs"),
    ("runs", "Run folders"),
    ("files", "Files"),
    ("provenance", "Provenance"),
)


def _section(anchor: str, title: str, inner: str) -> str:
    return f'<section id="{e(anchor)}"><h2>{e(title)}</h2>{inner}</section>'


def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return '<td class="tick">✓</td>' if v else '<td class="cross">×</td>'
    cls = ' class="num"' if _is_num(v) or (hasattr(v, "dtype") and _is_num(_py(v))) else ""
    return f"<td{cls}>{e(fmt(_py(v)))}</td>"


def _py(v: Any) -> Any:
    if hasattr(v, "item") and not isinstance(v, str | bytes):
        try:
            return v.item()
        except (TypeError, ValueError):
            return v
    return v


def _table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], raw: bool = False, cls: str = ""
) -> str:
    """A table; ``raw`` cells are already HTML (the caller escaped them)."""
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(f"<td>{c}</td>" if raw else _cell(c) for c in row)
        body.append(f"<tr>{cells}</tr>")
    return (
        f'<div class="tablewrap"><table class="{e(cls)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _frame_table(df: pd.DataFrame, max_rows: int = MAX_TABLE_ROWS) -> str:
    rows = [[_na(v) for v in r] for r in df.head(max_rows).itertuples(index=False, name=None)]
    note = ""
    if len(df) > max_rows:
        note = f'<p class="muted">first {max_rows} of {len(df)} rows shown; the file has all.</p>'
    names = dict(HEADLINE_COLUMNS)
    return _table([names.get(str(c), str(c)) for c in df.columns], rows) + note


def _na(v: Any) -> Any:
    v = _py(v)
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _kv_table(pairs: Iterable[tuple[str, Any]], header: Sequence[str] = ("key", "value")) -> str:
    return _table(header, [(k, _py(v)) for k, v in pairs], cls="kv")


# ----------------------------------------------------------------------------- figures
def _figure_meta(folder: Path) -> dict[str, dict[str, Any]]:
    got = _read_json(folder / "figures" / "captions.json")
    out: dict[str, dict[str, Any]] = {}
    if isinstance(got, dict):
        for k, v in got.items():
            if isinstance(v, str):
                out[str(k)] = {"caption": v}
            elif isinstance(v, dict):
                out[str(k)] = v
    return out


_FIG_ORDER = (
    "kpi_bars",
    "voltage_heatmap",
    "voltage_envelope",
    "devices",
    "partition",
    "messages_timeline",
    "pareto_",
)


def _fig_key(p: Path) -> tuple[int, str]:
    for i, prefix in enumerate(_FIG_ORDER):
        if p.stem == prefix or (prefix.endswith("_") and p.stem.startswith(prefix)):
            return (i, _natural_key(p.stem))
    return (len(_FIG_ORDER), _natural_key(p.stem))


def _natural_key(s: str) -> str:
    return re.sub(r"\d+", lambda m: m.group(0).zfill(6), s)


_OVERLAY = "One line per run of the study"
STUDY_FIGURES: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "compare": {
        "voltage_worst_bus.png": (
            f"{_OVERLAY}: voltage over time at the bus named in compare.json (worst_bus)",
            ("runs/*/timeseries.parquet",),
        ),
        "max_deviation_per_bus.png": (
            f"{_OVERLAY}: max |V−1| of every bus over the horizon",
            ("runs/*/timeseries.parquet",),
        ),
        "losses.png": (f"{_OVERLAY}: network losses over time", ("runs/*/timeseries.parquet",)),
        "kpi_bars.png": ("Headline KPIs of every run", ("runs/*/summary.json",)),
    },
    "sweep": {
        "*.png": ("A KPI against the grid values", ("sweep.parquet",)),
    },
}
"""default captions and sources of the figures a study writes (kind → file name or glob →
caption, sources); ``figures/captions.json`` overrides them"""
STUDY_FIGURES["reproduce"] = {
    k: v for k, v in STUDY_FIGURES["compare"].items() if k != "voltage_worst_bus.png"
}


def _default_caption(name: str, kind: str) -> tuple[str, tuple[str, ...]]:
    if kind == "run":
        info = figure_info(name)
        return (info.caption, info.sources) if info is not None else ("", ())
    table = STUDY_FIGURES.get(kind, {})
    if name in table:
        return table[name]
    for pattern, got in table.items():
        if fnmatch.fnmatchcase(name, pattern):
            return got
    return "", ()


def _exists(folder: Path, pattern: str) -> bool:
    try:
        return any(folder.glob(pattern))
    except (ValueError, NotImplementedError, OSError):  # absolute or empty pattern
        return False


def _figures(folder: Path, kind: str = "run", order: Any = None) -> str:
    """The folder's figures, inline; ``order`` (a study's ``figures`` list of relative paths)
    puts those first, in that order."""
    figs = sorted((folder / "figures").glob("*.png"), key=_fig_key)
    if isinstance(order, list):
        rank = {Path(str(x)).name: i for i, x in enumerate(order)}
        figs.sort(key=lambda p: rank.get(p.name, len(rank)))
    if not figs:
        return '<p class="muted">no figures in this folder.</p>'
    meta = _figure_meta(folder)
    out: list[str] = []
    hidden: list[tuple[str, str]] = []
    for p in figs:
        data = base64.b64encode(p.read_bytes()).decode("ascii")
        caption, sources = _default_caption(p.name, kind)
        m = meta.get(p.name, {})
        caption = str(m.get("caption", caption))
        src = m.get("sources", m.get("source", sources))
        if isinstance(src, str):
            src = (src,)
        src_list = [str(s) for s in src or ()]
        if src_list:
            present = [
                f"<code>{e(s)}</code>" + ("" if _exists(folder, s) else " (absent)")
                for s in src_list
            ]
            src_html = "Drawn from " + ", ".join(present)
        else:
            src_html = "Source table not stated"
        if caption and not caption.endswith("."):
            caption += "."
        fig = (
            f'<figure id="fig-{e(p.stem)}"><img alt="{e(p.stem)}" '
            f'src="data:image/png;base64,{data}"><figcaption><b>{e(p.name)}</b> — '
            f"{e(caption) + ' ' if caption else ''}<span>{src_html}.</span></figcaption></figure>"
        )
        # one Pareto figure in view, the other controllers' behind a disclosure
        if p.stem.startswith("pareto_") and any('id="fig-pareto_' in f for f in out):
            hidden.append((p.stem.removeprefix("pareto_"), fig))
        else:
            out.append(fig)
    if hidden:
        names = ", ".join(e(n) for n, _ in hidden)
        figs_html = "".join(f for _, f in hidden)
        first = next(i for i, f in enumerate(out) if 'id="fig-pareto_' in f)
        out.insert(
            first + 1,
            f"<details><summary>Pareto fronts of the other {len(hidden)} controllers "
            f"({names})</summary>{figs_html}</details>",
        )
    return "".join(out)


# ----------------------------------------------------------------------------- run pieces
@dataclass(frozen=True)
class Card:
    label: str
    value: str
    unit: str = ""
    sub: str = ""
    status: str = ""  # ok | warn | bad | na | ""


def _cards(cards: Sequence[Card]) -> str:
    out = []
    for c in cards:
        unit = f'<span class="unit">{e(c.unit)}</span>' if c.unit and c.value != "–" else ""
        sub = f'<div class="sub">{e(c.sub)}</div>' if c.sub else ""
        out.append(
            f'<div class="card {e(c.status)}"><div class="label">{e(c.label)}</div>'
            f'<div class="value">{e(c.value)}{unit}</div>{sub}</div>'
        )
    return f'<div class="cards">{"".join(out)}</div>'


def _limits(run: RunInfo) -> tuple[float, float]:
    r = run.scenario.get("run", {})
    return float(r.get("vm_min_pu", 0.95)), float(r.get("vm_max_pu", 1.05))


def _message_cards(s: Mapping[str, Any]) -> list[Card]:
    """Lost and late messages, each with its share of those sent (``–`` for modes without
    messages)."""
    sent = s.get("messages_sent")
    if sent is None:
        return [
            Card("messages lost", "–", "", "no messages in this mode", "na"),
            Card("messages late", "–", "", "no messages in this mode", "na"),
        ]
    lost, late = s.get("messages_lost", 0) or 0, s.get("messages_late", 0) or 0

    def share(n: int) -> str:
        return f"{100 * n / sent:.1f} % of {sent} sent" if sent else ""

    return [
        Card("messages lost", fmt(lost), "", share(lost), "ok" if not lost else "warn"),
        Card("messages late", fmt(late), "", share(late), "ok" if not late else "warn"),
    ]


def _headline_cards(run: RunInfo) -> list[Card]:
    """The run report's headline cards: voltage quality, losses, cost, messages, control."""
    s = run.summary
    vmin, vmax = _limits(run)
    lim = max(1 - vmin, vmax - 1)
    cards: list[Card] = []
    viol = s.get("voltage_violation_bus_hours")
    cards.append(
        Card(
            "voltage violation",
            fmt(viol, 3),
            "bus·h",
            f"outside {vmin:g}–{vmax:g} p.u.",
            "na" if viol is None else ("ok" if viol == 0 else "bad"),
        )
    )
    dev = s.get("max_abs_voltage_deviation_pu")
    worst = s.get("worst_bus")
    cards.append(
        Card(
            "max |V−1|",
            fmt(dev, 3),
            "p.u.",
            (f"worst bus {worst}; " if worst is not None else "") + f"limit {lim:.3g}",
            "na" if dev is None else ("ok" if dev <= lim + 1e-12 else "bad"),
        )
    )
    vm = s.get("min_vm_pu")
    cards.append(
        Card(
            "min V",
            fmt(vm, 4),
            "p.u.",
            f"max V {fmt(s.get('max_vm_pu'), 4)}",
            "na" if vm is None else ("ok" if vm >= vmin - 1e-12 else "bad"),
        )
    )
    cards.append(
        Card(
            "energy losses",
            fmt(s.get("energy_losses_mwh"), 4),
            "MWh",
            f"import {fmt(s.get('energy_import_mwh'), 4)} MWh",
        )
    )
    cards.append(
        Card(
            "energy cost",
            fmt(s.get("energy_cost"), 5),
            "",
            f"{fmt(s.get('switching_operations'))} switching operations",
        )
    )
    cards += _message_cards(s)
    ctl = s.get("control_wall_time_s")
    crit = s.get("control_critical_path_s")
    if s.get("mode") in ("none", "local") or not s.get("evaluations", 1):
        ctl = crit = None  # no optimizer ran: a zero here would read as "instant"
    cards.append(
        Card(
            "control time",
            fmt(ctl, 3),
            "s",
            f"critical path {fmt(crit, 3)} s" if crit is not None else "no optimizer in this mode",
            "na" if ctl is None else "",
        )
    )
    cards += _coordination_cards(run)
    return cards


def _coordination_cards(run: RunInfo) -> list[Card]:
    """The coordination cards of a run: the mode and the rounds or sweeps completed, the
    boundary residual after the last round and the oldest value table used."""
    s = run.summary
    cards: list[Card] = []
    rounds = s.get("coordination_rounds_mean")
    if rounds is not None:
        cfg = run.scenario.get("control", {}).get("coordination_rounds")
        how = s.get("coordination")
        unit = "sweeps" if how == "value-table" else "rounds"
        cards.append(
            Card(
                f"coordination ({how})" if how else "coordination rounds",
                fmt(rounds, 3),
                "",
                f"{unit} completed, mean per interval, of {cfg}"
                if cfg is not None
                else "mean per interval",
            )
        )
    residual = s.get("primal_residual_vm_pu")
    if residual is not None:
        age = s.get("table_age_max_intervals")
        cards.append(
            Card(
                "boundary residual",
                fmt(residual, 3),
                "p.u.",
                f"|V parent − V child| after the last round; P {fmt(s.get('primal_residual_p_mw'), 3)} MW"
                + (f"; oldest table used: {age} interval(s)" if age is not None else ""),
            )
        )
    return cards


def _notes(run: RunInfo) -> list[str]:
    s = run.summary
    notes = []
    faults = s.get("faults") or []
    for f in faults[:30]:
        notes.append("fault: " + _fault(f))
    if len(faults) > 30:
        notes.append(f"… {len(faults) - 30} more faults in summary.json")
    pf = s.get("powerflow_failures")
    if pf:
        steps = s.get("powerflow_failure_steps") or []
        notes.append(
            f"{pf} plant step(s) without a converged power flow"
            + (f" (steps {fmt(steps[:20])}{' …' if len(steps) > 20 else ''})" if steps else "")
        )
    part = s.get("partition")
    if isinstance(part, Mapping):
        if part.get("error"):
            notes.append(f"partition could not be made: {part['error']}")
        broken = [k for k in ("connected", "size_ok", "resources_ok") if part.get(k) is False]
        if broken:
            notes.append("partition breaks its constraint(s): " + ", ".join(broken))
    if s.get("reproducible") is False:
        notes.append(
            "this run is not reproducible "
            f"(clock {s.get('clock', '?')}, compute time "
            f"{run.scenario.get('control', {}).get('compute_time', '?')})"
        )
    rej = s.get("messages_rejected")
    if rej:
        notes.append(
            f"{rej} message(s) refused by a receiver: {fmt(s.get('messages_rejected_by_reason'))}"
        )
    if s.get("setpoints_rejected"):
        notes.append(f"{s['setpoints_rejected']} setpoint(s) refused by the plant")
    return notes


def _fault(f: Any) -> str:
    if isinstance(f, Mapping) and {"node", "kind"} <= set(f):
        step = f" at step {f['step']}" if f.get("step") is not None else ""
        detail = f" — {f['detail']}" if f.get("detail") else ""
        rest = {k: v for k, v in f.items() if k not in ("node", "kind", "step", "detail")}
        more = f" ({', '.join(f'{k}={fmt(v)}' for k, v in rest.items())})" if rest else ""
        return f"{f['node']}: {f['kind']}{step}{detail}{more}"
    if isinstance(f, Mapping):
        return ", ".join(f"{k}={fmt(v)}" for k, v in f.items())
    return str(f)


def _notes_box(notes: Sequence[str], bad: bool = False) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{e(n)}</li>" for n in notes)
    return _section(
        "notes", "Warnings", f'<div class="notes{" bad" if bad else ""}"><ul>{items}</ul></div>'
    )


def _partition_section(folder: Path) -> str:
    doc = _read_json(folder / "partition.json")
    if not isinstance(doc, dict) or not doc.get("clusters"):
        return ""
    rows = []
    for c in doc["clusters"]:
        buses = c.get("buses", [])
        rows.append(
            (
                f"C{int(c.get('id', 0)) + 1}",
                c.get("size", len(buses)),
                c.get("pilot_bus"),
                " ".join(str(b) for b in buses),
                c.get("connected"),
                c.get("n_resources"),
            )
        )
    clusters = _table(
        ("cluster", "buses", "pilot bus", "bus labels", "connected", "resources"), rows
    )
    metrics = doc.get("metrics", {})
    headline = ("tau", "modularity", "alpha", "beta", "gamma", "rho")
    mrows = [(k, metrics[k]) for k in headline if k in metrics]
    mrows += [(k, v) for k, v in (doc.get("constraints") or {}).items()]
    if "runtime_s" in doc:
        mrows.append(("runtime_s", doc["runtime_s"]))
    intro = (
        f"<p>method <b>{e(doc.get('method', '?'))}</b> on <b>{e(doc.get('case', '?'))}</b>, "
        f"{e(doc.get('k', len(rows)))} clusters (<code>partition.json</code>); the agent of "
        "cluster C<i>n</i> controls the devices on its buses.</p>"
    )
    more = ""
    rest = [(k, v) for k, v in metrics.items() if k not in headline]
    if rest:
        more = f"<details><summary>all partition metrics ({len(rest)} more)</summary>{_kv_table(rest, ('metric', 'value'))}</details>"
    return _section(
        "partition",
        "Partition",
        intro
        + f'<div class="two"><div>{clusters}</div><div>{_kv_table(mrows, ("metric", "value"))}</div></div>'
        + more,
    )


def _agents_section(folder: Path) -> str:
    ctl = _read_table(folder / "control.parquet")
    if ctl is None or ctl.empty or "controller" not in ctl:
        return ""
    rows = []
    for name, g in sorted(ctl.groupby("controller"), key=lambda t: _natural_key(str(t[0]))):
        row: list[Any] = [name, len(g)]
        row.append(float(g["feasible"].mean()) * 100 if "feasible" in g else None)
        row.append(float(g["f_voltage_pu"].mean()) if "f_voltage_pu" in g else None)
        row.append(float(g["solve_time_s"].mean()) if "solve_time_s" in g else None)
        row.append(int(g["evaluations"].sum()) if "evaluations" in g else None)
        row.append(int(g["lost"].sum()) if "lost" in g else None)
        row.append(int(g["late"].sum()) if "late" in g else None)
        row.append(float(g["age_of_information_s"].mean()) if "age_of_information_s" in g else None)
        row.append(float(g["rounds_completed"].mean()) if "rounds_completed" in g else None)
        rows.append(row)
    header = (
        "agent",
        "intervals",
        "feasible %",
        "mean f_voltage p.u.",
        "mean solve s",
        "evaluations",
        "setpoints lost",
        "setpoints late",
        "mean age of info s",
        "mean rounds",
    )
    return _section(
        "agents",
        "Agents",
        "<p>One row per agent over its control intervals (<code>control.parquet</code>).</p>"
        + _table(header, rows),
    )


def _messages_section(folder: Path) -> str:
    msgs = _read_table(folder / "messages.parquet")
    if msgs is None or msgs.empty:
        return ""
    rows = []
    lat = (msgs["t_deliver_s"] - msgs["t_send_s"]) * 1e3
    for kind, g in sorted(msgs.groupby("kind"), key=lambda t: str(t[0])):
        lg = lat[g.index][~g["lost"].astype(bool)].dropna()
        rows.append(
            (
                kind,
                len(g),
                int(g["lost"].sum()),
                int(g["late"].sum()),
                int(g["rejected"].sum()) if "rejected" in g else 0,
                float(lg.median()) if len(lg) else None,
                float(lg.quantile(0.95)) if len(lg) else None,
                float(g["bytes"].mean()) if "bytes" in g else None,
            )
        )
    header = (
        "kind",
        "messages",
        "lost",
        "late",
        "rejected",
        "latency p50 ms",
        "latency p95 ms",
        "mean bytes",
    )
    links = msgs.groupby(["src", "dst"]).size().shape[0]
    return _section(
        "messages",
        "Messages",
        f"<p>{len(msgs)} protocol messages on {links} links, as their receivers judged them "
        "(<code>messages.parquet</code>).</p>" + _table(header, rows),
    )


def _kpi_table(summary: Mapping[str, Any]) -> str:
    rows = [(k, v) for k, v in _flatten(summary) if k != "wall_clock_keys"]
    wall = set(summary.get("wall_clock_keys") or [])
    note = (
        f'<p class="muted">wall-clock keys (differ between runs of the same seed): {e(", ".join(sorted(wall)))}.</p>'
        if wall
        else ""
    )
    half = (len(rows) + 1) // 2
    tables = "".join(
        f"<div>{_kv_table(part, ('kpi', 'value'))}</div>"
        for part in (rows[:half], rows[half:])
        if part
    )
    return _section(
        "kpi-table",
        "All KPIs",
        f'<p>Every key of <code>summary.json</code>.</p><div class="two">{tables}</div>{note}',
    )


def _files_section(folder: Path) -> str:
    rows = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if not p.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if rel.parts[0] == "runs" and len(rel.parts) > 2:
            continue  # a run folder's own files are listed in its own report
        if rel.name == "report.html" and len(rel.parts) == 1:
            continue
        shape = ""
        if p.suffix == ".parquet":
            try:
                md = pq.read_metadata(p)
                shape = f"{md.num_rows} rows × {md.num_columns} columns"
            except (OSError, ValueError):
                shape = "unreadable"
        rows.append((str(rel), _size(p.stat().st_size), shape))
    return _section("files", "Files", _table(("file", "size", "table"), rows))


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _provenance(
    run: RunInfo | None,
    extra: Mapping[str, Any] | None = None,
    texts: Sequence[tuple[str, str]] = (),
) -> str:
    rows: list[tuple[str, Any]] = []
    if run is not None:
        prov = run.provenance
        if "clustersim" in prov:
            rows.append(("clustersim", prov["clustersim"]))
        rows.append(("seed", prov.get("seed", run.get("seed"))))
        for k in ("clock", "reproducible"):
            if k in run.summary:
                rows.append((k, run.summary[k]))
        rows += [(f"package {k}", v) for k, v in prov.items() if k not in ("clustersim", "seed")]
    for k, v in (extra or {}).items():
        rows.append((k, v))
    inner = _kv_table(rows, ("item", "value")) if rows else '<p class="muted">not recorded.</p>'
    for title, text in texts:
        if text:
            inner += f"<details><summary>{e(title)}</summary><pre>{e(text)}</pre></details>"
    return _section("provenance", "Provenance", inner)


def _run_chips(run: RunInfo) -> list[tuple[str, Any]]:
    s, sc = run.summary, run.scenario
    chips: list[tuple[str, Any]] = [
        ("mode", s.get("mode", sc.get("control", {}).get("mode"))),
        ("case", s.get("case", sc.get("case", {}).get("name"))),
        ("seed", s.get("seed", sc.get("run", {}).get("seed"))),
        ("horizon", f"{fmt(s.get('duration_h', sc.get('run', {}).get('duration_h')))} h"),
    ]
    if "plant_step_s" in s:
        chips.append(("plant step", f"{s['plant_step_s']} s"))
    if s.get("controllers"):
        chips.append(("agents", s["controllers"]))
    comm = sc.get("comm", {})
    if s.get("messages_sent") is not None and comm:
        chips.append(("transport", comm.get("transport")))
    return chips


def _run_report(folder: Path) -> str:
    run = _run_info(folder)
    if not run.summary:
        raise ClusterSimError(f"{folder}: no readable summary.json; not a run results folder")
    done = _completion_notes(folder)
    body = _notes_box(
        [*done, *_notes(run)],
        bad=bool(done or run.get("faults") or run.get("powerflow_failures")),
    )
    body += _section(
        "kpis",
        "KPIs",
        _cards(_headline_cards(run))
        + '<p class="muted">from <code>summary.json</code>; the full table is below.</p>',
    )
    body += _section("figures", "Figures", _figures(folder))
    body += _partition_section(folder)
    body += _agents_section(folder)
    body += _messages_section(folder)
    body += _kpi_table(run.summary)
    body += _files_section(folder)
    body += _provenance(run, texts=[("resolved scenario.toml", run.scenario_text)])
    desc = str(run.scenario.get("description", ""))
    return _page("run", run.name, desc, _run_chips(run), body)


# ----------------------------------------------------------------------------- study pieces
HEADLINE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("voltage_violation_bus_hours", "violation bus·h"),
    ("max_abs_voltage_deviation_pu", "max |V−1| p.u."),
    ("min_vm_pu", "min V p.u."),
    ("energy_losses_mwh", "losses MWh"),
    ("energy_cost", "cost"),
    ("switching_operations", "switchings"),
    ("messages_lost", "messages lost"),
    ("messages_late", "messages late"),
    ("coordination_rounds_mean", "rounds"),
    ("control_wall_time_s", "control s"),
    ("control_critical_path_s", "critical path s"),
)
"""KPI columns a study's table shows first (summary.json keys, lower is better except rounds
and min V)"""
_HIGHER_BETTER = {"min_vm_pu", "coordination_rounds_mean"}
_NOT_BEST = {"control_wall_time_s", "control_critical_path_s"}
_ID_COLUMNS = ("label", "scenario", "mode", "method", "point", "repeat", "seed", "error")
_META_HIDDEN = {"kind", "tables", "figures", "runs", "failed", "grid_text", "title", "description"}


def _run_folders(folder: Path, meta: Any = None) -> list[tuple[str, RunInfo]]:
    """The run folders of a study: ``meta["runs"]`` (label → relative path) when given, else
    every folder with a ``summary.json`` under ``folder/runs``."""
    found: list[tuple[str, Path]] = []
    listed = meta.get("runs") if isinstance(meta, Mapping) else None
    if isinstance(listed, Mapping):
        for label, rel in listed.items():
            p = (folder / str(rel)).resolve()
            if folder.resolve() in p.parents and (p / "summary.json").is_file():
                found.append((str(label), p))
    if not found and (folder / "runs").is_dir():
        root = folder / "runs"
        found = [(str(p.parent.relative_to(root)), p.parent) for p in root.rglob("summary.json")]
        found.sort(key=lambda t: _natural_key(t[0]))
    return [(label, _run_info(p)) for label, p in found]


def _rel(folder: Path, run: RunInfo) -> str:
    try:
        return run.folder.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return run.folder.as_posix()


def _run_link(folder: Path, label: str, run: RunInfo) -> str:
    if (run.folder / "report.html").is_file():
        return f'<a href="{e(_rel(folder, run))}/report.html">{e(label)}</a>'
    return e(label)


def _run_cards(folder: Path, runs: Sequence[tuple[str, RunInfo]], limit: int = 60) -> str:
    if not runs:
        return ""
    best = _best_values([r.summary for _, r in runs])
    cards = []
    for label, run in runs[:limit]:
        items = []
        for k, name in HEADLINE_COLUMNS:
            if k not in run.summary:
                continue
            v = _py(run.summary[k])
            mark = " ★" if k in best and _is_num(v) and v == best[k] and len(runs) > 1 else ""
            items.append(f"<dt>{e(name)}</dt><dd>{e(fmt(v, 4))}{mark}</dd>")
        head = f"{e(run.get('mode', '?'))} · seed {e(run.get('seed', '?'))}"
        cards.append(
            f'<div class="runcard"><h3>{_run_link(folder, label, run)}</h3>'
            f'<div class="muted small">{e(run.name)} · {head}</div>'
            f"<dl>{''.join(items)}</dl></div>"
        )
    note = f'<p class="muted">first {limit} of {len(runs)} runs.</p>' if len(runs) > limit else ""
    star = '<p class="muted">★ best value among the runs.</p>' if len(runs) > 1 else ""
    return _section(
        "runs-cards", "Runs", f'<div class="runcards">{"".join(cards)}</div>{note}{star}'
    )


def _best_values(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    best: dict[str, float] = {}
    for k, _ in HEADLINE_COLUMNS:
        if k in _NOT_BEST:
            continue
        vals = [float(_py(r[k])) for r in rows if _is_num(_py(r.get(k)))]
        vals = [v for v in vals if math.isfinite(v)]
        if len(vals) > 1:
            best[k] = max(vals) if k in _HIGHER_BETTER else min(vals)
    return best


def _runs_table(folder: Path, runs: Sequence[tuple[str, RunInfo]]) -> str:
    if not runs:
        return ""
    rows = []
    for label, run in runs:
        rows.append(
            (
                _run_link(folder, label, run),
                e(_rel(folder, run)),
                e(run.name),
                e(run.get("mode", "?")),
                e(run.get("seed", "?")),
                e(fmt(run.get("duration_h"))),
                e("; ".join(_fault(f) for f in run.get("faults") or []) or "–"),
            )
        )
    return _section(
        "runs",
        "Run folders",
        "<p>Each run keeps its own results folder and report.</p>"
        + _table(
            ("run", "folder", "scenario", "mode", "seed", "horizon h", "faults"), rows, raw=True
        ),
    )


def _definition(meta: Any, name: str) -> str:
    if not isinstance(meta, Mapping) or not meta:
        return ""
    rows = []
    for k, v in meta.items():
        if k in _META_HIDDEN:
            continue
        if isinstance(v, Mapping):
            v = "; ".join(f"{a} = {json.dumps(b, default=str)}" for a, b in v.items()) or "–"
        elif isinstance(v, list) and any(isinstance(x, Mapping | list) for x in v):
            v = json.dumps(v, default=str)
        rows.append((k, v))
    return _section(
        "definition",
        "Definition",
        f"<p>From <code>{e(name)}</code> (the full file is under Provenance).</p>"
        + _kv_table(rows, ("key", "value")),
    )


def _headline_frame(df: pd.DataFrame, id_cols: Sequence[str]) -> pd.DataFrame:
    ids = [c for c in (*id_cols, *_ID_COLUMNS) if c in df.columns]
    ids = list(dict.fromkeys(ids))
    for c in ("scenario", "mode"):  # the same in every row: said in the header already
        if c in ids and c not in id_cols and df[c].nunique(dropna=False) <= 1:
            ids.remove(c)
    kpis = [k for k, _ in HEADLINE_COLUMNS if k in df.columns and k not in ids]
    if "error" in ids and not _has_errors(df):
        ids.remove("error")
    return df[ids + kpis]


def _has_errors(df: pd.DataFrame) -> bool:
    if "error" not in df.columns:
        return False
    err = df["error"]
    return bool((err.notna() & (err.astype(str).str.strip() != "")).any())


def _study_table(
    df: pd.DataFrame | None, source: str, id_cols: Sequence[str] = (), extra: str = ""
) -> str:
    """A study's table: the id and headline KPI columns in view, every column behind a
    disclosure when the table is wider than that."""
    if df is None:
        return _section("table", "Results table", f'<p class="muted">{e(source)} is missing.</p>')
    shown = _headline_frame(df, id_cols) if len(df.columns) > 14 else df
    inner = (
        f"<p>From <code>{e(source)}</code>: {len(df)} rows, {len(df.columns)} columns"
        + (f" (the {len(shown.columns)} headline ones here)" if shown is not df else "")
        + ".</p>"
        + _frame_table(shown)
    )
    if shown is not df:
        inner += (
            f"<details><summary>all {len(df.columns)} columns</summary>{_frame_table(df)}</details>"
        )
    return _section("table", "Results table", inner + extra)


def _compare_table(df: pd.DataFrame | None, source: str) -> str:
    """compare.csv turned round: one column per run, one row per KPI, the best value marked."""
    if df is None or "label" not in df.columns or len(df) > 12:
        return _study_table(df, source)
    labels = [str(x) for x in df["label"]]
    recs = df.to_dict("records")
    best = _best_values(recs)
    head_keys = [k for k, _ in HEADLINE_COLUMNS if k in df.columns]
    names = dict(HEADLINE_COLUMNS)

    def rows(keys: Sequence[str]) -> list[list[str]]:
        out = []
        for k in keys:
            cells = [f"<b>{e(names.get(k, k))}</b>" if k in names else e(k)]
            for r in recs:
                v = _na(r.get(k))
                txt = e(fmt(v))
                if k in best and _is_num(v) and v == best[k] and len(recs) > 1:
                    txt = f"<b>{txt} ★</b>"
                cells.append(txt)
            out.append(cells)
        return out

    other = [c for c in df.columns if c not in head_keys and c != "label"]
    inner = (
        f"<p>From <code>{e(source)}</code>, one column per run; ★ marks the best value.</p>"
        + _table(["KPI", *labels], rows(head_keys), raw=True, cls="cmp")
        + f"<details><summary>all {len(other)} other columns</summary>"
        + _table(["column", *labels], rows(other), raw=True, cls="cmp")
        + "</details>"
    )
    return _section("table", "Results table", inner)


def _repeat_table(df: pd.DataFrame, grid_keys: Sequence[str]) -> str:
    """Mean ± std over repeats of the headline KPIs, per grid point."""
    keys = [k for k in grid_keys if k in df.columns]
    if not keys or "repeat" not in df.columns or df["repeat"].nunique() < 2:
        return ""
    num = [
        k
        for k, _ in HEADLINE_COLUMNS
        if k in df.columns
        and pd.api.types.is_numeric_dtype(df[k])
        and not pd.api.types.is_bool_dtype(df[k])
    ]
    if not num:
        return ""
    g = df.groupby(keys, sort=False, dropna=False)[num]
    mean, std, count = g.mean(), g.std(ddof=1), g.size()
    rows = []
    for idx in mean.index:
        key_vals = idx if isinstance(idx, tuple) else (idx,)
        cells = [e(fmt(_py(v))) for v in key_vals] + [e(count.loc[idx])]
        for c in num:
            m, sd = mean.loc[idx, c], std.loc[idx, c]
            txt = e(fmt(_na(m)))
            if pd.notna(sd):
                txt += f' <span class="muted">± {e(fmt(_na(sd), 2))}</span>'
            cells.append(txt)
        rows.append(cells)
    names = dict(HEADLINE_COLUMNS)
    return "<h3>Mean ± standard deviation over repeats</h3>" + _table(
        [*keys, "n", *(names.get(c, c) for c in num)], rows, raw=True
    )


def _study_provenance(
    meta: Any,
    meta_name: str,
    runs: Sequence[tuple[str, RunInfo]],
    texts: Sequence[tuple[str, str]],
) -> str:
    first = runs[0][1] if runs else None
    extra: dict[str, Any] = {}
    if isinstance(meta, Mapping):
        for k in ("seed", "seeds", "overrides", "quick", "jobs"):
            if k in meta:
                extra[f"{meta_name} {k}"] = meta[k]
        prov = meta.get("provenance")
        if isinstance(prov, Mapping):
            extra.update({f"{meta_name} {k}": v for k, v in prov.items()})
    if runs:
        extra["runs"] = len(runs)
        versions = {str(r.provenance.get("clustersim")) for _, r in runs}
        if len(versions) > 1:
            extra["clustersim versions across runs"] = ", ".join(sorted(versions))
        seeds = sorted({str(r.get("seed")) for _, r in runs})
        if len(seeds) > 1:
            extra["seeds across runs"] = ", ".join(seeds)
    return _provenance(first, extra, texts)


def _study_chips(
    meta: Any, runs: Sequence[tuple[str, RunInfo]], rows: int | None
) -> list[tuple[str, Any]]:
    chips: list[tuple[str, Any]] = [("runs", len(runs))]
    if rows is not None:
        chips.append(("table rows", rows))
    if isinstance(meta, Mapping) and "seed" in meta:
        chips.append(("seed", meta["seed"]))
    cases = sorted({str(r.get("case")) for _, r in runs if r.get("case") is not None})
    if cases:
        chips.append(("case", ", ".join(cases)))
    modes = sorted({str(r.get("mode")) for _, r in runs if r.get("mode") is not None})
    if modes:
        chips.append(("modes", ", ".join(modes)))
    horizons = sorted({float(r.get("duration_h")) for _, r in runs if _is_num(r.get("duration_h"))})
    if horizons:
        chips.append(("horizon", ", ".join(f"{fmt(h)} h" for h in horizons)))
    return chips


def _study_notes(
    meta: Any, df: pd.DataFrame | None, runs: Sequence[tuple[str, RunInfo]]
) -> list[str]:
    notes: list[str] = []
    failed = meta.get("failed") if isinstance(meta, Mapping) else None
    if isinstance(failed, Mapping) and failed:
        notes += [f"run {k} failed: {v}" for k, v in list(failed.items())[:50]]
    elif df is not None and _has_errors(df):
        bad = df[df["error"].notna() & (df["error"].astype(str).str.strip() != "")]
        who = bad["label"] if "label" in bad.columns else bad.index
        notes += [f"{w} failed: {err}" for w, err in zip(who, bad["error"], strict=True)][:50]
    for label, r in runs:
        notes += [f"{label}: fault {_fault(f)}" for f in r.get("faults") or []][:10]
        if r.get("reproducible") is False:
            notes.append(f"{label}: not reproducible (clock {r.get('clock', '?')})")
    return notes


def _text(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _desc(meta: Any) -> str:
    return str(meta.get("description", "")) if isinstance(meta, Mapping) else ""


def _compare_report(folder: Path) -> str:
    meta = _read_json(folder / "compare.json")
    df = _read_table(folder / "compare.csv")
    runs = _run_folders(folder, meta)
    labels = meta.get("scenarios") if isinstance(meta, Mapping) else None
    if not isinstance(labels, list):
        labels = [str(x) for x in df["label"]] if df is not None and "label" in df else []
    title = "compare: " + (" vs ".join(str(x) for x in labels) if labels else folder.name)
    if isinstance(meta, Mapping) and meta.get("title"):
        title = str(meta["title"])
    notes = [*_completion_notes(folder), *_study_notes(meta, df, runs)]
    body = _notes_box(notes, bad=bool(notes))
    body += _run_cards(folder, runs)
    body += _compare_table(df, "compare.csv")
    body += _section("figures", "Figures", _figures(folder, "compare", _meta_figures(meta)))
    body += _definition(meta, "compare.json")
    body += _study_tail(
        folder,
        meta,
        "compare",
        runs,
        [
            ("compare.md", _text(folder / "compare.md")),
            ("compare.json", _text(folder / "compare.json")),
        ],
    )
    return _page("compare", title, _desc(meta), _study_chips(meta, runs, _len(df)), body)


def _meta_figures(meta: Any) -> Any:
    return meta.get("figures") if isinstance(meta, Mapping) else None


def _len(df: pd.DataFrame | None) -> int | None:
    return None if df is None else len(df)


def _sweep_report(folder: Path) -> str:
    meta = _read_json(folder / "sweep.json")
    source = "sweep.parquet" if (folder / "sweep.parquet").is_file() else "sweep.csv"
    df = _read_table(folder / source)
    runs = _run_folders(folder, meta)
    m = meta if isinstance(meta, Mapping) else {}
    grid = m.get("grid", {})
    grid_keys = [str(k) for k in grid] if isinstance(grid, Mapping) else []
    base = m.get("name") or m.get("scenario") or folder.name
    notes = [*_completion_notes(folder), *_study_notes(meta, df, runs)]
    body = _notes_box(notes, bad=bool(notes))
    body += _definition(meta, "sweep.json")
    body += _study_table(
        df, source, grid_keys, _repeat_table(df, grid_keys) if df is not None else ""
    )
    body += _section("figures", "Figures", _figures(folder, "sweep", _meta_figures(meta)))
    body += _run_cards(folder, runs)
    body += _study_tail(
        folder,
        meta,
        "sweep",
        runs,
        [("sweep.md", _text(folder / "sweep.md")), ("sweep.json", _text(folder / "sweep.json"))],
    )
    chips = _study_chips(meta, runs, _len(df))
    if isinstance(grid, Mapping) and grid:
        axes = " × ".join(f"{k} ({len(v) if isinstance(v, list) else 1})" for k, v in grid.items())
        chips.insert(0, ("grid", axes))
    if "repeats" in m:
        chips.insert(1, ("repeats", m["repeats"]))
    return _page("sweep", str(m.get("title") or f"sweep of {base}"), _desc(meta), chips, body)


def _study_tail(
    folder: Path,
    meta: Any,
    kind: str,
    runs: Sequence[tuple[str, RunInfo]],
    texts: Sequence[tuple[str, str]],
) -> str:
    """The end of an experiment's report: the runs table, the folder's files, provenance."""
    return (
        _runs_table(folder, runs)
        + _files_section(folder)
        + _study_provenance(meta, kind, runs, texts)
    )


def _reproduce_report(folder: Path) -> str:
    meta = _read_json(folder / "reproduce.json")
    study = str(meta.get("study", "")) if isinstance(meta, Mapping) else ""
    csv: Path | None = folder / f"{study}.csv"
    if not study or csv is None or not csv.is_file():
        csvs = sorted(folder.glob("*.csv"))
        csv = csvs[0] if csvs else None
    df = _read_table(csv) if csv is not None else None
    md = csv.with_suffix(".md") if csv is not None else None
    runs = _run_folders(folder, meta)
    notes = [*_completion_notes(folder), *_study_notes(meta, df, runs)]
    body = _notes_box(notes, bad=bool(notes))
    body += _study_table(df, csv.name if csv is not None else f"{study or '<study>'}.csv")
    body += _section("figures", "Figures", _figures(folder, "reproduce", _meta_figures(meta)))
    body += _definition(meta, "reproduce.json")
    body += _run_cards(folder, runs)
    body += _study_tail(
        folder,
        meta,
        "reproduce",
        runs,
        [
            (md.name if md is not None else "<study>.md", _text(md)),
            ("reproduce.json", _text(folder / "reproduce.json")),
        ],
    )
    chips = _study_chips(meta, runs, _len(df))
    if isinstance(meta, Mapping) and meta.get("quick"):
        chips.insert(0, ("quick", True))
    title = f"reproduce {study}" if study else f"reproduce {folder.name}"
    if isinstance(meta, Mapping) and meta.get("title"):
        title = str(meta["title"])
    return _page("reproduce", title, _desc(meta), chips, body)


# ----------------------------------------------------------------------------- entry point
def render_report(folder: Path, kind: ReportKind) -> str:
    """The HTML text of ``folder``'s report (nothing written)."""
    folder = Path(folder)
    if kind not in KINDS:
        raise ValueError(f"report kind {kind!r} is not one of {', '.join(KINDS)}")
    if not folder.is_dir():
        raise ClusterSimError(f"{folder} is not a folder")
    if kind == "run":
        return _run_report(folder)
    if kind == "compare":
        return _compare_report(folder)
    if kind == "sweep":
        return _sweep_report(folder)
    return _reproduce_report(folder)


def write_report(folder: Path, kind: ReportKind) -> Path:
    """Write ``folder/report.html`` for a ``run``, ``compare``, ``sweep`` or ``reproduce``
    results folder from the files in it (atomically).
    Returns the path."""
    folder = Path(folder)
    text = render_report(folder, kind)
    return write_text(folder / "report.html", text)
