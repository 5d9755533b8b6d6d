"""The voltage and loss KPIs of ``summary.json`` recomputed from ``timeseries.parquet`` and the
resolved ``scenario.toml`` of the same results folder.

Definitions (clustersim.sim.kpi): dt is the plant step in hours, sums run over converged steps
and energized buses (a bus whose voltage is missing at every converged step is not energized);
``voltage_violation_bus_hours`` = Σ_t Σ_i [V_it < vm_min or V_it > vm_max] · dt,
``max_abs_voltage_deviation_pu`` = max |V − 1|, ``energy_losses_mwh`` = Σ_t P_loss,t · dt.
"""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

# ieee33 without control for 8 h: the feeder end falls below 0.95 p.u. from about 05:45 on, so
# the window holds steps with and without violations. A 5 min plant step (not the default 1 min)
# makes dt visible; the second run narrows the band to check that the scenario's band is used.
RUNS = {
    "default band": [],
    "narrow band": ["--set", "run.vm_min_pu=0.955", "--set", "run.vm_max_pu=1.04"],
}


@pytest.fixture(scope="module", params=list(RUNS))
def results(request, tmp_path_factory):
    """(summary, timeseries, resolved scenario) of one `clustersim run ieee33-ev-none`."""
    from clustersim.cli import app

    out = tmp_path_factory.mktemp("kpi") / "run"
    args = [
        "run",
        "ieee33-ev-none",
        "--set",
        "run.duration_h=8",
        "--set",
        "run.plant_step_s=300",
        *RUNS[request.param],
        "--out",
        str(out),
        "-q",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, (res.output[-3000:], res.exception)
    summary = json.loads((out / "summary.json").read_text())
    ts = pd.read_parquet(out / "timeseries.parquet")
    scenario = tomllib.loads((out / "scenario.toml").read_text())
    return summary, ts, scenario


def _tables(ts: pd.DataFrame, scenario: dict):
    """Converged-step voltages of energized buses, losses, dt (h) and the band."""
    step_s = scenario["run"]["plant_step_s"]
    assert np.all(np.diff(ts.time_s.to_numpy()) == step_s)
    ok = ts.converged.to_numpy(dtype=bool)
    vm = ts.loc[ok, [c for c in ts.columns if c.startswith("vm_pu.")]]
    vm = vm.loc[:, vm.notna().any(axis=0)]
    return vm.to_numpy(dtype=float), ts.p_loss_mw.to_numpy(dtype=float)[ok], step_s / 3600.0


def test_run_has_violations_to_count(results):
    """The chosen window has converged steps with and without voltage violations."""
    summary, ts, scenario = results
    vm, _, _ = _tables(ts, scenario)
    lo, hi = scenario["run"]["vm_min_pu"], scenario["run"]["vm_max_pu"]
    assert vm.shape == (len(ts), 33) and ts.converged.all()
    per_step = ((vm < lo) | (vm > hi)).sum(axis=1)
    assert (per_step > 0).any() and (per_step == 0).any()
    if (lo, hi) != (0.95, 1.05):  # the narrowed band counts other bus-steps than the default
        assert per_step.sum() != ((vm < 0.95) | (vm > 1.05)).sum()
    assert summary["plant_step_s"] == scenario["run"]["plant_step_s"]


def test_violation_bus_hours_from_the_timeseries(results):
    """voltage_violation_bus_hours = (bus-steps outside the scenario's band) · plant step in h."""
    summary, ts, scenario = results
    vm, _, dt_h = _tables(ts, scenario)
    lo, hi = scenario["run"]["vm_min_pu"], scenario["run"]["vm_max_pu"]
    count = sum(1 for v in vm.ravel() if v < lo or v > hi)
    assert count > 0
    assert summary["voltage_violation_bus_hours"] == pytest.approx(count * dt_h, rel=0, abs=1e-9)


def test_max_abs_voltage_deviation_from_the_timeseries(results):
    """max_abs_voltage_deviation_pu = the largest |V − 1| over converged steps and buses."""
    summary, ts, scenario = results
    vm, _, _ = _tables(ts, scenario)
    want = max(abs(v - 1.0) for v in vm.ravel() if not np.isnan(v))
    assert summary["max_abs_voltage_deviation_pu"] == pytest.approx(want, rel=0, abs=1e-9)


def test_energy_losses_from_the_timeseries(results):
    """energy_losses_mwh = Σ loss power over converged steps · plant step in h."""
    summary, ts, scenario = results
    _, p_loss, dt_h = _tables(ts, scenario)
    want = sum(float(p) for p in p_loss if not np.isnan(p)) * dt_h
    assert want > 0
    assert summary["energy_losses_mwh"] == pytest.approx(want, rel=0, abs=1e-9)
