"""compare, sweep and reproduce: tables, figures, seeds, failures, CLI errors.

Runs are short (1 h, light optimizer budget, in-memory transport; the results are the same over
MQTT, tested in test_cosim.py) so that the file stays near a minute on a shared 2-core machine;
the longer reproduce studies are marked slow.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from clustersim.cli import app
from clustersim.fileio import incomplete_reason, write_marker
from clustersim.results.tables import WALL_CLOCK_KEYS
from clustersim.runner import run_scenario
from clustersim.scenario import load_scenario
from clustersim.studies.jobs import Hooks, Job, repeat_seeds, run_jobs
from clustersim.studies.sweep import (
    check_key,
    parse_grid,
    point_table,
    resume_sweep,
    sweep_figures,
)

# 1 h = 4 control intervals, 12 plant steps of 5 min
SHORT = [
    "run.duration_h=1",
    "run.plant_step_s=300",
    "control.pop_size=12",
    "control.generations=4",
    "control.round_generations=2",
    "comm.transport=memory",
]
PNG = b"\x89PNG\r\n\x1a\n"


def _sets(*overrides: str) -> list[str]:
    return [x for o in overrides for x in ("--set", o)]


def _cli(*args: str):
    return CliRunner().invoke(app, [*args])


def _one_error_line(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    return lines[0]


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG


def _summary(run_dir: Path) -> dict:
    s = json.loads((run_dir / "summary.json").read_text())
    return {k: v for k, v in s.items() if k not in WALL_CLOCK_KEYS}


# ------------------------------------------------------------------------------ compare


def test_compare_one_scenario_gives_its_table(tmp_path):
    """``compare`` with one scenario (as documented: one or more) writes and prints its row."""
    out = tmp_path / "one"
    r = _cli("compare", "ieee33-ev-none", "--out", str(out), *_sets(*SHORT))
    assert r.exit_code == 0, r.stderr
    assert "ieee33-ev-none" in r.stdout and "violation" in r.stdout
    assert list(pd.read_csv(out / "compare.csv")["label"]) == ["ieee33-ev-none"]


def test_compare_none_vs_centralized(tmp_path):
    """A full day at a 15 min plant step: the evening peak is in it, so the centralized agent
    must cut the deviation the uncontrolled feeder has there."""
    out = tmp_path / "cmp"
    day = ["run.plant_step_s=900", "control.pop_size=12", "control.generations=4"]
    r = _cli(
        "compare",
        "ieee33-ev-none",
        "ieee33-ev-centralized",
        "--out",
        str(out),
        "-q",
        *_sets(*day, "comm.transport=memory"),
    )
    assert r.exit_code == 0, r.stderr
    assert r.stdout.split() == ["results:", str(out)]  # -q: no table
    table = pd.read_csv(out / "compare.csv").set_index("label")
    assert list(table.index) == ["ieee33-ev-none", "ieee33-ev-centralized"]
    assert table["error"].isna().all()
    none, cen = table.loc["ieee33-ev-none"], table.loc["ieee33-ev-centralized"]
    assert cen["max_abs_voltage_deviation_pu"] < none["max_abs_voltage_deviation_pu"]
    assert cen["voltage_violation_bus_hours"] < none["voltage_violation_bus_hours"]
    assert none["seed"] == cen["seed"] == 1
    # every number of the table is the run folder's, and the figure data is its timeseries
    for label, row in table.iterrows():
        run_dir = out / row["run_dir"]
        assert run_dir == out / "runs" / label
        s = json.loads((run_dir / "summary.json").read_text())
        assert row["max_abs_voltage_deviation_pu"] == pytest.approx(
            s["max_abs_voltage_deviation_pu"]
        )
        ts = pd.read_parquet(run_dir / "timeseries.parquet")
        vm = ts[[c for c in ts.columns if c.startswith("vm_pu.")]]
        assert (vm - 1).abs().max().max() == pytest.approx(s["max_abs_voltage_deviation_pu"])
    md = (out / "compare.md").read_text()
    assert "| ieee33-ev-none | none |" in md and "max \\|V−1\\| p.u." in md
    meta = json.loads((out / "compare.json").read_text())
    assert meta["scenarios"] == ["ieee33-ev-none", "ieee33-ev-centralized"]
    assert meta["seed"] == 1 and meta["overrides"] == [*day, "comm.transport=memory"]
    assert meta["worst_bus"] == {"bus": str(none["worst_bus"]), "from": "ieee33-ev-none"}
    for name in ("voltage_worst_bus.png", "max_deviation_per_bus.png", "losses.png"):
        assert _is_png(out / "figures" / name), name
        assert f"figures/{name}" in meta["figures"]
    captions = json.loads((out / "figures" / "captions.json").read_text())
    assert "compare.csv" in captions["losses.png"]["sources"]


def test_compare_refuses_different_plants_and_unknown_scenarios(tmp_path):
    line = _one_error_line(
        _cli("compare", "ieee33-ev-none", "ieee51-ga-none", "--out", str(tmp_path / "x"))
    )
    assert "case.name" in line and "identical plant" in line
    line = _one_error_line(_cli("compare", "ieee33-ev-none", "nosuch", "--out", str(tmp_path)))
    assert "nosuch" in line and "no such scenario" in line
    line = _one_error_line(
        _cli("compare", "ieee33-ev-none", "--set", "run.duraton_h=1", "--out", str(tmp_path))
    )
    assert "run.duraton_h" in line
    assert not (tmp_path / "x").exists()


# -------------------------------------------------------------------------------- sweep


def test_sweep_in_processes_seeds_and_determinism(tmp_path):
    out = tmp_path / "sw"
    r = _cli(
        "sweep",
        "ieee33-ev-centralized",
        "--grid",
        "comm.loss.p=0,0.5",
        "--repeats",
        "2",
        "--jobs",
        "2",
        "--out",
        str(out),
        "-q",
        *_sets(*SHORT),
    )
    assert r.exit_code == 0, r.stderr
    df = pd.read_parquet(out / "sweep.parquet")
    assert len(df) == 2 * 2
    assert df["error"].isna().all()
    assert list(df["comm.loss.p"]) == [0, 0, 0.5, 0.5]
    assert list(df["repeat"]) == [0, 1, 0, 1]
    seeds = repeat_seeds(1, 2)
    assert seeds[0] != seeds[1]
    assert list(df["seed"]) == [*seeds, *seeds]  # the same seeds at every point
    assert pd.read_csv(out / "sweep.csv").shape[0] == 4
    # the grid value and the seed reached each run
    for row in df.itertuples():
        s = json.loads((out / row.run_dir / "summary.json").read_text())
        assert s["seed"] == row.seed
    lossless, lossy = df[df["comm.loss.p"] == 0], df[df["comm.loss.p"] == 0.5]
    assert (lossless["messages_lost"] == 0).all() and (lossy["messages_lost"] > 0).all()
    # another seed is another day of profiles
    assert lossless["energy_losses_mwh"].nunique() == 2
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["scenario"] == "ieee33-ev-centralized" and meta["repeats"] == 2
    assert meta["grid"] == {"comm.loss.p": [0, 0.5]} and meta["seeds"] == seeds
    assert _is_png(out / "figures" / "max_abs_voltage_deviation_pu.png")
    assert _is_png(out / "figures" / "messages_lost.png")
    # identical (point, seed) → identical results: the same run in this process, with its own
    # topic namespace, gives what the worker process wrote
    row = lossy.iloc[1]
    sc = load_scenario(
        "ieee33-ev-centralized", overrides=[*SHORT, "comm.loss.p=0.5"], seed=int(row["seed"])
    )
    direct = run_scenario(sc, tmp_path / "direct")
    assert _summary(direct.out_dir) == _summary(out / row["run_dir"])
    assert pd.read_parquet(direct.out_dir / "timeseries.parquet").equals(
        pd.read_parquet(out / row["run_dir"] / "timeseries.parquet")
    )


def test_sweep_failed_point_is_recorded_and_the_others_complete(tmp_path):
    """mode none records a partition it cannot make; clustered needs it, so that point fails."""
    out = tmp_path / "sw"
    r = _cli(
        "sweep",
        "ieee33-ev-none",
        "--grid",
        "control.mode=none,clustered",
        "--out",
        str(out),
        "-q",
        *_sets(*SHORT, "partition.method=nosuch"),
    )
    assert r.exit_code == 0, r.stderr
    assert "1 of 2 runs failed" in r.stderr
    df = pd.read_parquet(out / "sweep.parquet")
    assert list(df["control.mode"]) == ["none", "clustered"]
    ok, bad = df.iloc[0], df.iloc[1]
    assert ok["error"] is None and ok["steps"] == 12
    assert (out / ok["run_dir"] / "summary.json").is_file()
    assert "partition" in bad["error"] and "nosuch" in bad["error"]
    assert pd.isna(bad["max_abs_voltage_deviation_pu"])
    assert json.loads((out / "sweep.json").read_text())["failed"] == {bad["label"]: bad["error"]}
    assert _is_png(out / "figures" / "max_abs_voltage_deviation_pu.png")


def test_sweep_every_run_failing_exits_1(tmp_path):
    r = _cli(
        "sweep",
        "ieee33-ev-clustered",
        "--grid",
        "partition.method=nosuch,nosuch2",
        "--out",
        str(tmp_path / "sw"),
        "-q",
        *_sets(*SHORT),
    )
    assert r.exit_code == 1
    assert "every run failed" in r.stderr
    assert len(pd.read_parquet(tmp_path / "sw" / "sweep.parquet")) == 2


@pytest.mark.parametrize(
    ("grid", "needle"),
    [
        (["comm.latency.mean_ms"], "expected key.path=v1,v2"),
        (["=1,2"], "expected key.path=v1,v2"),
        (["comm.lattency.mean_ms=0,50"], "comm.lattency: unknown key"),
        (["control.mode.x=1"], "control.mode: is not a table"),
        (["run.seed=1,2"], "--repeats"),
        (["comm.loss.p=0,2"], "--grid point comm.loss.p=2"),
        (["comm.loss.p=0,0"], "repeated value"),
        (["comm.loss.p=0", "comm.loss.p=1"], "given twice"),
        (["comm.loss.p=0,"], "empty value"),
    ],
)
def test_sweep_bad_grid_is_one_line_exit_2(tmp_path, grid, needle):
    args = [x for g in grid for x in ("--grid", g)]
    line = _one_error_line(_cli("sweep", "ieee33-ev-none", *args, "--out", str(tmp_path / "o")))
    assert needle in line
    assert not (tmp_path / "o").exists()  # nothing ran


def test_sweep_unknown_kpi_is_refused_before_running(tmp_path):
    """``--kpi`` with a name that is not a summary.json KPI: one line listing the valid ones,
    exit 2, nothing run."""
    r = _cli(
        "sweep",
        "ieee33-ev-none",
        "--grid",
        "comm.loss.p=0,0.1",
        "--kpi",
        "violation",
        "--out",
        str(tmp_path / "o"),
    )
    line = _one_error_line(r)
    assert "--kpi: unknown KPI 'violation'" in line and "voltage_violation_bus_hours" in line
    assert r.exit_code == 2 and not (tmp_path / "o").exists()


def test_sweep_resume_runs_only_what_is_missing_or_failed(tmp_path):
    """A sweep whose run folders were lost or left unfinished: ``--resume`` runs those and only
    those, keeps the finished ones (not rewritten), and ends with the same table as the whole
    sweep had; a folder that is not a sweep, or a resume with a new plan, is one line, exit 2."""
    out = tmp_path / "sw"
    base = ["sweep", "ieee33-ev-none", "--grid", "comm.loss.p=0,0.1,0.2", "--out", str(out)]
    r = _cli(*base, "-q", *_sets("run.duration_h=0.25", "run.plant_step_s=300"))
    assert r.exit_code == 0, r.stderr
    before = pd.read_parquet(out / "sweep.parquet")
    runs = sorted((out / "runs").iterdir())
    shutil.rmtree(runs[0])  # lost
    write_marker(runs[2], complete=False, reason="killed")  # unfinished
    kept = (runs[1] / "summary.json").stat().st_mtime_ns
    done: list[str] = []
    res = resume_sweep(out, hooks=Hooks(on_done=lambda o, n, t: done.append(o.job.label)))
    assert done == [runs[0].name, runs[2].name]
    assert (runs[1] / "summary.json").stat().st_mtime_ns == kept
    after = pd.read_parquet(out / "sweep.parquet")
    cols = [c for c in before.columns if c not in WALL_CLOCK_KEYS]
    pd.testing.assert_frame_equal(after[cols], before[cols])
    assert res.failed == [] and incomplete_reason(out) is None
    assert _cli("sweep", "--resume", str(out), "-q").exit_code == 0  # nothing left: no run
    line = _one_error_line(_cli("sweep", "--resume", str(tmp_path)))
    assert "no readable sweep.json" in line
    line = _one_error_line(_cli("sweep", "--resume", str(out), "--grid", "comm.loss.p=0"))
    assert "drop --grid" in line


def test_the_printed_sweep_table_keeps_the_spread_over_repeats():
    """The table a sweep prints is sweep.md's: mean ± std where a point was repeated."""
    frame = pd.DataFrame(
        {
            "point": [0, 0, 1],
            "comm.loss.p": [0.0, 0.0, 0.1],
            "error": [None, None, None],
            "voltage_violation_bus_hours": [1.0, 3.0, 2.0],
        }
    )
    table = point_table(frame, ["comm.loss.p"], ["voltage_violation_bus_hours"])
    assert list(table["violation bus·h"]) == ["2 ± 1.4", 2.0]
    assert list(table["runs ok"]) == ["2/2", "1/1"]


def test_parse_grid_and_check_key():
    got = parse_grid(
        [
            'comm.latency={dist="constant", mean_ms=5},{dist="uniform", mean_ms=9, jitter_ms=1}',
            "control.weights=[1, 0, 0],[0, 1, 0]",
            "control.mode=clustered, centralized",
            "run.duration_h=1",
        ]
    )
    assert got == {
        "comm.latency": [
            '{dist="constant", mean_ms=5}',
            '{dist="uniform", mean_ms=9, jitter_ms=1}',
        ],
        "control.weights": ["[1, 0, 0]", "[0, 1, 0]"],
        "control.mode": ["clustered", "centralized"],
        "run.duration_h": ["1"],
    }
    for key in (
        "comm.latency.mean_ms",
        "comm.loss.p",
        "control.local.vv_v1_pu",
        "resources.pv",
        "comm.links",
        "partition.method",
    ):
        check_key(key)


def test_repeat_seeds_are_derived_and_stable():
    state = np.random.get_state()[1].copy()  # noqa: NPY002
    seeds = repeat_seeds(7, 5)
    assert len(set(seeds)) == 5 and all(s >= 0 for s in seeds)
    assert repeat_seeds(7, 3) == seeds[:3]  # more repeats keep the earlier seeds
    assert repeat_seeds(8, 1) != seeds[:1]
    assert (np.random.get_state()[1] == state).all()  # noqa: NPY002 - global state untouched


def test_sweep_figures_one_two_three_axes(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    lat, loss, mode = [0, 50, 200], [0.0, 0.1], ["clustered", "centralized"]
    p = 0
    for a in lat:
        for b in loss:
            for c in mode:
                for r in range(2):
                    failed = (a, b, c) == (200, 0.1, "centralized")
                    rows.append(
                        {
                            "lat": a,
                            "loss": b,
                            "mode": c,
                            "point": p,
                            "repeat": r,
                            "error": "boom" if failed else None,
                            "kpi": np.nan if failed else a * 1e-4 + b + rng.normal(0, 0.01),
                        }
                    )
                p += 1
    frame = pd.DataFrame(rows)
    three = sweep_figures(frame, ["lat", "loss", "mode"], ["kpi"], tmp_path / "3", shape=(3, 2, 2))
    assert [f.name for f in three] == ["kpi.png"] and _is_png(three[0])
    one = frame[(frame["loss"] == 0) & (frame["mode"] == "clustered")].copy()
    one["point"] = one["point"] // 4
    assert _is_png(sweep_figures(one, ["lat"], ["kpi"], tmp_path / "1", shape=(3,))[0])
    two = frame[frame["loss"] == 0.1].copy()
    two["point"] = (two["point"] // 4) * 2 + two["point"] % 2
    assert _is_png(sweep_figures(two, ["lat", "mode"], ["kpi"], tmp_path / "2", shape=(3, 2))[0])
    # a categorical single axis
    cat = frame[(frame["lat"] == 0) & (frame["loss"] == 0)].copy()
    cat["point"] = cat["point"] % 2
    assert _is_png(sweep_figures(cat, ["mode"], ["kpi"], tmp_path / "c", shape=(2,))[0])


# ---------------------------------------------------------------------------- reproduce


def test_reproduce_unknown_study_is_one_line_exit_2(tmp_path):
    line = _one_error_line(_cli("reproduce", "nosuch", "--out", str(tmp_path)))
    assert "unknown study" in line and "delay-sweep" in line


def test_reproduce_delay_sweep_quick(tmp_path):
    """The quick study: every protocol at the base point, at 30 s latency and at 30 % burst
    loss, two seeds each; one factor moved at a time, and the channel shows where it moved."""
    out = tmp_path / "rep"
    r = _cli(
        "reproduce",
        "delay-sweep",
        "--quick",
        "--jobs",
        "2",
        "--out",
        str(out),
        "-q",
        *_sets(*SHORT),
    )
    assert r.exit_code == 0, r.stderr
    assert r.stdout.split() == ["results:", str(out)]
    table = pd.read_csv(out / "delay-sweep.csv")
    assert list(table["protocol"].unique()) == ["centralized", "boundary", "value-table", "admm"]
    assert set(zip(table["factor"], table["level"], strict=True)) == {
        ("base", "base"),
        ("latency", "30 s"),
        ("loss", "30 % bursts"),
    }
    assert len(table) == 12 and (table["runs_ok"] == 2).all() and table["error"].isna().all()
    runs = pd.read_csv(out / "delay-sweep-runs.csv")
    assert len(runs) == 24 and runs["seed"].nunique() == 2
    for protocol, g in table.groupby("protocol"):
        at = g.set_index("level")
        assert at.loc["30 s", "messages_late"] > at.loc["base", "messages_late"], protocol
        assert (
            at.loc["30 s", "mean_age_of_information_s"]
            > at.loc["base", "mean_age_of_information_s"]
        )
        assert at.loc["30 % bursts", "messages_lost"] > at.loc["base", "messages_lost"], protocol
        assert (g["voltage_violation_bus_hours_min"] <= g["voltage_violation_bus_hours"]).all()
        assert (g["voltage_violation_bus_hours"] <= g["voltage_violation_bus_hours_max"]).all()
        residual = g["primal_residual_vm_pu"]
        assert residual.isna().all() if protocol == "centralized" else residual.notna().all()
    meta = json.loads((out / "reproduce.json").read_text())
    assert meta["study"] == "delay-sweep" and meta["quick"] is True
    assert meta["overrides"][-len(SHORT) :] == SHORT  # the user's --set comes last and wins
    assert meta["window_h"] == [18, 19] and len(meta["seeds"]) == 2  # --quick: 18:00, 1 h set
    assert _is_png(out / "figures" / "delay-sweep.png")
    assert "figures/delay-sweep.png" in meta["figures"]


def test_disconnected_partition_row(tmp_path):
    """K-medoids in 10 clusters on ieee123 cuts a cluster in two; the runner refuses it and the
    study reports it as not controllable (the partition is never repaired)."""
    from clustersim.studies.reproduce import DISCONNECTED, run_status

    job = Job(
        label="kmedoids",
        scenario="ieee123-ev-clustered",
        overrides=(
            *SHORT,
            "partition.method=kmedoids",
            "partition.clusters=10",
            "partition.min_size=1",
            "partition.max_size=123",
        ),
        seed=None,
        out_dir=tmp_path / "runs" / "kmedoids",
    )
    (o,) = run_jobs([job])
    assert not o.ok and o.error_type == "ScenarioError"
    part = json.loads((job.out_dir / "partition.json").read_text())
    assert part["constraints"]["connected"] is False
    assert run_status(o, clustered=True) == DISCONNECTED
    assert run_status(o, clustered=False) == o.error


@pytest.mark.slow
def test_reproduce_cluster_voltage_control_quick(tmp_path):
    out = tmp_path / "rep"
    r = _cli("reproduce", "cluster-voltage-control", "--quick", "--out", str(out), *_sets(*SHORT))
    assert r.exit_code == 0, r.stderr
    table = pd.read_csv(out / "cluster-voltage-control.csv")
    assert list(table["paper_scenario"]) == [1, 2, 3, 4, 5]
    assert list(table["mode"]) == [
        "none",
        "centralized",
        "active-only",
        "reactive-only",
        "clustered",
    ]
    assert table["error"].isna().all()
    # --quick sits in the evening peak, where the modes differ (at midnight all showed one state)
    assert table["max_abs_voltage_deviation_pu"].nunique() > 1
    none = table.iloc[0]
    # the reactive levers reduce the mean deviation the uncontrolled feeder has
    for i in (1, 3, 4):
        assert (
            table.iloc[i]["mean_abs_voltage_deviation_pu"] < none["mean_abs_voltage_deviation_pu"]
        )
    md = (out / "cluster-voltage-control.md").read_text()
    assert "voltage band p.u." in md and "ieee51-ga-reactive" in md
    for name in ("voltage_worst_bus.png", "max_deviation_per_bus.png", "losses.png"):
        assert _is_png(out / "figures" / name)
    meta = json.loads((out / "reproduce.json").read_text())
    assert meta["scenarios"] == [
        f"ieee51-ga-{s}" for s in ("none", "centralized", "active", "reactive", "clustered")
    ]


@pytest.mark.slow
def test_reproduce_ev_ec_hi_quick(tmp_path):
    out = tmp_path / "rep"
    r = _cli("reproduce", "ev-ec-hi", "--quick", "--out", str(out), *_sets(*SHORT))
    assert r.exit_code == 0, r.stderr
    table = pd.read_csv(out / "ev-ec-hi.csv", dtype={"node": str})
    assert list(table["method"]) == [
        "no control",
        "centralized",
        "HI",
        "K-means",
        "K-medoids",
        "spectral",
    ]
    assert (table["case"] == "ieee33").all()  # --quick: ieee33 only
    # the node is the one whose voltage varies most without control
    ts = pd.read_parquet(out / "runs" / "ieee33-none" / "timeseries.parquet")
    std = ts[[c for c in ts.columns if c.startswith("vm_pu.")]].std()
    node = str(std.idxmax()).split(".", 1)[1]
    assert (table["node"] == node).all()
    for row in table.itertuples():
        assert row.status == "ok", row.status
        ts = pd.read_parquet(out / row.run_dir / "timeseries.parquet")
        dev = (ts[f"vm_pu.{node}"] - 1).abs()
        assert row.max_abs_voltage_deviation_at_node_pu == pytest.approx(dev.max())
        assert row.mean_abs_voltage_deviation_at_node_pu == pytest.approx(dev.mean())
    controlled = table[table["method"] != "no control"]
    assert (controlled["control_wall_time_s"] > 0).all()
    clustered = controlled[controlled["method"] != "centralized"]
    assert (clustered["control_critical_path_s"] <= clustered["control_wall_time_s"]).all()
    assert _is_png(out / "figures" / f"ev-ec-hi_ieee33_node{node}.png")
    assert _is_png(out / "figures" / "ev-ec-hi_control_time.png")
    meta = json.loads((out / "reproduce.json").read_text())
    assert meta["most_fluctuating_node"] == {"ieee33": node}
