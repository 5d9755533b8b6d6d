"""The case1197-pv preset on the 1,197-bus feeder [CASE1197]: where its devices sit, and the
voltage problems it is designed to cause with no control, each checked by pandapower power flows
at a profile peak of the scenario case1197-pv-none: the PV at the midday peak lifts some LV bus
above 1.05 p.u., the EV charging at the evening peak pulls some LV bus below 0.95 p.u., and
neither happens without the PV or without the EVs."""

from __future__ import annotations

import copy

import pandapower as pp
import pandas as pd
import pytest

from clustersim.assemble.build import build_profiles
from clustersim.scenario import load_scenario
from clustersim.sim.cases import load_case
from clustersim.sim.plant import Plant
from clustersim.sim.profiles import NATIVE_STEP_S, Profiles
from clustersim.sim.resources import ResourceSet, load_preset, preset_names

PRESET = "case1197-pv"
SCENARIO = "case1197-pv-none"
HV_KV, MV_KV, LV_KV = 150.0, 23.0, 0.415
LEVEL_KV = {"pv": LV_KV, "ev": LV_KV, "ess": LV_KV, "svc": MV_KV, "capacitor": MV_KV, "oltc": HV_KV}
"""The voltage level each kind of device of the preset is placed at."""


@pytest.fixture(scope="module")
def preset() -> ResourceSet:
    return load_preset(PRESET)


@pytest.fixture(scope="module")
def profiles() -> Profiles:
    """The profiles of the no-control scenario, at their native 15 min step."""
    return build_profiles(load_scenario(SCENARIO))


@pytest.fixture(scope="module")
def plant(preset, profiles) -> Plant:
    """The no-control plant at the native step: case1197 with the preset's devices attached at
    their initial settings (attaching some 600 devices takes seconds: done once)."""
    return Plant(load_case("case1197"), preset, profiles, plant_step_s=NATIVE_STEP_S)


@pytest.fixture(scope="module")
def frames(plant) -> list:
    """What the profiles give each profile-driven element over the day (the plant's mapping)."""
    return plant.profile_frames("actual")


def test_preset_is_listed_and_written_for_case1197(preset):
    assert PRESET in preset_names()
    assert preset.case == "case1197"
    assert preset.counts() == {"pv": 466, "ev": 117, "ess": 22, "svc": 2, "capacitor": 3, "oltc": 1}
    assert load_scenario(SCENARIO).resources.preset == PRESET


def test_devices_sit_on_existing_buses_of_their_voltage_level(preset, plant):
    net = load_case("case1197")
    kv = dict(zip(net.bus["name"].astype(str), net.bus.vn_kv, strict=True))
    for d in preset.devices:
        assert d.bus in kv, d.name
        assert kv[d.bus] == LEVEL_KV[d.kind], d.name
    customers = [b for b, v in kv.items() if v == LV_KV]
    # PV on 40 % and EV chargers on 10 % of the LV customers, at most one of each per customer
    for kind, share in (("pv", 0.40), ("ev", 0.10)):
        buses = [d.bus for d in preset.of_kind(kind)]
        assert len(set(buses)) == len(buses)
        assert len(buses) / len(customers) == pytest.approx(share, abs=0.001)
    # one community battery at the LV bus of each 23/0.415 kV transformer
    trafo = net.trafo
    lv_side = trafo.lv_bus[trafo.vn_lv_kv == LV_KV]
    assert {d.bus for d in preset.of_kind("ess")} == {str(net.bus.at[b, "name"]) for b in lv_side}
    # the OLTC is the tap changer of the 150/23 kV substation transformer, named by its HV bus
    (oltc,) = preset.of_kind("oltc")
    (row,) = trafo.index[trafo["name"] == oltc.trafo]
    assert (trafo.at[row, "vn_hv_kv"], trafo.at[row, "vn_lv_kv"]) == (HV_KV, MV_KV)
    assert str(net.bus.at[trafo.at[row, "hv_bus"], "name"]) == oltc.bus
    assert {d.name for d in preset.devices} <= set(plant.where)


def _snapshot(
    plant: Plant, frames: list, k: int, *, pv: bool, ev: bool
) -> tuple[pd.Series, pd.Series]:
    """Bus voltages and voltage levels at native profile step ``k`` with every device at its
    initial setting (no control) and the profiles applied as the plant applies them; the PV
    output, or the EV charging, set to zero when ``pv``, or ``ev``, is false."""
    net = copy.deepcopy(plant.net)
    for table, variable, rows, values in frames:
        net[table].loc[rows, variable] = values[k]
    if not pv:
        net.sgen.loc[net.sgen.type == "PV", "p_mw"] = 0.0
    if not ev:
        net.load.loc[net.load.type == "ev", ["p_mw", "q_mvar"]] = 0.0
    pp.runpp(net, numba=False, lightsim2grid=False)
    return net.res_bus.vm_pu, net.bus.vn_kv


def test_pv_at_the_midday_peak_lifts_lv_buses_above_1_05(plant, frames, profiles):
    k = int(profiles.actual.pv.to_numpy().argmax())
    assert 10 <= profiles.actual.index[k] / 3600 <= 14
    vm, kv = _snapshot(plant, frames, k, pv=True, ev=True)
    assert vm[kv == LV_KV].max() > 1.05
    vm_no_pv, _ = _snapshot(plant, frames, k, pv=False, ev=True)
    assert vm_no_pv.max() <= 1.05


def test_ev_charging_at_the_evening_peak_pulls_lv_buses_below_0_95(plant, frames, profiles):
    k = int(profiles.actual.ev.to_numpy().argmax())
    assert 17 <= profiles.actual.index[k] / 3600 <= 22
    vm, kv = _snapshot(plant, frames, k, pv=True, ev=True)
    assert vm[kv == LV_KV].min() < 0.95
    vm_no_ev, _ = _snapshot(plant, frames, k, pv=True, ev=False)
    assert vm_no_ev.min() >= 0.95
