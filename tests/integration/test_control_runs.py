"""Control modes end to end through the runner: results files, determinism, every built-in
scenario, and (slow) the voltage improvement of each optimizing mode over no control."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from clustersim.results.tables import WALL_CLOCK_KEYS
from clustersim.runner import run_scenario
from clustersim.scenario import DEFAULT_SCENARIO, builtin_scenarios, load_scenario

QUICK = [
    "run.plant_step_s=300",
    "control.pop_size=12",
    "control.generations=4",
]
CONTROL_SUMMARY_KEYS = {
    "control_wall_time_s",
    "control_critical_path_s",
    "evaluations",
    "worst_bus",
    "max_abs_voltage_deviation_at_worst_bus_pu",
    "switching_operations",
    "setpoints_rejected",
}


@pytest.fixture(scope="module")
def clustered_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctl")
    sc = load_scenario("ieee33-ev-clustered", overrides=[*QUICK, "run.duration_h=1"])
    return [run_scenario(sc, root / f"r{i}") for i in range(2)]


def test_default_scenario_is_ieee33_clustered():
    assert DEFAULT_SCENARIO == "ieee33-ev-clustered"
    sc = load_scenario()
    assert sc.control.mode == "clustered" and sc.case.name == "ieee33"


def test_clustered_results_folder(clustered_runs):
    res = clustered_runs[0]
    out = res.out_dir
    names = {p.name for p in out.iterdir()}
    assert {"control.parquet", "summary.json", "timeseries.parquet", "partition.json"} <= names
    summary = json.loads((out / "summary.json").read_text())
    assert CONTROL_SUMMARY_KEYS <= set(summary)
    assert summary["controllers"] == 5 and summary["setpoints_rejected"] == 0
    ctl = pd.read_parquet(out / "control.parquet")
    assert len(ctl) == 4 * 5  # 4 control intervals in 1 h × 5 clusters
    assert set(ctl.controller) == {f"C{i}" for i in range(1, 6)}
    assert summary["evaluations"] == int(ctl.evaluations.sum()) > 0
    assert ctl.generations.max() <= 4
    for sp in ctl.setpoints:
        assert isinstance(json.loads(sp), dict)
    # the worst bus is the bus of the largest deviation in the time series
    ts = pd.read_parquet(out / "timeseries.parquet")
    vm = ts.filter(like="vm_pu.")
    dev = (vm - 1).abs().max()
    assert summary["worst_bus"] == dev.idxmax().removeprefix("vm_pu.")
    assert summary["max_abs_voltage_deviation_at_worst_bus_pu"] == pytest.approx(dev.max())
    figs = {p.name for p in (out / "figures").iterdir()}
    assert any(f.startswith("pareto_C") for f in figs)
    for f in figs:
        assert (out / "figures" / f).read_bytes()[:4] == b"\x89PNG"


def test_same_seed_same_results(clustered_runs):
    a, b = (json.loads((r.out_dir / "summary.json").read_text()) for r in clustered_runs)
    assert a["wall_clock_keys"] == list(WALL_CLOCK_KEYS)
    for k in WALL_CLOCK_KEYS:
        a.pop(k), b.pop(k)
    assert a == b
    ta, tb = (pd.read_parquet(r.out_dir / "timeseries.parquet") for r in clustered_runs)
    pd.testing.assert_frame_equal(ta, tb)
    for table, wall in a["wall_clock_columns"].items():  # these tables, minus their wall columns
        ta, tb = (pd.read_parquet(r.out_dir / table).drop(columns=wall) for r in clustered_runs)
        pd.testing.assert_frame_equal(ta, tb)


def test_other_seed_other_decisions(clustered_runs, tmp_path):
    sc = load_scenario("ieee33-ev-clustered", overrides=[*QUICK, "run.duration_h=1"], seed=2)
    other = run_scenario(sc, tmp_path / "s2")
    a = pd.read_parquet(clustered_runs[0].out_dir / "control.parquet")
    b = pd.read_parquet(other.out_dir / "control.parquet")
    assert not a.setpoints.equals(b.setpoints)


# the case1197 scenarios run for an hour in tests/integration/test_golden.py (slow): a run on
# the 1,197-bus case takes minutes, its 30-cluster partition alone about one
EVERY_BUILTIN = [
    name for name in builtin_scenarios() if load_scenario(name).case.name != "case1197"
]


@pytest.mark.parametrize("name", EVERY_BUILTIN)
def test_every_builtin_scenario_runs(name, tmp_path):
    sc = load_scenario(name, overrides=[*QUICK, "run.duration_h=0.5"])
    res = run_scenario(sc, tmp_path / name)
    s = res.summary
    assert s["steps"] == 6 and s["powerflow_failures"] == 0 and s["setpoints_rejected"] == 0
    if sc.control.mode in ("none",):
        assert not (res.out_dir / "control.parquet").exists()
    elif sc.control.mode != "local":
        ctl = pd.read_parquet(res.out_dir / "control.parquet")
        assert len(ctl) == 2 * s["controllers"]


def _day(name, tmp_path, extra=()):
    sc = load_scenario(
        name,
        overrides=[
            "run.plant_step_s=300",
            "control.pop_size=16",
            "control.generations=12",
            "control.round_generations=2",
            *extra,
        ],
    )
    return run_scenario(sc, tmp_path / name).summary


@pytest.mark.slow
@pytest.mark.parametrize("family", ["ieee33-ev", "ieee51-ga"])
def test_optimizing_modes_reduce_violations(family, tmp_path):
    """Over a full day, centralized and clustered control each cut the voltage-violation
    bus-hours of no control (by more than half) without a single rejected setpoint."""
    none = _day(f"{family}-none", tmp_path)
    assert none["voltage_violation_bus_hours"] > 50  # the feeders are stressed at the peak
    for mode in ("centralized", "clustered"):
        s = _day(f"{family}-{mode}", tmp_path)
        print(family, mode, s["voltage_violation_bus_hours"], none["voltage_violation_bus_hours"])
        assert s["voltage_violation_bus_hours"] < 0.5 * none["voltage_violation_bus_hours"]
        assert s["max_abs_voltage_deviation_pu"] < none["max_abs_voltage_deviation_pu"]
        assert s["setpoints_rejected"] == 0 and s["powerflow_failures"] == 0
