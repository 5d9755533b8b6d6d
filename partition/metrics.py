"""Partition metrics of the source papers and the constraint checks.

Every metric is a pure function of ``(ctx, labels)``: ``labels`` is an ``(n,)`` integer array
giving the cluster of each node. Any integers are accepted; clusters are the distinct label
values, renumbered 0..K-1 in increasing label order, so empty label ids are ignored and every
metric is invariant under permuting the label ids. Metrics are numpy-vectorized (no Python loop
over nodes or node pairs; on large networks cluster sums are gathered, see
:data:`GATHER_MIN_NODES`) because they run inside GA fitness loops.

Sources: the papers are cited by the keys of ``REFERENCES.md`` (full citations there); the
prefix of a function name (``s0_`` .. ``s4_``) names the paper whose quantity it computes.

- ``[EVEC]`` (``s0_``): VMCS initial-node index σ, indices α, β, γ and the partition index τ.
- ``[NSGA3PART]`` (``s1_``): objectives f1, f2, f3 and the peak-to-valley load shift.
- ``[CVC]`` (``s2_``): modularity on A_ij, P_cover/Q_cover, communication distance, index ρ.
- ``[ZONAL]`` (``s3_``): composite partition index.
- ``[TCSOM]`` (``s4_``): coupling/balance/correlation indicators and evaluation indices.
- ``[NEWMAN]`` weighted modularity, ``[BRANDES]`` its upper bound.

The equations follow the papers' quoted summaries (``REFERENCES.md``); these give no equation
numbers, so docstrings cite each quantity by its name in the paper, and every detail the
summaries leave open is stated in the docstring that decides it ("Choice: ...").

Conventions shared by all metrics:

- Power time series are ``(T, n)`` arrays in MW / Mvar at 15 min resolution; a cluster's series
  is the sum over its nodes. ``p_load_mw`` and ``p_gen_mw`` are taken as non-negative.
- Cluster-level values are aggregated by an unweighted mean over clusters unless said otherwise.
- Degenerate cases never give NaN or inf: an empty denominator (no load, no pair, no variance)
  takes the value stated in the docstring.
- Derived per-context arrays (zero-diagonal weight matrices, degrees, peak-shifted loads, ...)
  are computed once per context and kept in a weak cache keyed on the context object; this
  assumes, like the rest of the partition stage, that a context's arrays are not mutated in place.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from clustersim.partition.core import PartitionContext

__all__ = [
    "GATHER_MIN_NODES",
    "S4_FINE_FEATURES",
    "all_metrics",
    "check_constraints",
    "clusters_connected",
    "load_compensation_balance",
    "node_features_s4",
    "peak_valley",
    "s0_alpha",
    "s0_beta",
    "s0_gamma",
    "s0_sigma",
    "s0_sigma_parts",
    "s0_tau",
    "s1_objectives",
    "s1_shifted_load",
    "s2_comm_distance",
    "s2_cover",
    "s2_modularity",
    "s2_rho",
    "s3_index",
    "s4_indicators",
    "weighted_modularity",
]

Labels = npt.ArrayLike

S2_ALPHA1 = 5.0
"""default steepness α1 of the [CVC] coverage sigmoid (per unit of P_vac + P_dif)"""
S2_GAMMAS = (1 / 3, 1 / 3, 1 / 3)
"""default [CVC] communication-distance weights (line length, RTT, loss)"""
S2_WEIGHTS = (0.25, 0.25, 0.25, 0.25)
"""default [CVC] weights ω1..ω4 of ρ (modularity, P_cover, Q_cover, C_dis)"""
S3_WEIGHTS = (0.2, 0.2, 0.2, 0.2, 0.2)
"""default [ZONAL] weights (modularity, α_P, α_Q, β, size balance)"""
S4_FINE_FEATURES = ("ramp", "correlation", "load_factor")
"""names of the fine-stage columns of :func:`node_features_s4` (its last three columns)"""

_EPS = 1e-12


# ============================================================================================
# labels and per-context cache
# ============================================================================================


def _prep(labels: Labels, n: int | None = None) -> tuple[np.ndarray, int]:
    """Labels as contiguous cluster ids 0..K-1 (increasing label order) and K."""
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {lab.shape}")
    if n is not None and lab.size != n:
        raise ValueError(f"labels has {lab.size} entries, the context has {n} nodes")
    if not np.issubdtype(lab.dtype, np.integer):
        if not np.all(np.equal(np.mod(lab, 1), 0)):
            raise ValueError("labels must be integers")
    lab = lab.astype(np.intp, copy=False)
    if lab.min() >= 0:
        counts = np.bincount(lab)
        if counts.all():
            return lab, counts.size
    _, inv = np.unique(lab, return_inverse=True)
    inv = inv.reshape(-1).astype(np.intp)
    return inv, int(inv.max()) + 1


def _onehot(lab: np.ndarray, k: int) -> np.ndarray:
    h = np.zeros((lab.size, k))
    h[np.arange(lab.size), lab] = 1.0
    return h


GATHER_MIN_NODES = 256
"""From this many nodes on, cluster sums are gathered (an (n, n) matrix over the node pairs
within clusters, ``Σ_c |c|²`` numbers; a (T, n) series over the nodes sorted by cluster, ``T n``)
instead of taken as products with the (n, K) one-hot matrix (``n² K``, ``T n K``). Below it the products are kept: they are as fast there and
give the values every partition of the small built-in cases was recorded with. The two forms
agree to rounding (``tests/unit/partition/test_partition_scale.py``)."""


class _L:
    """Prepared labels: contiguous ids, K, cluster sizes, the cluster sums of (n, n) matrices and
    (T, n) series, and the cluster sums of the context's series (computed on first use, shared
    by the metrics of one call)."""

    __slots__ = ("_h", "_order", "_pairs", "_starts", "_static", "_ts", "k", "lab", "n", "size")

    def __init__(self, labels: Labels, n: int):
        self.lab, self.k = _prep(labels, n)
        self.n = self.lab.size
        self.size = np.bincount(self.lab, minlength=self.k)
        self._h: np.ndarray | None = None
        self._order: np.ndarray | None = None
        self._starts: np.ndarray | None = None
        self._pairs: tuple[np.ndarray, np.ndarray] | None = None
        self._ts: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._static: np.ndarray | None = None

    @property
    def h(self) -> np.ndarray:
        """(n, K) one-hot cluster membership."""
        if self._h is None:
            self._h = _onehot(self.lab, self.k)
        return self._h

    @property
    def gather(self) -> bool:
        """Whether cluster sums are gathered (:data:`GATHER_MIN_NODES`)."""
        return self.n >= GATHER_MIN_NODES

    def _blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """Nodes ordered by cluster (stable) and the start of each cluster's run in that order."""
        if self._order is None or self._starts is None:
            self._order = np.argsort(self.lab, kind="stable")
            self._starts = np.concatenate(([0], np.cumsum(self.size)[:-1]))
        return self._order, self._starts

    def _pair_index(self) -> tuple[np.ndarray, np.ndarray]:
        """Every ordered pair ``(i, j)`` of nodes of one cluster, diagonal included: the row node
        ``i`` and the flat index ``i·n + j``, ``Σ_c |c|²`` of each."""
        if self._pairs is None:
            order, starts = self._blocks()
            m = self.size[self.lab[order]]  # cluster size at each sorted position
            row_pos = np.repeat(np.arange(self.n), m)
            first = np.repeat(starts[self.lab[order]], m)  # block start of each pair's row
            offset = np.arange(row_pos.size) - np.repeat(np.cumsum(m) - m, m)
            rows = order[row_pos]
            self._pairs = (rows, rows * self.n + order[first + offset])
        return self._pairs

    def row_in(self, w: np.ndarray) -> np.ndarray:
        """(n,) ``Σ_{j ∈ C(i)} w_ij``: each row of ``w`` (n, n) summed over its node's cluster."""
        if not self.gather:
            return np.einsum("ij,ij->i", w @ self.h, self.h)
        rows, flat = self._pair_index()
        return np.bincount(rows, weights=np.take(w, flat), minlength=self.n)

    def pair_sums(self, w: np.ndarray) -> np.ndarray:
        """(K,) ``Σ_{i, j ∈ C} w_ij`` of each cluster C (ordered pairs, diagonal as ``w`` has it)."""
        if not self.gather:
            return np.einsum("ij,ij->j", w @ self.h, self.h)
        return np.bincount(self.lab, weights=self.row_in(w), minlength=self.k)

    def intra(self, w: np.ndarray) -> float:
        """``Σ_C Σ_{i, j ∈ C} w_ij``: the total intra-cluster weight of ``w`` (n, n)."""
        if not self.gather:
            return float(np.einsum("ij,ij->", w @ self.h, self.h))
        return float(np.take(w, self._pair_index()[1]).sum())

    def sums(self, x: np.ndarray, xt: np.ndarray | None = None) -> np.ndarray:
        """(..., K) cluster sums of ``x`` (n,) or (T, n) over its last axis. ``xt``: ``x.T`` as a
        C-contiguous array, for the gather form (gathering rows is faster than columns)."""
        if not self.gather:
            return np.asarray(x @ self.h)
        if x.ndim == 1:
            return np.bincount(self.lab, weights=x, minlength=self.k)
        order, starts = self._blocks()
        rows = (xt if xt is not None else np.ascontiguousarray(x.T))[order]
        return np.add.reduceat(rows, starts, axis=0).T

    def ts(self, ctx: PartitionContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(T, K) cluster sums of p_load (MW), p_gen (MW), q_load (Mvar)."""
        if self._ts is None:
            x = _series(ctx)
            t = x.shape[0] // 3
            y = self.sums(x, _transposed(ctx, "series", x) if self.gather else None)
            self._ts = (y[:t], y[t : 2 * t], y[2 * t :])
        return self._ts

    def static(self, ctx: PartitionContext) -> np.ndarray:
        """(4, K) cluster sums of q_comp (Mvar), p_flex (MW), n_users, n_resources."""
        if self._static is None:
            x = _static(ctx)
            self._static = self.sums(x, _transposed(ctx, "static", x) if self.gather else None)
        return self._static


_CACHE: weakref.WeakKeyDictionary[PartitionContext, dict[Any, Any]] = weakref.WeakKeyDictionary()


def _cached(ctx: PartitionContext, key: Any, build: Callable[[], Any]) -> Any:
    """Derived per-context data, computed once (``build`` must not keep a reference to ctx)."""
    store = _CACHE.get(ctx)
    if store is None:
        store = {}
        _CACHE[ctx] = store
    if key not in store:
        store[key] = build()
    return store[key]


def _transposed(ctx: PartitionContext, key: str, x: np.ndarray) -> np.ndarray:
    """``x.T`` (C-contiguous) of the per-context array cached under ``key``."""
    return _cached(ctx, (key, "T"), lambda: np.ascontiguousarray(x.T))


def _series(ctx: PartitionContext) -> np.ndarray:
    """(3T, n) stacked p_load, p_gen, q_load."""
    return _cached(
        ctx,
        "series",
        lambda: np.vstack([ctx.p_load_mw, ctx.p_gen_mw, ctx.q_load_mvar]).astype(float),
    )


def _static(ctx: PartitionContext) -> np.ndarray:
    """(4, n) stacked q_comp, p_flex, n_users, n_resources."""
    return _cached(
        ctx,
        "static",
        lambda: np.vstack([ctx.q_comp_mvar, ctx.p_flex_mw, ctx.n_users, ctx.n_resources]).astype(
            float
        ),
    )


def _zero_diag(w: np.ndarray) -> np.ndarray:
    w0 = np.array(w, dtype=float, copy=True)
    if w0.ndim == 2:
        np.fill_diagonal(w0, 0.0)
    else:  # (T, n, n)
        idx = np.arange(w0.shape[-1])
        w0[:, idx, idx] = 0.0
    return w0


def _graph_w(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(zero-diagonal weights, weighted degrees, 2m) of a dense symmetric weight matrix."""
    w0 = _zero_diag(w)
    deg = w0.sum(axis=1)
    return w0, deg, float(deg.sum())


def _modularity(g: tuple[np.ndarray, np.ndarray, float], L: _L) -> float:
    """[NEWMAN] modularity Q = Σ_c [W_c/(2m) − (D_c/2m)²] (W_c ordered-pair intra weight)."""
    w0, deg, two_m = g
    if two_m <= _EPS:
        return 0.0
    intra = L.intra(w0)
    dc = L.sums(deg)
    return intra / two_m - float(dc @ dc) / two_m**2


def _safe_div(num: Any, den: Any, empty: float) -> np.ndarray:
    """num/den elementwise, ``empty`` where |den| is (numerically) zero."""
    ok = np.abs(den) > _EPS
    return np.where(ok, num / np.where(ok, den, 1.0), empty)


def _mean(x: np.ndarray) -> float:
    """Mean of a small 1-D array (``ndarray.mean`` costs microseconds of overhead)."""
    return float(x.sum()) / x.size


# ============================================================================================
# generic modularity
# ============================================================================================


def weighted_modularity(w: np.ndarray, labels: Labels) -> float:
    """Newman modularity of a weighted graph given as a dense symmetric matrix.

    ``Q = (1/2m) Σ_ij [w_ij − k_i k_j / 2m] δ(c_i, c_j)`` ([NEWMAN], weighted form; the modularity
    in [NSGA3PART] f1, [CVC] σ and [EVEC] Q_t). The diagonal of ``w`` is ignored (no self-loops);
    weights are expected non-negative. Equals ``networkx.algorithms.community.modularity`` on the
    same graph without self-loops. A graph with no weight gives 0. Dimensionless, in [−1/2, 1).
    """
    w = np.asarray(w, dtype=float)
    return _modularity(_graph_w(w), _L(labels, w.shape[0]))


# ============================================================================================
# [EVEC]: VMCS initial-node index σ and partition index τ = w1 α + w2 β + w3 γ
# ============================================================================================


def _s0_dbar(ctx: PartitionContext) -> np.ndarray:
    return _cached(ctx, "s0_dbar", lambda: np.asarray(ctx.d_t, dtype=float).mean(axis=0))


def s0_sigma_parts(ctx: PartitionContext, initial: Sequence[Sequence[int]]) -> dict[str, float]:
    """[EVEC] VMCS initial-node index σ and its parts R_distance, R_net.

    ``initial``: groups of initial nodes, one group of nodes per cluster.

    - ``r_distance = 1 − exp(−d_min)``: ``d_min`` is the smallest electrical distance between two
      initial nodes of *different* groups (the spreading term of [EVEC]). Choice: the distance is
      the time mean of ``ctx.d_t`` over its snapshots (dimensionless, used as given, not rescaled).
      With one group there is no such pair and ``r_distance = 1``; a node in two groups gives 0.
    - ``r_net`` (R_net of [EVEC]: net P/Q compensation of the initial nodes over the horizon).
      Choice: the compensation a group can give its future cluster at step t is its surplus
      ``c_P(t) = Σ_i (p_gen + p_flex − p_load)`` (MW) and ``c_Q(t) = Σ_i (q_comp − q_load)`` (Mvar);
      with ``x_P = mean_t max(c_P, 0) / (P̄/K)`` where P̄ = mean system active load and K the number
      of groups (the demand of an average cluster; likewise x_Q with |Q̄|), a group scores
      ``(1 − e^(−x_P) + 1 − e^(−x_Q)) / 2`` and ``r_net`` is the mean over groups. A system without
      load gives x = ∞ (score 1) for any surplus, 0 without one.
    - ``sigma = w1 r_distance + w2 r_net`` with w1 = w2 = 1/2 (see :func:`s0_sigma`).

    All three in [0, 1], dimensionless.
    """
    return _s0_sigma_parts(ctx, initial, 0.5, 0.5)


def _s0_sigma_parts(
    ctx: PartitionContext, initial: Sequence[Sequence[int]], w1: float, w2: float
) -> dict[str, float]:
    groups = [np.asarray(list(g), dtype=np.intp) for g in initial]
    groups = [g for g in groups if g.size]
    if not groups:
        raise ValueError("s0_sigma needs at least one non-empty group of initial nodes")
    k = len(groups)
    nodes = np.concatenate(groups)
    gid = np.repeat(np.arange(k), [g.size for g in groups])
    if k > 1:
        d = _s0_dbar(ctx)[np.ix_(nodes, nodes)]
        d = np.minimum(d, d.T)
        cross = gid[:, None] != gid[None, :]
        d_min = float(d[cross].min())
        d_min = max(d_min, 0.0)
        r_distance = 1.0 - math.exp(-d_min) if np.isfinite(d_min) else 1.0
    else:
        r_distance = 1.0

    def surplus_score(x_num: np.ndarray, demand: float) -> np.ndarray:
        if demand <= _EPS:
            return np.where(x_num > _EPS, 1.0, 0.0)
        return 1.0 - np.exp(-x_num / demand)

    hg = np.zeros((ctx.n, k))
    hg[nodes, gid] = 1.0
    p_sur = (ctx.p_gen_mw - ctx.p_load_mw) @ hg + ctx.p_flex_mw @ hg  # (T, k)
    q_sur = ctx.q_comp_mvar @ hg - ctx.q_load_mvar @ hg
    p_dem = float(ctx.p_load_mw.sum(axis=1).mean()) / k
    q_dem = abs(float(ctx.q_load_mvar.sum(axis=1).mean())) / k
    s_p = surplus_score(np.maximum(p_sur, 0.0).mean(axis=0), p_dem)
    s_q = surplus_score(np.maximum(q_sur, 0.0).mean(axis=0), q_dem)
    r_net = float(np.mean((s_p + s_q) / 2.0))
    return {
        "r_distance": float(r_distance),
        "r_net": r_net,
        "sigma": float(w1 * r_distance + w2 * r_net),
    }


def s0_sigma(
    ctx: PartitionContext, initial: Sequence[Sequence[int]], w1: float = 0.5, w2: float = 0.5
) -> float:
    """[EVEC] VMCS fitness ``σ = w1 R_distance + w2 R_net`` of a set of initial-node groups.

    To maximize; dimensionless, in [0, 1] for w1 + w2 = 1. The parts are defined in
    :func:`s0_sigma_parts`.
    """
    return _s0_sigma_parts(ctx, initial, w1, w2)["sigma"]


def _alpha_parts(ctx: PartitionContext, L: _L) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster active and reactive self-balance b_P, b_Q (see :func:`s0_alpha`)."""
    d, g, _ = L.ts(ctx)  # (T, K) MW
    b_p = 1.0 - _safe_div(np.abs(g - d).sum(axis=0), (g + d).sum(axis=0), empty=0.0)
    return b_p, 1.0 - _q_deficit(ctx, L)


def _q_deficit(ctx: PartitionContext, L: _L) -> np.ndarray:
    """Per-cluster share of reactive demand Σ_t |Q_load| its compensation cannot cover."""
    ql = np.abs(L.ts(ctx)[2])  # (T, K) Mvar
    cap = L.static(ctx)[0]  # (K,)
    deficit = np.maximum(ql - cap, 0.0).sum(axis=0)
    return _safe_div(deficit, ql.sum(axis=0), empty=0.0)


def s0_alpha(ctx: PartitionContext, labels: Labels) -> dict[str, float]:
    """[EVEC] cluster power self-balance α: ``alpha_p``, ``alpha_q``, ``alpha = (α_P + α_Q)/2``.

    Choice ([EVEC] α over the horizon): for cluster k with generation G_k(t) = Σ p_gen and load
    D_k(t) = Σ p_load (MW), ``b_P,k = 1 − Σ_t |G_k − D_k| / Σ_t (G_k + D_k)``: 1 when generation
    meets load at every step, 0 for a cluster of pure load or pure generation, 1 for a cluster
    with neither. Reactive: compensation capacity can be dispatched anywhere in its range, so
    only a shortfall counts: ``b_Q,k = 1 − Σ_t max(|Q_k(t)| − C_k, 0) / Σ_t |Q_k(t)|`` with
    Q_k = Σ q_load (Mvar), C_k = Σ q_comp (Mvar); 1 without reactive load. α_P, α_Q are the
    unweighted means over clusters. All in [0, 1], dimensionless, to maximize.
    """
    L = _L(labels, ctx.n)
    return _s0_alpha(ctx, L)


def _s0_alpha(ctx: PartitionContext, L: _L) -> dict[str, float]:
    b_p, b_q = _alpha_parts(ctx, L)
    a_p, a_q = _mean(b_p), _mean(b_q)
    return {"alpha_p": a_p, "alpha_q": a_q, "alpha": (a_p + a_q) / 2.0}


def _inv_topo(ctx: PartitionContext) -> tuple[np.ndarray, np.ndarray]:
    def build() -> tuple[np.ndarray, np.ndarray]:
        h = np.asarray(ctx.topo_dist, dtype=float)
        inv = _safe_div(np.ones_like(h), h, empty=0.0)
        inv[~np.isfinite(inv)] = 0.0
        np.fill_diagonal(inv, 0.0)
        return inv, inv.sum(axis=1)

    return _cached(ctx, "inv_topo", build)


def s0_beta(ctx: PartitionContext, labels: Labels) -> float:
    """[EVEC] node affiliation β, from ``μ(i, C(i)) / μ(i, V − C(i))``.

    ``μ(i, S) = mean_{j ∈ S, j ≠ i} 1/h_ij`` with h_ij the hop count of the shortest path
    (``ctx.topo_dist``): how close node i sits to a node set. Choice: the ratio r = μ_in/μ_out
    is mapped to ``β_i = r / (1 + r) = μ_in / (μ_in + μ_out)`` so that β lies in [0, 1] beside
    α and γ in τ; β is the mean over nodes. Degenerate cases: a singleton has μ_in = 0 (β_i = 0);
    a node whose cluster is the whole network (K = 1) has β_i = 1. Dimensionless, to maximize.
    """
    L = _L(labels, ctx.n)
    return _s0_beta(ctx, L)


def _s0_beta(ctx: PartitionContext, L: _L) -> float:
    inv, row = _inv_topo(ctx)
    in_sum = L.row_in(inv)
    own = L.size[L.lab]
    mu_in = in_sum / np.maximum(own - 1, 1)  # 0 for a singleton (in_sum = 0)
    n_out = L.n - own
    mu_out = np.where(n_out > 0, np.maximum(row - in_sum, 0.0) / np.maximum(n_out, 1), 0.0)
    tot = mu_in + mu_out
    fallback = (own == L.n).astype(float)
    beta = _safe_div(mu_in, tot, empty=0.0)
    beta = np.where(tot > _EPS, beta, fallback)
    return _mean(beta)


def _s0_gamma_data(ctx: PartitionContext) -> tuple[np.ndarray, np.ndarray, int]:
    def build() -> tuple[np.ndarray, np.ndarray, int]:
        # snapshot by snapshot: no zero-diagonal copy of the whole (T_e, n, n) stack
        e_t = ctx.e_t
        deg = np.empty((e_t.shape[0], e_t.shape[-1]))  # (T_e, n)
        for t in range(e_t.shape[0]):
            deg[t] = _zero_diag(e_t[t]).sum(axis=1)
        two_m = deg.sum(axis=1)  # (T_e,)
        valid = two_m > _EPS
        inv = np.zeros_like(two_m)
        inv[valid] = 1.0 / two_m[valid]
        ebar = np.zeros((e_t.shape[-1], e_t.shape[-1]))  # Σ_t e_t / 2m_t
        for t in range(e_t.shape[0]):
            ebar += inv[t] * np.asarray(e_t[t], dtype=float)
        np.fill_diagonal(ebar, 0.0)
        g = deg * inv[:, None]  # normalized degrees, rows sum to 1 (0 for empty snapshots)
        return ebar, g, int(valid.sum())

    return _cached(ctx, "s0_gamma", build)


def s0_gamma(ctx: PartitionContext, labels: Labels) -> float:
    """[EVEC] time-coupled electrical modularity γ on the snapshot weights e_ijt (``ctx.e_t``).

    Q_t is Newman modularity on snapshot t (diagonal ignored). Choice of normalization: each Q_t
    is bounded by ``Q_max,t = 1 − Σ_c (D_ct / 2m_t)²`` (the value with no inter-cluster weight,
    [BRANDES]), and ``γ = Σ_t Q_t / Σ_t Q_max,t`` — the mean of the normalized
    modularities Q_t / Q_max,t weighted by Q_max,t. It is 1 when no snapshot has inter-cluster
    weight, 0 for a random-like split and for K = 1 (Q_max = 0), never below −1. Chosen over the
    plain mean of ratios because it needs one n×n pass instead of one per snapshot (GA loops).
    Dimensionless, to maximize.
    """
    L = _L(labels, ctx.n)
    return _s0_gamma(ctx, L)


def _s0_gamma(ctx: PartitionContext, L: _L) -> float:
    ebar, g, n_valid = _s0_gamma_data(ctx)
    if n_valid == 0:
        return 0.0
    intra = L.intra(ebar)  # Σ_t W_intra,t / 2m_t
    dc = L.sums(g, _transposed(ctx, "s0_gamma_g", g) if L.gather else None)  # (T_e, K)
    expected = float(np.einsum("tk,tk->", dc, dc))  # Σ_t Σ_c (D_ct/2m_t)²
    q_max = n_valid - expected
    if q_max <= 1e-12 * n_valid:
        return 0.0
    return (intra - expected) / q_max


def s0_tau(
    ctx: PartitionContext, labels: Labels, w: Sequence[float] = (1 / 3, 1 / 3, 1 / 3)
) -> float:
    """[EVEC] partition index ``τ = w1 α + w2 β + w3 γ`` (to maximize, dimensionless).

    α from :func:`s0_alpha`, β from :func:`s0_beta`, γ from :func:`s0_gamma`.
    """
    L = _L(labels, ctx.n)
    return _s0_tau(ctx, L, w)


def _s0_tau(ctx: PartitionContext, L: _L, w: Sequence[float]) -> float:
    a = _s0_alpha(ctx, L)["alpha"]
    return float(w[0] * a + w[1] * _s0_beta(ctx, L) + w[2] * _s0_gamma(ctx, L))


# ============================================================================================
# [CVC]: modularity on A_ij, power/reactive coverage, communication distance, ρ
# ============================================================================================


def _s2_graph(ctx: PartitionContext) -> tuple[np.ndarray, np.ndarray, float]:
    return _cached(ctx, "s2_graph", lambda: _graph_w(ctx.a_s2))


def s2_modularity(ctx: PartitionContext, labels: Labels) -> float:
    """[CVC] electrical modularity σ: Newman modularity on the coupling A_ij (``ctx.a_s2``).

    Diagonal ignored. Dimensionless, in [−1/2, 1), to maximize.
    """
    L = _L(labels, ctx.n)
    return _modularity(_s2_graph(ctx), L)


def s2_cover(ctx: PartitionContext, labels: Labels, alpha1: float = S2_ALPHA1) -> dict[str, float]:
    """[CVC] active and reactive power coverage P_cover, Q_cover.

    Choice of the per-cluster vacancy (the power deficit of [CVC]): the share of the cluster's
    demand over the horizon that its own resources cannot supply,
    ``v_P,k = Σ_t max(D_k − G_k − F_k, 0) / Σ_t D_k`` with D_k = Σ p_load, G_k = Σ p_gen,
    F_k = Σ p_flex (ESS and exchange-station power, MW) and
    ``v_Q,k = Σ_t max(|Q_k| − C_k, 0) / Σ_t |Q_k|`` (Q_k = Σ q_load, C_k = Σ q_comp, Mvar);
    0 for a cluster without demand. ``p_vac = max_k v_P,k`` (the weakest cluster), ``p_dif`` =
    population standard deviation of v_P,k over clusters (the inter-cluster spread; 0 for K = 1),
    ``p_cover = 1 / (1 + exp(α1 (p_vac + p_dif)))``; likewise q_vac, q_dif, q_cover. As in [CVC]
    the cover lies in (0, 1/2], 1/2 meaning no deficit. α1 = 5 by default (per unit of vacancy).
    All dimensionless; cover to maximize.
    """
    L = _L(labels, ctx.n)
    return _s2_cover(ctx, L, alpha1)


def _s2_cover(ctx: PartitionContext, L: _L, alpha1: float) -> dict[str, float]:
    d, g, _ = L.ts(ctx)
    short = np.maximum(d - g - L.static(ctx)[1], 0.0).sum(axis=0)
    v_p = _safe_div(short, d.sum(axis=0), empty=0.0)
    v_q = _q_deficit(ctx, L)
    out: dict[str, float] = {}
    for name, v in (("p", v_p), ("q", v_q)):
        vac = float(v.max())
        dif = math.sqrt(max(_mean(v * v) - _mean(v) ** 2, 0.0))
        out[f"{name}_vac"] = vac
        out[f"{name}_dif"] = dif
        out[f"{name}_cover"] = float(1.0 / (1.0 + math.exp(min(alpha1 * (vac + dif), 700.0))))
    return out


def _comm_exp(ctx: PartitionContext, gammas: tuple[float, float, float]) -> np.ndarray:
    def build() -> np.ndarray:
        c = ctx.comm
        length = np.asarray(ctx.length_dist_km, dtype=float) / 100.0
        rtt = np.asarray(c.rtt_ms, dtype=float) * (1.0 / c.rtt_max_ms if c.rtt_max_ms > 0 else 0.0)
        loss = np.asarray(c.loss, dtype=float) * (1.0 / c.loss_max if c.loss_max > 0 else 0.0)
        d = gammas[0] * length + gammas[1] * rtt + gammas[2] * loss
        e = np.exp(-d)
        e[~np.isfinite(e)] = 0.0
        np.fill_diagonal(e, 0.0)
        return e

    return _cached(ctx, ("comm", gammas), build)


def s2_comm_distance(
    ctx: PartitionContext, labels: Labels, gammas: Sequence[float] = S2_GAMMAS
) -> float:
    """[CVC] communication distance index C_dis.

    Per cluster ``C_dis,k = 2 / (N_k (N_k − 1)) Σ_{i<j ∈ k} exp(−d_ij)`` with
    ``d_ij = γ1 ℓ_ij / 100 km + γ2 RTT_ij / RTT_max + γ3 loss_ij / loss_max`` (ℓ = line length of
    the shortest path, ``ctx.length_dist_km``; RTT and loss from ``ctx.comm``; a zero maximum
    drops its term). Choice: a singleton cluster has no intra-cluster link and scores 1 (d = 0);
    the index is the unweighted mean over clusters. Default γ = (1/3, 1/3, 1/3). In [0, 1],
    dimensionless, to maximize (1 = every pair of agents close and on a perfect link).
    """
    L = _L(labels, ctx.n)
    return _s2_comm(ctx, L, gammas)


def _s2_comm(ctx: PartitionContext, L: _L, gammas: Sequence[float]) -> float:
    e = _comm_exp(ctx, (float(gammas[0]), float(gammas[1]), float(gammas[2])))
    pair_sum = L.pair_sums(e)  # Σ over ordered pairs i≠j in each cluster
    pairs = L.size * (L.size - 1)
    return _mean(_safe_div(pair_sum, pairs, empty=1.0))


def s2_rho(
    ctx: PartitionContext,
    labels: Labels,
    w: Sequence[float] = S2_WEIGHTS,
    *,
    alpha1: float = S2_ALPHA1,
    gammas: Sequence[float] = S2_GAMMAS,
) -> float:
    """[CVC] comprehensive index ``ρ = ω1 σ + ω2 P_cover + ω3 Q_cover + ω4 C_dis``.

    σ = :func:`s2_modularity`, P_cover/Q_cover from :func:`s2_cover` (steepness ``alpha1``),
    C_dis = :func:`s2_comm_distance` (weights ``gammas``). Default ω = (1/4, 1/4, 1/4, 1/4).
    Dimensionless, to maximize.
    """
    L = _L(labels, ctx.n)
    cov = _s2_cover(ctx, L, alpha1)
    return float(
        w[0] * _modularity(_s2_graph(ctx), L)
        + w[1] * cov["p_cover"]
        + w[2] * cov["q_cover"]
        + w[3] * _s2_comm(ctx, L, gammas)
    )


# ============================================================================================
# [NSGA3PART]: NSGA-III objectives
# ============================================================================================


def _s1_graph(ctx: PartitionContext) -> tuple[np.ndarray, np.ndarray, float]:
    def build() -> tuple[np.ndarray, np.ndarray, float]:
        d = _zero_diag(np.asarray(ctx.d_s1, dtype=float))
        d_max = float(d.max()) if d.size else 0.0
        w = 1.0 - d / d_max if d_max > _EPS else np.ones_like(d)
        return _graph_w(w)

    return _cached(ctx, "s1_graph", build)


def peak_valley(p_total_mw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Peak and valley steps of an aggregate load profile (peak-shift rule of [NSGA3PART] f3).

    Choice: with m = ⌊T/3⌋, the peak periods are the m steps of highest aggregate load and the
    valley periods the m steps of lowest (ties: the earlier step counts as lower). A flat
    profile (max = min) or T < 3 has no peak or valley.
    """
    p = np.asarray(p_total_mw, dtype=float)
    m = p.size // 3
    if m == 0 or float(p.max() - p.min()) <= _EPS:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty
    order = np.argsort(p, kind="stable")
    return np.sort(order[-m:]), np.sort(order[:m])


def s1_shifted_load(ctx: PartitionContext) -> np.ndarray:
    """(T, n) active load after the demand shift of [NSGA3PART] f3, MW.

    Choice: peak and valley steps from the aggregate load ``Σ_i p_load`` (:func:`peak_valley`);
    at every node, 50 % of its load in each peak step is removed and the removed energy is spread
    evenly over the valley steps (node energy conserved).
    """
    return _cached(ctx, "s1_shift", lambda: _shift(np.asarray(ctx.p_load_mw, dtype=float)))


def _s1_net(ctx: PartitionContext) -> np.ndarray:
    """(T, n) shifted load minus generation, MW."""
    return _cached(ctx, "s1_net", lambda: s1_shifted_load(ctx) - ctx.p_gen_mw)


def _shift(p: np.ndarray) -> np.ndarray:
    peak, valley = peak_valley(p.sum(axis=1))
    out = p.copy()
    if peak.size:
        moved = 0.5 * p[peak]
        out[peak] -= moved
        out[valley] += moved.sum(axis=0) / valley.size
    return out


def s1_objectives(ctx: PartitionContext, labels: Labels) -> tuple[float, float, float]:
    """[NSGA3PART] objectives (f1, f2, f3), all to minimize.

    - ``f1 = −Q``: Newman modularity on weights ``w_ij = 1 − M_ij / max M`` from the B-matrix
      electrical distance M (``ctx.d_s1``; diagonal ignored; all weights 1 if M ≡ 0).
      Dimensionless.
    - ``f2 = (1/K) Σ_k (U_k − Ū)²``: mean squared deviation of the user counts U_k = Σ n_users
      of the partitions (users²); 0 when every partition serves as many users, 0 for K = 1.
    - ``f3 = Σ_k max_t |P_d,k(t) − P_g,k(t)|`` (MW) with P_d the load after the peak shift of
      :func:`s1_shifted_load` and P_g = Σ p_gen.
    """
    L = _L(labels, ctx.n)
    return _s1(ctx, L)


def _s1(ctx: PartitionContext, L: _L) -> tuple[float, float, float]:
    f1 = -_modularity(_s1_graph(ctx), L)
    users = L.static(ctx)[2]
    f2 = max(_mean(users * users) - _mean(users) ** 2, 0.0)
    x = _s1_net(ctx)
    net = L.sums(x, _transposed(ctx, "s1_net", x) if L.gather else None)
    f3 = float(np.abs(net).max(axis=0).sum()) if net.size else 0.0
    return float(f1), f2, f3


# ============================================================================================
# [ZONAL]: composite index
# ============================================================================================


def _size_balance(L: _L) -> float:
    """1 − CV(sizes)/√(K−1): 1 for equal sizes (and K = 1), → 0 for one giant cluster."""
    if L.k == 1:
        return 1.0
    mean = L.n / L.k
    var = float(((L.size - mean) ** 2).sum()) / L.k
    cv = math.sqrt(var) / mean
    return max(0.0, 1.0 - cv / math.sqrt(L.k - 1))


def s3_index(ctx: PartitionContext, labels: Labels, w: Sequence[float] = S3_WEIGHTS) -> float:
    """[ZONAL] composite partition index (to maximize, dimensionless).

    Choice of terms: ``w1 Q + w2 α_P + w3 α_Q + w4 β + w5 s`` with Q the modularity on the
    electrical coupling A_ij (:func:`s2_modularity`), α_P and α_Q the active and reactive
    self-balance of :func:`s0_alpha`, β the node affiliation of :func:`s0_beta`, and the
    cluster-size term ``s = 1 − CV(N_k) / √(K − 1)`` (CV = std/mean of the cluster sizes; its
    maximum for K clusters is √(K − 1)), 1 for equal sizes and for K = 1. Default weights 1/5.
    """
    L = _L(labels, ctx.n)
    return _s3(ctx, L, w)


def _s3(ctx: PartitionContext, L: _L, w: Sequence[float]) -> float:
    b_p, b_q = _alpha_parts(ctx, L)
    return float(
        w[0] * _modularity(_s2_graph(ctx), L)
        + w[1] * _mean(b_p)
        + w[2] * _mean(b_q)
        + w[3] * _s0_beta(ctx, L)
        + w[4] * _size_balance(L)
    )


# ============================================================================================
# [TCSOM]: TC-SOM indicators and node features
# ============================================================================================


def _s4_coupling(ctx: PartitionContext) -> np.ndarray:
    """(n, n) [TCSOM] electrical coupling E_ij in [0, 1], zero diagonal."""

    def build() -> np.ndarray:
        s = np.abs(np.asarray(ctx.s_qv, dtype=float))
        s = _zero_diag((s + s.T) / 2.0)
        s_max = float(s.max()) if s.size else 0.0
        sens = s / s_max if s_max > _EPS else np.zeros_like(s)
        d = _zero_diag(np.asarray(ctx.d_s1, dtype=float))
        d_max = float(d.max()) if d.size else 0.0
        near = 1.0 - d / d_max if d_max > _EPS else np.ones_like(d)
        inv, _ = _inv_topo(ctx)
        e = (sens + near + inv) / 3.0
        np.fill_diagonal(e, 0.0)
        return e

    return _cached(ctx, "s4_coupling", build)


def _s4_graph(ctx: PartitionContext) -> tuple[np.ndarray, np.ndarray, float]:
    return _cached(ctx, "s4_graph", lambda: _graph_w(_s4_coupling(ctx)))


def s4_indicators(ctx: PartitionContext, labels: Labels) -> dict[str, float]:
    """[TCSOM] partition indicators (coupling E, balance P, correlation) and evaluation indices.

    Net load of cluster k: ``N_k(t) = Σ (p_load − p_gen)`` (MW), its step change ΔN_k (MW per
    15 min step; 0 when T < 2).

    - ``coupling``: Newman modularity on the [TCSOM] coupling ``E_ij = (s̃_ij + (1 − M_ij/max M)
      + 1/h_ij) / 3``, s̃ = |∂V/∂Q| (``ctx.s_qv``, symmetrized) over its largest off-diagonal
      value, M the electrical distance ``ctx.d_s1``, 1/h the topological strength (inverse hop
      count). Choice: modularity rather than a raw intra-cluster mean, so K = 1 and singletons
      are not rewarded. Dimensionless, to maximize.
    - ``balance``: mean over clusters of ``(LF_k + 1 − min(r_k, 1)) / 2`` with the load factor
      ``LF_k = mean_t D_k / max_t D_k`` (1 for a cluster without load) and the relative ramp
      ``r_k = mean_t |ΔN_k| / max_t |N_k|`` (0 if N_k ≡ 0). In [0, 1], to maximize.
      ``ramp_rate_mw`` (mean over clusters of mean_t |ΔN_k|, MW/step) and ``load_factor``
      (mean LF_k) are reported beside it.
    - ``correlation``: Choice: the mean Pearson correlation of the net-load profiles N_k over
      all pairs of clusters (0 for K = 1; a pair with a constant profile counts 0). In [−1, 1];
      low values mean the clusters' outputs vary independently.
    - ``tie_line_fluctuation``: the tie-line power of a cluster is its net load N_k (losses
      neglected); ``Σ_k mean_t |ΔN_k| / Σ_k mean_t |N_k|`` (per step, 0 if nothing flows).
      To minimize.
    - ``self_balancing``: share of load energy supplied inside its own cluster,
      ``Σ_k Σ_t min(D_k, G_k) / Σ_k Σ_t D_k`` (1 without load). In [0, 1], to maximize.
    - ``ramp_deficit``: share of net-load ramping not covered by the cluster's flexibility
      F_k = Σ p_flex (MW, taken as the change it can offset per step):
      ``Σ_k Σ_t max(|ΔN_k| − F_k, 0) / Σ_k Σ_t |ΔN_k|`` (0 without ramping). In [0, 1], to
      minimize.
    """
    L = _L(labels, ctx.n)
    return _s4(ctx, L)


def _s4(ctx: PartitionContext, L: _L) -> dict[str, float]:
    d, g, _ = L.ts(ctx)  # (T, K)
    net = d - g
    t = net.shape[0]
    dn = np.abs(net[1:] - net[:-1])  # (T-1, K)
    ramp = dn.sum(axis=0) / max(t - 1, 1)  # mean |ΔN_k|
    abs_net = np.abs(net)
    d_sum = d.sum(axis=0)
    lf = _safe_div(d_sum / max(t, 1), d.max(axis=0), empty=1.0)
    rel_ramp = _safe_div(ramp, abs_net.max(axis=0), empty=0.0)
    balance = _mean(lf + 1.0 - np.minimum(rel_ramp, 1.0)) / 2.0
    # mean pairwise Pearson correlation between cluster net-load profiles
    if L.k > 1:
        c = net - net.sum(axis=0) / t
        cov = c.T @ c
        norm = np.sqrt(np.diagonal(cov))
        corr = _safe_div(cov, np.outer(norm, norm), empty=0.0)
        # mean over pairs k < l of the symmetric matrix, diagonal excluded
        off = float(np.clip(corr, -1.0, 1.0).sum() - np.clip(np.diagonal(corr), -1, 1).sum())
        correlation = off / (L.k * (L.k - 1))
    else:
        correlation = 0.0
    ramp_tot = float(ramp.sum())
    flow = float(abs_net.sum()) / t
    tie = ramp_tot / flow if flow > _EPS else 0.0
    load_tot = float(d_sum.sum())
    self_bal = float(np.minimum(d, g).sum()) / load_tot if load_tot > _EPS else 1.0
    dn_tot = float(dn.sum())
    short = float(np.maximum(dn - L.static(ctx)[1], 0.0).sum())
    ramp_def = short / dn_tot if dn_tot > _EPS else 0.0
    return {
        "coupling": _modularity(_s4_graph(ctx), L),
        "balance": balance,
        "correlation": correlation,
        "tie_line_fluctuation": tie,
        "self_balancing": self_bal,
        "ramp_deficit": ramp_def,
        "ramp_rate_mw": _mean(ramp),
        "load_factor": _mean(lf),
    }


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi - lo > _EPS else np.zeros_like(x)


def node_features_s4(ctx: PartitionContext) -> np.ndarray:
    """(n, n + 3) per-node features of the [TCSOM] two-stage SOM, every column in [0, 1].

    - Columns ``0..n-1`` (coarse stage, electrical coupling): row i of the [TCSOM] coupling matrix
      E (see :func:`s4_indicators`) with E_ii = 1 — nodes with similar coupling profiles sit
      close in feature space.
    - Last three columns (fine stage, named in :data:`S4_FINE_FEATURES`), each min–max scaled
      over the nodes (a constant column becomes 0):
      ``ramp`` = mean_t |Δ(p_load − p_gen)_i| (MW per step), ``correlation`` = Pearson
      correlation of the node's net load with the system's net load (0 for a constant profile;
      the proxy for how the node's output moves with the others), ``load_factor`` =
      mean_t p_load / max_t p_load (0 without load).
    """
    return _cached(ctx, "s4_features", lambda: _features(ctx)).copy()


def _features(ctx: PartitionContext) -> np.ndarray:
    e = _s4_coupling(ctx).copy()
    np.fill_diagonal(e, 1.0)
    p_load = np.asarray(ctx.p_load_mw, dtype=float)
    net = p_load - np.asarray(ctx.p_gen_mw, dtype=float)  # (T, n)
    t = net.shape[0]
    ramp = np.abs(np.diff(net, axis=0)).sum(axis=0) / max(t - 1, 1)
    c = net - net.mean(axis=0)
    tot = c.sum(axis=1)
    num = c.T @ tot
    den = np.sqrt((c * c).sum(axis=0)) * math.sqrt(float(tot @ tot))
    corr = _safe_div(num, den, empty=0.0)
    lf = _safe_div(p_load.mean(axis=0), p_load.max(axis=0), empty=0.0)
    fine = np.column_stack([_minmax(ramp), _minmax(corr), _minmax(lf)])
    return np.hstack([e, fine])


# ============================================================================================
# constraints
# ============================================================================================


def _edges(ctx: PartitionContext) -> tuple[np.ndarray, np.ndarray, bool]:
    """Edge end arrays (self-loops and parallel edges dropped) and whether the graph is a forest."""

    def build() -> tuple[np.ndarray, np.ndarray, bool]:
        pairs = {(min(u, v), max(u, v)) for u, v in ctx.graph.edges() if u != v}
        uv = np.array(sorted(pairs), dtype=np.intp).reshape(-1, 2)
        u, v = uv[:, 0].copy(), uv[:, 1].copy()
        adj = coo_matrix((np.ones(u.size), (u, v)), shape=(ctx.n, ctx.n))
        n_comp, _ = connected_components(adj, directed=False)
        return u, v, bool(ctx.n - u.size == n_comp)

    return _cached(ctx, "edges", build)


def _connected(ctx: PartitionContext, L: _L) -> np.ndarray:
    u, v, forest = _edges(ctx)
    lu = L.lab[u]
    keep = lu == L.lab[v]
    if forest:  # a sub-forest has (nodes − edges) components
        intra = np.bincount(lu[keep], minlength=L.k)
        return (L.size - intra) == 1
    adj = coo_matrix((np.ones(int(keep.sum())), (u[keep], v[keep])), shape=(L.n, L.n))
    n_comp, comp = connected_components(adj, directed=False)
    comp_cluster = np.zeros(n_comp, dtype=np.intp)
    comp_cluster[comp] = L.lab
    return np.bincount(comp_cluster, minlength=L.k) == 1


def clusters_connected(ctx: PartitionContext, labels: Labels) -> np.ndarray:
    """(K,) bool: whether each cluster induces a connected subgraph of ``ctx.graph``.

    Vectorized (one sparse connected-components call), for repair loops as well as checks.
    """
    L = _L(labels, ctx.n)
    return _connected(ctx, L)


def load_compensation_balance(ctx: PartitionContext, labels: Labels) -> list[float]:
    """Per-cluster reactive load–compensation margin, Mvar (the load–compensation balance column
    of [EVEC] Tables 1–2).

    Choice: ``Σ q_comp − max_t |Σ q_load(t)|`` over the cluster's nodes — positive when the
    cluster's compensation capacity covers its peak reactive load. Reported, not a constraint.
    """
    L = _L(labels, ctx.n)
    return _balance(ctx, L).tolist()


def _balance(ctx: PartitionContext, L: _L) -> np.ndarray:
    ql = np.abs(L.ts(ctx)[2])
    peak = ql.max(axis=0) if ql.size else np.zeros(L.k)
    return np.asarray(L.static(ctx)[0] - peak, dtype=float)


def check_constraints(
    ctx: PartitionContext,
    labels: Labels,
    *,
    min_size: int,
    max_size: int,
    k: int | None = None,
) -> dict[str, Any]:
    """Constraint checks of a partition; reported, never repaired.

    Returns ``connected`` (every cluster induces a connected subgraph of ``ctx.graph``),
    ``size_ok`` (every size in [min_size, max_size]), ``resources_ok`` (every cluster holds at
    least one control resource, ``ctx.n_resources``), ``k_ok`` (K equals ``k``; True when ``k``
    is None), ``k`` (the number of clusters) and ``per_cluster``: one dict per cluster 0..K-1
    with ``size``, ``connected``, ``n_resources`` and ``balance`` (the reactive load–compensation
    margin of :func:`load_compensation_balance`, Mvar). Clusters are the distinct label values
    in increasing order (for labels 0..K-1, cluster c is label c). JSON-serializable.
    """
    L = _L(labels, ctx.n)
    conn = _connected(ctx, L)
    res = L.static(ctx)[3]
    bal = _balance(ctx, L)
    size_ok = (L.size >= min_size) & (L.size <= max_size)
    return {
        "connected": bool(conn.all()),
        "size_ok": bool(size_ok.all()),
        "resources_ok": bool((res >= 1).all()),
        "k_ok": bool(k is None or L.k == k),
        "k": int(L.k),
        "per_cluster": [
            {
                "size": int(L.size[c]),
                "connected": bool(conn[c]),
                "n_resources": round(float(res[c])),
                "balance": float(bal[c]),
            }
            for c in range(L.k)
        ],
    }


# ============================================================================================
# everything
# ============================================================================================


def all_metrics(ctx: PartitionContext, labels: Labels) -> dict[str, float]:
    """Every label-only metric, as plain floats (JSON-serializable), all finite.

    Keys: ``tau``, ``alpha``, ``alpha_p``, ``alpha_q``, ``beta``, ``gamma`` [EVEC];
    ``modularity`` (= [CVC] σ), ``p_vac``, ``p_dif``, ``p_cover``, ``q_vac``, ``q_dif``,
    ``q_cover``, ``c_dis``, ``rho`` ([CVC], default parameters); ``s1_f1``, ``s1_f2``, ``s1_f3``;
    ``s3_index``; ``s4_coupling``, ``s4_balance``, ``s4_correlation``,
    ``s4_tie_line_fluctuation``, ``s4_self_balancing``, ``s4_ramp_deficit``,
    ``s4_ramp_rate_mw``, ``s4_load_factor``. (σ of [EVEC] is a function of initial nodes, not of a
    partition, and is not included.)
    """
    L = _L(labels, ctx.n)
    out: dict[str, float] = {}
    alpha = _s0_alpha(ctx, L)
    beta = _s0_beta(ctx, L)
    gamma = _s0_gamma(ctx, L)
    w = (1 / 3, 1 / 3, 1 / 3)
    out["tau"] = w[0] * alpha["alpha"] + w[1] * beta + w[2] * gamma
    out.update(alpha)
    out["beta"] = beta
    out["gamma"] = gamma
    q_s2 = _modularity(_s2_graph(ctx), L)
    out["modularity"] = q_s2
    cover = _s2_cover(ctx, L, S2_ALPHA1)
    out.update(cover)
    c_dis = _s2_comm(ctx, L, S2_GAMMAS)
    out["c_dis"] = c_dis
    ws = S2_WEIGHTS
    out["rho"] = ws[0] * q_s2 + ws[1] * cover["p_cover"] + ws[2] * cover["q_cover"] + ws[3] * c_dis
    f1, f2, f3 = _s1(ctx, L)
    out["s1_f1"], out["s1_f2"], out["s1_f3"] = f1, f2, f3
    w3 = S3_WEIGHTS
    out["s3_index"] = (
        w3[0] * q_s2
        + w3[1] * alpha["alpha_p"]
        + w3[2] * alpha["alpha_q"]
        + w3[3] * beta
        + w3[4] * _size_balance(L)
    )
    for key, val in _s4(ctx, L).items():
        out[f"s4_{key}"] = val
    return {key: float(val) for key, val in out.items()}
