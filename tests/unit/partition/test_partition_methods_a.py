"""Partition methods, part A: HI ([EVEC]), the baselines and the pilot buses.

Hand-built contexts from random trees (every field of PartitionContext filled with physically
shaped values: radial Q–V/P–V sensitivities from path reactances, [NSGA3PART]/[CVC]/[EVEC] distances derived from
them) so the methods are tested before and independently of ``build_context``; the built-in
cases are used when ``clustersim.partition.context`` is importable.
"""

from __future__ import annotations

import itertools
import time

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustersim.errors import PartitionError
from clustersim.partition import hi, metrics
from clustersim.partition.core import (
    CommParams,
    PartitionContext,
    PartitionTask,
    clusters_of,
    relabel,
)
from clustersim.partition.hi import min_cut_tree_partition
from clustersim.partition.methods import run_partition
from clustersim.partition.pilot import pilot_buses, raw_pilot_index


def make_context(graph: nx.Graph, seed: int = 0, *, t: int = 8, t_e: int = 4) -> PartitionContext:
    """A PartitionContext for ``graph`` (nodes 0..n-1, node 0 the slack), every field filled.

    Lines get random lengths; ``∂V/∂Q`` is the reactance shared by the root paths of the two
    nodes (plus a source reactance), as on a radial feeder; the [CVC] coupling, the [NSGA3PART] distance
    and the [EVEC] snapshots are derived from it the way their papers do, with snapshot noise.
    """
    rng = np.random.default_rng(seed)
    n = graph.number_of_nodes()
    g = nx.Graph()
    g.add_nodes_from(range(n))
    for u, v in sorted(tuple(sorted(e)) for e in graph.edges()):
        g.add_edge(u, v, length_km=float(rng.uniform(0.1, 1.5)))
    tree = nx.bfs_tree(g, 0)
    edges = list(tree.edges())
    x = np.array([0.05 * g.edges[e]["length_km"] for e in edges])
    r = 1.5 * x
    path = np.zeros((n, len(edges)))
    for e, (_, v) in enumerate(edges):
        for w in nx.descendants(tree, v) | {v}:
            path[w, e] = 1.0
    s_qv = 0.01 + path @ np.diag(x) @ path.T
    s_pv = 0.01 + path @ np.diag(r) @ path.T

    def lg_alpha(s: np.ndarray) -> np.ndarray:
        alpha = s / np.diag(s)[None, :]
        return np.log10(alpha * alpha.T)

    hq = np.abs(lg_alpha(s_qv))
    hp = np.abs(lg_alpha(s_pv))
    h = hp + hq
    a_s2 = 1.0 - h / h.max() if h.max() > 0 else np.ones((n, n))
    la = lg_alpha(s_qv)
    d_s1 = np.sqrt(((la[:, None, :] - la[None, :, :]) ** 2).sum(axis=2))
    noise = rng.uniform(0.9, 1.1, size=(t_e, n, n))
    noise = 0.5 * (noise + noise.transpose(0, 2, 1))
    d_t = d_s1[None] * noise
    e_t = 1.0 - d_t / d_t.max(axis=(1, 2), keepdims=True).clip(1e-12)
    topo = nx.floyd_warshall_numpy(g, weight=None)
    length = nx.floyd_warshall_numpy(g, weight="length_km")
    shape = 1.0 + 0.3 * np.sin(np.linspace(0, 2 * np.pi, t))[:, None]
    p_load = shape * rng.uniform(0.02, 0.2, size=n)[None, :]
    p_load[:, 0] = 0.0
    pv = rng.random(n) < 0.3
    p_gen = np.clip(np.sin(np.linspace(0, np.pi, t)), 0, None)[:, None] * np.where(pv, 0.15, 0.0)
    return PartitionContext(
        name=f"tree{n}-{seed}",
        buses=list(range(n)),
        bus_labels=[str(i + 1) for i in range(n)],
        graph=g,
        topo_dist=topo,
        length_dist_km=length,
        slack=0,
        s_qv=s_qv,
        s_pv=s_pv,
        a_s2=a_s2,
        d_s1=d_s1,
        e_t=e_t,
        d_t=d_t,
        p_load_mw=p_load,
        q_load_mvar=0.4 * p_load,
        p_gen_mw=p_gen,
        q_comp_mvar=np.where(pv, 0.15, 0.0) + np.where(rng.random(n) < 0.1, 0.3, 0.0),
        p_flex_mw=np.where(rng.random(n) < 0.1, 0.2, 0.0),
        n_users=rng.integers(0, 5, size=n),
        n_resources=pv.astype(int) + (rng.random(n) < 0.1),
        comm=CommParams(
            rtt_ms=np.full((n, n), 100.0),
            loss=np.full((n, n), 0.01),
            rtt_max_ms=500.0,
            loss_max=0.1,
        ),
        coords=rng.random((n, 2)),
    )


# ============================================================================================
# helpers
# ============================================================================================

FAST_HI = {"n_candidates": 40, "n_mutations": 8, "sa_iterations": 30, "swap_steps": 5}
BASELINES = ["kmeans", "kmedoids", "spectral", "louvain"]


def tree_from_prufer(n: int, seq: list[int]) -> nx.Graph:
    if n == 1:
        g = nx.Graph()
        g.add_node(0)
        return g
    if n == 2:
        return nx.Graph([(0, 1)])
    return nx.from_prufer_sequence(seq)


@st.composite
def trees(draw: st.DrawFn, min_n: int = 1, max_n: int = 12) -> nx.Graph:
    n = draw(st.integers(min_n, max_n))
    seq = draw(st.lists(st.integers(0, n - 1), min_size=max(n - 2, 0), max_size=max(n - 2, 0)))
    return tree_from_prufer(n, seq)


def brute_force_feasible(tree: nx.Graph, k: int, lo: int, up: int) -> bool:
    """Whether some k − 1 cut edges leave k components of lo..up nodes (tiny trees only)."""
    edges = list(tree.edges())
    for cut in itertools.combinations(edges, k - 1):
        rest = tree.copy()
        rest.remove_edges_from(cut)
        if all(lo <= len(c) <= up for c in nx.connected_components(rest)):
            return True
    return False


def assert_feasible(ctx: PartitionContext, labels: np.ndarray, k: int, lo: int, up: int) -> None:
    """k connected clusters of lo..up nodes, labelled 0..k-1."""
    labels = np.asarray(labels)
    assert labels.shape == (ctx.n,)
    assert sorted(set(labels.tolist())) == list(range(k))
    for members in clusters_of(relabel(labels)):
        assert lo <= len(members) <= up
        assert nx.is_connected(ctx.graph.subgraph(members))


def assert_covers_once(ctx: PartitionContext, labels: np.ndarray) -> None:
    labels = np.asarray(labels)
    assert labels.shape == (ctx.n,) and np.issubdtype(labels.dtype, np.integer)
    assert (labels >= 0).all()
    nodes = [u for members in clusters_of(relabel(labels)) for u in members]
    assert sorted(nodes) == list(range(ctx.n))  # every node in exactly one cluster


@pytest.fixture(scope="module")
def tree_ctx() -> PartitionContext:
    rng = np.random.default_rng(7)
    return make_context(tree_from_prufer(40, rng.integers(0, 40, size=38).tolist()), seed=3)


@pytest.fixture(scope="module")
def ieee33_ctx() -> PartitionContext:
    context = pytest.importorskip("clustersim.partition.context")
    return context.context_for_case("ieee33")


# ============================================================================================
# every method, hand-built context
# ============================================================================================


@pytest.mark.parametrize("method", ["hi", *BASELINES])
def test_method_covers_every_node_once(tree_ctx, method):
    opts = FAST_HI if method == "hi" else {}
    part = run_partition(tree_ctx, method, 4, seed=2, min_size=4, max_size=15, **opts)
    assert_covers_once(tree_ctx, part.labels)
    assert len(part.pilots) == part.k
    for c, p in enumerate(part.pilots):
        assert part.labels[p] == c
    assert {"connected", "size_ok", "resources_ok"} <= set(part.constraints)
    if method != "louvain":
        assert part.k == 4


@pytest.mark.parametrize("method", ["hi", *BASELINES])
def test_method_same_seed_same_partition(tree_ctx, method):
    opts = FAST_HI if method == "hi" else {}
    a = run_partition(tree_ctx, method, 3, seed=5, min_size=5, max_size=20, **opts)
    b = run_partition(tree_ctx, method, 3, seed=5, min_size=5, max_size=20, **opts)
    assert np.array_equal(a.labels, b.labels)


def test_hi_within_bounds_on_hand_built_context(tree_ctx):
    labels = hi.partition_hi(PartitionTask(tree_ctx, 5, np.random.default_rng(0), 5, 10), **FAST_HI)
    assert_feasible(tree_ctx, labels, 5, 5, 10)
    report = metrics.check_constraints(tree_ctx, labels, min_size=5, max_size=10, k=5)
    assert report["connected"] and report["size_ok"] and report["k_ok"]


def test_baselines_are_reported_not_repaired(tree_ctx):
    """Tight bounds the baselines ignore: they run, and run_partition reports what they break."""
    for method in BASELINES:
        part = run_partition(tree_ctx, method, 4, seed=0, min_size=10, max_size=10)
        assert_covers_once(tree_ctx, part.labels)
        sizes = np.bincount(part.labels)
        assert part.constraints["size_ok"] == bool(((sizes >= 10) & (sizes <= 10)).all())
        for c, row in enumerate(part.constraints["per_cluster"]):
            members = np.flatnonzero(part.labels == c).tolist()
            assert row["connected"] == nx.is_connected(tree_ctx.graph.subgraph(members))


def test_hi_refuses_a_request_with_no_connected_partition():
    """A star of 7 nodes cannot hold 3 connected clusters of 2..3 nodes (leaves are isolated),
    although 3·2 ≤ 7 ≤ 3·3 passes the count check."""
    ctx = make_context(nx.star_graph(6), seed=0)
    with pytest.raises(PartitionError, match="no partition"):
        run_partition(ctx, "hi", 3, min_size=2, max_size=3, **FAST_HI)


def test_hi_on_a_meshed_graph_stays_feasible():
    g = tree_from_prufer(30, np.random.default_rng(1).integers(0, 30, size=28).tolist())
    g.add_edges_from([(0, 17), (5, 22), (9, 28)])
    ctx = make_context(g, seed=4)
    labels = hi.partition_hi(PartitionTask(ctx, 4, np.random.default_rng(3), 5, 9), **FAST_HI)
    assert_feasible(ctx, labels, 4, 5, 9)


# ============================================================================================
# property tests on random trees
# ============================================================================================


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(1, 11), data=st.data())
def test_hi_connected_within_bounds_whenever_feasible(tree, data):
    n = tree.number_of_nodes()
    k = data.draw(st.integers(1, n), label="k")
    lo = data.draw(st.integers(1, n // k), label="min_size")
    hi_size = data.draw(st.integers(max(lo, -(-n // k)), n), label="max_size")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    ctx = make_context(tree, seed=seed)
    if not brute_force_feasible(tree, k, lo, hi_size):
        with pytest.raises(PartitionError):
            hi.partition_hi(
                PartitionTask(ctx, k, np.random.default_rng(seed), lo, hi_size), **FAST_HI
            )
        return
    labels = hi.partition_hi(
        PartitionTask(ctx, k, np.random.default_rng(seed), lo, hi_size), **FAST_HI
    )
    assert_feasible(ctx, labels, k, lo, hi_size)
    again = hi.partition_hi(
        PartitionTask(ctx, k, np.random.default_rng(seed), lo, hi_size), **FAST_HI
    )
    assert np.array_equal(labels, again)  # same seed => same partition


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(12, 45), data=st.data())
def test_hi_feasible_on_planted_bounds(tree, data):
    """Larger trees: cut k − 1 random edges, take the sizes found as the bounds (so a feasible
    partition exists), and HI must return one."""
    edges = sorted(tree.edges())
    k = data.draw(st.integers(2, 6), label="k")
    cut = data.draw(st.lists(st.sampled_from(edges), min_size=k - 1, max_size=k - 1, unique=True))
    rest = tree.copy()
    rest.remove_edges_from(cut)
    sizes = [len(c) for c in nx.connected_components(rest)]
    slack = data.draw(st.integers(0, 3), label="slack")
    lo, hi_size = max(1, min(sizes) - slack), max(sizes) + slack
    seed = data.draw(st.integers(0, 2**16), label="seed")
    ctx = make_context(tree, seed=seed)
    labels = hi.partition_hi(
        PartitionTask(ctx, k, np.random.default_rng(seed), lo, hi_size), **FAST_HI
    )
    assert_feasible(ctx, labels, k, lo, hi_size)


@settings(max_examples=150, deadline=None)
@given(tree=trees(1, 10), data=st.data())
def test_tree_dp_matches_brute_force(tree, data):
    n = tree.number_of_nodes()
    k = data.draw(st.integers(1, n))
    lo = data.draw(st.integers(1, n))
    hi_size = data.draw(st.integers(lo, n))
    costs = {e: data.draw(st.floats(0, 1)) for e in tree.edges()}
    labels = min_cut_tree_partition(
        tree, k, lo, hi_size, costs, root=data.draw(st.integers(0, n - 1))
    )
    best = None
    for cut in itertools.combinations(list(tree.edges()), k - 1):
        rest = tree.copy()
        rest.remove_edges_from(cut)
        if all(lo <= len(c) <= hi_size for c in nx.connected_components(rest)):
            total = sum(costs[e] for e in cut)
            best = total if best is None else min(best, total)
    if best is None:
        assert labels is None
        return
    assert labels is not None
    ctx = make_context(tree)
    assert_feasible(ctx, labels, k, lo, hi_size)
    got = sum(c for (u, v), c in costs.items() if labels[u] != labels[v])
    assert got == pytest.approx(best, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(tree=trees(2, 30), data=st.data())
def test_pilot_bus_lies_in_its_cluster(tree, data):
    n = tree.number_of_nodes()
    ctx = make_context(tree, seed=data.draw(st.integers(0, 100)))
    labels = np.array(data.draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)))
    pilots = pilot_buses(ctx, labels)
    distinct = sorted(set(labels.tolist()))
    assert len(pilots) == len(distinct)
    for c, p in zip(distinct, pilots, strict=True):
        assert labels[p] == c
    # I^D is the per-node share of [CVC]'s C_dis: its cluster means average to the metric
    _, id_raw = raw_pilot_index(ctx, labels)
    per_cluster = [id_raw[labels == c].mean() for c in distinct]
    assert np.mean(per_cluster) == pytest.approx(metrics.s2_comm_distance(ctx, labels), rel=1e-9)


def test_sigma_batch_equals_metric(tree_ctx):
    cand, sigma = hi.vmcs(
        tree_ctx, 4, rng=np.random.default_rng(1), n_candidates=30, n_mutations=5, n_initial=3
    )
    assert np.array_equal(sigma, hi.sigma_batch(tree_ctx, cand))
    for groups, s in zip(cand, sigma, strict=True):
        initial = [[int(v) for v in row if v >= 0] for row in groups]
        assert s == pytest.approx(metrics.s0_sigma(tree_ctx, initial), abs=1e-12)
        for row in initial:  # every group is connected and groups are disjoint
            assert nx.is_connected(tree_ctx.graph.subgraph(row))
    flat = [int(v) for v in cand[0].ravel() if v >= 0]
    assert len(flat) == len(set(flat))


def test_vmcs_mutations_do_not_lower_sigma(tree_ctx):
    _, before = hi.vmcs(tree_ctx, 4, rng=np.random.default_rng(9), n_candidates=60, n_mutations=0)
    _, after = hi.vmcs(tree_ctx, 4, rng=np.random.default_rng(9), n_candidates=60, n_mutations=20)
    assert (after >= before - 1e-15).all() and after.max() >= before.max()


# ============================================================================================
# built-in cases (once clustersim.partition.context exists)
# ============================================================================================


@pytest.mark.parametrize("method", ["hi", *BASELINES])
def test_ieee33_every_method(ieee33_ctx, method):
    t0 = time.perf_counter()
    part = run_partition(ieee33_ctx, method, 5, seed=1, min_size=3, max_size=10)
    assert_covers_once(ieee33_ctx, part.labels)
    for c, p in enumerate(part.pilots):
        assert part.labels[p] == c
    if method == "hi":
        assert part.constraints["connected"] and part.constraints["size_ok"]
        assert part.k == 5
        assert time.perf_counter() - t0 < 20


def test_ieee123_hi_within_bounds():
    context = pytest.importorskip("clustersim.partition.context")
    ctx = context.context_for_case("ieee123")
    part = run_partition(ctx, "hi", 8, seed=1, min_size=8, max_size=25)
    assert part.constraints["connected"] and part.constraints["size_ok"] and part.k == 8
    assert part.runtime_s < 60
