"""HI partition [EVEC]: VMCS initial nodes, then CCE-SAO expansion and annealing.

[EVEC] partitions in two stages; the details its quoted summary (``REFERENCES.md``) leaves open
are marked "Choice".

1. **VMCS** (Monte Carlo sampling of the initial nodes). A candidate is one small connected group
   of *initial nodes* per cluster (``n_initial`` nodes, default 2 — Choice). The first node of
   cluster 1 is drawn uniformly; the first node of cluster c + 1 with probability proportional to
   its topological distance (hops, ``ctx.topo_dist``) to cluster c's group (Choice: the nearest
   node of the group; taken nodes get probability 0); further nodes of a group are drawn
   uniformly among the free graph neighbours of the group. Each of the ``n_candidates``
   candidates then undergoes ``n_mutations`` boundary-node mutations: one group (drawn uniformly)
   swaps one of its nodes for a free neighbour of the rest of the group, the group staying
   connected, and the mutation is kept when the [EVEC] initial-node index σ
   (:func:`clustersim.partition.metrics.s0_sigma`, to maximize) rises. The candidate of largest σ
   wins. Sampling loops per candidate; the mutations and σ run for all candidates at once
   (:func:`sigma_batch` equals ``s0_sigma`` candidate by candidate).

2. **CCE-SAO** from the winning initial nodes.

   - *Capacity-corrected K-means expansion* (CCE, :func:`cce_expand`). Pre-allocation: every node
     is assigned to the cluster whose initial group is topologically nearest (ties: electrically
     nearest). Boundary assignment under ``C_max = max_size``: clusters grow in waves over the
     graph frontier; a frontier node joins its pre-allocated cluster when adjacent to it and
     below C_max, else the adjacent cluster below C_max of nearest centre. Centres are the
     clusters' medoids under the mean [EVEC] electrical distance ``d̄_ij = mean_t d_ijt``
     (``ctx.d_t``), recomputed after every wave (the K-means step). *Exceptional nodes* (no
     adjacent cluster has room) then join the adjacent cluster of nearest centre regardless of
     C_max and K-means passes move boundary nodes to adjacent clusters of nearer centre. The
     over-capacity correction (Choice: one rule for C_max and ``C_min = min_size``) then
     repeatedly applies the branch move (below), or pair of branch moves, that most reduces the
     total size violation ``Σ_c max(|c| − C_max, 0) + max(C_min − |c|, 0)`` (ties: the largest
     gain in distance to the centres), until none is left or no move reduces it. Every cluster
     stays connected throughout.
   - *Safety net* (ours, not [EVEC]): if the corrected expansion still breaks a bound, an exact
     dynamic program on a spanning tree (:func:`min_cut_tree_partition`) returns the partition
     into k connected clusters within [C_min, C_max] that cuts the fewest lines inside the
     expansion's clusters. On a radial feeder it is exact, so HI always returns such a partition
     when one exists and raises :class:`~clustersim.errors.PartitionError` when none does.
   - *SAO* (:func:`sao_refine`): topology-aware boundary swaps — a boundary node moves to an
     adjacent cluster together with the branches of its cluster that would otherwise be cut off
     (all components of ``A − u`` but the largest), or, when that breaks a size bound, together
     with one compensating move of the same kind; every move keeps every cluster connected and
     within [C_min, C_max]. A steepest-ascent pass on τ (``swap_steps``), simulated annealing
     ([EVEC]: ``t0 = 100``, ``cooling = 0.99`` per iteration, ``sa_iterations = 100``; a random
     feasible move is accepted with probability ``min(1, exp(Δτ / T))``), keeping the best
     partition seen, then a final steepest-ascent pass from it. τ is the partition index of [EVEC]
     (:func:`clustersim.partition.metrics.s0_tau`, to maximize). Note: τ lies in [0, 1], so
     with the temperatures of [EVEC] (T ≥ 100 · 0.99¹⁰⁰ ≈ 37) almost every move is accepted — the
     annealing acts as an exploration walk, and the best-seen partition plus the final ascent
     make the result.
   - *K-means start* (ours, not [EVEC]; ``kmeans_start``, on by default): SAO also refines the
     partition of the ``kmeans`` baseline (:func:`clustersim.partition.baselines.kmeans`, drawn
     from the generator as ``run_partition`` hands it to that baseline for the same seed) when
     that partition is feasible (k connected clusters within [C_min, C_max]), and HI returns the
     one of higher τ (ties: the VMCS/CCE one). So HI never returns a lower τ than a feasible
     K-means partition of the same seed. Why it is needed: on a network without resources
     (no generation, compensation or flexibility) α only credits clusters without load
     (b_P = b_Q = 1 there, 0 for every loaded cluster; :func:`~clustersim.partition.metrics.s0_alpha`).
     On case1197 without a preset the 31 nodes of the 23 kV feeder carry no load; K-means on
     electrical distance puts them in clusters of their own, while σ's R_net is 0 without
     resources, so VMCS spreads every initial group into the LV networks, CCE gives each feeder
     node a loaded cluster, and SAO's moves, which keep the number of clusters, cannot empty a
     cluster of its load. For 30 clusters of 2..78 nodes (seed 0): τ 0.2737 from VMCS/CCE-SAO
     (no cluster without load) against 0.3284 for K-means (5 feeder-only clusters), 0.3285 for
     SAO from the K-means partition; each LV network whole plus the feeder in 8 clusters would
     reach 0.3611, which neither search finds. With every built-in scenario's bounds the K-means
     partition is infeasible, so their partitions do not change.

Every step draws only from the given ``rng``: the same generator state gives the same labels.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
from collections.abc import Iterator, Sequence

import networkx as nx
import numpy as np

from clustersim.errors import PartitionError
from clustersim.partition import baselines, metrics
from clustersim.partition.core import PartitionContext, PartitionTask

__all__ = [
    "cce_expand",
    "min_cut_tree_partition",
    "partition_hi",
    "sao_refine",
    "sigma_batch",
    "vmcs",
]

Move = tuple[tuple[tuple[int, ...], int], ...]
"""A move: one or two steps ``(nodes, to_cluster)`` applied in order."""


# ============================================================================================
# graph helpers
# ============================================================================================


class _Topo:
    """Adjacency of the operating topology in the forms the steps need."""

    def __init__(self, ctx: PartitionContext):
        n = ctx.n
        self.n = n
        self.nbrs: list[list[int]] = [
            sorted(int(v) for v in ctx.graph.neighbors(u)) for u in range(n)
        ]
        self.deg = np.array([len(a) for a in self.nbrs], dtype=int)
        width = max(1, int(self.deg.max()) if n else 1)
        self.padded = np.full((n, width), -1, dtype=int)
        self.adj = np.zeros((n, n), dtype=bool)
        for u, a in enumerate(self.nbrs):
            self.padded[u, : len(a)] = a
            self.adj[u, a] = True


def _components(topo: _Topo, members: set[int]) -> list[set[int]]:
    """Connected components of the subgraph induced by ``members``."""
    left = set(members)
    out: list[set[int]] = []
    while left:
        start = min(left)
        seen = {start}
        stack = [start]
        while stack:
            u = stack.pop()
            for v in topo.nbrs[u]:
                if v in left and v not in seen:
                    seen.add(v)
                    stack.append(v)
        left -= seen
        out.append(seen)
    return out


def _connected(topo: _Topo, members: set[int]) -> bool:
    return len(_components(topo, members)) <= 1


def _members(labels: np.ndarray, k: int) -> list[set[int]]:
    out: list[set[int]] = [set() for _ in range(k)]
    for u, c in enumerate(labels.tolist()):
        if c >= 0:
            out[c].add(u)
    return out


def _feasible(topo: _Topo, labels: np.ndarray, k: int, lo: int, hi: int) -> bool:
    if (labels < 0).any() or labels.max() >= k:
        return False
    sizes = np.bincount(labels, minlength=k)
    if (sizes < lo).any() or (sizes > hi).any():
        return False
    return all(_connected(topo, m) for m in _members(labels, k))


def _mean_distance(ctx: PartitionContext) -> np.ndarray:
    """``d̄_ij = mean_t d_ijt`` ([EVEC] electrical distance over the snapshots), symmetrized."""
    d = np.asarray(ctx.d_t, dtype=float)
    d = d.mean(axis=0) if d.ndim == 3 else d
    return 0.5 * (d + d.T)


# ============================================================================================
# exact safety net: k connected parts within [lo, hi] of a tree, least total cut cost
# ============================================================================================


def _lower(new: np.ndarray, j: int, s: int, cand: np.ndarray) -> np.ndarray | None:
    """Lower ``new[j:, s:]`` to ``cand`` where that is smaller; return where it did (``None``:
    nowhere)."""
    tgt = new[j:, s:]
    better = cand < tgt
    if not better.any():
        return None
    tgt[better] = cand[better]
    return better


def _merge(
    table: np.ndarray,
    child: np.ndarray,
    new: np.ndarray,
    choice: np.ndarray,
    kind: int,
    k: int,
    width: int,
) -> None:
    """``new[j + jc, s + sc] = min(table[j, s] + child[jc, sc])`` over finite entries, looping
    over whichever side has fewer of them; ``choice`` records the child's ``(jc, sc)``."""
    tj, ts = np.nonzero(np.isfinite(table))
    cj, cs = np.nonzero(np.isfinite(child))
    if len(cj) <= len(tj):
        for jc, sc in zip(cj.tolist(), cs.tolist(), strict=True):
            better = _lower(new, jc, sc, table[: k - jc, : width - sc] + child[jc, sc])
            if better is not None:
                choice[jc:, sc:][better] = (kind * k + jc) * width + sc
    else:
        jgrid = np.arange(k)[:, None]
        sgrid = np.arange(width)[None, :]
        for j, s in zip(tj.tolist(), ts.tolist(), strict=True):
            better = _lower(new, j, s, child[: k - j, : width - s] + table[j, s])
            if better is not None:
                code = (kind * k + jgrid[: k - j]) * width + sgrid[:, : width - s]
                choice[j:, s:][better] = np.broadcast_to(code, better.shape)[better]


# length: the exact tree dynamic program, its table pass and its back-tracking pass
def min_cut_tree_partition(
    tree: nx.Graph,
    k: int,
    lo: int,
    hi: int,
    cut_cost: dict[tuple[int, int], float] | None = None,
    root: int = 0,
) -> np.ndarray | None:
    """Partition a tree on nodes 0..n-1 into exactly ``k`` connected parts of ``lo``..``hi``
    nodes by cutting the ``k − 1`` edges of least total ``cut_cost`` (default 1 per edge; keys
    ``(u, v)`` in either order). Returns labels 0..k-1 or ``None`` when no such partition exists.

    Dynamic program over the tree rooted at ``root``: ``F_v[j, s]`` is the least cut cost in the
    subtree of ``v`` with ``j`` closed parts and the open part holding ``v`` of ``s`` nodes. A
    child is merged through its edge (``F[j + j_c, s + s_c]``) or across a cut (its open part
    closes, which needs ``lo ≤ s_c ≤ hi``: ``F[j + j_c + 1, s]``, plus the edge's cost). The
    answer is ``min_{lo ≤ s ≤ hi} F_root[k − 1, s]``; argmins are kept to rebuild the cuts.
    """
    n = tree.number_of_nodes()
    if n == 0 or not (1 <= k <= n) or lo > hi or lo < 1:
        return None
    hi = min(hi, n)
    cost = cut_cost or {}
    order = [root, *(v for _, v in nx.bfs_edges(tree, root))]
    if len(order) != n:
        return None
    parent = dict(nx.bfs_predecessors(tree, root))
    children: list[list[int]] = [[] for _ in range(n)]
    for v in order[1:]:
        children[parent[v]].append(v)
    width = hi + 1
    tables: list[np.ndarray | None] = [None] * n
    steps: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(n)]
    rows = np.arange(k)
    for v in reversed(order):
        table = np.full((k, width), np.inf)
        table[0, 1] = 0.0
        for c in children[v]:
            child = tables[c]
            assert child is not None
            tables[c] = None
            w = float(cost.get((v, c), cost.get((c, v), 1.0)))
            new = np.full((k, width), np.inf)
            choice = np.full((k, width), -1, dtype=np.int64)
            # across a cut: child state (jc, s_c) with lo <= s_c <= hi closes -> jc + 1 parts
            best_s = np.argmin(child[:, lo:width], axis=1) + lo
            closed = np.full((k, width), np.inf)
            closed[1:, 0] = child[rows[:-1], best_s[:-1]] + w
            cut_choice = np.full((k, width), -1, dtype=np.int64)
            _merge(table, closed, new, cut_choice, 1, k, width)
            # decode the cut's child state: (jj, 0) in `closed` stands for (jj - 1, best_s[jj - 1])
            took = cut_choice >= 0
            if took.any():
                jj = (cut_choice[took] // width) % k
                choice[took] = (1 * k + (jj - 1)) * width + best_s[jj - 1]
            # through the edge
            _merge(table, child, new, choice, 0, k, width)
            steps[v].append((c, choice))
            table = new
        tables[v] = table
    root_table = tables[root]
    assert root_table is not None
    final = root_table[k - 1, lo:width]
    if not np.isfinite(final).any():
        return None
    labels = np.full(n, -1, dtype=int)
    next_label = 1
    stack = [(root, k - 1, int(np.argmin(final)) + lo, 0)]
    while stack:
        v, j, s, lab = stack.pop()
        labels[v] = lab
        for c, choice in reversed(steps[v]):
            kind, rest = divmod(int(choice[j, s]), k * width)
            jc, sc = divmod(rest, width)
            if kind == 1:
                stack.append((c, jc, sc, next_label))
                next_label += 1
                j -= jc + 1
            else:
                stack.append((c, jc, sc, lab))
                j -= jc
                s -= sc
    return labels


def _spanning_tree(ctx: PartitionContext) -> nx.Graph:
    """The operating topology when radial, else its maximum spanning tree on [CVC] coupling."""
    g = nx.Graph()
    g.add_nodes_from(range(ctx.n))
    a = np.asarray(ctx.a_s2, dtype=float)
    for u, v in ctx.graph.edges():
        if u != v:
            g.add_edge(int(u), int(v), weight=float(a[u, v] + a[v, u]))
    if g.number_of_edges() == ctx.n - 1:
        return g
    return nx.maximum_spanning_tree(g, weight="weight")


def _dp_partition(
    ctx: PartitionContext, k: int, lo: int, hi: int, hint: np.ndarray | None
) -> np.ndarray | None:
    """Feasible partition nearest to ``hint`` (fewest cut lines inside its clusters, ties broken
    by cutting weakly coupled lines), or, without a hint, the one cutting the weakest [CVC]
    coupling; ``None`` when the spanning tree admits none."""
    tree = _spanning_tree(ctx)
    a = np.asarray(ctx.a_s2, dtype=float)
    cost: dict[tuple[int, int], float] = {}
    for u, v in tree.edges():
        coupling = 0.5 * float(a[u, v] + a[v, u])
        cost[(u, v)] = coupling if hint is None else float(hint[u] == hint[v]) + 1e-3 * coupling
    return min_cut_tree_partition(tree, k, lo, hi, cost, root=int(ctx.slack))


# ============================================================================================
# VMCS
# ============================================================================================


class _Sigma:
    """Vectorized [EVEC] σ over many candidates; per candidate equal to ``metrics.s0_sigma``."""

    def __init__(self, ctx: PartitionContext, w1: float, w2: float):
        d = np.asarray(ctx.d_t, dtype=float).mean(axis=0)
        self.d = np.minimum(d, d.T)
        self.p = (ctx.p_gen_mw - ctx.p_load_mw) + np.asarray(ctx.p_flex_mw)[None, :]  # (T, n)
        self.q = np.asarray(ctx.q_comp_mvar)[None, :] - ctx.q_load_mvar
        self.p_dem = float(ctx.p_load_mw.sum(axis=1).mean())
        self.q_dem = abs(float(ctx.q_load_mvar.sum(axis=1).mean()))
        self.w1, self.w2 = w1, w2

    def __call__(self, init: np.ndarray) -> np.ndarray:
        c, k, m = init.shape
        valid = (init >= 0).reshape(c, k * m)
        flat = np.where(valid, init.reshape(c, k * m), 0)
        if k > 1:
            gid = np.repeat(np.arange(k), m)
            dd = self.d[flat[:, :, None], flat[:, None, :]]
            mask = valid[:, :, None] & valid[:, None, :] & (gid[:, None] != gid[None, :])[None]
            d_min = np.maximum(np.where(mask, dd, np.inf).min(axis=(1, 2)), 0.0)
            r_dist = np.where(
                np.isfinite(d_min), 1.0 - np.exp(-np.where(np.isfinite(d_min), d_min, 0.0)), 1.0
            )
        else:
            r_dist = np.ones(c)
        scores = []
        for series, demand in ((self.p, self.p_dem / k), (self.q, self.q_dem / k)):
            sur = (series[:, flat] * valid[None]).reshape(-1, c, k, m).sum(axis=3)  # (T, C, k)
            x = np.maximum(sur, 0.0).mean(axis=0)
            scores.append(
                np.where(x > 1e-12, 1.0, 0.0) if demand <= 1e-12 else 1.0 - np.exp(-x / demand)
            )
        r_net = ((scores[0] + scores[1]) / 2.0).mean(axis=1)
        return np.asarray(self.w1 * r_dist + self.w2 * r_net)


def sigma_batch(
    ctx: PartitionContext, init: np.ndarray, w1: float = 0.5, w2: float = 0.5
) -> np.ndarray:
    """[EVEC] σ (:func:`clustersim.partition.metrics.s0_sigma`) of every candidate of ``init``
    (C, k, m): node ids of k groups of up to m initial nodes, ``-1`` padded. Dimensionless."""
    return _Sigma(ctx, w1, w2)(np.asarray(init, dtype=int))


def _sample_candidate(
    topo: _Topo, hops_t: np.ndarray, k: int, m: int, rng: np.random.Generator
) -> np.ndarray:
    """One VMCS sample: (k, m) initial nodes, -1 where a group could not grow. ``hops_t``: the
    hop counts transposed (row j: every node's distance to node j)."""
    n = topo.n
    owner = np.full(n, -1, dtype=int)
    out = np.full((k, m), -1, dtype=int)
    prev: list[int] = []
    for c in range(k):
        if c == 0:
            first = int(rng.integers(n))
        else:
            p = hops_t[prev].min(axis=0)
            p[owner >= 0] = 0.0
            total = float(p.sum())
            if total > 0:
                first = int(rng.choice(n, p=p / total))
            else:
                free = np.flatnonzero(owner < 0)
                first = int(free[rng.integers(len(free))])
        group = [first]
        owner[first] = c
        for _ in range(1, m):
            cand = sorted({v for u in group for v in topo.nbrs[u] if owner[v] < 0})
            if not cand:
                break
            v = cand[int(rng.integers(len(cand)))]
            group.append(v)
            owner[v] = c
        out[c, : len(group)] = group
        prev = group
    return out


def _groups_connected(topo: _Topo, sets: np.ndarray) -> np.ndarray:
    """Whether each row of ``sets`` (B, m), -1 padded, induces a connected subgraph."""
    b, m = sets.shape
    valid = sets >= 0
    idx = np.where(valid, sets, 0)
    reach = topo.adj[idx[:, :, None], idx[:, None, :]] & valid[:, :, None] & valid[:, None, :]
    reach |= np.eye(m, dtype=bool)[None] & valid[:, :, None]
    for _ in range(max(1, math.ceil(math.log2(max(m, 2))))):
        r = reach.astype(np.int32)
        reach = np.matmul(r, r) > 0
    first = np.argmax(valid, axis=1)
    row = reach[np.arange(b), first]
    return np.asarray(~np.any(valid & ~row, axis=1))


def vmcs(
    ctx: PartitionContext,
    k: int,
    *,
    rng: np.random.Generator,
    n_candidates: int = 500,
    n_mutations: int = 50,
    n_initial: int = 2,
    w1: float = 0.5,
    w2: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """VMCS [EVEC]: ``n_candidates`` Monte Carlo samples of initial-node groups (one connected
    group of up to ``n_initial`` nodes per cluster), each improved by ``n_mutations``
    boundary-node mutations kept when σ rises (see the module docstring).

    Returns ``(candidates (C, k, m) -1 padded, σ (C,))``; the caller takes the argmax.
    """
    topo = _Topo(ctx)
    n = ctx.n
    m = max(1, min(n_initial, n // k))
    hops = np.asarray(ctx.topo_dist, dtype=float)
    hops_t = np.ascontiguousarray(np.where(np.isfinite(hops), hops, 0.0).T)
    cand = np.stack([_sample_candidate(topo, hops_t, k, m, rng) for _ in range(n_candidates)])
    sigma_of = _Sigma(ctx, w1, w2)
    sigma = sigma_of(cand)
    rows = np.arange(n_candidates)
    width = topo.padded.shape[1]
    for _ in range(n_mutations):
        r = rng.integers(k, size=n_candidates)
        u_draw, a_draw, v_draw = rng.random((3, n_candidates))
        groups = cand[rows, r]  # (C, m)
        count = (groups >= 0).sum(axis=1)
        slot = np.minimum((u_draw * count).astype(int), count - 1)
        # the new node hangs off another member (the anchor), or off the node itself if alone
        other = np.minimum((a_draw * (count - 1)).astype(int), np.maximum(count - 2, 0))
        other = np.where(other >= slot, other + 1, other)
        anchor = groups[rows, np.where(count > 1, other, slot)]
        pick = np.minimum((v_draw * topo.deg[anchor]).astype(int), width - 1)
        new_node = topo.padded[anchor, pick]
        taken = (cand.reshape(n_candidates, -1) == new_node[:, None]).any(axis=1)
        ok = (new_node >= 0) & ~taken
        proposal = groups.copy()
        proposal[rows, slot] = np.where(ok, new_node, groups[rows, slot])
        need = ok & (count >= 3)
        if need.any():
            ok[need] = _groups_connected(topo, proposal[need])
        if not ok.any():
            continue
        idx = np.flatnonzero(ok)
        trial = cand[idx].copy()
        trial[np.arange(len(idx)), r[idx]] = proposal[idx]
        s_new = sigma_of(trial)
        better = s_new > sigma[idx]
        cand[idx[better]] = trial[better]
        sigma[idx[better]] = s_new[better]
    return cand, sigma


# ============================================================================================
# moves shared by CCE and SAO: a boundary node and the branches it would cut off
# ============================================================================================


def _carry(topo: _Topo, members: set[int], u: int) -> tuple[int, ...] | None:
    """Nodes that leave cluster ``members`` with its node ``u``: ``u`` plus every component of
    ``members − u`` but the largest (ties: the one holding the lowest node), so both sides stay
    connected; ``None`` when ``u`` is the cluster's only node."""
    rest = members - {u}
    if not rest:
        return None
    comps = _components(topo, rest)
    keep = max(range(len(comps)), key=lambda i: (len(comps[i]), -min(comps[i])))
    out = {u}
    for i, comp in enumerate(comps):
        if i != keep:
            out |= comp
    return tuple(sorted(out))


def _boundary(
    topo: _Topo, labels: np.ndarray, sources: set[int] | None, targets: set[int] | None
) -> list[int]:
    """Nodes (increasing) with a neighbour of another label, in a cluster of ``sources`` and
    with such a neighbour in ``targets`` (``None``: any)."""
    nbrs = topo.padded
    own = labels[:, None]
    valid = nbrs >= 0
    other = np.where(valid, labels[np.where(valid, nbrs, 0)], own)
    cross = other != own
    if targets is not None:
        cross &= np.isin(other, list(targets))
    mask = cross.any(axis=1)
    if sources is not None:
        mask &= np.isin(labels, list(sources))
    return np.flatnonzero(mask).tolist()


def _raw_moves(
    topo: _Topo,
    labels: np.ndarray,
    members: list[set[int]],
    sources: set[int] | None = None,
    targets: set[int] | None = None,
) -> Iterator[tuple[tuple[int, ...], int, int]]:
    """Connectivity-preserving moves ``(nodes, from, to)`` of boundary nodes (sizes unchecked),
    in increasing order of the boundary node, then of the target cluster."""
    cache: dict[int, tuple[int, ...] | None] = {}
    for u in _boundary(topo, labels, sources, targets):
        a = int(labels[u])
        for b in sorted({int(labels[v]) for v in topo.nbrs[u]} - {a}):
            if targets is not None and b not in targets:
                continue
            if u not in cache:
                cache[u] = _carry(topo, members[a], u)
            nodes = cache[u]
            if nodes is not None:
                yield nodes, a, b


def _apply(labels: np.ndarray, move: Move) -> np.ndarray:
    out = labels.copy()
    for nodes, b in move:
        out[list(nodes)] = b
    return out


def _neighbourhood(
    topo: _Topo, labels: np.ndarray, k: int, lo: int, hi: int, *, pairs_only: bool = False
) -> list[Move]:
    """Feasible moves from ``labels``: single branch moves within [lo, hi], and pairs whose first
    step breaks a bound that the second step (out of the grown / into the shrunk cluster)
    restores. Every cluster stays connected. ``pairs_only``: every first step paired with every
    second step out of the cluster it grew and into the cluster it shrank (sizes unchecked)."""
    members = _members(labels, k)
    sizes = np.bincount(labels, minlength=k)
    out: list[Move] = []
    for nodes, a, b in _raw_moves(topo, labels, members):
        sa, sb = sizes[a] - len(nodes), sizes[b] + len(nodes)
        if lo <= sa and sb <= hi and not pairs_only:
            out.append(((nodes, b),))
            continue
        if sa < 1:
            continue
        lab1 = labels.copy()
        lab1[list(nodes)] = b
        mem1 = [set(s) for s in members]
        mem1[a] -= set(nodes)
        mem1[b] |= set(nodes)
        sz1 = sizes.copy()
        sz1[a], sz1[b] = sa, sb
        second: Iterator[tuple[tuple[int, ...], int, int]]
        if pairs_only:
            second = itertools.chain(
                _raw_moves(topo, lab1, mem1, sources={b}),
                _raw_moves(topo, lab1, mem1, targets={a}),
            )
        elif sb > hi:
            second = _raw_moves(topo, lab1, mem1, sources={b})
        else:
            second = _raw_moves(topo, lab1, mem1, targets={a})
        for nodes2, c, d in second:
            sz2 = sz1.copy()
            sz2[c] -= len(nodes2)
            sz2[d] += len(nodes2)
            if pairs_only or ((sz2 >= lo).all() and (sz2 <= hi).all()):
                out.append(((nodes, b), (nodes2, d)))
    return out


# ============================================================================================
# CCE: capacity-corrected K-means expansion
# ============================================================================================


def _medoids(members: list[set[int]], d: np.ndarray) -> np.ndarray:
    centers = np.zeros(len(members), dtype=int)
    for c, mem in enumerate(members):
        if mem:
            idx = np.array(sorted(mem))
            centers[c] = idx[int(np.argmin(d[np.ix_(idx, idx)].sum(axis=1)))]
    return centers


# length: the CCE-SAO expansion loop of [EVEC], step by step as the paper orders it
def cce_expand(
    ctx: PartitionContext,
    k: int,
    initial: Sequence[Sequence[int]],
    *,
    min_size: int,
    max_size: int,
    kmeans_passes: int = 10,
) -> np.ndarray:
    """Capacity-corrected K-means expansion ([EVEC] CCE) from the initial node groups.

    Returns labels with every node assigned and every cluster connected (each cluster grows from
    its connected initial group over graph edges); the size bounds hold unless the corrections
    got stuck, which the caller checks. Steps in the module docstring.
    """
    topo = _Topo(ctx)
    n = ctx.n
    d = _mean_distance(ctx)
    hops = np.asarray(ctx.topo_dist, dtype=float)
    labels = np.full(n, -1, dtype=int)
    for c, group in enumerate(initial):
        labels[list(group)] = c
    # pre-allocation: topologically nearest initial group (ties: electrically nearest)
    hop = np.stack([hops[:, list(g)].min(axis=1) for g in initial], axis=1)
    elec = np.stack([d[:, list(g)].mean(axis=1) for g in initial], axis=1)
    pref = np.argmin(hop + 1e-3 * elec / (elec.max() + 1e-12), axis=1)
    pref_hop = hop[np.arange(n), pref]
    sizes = np.bincount(labels[labels >= 0], minlength=k)
    members = _members(labels, k)
    centers = _medoids(members, d)

    def adjacent(u: int) -> list[int]:
        return sorted({int(labels[v]) for v in topo.nbrs[u]} - {-1})

    # boundary assignment in waves under C_max; centres move after every wave (K-means step)
    while True:
        frontier = [u for u in range(n) if labels[u] < 0 and (labels[topo.nbrs[u]] >= 0).any()]
        frontier.sort(key=lambda u: (pref_hop[u], u))
        progressed = False
        for u in frontier:
            room = [c for c in adjacent(u) if sizes[c] < max_size]
            if not room:
                continue
            c = int(pref[u]) if pref[u] in room else min(room, key=lambda c: (d[u, centers[c]], c))
            labels[u] = c
            sizes[c] += 1
            members[c].add(u)
            progressed = True
        centers = _medoids(members, d)
        if not progressed:
            break
    # exceptional nodes: no adjacent cluster has room; join the nearest centre regardless
    while (labels < 0).any():
        for u in np.flatnonzero(labels < 0).tolist():
            near = adjacent(u)
            if near:
                c = min(near, key=lambda c: (d[u, centers[c]], c))
                labels[u] = c
                sizes[c] += 1
                members[c].add(u)
        centers = _medoids(members, d)

    def move(nodes: tuple[int, ...], a: int, b: int) -> None:
        labels[list(nodes)] = b
        sizes[a] -= len(nodes)
        sizes[b] += len(nodes)
        members[a] -= set(nodes)
        members[b] |= set(nodes)

    def gain(nodes: tuple[int, ...], a: int, b: int) -> float:
        idx = list(nodes)
        return float((d[idx, centers[a]] - d[idx, centers[b]]).sum())

    # K-means passes: boundary nodes move to an adjacent cluster of nearer centre
    lo = max(min_size, 1)
    for _ in range(kmeans_passes):
        moved = False
        for u in range(n):
            a = int(labels[u])
            if sizes[a] - 1 < lo:
                continue
            nearer = [
                b
                for b in adjacent(u)
                if b != a and sizes[b] < max_size and d[u, centers[b]] < d[u, centers[a]] - 1e-12
            ]
            if nearer and _connected(topo, members[a] - {u}):
                move((u,), a, min(nearer, key=lambda b: (d[u, centers[b]], b)))
                moved = True
        centers = _medoids(members, d)
        if not moved:
            break

    # over/under-capacity correction: the connectivity-preserving branch move (or pair of
    # moves) that most reduces the total size violation, ties to the largest centre-distance gain
    def violation(sz: np.ndarray) -> int:
        return int(np.maximum(sz - max_size, 0).sum() + np.maximum(min_size - sz, 0).sum())

    for _ in range(4 * n):
        current = violation(sizes)
        if current == 0:
            break
        best: tuple[tuple[int, float], list[tuple[tuple[int, ...], int, int]]] | None = None
        for nodes, a, b in list(_raw_moves(topo, labels, members)):
            sz = sizes.copy()
            sz[a] -= len(nodes)
            sz[b] += len(nodes)
            key = (violation(sz), -gain(nodes, a, b))
            if key[0] < current and (best is None or key < best[0]):
                best = (key, [(nodes, a, b)])
        if best is None:  # no single move helps: try a move followed by a second one
            for mv in _neighbourhood(topo, labels, k, 1, n, pairs_only=True):
                lab2 = _apply(labels, mv)
                sz = np.bincount(lab2, minlength=k)
                if sz.min() < 1:
                    continue
                steps = []
                lab_step = labels.copy()
                for nodes, b in mv:
                    steps.append((nodes, int(lab_step[nodes[0]]), b))
                    lab_step[list(nodes)] = b
                key = (violation(sz), -sum(gain(*st) for st in steps))
                if key[0] < current and (best is None or key < best[0]):
                    best = (key, steps)
        if best is None:
            break
        for nodes, a, b in best[1]:
            move(nodes, a, b)
        centers = _medoids(members, d)
    return labels


# ============================================================================================
# SAO: topology-aware boundary swaps + simulated annealing on tau
# ============================================================================================


def sao_refine(
    ctx: PartitionContext,
    labels: np.ndarray,
    k: int,
    *,
    rng: np.random.Generator,
    min_size: int,
    max_size: int,
    w_tau: Sequence[float] = (1 / 3, 1 / 3, 1 / 3),
    swap_steps: int = 20,
    t0: float = 100.0,
    cooling: float = 0.99,
    sa_iterations: int = 100,
) -> tuple[np.ndarray, float]:
    """SAO [EVEC] from a feasible partition: steepest ascent on τ over the topology-aware boundary
    swaps (at most ``swap_steps`` moves), simulated annealing (temperature ``t0``, multiplied by
    ``cooling`` after each of ``sa_iterations`` iterations; a uniformly drawn feasible move is
    accepted with probability ``min(1, exp(Δτ / T))``), then steepest ascent from the best
    partition seen. Every move keeps every cluster connected and within
    [``min_size``, ``max_size``]. Returns ``(labels, τ)``, τ dimensionless."""
    topo = _Topo(ctx)
    w = tuple(float(x) for x in w_tau)

    def tau(lab: np.ndarray) -> float:
        return float(metrics.s0_tau(ctx, lab, w))

    def ascend(lab: np.ndarray, value: float, steps: int) -> tuple[np.ndarray, float]:
        for _ in range(steps):
            best_lab, best_val = None, value
            for mv in _neighbourhood(topo, lab, k, min_size, max_size):
                trial = _apply(lab, mv)
                v = tau(trial)
                if v > best_val + 1e-12:
                    best_lab, best_val = trial, v
            if best_lab is None:
                break
            lab, value = best_lab, best_val
        return lab, value

    cur = np.asarray(labels, dtype=int).copy()
    cur, cur_val = ascend(cur, tau(cur), swap_steps)
    best, best_val = cur.copy(), cur_val
    temp = float(t0)
    for _ in range(sa_iterations):
        moves = _neighbourhood(topo, cur, k, min_size, max_size)
        if not moves:
            break
        trial = _apply(cur, moves[int(rng.integers(len(moves)))])
        val = tau(trial)
        delta = val - cur_val
        if delta >= 0 or (temp > 0 and rng.random() < math.exp(delta / temp)):
            cur, cur_val = trial, val
            if cur_val > best_val:
                best, best_val = cur.copy(), cur_val
        temp *= cooling
    return ascend(best, best_val, swap_steps)


# ============================================================================================
# the method
# ============================================================================================


def partition_hi(
    task: PartitionTask,
    *,
    n_candidates: int = 500,
    n_mutations: int = 50,
    n_initial: int = 2,
    w_sigma: Sequence[float] = (0.5, 0.5),
    w_tau: Sequence[float] = (1 / 3, 1 / 3, 1 / 3),
    swap_steps: int = 20,
    t0: float = 100.0,
    cooling: float = 0.99,
    sa_iterations: int = 100,
    kmeans_start: bool = True,
) -> np.ndarray:
    """HI partition of [EVEC]: VMCS initial nodes (``n_candidates`` × ``n_mutations``, σ weights
    ``w_sigma``), then CCE-SAO (τ weights ``w_tau``; annealing ``t0``, ``cooling``,
    ``sa_iterations``); with ``kmeans_start`` also SAO from the K-means partition when that is
    feasible, keeping the higher τ. Every step is described in the module docstring.

    Returns labels (n,) of ``k`` connected clusters of ``min_size``..``max_size`` nodes whenever
    such a partition exists (decided exactly on a spanning tree of the operating topology, the
    topology itself for a radial feeder); raises PartitionError when none does.
    """
    ctx, k, rng, min_size, max_size = task.ctx, task.k, task.rng, task.min_size, task.max_size
    # the generator as the K-means baseline receives it from run_partition (nothing drawn yet)
    kmeans_rng = copy.deepcopy(rng)
    topo = _Topo(ctx)
    n = ctx.n
    fallback = _dp_partition(ctx, k, min_size, max_size, None)
    if fallback is None:
        raise PartitionError(
            f"no partition of case {ctx.name} into {k} connected clusters of "
            f"{min_size}..{max_size} buses exists"
        )
    if k == 1:
        return np.zeros(n, dtype=int)
    cand, sigma = vmcs(
        ctx,
        k,
        rng=rng,
        n_candidates=max(1, int(n_candidates)),
        n_mutations=int(n_mutations),
        n_initial=int(n_initial),
        w1=float(w_sigma[0]),
        w2=float(w_sigma[1]),
    )
    initial = [[int(v) for v in row if v >= 0] for row in cand[int(np.argmax(sigma))]]
    labels = cce_expand(ctx, k, initial, min_size=min_size, max_size=max_size)
    if not _feasible(topo, labels, k, min_size, max_size):
        repaired = _dp_partition(ctx, k, min_size, max_size, labels)
        labels = repaired if repaired is not None else fallback
    refine = functools.partial(
        sao_refine,
        ctx,
        k=k,
        rng=rng,
        min_size=min_size,
        max_size=max_size,
        w_tau=w_tau,
        swap_steps=swap_steps,
        t0=t0,
        cooling=cooling,
        sa_iterations=sa_iterations,
    )
    labels, tau = refine(labels)
    if kmeans_start:
        start = baselines.kmeans(PartitionTask(ctx, k, kmeans_rng, min_size, max_size))
        if _feasible(topo, start, k, min_size, max_size):
            other, other_tau = refine(start)
            if other_tau > tau + 1e-12:
                labels = other
    return labels
