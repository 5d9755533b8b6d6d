"""The partition stage at scale: the context cache, the computations that take another path on
large networks (and must agree with the small-network one), and case1197 with 30 clusters.

The fast tests use ieee33 and random data; the case1197 test is marked slow.
"""

from __future__ import annotations

import copy
from dataclasses import fields

import networkx as nx
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from clustersim.partition import context_cache, metrics, som
from clustersim.partition import distance as D
from clustersim.partition.context import (
    DEFAULT_PRESETS,
    build_context,
    context_cache_info,
    context_for_case,
    context_key,
)
from clustersim.partition.core import PartitionContext
from clustersim.partition.methods import run_partition
from clustersim.sim import cases, profiles, resources


@pytest.fixture(scope="module")
def inputs33():
    """ieee33 with its default preset and one day of synthetic profiles."""
    net = cases.load_case("ieee33")
    res = resources.load_preset(DEFAULT_PRESETS["ieee33"])
    return net, res, profiles.synthetic(1, seed=3)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A private disk cache folder that takes contexts of any size."""
    monkeypatch.setenv(context_cache.CACHE_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(context_cache, "DISK_MIN_NODES", 1)
    return tmp_path / "partition-context"


def _same_context(a: PartitionContext, b: PartitionContext, *, rebuilt: bool = False) -> None:
    """Every field equal: arrays by value and dtype, the graph with its adjacency order (a
    ``rebuilt`` context has its own build time)."""
    for f in fields(PartitionContext):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "graph":
            assert list(x.nodes) == list(y.nodes)
            assert [list(x.adj[u]) for u in x] == [list(y.adj[u]) for u in y]
            assert list(x.edges(data=True)) == list(y.edges(data=True))
            assert nx.is_frozen(y)
        elif f.name == "comm":
            for g in ("rtt_ms", "loss"):
                assert np.array_equal(getattr(x, g), getattr(y, g))
            assert (x.rtt_max_ms, x.loss_max) == (y.rtt_max_ms, y.loss_max)
        elif f.name == "extra":
            assert list(x) == list(y)
            for key in x:
                if not (rebuilt and key == "build_time_s"):
                    _same_value(x[key], y[key])
        else:
            _same_value(x, y)


def _same_value(x, y) -> None:
    if isinstance(x, np.ndarray):
        assert isinstance(y, np.ndarray) and x.dtype == y.dtype
        assert np.array_equal(x, y) and not y.flags.writeable
    elif isinstance(x, dict):
        assert list(x) == list(y)
        for key in x:
            _same_value(x[key], y[key])
    else:
        assert type(x) is type(y) and x == y


# --------------------------------------------------------------------------------------------
# the context cache
# --------------------------------------------------------------------------------------------


def test_cache_returns_the_same_context_without_rebuilding(inputs33):
    net, res, prof = inputs33
    before = context_cache_info()
    a = build_context(net, res, prof, name="cache-same", snapshots=3)
    after_first = context_cache_info()
    b = build_context(net, res, prof, name="cache-same", snapshots=3)
    after_second = context_cache_info()
    assert after_first["builds"] == before["builds"] + 1
    assert b is a
    assert after_second["builds"] == after_first["builds"]
    assert after_second["memory_hits"] == after_first["memory_hits"] + 1
    # another input is another context
    c = build_context(net, res, prof, name="cache-same", snapshots=2)
    assert c is not a and context_cache_info()["builds"] == after_second["builds"] + 1


def test_key_follows_every_input(inputs33):
    net, res, prof = inputs33
    key = context_key(net, res, prof, name="k")
    assert context_key(copy.deepcopy(net), res, prof, name="k") == key
    changed = copy.deepcopy(net)
    changed.load.loc[changed.load.index[3], "p_mw"] += 1e-6
    others = [
        context_key(changed, res, prof, name="k"),
        context_key(net, None, prof, name="k"),
        context_key(net, res, profiles.synthetic(1, seed=4), name="k"),
        context_key(net, res, prof, name="k", snapshots=12),
        context_key(net, res, prof, name="k", comm={"latency": {"mean_ms": 20.0}}),
        context_key(net, res, prof, name="other"),
    ]
    assert key not in others and len(set(others)) == len(others)
    solved = copy.deepcopy(net)
    solved.res_bus = solved.bus.iloc[:2]  # results are not part of the key
    assert context_key(solved, res, prof, name="k") == key


def test_disk_cache_round_trip(inputs33, cache_dir):
    net, res, prof = inputs33
    key = context_key(net, res, prof, name="disk", snapshots=2)
    built = build_context(net, res, prof, name="disk", snapshots=2)
    assert (cache_dir / f"{key}.npz").is_file()
    context_cache.discard(key)
    before = context_cache_info()
    loaded = build_context(net, res, prof, name="disk", snapshots=2)
    after = context_cache_info()
    assert loaded is not built
    assert after["builds"] == before["builds"] and after["disk_hits"] == before["disk_hits"] + 1
    _same_context(built, loaded)
    labels = np.arange(built.n) % 4
    assert metrics.all_metrics(built, labels) == metrics.all_metrics(loaded, labels)


def test_corrupt_cache_file_is_rebuilt(inputs33, cache_dir):
    net, res, prof = inputs33
    key = context_key(net, res, prof, name="corrupt", snapshots=2)
    built = build_context(net, res, prof, name="corrupt", snapshots=2)
    path = cache_dir / f"{key}.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte inside the arrays: the zip CRC fails
    path.write_bytes(bytes(data))
    context_cache.discard(key)
    before = context_cache_info()
    rebuilt = build_context(net, res, prof, name="corrupt", snapshots=2)
    after = context_cache_info()
    assert after["disk_errors"] == before["disk_errors"] + 1
    assert after["builds"] == before["builds"] + 1
    _same_context(built, rebuilt, rebuilt=True)
    path.write_bytes(b"not a zip file")
    context_cache.discard(key)
    build_context(net, res, prof, name="corrupt", snapshots=2)
    assert context_cache_info()["disk_errors"] == after["disk_errors"] + 1
    context_cache.discard(key)
    build_context(net, res, prof, name="corrupt", snapshots=2)  # the rewritten file reads back
    assert context_cache_info()["disk_hits"] == after["disk_hits"] + 1


def test_disk_cache_off(inputs33, tmp_path, monkeypatch):
    monkeypatch.setenv(context_cache.CACHE_DIR_ENV, "off")
    monkeypatch.setattr(context_cache, "DISK_MIN_NODES", 1)
    net, res, prof = inputs33
    build_context(net, res, prof, name="off", snapshots=2)
    assert context_cache.cache_dir() is None
    assert not list(tmp_path.rglob("*.npz"))


def test_small_contexts_stay_in_the_process(inputs33, tmp_path, monkeypatch):
    monkeypatch.setenv(context_cache.CACHE_DIR_ENV, str(tmp_path))
    net, res, prof = inputs33
    build_context(net, res, prof, name="small", snapshots=2)
    assert not list(tmp_path.rglob("*.npz"))


# --------------------------------------------------------------------------------------------
# the large-network computations agree with the small-network ones
# --------------------------------------------------------------------------------------------


def test_pairwise_euclidean_matches_cdist():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 60)) * 3.0 + 40.0  # large norms: the Gram form's worst case
    x[7] = x[3]  # identical rows
    x[11] = x[5] + 1e-9  # nearly identical rows
    h = D.pairwise_euclidean(x)
    ref = cdist(x, x)
    assert np.allclose(h, ref, rtol=1e-10, atol=1e-12)
    assert h[3, 7] == h[7, 3] == 0.0 and np.all(np.diag(h) == 0.0)
    assert np.array_equal(h, h.T)
    assert abs(h[5, 11] - ref[5, 11]) <= 1e-6 * ref[5, 11]


def test_gathered_metrics_equal_one_hot_products(monkeypatch):
    ctx = context_for_case("ieee33")
    rng = np.random.default_rng(1)
    cases_ = [rng.integers(0, 5, size=ctx.n), np.arange(ctx.n) % 7, np.zeros(ctx.n, dtype=int)]
    dense = [metrics.all_metrics(ctx, lab) for lab in cases_]
    monkeypatch.setattr(metrics, "GATHER_MIN_NODES", 1)
    gathered = [metrics.all_metrics(ctx, lab) for lab in cases_]
    for d, g in zip(dense, gathered, strict=True):
        assert d.keys() == g.keys()
        for key in d:
            assert g[key] == pytest.approx(d[key], rel=1e-12, abs=1e-14), key


def test_som_bmu_expanded_form_agrees(monkeypatch):
    rng = np.random.default_rng(2)
    X = rng.random((200, 40))
    W = rng.random((30, 40))
    alpha = rng.random(40)
    alpha /= alpha.sum()
    b_exact, d_exact = som._bmu(X, W, alpha)
    monkeypatch.setattr(som, "_BMU_EXACT_MAX", 0)
    b_expanded, d_expanded = som._bmu(X, W, alpha)
    assert np.array_equal(b_exact, b_expanded)
    assert np.allclose(d_exact, d_expanded, rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------------------------------
# HI against K-means on its own index
# --------------------------------------------------------------------------------------------


def test_hi_not_below_a_feasible_kmeans_on_tau():
    ctx = context_for_case("ieee33")
    for seed in (0, 1):
        km = run_partition(ctx, "kmeans", 5, seed=seed, min_size=2, max_size=12)
        hi = run_partition(ctx, "hi", 5, seed=seed, min_size=2, max_size=12)
        assert km.constraints["connected"] and km.constraints["size_ok"]
        assert hi.constraints["connected"] and hi.constraints["size_ok"]
        assert hi.metrics["tau"] >= km.metrics["tau"]


@pytest.mark.slow
def test_case1197_hi_and_kmeans_30_feasible_clusters():
    """30 clusters of 2..78 buses (K-means' partition fits these bounds; with the benchmark's
    13..78 it does not); feasible = connected and within the bounds (23 tap changers are the
    case's only devices, so ``resources_ok`` cannot hold for 30 clusters)."""
    before = context_cache_info()["builds"]
    ctx = context_for_case("case1197")
    assert context_for_case("case1197") is ctx
    assert context_cache_info()["builds"] <= before + 1
    parts = {
        m: run_partition(ctx, m, 30, seed=0, min_size=2, max_size=78) for m in ("hi", "kmeans")
    }
    for p in parts.values():
        assert p.k == 30 and p.constraints["connected"] and p.constraints["size_ok"]
    assert parts["hi"].metrics["tau"] >= parts["kmeans"].metrics["tau"]
