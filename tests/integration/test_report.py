"""Figures drawn from the results tables, and report.html for a run, a compare, a sweep and a
reproduce folder (self-contained, escaped, every figure naming its table); a slow test renders
the page in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clustersim.cosim.plant_node import COORDINATION_COLUMNS
from clustersim.errors import ClusterSimError
from clustersim.results.figures import (
    PARETO_COLUMNS,
    draw_run_figures,
    figure_info,
    kpi_bars,
    messages_timeline,
    worst_interval,
)
from clustersim.results.report import detect_kind, render_report, write_report
from clustersim.runner import run_scenario
from clustersim.scenario import load_scenario

SHORT = [
    "run.duration_h=1",
    "control.pop_size=12",
    "control.generations=4",
    "control.round_generations=2",
    "comm.transport=memory",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A clustered run with message loss and an uncontrolled run, 1 h each."""
    root = tmp_path_factory.mktemp("report")
    clustered = run_scenario(
        load_scenario("ieee33-ev-clustered", overrides=[*SHORT, "comm.loss.p=0.1"]),
        root / "clustered",
    )
    none = run_scenario(load_scenario("ieee33-ev-none", overrides=SHORT), root / "none")
    return {"clustered": clustered.out_dir, "none": none.out_dir}


class _Page(HTMLParser):
    """Tags, image sources, ids and text of a page (stdlib parser: fails loudly on nothing,
    so the test checks what it collects)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.imgs: list[str] = []
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.text: list[str] = []
        self.captions: list[str] = []
        self._in_caption = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "a":
            self.hrefs.append(a.get("href", ""))
        if tag == "figcaption":
            self._in_caption += 1
            self.captions.append("")

    def handle_endtag(self, tag):
        if tag == "figcaption":
            self._in_caption -= 1

    def handle_data(self, data):
        self.text.append(data)
        if self._in_caption:
            self.captions[-1] += data


def _parse(path: Path) -> tuple[str, _Page]:
    text = path.read_text()
    page = _Page()
    page.feed(text)
    page.close()
    return text, page


def _self_contained(text: str, page: _Page) -> None:
    assert text.startswith("<!DOCTYPE html>")
    assert "<script" not in text.lower() and "<link" not in text.lower()
    assert "http://" not in text and "https://" not in text and "@import" not in text
    assert page.imgs and all(s.startswith("data:image/png;base64,") for s in page.imgs)
    for href in page.hrefs:  # only in-page anchors and relative links to run reports
        assert href.startswith("#") or (href.endswith("report.html") and "://" not in href)


# ----------------------------------------------------------------------------- run folders
def test_run_folder_has_figures_from_its_tables_and_a_report(runs):
    out = runs["clustered"]
    figs = {p.name for p in (out / "figures").iterdir()}
    assert {"voltage_heatmap.png", "partition.png", "messages_timeline.png", "kpi_bars.png"} <= figs
    assert {"voltage_envelope.png", "devices.png"} <= figs
    assert (out / "report.html").is_file() and not list(out.rglob("*.part"))
    # one Pareto figure per controller with a front at the interval of the worst voltage
    pareto = pd.read_parquet(out / "pareto.parquet")
    ts = pd.read_parquet(out / "timeseries.parquet")
    worst = worst_interval(ts, interval_s=900, plant_step_s=60)
    fronts = pareto[(pareto.interval == worst) & (pareto["set"] == "front")]
    assert {f"pareto_{c}.png" for c in fronts.controller} == {
        f for f in figs if f.startswith("pareto_")
    }
    assert len(set(fronts.controller)) >= 3
    # the Pareto table holds, per interval and controller, the compromise control.parquet chose
    assert list(pareto.columns) == PARETO_COLUMNS
    assert set(pareto["set"]) == {"population", "front", "chosen"}
    ctl = pd.read_parquet(out / "control.parquet")
    chosen = pareto[pareto["set"] == "chosen"].set_index(["interval", "controller"])
    ctl = ctl.set_index(["interval", "controller"])
    both = ctl.index.intersection(chosen.index)
    assert len(both) >= 0.5 * len(ctl)
    np.testing.assert_allclose(chosen.loc[both].f_voltage_pu, ctl.loc[both].f_voltage_pu)
    np.testing.assert_allclose(chosen.loc[both].f_cost, ctl.loc[both].f_cost)
    # a row without a front: no solve that interval (its measurement was lost)
    assert (ctl.loc[ctl.index.difference(chosen.index)].evaluations == 0).all()
    # value tables (the clustered default): both sides of every tie in coordination.parquet,
    # its figure at the worst interval
    assert "coordination.png" in figs
    coord = pd.read_parquet(out / "coordination.parquet")
    assert list(coord.columns) == COORDINATION_COLUMNS
    down = coord[coord["round"] == 2]
    assert len(down) == 4 * 4 and down.vm_parent_pu.notna().all()  # 4 ties, 4 intervals
    assert (coord[coord["round"] == 1].table != "").all()


def test_none_run_has_no_message_figures(runs):
    out = runs["none"]
    figs = {p.name for p in (out / "figures").iterdir()}
    assert figs == {
        "voltage_heatmap.png",
        "voltage_envelope.png",
        "devices.png",
        "partition.png",
        "kpi_bars.png",
    }
    assert not (out / "messages.parquet").exists() and not (out / "pareto.parquet").exists()
    text, page = _parse(out / "report.html")
    _self_contained(text, page)
    assert "no messages in this mode" in text
    assert "messages" not in page.ids and "agents" not in page.ids


def test_figures_redraw_from_the_folder_alone(runs, tmp_path):
    """Delete every table-based figure of a copy of the run: the folder's tables draw them
    again, the same set."""
    copy = tmp_path / "copy"
    shutil.copytree(runs["clustered"], copy)
    before = {p.name for p in (copy / "figures").iterdir()}
    for p in (copy / "figures").iterdir():
        if p.name != "partition.png":
            p.unlink()
    written = draw_run_figures(copy)
    assert {p.name for p in written} | {"partition.png"} == before
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        info = figure_info(p.name)
        assert info is not None and all((copy / s).is_file() for s in info.sources), p.name


def test_run_report_content(runs):
    out = runs["clustered"]
    text, page = _parse(out / "report.html")
    _self_contained(text, page)
    summary = json.loads((out / "summary.json").read_text())
    scenario = tomllib.loads((out / "scenario.toml").read_text())
    figs = sorted((out / "figures").glob("*.png"))
    assert len(page.imgs) == len(figs)
    assert {"kpis", "figures", "partition", "agents", "messages", "kpi-table", "provenance"} <= (
        page.ids
    )
    body = " ".join(page.text)
    for word in ("ieee33-ev-clustered", "clustered", "ieee33", "voltage violation", "max |V−1|"):
        assert word in body
    assert f"{summary['messages_lost']}" in body and summary["messages_lost"] > 0
    assert f"{summary['messages_sent']} sent" in body
    assert "coordination (value-table)" in body and "boundary residual" in body
    # every figure's caption names the tables it is drawn from, and they are in the folder
    assert len(page.captions) == len(figs)
    for cap in page.captions:
        assert "Drawn from" in cap, cap
        name = cap.split(" — ")[0].strip()
        info = figure_info(name)
        assert info is not None
        for src in info.sources:
            assert src in cap and (out / src).is_file()
    # provenance: version, seed, package versions, the resolved scenario
    prov = scenario["provenance"]
    assert prov["clustersim"] in body and prov["pandapower"] in body
    assert "resolved scenario.toml" in body and "[provenance]" in body
    # partition: every cluster with its pilot bus
    part = json.loads((out / "partition.json").read_text())
    for c in part["clusters"]:
        assert f"C{c['id'] + 1}" in body and c["pilot_bus"] in body


def test_report_escapes_text_from_the_folder(runs, tmp_path):
    copy = tmp_path / "evil"
    shutil.copytree(runs["none"], copy)
    doc = (copy / "scenario.toml").read_text()
    doc = doc.replace('name = "ieee33-ev-none"', 'name = "<b>bold</b>"', 1)
    doc = re.sub(
        r"^description = .*$",
        'description = "<script>alert(1)</script> & co"',
        doc,
        count=1,
        flags=re.M,
    )
    (copy / "scenario.toml").write_text(doc)
    summary = json.loads((copy / "summary.json").read_text())
    summary["faults"] = [{"node": "C1", "kind": "<img src=x onerror=alert(1)>"}]
    (copy / "summary.json").write_text(json.dumps(summary))
    text = write_report(copy, "run").read_text()
    assert "<script>" not in text and "<img src=x" not in text and "<b>bold</b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in text
    assert "&lt;b&gt;bold&lt;/b&gt;" in text and "Warnings" in text


def test_report_kinds_and_errors(runs, tmp_path):
    assert detect_kind(runs["clustered"]) == "run"
    with pytest.raises(ClusterSimError, match="not a results folder"):
        detect_kind(tmp_path)
    with pytest.raises(ValueError, match="report kind"):
        render_report(runs["none"], "movie")  # type: ignore[arg-type]
    with pytest.raises(ClusterSimError, match=r"summary\.json"):
        write_report(tmp_path, "run")
    assert not (tmp_path / "report.html").exists()


def test_report_command(runs, tmp_path):
    """``clustersim report FOLDER`` rewrites the report; a folder that is none is one line."""
    import shutil

    from typer.testing import CliRunner

    from clustersim.cli import app

    folder = tmp_path / "copy"
    shutil.copytree(runs["none"], folder)
    (folder / "report.html").unlink()
    res = CliRunner().invoke(app, ["report", str(folder)])
    assert res.exit_code == 0, res.output
    assert (folder / "report.html").read_text().startswith("<!DOCTYPE html>")
    res = CliRunner().invoke(app, ["report", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "not a results folder" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_figure_functions_on_edge_cases(tmp_path):
    empty = pd.DataFrame(columns=["kind", "src", "dst", "t_send_s", "t_deliver_s", "lost", "late"])
    assert messages_timeline(tmp_path / "m.png", empty) is None
    assert not (tmp_path / "m.png").exists()
    allost = pd.DataFrame(
        {
            "kind": ["meas", "setpoint"],
            "src": ["plant", "C1"],
            "dst": ["C1", "plant"],
            "t_send_s": [0.0, 1.0],
            "t_deliver_s": [np.nan, np.nan],
            "lost": [True, True],
            "late": [False, False],
        }
    )
    assert messages_timeline(tmp_path / "lost.png", allost) is not None
    p = kpi_bars(
        tmp_path / "k.png",
        {"a": {"energy_cost": 1.0, "messages_sent": 3}, "b": {"energy_cost": 2.0}},
    )
    assert p.read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- study folders
def _study_runs(folder: Path, runs: dict[str, Path], labels: dict[str, str]) -> list[dict]:
    rows = []
    for label, key in labels.items():
        dst = folder / "runs" / label
        shutil.copytree(runs[key], dst)
        s = json.loads((dst / "summary.json").read_text())
        rows.append(
            {
                "label": label,
                "scenario": s["scenario"],
                "mode": s["mode"],
                "error": "",
                "run_dir": f"runs/{label}",
                **{k: v for k, v in s.items() if isinstance(v, int | float)},
            }
        )
    return rows


def _study_report(folder: Path, kind: str) -> tuple[str, _Page, str]:
    """Detect the study folder's kind, write its report and check it is self-contained; return
    the page's source, its parse and its text."""
    assert detect_kind(folder) == kind
    text, page = _parse(write_report(folder, kind))
    _self_contained(text, page)
    return text, page, " ".join(page.text)


def test_compare_report_from_its_folder(runs, tmp_path):
    folder = tmp_path / "cmp"
    rows = _study_runs(folder, runs, {"none": "none", "clustered": "clustered"})
    pd.DataFrame(rows).to_csv(folder / "compare.csv", index=False)
    (folder / "compare.md").write_text("| label | cost |\n|---|---|\n| none | 1 |\n")
    (folder / "compare.json").write_text(
        json.dumps(
            {
                "kind": "compare",
                "scenarios": ["none", "clustered"],
                "seed": 1,
                "overrides": SHORT,
                "runs": {"none": "runs/none", "clustered": "runs/clustered"},
                "failed": {},
                "figures": ["figures/kpi_bars.png"],
            }
        )
    )
    summaries = {
        r["label"]: json.loads((folder / r["run_dir"] / "summary.json").read_text()) for r in rows
    }
    kpi_bars(folder / "figures" / "kpi_bars.png", summaries, title="compare")
    (folder / "figures" / "captions.json").write_text(
        json.dumps({"kpi_bars.png": {"caption": "both runs", "sources": ["compare.csv"]}})
    )
    _, page, body = _study_report(folder, "compare")
    assert "compare: none vs clustered" in body
    assert {"runs-cards", "table", "figures", "runs", "provenance"} <= page.ids
    assert "runs/none/report.html" in page.hrefs and "runs/clustered/report.html" in page.hrefs
    assert len(page.imgs) == 1 and "both runs" in page.captions[0]
    assert "compare.csv" in page.captions[0] and "★" in body
    cost = {r["label"]: r["energy_cost"] for r in rows}
    from clustersim.results.report import fmt

    for v in cost.values():
        assert fmt(v) in body


def test_sweep_report_with_repeats_and_a_failed_point(runs, tmp_path):
    folder = tmp_path / "sweep"
    base = _study_runs(folder, runs, {"p0_r0": "clustered", "p0_r1": "clustered"})
    rows = []
    for i, (p, r) in enumerate([(0.0, 0), (0.0, 1), (0.2, 0), (0.2, 1)]):
        row = dict(base[i % 2])
        row.update({"comm.loss.p": p, "point": int(p > 0), "repeat": r, "seed": 10 + r})
        row["label"] = f"p{int(p > 0)}_r{r}"
        row["energy_cost"] = 100.0 + 10 * p + r
        if i == 3:
            row.update(error="runner refused the point: <bad>", run_dir="", energy_cost=np.nan)
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.to_parquet(folder / "sweep.parquet", index=False)
    frame.to_csv(folder / "sweep.csv", index=False)
    (folder / "sweep.json").write_text(
        json.dumps(
            {
                "kind": "sweep",
                "scenario": "ieee33-ev-clustered",
                "name": "ieee33-ev-clustered",
                "grid": {"comm.loss.p": [0.0, 0.2]},
                "repeats": 2,
                "seed": 1,
            }
        )
    )
    (folder / "figures").mkdir()
    shutil.copy(runs["clustered"] / "figures" / "kpi_bars.png", folder / "figures" / "cost.png")
    text, page, body = _study_report(folder, "sweep")
    assert "sweep of ieee33-ev-clustered" in body and "comm.loss.p (2)" in body
    assert "Mean ± standard deviation over repeats" in body
    assert "runner refused the point: <bad>" in body and "&lt;bad&gt;" in text
    assert "sweep.parquet" in page.captions[0]  # a sweep figure's default source


def test_reproduce_report(runs, tmp_path):
    folder = tmp_path / "repro"
    rows = _study_runs(folder, runs, {"a": "none"})
    pd.DataFrame(rows)[["label", "mode", "energy_cost"]].to_csv(folder / "demo.csv", index=False)
    (folder / "demo.md").write_text("# demo\n")
    (folder / "reproduce.json").write_text(json.dumps({"kind": "reproduce", "study": "demo"}))
    (folder / "figures").mkdir()
    shutil.copy(runs["none"] / "figures" / "kpi_bars.png", folder / "figures" / "x.png")
    _, _, body = _study_report(folder, "reproduce")
    assert "reproduce demo" in body and "demo.csv" in body and "Source table not stated" in body


# ----------------------------------------------------------------------------- in a browser
def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="no chromium binary (apt-get install chromium)")
@pytest.mark.parametrize("which", ["clustered", "none"])
def test_report_renders_in_headless_chromium(runs, tmp_path, which):
    from matplotlib.image import imread

    page = runs[which] / "report.html"
    common = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,2000",
    ]
    dom = subprocess.run(
        [*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="kpis"' in dom.stdout and "voltage violation" in dom.stdout.lower()
    shot = tmp_path / "shot.png"
    got = subprocess.run(
        [*common, f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert got.returncode == 0 and shot.is_file(), got.stderr[-2000:]
    px = imread(shot)[..., :3]
    assert px.shape[:2] == (2000, 1200)
    colours = np.unique((px.reshape(-1, 3) * 255).astype(np.uint8), axis=0)
    assert px.std() > 0.05 and len(colours) > 50  # not a blank page
    # the header band is dark blue, the page below light: the stylesheet was applied
    assert px[40, 600].mean() < 0.5 < px[1500, 20].mean()
