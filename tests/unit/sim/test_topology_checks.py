"""The topology a plant is built on: every in-service bus fed from the ext_grid, no loop among
energized branches; anything else is refused before a plant exists."""

from __future__ import annotations

import pandapower as pp
import pytest

from clustersim.assemble.build import build_plant, scenario_net, scenario_partition
from clustersim.errors import CaseError, ScenarioError
from clustersim.scenario import Scenario
from clustersim.sim.cases import check_topology, islanded_buses, load_case

# ieee33 (case33bw): line 24 joins bus "6" to bus "26" and feeds buses "26".."33" (index 25..32);
# line 32 is the normally-open tie between bus "21" and bus "8"
FEEDER_OF_26 = 24
TIE_21_8 = 32
BEHIND_26 = list(range(25, 33))


def _scenario(case: str) -> Scenario:
    return Scenario.model_validate({"case": {"name": case}, "run": {"duration_h": 1}})


@pytest.mark.parametrize("name", ["ieee33", "ieee123"])
def test_builtin_cases_pass(name):
    net = load_case(name)
    assert islanded_buses(net) == []
    check_topology(net)


def test_line_out_of_service_islands_the_buses_behind_it():
    net = load_case("ieee33")
    net.line.loc[FEEDER_OF_26, "in_service"] = False
    assert islanded_buses(net) == BEHIND_26
    with pytest.raises(CaseError) as err:
        check_topology(net)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("case ieee33: 8 of 33 in-service buses are islanded")
    assert "26 (#25), 27 (#26)" in msg and "and 2 more" in msg


def test_open_line_switch_islands_the_buses_behind_it():
    net = load_case("ieee33")
    pp.create_switch(net, bus=5, element=FEEDER_OF_26, et="l", closed=False)
    assert islanded_buses(net) == BEHIND_26
    with pytest.raises(CaseError, match="8 of 33 in-service buses are islanded"):
        check_topology(net, "ieee33 with an open switch")


def test_buses_set_out_of_service_are_not_islanded():
    """De-energized on purpose (``in_service`` false) is accepted: the KPIs leave such buses out
    by their definition."""
    net = load_case("ieee33")
    net.line.loc[FEEDER_OF_26, "in_service"] = False
    net.bus.loc[BEHIND_26, "in_service"] = False
    assert islanded_buses(net) == []
    check_topology(net)


def test_closed_tie_meshes_the_feeder():
    net = load_case("ieee33")
    net.line.loc[TIE_21_8, "in_service"] = True
    with pytest.raises(CaseError) as err:
        check_topology(net)
    msg = str(err.value)
    assert "\n" not in msg
    assert "case ieee33: the operating topology is meshed (1 independent loop(s)" in msg
    loop = ", ".join(f"{b} (#{b - 1})" for b in [2, 3, 4, 5, 6, 7, 8, 19, 20, 21])
    assert f"one through buses {loop});" in msg


def test_added_line_meshes_the_feeder_and_a_parallel_one_does_not():
    net = load_case("ieee33")
    pp.create_line_from_parameters(net, 1, 18, 1.0, 0.5, 0.5, 0.0, 0.4)  # parallel to line 17
    check_topology(net)  # parallel branches count as one
    pp.create_line_from_parameters(net, 17, 32, 1.0, 0.5, 0.5, 0.0, 0.4)  # "18" to "33"
    with pytest.raises(CaseError, match="meshed"):
        check_topology(net)


def test_no_slack_is_refused():
    net = load_case("ieee33")
    net.ext_grid["in_service"] = False
    with pytest.raises(CaseError, match="no in-service ext_grid"):
        check_topology(net)
    net = load_case("ieee33")
    net.bus.loc[0, "in_service"] = False
    with pytest.raises(CaseError, match="no in-service ext_grid"):
        check_topology(net)


def test_json_case_with_an_island_is_refused_before_a_plant(tmp_path):
    net = load_case("ieee33")
    net.line.loc[FEEDER_OF_26, "in_service"] = False
    path = tmp_path / "island.json"
    pp.to_json(net, str(path))
    sc = _scenario(str(path))
    for build in (scenario_net, build_plant, scenario_partition):
        with pytest.raises(ScenarioError) as err:
            build(sc)
        assert err.value.key == "case.name"
        assert str(err.value).startswith(f"case.name: case {path}: 8 of 33 in-service buses")


def test_json_case_with_a_loop_is_refused_before_a_plant(tmp_path):
    net = load_case("ieee33")
    net.line.loc[TIE_21_8, "in_service"] = True
    path = tmp_path / "mesh.json"
    pp.to_json(net, str(path))
    with pytest.raises(ScenarioError, match="operating topology is meshed") as err:
        build_plant(_scenario(str(path)))
    assert err.value.key == "case.name"


def test_fed_radial_json_case_builds(tmp_path):
    path = tmp_path / "radial.json"
    pp.to_json(load_case("ieee33"), str(path))
    plant = build_plant(_scenario(str(path)))
    assert len(plant.bus_labels) == 33
