"""The MATPOWER-derived cases ieee51 / ieee69 / case1197 and their converter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandapower as pp
import pytest

from clustersim.errors import CaseError
from clustersim.sim.cases import check_topology, describe_case, load_case
from clustersim.sim.data.convert_matpower import (
    DETC_TAPS,
    OLTC_TAPS,
    main,
    matpower_to_pandapower,
)

# Published base cases with a 1.0 p.u. source: (n_buses, losses kW, min vm p.u., min bus)
PINNED = {
    "ieee51": (51, 129.6, 0.9081, "16"),  # Gampa & Das 2015
    "ieee69": (69, 225.0, 0.9092, "65"),  # Baran & Wu 1989
}

MINIMAL_CASE = """\
function mpc = tiny
mpc.version = '2';
mpc.baseMVA = 1;
mpc.bus = [
\t1\t3\t0\t0\t0\t0\t1\t1\t0\t11\t1\t1\t1;
\t2\t1\t100\t50\t0\t0\t1\t1\t0\t11\t1\t1.1\t0.9;
];
mpc.gen = [
\t1\t0\t0\t10\t-10\t1\t100\t1\t10\t0;
];
mpc.branch = [
\t1\t2\t1.21\t2.42\t0\t0\t0\t0\t0\t0\t1\t-360\t360;
];
Vbase = mpc.bus(1, BASE_KV) * 1e3;
Sbase = mpc.baseMVA * 1e6;
mpc.branch(:, [BR_R BR_X]) = mpc.branch(:, [BR_R BR_X]) / (Vbase^2 / Sbase);
mpc.bus(:, [PD, QD]) = mpc.bus(:, [PD, QD]) / 1e3;
"""


@pytest.mark.parametrize("name", sorted(PINNED))
def test_base_case_matches_published(name: str) -> None:
    n_buses, losses_kw, min_vm_pu, _ = PINNED[name]
    d = describe_case(name)
    assert d["n_buses"] == n_buses
    assert d["n_lines"] == n_buses - 1
    assert d["radial"] is True
    assert d["base_losses_kw"] == pytest.approx(losses_kw, abs=1.0)
    assert d["min_vm_pu"] == pytest.approx(min_vm_pu, abs=5e-4)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_bus_labels_and_weakest_bus(name: str) -> None:
    n_buses, _, _, weakest = PINNED[name]
    net = load_case(name)
    assert list(net.bus["name"]) == [str(i) for i in range(1, n_buses + 1)]
    assert list(net.ext_grid.bus) == [0]
    assert net.ext_grid.vm_pu.tolist() == [1.0]
    assert (net.line.c_nf_per_km == 0).all()
    assert (net.line.length_km == 1.0).all()
    pp.runpp(net, lightsim2grid=False)
    assert net.bus.at[net.res_bus.vm_pu.idxmin(), "name"] == weakest


@pytest.mark.parametrize("name", sorted(PINNED))
def test_reconversion_reproduces_shipped_file(name: str, shared_data: Path, tmp_path: Path) -> None:
    assert main([str(shared_data / "matpower"), str(tmp_path)]) == 0
    fresh = pp.from_json(str(tmp_path / f"{name}.json"))
    shipped = load_case(name)
    pp.runpp(fresh, lightsim2grid=False)
    pp.runpp(shipped, lightsim2grid=False)
    for table, cols in (("res_bus", ["vm_pu", "va_degree"]), ("res_line", ["pl_mw", "ql_mvar"])):
        np.testing.assert_allclose(
            getattr(fresh, table)[cols].to_numpy(),
            getattr(shipped, table)[cols].to_numpy(),
            rtol=0,
            atol=1e-9,
        )


def test_conversion_units(tmp_path: Path) -> None:
    """1.21 + j2.42 ohm stays ohm on a 1 km line; 100 kW + j50 kVAr becomes 0.1 MW + j0.05 MVAr."""
    path = tmp_path / "tiny.m"
    path.write_text(MINIMAL_CASE)
    net = matpower_to_pandapower(path, "tiny")
    assert net.name == "tiny"
    assert net.line.r_ohm_per_km.iloc[0] == pytest.approx(1.21)
    assert net.line.x_ohm_per_km.iloc[0] == pytest.approx(2.42)
    assert net.load.p_mw.tolist() == [pytest.approx(0.1)]
    assert net.load.q_mvar.tolist() == [pytest.approx(0.05)]
    assert net.bus.vn_kv.tolist() == [11.0, 11.0]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t[: t.index("mpc.branch = [")] + t[t.index("Vbase") :], "mpc.branch"),
        (lambda t: t.replace("mpc.baseMVA = 1;\n", ""), "mpc.baseMVA is missing"),
        (lambda t: t.replace("\t100\t50", "\t100\tabc"), "non-numeric"),
        (lambda t: t.replace("\t0.9;\n];", "\n];"), "different lengths"),
        (lambda t: t.replace("/ 1e3;", "/ 1e3;\nmpc.bus(2, PD) = 5;"), "unsupported MATLAB"),
        (lambda t: t.replace("\t1\t2\t1.21", "\t1\t7\t1.21"), "unknown bus"),
    ],
    ids=["no-branch", "no-baseMVA", "non-numeric", "ragged", "unknown-code", "dangling-branch"],
)
def test_malformed_file_raises_case_error(edit, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.m"
    path.write_text(edit(MINIMAL_CASE))
    with pytest.raises(CaseError, match=message) as info:
        matpower_to_pandapower(path, "bad")
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_raises_case_error(tmp_path: Path) -> None:
    with pytest.raises(CaseError, match="cannot read"):
        matpower_to_pandapower(tmp_path / "absent.m", "absent")


def test_cli_reports_error_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_case1197_base_case_matches_the_reference() -> None:
    """The 1,197-bus feeder with its 23 transformers reproduces the reference base case of the
    data README (pandapower ``from_ppc`` on the file): slack import 1.8038 MW, losses 54.84 kW
    (54.38 kW in the lines, 0.45 kW in the transformers), minimum voltage 0.9225 p.u."""
    net = load_case("case1197")
    assert (len(net.bus), len(net.line), len(net.trafo), len(net.load)) == (1197, 1173, 23, 1166)
    assert sorted(set(net.bus.vn_kv)) == [0.415, 23.0, 150.0]
    check_topology(net, "case1197")
    pp.runpp(net, lightsim2grid=False)
    assert net.res_ext_grid.p_mw.sum() == pytest.approx(1.8038, abs=5e-5)
    assert net.res_line.pl_mw.sum() * 1e3 == pytest.approx(54.38, abs=0.01)
    assert net.res_trafo.pl_mw.sum() * 1e3 == pytest.approx(0.45, abs=0.01)
    assert net.res_bus.vm_pu.min() == pytest.approx(0.9225, abs=5e-5)


def test_case1197_transformers() -> None:
    """The substation transformer carries the on-load tap changer, the 22 distribution
    transformers (100 kVA, 23/0.415 kV) off-circuit taps, all at neutral."""
    net = load_case("case1197")
    sub = net.trafo[net.trafo.hv_bus.isin(net.ext_grid.bus)]
    assert len(sub) == 1 and sub.name.iloc[0] == "1-2"
    assert (sub.tap_min.iloc[0], sub.tap_max.iloc[0], sub.tap_step_percent.iloc[0]) == OLTC_TAPS
    dist = net.trafo.drop(sub.index)
    assert len(dist) == 22 and (dist.sn_mva == 0.1).all()
    assert (dist.vn_hv_kv == 23.0).all() and (dist.vn_lv_kv == 0.415).all()
    assert (dist.tap_max == DETC_TAPS[1]).all() and (net.trafo.tap_pos == 0).all()
    assert (net.trafo.tap_changer_type == "Ratio").all()


CROSS_VOLTAGE = MINIMAL_CASE.replace("\t0\t11\t1\t1.1\t0.9;", "\t0\t0.415\t1\t1.1\t0.9;").replace(
    "\t0\t0\t0\t0\t0\t1\t-360", "\t0\t0\t0\t1\t0\t1\t-360"
)


def test_a_branch_between_base_voltages_needs_ratio_1_and_a_known_rating(tmp_path: Path) -> None:
    """Ratio 1 between 11 kV and 0.415 kV: a transformer; another ratio or an unrated voltage
    pair is refused in one line."""
    path = tmp_path / "cross.m"
    path.write_text(CROSS_VOLTAGE)
    with pytest.raises(CaseError, match=r"no transformer rating known for 11/0\.415 kV"):
        matpower_to_pandapower(path, "cross")
    path.write_text(CROSS_VOLTAGE.replace("\t1\t0\t1\t-360", "\t0.95\t0\t1\t-360"))
    with pytest.raises(CaseError, match=r"ratio 0\.95"):
        matpower_to_pandapower(path, "cross")
