"""Electrical distance and the partition context.

Sensitivities are checked against finite differences of pandapower power flows, the distances
against a hand-computed chain, and the context against the case, preset and profiles it is built
from.
"""

from __future__ import annotations

import copy
import math
import warnings

import networkx as nx
import numpy as np
import pandapower as pp
import pytest

from clustersim.errors import PartitionError, ScenarioError
from clustersim.partition import distance as D
from clustersim.partition.context import (
    CONTROLLABLE_KINDS,
    build_context,
    comm_params,
    context_for_case,
)
from clustersim.partition.core import CommParams
from clustersim.sim import cases, profiles, resources

ALL_CASES = cases.case_names()


def _runpp(net: pp.pandapowerNet, **kw: object) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, numba=False, lightsim2grid=False, max_iteration=30, **kw)


def _solved(case: str) -> tuple[pp.pandapowerNet, list[int]]:
    net = cases.load_case(case)
    _runpp(net, tolerance_mva=1e-9)
    return net, sorted(int(b) for b in cases.operating_graph(net).nodes)


@pytest.fixture(scope="module")
def ieee33() -> tuple[pp.pandapowerNet, list[int], np.ndarray, np.ndarray]:
    net, buses = _solved("ieee33")
    s_qv, s_pv = D.net_sensitivities(net, buses)
    return net, buses, s_qv, s_pv


@pytest.fixture(scope="module")
def ctx33():
    return context_for_case("ieee33")


def _descendants(net: pp.pandapowerNet, buses: list[int]) -> np.ndarray:
    """``desc[i, j]``: node i lies in the subtree of node j (rooted at the slack), i == j incl."""
    g = nx.Graph(cases.operating_graph(net))
    pos = {b: i for i, b in enumerate(buses)}
    tree = nx.bfs_tree(g, int(net.ext_grid.bus.iloc[0]))
    desc = np.zeros((len(buses), len(buses)), dtype=bool)
    for b in buses:
        for d in nx.descendants(tree, b) | {b}:
            desc[pos[d], pos[b]] = True
    return desc


# --------------------------------------------------------------------------------------------
# Sensitivities
# --------------------------------------------------------------------------------------------


def _finite_difference(net, buses, bus, kind):
    """Central difference of |V| at every node for a ±δ injection of P or Q at ``bus`` (p.u.)."""
    delta_pu = 1e-3
    vm = []
    for sign in (1.0, -1.0):
        n2 = copy.deepcopy(net)
        dp = sign * delta_pu * n2.sn_mva
        pp.create_sgen(n2, bus, p_mw=dp if kind == "p" else 0.0, q_mvar=dp if kind == "q" else 0.0)
        _runpp(n2, tolerance_mva=1e-9, init="results")
        vm.append(n2.res_bus.vm_pu.loc[buses].to_numpy())
    return (vm[0] - vm[1]) / (2 * delta_pu)


@pytest.mark.parametrize(
    ("case", "labels"),
    [
        ("ieee33", ["2", "6", "18", "25", "33"]),
        ("ieee123", ["9r", "35", "76", "114"]),  # regulators and fused buses
        ("simbench-mv-rural", ["MV1.101 Bus 10", "MV1.101 Bus 60"]),  # YNd5 trafo, open rings
    ],
)
def test_sensitivities_match_finite_differences(case, labels):
    net, buses = _solved(case)
    s_qv, s_pv = D.net_sensitivities(net, buses)
    by_label = {str(lbl): int(i) for i, lbl in net.bus["name"].items()}
    pos = {b: i for i, b in enumerate(buses)}
    for label in labels:
        j = pos[by_label[label]]
        for kind, s in (("q", s_qv), ("p", s_pv)):
            fd = _finite_difference(net, buses, buses[j], kind)
            scale = np.abs(s[:, j]).max()
            assert np.abs(fd - s[:, j]).max() <= 1e-4 * scale, (case, label, kind)


def test_sensitivities_with_voltage_dependent_loads():
    """ZIP loads everywhere but at the perturbed bus 17 (pandapower applies a bus's ZIP shares to
    every injection there, so the finite-difference sgen must sit at a constant-power bus)."""
    net = cases.load_case("ieee33")
    zip_ = net.load.bus != 17
    net.load.loc[zip_, "const_z_p_percent"] = 40.0
    net.load.loc[zip_, "const_i_q_percent"] = 30.0
    _runpp(net, tolerance_mva=1e-9)
    buses = list(net.bus.index)
    s_qv, s_pv = D.net_sensitivities(net, buses)
    for kind, s in (("q", s_qv), ("p", s_pv)):
        fd = _finite_difference(net, buses, 17, kind)
        assert np.abs(fd - s[:, 17]).max() <= 1e-4 * np.abs(s[:, 17]).max()


def test_jacobian_convention_and_schur_forms(ieee33):
    net, _, _, _ = ieee33
    it = net._ppc["internal"]
    pv, pq = it["pv"], it["pq"]
    point = D.OperatingPoint(it["Ybus"], it["V"], pv, pq)
    h, n, m, lq = point.jacobian_blocks()
    jac = np.block([[h, n], [m, lq]])
    # pandapower's stored J: same layout and convention, evaluated one Newton step earlier
    stored = it["J"].toarray()
    assert np.abs(jac - stored).max() <= 1e-6 * np.abs(stored).max()
    s_qv, s_pv = point.sensitivities()
    schur_q = np.linalg.inv(lq - m @ np.linalg.solve(h, n))  # [CVC]: (L − M H⁻¹ N)⁻¹
    schur_p = np.linalg.inv(n - h @ np.linalg.solve(m, lq))  # (N − H M⁻¹ L)⁻¹
    assert np.allclose(s_qv[np.ix_(pq, pq)], schur_q, rtol=1e-9, atol=1e-12)
    assert np.allclose(s_pv[np.ix_(pq, pq)], schur_p, rtol=1e-9, atol=1e-12)


def test_radial_feeder_sensitivity_structure(ieee33):
    """What holds on a radial feeder at a loaded operating point (ieee33 at peak load).

    Positive everywhere off the slack. S_jj is *not* always the largest entry of column j: it
    is strictly larger than S_ij for every node i outside the subtree of j, while a node i
    downstream of j sees a slightly *larger* change (up to ~10 % at ieee33's peak; equal in the
    linearized DistFlow model). That downstream ratio ΔV_i/ΔV_j does not depend on whether P or
    Q was injected at j.
    """
    net, buses, s_qv, s_pv = ieee33
    slack = buses.index(int(net.ext_grid.bus.iloc[0]))
    desc = _descendants(net, buses)
    keep = np.arange(len(buses)) != slack
    off = ~np.eye(len(buses), dtype=bool)
    ratios = {}
    for s in (s_qv, s_pv):
        assert np.all(s[slack] == 0) and np.all(s[:, slack] == 0)
        sub = s[np.ix_(keep, keep)]
        assert sub.min() > 0
        ratio = s / np.where(np.diag(s) > 0, np.diag(s), 1.0)[None, :]
        outside = ~desc & keep[:, None] & keep[None, :]
        assert ratio[outside].max() < 1.0
        down = desc & off & keep[None, :]
        assert 1.0 <= ratio[down].min() and ratio[down].max() < 1.15
        ratios[id(s)] = ratio[down]
    assert np.allclose(*ratios.values(), rtol=1e-9)


# --------------------------------------------------------------------------------------------
# Distances: a chain computed by hand
# --------------------------------------------------------------------------------------------


def test_b_matrix_distance_on_a_hand_chain():
    """Slack 0 — 1 — 2 — 3 with series reactances 1, 1, 2 p.u.: X is the reactance shared by the
    two nodes' paths to the slack, α_ij = X_ij / X_jj, d_ij = −lg α_ij."""
    x_line = [1.0, 1.0, 2.0]
    b = np.zeros((4, 4))
    for k, x in enumerate(x_line):
        b[k, k] -= 1 / x
        b[k + 1, k + 1] -= 1 / x
        b[k, k + 1] = b[k + 1, k] = 1 / x
    x = D.b_matrix_reactance(b, [0])
    expected = np.array([[0, 0, 0, 0], [0, 1, 1, 1], [0, 1, 2, 2], [0, 1, 2, 4]], dtype=float)
    assert np.allclose(x, expected)
    alpha = D.s1_alpha(x)
    assert np.allclose(alpha[1:, 1:], [[1, 0.5, 0.25], [1, 1, 0.5], [1, 1, 1]])
    a = math.log10(2)
    # d rows (node 1..3): (0, a, 2a), (0, 0, a), (0, 0, 0); the slack's zero row and column are
    # clipped to the smallest positive X (1), which puts the slack where node 1 is
    assert np.allclose(D.attenuation(x)[1:, 1:], [[0, a, 2 * a], [0, 0, a], [0, 0, 0]])
    m = D.s1_distance(x)
    assert np.allclose(m, m.T) and np.all(np.diag(m) == 0)
    assert m[0, 1] == pytest.approx(0.0, abs=1e-12)
    assert m[1, 2] == pytest.approx(a * math.sqrt(2))
    assert m[1, 3] == pytest.approx(a * math.sqrt(5))
    assert m[2, 3] == pytest.approx(a)


def test_hand_chain_through_pandapower():
    """The same chain as a pandapower net (10 kV, 1 MVA base: Z_base = 100 Ω; lossless, no load):
    the B-matrix X and, at the flat no-load point, the Jacobian Q–V sensitivity both equal the
    shared path reactance in p.u."""
    net = pp.create_empty_network(sn_mva=1.0)
    bus = [pp.create_bus(net, vn_kv=10.0, name=str(i)) for i in range(4)]
    pp.create_ext_grid(net, bus[0], vm_pu=1.0)
    for k, x_ohm in enumerate([100.0, 100.0, 200.0]):
        pp.create_line_from_parameters(
            net,
            bus[k],
            bus[k + 1],
            length_km=1.0,
            r_ohm_per_km=0.0,
            x_ohm_per_km=x_ohm,
            c_nf_per_km=0.0,
            max_i_ka=1.0,
        )
    _runpp(net)
    x = D.net_b_matrix_reactance(net, bus)
    expected = np.array([[0, 0, 0, 0], [0, 1, 1, 1], [0, 1, 2, 2], [0, 1, 2, 4]], dtype=float)
    assert np.allclose(x, expected)
    s_qv, s_pv = D.net_sensitivities(net, bus)
    assert np.allclose(s_qv, expected, atol=1e-9)
    assert np.allclose(s_pv, 0.0, atol=1e-9)  # lossless and unloaded: P moves only angles
    ctx = build_context(net, name="chain")
    assert np.allclose(ctx.d_s1, D.s1_distance(expected))
    assert ctx.topo_dist[0, 3] == 3 and ctx.length_dist_km[0, 3] == pytest.approx(3.0)


def test_attenuation_clips_non_positive_entries():
    s = np.array([[0.0, 0.0], [0.0, 2.0]])
    e = D.attenuation(s)
    assert np.all(np.isfinite(e))
    assert np.allclose(D.attenuation(np.zeros((3, 3))), 0.0)
    assert np.allclose(D.s2_coupling(np.zeros((2, 2)), np.zeros((2, 2))), 1.0)


# --------------------------------------------------------------------------------------------
# The context of ieee33 with its preset and profiles
# --------------------------------------------------------------------------------------------


def test_distance_matrices_properties(ctx33):
    n = ctx33.n
    a = ctx33.a_s2
    assert a.shape == (n, n)
    assert np.all((a >= 0) & (a <= 1)) and np.allclose(np.diag(a), 1.0)
    assert np.array_equal(a, a.T) and a.min() == 0.0
    d = ctx33.d_s1
    assert np.array_equal(d, d.T) and np.all(np.diag(d) == 0) and np.all(d >= 0)
    # [NSGA3PART] on a feeder without taps: α = 1 downstream, < 1 elsewhere, so every d_ij >= 0
    x = ctx33.extra["x_b_pu"]
    net, buses = _solved("ieee33")
    desc = _descendants(net, buses)
    keep = np.arange(n) != ctx33.slack
    alpha = D.s1_alpha(x)[np.ix_(keep, keep)]
    sub = desc[np.ix_(keep, keep)]
    assert np.allclose(alpha[sub], 1.0) and alpha[~sub].max() < 1.0 and alpha.min() > 0


def test_time_varying_distance(ctx33):
    n = ctx33.n
    assert ctx33.e_t.shape == ctx33.d_t.shape == (24, n, n)
    e, d = ctx33.e_t, ctx33.d_t
    assert np.all((e >= 0) & (e <= 1))
    assert np.allclose(e.diagonal(axis1=1, axis2=2), 1.0)
    assert np.array_equal(d, d.transpose(0, 2, 1)) and np.all(d >= 0)
    assert np.allclose(e, 1.0 - d / d.max(axis=(1, 2), keepdims=True))
    assert not np.allclose(d[0], d[12])  # night vs. midday operating points differ
    assert ctx33.extra["snapshot_index"].tolist() == list(range(0, 96, 4))
    assert ctx33.extra["failed_snapshots"] == []


def test_snapshot_matches_pandapower_at_that_time(ctx33):
    """Re-create one snapshot the plant's way (profiles × ratings, pandapower runpp) and compare."""
    k = 13
    t = int(ctx33.extra["snapshot_index"][k])
    prof = profiles.synthetic(1, seed=0).actual.iloc[t]
    net = cases.load_case("ieee33")
    res = resources.load_preset("ieee33-ev")
    res.attach(net)
    ev = net.load.type.isin(["ev", "exchange"])
    net.load.loc[~ev, "p_mw"] *= prof["load_p"]
    net.load.loc[~ev, "q_mvar"] *= prof["load_q"]
    net.load.loc[ev, ["p_mw", "q_mvar"]] *= prof["ev"]
    rated = {d.name: d.p_mw for d in res.of_kind("pv")}
    pv = net.sgen.type == "PV"
    net.sgen.loc[pv, "p_mw"] = net.sgen.loc[pv, "name"].map(rated) * prof["pv"]
    _runpp(net, tolerance_mva=1e-9)
    s_qv, _ = D.net_sensitivities(net, ctx33.buses)
    assert np.allclose(ctx33.d_t[k], D.electrical_distance(s_qv), atol=1e-6)


def test_snapshots_with_voltage_dependent_loads_use_pandapower():
    net = cases.load_case("ieee33")
    net.load["const_z_p_percent"] = 50.0
    prof = profiles.synthetic(1, seed=3)
    ctx = build_context(net, None, prof, snapshots=2)
    assert ctx.extra["snapshot_index"].tolist() == [0, 48]
    for k, t in enumerate(ctx.extra["snapshot_index"]):
        n2 = copy.deepcopy(net)
        n2.load["p_mw"] *= prof.actual["load_p"].iloc[t]
        n2.load["q_mvar"] *= prof.actual["load_q"].iloc[t]
        _runpp(n2, tolerance_mva=1e-9)
        s_qv, _ = D.net_sensitivities(n2, ctx.buses)
        assert np.allclose(ctx.d_t[k], D.electrical_distance(s_qv), atol=1e-6)


def test_ieee33_context_fields(ctx33):
    ctx = ctx33
    preset = resources.load_preset("ieee33-ev")
    prof = profiles.synthetic(1, seed=0).actual
    net = cases.load_case("ieee33")
    assert ctx.n == 33 and ctx.bus_labels[ctx.slack] == "1" and ctx.slack == 0
    assert ctx.bus_labels == [str(i) for i in range(1, 34)]
    assert nx.is_tree(ctx.graph) and nx.is_frozen(ctx.graph)
    # hop counts and line lengths (case33bw: every line 1 km)
    hops = dict(nx.all_pairs_shortest_path_length(ctx.graph))
    assert all(ctx.topo_dist[i, j] == hops[i][j] for i in hops for j in hops[i])
    assert np.allclose(ctx.length_dist_km, ctx.topo_dist)
    # power per node
    t = len(prof)
    assert ctx.p_load_mw.shape == ctx.q_load_mvar.shape == ctx.p_gen_mw.shape == (t, 33)
    ev_mw = sum(d.p_peak_mw for d in preset.of_kind("ev", "exchange"))
    expected = net.load.p_mw.sum() * prof["load_p"].to_numpy() + ev_mw * prof["ev"].to_numpy()
    assert np.allclose(ctx.p_load_mw.sum(axis=1), expected)
    expected_q = net.load.q_mvar.sum() * prof["load_q"].to_numpy()
    ev_q = sum(
        d.p_peak_mw * math.tan(math.acos(d.power_factor)) for d in preset.of_kind("ev", "exchange")
    )
    assert np.allclose(ctx.q_load_mvar.sum(axis=1), expected_q + ev_q * prof["ev"].to_numpy())
    pv_mw = sum(d.p_mw for d in preset.of_kind("pv"))
    assert np.allclose(ctx.p_gen_mw.sum(axis=1), pv_mw * prof["pv"].to_numpy())
    assert ctx.p_gen_mw[:, ctx.bus_labels.index("6")].max() == pytest.approx(
        0.0743 * prof["pv"].max()
    )
    # resources per node
    n_ctrl = sum(1 for d in preset.devices if d.kind in CONTROLLABLE_KINDS)
    assert ctx.n_resources.sum() == n_ctrl == 24
    assert ctx.n_resources[ctx.bus_labels.index("30")] == 2  # SVC3 + CB4
    assert ctx.n_users.sum() == 32 + 8  # every load is one user, EV / exchange stations too
    assert ctx.q_comp_mvar.sum() == pytest.approx(7 * 1.1 * 0.0743 + 3 * 0.1 + 5 * 3 * 0.05)
    assert ctx.p_flex_mw.sum() == pytest.approx(5 * 0.05 + 3 * 0.05)
    # channel model defaults, coordinates, immutability
    assert ctx.comm.rtt_ms[0, 1] == 100.0 and ctx.comm.loss[0, 1] == 0.01
    assert ctx.comm.rtt_max_ms == 100.0 and ctx.comm.loss_max == 0.01
    assert ctx.coords is not None and ctx.coords.shape == (33, 2)
    with pytest.raises(ValueError):
        ctx.s_qv[0, 0] = 1.0
    assert context_for_case("ieee33") is ctx


def test_build_context_leaves_net_alone_and_without_profiles():
    net = cases.load_case("ieee33")
    preset = resources.load_preset("ieee33-ev")
    ctx = build_context(net, preset)
    assert len(net.sgen) == 0 and len(net.storage) == 0  # resources went onto a copy
    assert ctx.p_load_mw.shape == (1, 33) and ctx.e_t.shape == (1, 33, 33)
    assert ctx.p_load_mw.sum() == pytest.approx(3.715 + 8 * 0.014)
    assert ctx.p_gen_mw.sum() == pytest.approx(7 * 0.0743)  # rated: every factor 1
    assert np.allclose(ctx.d_t[0], D.electrical_distance(ctx.s_qv))
    with pytest.raises(PartitionError):
        build_context(net, snapshots=0)


def test_resources_fall_back_to_the_net():
    ctx = context_for_case("ieee123", preset="")
    kinds = {k: int(v.sum()) for k, v in ctx.extra["resources_by_kind"].items()}
    assert kinds == {"capacitor": 4, "regulator": 4}
    assert ctx.q_comp_mvar.sum() == pytest.approx(0.6 + 3 * 0.05)
    assert ctx.extra["resource_set"] is None


def test_comm_params():
    c = comm_params(3, {"latency": {"mean_ms": 20.0}, "loss": {"p": 0.05}})
    assert c.rtt_ms[0, 2] == 40.0 and c.rtt_ms[1, 1] == 0.0 and c.loss_max == 0.05
    zero = comm_params(2, {"latency": {"mean_ms": 0.0}, "loss": {"p": 0.0}})
    assert zero.rtt_max_ms > 0 and zero.loss_max > 0
    given = CommParams(np.ones((2, 2)), np.zeros((2, 2)), 1.0, 1.0)
    assert comm_params(2, given) is given
    with pytest.raises(PartitionError):
        comm_params(3, given)


def test_preset_for_another_case_is_refused():
    with pytest.raises(ScenarioError, match="written for case"):
        context_for_case("ieee69", preset="ieee33-ev")


# --------------------------------------------------------------------------------------------
# Every built-in case
# --------------------------------------------------------------------------------------------


def _energized_fused_buses(case: str) -> int:
    """Independently of operating_graph: pandapower's own power flow energizes the buses and
    fuses closed bus-bus switches into one internal bus."""
    net = cases.load_case(case)
    _runpp(net)
    energized = net.res_bus.index[net.res_bus.vm_pu.notna()]
    lookup = net._pd2ppc_lookups["bus"]
    return len(set(lookup[energized.to_numpy()].tolist()))


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=pytest.mark.slow) if c == "case1197" else c for c in ALL_CASES]
)
def test_context_for_every_case(case):
    ctx = context_for_case(case)
    n = ctx.n
    assert n == _energized_fused_buses(case)
    assert nx.is_connected(ctx.graph) and sorted(ctx.graph.nodes) == list(range(n))
    assert all("length_km" in d for _, _, d in ctx.graph.edges(data=True))
    t = ctx.p_load_mw.shape[0]
    assert t == 96
    for name, shape in {
        "topo_dist": (n, n),
        "length_dist_km": (n, n),
        "s_qv": (n, n),
        "s_pv": (n, n),
        "a_s2": (n, n),
        "d_s1": (n, n),
        "e_t": (24, n, n),
        "d_t": (24, n, n),
        "p_load_mw": (t, n),
        "q_load_mvar": (t, n),
        "p_gen_mw": (t, n),
        "q_comp_mvar": (n,),
        "p_flex_mw": (n,),
        "n_users": (n,),
        "n_resources": (n,),
    }.items():
        value = getattr(ctx, name)
        assert value.shape == shape, name
        assert np.all(np.isfinite(value)), name
    assert np.all(ctx.s_qv[np.arange(n) != ctx.slack][:, np.arange(n) != ctx.slack] > 0)
    assert np.all((ctx.a_s2 >= 0) & (ctx.a_s2 <= 1)) and np.array_equal(ctx.a_s2, ctx.a_s2.T)
    assert np.all(ctx.d_s1 >= 0) and np.allclose(ctx.d_s1, ctx.d_s1.T)
    assert np.all((ctx.e_t >= 0) & (ctx.e_t <= 1))
    assert ctx.p_load_mw.sum() > 0 and ctx.n_users.sum() > 0
    assert ctx.extra["failed_snapshots"] == [] and ctx.extra["unplaced_devices"] == []
    # a bound against a regression by orders of magnitude (case1197: 21 s on 2 cores)
    assert ctx.extra["build_time_s"] < (60.0 if case == "case1197" else 10.0)
