"""Resource models and the presets of the source papers."""

from __future__ import annotations

import pandapower as pp
import pytest

from clustersim.errors import ScenarioError
from clustersim.sim import cases, resources
from clustersim.sim.resources import (
    ESS,
    SVC,
    CapacitorBank,
    ResourceSet,
    load_preset,
    parse_resources,
    penetration,
)


def test_presets_listed():
    assert {"ieee33-ev", "ieee51-ga", "ieee123-ev"} <= set(resources.preset_names())


def test_ieee33_ev_matches_paper_setup():
    rs = load_preset("ieee33-ev")
    assert rs.case == "ieee33"
    c = rs.counts()
    assert (c["pv"], c["ev"], c["exchange"], c["ess"], c["svc"], c["capacitor"]) == (
        7,
        5,
        3,
        5,
        3,
        5,
    )
    peak = cases.describe_case("ieee33")["total_load_mw"]
    assert penetration(rs, peak) == pytest.approx(0.14, abs=0.002)
    ev_peak = sum(d.p_peak_mw for d in rs.of_kind("ev", "exchange"))
    assert ev_peak == pytest.approx(0.112, abs=1e-9)
    assert all(d.e_mwh > 0 for d in rs.of_kind("exchange"))


def test_ieee51_ga_matches_paper_setup():
    rs = load_preset("ieee51-ga")
    dg = rs.of_kind("pv", "wind")
    assert sorted(d.bus for d in dg) == ["16", "37", "50"]
    assert all(d.p_mw == 0.5 for d in dg)
    ess = rs.of_kind("ess")
    assert len(ess) == 2
    for e in ess:
        assert (e.e_mwh, e.p_max_mw, e.efficiency, e.initial_energy_mwh) == (1.0, 0.2, 0.9, 0.05)
    (svc,) = rs.of_kind("svc")
    assert (svc.q_min_mvar, svc.q_max_mvar) == (-0.25, 0.25)
    (oltc,) = rs.of_kind("oltc")
    assert (oltc.bus, oltc.tap_min, oltc.tap_max, oltc.tap_step_percent) == ("1", -5, 5, 1.0)
    assert oltc.max_operations_per_day == 8
    caps = rs.of_kind("capacitor")
    assert sum(c.steps for c in caps) == 6
    assert all(c.q_step_mvar == 0.05 and c.max_switching_per_day == 8 for c in caps)


@pytest.mark.parametrize("preset", ["ieee33-ev", "ieee51-ga", "ieee123-ev"])
def test_every_preset_attaches_and_converges(preset):
    rs = load_preset(preset)
    net = cases.load_case(rs.case)
    where = rs.attach(net)
    assert set(d.name for d in rs.devices) <= set(where)
    pp.runpp(net, lightsim2grid=False)
    assert net.converged
    for name, (table, row) in where.items():
        assert row in net[table].index, name


def test_attach_maps_devices_to_pandapower_elements():
    net = cases.load_case("ieee33")
    rs = load_preset("ieee33-ev")
    where = rs.attach(net)
    assert where["PV1"][0] == "sgen" and net.sgen.at[where["PV1"][1], "type"] == "PV"
    assert where["SVC1"][0] == "sgen" and net.sgen.at[where["SVC1"][1], "type"] == "SVC"
    assert where["EV1"][0] == "load" and where["EC1"][0] == "load"
    assert where["EC1:battery"][0] == "storage" and where["ESS1"][0] == "storage"
    assert where["CB1"][0] == "shunt" and net.shunt.at[where["CB1"][1], "q_mvar"] == -0.05
    assert where["OLTC"][0] == "ext_grid"
    # buses by label, not by index: PV1 sits at bus "6" = pandapower row 5
    assert net.bus.at[net.sgen.at[where["PV1"][1], "bus"], "name"] == "6"


def test_unknown_bus_is_a_clear_error():
    rs = ResourceSet(devices=[SVC(name="s", bus="999", q_min_mvar=-1, q_max_mvar=1)])
    with pytest.raises(ScenarioError, match="bus '999'"):
        rs.attach(cases.load_case("ieee33"))


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"svc": [{"name": "s", "bus": "3", "q_min_mvar": 1, "q_max_mvar": -1}]}, "svc.s"),
        (
            {"ess": [{"name": "e", "bus": "3", "e_mwh": 1, "p_max_mw": 0.1, "colour": 1}]},
            "ess.e.colour",
        ),
        (
            {
                "capacitor": [
                    {"name": "c", "bus": "3", "steps": 2, "q_step_mvar": 0.1, "step_init": 3}
                ]
            },
            "capacitor.c",
        ),
    ],
)
def test_invalid_devices_name_the_key(data, key):
    with pytest.raises(ScenarioError) as exc:
        parse_resources(data, source="x.toml")
    assert exc.value.key is not None and exc.value.key.startswith(key)
    assert "x.toml" in str(exc.value)


def test_duplicate_names_rejected():
    with pytest.raises(ValueError, match="duplicate"):
        ResourceSet(
            devices=[
                CapacitorBank(name="a", bus="2", steps=1, q_step_mvar=0.1),
                ESS(name="a", bus="3", e_mwh=1, p_max_mw=0.1),
            ]
        )


def test_storage_initial_energy_default_is_mid_soc():
    e = ESS(name="e", bus="2", e_mwh=2.0, p_max_mw=0.5, soc_min=0.2, soc_max=0.8)
    assert e.initial_energy_mwh == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ESS(name="e", bus="2", e_mwh=1.0, p_max_mw=0.5, e_init_mwh=2.0)
