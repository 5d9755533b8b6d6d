"""Tests of clustersim.partition.metrics on small hand-checkable contexts."""

from __future__ import annotations

import math
import time
from typing import Any

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustersim.partition import metrics as M
from clustersim.partition.core import CommParams, PartitionContext

# --------------------------------------------------------------------------------------------
# fixture factory
# --------------------------------------------------------------------------------------------


def make_ctx(
    graph: nx.Graph | str = "chain",
    n: int = 6,
    t: int = 6,
    *,
    seed: int = 0,
    **fields: Any,
) -> PartitionContext:
    """A PartitionContext with every field filled; ``fields`` override any of them.

    ``graph``: "chain" (0-1-…-(n-1)), "star" (centre 0) or an nx.Graph on 0..n-1. Edge lengths
    default to 1 km. Power arrays default to smooth random profiles (seeded).
    """
    if isinstance(graph, str):
        g = nx.path_graph(n) if graph == "chain" else nx.star_graph(n - 1)
    else:
        g = graph
    n = g.number_of_nodes()
    for u, v in g.edges():
        g.edges[u, v].setdefault("length_km", 1.0)
    topo = np.asarray(nx.floyd_warshall_numpy(g, nodelist=range(n), weight=None))
    length = np.asarray(nx.floyd_warshall_numpy(g, nodelist=range(n), weight="length_km"))
    # radial sensitivity: shared path length to the slack (node 0), plus a little self term
    shared = (length[0][:, None] + length[0][None, :] - length) / 2.0
    s_qv = 0.01 * (shared + 0.1 * np.eye(n) + 0.01)
    a = np.exp(-length)
    rng = np.random.default_rng(seed)
    hours = np.arange(t) / max(t, 1)
    p_load = 0.1 + 0.05 * rng.random((t, n)) + 0.05 * np.sin(np.pi * hours)[:, None]
    base: dict[str, Any] = {
        "name": "toy",
        "buses": list(range(n)),
        "bus_labels": [f"b{i}" for i in range(n)],
        "graph": g,
        "topo_dist": topo,
        "length_dist_km": length,
        "slack": 0,
        "s_qv": s_qv,
        "s_pv": 0.5 * s_qv,
        "a_s2": a,
        "d_s1": length,
        "e_t": np.stack([a, a**2]),
        "d_t": np.stack([length, 1.5 * length]),
        "p_load_mw": p_load,
        "q_load_mvar": 0.3 * p_load,
        "p_gen_mw": 0.2 * rng.random((t, n)),
        "q_comp_mvar": 0.05 * rng.random(n),
        "p_flex_mw": 0.02 * rng.random(n),
        "n_users": rng.integers(1, 5, n),
        "n_resources": rng.integers(0, 3, n),
        "comm": CommParams(
            rtt_ms=np.full((n, n), 100.0),
            loss=np.full((n, n), 0.01),
            rtt_max_ms=100.0,
            loss_max=0.01,
        ),
    }
    base.update(fields)
    return PartitionContext(**base)


def random_tree_ctx(n: int, t: int = 96, seed: int = 0) -> PartitionContext:
    rng = np.random.default_rng(seed)
    g = nx.Graph()
    g.add_nodes_from(range(n))
    for i in range(1, n):
        g.add_edge(i, int(rng.integers(0, i)), length_km=float(rng.uniform(0.1, 2.0)))
    ctx = make_ctx(g, t=t, seed=seed)
    # 24 snapshots of time-varying weights
    e = np.stack([ctx.a_s2 ** (1.0 + 0.05 * s) for s in range(24)])
    return make_ctx(g, t=t, seed=seed, e_t=e, d_t=-np.log(np.maximum(e, 1e-300)))


# --------------------------------------------------------------------------------------------
# modularity
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_modularity_matches_networkx(seed):
    rng = np.random.default_rng(seed)
    n = 8
    w = rng.random((n, n))
    w = (w + w.T) / 2.0
    w[rng.random((n, n)) < 0.3] = 0.0
    w = np.triu(w, 1)
    w = w + w.T
    g = nx.from_numpy_array(w)
    for k in (1, 2, 3):
        labels = rng.integers(0, k, n)
        comms = [set(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)]
        expected = nx.algorithms.community.modularity(g, comms, weight="weight")
        assert M.weighted_modularity(w, labels) == pytest.approx(expected, abs=1e-12)


def test_weighted_modularity_ignores_diagonal_and_empty_graph():
    w = np.array([[5.0, 1.0], [1.0, 7.0]])
    assert M.weighted_modularity(w, [0, 1]) == pytest.approx(-0.5)
    assert M.weighted_modularity(np.zeros((3, 3)), [0, 1, 1]) == 0.0


def test_two_community_graph_perfect_split_beats_mixed():
    w = np.zeros((6, 6))
    for block in ([0, 1, 2], [3, 4, 5]):
        for i in block:
            for j in block:
                if i != j:
                    w[i, j] = 1.0
    w[2, 3] = w[3, 2] = 0.1
    perfect = M.weighted_modularity(w, [0, 0, 0, 1, 1, 1])
    mixed = M.weighted_modularity(w, [0, 1, 0, 1, 0, 1])
    assert perfect > 0.4 > mixed


# --------------------------------------------------------------------------------------------
# [EVEC]
# --------------------------------------------------------------------------------------------


def test_alpha_one_for_self_balanced_clusters():
    t, n = 4, 4
    load = np.array([[0.1, 0.2, 0.3, 0.1]] * t)
    gen = np.zeros((t, n))
    gen[:, 1] = load[:, 0] + load[:, 1]  # cluster {0, 1}
    gen[:, 3] = load[:, 2] + load[:, 3]  # cluster {2, 3}
    ctx = make_ctx(
        n=n,
        t=t,
        p_load_mw=load,
        p_gen_mw=gen,
        q_load_mvar=0.5 * load,
        q_comp_mvar=np.array([0.0, 0.2, 0.0, 0.3]),
    )
    a = M.s0_alpha(ctx, [0, 0, 1, 1])
    assert a == {"alpha_p": 1.0, "alpha_q": 1.0, "alpha": 1.0}
    # a mixed split is not balanced: cluster {0, 2} is pure load
    mixed = M.s0_alpha(ctx, [0, 1, 0, 1])
    assert mixed["alpha_p"] < 1.0


def test_alpha_hand_values():
    # one cluster, two steps: G = (1, 0), D = (1, 2) -> 1 - (0 + 2)/(2 + 2) = 0.5
    ctx = make_ctx(
        n=2,
        t=2,
        p_load_mw=np.array([[1.0, 0.0], [2.0, 0.0]]),
        p_gen_mw=np.array([[0.0, 1.0], [0.0, 0.0]]),
        q_load_mvar=np.array([[1.0, 0.0], [3.0, 0.0]]),
        q_comp_mvar=np.array([0.0, 2.0]),
    )
    a = M.s0_alpha(ctx, [0, 0])
    assert a["alpha_p"] == pytest.approx(0.5)
    # Q: |Q| = (1, 3), C = 2 -> deficit (0 + 1)/(1 + 3)
    assert a["alpha_q"] == pytest.approx(0.75)


def test_beta_larger_for_compact_clusters():
    ctx = make_ctx("chain", n=6)
    compact = M.s0_beta(ctx, [0, 0, 0, 1, 1, 1])
    scattered = M.s0_beta(ctx, [0, 1, 0, 1, 0, 1])
    assert compact > scattered
    assert M.s0_beta(ctx, [0] * 6) == 1.0


def test_beta_hand_value_star():
    # star centre 0, leaves 1..3; clusters {0, 1}, {2, 3}
    ctx = make_ctx("star", n=4)
    # node 0: in = 1/1; out = (1 + 1)/2 = 1 -> 0.5
    # node 1: in = 1;   out = (1/2 + 1/2)/2 = 0.5 -> 2/3
    # node 2: in = 1/2; out = (1 + 1/2)/2 = 0.75 -> 0.4 ; node 3 alike
    expected = (0.5 + 2 / 3 + 0.4 + 0.4) / 4
    assert M.s0_beta(ctx, [0, 0, 1, 1]) == pytest.approx(expected)


def test_gamma_is_one_without_inter_cluster_weight_and_zero_for_k1():
    w = np.zeros((4, 4))
    w[0, 1] = w[1, 0] = 1.0
    w[2, 3] = w[3, 2] = 2.0
    ctx = make_ctx(n=4, e_t=np.stack([w, 3.0 * w, np.zeros((4, 4))]))
    assert M.s0_gamma(ctx, [0, 0, 1, 1]) == pytest.approx(1.0)
    assert M.s0_gamma(ctx, [0, 0, 0, 0]) == 0.0
    assert M.s0_gamma(ctx, [0, 1, 0, 1]) < 0.0


def test_gamma_equals_weighted_mean_of_normalized_modularity():
    ctx = random_tree_ctx(12, t=8, seed=3)
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 0, 1, 2])
    num = den = 0.0
    for w in ctx.e_t:
        q = M.weighted_modularity(w, labels)
        w0 = w - np.diag(np.diag(w))
        dc = np.array([w0[labels == c].sum() for c in range(3)]) / w0.sum()
        num += q
        den += 1.0 - float((dc**2).sum())
    assert M.s0_gamma(ctx, labels) == pytest.approx(num / den)


def test_sigma_parts_hand_values():
    t, n = 2, 4
    ctx = make_ctx(
        n=n,
        t=t,
        d_t=np.stack([np.full((n, n), 1.0), np.full((n, n), 3.0)]),  # mean distance 2
        p_load_mw=np.full((t, n), 0.25),  # system load 1 MW
        p_gen_mw=np.zeros((t, n)),
        p_flex_mw=np.array([0.75, 0.0, 0.0, 0.0]),
        q_load_mvar=np.zeros((t, n)),
        q_comp_mvar=np.array([0.0, 0.0, 0.0, 0.5]),
    )
    parts = M.s0_sigma_parts(ctx, [[0], [3]])
    assert parts["r_distance"] == pytest.approx(1 - math.exp(-2.0))
    # P demand per cluster 0.5 MW; group 0 surplus 0.5 -> x = 1; group 1 surplus 0 -> 0
    # Q: no reactive load -> any surplus scores 1: group 0 -> 0, group 1 -> 1
    s0 = ((1 - math.exp(-1.0)) + 0.0) / 2
    s1 = (0.0 + 1.0) / 2
    assert parts["r_net"] == pytest.approx((s0 + s1) / 2)
    assert parts["sigma"] == pytest.approx(0.5 * parts["r_distance"] + 0.5 * parts["r_net"])
    assert M.s0_sigma(ctx, [[0], [3]], w1=1.0, w2=0.0) == pytest.approx(parts["r_distance"])
    one = M.s0_sigma_parts(ctx, [[0, 1]])
    assert one["r_distance"] == 1.0
    assert all(math.isfinite(v) for v in one.values())


def test_tau_is_weighted_sum():
    ctx = make_ctx(n=6)
    labels = [0, 0, 1, 1, 2, 2]
    a, b, g = M.s0_alpha(ctx, labels)["alpha"], M.s0_beta(ctx, labels), M.s0_gamma(ctx, labels)
    assert M.s0_tau(ctx, labels, w=(0.2, 0.3, 0.5)) == pytest.approx(0.2 * a + 0.3 * b + 0.5 * g)


# --------------------------------------------------------------------------------------------
# [CVC]
# --------------------------------------------------------------------------------------------


def test_comm_distance_closed_form_uniform_comm():
    # chain with 10 km lines; RTT and loss at their maxima -> d = g1 * L/100 + g2 + g3
    n = 5
    g = nx.path_graph(n)
    nx.set_edge_attributes(g, 10.0, "length_km")
    ctx = make_ctx(g)
    gam = (0.5, 0.3, 0.2)
    labels = [0, 0, 0, 1, 1]

    def e(l_km):
        return math.exp(-(gam[0] * l_km / 100 + gam[1] + gam[2]))

    c0 = 2 / (3 * 2) * (e(10) + e(20) + e(10))  # pairs (0,1), (0,2), (1,2)
    c1 = e(10)
    assert M.s2_comm_distance(ctx, labels, gammas=gam) == pytest.approx((c0 + c1) / 2)
    # singletons score 1
    assert M.s2_comm_distance(ctx, [0, 1, 2, 3, 4], gammas=gam) == 1.0


def test_cover_hand_values():
    t, n = 2, 4
    ctx = make_ctx(
        n=n,
        t=t,
        p_load_mw=np.array([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]]),
        p_gen_mw=np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]),
        p_flex_mw=np.array([0.0, 0.0, 0.0, 0.5]),
        q_load_mvar=np.array([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]),
        q_comp_mvar=np.array([0.0, 1.0, 0.0, 0.0]),
    )
    c = M.s2_cover(ctx, [0, 0, 1, 1], alpha1=2.0)
    # cluster 0: deficits (0, 1) of load 2 -> 0.5; cluster 1: (0.5, 0.5) of 2 -> 0.5
    assert c["p_vac"] == pytest.approx(0.5)
    assert c["p_dif"] == pytest.approx(0.0)
    assert c["p_cover"] == pytest.approx(1 / (1 + math.exp(2.0 * 0.5)))
    # reactive: cluster 0 fully compensated, cluster 1 has no reactive load
    assert c["q_vac"] == 0.0 and c["q_cover"] == 0.5


def test_rho_is_weighted_sum():
    ctx = make_ctx(n=6)
    labels = [0, 0, 1, 1, 2, 2]
    w = (0.1, 0.2, 0.3, 0.4)
    cov = M.s2_cover(ctx, labels)
    expected = (
        w[0] * M.s2_modularity(ctx, labels)
        + w[1] * cov["p_cover"]
        + w[2] * cov["q_cover"]
        + w[3] * M.s2_comm_distance(ctx, labels)
    )
    assert M.s2_rho(ctx, labels, w=w) == pytest.approx(expected)
    assert M.s2_modularity(ctx, labels) == pytest.approx(M.weighted_modularity(ctx.a_s2, labels))


# --------------------------------------------------------------------------------------------
# [NSGA3PART]
# --------------------------------------------------------------------------------------------


def test_f2_zero_for_equal_user_counts_and_hand_value():
    ctx = make_ctx(n=4, n_users=np.array([1, 3, 2, 2]))
    assert M.s1_objectives(ctx, [0, 0, 1, 1])[1] == 0.0
    # users (1, 7): mean 4, deviations ±3 -> 9
    assert M.s1_objectives(ctx, [0, 1, 1, 1])[1] == pytest.approx(9.0)
    assert M.s1_objectives(ctx, [0, 0, 0, 0])[1] == 0.0


def test_f1_is_negative_modularity_on_distance_weights():
    ctx = make_ctx(n=5)
    labels = [0, 0, 1, 1, 1]
    d = ctx.d_s1
    w = 1 - d / d.max()
    assert M.s1_objectives(ctx, labels)[0] == pytest.approx(-M.weighted_modularity(w, labels))


def test_f3_hand_computed_with_peak_shift():
    # T = 6 -> 2 peak steps and 2 valley steps from the aggregate load.
    # node 0 load: 1 1 4 4 2 2 ; node 1 load: 1 1 2 2 1 1 ; aggregate: 2 2 6 6 3 3
    # peaks: steps 2, 3; valleys: steps 0, 1.
    load = np.array([[1, 1], [1, 1], [4, 2], [4, 2], [2, 1], [2, 1]], dtype=float)
    gen = np.zeros((6, 2))
    gen[:, 1] = [0, 0, 3, 3, 1, 1]
    ctx = make_ctx(n=2, t=6, p_load_mw=load, p_gen_mw=gen)
    shifted = M.s1_shifted_load(ctx)
    # node 0: peak 4 -> 2, removed 2 + 2 = 4, valleys get 2 each: 3 3 2 2 2 2
    # node 1: peak 2 -> 1, removed 2, valleys get 1 each: 2 2 1 1 1 1
    np.testing.assert_allclose(shifted[:, 0], [3, 3, 2, 2, 2, 2])
    np.testing.assert_allclose(shifted[:, 1], [2, 2, 1, 1, 1, 1])
    np.testing.assert_allclose(shifted.sum(axis=0), load.sum(axis=0))
    f3_two = M.s1_objectives(ctx, [0, 1])[2]
    # cluster {0}: max |3 3 2 2 2 2| = 3; cluster {1}: |2 2 -2 -2 0 0| -> 2
    assert f3_two == pytest.approx(5.0)
    f3_one = M.s1_objectives(ctx, [0, 0])[2]
    # one cluster: 5 5 0 0 2 2 -> 5
    assert f3_one == pytest.approx(5.0)


def test_peak_valley_flat_profile_has_no_shift():
    peak, valley = M.peak_valley(np.ones(6))
    assert peak.size == 0 and valley.size == 0


# --------------------------------------------------------------------------------------------
# [ZONAL], [TCSOM]
# --------------------------------------------------------------------------------------------


def test_s3_index_prefers_equal_compact_clusters():
    ctx = make_ctx("chain", n=6)
    good = M.s3_index(ctx, [0, 0, 0, 1, 1, 1])
    bad = M.s3_index(ctx, [0, 1, 0, 1, 0, 0])
    assert good > bad
    assert M.s3_index(ctx, [0] * 6, w=(0, 0, 0, 0, 1)) == 1.0


def test_s4_indicators_hand_values():
    t, n = 3, 2
    load = np.array([[1.0, 0.0], [2.0, 0.0], [1.0, 0.0]])
    gen = np.array([[0.0, 1.0], [0.0, 2.0], [0.0, 1.0]])
    ctx = make_ctx(n=n, t=t, p_load_mw=load, p_gen_mw=gen, p_flex_mw=np.array([0.5, 0.0]))
    one = M.s4_indicators(ctx, [0, 0])
    # perfectly balanced single cluster: no net flow, no ramp
    assert one["self_balancing"] == 1.0
    assert one["tie_line_fluctuation"] == 0.0
    assert one["ramp_deficit"] == 0.0
    assert one["correlation"] == 0.0
    two = M.s4_indicators(ctx, [0, 1])
    assert two["self_balancing"] == 0.0
    # N0 = 1 2 1 (ramps 1 1), N1 = -1 -2 -1: fluctuation (1 + 1)/(4/3 + 4/3) = 0.75
    assert two["tie_line_fluctuation"] == pytest.approx(0.75)
    # flexibility 0.5 in cluster 0, 0 in cluster 1: deficits 0.5 0.5 1 1 of ramps 1 1 1 1
    assert two["ramp_deficit"] == pytest.approx(3.0 / 4.0)
    assert two["correlation"] == pytest.approx(-1.0)
    assert two["ramp_rate_mw"] == pytest.approx(1.0)
    # LF: cluster 0 mean 4/3 / max 2 = 2/3; cluster 1 has no load -> 1
    assert two["load_factor"] == pytest.approx((2 / 3 + 1) / 2)
    # relative ramp 1/2 in both: balance = mean((2/3 + 0.5)/2, (1 + 0.5)/2)
    assert two["balance"] == pytest.approx(((2 / 3 + 0.5) / 2 + 0.75) / 2)


def test_node_features_s4_shape_and_range():
    ctx = make_ctx(n=6)
    f = M.node_features_s4(ctx)
    assert f.shape == (6, 6 + len(M.S4_FINE_FEATURES))
    assert np.all(f >= 0.0) and np.all(f <= 1.0 + 1e-12)
    np.testing.assert_allclose(np.diag(f[:, :6]), 1.0)
    f[0, 0] = 99.0  # a copy: the cache is not touched
    assert M.node_features_s4(ctx)[0, 0] == 1.0


# --------------------------------------------------------------------------------------------
# constraints
# --------------------------------------------------------------------------------------------


def test_constraints_flag_disconnected_small_and_resourceless():
    ctx = make_ctx("chain", n=6, n_resources=np.array([1, 0, 0, 0, 0, 1]))
    ok = M.check_constraints(ctx, [0, 0, 0, 1, 1, 1], min_size=2, max_size=4, k=2)
    assert ok["connected"] and ok["size_ok"] and ok["resources_ok"] and ok["k_ok"]
    assert [c["size"] for c in ok["per_cluster"]] == [3, 3]
    assert [c["n_resources"] for c in ok["per_cluster"]] == [1, 1]

    disc = M.check_constraints(ctx, [0, 0, 1, 1, 0, 0], min_size=1, max_size=6)
    assert not disc["connected"]
    assert [c["connected"] for c in disc["per_cluster"]] == [False, True]

    small = M.check_constraints(ctx, [0, 1, 1, 1, 1, 1], min_size=2, max_size=6)
    assert not small["size_ok"] and small["connected"]

    nores = M.check_constraints(ctx, [0, 0, 1, 1, 2, 2], min_size=1, max_size=6, k=2)
    assert not nores["resources_ok"] and not nores["k_ok"]
    assert [c["n_resources"] for c in nores["per_cluster"]] == [1, 0, 1]


def test_load_compensation_balance_hand_values():
    ctx = make_ctx(
        n=3,
        t=2,
        q_load_mvar=np.array([[0.1, 0.2, 0.0], [0.3, 0.1, 0.0]]),
        q_comp_mvar=np.array([0.0, 0.1, 0.6]),
    )
    bal = M.load_compensation_balance(ctx, [0, 0, 1])
    # cluster 0: comp 0.1, peak |Q| = 0.4; cluster 1: comp 0.6, no load
    assert bal == pytest.approx([-0.3, 0.6])
    cons = M.check_constraints(ctx, [0, 0, 1], min_size=1, max_size=3)
    assert [c["balance"] for c in cons["per_cluster"]] == pytest.approx(bal)


# --------------------------------------------------------------------------------------------
# all_metrics, degenerate partitions, invariance
# --------------------------------------------------------------------------------------------

REQUIRED = {
    "tau",
    "modularity",
    "alpha",
    "beta",
    "gamma",
    "rho",
    "s1_f1",
    "s1_f2",
    "s1_f3",
    "s3_index",
    "s4_coupling",
    "s4_balance",
    "s4_correlation",
    "s4_tie_line_fluctuation",
    "s4_self_balancing",
    "s4_ramp_deficit",
}


@pytest.mark.parametrize(
    "labels", [[0] * 6, list(range(6)), [0, 1, 1, 1, 1, 2]], ids=["k1", "singletons", "mixed"]
)
@pytest.mark.parametrize("graph", ["chain", "star"])
def test_all_metrics_finite_floats(graph, labels):
    ctx = make_ctx(graph, n=6)
    m = M.all_metrics(ctx, labels)
    assert REQUIRED <= set(m)
    for key, val in m.items():
        assert type(val) is float, key
        assert math.isfinite(val), key
    cons = M.check_constraints(ctx, labels, min_size=1, max_size=6)
    # on the star (centre 0) the leaves 1..4 without the centre are not connected
    assert cons["connected"] == (labels != [0, 1, 1, 1, 1, 2] or graph == "chain")


def test_all_metrics_agree_with_single_functions():
    ctx = make_ctx(n=6)
    labels = [0, 0, 1, 1, 1, 2]
    m = M.all_metrics(ctx, labels)
    assert m["tau"] == pytest.approx(M.s0_tau(ctx, labels))
    assert m["rho"] == pytest.approx(M.s2_rho(ctx, labels))
    assert m["s3_index"] == pytest.approx(M.s3_index(ctx, labels))
    assert (m["s1_f1"], m["s1_f2"], m["s1_f3"]) == pytest.approx(M.s1_objectives(ctx, labels))
    for key, val in M.s4_indicators(ctx, labels).items():
        assert m[f"s4_{key}"] == pytest.approx(val)


def test_all_metrics_zero_profiles_are_finite():
    t, n = 4, 5
    z = np.zeros((t, n))
    ctx = make_ctx(
        n=n,
        t=t,
        p_load_mw=z,
        q_load_mvar=z,
        p_gen_mw=z,
        q_comp_mvar=np.zeros(n),
        p_flex_mw=np.zeros(n),
        e_t=np.zeros((2, n, n)),
        comm=CommParams(np.zeros((n, n)), np.zeros((n, n)), 0.0, 0.0),
    )
    for labels in ([0] * n, list(range(n)), [0, 0, 1, 1, 1]):
        assert all(math.isfinite(v) for v in M.all_metrics(ctx, labels).values())


def test_labels_with_gaps_are_renumbered():
    ctx = make_ctx(n=6)
    a = M.all_metrics(ctx, [0, 0, 0, 1, 1, 1])
    b = M.all_metrics(ctx, [7, 7, 7, 3, 3, 3])
    assert a == pytest.approx(b)


def test_bad_labels_rejected():
    ctx = make_ctx(n=6)
    with pytest.raises(ValueError):
        M.s2_modularity(ctx, [0, 1, 0])
    with pytest.raises(ValueError):
        M.s2_modularity(ctx, [0.5] * 6)


_INV_CTX = make_ctx(n=7, t=8, seed=5)


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 3), min_size=7, max_size=7),
    perm=st.permutations(list(range(4))),
)
def test_metrics_invariant_under_relabelling(labels, perm):
    lab = np.array(labels)
    permuted = np.array(perm)[lab]
    a = M.all_metrics(_INV_CTX, lab)
    b = M.all_metrics(_INV_CTX, permuted)
    assert a.keys() == b.keys()
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12), key
    ca = M.check_constraints(_INV_CTX, lab, min_size=1, max_size=7)
    cb = M.check_constraints(_INV_CTX, permuted, min_size=1, max_size=7)
    for key in ("connected", "size_ok", "resources_ok", "k"):
        assert ca[key] == cb[key]


def test_all_metrics_runs_for_n130_random_labels():
    """Timing sanity, no assertion on time: prints per-call costs with ``-s``."""
    ctx = random_tree_ctx(130, t=96, seed=7)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, 130)
    m = M.all_metrics(ctx, labels)  # warms the per-context cache
    assert all(math.isfinite(v) for v in m.values())
    calls = {
        "all_metrics": lambda: M.all_metrics(ctx, labels),
        "s0_tau": lambda: M.s0_tau(ctx, labels),
        "s2_rho": lambda: M.s2_rho(ctx, labels),
        "s1_objectives": lambda: M.s1_objectives(ctx, labels),
        "s3_index": lambda: M.s3_index(ctx, labels),
        "s4_indicators": lambda: M.s4_indicators(ctx, labels),
        "check_constraints": lambda: M.check_constraints(ctx, labels, min_size=1, max_size=130),
    }
    for name, fn in calls.items():
        t0 = time.perf_counter()
        for _ in range(50):
            fn()
        print(f"{name}: {(time.perf_counter() - t0) / 50 * 1e3:.3f} ms")
