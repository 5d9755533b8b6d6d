"""The pandapower plant: profiles applied, setpoints in force, records, failures rolled back."""

from __future__ import annotations

import numpy as np
import pytest

from clustersim.errors import MessageError
from clustersim.sim import cases, profiles
from clustersim.sim.plant import Plant
from clustersim.sim.resources import SVC, ResourceSet, load_preset


@pytest.fixture(scope="module")
def prof():
    return profiles.synthetic(1, seed=3)


def _plant(prof, preset="ieee33-ev", n_steps=30, extra=()):
    rs = load_preset(preset)
    if extra:
        rs = ResourceSet(name=rs.name, case=rs.case, devices=[*rs.devices, *extra])
    return Plant(cases.load_case(rs.case), rs, prof, plant_step_s=60, n_steps=n_steps)


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
    huge = SVC(name="BIG", bus="18", q_min_mvar=-500.0, q_max_mvar=500.0)
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
    plant = Plant(net, ResourceSet(), prof, plant_step_s=900, n_steps=3)
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
