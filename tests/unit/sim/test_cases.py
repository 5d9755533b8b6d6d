"""Grid case library: built-ins, base-case pins, radial operating topology, JSON paths, errors."""

from __future__ import annotations

import copy

import pandapower as pp
import pytest

from clustersim.errors import CaseError
from clustersim.sim.cases import case_names, describe_case, is_radial, load_case


def test_builtin_names(builtin_cases):
    assert case_names() == builtin_cases


def test_ieee33_base_case_pinned(case_info_keys):
    info = describe_case("ieee33")
    assert set(info) == case_info_keys
    assert info["base_losses_kw"] == pytest.approx(202.7, abs=0.5)
    assert info["min_vm_pu"] == pytest.approx(0.9131, abs=0.0005)
    assert (info["n_buses"], info["n_lines"], info["radial"]) == (33, 32, True)
    assert info["total_load_mw"] == pytest.approx(3.715)


def test_bus_labels_are_paper_numbers():
    net = load_case("ieee33")
    assert net.bus["name"].tolist() == [str(i) for i in range(1, 34)]


def test_load_case_returns_independent_copies():
    a = load_case("ieee33")
    a.load.loc[:, "p_mw"] *= 2
    b = load_case("ieee33")
    assert b.load.p_mw.sum() == pytest.approx(3.715)


@pytest.mark.parametrize("name", ["simbench-mv-rural", "simbench-mv-semiurb"])
def test_simbench_cases_radial_with_open_switches(name):
    net = load_case(name)
    assert (~net.switch.closed).sum() > 0  # normally-open ring switches exist ...
    assert is_radial(net)  # ... and are honoured: the operating topology is a tree
    closed = copy.deepcopy(net)
    closed.switch["closed"] = True
    assert not is_radial(closed)  # closing them meshes the rings
    info = describe_case(name)
    assert info["radial"] and info["n_buses"] == len(net.bus)
    assert info["resources"].get("oltc", 0) >= 1


def test_json_path_case(tmp_path):
    net = load_case("ieee33")
    net.name = ""
    path = tmp_path / "mine.json"
    pp.to_json(net, str(path))
    info = describe_case(str(path))
    assert info["base_losses_kw"] == pytest.approx(202.68, abs=0.01)
    assert load_case(str(path)).name == "mine"


def test_meshed_case_is_not_radial():
    net = load_case("ieee33")
    pp.create_line_from_parameters(net, 7, 20, 1.0, 0.5, 0.5, 0.0, 0.4)  # a tie line: a loop
    assert not is_radial(net)


def test_unknown_and_broken_cases(tmp_path):
    with pytest.raises(CaseError, match="unknown case 'ieee999'"):
        load_case("ieee999")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CaseError, match="not a readable pandapower JSON"):
        load_case(str(bad))


def test_simbench_tap_changers_act():
    net = load_case("simbench-mv-rural")
    pp.runpp(net, numba=False, lightsim2grid=False)
    v0 = net.res_bus.vm_pu.copy()
    net.trafo["tap_pos"] = 2  # tap on the hv side: +2 × 1.5 % lowers the mv side
    pp.runpp(net, numba=False, lightsim2grid=False)
    assert (net.res_bus.vm_pu[net.bus.vn_kv < 100] < v0[net.bus.vn_kv < 100] - 0.02).all()
