"""`clustersim run`: the results folder, its files, determinism, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib

import numpy as np
import pandas as pd
import pytest

from clustersim.errors import ScenarioError
from clustersim.runner import run_scenario
from clustersim.scenario import load_scenario

SUMMARY_KEYS = {
    "case",
    "mode",
    "seed",
    "duration_h",
    "plant_step_s",
    "max_abs_voltage_deviation_pu",
    "mean_abs_voltage_deviation_pu",
    "min_vm_pu",
    "max_vm_pu",
    "voltage_violation_bus_hours",
    "energy_losses_mwh",
    "energy_cost",
    "powerflow_failures",
    "wall_time_s",
}
CLI = [sys.executable, "-m", "clustersim.cli"]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    sc = load_scenario("ieee33-ev-none", overrides=["run.duration_h=1"])
    return run_scenario(sc, out)


def test_results_folder(short_run):
    out = short_run.out_dir
    assert {p.name for p in out.iterdir()} == {
        "scenario.toml",
        "summary.json",
        "timeseries.parquet",
        "partition.json",
        "figures",
        "report.html",
        "complete.json",
    }
    marker = json.loads((out / "complete.json").read_text())
    assert marker["complete"] is True and "reason" not in marker
    assert {"summary.json", "timeseries.parquet", "figures/voltage_heatmap.png"} <= set(
        marker["files"]
    )
    assert {p.name for p in (out / "figures").iterdir()} == {
        "voltage_heatmap.png",
        "voltage_envelope.png",
        "devices.png",
        "partition.png",
        "kpi_bars.png",
    }
    assert not list(out.rglob("*.part"))
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["case"] == "ieee33" and summary["mode"] == "none" and summary["seed"] == 1
    assert summary["steps"] == 60 and summary["powerflow_failures"] == 0
    ts = pd.read_parquet(out / "timeseries.parquet")
    assert len(ts) == 60 and ts.converged.all()
    vm = ts.filter(like="vm_pu.").to_numpy()
    assert vm.shape == (60, 33)
    # summary is traceable to the table
    assert summary["min_vm_pu"] == pytest.approx(vm.min())
    assert summary["max_abs_voltage_deviation_pu"] == pytest.approx(np.abs(vm - 1).max())
    assert summary["energy_losses_mwh"] == pytest.approx(ts.p_loss_mw.sum() / 60)
    assert summary["energy_cost"] == pytest.approx((ts.p_slack_mw * ts.price_per_mwh).sum() / 60)
    png = (out / "figures" / "voltage_heatmap.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_every_file_of_a_run_has_the_same_permissions(short_run):
    """Tables, figures, the report and the resolved scenario are all written 0644 (readable by a
    broker or web server running as another user), none left 0600 by its temporary file."""
    modes = {
        p.relative_to(short_run.out_dir).as_posix(): oct(p.stat().st_mode & 0o777)
        for p in short_run.out_dir.rglob("*")
        if p.is_file()
    }
    assert modes and set(modes.values()) == {oct(0o644)}, modes


def test_resolved_scenario_reruns_identically(short_run, tmp_path):
    text = (short_run.out_dir / "scenario.toml").read_text()
    doc = tomllib.loads(text)
    assert doc["run"]["seed"] == 1 and doc["comm"]["loss"]["p"] == 0.01
    assert doc["provenance"]["pandapower"] and doc["provenance"]["clustersim"]
    again = run_scenario(
        load_scenario(str(short_run.out_dir / "scenario.toml")), tmp_path / "again"
    )
    a = pd.read_parquet(short_run.out_dir / "timeseries.parquet")
    b = pd.read_parquet(again.out_dir / "timeseries.parquet")
    pd.testing.assert_frame_equal(a, b)
    drop = set(short_run.summary["wall_clock_keys"])
    assert {k: v for k, v in again.summary.items() if k not in drop} == {
        k: v for k, v in short_run.summary.items() if k not in drop
    }


def test_other_seed_other_numbers(short_run, tmp_path):
    other = run_scenario(
        load_scenario("ieee33-ev-none", overrides=["run.duration_h=1"], seed=2), tmp_path / "o"
    )
    assert other.summary["energy_losses_mwh"] != short_run.summary["energy_losses_mwh"]


def test_unknown_mode_is_refused():
    with pytest.raises(ScenarioError, match=r"control\.mode"):
        load_scenario("ieee33-ev-none", overrides=["control.mode=fuzzy-logic"])


def test_cluster_mode_without_a_partition_is_refused(tmp_path):
    sc = load_scenario(
        "ieee33-ev-clustered",
        overrides=["partition.min_size=10", "partition.max_size=10", "run.duration_h=0.5"],
    )
    with pytest.raises(ScenarioError, match=r"partition"):
        run_scenario(sc, tmp_path / "x")


def test_partition_table_selects_method_and_parameters(short_run, tmp_path):
    doc = json.loads((short_run.out_dir / "partition.json").read_text())
    assert doc["method"] == "hi" and doc["k"] == 5  # the [partition] defaults
    assert all(3 <= c["size"] <= 10 for c in doc["clusters"])
    assert short_run.summary["partition"]["method"] == "hi"
    assert short_run.summary["partition"]["connected"] is True
    sc = load_scenario(
        "ieee33-ev-none",
        overrides=[
            "run.duration_h=0.1",
            "partition.method=kmedoids",
            "partition.clusters=3",
            "partition.max_size=20",
        ],
    )
    res = run_scenario(sc, tmp_path / "k")
    doc = json.loads((tmp_path / "k" / "partition.json").read_text())
    assert doc["method"] == "kmedoids" and doc["k"] == 3
    # an infeasible [partition] does not stop a run that does not use it (mode none) ...
    sc = load_scenario("ieee33-ev-none", overrides=["run.duration_h=0.1", "partition.clusters=2"])
    res = run_scenario(sc, tmp_path / "inf")
    assert "infeasible size bounds" in res.summary["partition"]["error"]
    assert not (tmp_path / "inf" / "partition.json").exists()
    assert res.summary["steps"] == 6


def test_horizon_shorter_than_a_step_is_refused(tmp_path):
    sc = load_scenario("ieee33-ev-none", overrides=["run.duration_h=0.001"])
    with pytest.raises(ScenarioError, match="shorter than one plant step"):
        run_scenario(sc, tmp_path / "x")


def test_a_run_from_start_h_is_the_same_hours_of_a_run_from_midnight(tmp_path):
    """``run.start_h`` starts the plant at that hour of the profiles' first day: without control
    (no state carried between steps but the profiles), 17:00-18:00 of a run from 17:00 equals
    those hours of a run from midnight, times recorded as seconds since midnight; to the power
    flow's tolerance, since Newton starts from the previous step's solution in the day's run and
    from a flat start in the other."""
    over = ["run.plant_step_s=300"]
    late = run_scenario(
        load_scenario("ieee33-ev-none", overrides=[*over, "run.start_h=17", "run.duration_h=1"]),
        tmp_path / "late",
    )
    day = run_scenario(
        load_scenario("ieee33-ev-none", overrides=[*over, "run.duration_h=18"]), tmp_path / "day"
    )
    assert late.summary["start_h"] == 17 and late.summary["steps"] == 12
    a = pd.read_parquet(late.out_dir / "timeseries.parquet")
    b = pd.read_parquet(day.out_dir / "timeseries.parquet")
    assert a.time_s.tolist() == list(range(17 * 3600, 18 * 3600, 300))
    b = b[b.time_s >= 17 * 3600].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6, atol=1e-9)


def test_agents_of_a_late_start_decide_on_the_evening(tmp_path):
    """Cluster agents of a run from 17:00 decide at the evening peak: their first interval's
    measurement is from 17:00 and their predicted voltages sit below those of 00:00."""
    over = ["run.duration_h=0.25", "comm.transport=memory", "control.coordination=none"]
    runs = {
        h: run_scenario(
            load_scenario("ieee33-ev-clustered", overrides=[*over, f"run.start_h={h}"]),
            tmp_path / f"h{h}",
        )
        for h in (0, 17)
    }
    ts = {h: pd.read_parquet(r.out_dir / "timeseries.parquet") for h, r in runs.items()}
    ctl = {h: pd.read_parquet(r.out_dir / "control.parquet") for h, r in runs.items()}
    assert ts[17].time_s.iloc[0] == 17 * 3600 and set(ctl[17].interval) == {0}
    assert ctl[17].vm_pred_min_pu.min() < ctl[0].vm_pred_min_pu.min() - 0.01


def test_start_h_off_the_plant_step_is_refused():
    with pytest.raises(ScenarioError, match="multiple of the plant step"):
        load_scenario("ieee33-ev-none", overrides=["run.start_h=17.01"])


def test_preset_for_other_case_is_refused(tmp_path):
    sc = load_scenario("ieee33-ev-none", overrides=["case.name=ieee69", "run.duration_h=0.1"])
    with pytest.raises(ScenarioError, match="written for case 'ieee33'"):
        run_scenario(sc, tmp_path / "x")


def _cli(*args, cwd=None):
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def test_cli_bad_scenario_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[case]\nname = "ieee33"\n[run]\nduraton_h = 2\n')
    r = _cli("run", str(bad), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert str(bad) in lines[0] and "run.duraton_h" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()
    r = _cli("run", str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and "missing.toml" in r.stderr and "Traceback" not in r.stderr
    r = _cli("run", "ieee33-ev-none", "--set", "run.duration_h=abc")
    assert r.returncode == 2 and "run.duration_h" in r.stderr


def test_cli_run_prints_kpis_and_path(tmp_path):
    r = _cli(
        "run",
        "ieee51-ga-none",
        "--set",
        "run.duration_h=0.25",
        "--seed",
        "4",
        "--out",
        str(tmp_path / "o"),
    )
    assert r.returncode == 0, r.stderr
    assert "KPIs" in r.stdout and "losses MWh" in r.stdout and "violation bus·h" in r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) <= 80, r.stdout
    assert str(tmp_path / "o") in r.stdout.replace("\n", "")
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["case"] == "ieee51" and summary["seed"] == 4 and summary["steps"] == 15
    quiet = _cli(
        "run", "ieee51-ga-none", "--set", "run.duration_h=0.25", "-q", "--out", str(tmp_path / "q")
    )
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.split() == ["results:", str(tmp_path / "q")]  # the path only


def test_cli_cases_and_case_info(builtin_cases, case_info_keys):
    r = _cli("cases")
    assert r.returncode == 0
    for name in builtin_cases:
        assert name in r.stdout
    r = _cli("case-info", "ieee33", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert set(info) == case_info_keys
    assert info["n_buses"] == 33 and info["radial"] is True
    assert info["base_losses_kw"] == pytest.approx(202.7, abs=0.5)
    assert info["min_vm_pu"] == pytest.approx(0.9131, abs=0.0005)
    r = _cli("case-info", "nosuchcase")
    assert r.returncode == 2 and "nosuchcase" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ieee33-ev-none", "ieee51-ga-none"])
def test_builtin_scenarios_full_day(name, tmp_path):
    res = run_scenario(load_scenario(name), tmp_path / name)
    s = res.summary
    assert s["steps"] == 1440 and s["powerflow_failures"] == 0
    assert 0.85 < s["min_vm_pu"] < 1.0 and s["energy_losses_mwh"] > 0


def test_cli_check_reports_without_running(tmp_path):
    """``check`` prints the settings, devices, partition and each cluster's devices, writes
    nothing, and exits 0."""
    r = _cli("check", "ieee33-ev-clustered", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "mode clustered (value-table)" in r.stdout and "partition: method hi, k 5" in r.stdout
    for name in ("C1", "C2", "C3", "C4", "C5"):
        assert name in r.stdout
    assert "oltc 1" in r.stdout and r.stdout.rstrip().endswith("would start")
    assert r.stderr == "" and list(tmp_path.iterdir()) == []


def test_cli_check_refuses_what_a_run_would_refuse(tmp_path):
    """Agents in processes on the in-memory transport: refused in one line at validation,
    naming the key (before, a run found it only after partitioning, leaving a folder)."""
    sets = ["--set", "run.agents=processes", "--set", "comm.transport=memory"]
    r = _cli("check", "ieee33-ev-clustered", *sets)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "run.agents" in lines[0] and 'needs transport = "mqtt"' in lines[0]
    r = _cli("run", "ieee33-ev-clustered", *sets, "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and not (tmp_path / "o").exists()


def test_a_mode_without_devices_to_move_warns_loudly(tmp_path):
    """A cluster mode on a scenario without devices: ``check`` and ``run`` warn (the run also
    in summary.json); with one SVC, the clusters without a device are named."""
    sets = ["--set", "resources.preset=", "--set", "run.duration_h=0.25"]
    r = _cli("check", "ieee33-ev-clustered", *sets)
    assert r.returncode == 0 and "warning: mode 'clustered' has no device it may move" in r.stderr
    r = _cli("run", "ieee33-ev-clustered", *sets, "-q", "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    assert "has no device it may move" in r.stderr
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert len(summary["warnings"]) == 1 and "no device" in summary["warnings"][0]
    svc = 'resources.svc=[{name="S1", bus="18", q_min_mvar=-0.3, q_max_mvar=0.3}]'
    r = _cli("check", "ieee33-ev-clustered", *sets, "--set", svc)
    assert r.returncode == 0 and "have no device mode 'clustered' may move" in r.stderr
    assert "C1" in r.stderr.split("cluster(s)")[1]


def test_cli_init_writes_a_commented_scenario_that_validates(tmp_path):
    r = _cli("init", "mine.toml", "--case", "ieee51", "--mode", "centralized", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "mine.toml").read_text()
    assert text.startswith("# A clustersim scenario") and "# number of clusters" in text
    sc = load_scenario(str(tmp_path / "mine.toml"))
    assert (sc.name, sc.case.name, sc.resources.preset) == ("mine", "ieee51", "ieee51-ga")
    assert sc.control.mode == "centralized"
    assert _cli("check", "mine.toml", cwd=tmp_path).returncode == 0
    again = _cli("init", "mine.toml", cwd=tmp_path)
    assert again.returncode == 2 and "exists (--force replaces it)" in again.stderr
    assert (tmp_path / "mine.toml").read_text() == text  # untouched
    r = _cli("init", "plain.toml", "--case", "ieee69", cwd=tmp_path)  # a case without a preset
    assert r.returncode == 0 and load_scenario(str(tmp_path / "plain.toml")).resources.preset == ""
    bad = _cli("init", "bad.toml", "--case", "nosuch", cwd=tmp_path)
    assert bad.returncode == 2 and not (tmp_path / "bad.toml").exists()
