"""The pandapower plant: profiles applied, setpoints in force, records, failures rolled back."""

from __future__ import annotations

import warnings

import numpy as np
import pandapower as pp
import pytest

from clustersim.errors import MessageError
from clustersim.sim import cases, profiles, resources
from clustersim.sim.plant import Measurement, Plant


@pytest.fixture(scope="module")
def prof():
    return profiles.synthetic(1, seed=3)


def _plant(prof, preset="ieee33-ev", n_steps=30, extra=(), **kw):
    rs = resources.load_preset(preset)
    if extra:
        rs = resources.ResourceSet(name=rs.name, case=rs.case, devices=[*rs.devices, *extra])
    return Plant(cases.load_case(rs.case), rs, prof, plant_step_s=60, n_steps=n_steps, **kw)


def test_profiles_drive_loads_and_generation(prof):
    plant = _plant(prof, n_steps=800)
    base = cases.load_case("ieee33").load
    plant.run(1)
    plant.step_index = 719  # jump to 12:00 (no state depends on the skipped steps here)
    plant.run(1)
    p60 = prof.at_step(60)
    k = 719
    np.testing.assert_allclose(
        plant.net.load.p_mw[base.index].to_numpy(),
        base.p_mw.to_numpy() * p60.actual["load_p"].iloc[k],
        rtol=1e-12,
    )
    rec = plant.record
    assert rec.device["PV1.p_mw"][k] == pytest.approx(0.0743 * p60.actual["pv"].iloc[k])
    assert rec.device["PV1.p_mw"][k] > 0 and rec.device["PV1.p_mw"][0] == 0.0  # noon vs midnight
    assert rec.device["EV1.p_mw"][k] == pytest.approx(0.014 * p60.actual["ev"].iloc[k])


def test_records_and_converges(prof):
    plant = _plant(prof, n_steps=5)
    rec = plant.run()
    assert rec.converged.all()
    assert rec.vm_pu.shape == (5, 33) and np.isfinite(rec.vm_pu).all()
    assert (rec.p_loss_mw > 0).all()
    # the slack supplies load + storage charging + losses − generation (last step's net state)
    net = plant.net
    balance = net.load.p_mw.sum() + net.storage.p_mw.sum() - net.sgen.p_mw.sum() + rec.p_loss_mw[-1]
    assert rec.p_slack_mw[-1] == pytest.approx(balance, abs=1e-6)
    frame = rec.to_frame()
    assert {"time_s", "vm_pu.1", "vm_pu.33", "CB1.step", "OLTC.tap_pos", "ESS1.energy_mwh"} <= set(
        frame
    )
    assert frame.time_s.tolist() == [0, 60, 120, 180, 240]


def test_setpoints_take_effect_next_step_and_count_switching(prof):
    plant = _plant(prof, n_steps=6)
    plant.run(2)
    v_before = plant.record.vm_pu[1].copy()
    plant.set_setpoint("CB3", step=3)
    plant.set_setpoint("OLTC", tap_pos=2)
    assert plant.setpoints["CB3"]["step"] == 0  # queued, not yet in force
    plant.step()
    assert plant.setpoints["CB3"]["step"] == 3
    assert plant.net.shunt.at[plant.where["CB3"][1], "step"] == 3
    assert plant.net.ext_grid.vm_pu.iloc[0] == pytest.approx(1.02)
    assert plant.record.vm_pu[2, 0] == pytest.approx(1.02)
    assert (plant.record.vm_pu[2] > v_before).all()
    assert plant.capacitor_switching["CB3"] == 1 and plant.tap_operations["OLTC"] == 2
    plant.set_setpoint("OLTC", tap_pos=-1)
    plant.step()
    assert plant.tap_operations["OLTC"] == 5


@pytest.mark.parametrize(
    ("device", "values", "match"),
    [
        ("nope", {"q_mvar": 0.0}, "unknown"),
        ("SVC1", {"q_mvar": 0.5}, "outside"),
        ("SVC1", {"p_mw": 0.1}, "takes"),
        ("CB1", {"step": 1.5}, "integer"),
        ("OLTC", {"tap_pos": 9}, "outside"),
        ("ESS1", {"p_mw": float("nan")}, "finite"),
        ("EV1", {"p_mw": 0.01}, "unknown"),  # uncontrolled load
    ],
)
def test_bad_setpoints_are_refused(prof, device, values, match):
    plant = _plant(prof, n_steps=2)
    with pytest.raises(MessageError, match=match):
        plant.set_setpoint(device, **values)


def test_storage_energy_and_soc_window(prof):
    plant = _plant(prof, n_steps=200)
    e0 = plant.storage_energy_mwh()["ESS1"]  # 0.1 MWh (mid SOC of 0.2 MWh)
    plant.set_setpoint("ESS1", p_mw=0.05)
    plant.run(60)  # one hour at 0.05 MW, efficiency 0.95
    assert plant.storage_energy_mwh()["ESS1"] == pytest.approx(e0 + 0.05 * 0.95, rel=1e-9)
    plant.run(120)  # keeps charging until SOC max 0.9 × 0.2 MWh, never beyond
    assert plant.storage_energy_mwh()["ESS1"] == pytest.approx(0.18, abs=1e-9)
    assert plant.record.device["ESS1.p_mw"][150] == 0.0
    plant.set_setpoint("EC1:battery", p_mw=-0.05)
    plant.step()
    assert plant.storage_energy_mwh()["EC1:battery"] < 0.05


def test_failed_powerflow_is_recorded_and_rolled_back(prof):
    huge = resources.SVC(name="BIG", bus="18", q_min_mvar=-500.0, q_max_mvar=500.0)
    plant = _plant(prof, n_steps=6, extra=[huge])
    plant.run(2)
    plant.set_setpoint("ESS1", p_mw=0.05)
    plant.set_setpoint("BIG", q_mvar=-500.0)  # absorbs 500 Mvar at the feeder end: collapse
    e = plant.storage_energy_mwh()["ESS1"]
    assert plant.step() is False
    assert plant.powerflow_failures == [2]
    assert not plant.record.converged[2] and np.isnan(plant.record.vm_pu[2]).all()
    # the setpoints of the failed step are not in force, nothing advanced
    assert plant.setpoints["BIG"]["q_mvar"] == 0.0 and plant.setpoints["ESS1"]["p_mw"] == 0.0
    assert plant.storage_energy_mwh()["ESS1"] == e
    assert plant.step() is True and plant.step() is True
    assert plant.record.converged[3:5].all()
    np.testing.assert_allclose(plant.record.vm_pu[3], plant.record.vm_pu[1], atol=0.01)


def test_same_seed_same_record(prof):
    a = _plant(prof, preset="ieee51-ga", n_steps=10).run().to_frame()
    b = _plant(prof, preset="ieee51-ga", n_steps=10).run().to_frame()
    assert a.equals(b)


def test_simbench_elements_follow_their_own_profiles():
    net = cases.load_case("simbench-mv-rural")
    base_load = net.load.copy()
    base_sgen = net.sgen.copy()
    prof = profiles.from_simbench("1-MV-rural--0-sw", day=100, seed=1)
    plant = Plant(net, resources.ResourceSet(), prof, plant_step_s=900, n_steps=3)
    plant.run()
    act = prof.actual
    k = 2
    for row in base_load.index[:10]:
        col = f"{base_load.at[row, 'profile']}_pload"
        assert plant.net.load.at[row, "p_mw"] == pytest.approx(
            act[col].iloc[k] * base_load.at[row, "p_mw"], rel=1e-12
        )
    for row in base_sgen.index[:10]:
        col = base_sgen.at[row, "profile"]
        assert plant.net.sgen.at[row, "p_mw"] == pytest.approx(
            act[col].iloc[k] * base_sgen.at[row, "p_mw"], rel=1e-12
        )
    assert plant.record.converged.all()


# ------------------------------------------------- fast power flow path vs full runpp
_BIG = resources.SVC(name="BIG", bus="18", q_min_mvar=-500.0, q_max_mvar=500.0)


def _send(plant: Plant, k: int) -> str:
    """Setpoints of every kind at chosen steps (the same for every plant); returns what changed."""
    rng = np.random.default_rng([7, k])
    kind = {2: "q_p", 4: "cap", 6: "tap", 8: "q_p", 9: "tap+q_p", 11: "cap+tap", 13: "fail"}
    what = kind.get(k, "")
    for d in plant.resources.devices:
        if "q_p" in what and isinstance(d, resources.SVC) and d.name != "BIG":
            plant.set_setpoint(d.name, q_mvar=float(rng.uniform(d.q_min_mvar, d.q_max_mvar)))
        elif "q_p" in what and isinstance(d, resources.PV):
            plant.set_setpoint(d.name, q_mvar=float(rng.uniform(-d.s_rated_mva, d.s_rated_mva)))
        elif "q_p" in what and isinstance(d, resources.ESS | resources.ExchangeStation):
            name = d.name if isinstance(d, resources.ESS) else f"{d.name}:battery"
            plant.set_setpoint(name, p_mw=float(rng.uniform(-d.p_max_mw, d.p_max_mw)))
        elif "cap" in what and isinstance(d, resources.CapacitorBank):
            plant.set_setpoint(d.name, step=int(rng.integers(0, d.steps + 1)))
        elif "tap" in what and isinstance(d, resources.OLTC | resources.LineRegulator):
            tap = plant.setpoints[d.name]["tap_pos"] + int(rng.choice([-2, -1, 1, 2]))
            plant.set_setpoint(d.name, tap_pos=float(np.clip(tap, d.tap_min, d.tap_max)))
    if what == "fail" and "BIG" in plant.devices:
        plant.set_setpoint("BIG", q_mvar=-500.0)  # collapse: rolled back
    if k == 14 and "BIG" in plant.devices:
        plant.set_setpoint("BIG", q_mvar=0.0)
    return what


def _assert_same_measurement(a: Measurement | None, b: Measurement | None) -> None:
    assert (a is None) == (b is None)
    if a is None or b is None:
        return
    for f in (
        "vm_pu",
        "line_p_from_mw",
        "line_q_from_mvar",
        "line_p_to_mw",
        "line_q_to_mvar",
        "trafo_p_hv_mw",
        "trafo_q_hv_mvar",
        "trafo_p_lv_mw",
        "trafo_q_lv_mvar",
    ):
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=0, atol=1e-9, err_msg=f)
    assert a.p_slack_mw == pytest.approx(b.p_slack_mw, rel=0, abs=1e-9)
    assert a.q_slack_mvar == pytest.approx(b.q_slack_mvar, rel=0, abs=1e-9)
    assert a.setpoints == b.setpoints and a.switching_today == b.switching_today
    assert a.storage_energy_mwh == pytest.approx(b.storage_energy_mwh, rel=0, abs=1e-12)


def _assert_same_record(a: Plant, b: Plant) -> None:
    ra, rb = a.record, b.record
    np.testing.assert_array_equal(ra.converged, rb.converged)
    for f in ("vm_pu", "loading_percent", "p_loss_mw", "p_slack_mw", "q_slack_mvar"):
        np.testing.assert_allclose(getattr(ra, f), getattr(rb, f), rtol=0, atol=1e-9, err_msg=f)
    assert set(ra.device) == set(rb.device)
    for c in ra.device:
        np.testing.assert_allclose(ra.device[c], rb.device[c], rtol=0, atol=1e-9, err_msg=c)
    assert a.powerflow_failures == b.powerflow_failures
    assert a.tap_operations == b.tap_operations
    assert a.capacitor_switching == b.capacitor_switching


@pytest.mark.parametrize(("preset", "extra"), [("ieee33-ev", (_BIG,)), ("ieee123-ev", ())])
def test_fast_powerflow_equals_full_runpp(prof, preset, extra):
    """Recycling pandapower's model between steps gives what a full runpp gives, for setpoint
    changes of every kind (ieee33: the OLTC sets the slack voltage; ieee123: OLTC and line
    regulators are transformer taps) and across a failed, rolled-back power flow."""
    n = 18
    fast = _plant(prof, preset, n_steps=n, extra=extra)
    full = _plant(prof, preset, n_steps=n, extra=extra, fast_powerflow=False)
    paths = []
    for k in range(n):
        for plant in (fast, full):
            what = _send(plant, k)
        before = dict(fast._pf_counts)
        ok = fast.step()
        assert full.step() is ok
        paths.append(next(p for p in before if fast._pf_counts[p] > before[p]))
        _assert_same_measurement(fast.measure(), full.measure())
        if "cap" in what or k == 0:
            assert paths[k] == "full", (k, what)  # pandapower's recycle does not update shunts
        elif k > 0 and fast.record.converged[k - 1] and what in ("", "q_p", "tap"):
            assert paths[k] == "recycled", (k, what)
    _assert_same_record(fast, full)
    assert full._pf_counts["recycled"] == 0
    assert paths.count("recycled") >= n // 2
    if extra:  # the step after the failed one takes the full path
        assert fast.powerflow_failures == [13]
        assert paths[14] == "full"
    assert fast.record.converged.sum() >= n - 1


def test_fast_powerflow_sees_topology_service_and_foreign_powerflows(prof):
    """A switch, an element taken out of service, or a power flow someone else ran on the net
    between steps make the next step take the full path, with the full path's results."""
    fast = _plant(prof, "ieee123-ev", n_steps=10)
    full = _plant(prof, "ieee123-ev", n_steps=10, fast_powerflow=False)
    tie = int(fast.net.switch.index[fast.net.switch["name"] == "sw7"][0])
    paths = []
    for k in range(10):
        for plant in (fast, full):
            net = plant.net
            if k == 3:
                net.switch.at[tie, "closed"] = True  # close a normally open tie: a loop
            elif k == 5:
                net.load.at[net.load.index[4], "in_service"] = False
            elif k == 7:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pp.runpp(net, init="flat", tolerance_mva=1e-6, numba=False, lightsim2grid=False)
        before = dict(fast._pf_counts)
        assert fast.step() and full.step()
        paths.append(next(p for p in before if fast._pf_counts[p] > before[p]))
    assert [paths[k] for k in (3, 5, 7)] == ["full"] * 3
    assert [paths[k] for k in (2, 4, 6, 8, 9)] == ["recycled"] * 5
    _assert_same_record(fast, full)
    _assert_same_measurement(fast.measure(), full.measure())


# ------------------------------------------------- lightsim2grid's solver vs pandapower's
@pytest.mark.parametrize(("preset", "extra"), [("ieee33-ev", (_BIG,)), ("ieee123-ev", ())])
def test_lightsim2grid_solver_gives_the_same_records(prof, preset, extra):
    """``Plant(lightsim2grid=True)`` records what pandapower's own solver records (to 1e-9), on
    the fast path and the full one, across setpoint changes of every kind and a failed step."""
    n = 16
    ref = _plant(prof, preset, n_steps=n, extra=extra, lightsim2grid=False)
    fast = _plant(prof, preset, n_steps=n, extra=extra, lightsim2grid=True)
    full = _plant(prof, preset, n_steps=n, extra=extra, lightsim2grid=True, fast_powerflow=False)
    for k in range(n):
        for plant in (ref, fast, full):
            _send(plant, k)
            plant.step()
        assert ref.net["_options"]["lightsim2grid"] is False
        assert fast.net["_options"]["lightsim2grid"] is True
        assert full.net["_options"]["lightsim2grid"] is True
        _assert_same_measurement(fast.measure(), ref.measure())
    _assert_same_record(fast, ref)
    _assert_same_record(full, ref)
    assert fast._pf_counts["recycled"] >= n // 2


def test_lightsim2grid_solver_falls_back_where_pandapower_refuses_it(prof):
    """pandapower does not hand voltage-dependent loads to lightsim2grid: the plant then solves
    with pandapower's own solver and records what a plant without lightsim2grid records."""
    plants = [_plant(prof, n_steps=4, lightsim2grid=ls2g) for ls2g in (False, True)]
    for plant in plants:
        plant.net.load.loc[plant.net.load.index[5], "const_z_p_percent"] = 50.0
        plant.run()
        assert plant.net["_options"]["lightsim2grid"] is False
    _assert_same_record(plants[1], plants[0])
