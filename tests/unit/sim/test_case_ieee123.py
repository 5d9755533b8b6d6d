"""The shipped ieee123 case: a balanced pandapower equivalent of the IEEE 123-node feeder.

Checked against the OpenDSS reference voltages shipped beside it (``ieee123_opendss_vm.csv``),
so only the last test needs OpenDSSDirect.py and ../shared/data.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pandapower as pp
import pandas as pd
import pytest

from clustersim.sim.cases import describe_case, is_radial, load_case

DATA_DIR = Path(__file__).resolve().parents[3] / "sim" / "data" / "cases"
CSV = DATA_DIR / "ieee123_opendss_vm.csv"
MAX_DEVIATION_PU = 0.02
STEP_PU = 0.00625


@pytest.fixture(scope="session")
def ieee123_solved() -> pp.pandapowerNet:
    net = load_case("ieee123")
    pp.runpp(net, lightsim2grid=False)
    return net


@pytest.fixture(scope="session")
def opendss_vm() -> pd.DataFrame:
    return pd.read_csv(CSV, dtype={"bus": str, "phases": str}).set_index("bus")


def _vm_by_name(net: pp.pandapowerNet) -> pd.Series:
    return pd.Series(net.res_bus.vm_pu.to_numpy(), index=net.bus["name"].to_numpy())


def test_loads_named_and_converges(ieee123_solved):
    net = ieee123_solved
    assert net.name == "ieee123"
    assert net.converged
    assert len(net.bus) == 129
    assert (net.bus.vn_kv == 4.16).all()
    assert net.bus["name"].map(type).eq(str).all()
    assert net.bus["name"].is_unique
    assert {"150", "150r", "149", "1", "114", "300", "61s"} <= set(net.bus["name"])
    assert not net.bus["name"].str.endswith("_open").any()
    assert net.res_bus.vm_pu.notna().all()
    assert 0.95 < net.res_bus.vm_pu.min() and net.res_bus.vm_pu.max() < 1.06


def test_radial_with_open_ties():
    net = load_case("ieee123")
    assert is_radial(net)
    ties = net.switch[~net.switch.closed]
    names = net.bus["name"]
    pairs = {frozenset((names[b], names[e])) for b, e in zip(ties.bus, ties.element, strict=True)}
    assert pairs == {frozenset(("151", "300")), frozenset(("54", "94"))}
    net.switch.loc[ties.index[0], "closed"] = True  # closing a tie closes a loop
    assert not is_radial(net)


def test_regulators_are_ratio_tap_changers():
    net = load_case("ieee123")
    regs = net.trafo[net.trafo["name"].astype(str).str.startswith("reg")]
    assert sorted(regs["name"]) == ["reg1", "reg2", "reg3", "reg4"]
    assert len(net.trafo) == 4  # the dead-end service transformer xfm1 → 610 is dropped
    assert (regs.tap_changer_type == "Ratio").all()
    assert (regs.tap_neutral == 0).all()
    assert (regs.tap_min == -16).all() and (regs.tap_max == 16).all()
    assert np.allclose(regs.tap_step_percent, 0.625)
    assert regs.tap_side.isin(["hv", "lv"]).all()
    assert (regs.pfe_kw == 0).all() and (regs.i0_percent == 0).all()
    assert regs.tap_pos.between(-16, 16).all()
    assert (regs.tap_pos == regs.tap_pos.round()).all()
    assert (regs.vk_percent <= 1.0).all() and (regs.vn_hv_kv == regs.vn_lv_kv).all()
    names = net.bus["name"]
    ends = {r.name: (names[r.hv_bus], names[r.lv_bus]) for r in regs.itertuples()}
    assert ends == {
        "reg1": ("150", "150r"),
        "reg2": ("9", "9r"),
        "reg3": ("25", "25r"),
        "reg4": ("160", "160r"),
    }


def test_capacitors_and_loads():
    net = load_case("ieee123")
    assert len(net.shunt) == 4
    assert (net.shunt.q_mvar < 0).all()
    assert np.isclose(-net.shunt.q_mvar.sum(), 0.75)
    assert len(net.load) == net.load.bus.nunique()  # one balanced load per bus
    assert np.isclose(net.load.p_mw.sum(), 3.49)
    assert np.isclose(net.load.q_mvar.sum(), 1.92)
    # constant power only
    for col in ("const_z_p_percent", "const_i_p_percent", "const_z_q_percent", "const_i_q_percent"):
        if col in net.load:
            assert (net.load[col].fillna(0) == 0).all()


def test_describe_case():
    d = describe_case("ieee123")
    assert d["n_buses"] == 129
    assert d["radial"]
    assert d["resources"].get("regulator") == 4
    assert d["resources"].get("capacitor") == 4
    assert 50 < d["base_losses_kw"] < 120


def test_matches_opendss_voltages(ieee123_solved, opendss_vm):
    vm = _vm_by_name(ieee123_solved)
    assert set(vm.index) == set(opendss_vm.index)
    dev = (vm - opendss_vm["vm_pu_opendss"].reindex(vm.index)).abs()
    assert dev.notna().all()
    assert dev.max() < MAX_DEVIATION_PU, dev.idxmax()
    three = opendss_vm["phases"].reindex(vm.index) == "abc"
    assert dev[three].max() < 0.005
    # the CSV's own pandapower column is what the shipped net gives today
    assert np.allclose(vm, opendss_vm["vm_pu_pandapower"].reindex(vm.index), atol=1e-6)


@pytest.mark.parametrize("reg", ["reg1", "reg2", "reg3", "reg4"])
def test_tap_step_moves_downstream_voltage(ieee123_solved, reg):
    base = ieee123_solved
    net = load_case("ieee123")
    t = net.trafo.index[net.trafo["name"] == reg][0]
    hv, lv = net.trafo.at[t, "hv_bus"], net.trafo.at[t, "lv_bus"]
    net.trafo.at[t, "tap_pos"] += 1
    pp.runpp(net, lightsim2grid=False)
    d_lv = net.res_bus.vm_pu[lv] - base.res_bus.vm_pu[lv]
    d_hv = net.res_bus.vm_pu[hv] - base.res_bus.vm_pu[hv]
    assert d_lv == pytest.approx(STEP_PU * base.res_bus.vm_pu[hv], rel=0.05)
    assert abs(d_hv) < 0.1 * STEP_PU
    net.trafo.at[t, "tap_pos"] -= 2
    pp.runpp(net, lightsim2grid=False)
    d_down = net.res_bus.vm_pu[lv] - base.res_bus.vm_pu[lv]
    assert d_down == pytest.approx(-STEP_PU * base.res_bus.vm_pu[hv], rel=0.05)


def test_converges_at_tap_extremes():
    net = load_case("ieee123")
    regs = net.trafo.index[net.trafo["name"].astype(str).str.startswith("reg")]
    for taps in ([16, 16, 16, 16], [-16, -16, -16, -16], [16, -16, 16, -16], [-16, 16, -16, 16]):
        net.trafo.loc[regs, "tap_pos"] = taps
        pp.runpp(net, lightsim2grid=False)
        assert net.converged


@pytest.mark.opendss
def test_reconversion_matches_shipped(shared_data, opendss_vm):
    if importlib.util.find_spec("opendssdirect") is None:
        pytest.skip("OpenDSSDirect.py is not installed")
    from clustersim.sim.data.convert_ieee123 import convert

    src = shared_data / "ieee123"
    if not (src / "IEEE123Master.dss").is_file():
        pytest.skip(f"{src} holds no IEEE123Master.dss")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net, report = convert(src)
    shipped = load_case("ieee123")
    for table in ("bus", "line", "trafo", "load", "shunt", "switch", "ext_grid"):
        pd.testing.assert_frame_equal(
            net[table], shipped[table], check_dtype=False, check_exact=False, rtol=1e-9
        )
    assert report.max_deviation_pu < MAX_DEVIATION_PU
    assert list(report.vm.index) == list(opendss_vm.index)
    for col in opendss_vm.columns.drop("phases"):
        np.testing.assert_allclose(report.vm[col], opendss_vm[col], atol=1e-7, err_msg=col)
    assert (report.vm["phases"] == opendss_vm["phases"]).all()
    assert report.max_deviation_pu == pytest.approx(
        (opendss_vm["vm_pu_pandapower"] - opendss_vm["vm_pu_opendss"]).abs().max(), abs=1e-7
    )
