"""Local control: Volt-VAR curve, SVC mapping, LDC tap control with delay and budget, and the
controller in the loop of the ieee33-ev plant."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pandapower as pp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from clustersim.agents.local import (
    LocalController,
    LocalSettings,
    compensated_vm_pu,
    design_ldc_impedance_pu,
    volt_var_frac,
    volt_var_q_mvar,
)
from clustersim.errors import ScenarioError
from clustersim.sim import cases, kpi, profiles
from clustersim.sim.plant import Measurement, Plant
from clustersim.sim.resources import PV, SVC, LineRegulator, ResourceSet, Wind, load_preset

DEFAULT = LocalSettings()
PLAIN = LocalSettings(ldc_r_pu=0.0, ldc_x_pu=0.0)  # no compensation: V_c = V_reg


@pytest.fixture(scope="module")
def prof():
    return profiles.synthetic(1, seed=3)


@pytest.fixture(scope="module")
def plant33(prof):
    """An ieee33-ev plant after one converged step (only used to build measurements and to check
    setpoints with ``set_setpoint``; never stepped again)."""
    plant = Plant(
        cases.load_case("ieee33"), load_preset("ieee33-ev"), prof, plant_step_s=60, n_steps=2
    )
    assert plant.step()
    return plant


def _meas(plant: Plant, *, step: int, vm_slack: float | None = None, **changes) -> Measurement:
    """The plant's measurement with ``step``/``time_s`` set (60 s steps) and fields replaced."""
    m = plant.measure()
    assert m is not None
    vm = changes.pop("vm_pu", m.vm_pu).copy()
    if vm_slack is not None:
        vm[0] = vm_slack
    return dataclasses.replace(m, step=step, time_s=60.0 * step, vm_pu=vm, **changes)


def _with_tap(m: Measurement, tap: float) -> dict[str, dict[str, float]]:
    sp = {k: dict(v) for k, v in m.setpoints.items()}
    sp["OLTC"]["tap_pos"] = tap
    return sp


# ------------------------------------------------------------------------------ Volt-VAR curve
def test_curve_at_breakpoints_between_and_beyond():
    f = volt_var_frac
    assert f(0.92, DEFAULT) == pytest.approx(0.44)
    assert f(0.98, DEFAULT) == pytest.approx(0.0)
    assert f(1.00, DEFAULT) == pytest.approx(0.0)
    assert f(1.02, DEFAULT) == pytest.approx(0.0)
    assert f(1.08, DEFAULT) == pytest.approx(-0.44)
    assert f(0.95, DEFAULT) == pytest.approx(0.22)  # half way V1..V2
    assert f(0.935, DEFAULT) == pytest.approx(0.33)
    assert f(1.05, DEFAULT) == pytest.approx(-0.22)  # half way V3..V4
    assert f(0.80, DEFAULT) == pytest.approx(0.44)  # saturated
    assert f(1.20, DEFAULT) == pytest.approx(-0.44)
    arr = f(np.array([0.9, 1.0, 1.1, np.nan]), DEFAULT)
    np.testing.assert_allclose(arr[:3], [0.44, 0.0, -0.44])
    assert math.isnan(arr[3])
    # a curve without dead band (V2 == V3) is allowed
    no_band = LocalSettings(vv_v2_pu=1.0, vv_v3_pu=1.0)
    assert f(0.96, no_band) == pytest.approx(0.44 * 0.5)
    assert f(1.04, no_band) == pytest.approx(-0.44 * 0.5)


def test_inverter_rating_scales_the_curve():
    pv = PV(name="pv", bus="2", p_mw=0.1)  # s_rated 0.11 MVA
    wind = Wind(name="wt", bus="2", p_mw=0.2, s_mva=0.25)
    assert volt_var_q_mvar(pv, 0.90, DEFAULT) == pytest.approx(0.44 * 0.11)
    assert volt_var_q_mvar(pv, 0.95, DEFAULT) == pytest.approx(0.22 * 0.11)
    assert volt_var_q_mvar(pv, 1.00, DEFAULT) == 0.0
    assert volt_var_q_mvar(wind, 1.08, DEFAULT) == pytest.approx(-0.44 * 0.25)
    full = LocalSettings(vv_q1_frac=1.0, vv_q4_frac=-1.0)
    assert volt_var_q_mvar(wind, 1.3, full) == pytest.approx(-0.25)  # at most the rating


def test_svc_curve_mapped_onto_its_range():
    sym = SVC(name="s", bus="2", q_min_mvar=-0.1, q_max_mvar=0.1)
    assert volt_var_q_mvar(sym, 0.92, DEFAULT) == pytest.approx(0.1)
    assert volt_var_q_mvar(sym, 0.85, DEFAULT) == pytest.approx(0.1)  # saturated
    assert volt_var_q_mvar(sym, 0.95, DEFAULT) == pytest.approx(0.05)
    assert volt_var_q_mvar(sym, 1.01, DEFAULT) == 0.0
    assert volt_var_q_mvar(sym, 1.05, DEFAULT) == pytest.approx(-0.05)
    assert volt_var_q_mvar(sym, 1.10, DEFAULT) == pytest.approx(-0.1)
    asym = SVC(name="a", bus="2", q_min_mvar=-0.05, q_max_mvar=0.2)
    assert volt_var_q_mvar(asym, 0.95, DEFAULT) == pytest.approx(0.1)
    assert volt_var_q_mvar(asym, 1.05, DEFAULT) == pytest.approx(-0.025)
    inject_only = SVC(name="i", bus="2", q_min_mvar=0.02, q_max_mvar=0.2, q_init_mvar=0.02)
    assert volt_var_q_mvar(inject_only, 1.0, DEFAULT) == pytest.approx(0.02)  # nearest limit
    assert volt_var_q_mvar(inject_only, 1.1, DEFAULT) == pytest.approx(0.02)
    assert volt_var_q_mvar(inject_only, 0.9, DEFAULT) == pytest.approx(0.2)


@pytest.mark.parametrize(
    "bad",
    [
        {"vv_v1_pu": 0.99},  # V1 > V2
        {"vv_v3_pu": 0.97},  # V3 < V2
        {"vv_v4_pu": 1.02},  # V4 == V3
        {"vv_q1_frac": 1.2},
        {"vv_q4_frac": 0.1},
        {"ldc_bandwidth_pu": 0.0},
        {"ldc_r_pu": 0.1},  # X missing
        {"ldc_v_set_pu": 1.045},  # band above the limiter
        {"unknown_key": 1},
        {"ldc_r_pu": math.inf, "ldc_x_pu": 0.0},
        {"ldc_impedance_pu": {"OLTC": (math.nan, 0.1)}},
    ],
)
def test_settings_rejected(bad):
    with pytest.raises(ValidationError):
        LocalSettings(**bad)


# ----------------------------------------------------------------------- controller: inverters
def test_volt_var_setpoints_follow_bus_voltage(plant33):
    ctl = LocalController(plant33.net, plant33.resources, plant33.where, settings=PLAIN)
    m = plant33.measure()
    vm = np.full_like(m.vm_pu, 0.95)
    vm[0] = 1.0  # the source inside the tap band
    out = ctl.setpoints(_meas(plant33, step=5, vm_pu=vm))
    pv1 = plant33.devices["PV1"]
    assert out["PV1"]["q_mvar"] == pytest.approx(0.22 * pv1.s_rated_mva)
    assert out["SVC1"]["q_mvar"] == pytest.approx(0.05)
    assert {"CB1", "ESS1", "EC1:battery", "EV1"}.isdisjoint(out)  # left as they are
    # only changes are returned: with the curve value in force nothing is sent again
    sp = {k: dict(v) for k, v in m.setpoints.items()}
    for k, v in out.items():
        sp[k].update(v)
    assert ctl.setpoints(_meas(plant33, step=6, vm_pu=vm, setpoints=sp)) == {}


def test_volt_var_response_time_lags(plant33):
    slow = LocalSettings(ldc_r_pu=0.0, ldc_x_pu=0.0, vv_response_time_s=600.0)
    ctl = LocalController(
        plant33.net, plant33.resources, plant33.where, settings=slow, devices=["SVC1"]
    )
    vm = np.full_like(plant33.measure().vm_pu, 0.92)
    out = ctl.setpoints(_meas(plant33, step=5, vm_pu=vm))  # in force: 0 Mvar, target 0.1 Mvar
    alpha = 1.0 - 10.0 ** (-60.0 / 600.0)  # 90 % reached after the response time
    assert out == {"SVC1": {"q_mvar": pytest.approx(0.1 * alpha)}}


# --------------------------------------------------------------------- controller: tap changer
def test_compensated_voltage_formula():
    assert compensated_vm_pu(1.02, 0.3, 0.1, 0.0, 0.0) == 1.02
    assert compensated_vm_pu(1.02, 0.3, 0.1, 0.1, 0.2) == pytest.approx(1.02 - 0.05 / 1.02)


def test_tap_raised_after_delay_and_not_before(plant33):
    s = LocalSettings(ldc_r_pu=0.0, ldc_x_pu=0.0, ldc_delay_s=120.0)
    ctl = LocalController(
        plant33.net, plant33.resources, plant33.where, settings=s, devices=["OLTC"]
    )
    low = dict(vm_slack=0.975)  # below the band 0.99..1.01
    assert ctl.setpoints(_meas(plant33, step=10, **low)) == {}  # 60 s out of band
    assert ctl.setpoints(_meas(plant33, step=11, vm_slack=1.0)) == {}  # back in: timer reset
    assert ctl.setpoints(_meas(plant33, step=12, **low)) == {}
    assert ctl.setpoints(_meas(plant33, step=12, **low)) == {}  # repeated reading: no time added
    assert ctl.setpoints(_meas(plant33, step=13, **low)) == {"OLTC": {"tap_pos": 1.0}}
    # the new tap is in force; the timer restarts after each operation
    m14 = _meas(plant33, step=14, **low)
    sp = _with_tap(m14, 1.0)
    assert ctl.setpoints(dataclasses.replace(m14, setpoints=sp)) == {}
    m15 = _meas(plant33, step=15, **low)
    assert ctl.setpoints(dataclasses.replace(m15, setpoints=sp)) == {"OLTC": {"tap_pos": 2.0}}
    # too high: lowered after the delay
    high = dict(vm_slack=1.02)
    assert ctl.setpoints(_meas(plant33, step=16, **high)) == {}
    assert ctl.setpoints(_meas(plant33, step=17, **high)) == {"OLTC": {"tap_pos": -1.0}}
    # an older reading is ignored, whatever it says
    assert ctl.setpoints(_meas(plant33, step=3, vm_slack=0.9)) == {}


def test_repeated_reading_after_failed_step_repeats_the_same_decision(plant33):
    """After a failed power flow the plant rolls the queued setpoints back and measure() repeats
    the last converged reading: the same setpoints are sent again, never a second tap step."""
    s = LocalSettings(ldc_r_pu=0.0, ldc_x_pu=0.0, ldc_delay_s=60.0)
    ctl = LocalController(plant33.net, plant33.resources, plant33.where, settings=s)
    vm = np.full_like(plant33.measure().vm_pu, 0.95)
    vm[0] = 0.97
    m = _meas(plant33, step=8, vm_pu=vm)
    first = ctl.setpoints(m)
    assert first["OLTC"] == {"tap_pos": 1.0} and "PV1" in first and "SVC1" in first
    assert ctl.setpoints(m) == first


def test_line_drop_compensation_raises_tap_at_nominal_source(plant33):
    """Slack at 1.0 p.u. is inside the band, but the compensated (load-centre) voltage is not."""
    m = plant33.measure()
    p_pu, q_pu = m.p_slack_mw / plant33.net.sn_mva, m.q_slack_mvar / plant33.net.sn_mva
    s = LocalSettings(ldc_r_pu=0.15, ldc_x_pu=0.11, ldc_delay_s=60.0)
    assert compensated_vm_pu(1.0, p_pu, q_pu, 0.15, 0.11) < s.band_pu[0]
    ctl = LocalController(
        plant33.net, plant33.resources, plant33.where, settings=s, devices=["OLTC"]
    )
    assert ctl.setpoints(_meas(plant33, step=3, vm_slack=1.0)) == {"OLTC": {"tap_pos": 1.0}}
    plain = LocalController(
        plant33.net, plant33.resources, plant33.where, settings=PLAIN, devices=["OLTC"]
    )
    assert plain.setpoints(_meas(plant33, step=3, vm_slack=1.0)) == {}


def test_daily_budget_and_tap_limits_respected(plant33):
    s = LocalSettings(ldc_r_pu=0.0, ldc_x_pu=0.0, ldc_delay_s=0.0)
    oltc = plant33.devices["OLTC"]
    budget = oltc.max_operations_per_day
    base = plant33.measure()
    counts = dict(base.switching_today)

    def ctl():
        return LocalController(
            plant33.net, plant33.resources, plant33.where, settings=s, devices=["OLTC"]
        )

    spent = _meas(plant33, step=4, vm_slack=0.97, switching_today={**counts, "OLTC": budget})
    c = ctl()
    for k in range(4, 40):  # a long excursion does not change it
        assert c.setpoints(dataclasses.replace(spent, step=k, time_s=60.0 * k)) == {}
    one_left = _meas(plant33, step=4, vm_slack=0.97, switching_today={**counts, "OLTC": budget - 1})
    assert ctl().setpoints(one_left) == {"OLTC": {"tap_pos": 1.0}}
    unknown = {k: v for k, v in counts.items() if k != "OLTC"}
    assert ctl().setpoints(_meas(plant33, step=4, vm_slack=0.97, switching_today=unknown)) == {}
    at_max = _meas(plant33, step=4, vm_slack=0.97)
    at_max = dataclasses.replace(at_max, setpoints=_with_tap(at_max, oltc.tap_max))
    assert ctl().setpoints(at_max) == {}
    at_min = _meas(plant33, step=4, vm_slack=1.03)
    at_min = dataclasses.replace(at_min, setpoints=_with_tap(at_min, oltc.tap_min))
    assert ctl().setpoints(at_min) == {}


def test_voltage_limiter(plant33):
    """The regulated voltage is kept in [ldc_vm_min_pu, ldc_vm_max_pu] whatever V_c says."""
    s = LocalSettings(ldc_r_pu=0.5, ldc_x_pu=0.5, ldc_delay_s=0.0)
    ctl = LocalController(
        plant33.net, plant33.resources, plant33.where, settings=s, devices=["OLTC"]
    )
    # V_c far below the band, but one more step would take the source above 1.05
    assert ctl.setpoints(_meas(plant33, step=4, vm_slack=1.045)) == {}
    assert ctl.setpoints(_meas(plant33, step=5, vm_slack=1.035)) == {"OLTC": {"tap_pos": 1.0}}
    # source above the limit: lowered even though V_c is low
    assert ctl.setpoints(_meas(plant33, step=6, vm_slack=1.06)) == {"OLTC": {"tap_pos": -1.0}}


def test_nan_measurements_never_raise(plant33):
    ctl = LocalController(plant33.net, plant33.resources, plant33.where, settings=PLAIN)
    m = plant33.measure()
    nan = np.full_like(m.vm_pu, np.nan)
    assert ctl.setpoints(_meas(plant33, step=4, vm_pu=nan)) == {}
    assert ctl.setpoints(None) == {}
    partial = np.full_like(m.vm_pu, 0.95)
    partial[plant33.bus_labels.index("13")] = np.nan  # PV2's bus
    partial[0] = 0.97
    out = ctl.setpoints(_meas(plant33, step=5, vm_pu=partial, p_slack_mw=math.nan))
    assert "PV2" not in out and "OLTC" not in out and "PV1" in out
    short = ctl.setpoints(_meas(plant33, step=6, vm_pu=np.zeros(0)))  # malformed arrays
    assert short == {}


def test_devices_subset(plant33):
    ctl = LocalController(
        plant33.net, plant33.resources, plant33.where, devices=["PV1", "CB1", "EC1:battery"]
    )
    assert ctl.devices == ["PV1"]
    with pytest.raises(ScenarioError, match="NOPE"):
        LocalController(plant33.net, plant33.resources, plant33.where, devices=["PV1", "NOPE"])
    everything = LocalController(plant33.net, plant33.resources, plant33.where, settings=PLAIN)
    assert set(everything.devices) == {f"PV{i}" for i in range(1, 8)} | {
        "SVC1",
        "SVC2",
        "SVC3",
        "OLTC",
    }


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    vm=st.lists(st.one_of(st.floats(0.8, 1.2), st.just(math.nan)), min_size=33, max_size=33).map(
        np.array
    ),
    tap=st.integers(-5, 5),
    used=st.integers(0, 8),
    q1=st.floats(0.0, 1.0),
    q4=st.floats(-1.0, 0.0),
    lag_s=st.sampled_from([0.0, 5.0, 300.0]),
    rx=st.tuples(st.floats(-1.0, 1.0), st.floats(-1.0, 1.0)),
)
def test_setpoints_always_accepted_by_the_plant(plant33, vm, tap, used, q1, q4, lag_s, rx):
    s = LocalSettings(
        vv_q1_frac=q1,
        vv_q4_frac=q4,
        vv_response_time_s=lag_s,
        ldc_r_pu=rx[0],
        ldc_x_pu=rx[1],
        ldc_delay_s=0.0,
    )
    ctl = LocalController(plant33.net, plant33.resources, plant33.where, settings=s)
    m = _meas(plant33, step=7, vm_pu=vm)
    m = dataclasses.replace(
        m, setpoints=_with_tap(m, tap), switching_today={**m.switching_today, "OLTC": used}
    )
    out = ctl.setpoints(m)
    for dev, sp in out.items():
        plant33.set_setpoint(dev, **sp)  # raises MessageError outside the accepted range
    if "OLTC" in out:
        assert abs(out["OLTC"]["tap_pos"] - tap) == 1 and used < 8


# ---------------------------------------------------------------- LDC design and tap direction
def test_design_reproduces_target_voltage_and_leaves_net_alone(plant33):
    net = plant33.net
    before = net.sgen.copy(), net.load.copy(), net.ext_grid.copy()
    z = design_ldc_impedance_pu(net, plant33.resources, plant33.where)
    z18 = design_ldc_impedance_pu(
        net, plant33.resources, plant33.where, target_buses={"OLTC": "18"}
    )
    for a, b in zip(before, (net.sgen, net.load, net.ext_grid), strict=True):
        assert a.equals(b)
    r, x = z["OLTC"]
    assert r > 0 and x > 0
    assert z18["OLTC"] == pytest.approx((r, x))  # bus 18 is the weakest bus of ieee33
    work = copy.deepcopy(net)
    work.sgen[["p_mw", "q_mvar"]] = 0.0
    work.storage[["p_mw", "q_mvar"]] = 0.0
    pp.runpp(work, numba=False, lightsim2grid=False)
    v_c = compensated_vm_pu(
        float(work.res_bus.vm_pu.iloc[0]),
        float(work.res_ext_grid.p_mw.sum()) / net.sn_mva,
        float(work.res_ext_grid.q_mvar.sum()) / net.sn_mva,
        r,
        x,
    )
    assert v_c == pytest.approx(work.res_bus.vm_pu.min(), abs=1e-9)


def _regulator_plant(prof, tap_side: str) -> Plant:
    """Source — regulator (20/20 kV, tap on ``tap_side``) — long line — load: low far end."""
    net = pp.create_empty_network(sn_mva=1.0)
    b = [pp.create_bus(net, vn_kv=20.0, name=str(i)) for i in (1, 2, 3)]
    pp.create_ext_grid(net, b[0], vm_pu=1.0)
    pp.create_transformer_from_parameters(
        net,
        b[0],
        b[1],
        sn_mva=10.0,
        vn_hv_kv=20.0,
        vn_lv_kv=20.0,
        vkr_percent=0.1,
        vk_percent=1.0,
        pfe_kw=0.0,
        i0_percent=0.0,
        tap_side=tap_side,
        tap_neutral=0,
        tap_min=-16,
        tap_max=16,
        tap_step_percent=0.625,
        tap_pos=0,
        name="reg",
    )
    pp.create_line_from_parameters(
        net, b[1], b[2], length_km=10.0, r_ohm_per_km=0.6, x_ohm_per_km=0.4, c_nf_per_km=0.0,
        max_i_ka=1.0,
    )  # fmt: skip
    pp.create_load(net, b[2], p_mw=4.0, q_mvar=1.0)
    reg = LineRegulator(
        name="REG", bus="2", trafo="reg", tap_min=-16, tap_max=16, tap_step_percent=0.625,
        max_operations_per_day=100,
    )  # fmt: skip
    return Plant(net, ResourceSet(devices=[reg]), prof, plant_step_s=300, n_steps=12)


@pytest.mark.parametrize(("tap_side", "sign"), [("hv", -1), ("lv", 1)])
def test_tap_direction_follows_tap_side(prof, tap_side, sign):
    plant = _regulator_plant(prof, tap_side)
    ctl = LocalController(plant.net, plant.resources, plant.where, plant_step_s=300)
    assert ctl.ldc_impedance_pu["REG"][0] > 0
    for _ in range(plant.n_steps):
        plant.step()
        for dev, sp in ctl.setpoints(plant.measure()).items():
            plant.set_setpoint(dev, **sp)
    taps = plant.record.device["REG.tap_pos"]
    far = plant.record.vm_pu[:, 2]
    assert far[0] < 0.97  # the far end starts low
    assert sign * taps[-1] >= 3  # moved the way that raises the lv side
    assert far[-1] > far[0] + 0.015
    assert np.all(np.abs(np.diff(taps)) <= 1)  # one step per plant step at most


# ------------------------------------------------------------------------------- in the loop
def _run_day(prof, local: bool) -> Plant:
    plant = Plant(
        cases.load_case("ieee33"), load_preset("ieee33-ev"), prof, plant_step_s=300, n_steps=288
    )
    ctl = LocalController(plant.net, plant.resources, plant.where, plant_step_s=300)
    for _ in range(plant.n_steps):
        plant.step()
        if local:
            for dev, sp in ctl.setpoints(plant.measure()).items():
                plant.set_setpoint(dev, **sp)
    return plant


def test_local_control_reduces_voltage_violations(prof):
    none = kpi.summarize(_run_day(prof, local=False))
    plant = _run_day(prof, local=True)
    local = kpi.summarize(plant)
    print(
        f"\nieee33-ev, 1 day: violation bus-hours none {none['voltage_violation_bus_hours']:.2f}"
        f" (min {none['min_vm_pu']:.4f} p.u.), local {local['voltage_violation_bus_hours']:.2f}"
        f" (min {local['min_vm_pu']:.4f}, max {local['max_vm_pu']:.4f} p.u.,"
        f" {local['tap_operations']} tap operations)"
    )
    assert none["voltage_violation_bus_hours"] > 0
    assert local["voltage_violation_bus_hours"] < 0.5 * none["voltage_violation_bus_hours"]
    assert local["min_vm_pu"] > none["min_vm_pu"]
    assert local["powerflow_failures"] == 0
    assert 0 < local["tap_operations"] <= plant.devices["OLTC"].max_operations_per_day
    rec = plant.record.device
    assert np.nanmax(np.abs(rec["SVC1.q_mvar"])) > 0  # the SVCs took part
