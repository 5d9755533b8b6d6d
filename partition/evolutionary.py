"""Evolutionary partition methods on the branch-cut encoding: NSGA-III [NSGA3PART], GA [CVC],
hybrid GA–SA [ZONAL].

Encoding (all three methods). The operating topology is rooted at the slack node and, when it is
meshed, reduced to its breadth-first spanning tree (neighbours visited in node order). A chromosome
is a binary vector over the ``n − 1`` tree edges (the "branch on/off" encoding of [NSGA3PART]): gene
``j`` is 1 when edge ``j`` is cut. Cutting ``k − 1`` edges of a tree leaves exactly ``k`` connected
subtrees, so every decoded partition has connected clusters, in the tree and therefore in the graph.
Edge ``j`` is identified by its child node ``tree.edge_child[j]``; the genes are ordered by a
depth-first preorder of the tree (children in node order), so a contiguous stretch of the chromosome
is a contiguous part of the feeder and two-point crossover exchanges whole sub-feeders.

Repair (:func:`repair_cuts`) gives every individual exactly ``k − 1`` cuts and, when it can, sizes
within ``[min_size, max_size]``. It is a deterministic greedy descent on the violation

    V = (2n + 1)·|cuts − (k − 1)| + Σ_C max(0, N_bmin − |C|) + max(0, |C| − N_bmax)

over four moves: add a cut, remove a cut, move a cut *forward* (one edge towards the root: the
cluster below it grows by the upstream node and what hangs from it — the forward adjustment of
[NSGA3PART] that lifts a cluster above the minimum size N_bmin) and move a cut *backward* (one edge
towards the leaves, onto one child edge: the cluster shrinks). Each step applies the move that
lowers ``V`` most; ties go to the move acting on the cut closest to the root (fewest hops from the
slack), then to the lowest node index (the edge's child node), then add < remove < forward <
backward. The descent stops when no move lowers ``V``: the cut count is then always ``k − 1`` (the
count term outweighs any size term). This realizes the forward adjustment and the connectivity
adjustment of [NSGA3PART] (cuts moved forward/backward) as one procedure. When the descent ends in a
local minimum with a size bound still broken, an exact dynamic programme over the tree
(:func:`project_cuts`) replaces the individual by the feasible chromosome with the fewest genes
changed, so every individual is feasible whenever ``k`` clusters within the bounds exist at all;
otherwise it stays infeasible and the search ranks it below the feasible ones (NSGA-III: constraint
``G = V ≤ 0`` with pymoo's constrained domination; the GAs: a penalty).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numba
import numpy as np
from pymoo.algorithms.moo.nsga3 import NSGA3
from pymoo.core.mutation import Mutation
from pymoo.core.problem import Problem
from pymoo.core.repair import Repair
from pymoo.core.sampling import Sampling
from pymoo.operators.crossover.pntx import TwoPointCrossover
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting
from pymoo.util.ref_dirs import get_reference_directions

from clustersim.errors import PartitionError
from clustersim.partition import metrics
from clustersim.partition.core import PartitionContext, PartitionTask

__all__ = [
    "CutTree",
    "cut_tree",
    "cuts_to_labels",
    "fuzzy_compromise",
    "ga_rho",
    "ga_sa",
    "labels_to_cuts",
    "nsga3_cut",
    "repair_cuts",
    "sample_cuts",
    "shift_mutation",
    "size_violation",
    "two_point_crossover",
]


# --------------------------------------------------------------------------------------------
# the encoding
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CutTree:
    """A rooted spanning tree of the operating topology, the carrier of the branch-cut encoding.

    Nodes are the context's nodes 0..n-1. ``edge_child[j]`` is the child node of gene ``j`` (the
    edge ``(parent[c], c)``), genes in depth-first preorder; ``gene_of[c]`` the inverse (−1 at the
    root). ``anc[u, v]`` is true when ``v`` is ``u`` or an ancestor of ``u``.
    """

    root: int
    parent: np.ndarray
    depth: np.ndarray
    edge_child: np.ndarray
    gene_of: np.ndarray
    anc: np.ndarray
    child_ptr: np.ndarray
    """children of ``v``: ``child_idx[child_ptr[v]:child_ptr[v + 1]]``, in node order"""
    child_idx: np.ndarray
    post: np.ndarray
    """nodes in post-order (children before their parent)"""

    @property
    def n(self) -> int:
        """Number of nodes of the tree."""
        return len(self.parent)

    @property
    def m(self) -> int:
        """Number of tree edges (genes of a chromosome), n − 1."""
        return len(self.edge_child)


def cut_tree(graph: nx.Graph, root: int) -> CutTree:
    """Root ``graph`` (nodes 0..n-1, connected) at ``root``; a meshed graph is reduced to its
    breadth-first spanning tree, neighbours visited in increasing node order."""
    n = graph.number_of_nodes()
    if sorted(graph.nodes) != list(range(n)):
        raise PartitionError("the partition graph must have nodes 0..n-1")
    parent = np.full(n, -1, dtype=int)
    depth = np.zeros(n, dtype=int)
    seen = np.zeros(n, dtype=bool)
    seen[root] = True
    frontier = [root]
    children: list[list[int]] = [[] for _ in range(n)]
    while frontier:
        nxt: list[int] = []
        for u in frontier:
            for v in sorted(graph.neighbors(u)):
                if not seen[v]:
                    seen[v] = True
                    parent[v] = u
                    depth[v] = depth[u] + 1
                    children[u].append(v)
                    nxt.append(v)
        frontier = nxt
    if not seen.all():
        raise PartitionError("the partition graph is not connected")
    preorder: list[int] = []
    stack = [root]
    while stack:
        u = stack.pop()
        preorder.append(u)
        stack.extend(reversed(children[u]))
    edge_child = np.array(preorder[1:], dtype=int)
    gene_of = np.full(n, -1, dtype=int)
    gene_of[edge_child] = np.arange(len(edge_child))
    anc = np.zeros((n, n), dtype=bool)
    for u in range(n):
        v = u
        while v >= 0:
            anc[u, v] = True
            v = parent[v]
    child_ptr = np.zeros(n + 1, dtype=np.int64)
    child_ptr[1:] = np.cumsum([len(c) for c in children])
    child_idx = np.array([v for c in children for v in c], dtype=np.int64)
    post = np.array(preorder[::-1], dtype=np.int64)
    return CutTree(root, parent, depth, edge_child, gene_of, anc, child_ptr, child_idx, post)


def _node_cuts(tree: CutTree, genes: np.ndarray) -> np.ndarray:
    cut = np.zeros(tree.n, dtype=bool)
    cut[tree.edge_child] = np.asarray(genes, dtype=bool)
    return cut


def _genes(tree: CutTree, cut: np.ndarray) -> np.ndarray:
    return np.asarray(cut, dtype=bool)[tree.edge_child]


def _cluster_roots(tree: CutTree, cut: np.ndarray) -> np.ndarray:
    """Root node of each node's cluster (pointer jumping up the tree until a cut or the root)."""
    idx = np.arange(tree.n)
    ptr = np.where(cut | (idx == tree.root), idx, tree.parent)
    while True:
        nxt = ptr[ptr]
        if np.array_equal(nxt, ptr):
            return ptr
        ptr = nxt


def cuts_to_labels(tree: CutTree, genes: np.ndarray) -> np.ndarray:
    """Decode a chromosome: (n,) labels 0..K-1, clusters numbered in order of their lowest node
    (the canonical form of :func:`clustersim.partition.core.relabel`)."""
    roots = _cluster_roots(tree, _node_cuts(tree, genes))
    _, first, inv = np.unique(roots, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=int)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inv.reshape(-1)]


def labels_to_cuts(tree: CutTree, labels: np.ndarray) -> np.ndarray:
    """The chromosome whose cuts are the tree edges joining two clusters (the inverse of
    :func:`cuts_to_labels` for partitions into subtrees)."""
    labels = np.asarray(labels)
    c = tree.edge_child
    return labels[c] != labels[tree.parent[c]]


def _hanging(tree: CutTree, cut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cluster root of each node, h): ``h[v]`` = nodes of ``v``'s subtree in ``v``'s cluster; the
    size of the cluster rooted at ``r`` is ``h[r]``."""
    roots = _cluster_roots(tree, cut)
    same = roots[:, None] == roots[None, :]
    h = (tree.anc & same).sum(axis=0)
    return roots, h


def _size_penalty(s: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return np.maximum(0, lo - s) + np.maximum(0, s - hi)


def size_violation(tree: CutTree, genes: np.ndarray, k: int, min_size: int, max_size: int) -> int:
    """``V`` of the module docstring: 0 iff the chromosome has ``k − 1`` cuts and every cluster
    holds ``min_size..max_size`` nodes."""
    cut = _node_cuts(tree, genes)
    roots = _cluster_roots(tree, cut)
    sizes = np.bincount(roots, minlength=tree.n)
    sizes = sizes[sizes > 0]
    w = 2 * tree.n + 1
    return int(w * abs(int(cut.sum()) - (k - 1)) + _size_penalty(sizes, min_size, max_size).sum())


@numba.njit(cache=True, nogil=True)
def _pen(s: int, lo: int, hi: int) -> int:  # pragma: no cover - compiled
    return max(0, lo - s) + max(0, s - hi)


# length: a numba kernel; splitting it would cost calls inside the GA's fitness loop
@numba.njit(cache=True, nogil=True)
def _descent_kernel(
    parent: np.ndarray,
    post: np.ndarray,
    depth: np.ndarray,
    root: int,
    cut: np.ndarray,
    k: int,
    lo: int,
    hi: int,
) -> None:  # pragma: no cover - compiled
    """Greedy descent on V (module docstring), in place on the node-level cut vector."""
    n = parent.shape[0]
    w = 2 * n + 1
    roots = np.empty(n, dtype=np.int64)
    h = np.empty(n, dtype=np.int64)
    for _ in range(4 * n * n + 8):
        for i in range(n - 1, -1, -1):  # parents before children
            v = post[i]
            roots[v] = v if (v == root or cut[v]) else roots[parent[v]]
        h[:] = 1
        m = 0
        for i in range(n):  # children before parents
            v = post[i]
            if v != root:
                if cut[v]:
                    m += 1
                else:
                    h[parent[v]] += h[v]
        d_add = w * (abs(m + 1 - (k - 1)) - abs(m - (k - 1)))
        d_rem = w * (abs(m - 1 - (k - 1)) - abs(m - (k - 1)))
        # best move so far: (delta, depth, acted cut, kind, node)
        b_d, b_dep, b_x, b_kind, b_y = 0, 0, 0, 0, -1
        for v in range(n):
            if v == root:
                continue
            p = parent[v]
            size_v = h[roots[v]]
            size_p = h[roots[p]]
            for kind in range(4):
                if kind == 0 and not cut[v]:  # add a cut on (p, v)
                    d = _pen(h[v], lo, hi) + _pen(size_v - h[v], lo, hi) - _pen(size_v, lo, hi)
                    d += d_add
                    x = v
                elif kind == 1 and cut[v]:  # remove the cut at v
                    d = _pen(h[v] + size_p, lo, hi) - _pen(h[v], lo, hi) - _pen(size_p, lo, hi)
                    d += d_rem
                    x = v
                elif kind == 2 and cut[v] and p != root and not cut[p]:  # forward to (pp, p)
                    d = (
                        _pen(h[v] + h[p], lo, hi)
                        + _pen(size_p - h[p], lo, hi)
                        - _pen(h[v], lo, hi)
                        - _pen(size_p, lo, hi)
                    )
                    x = v
                elif kind == 3 and not cut[v] and cut[p]:  # backward from (pp, p) to (p, v)
                    size_pp = h[roots[parent[p]]]
                    d = (
                        _pen(h[v], lo, hi)
                        + _pen(size_pp + h[p] - h[v], lo, hi)
                        - _pen(h[p], lo, hi)
                        - _pen(size_pp, lo, hi)
                    )
                    x = p
                else:
                    continue
                better = False
                if d != b_d:
                    better = d < b_d
                elif depth[x] != b_dep:
                    better = depth[x] < b_dep
                elif x != b_x:
                    better = x < b_x
                elif kind != b_kind:
                    better = kind < b_kind
                else:
                    better = v < b_y
                if d < 0 and (b_y < 0 or better):
                    b_d, b_dep, b_x, b_kind, b_y = d, depth[x], x, kind, v
        if b_y < 0:
            return
        if b_kind == 0:
            cut[b_y] = True
        elif b_kind == 1:
            cut[b_y] = False
        elif b_kind == 2:
            cut[b_y] = False
            cut[parent[b_y]] = True
        else:
            cut[parent[b_y]] = False
            cut[b_y] = True


def repair_cuts(
    tree: CutTree, genes: np.ndarray, k: int, min_size: int, max_size: int
) -> np.ndarray:
    """Repair a chromosome to ``k − 1`` cuts and sizes within bounds whenever that is possible.

    First the greedy descent on ``V`` (moves and tie-break order in the module docstring); if it
    stops with ``V > 0``, the result is replaced by the nearest feasible chromosome
    (:func:`project_cuts`); if none exists the descent's result (``k − 1`` cuts) is returned.
    Deterministic: the same chromosome always gives the same repaired chromosome."""
    if not 1 <= k <= tree.n:
        raise PartitionError(f"cannot cut a tree of {tree.n} nodes into {k} clusters")
    cut = _node_cuts(tree, genes)
    _descent_kernel(
        tree.parent.astype(np.int64),
        tree.post,
        tree.depth.astype(np.int64),
        int(tree.root),
        cut,
        int(k),
        int(min_size),
        int(max_size),
    )
    out = _genes(tree, cut)
    if size_violation(tree, out, k, min_size, max_size) > 0:
        nearest = project_cuts(tree, out, k, min_size, max_size)
        if nearest is not None:
            return nearest
    return out


_INF = np.int64(1) << 40


# length: a numba kernel (tree dynamic program); helpers would cost calls in its loops
@numba.njit(cache=True, nogil=True)
def _dp_project_kernel(
    post: np.ndarray,
    child_ptr: np.ndarray,
    child_idx: np.ndarray,
    root: int,
    cut: np.ndarray,
    n_cuts: int,
    lo: int,
    hi: int,
    out: np.ndarray,
) -> bool:  # pragma: no cover - compiled
    n = post.shape[0]
    kk = n_cuts + 1
    uu = min(hi, n) + 1
    # one table per merge stage: stage of node v after merging its first j children is
    # first_stage[v] + j; table[st, c, s] = fewest gene changes in the part of v's subtree
    # merged so far, with c cuts inside it and v's open component of s nodes
    first_stage = np.zeros(n, dtype=np.int64)
    total = 0
    for v in range(n):
        first_stage[v] = total
        total += child_ptr[v + 1] - child_ptr[v] + 1
    table = np.full((total, kk, uu), _INF, dtype=np.int64)
    sub_size = np.ones(n, dtype=np.int64)
    # the finite states (c, s, value) of the child being merged, c ascending
    fc = np.empty(kk * uu, dtype=np.int64)
    fs = np.empty(kk * uu, dtype=np.int64)
    fv = np.empty(kk * uu, dtype=np.int64)
    for i in range(n):
        v = post[i]
        st = first_stage[v]
        table[st, 0, 1] = 0
        acc = 1
        for j in range(child_ptr[v], child_ptr[v + 1]):
            u = child_idx[j]
            prev = table[st]
            new = table[st + 1]
            fin = table[first_stage[u] + child_ptr[u + 1] - child_ptr[u]]
            cmax1 = min(n_cuts, acc - 1)
            smax1 = min(uu - 1, acc)
            cmax2 = min(n_cuts, sub_size[u] - 1)
            smax2 = min(uu - 1, sub_size[u])
            cost_cut = 0 if cut[u] else 1
            cost_keep = 1 - cost_cut
            nf = 0
            for c2 in range(cmax2 + 1):
                for s2 in range(1, smax2 + 1):
                    if fin[c2, s2] < _INF:
                        fc[nf] = c2
                        fs[nf] = s2
                        fv[nf] = fin[c2, s2]
                        nf += 1
            for c1 in range(cmax1 + 1):
                for s1 in range(1, smax1 + 1):
                    a = prev[c1, s1]
                    if a >= _INF:
                        continue
                    for f in range(nf):
                        c2 = fc[f]
                        if c2 > n_cuts - c1:
                            break
                        s2 = fs[f]
                        b = fv[f]
                        if s2 >= lo and c1 + c2 + 1 <= n_cuts:
                            val = a + b + cost_cut
                            if val < new[c1 + c2 + 1, s1]:
                                new[c1 + c2 + 1, s1] = val
                        if s1 + s2 < uu:
                            val = a + b + cost_keep
                            if val < new[c1 + c2, s1 + s2]:
                                new[c1 + c2, s1 + s2] = val
            acc += sub_size[u]
            st += 1
        sub_size[v] = acc
    fin_root = table[first_stage[root] + child_ptr[root + 1] - child_ptr[root]]
    best = _INF
    s_best = -1
    for s in range(max(lo, 1), uu):
        if fin_root[n_cuts, s] < best:
            best = fin_root[n_cuts, s]
            s_best = s
    if s_best < 0:
        return False
    # backtrack: (node, cuts, open size) targets on a stack
    stack_v = np.empty(n, dtype=np.int64)
    stack_c = np.empty(n, dtype=np.int64)
    stack_s = np.empty(n, dtype=np.int64)
    top = 0
    stack_v[0] = root
    stack_c[0] = n_cuts
    stack_s[0] = s_best
    top = 1
    out[:] = False
    while top > 0:
        top -= 1
        v = stack_v[top]
        c = stack_c[top]
        s = stack_s[top]
        st = first_stage[v] + child_ptr[v + 1] - child_ptr[v]
        for j in range(child_ptr[v + 1] - 1, child_ptr[v] - 1, -1):
            u = child_idx[j]
            val = table[st, c, s]
            prev = table[st - 1]
            fin = table[first_stage[u] + child_ptr[u + 1] - child_ptr[u]]
            cost_cut = 0 if cut[u] else 1
            cost_keep = 1 - cost_cut
            found = False
            # the unchanged gene first, then the fewest cuts below, then the smallest part
            for option in range(2):
                is_cut = (option == 0) == cut[u]
                for c2 in range(min(c, sub_size[u] - 1) + 1):
                    for s2 in range(1, min(uu - 1, sub_size[u]) + 1):
                        b = fin[c2, s2]
                        if b >= _INF:
                            continue
                        if is_cut:
                            if s2 < lo or c - c2 - 1 < 0:
                                continue
                            if prev[c - c2 - 1, s] + b + cost_cut == val:
                                out[u] = True
                                c = c - c2 - 1
                                found = True
                        else:
                            if s - s2 < 1 or c - c2 < 0:
                                continue
                            if prev[c - c2, s - s2] + b + cost_keep == val:
                                c = c - c2
                                s = s - s2
                                found = True
                        if found:
                            stack_v[top] = u
                            stack_c[top] = c2
                            stack_s[top] = s2
                            top += 1
                            break
                    if found:
                        break
                if found:
                    break
            st -= 1
    return True


def project_cuts(
    tree: CutTree, genes: np.ndarray, k: int, min_size: int, max_size: int
) -> np.ndarray | None:
    """The feasible chromosome nearest to ``genes`` in Hamming distance: exactly ``k − 1`` cuts,
    every cluster of ``min_size..max_size`` nodes, fewest genes changed; ``None`` when no
    partition of the tree into ``k`` such subtrees exists.

    Exact dynamic programme over the tree (children before parents): for each node and each
    (cuts inside its subtree, size of its still open cluster) the fewest changed genes, then a
    backtrack. Ties (several nearest chromosomes) go to the one that keeps a gene unchanged as
    high up the backtrack as possible (children visited from the highest node index down),
    then to fewer cuts and smaller parts below. Cost O(k² n²) in the worst case (compiled).
    """
    out = np.zeros(tree.n, dtype=np.bool_)
    ok = _dp_project_kernel(
        tree.post,
        tree.child_ptr,
        tree.child_idx,
        int(tree.root),
        _node_cuts(tree, genes),
        int(k - 1),
        int(min_size),
        int(max_size),
        out,
    )
    return _genes(tree, out) if ok else None


def sample_cuts(
    tree: CutTree, n_samples: int, p_cut: float, rng: np.random.Generator
) -> np.ndarray:
    """(n_samples, m) chromosomes, every edge cut independently with probability ``p_cut``
    ([NSGA3PART] initialization: ``P_tr = 1/N_bmin``). Not repaired."""
    return rng.random((n_samples, tree.m)) < p_cut


def shift_mutation(tree: CutTree, genes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Move one cut (chosen uniformly): with probability 1/2 to a neighbouring tree edge (its
    parent edge or one of its child edges, uniformly), else to a uniformly chosen uncut edge.
    Keeps the number of cuts; a chromosome without cuts gets one at a uniform edge."""
    out = np.asarray(genes, dtype=bool).copy()
    on = np.flatnonzero(out)
    off = np.flatnonzero(~out)
    if not len(off):
        return out
    if not len(on):
        out[off[rng.integers(len(off))]] = True
        return out
    j = int(on[rng.integers(len(on))])
    c = int(tree.edge_child[j])
    if rng.random() < 0.5:
        nbr = [int(g) for g in np.flatnonzero(tree.parent[tree.edge_child] == c)]
        p = int(tree.parent[c])
        if p != tree.root:
            nbr.append(int(tree.gene_of[p]))
        nbr = [g for g in nbr if not out[g]]
        if nbr:
            out[j] = False
            out[nbr[int(rng.integers(len(nbr)))]] = True
            return out
    out[j] = False
    out[off[rng.integers(len(off))]] = True
    return out


def two_point_crossover(
    a: np.ndarray, b: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Exchange the genes between two uniformly drawn cut points (genes in depth-first order,
    so a sub-feeder's cuts travel together)."""
    m = len(a)
    if m < 2:
        return a.copy(), b.copy()
    i, j = np.sort(rng.choice(np.arange(1, m + 1), size=2, replace=False))
    c1, c2 = a.copy(), b.copy()
    c1[i:j], c2[i:j] = b[i:j], a[i:j]
    return c1, c2


# --------------------------------------------------------------------------------------------
# NSGA-III on (f1, f2, f3) with a fuzzy compromise [NSGA3PART]
# --------------------------------------------------------------------------------------------


def fuzzy_compromise(F: np.ndarray, weights: Sequence[float] = (1 / 3, 1 / 3, 1 / 3)) -> int:
    """Index of the fuzzy best compromise of a front ``F`` (N, M), all objectives minimized
    (the fuzzy decision of [NSGA3PART]):

        μ_i = (f_i^max − f_i) / (f_i^max − f_i^min),   pick argmax Σ_i λ_i μ_i

    An objective constant over the front gives μ_i = 1 everywhere. Ties go to the lowest index.
    """
    F = np.atleast_2d(np.asarray(F, dtype=float))
    lam = np.asarray(weights, dtype=float)
    if F.shape[1] != len(lam):
        raise PartitionError(f"{len(lam)} weights for {F.shape[1]} objectives")
    fmin, fmax = F.min(axis=0), F.max(axis=0)
    span = fmax - fmin
    mu = np.ones_like(F)
    var = span > 0
    mu[:, var] = (fmax[var] - F[:, var]) / span[var]
    return int(np.argmax(mu @ lam))


def _trivial(ctx: PartitionContext, k: int) -> np.ndarray | None:
    """Labels of the partitions with no choice (one cluster, or one node per cluster)."""
    if not 1 <= k <= ctx.n:
        raise PartitionError(f"clusters = {k} must be in 1..{ctx.n}")
    if k == 1:
        return np.zeros(ctx.n, dtype=int)
    if k == ctx.n:
        return np.arange(ctx.n)
    return None


def _on_cut_tree(
    ctx: PartitionContext, k: int, search: Callable[[CutTree], np.ndarray]
) -> np.ndarray:
    """Labels of the chromosome ``search`` finds on the cut tree of ``ctx``, or of the partition
    with no choice (:func:`_trivial`) without searching."""
    trivial = _trivial(ctx, k)
    if trivial is not None:
        return trivial
    tree = cut_tree(ctx.graph, ctx.slack)
    return cuts_to_labels(tree, search(tree))


class _Repairer:
    """:func:`repair_cuts` with a memo (offspring repeat often; the repair is deterministic)."""

    def __init__(self, tree: CutTree, k: int, min_size: int, max_size: int):
        self.tree, self.k, self.lo, self.hi = tree, k, min_size, max_size
        self.store: dict[bytes, np.ndarray] = {}

    def __call__(self, X: np.ndarray) -> np.ndarray:
        out = np.empty((len(X), self.tree.m), dtype=bool)
        for i, x in enumerate(np.asarray(X, dtype=bool)):
            key = np.packbits(x).tobytes()
            if key not in self.store:
                self.store[key] = repair_cuts(self.tree, x, self.k, self.lo, self.hi)
            out[i] = self.store[key]
        return out


class _Cache:
    """Objective values by chromosome (the GA revisits the same partitions often)."""

    def __init__(self, tree: CutTree, fn: Callable[[np.ndarray], Any]):
        self.tree = tree
        self.fn = fn
        self.store: dict[bytes, Any] = {}

    def __call__(self, genes: np.ndarray) -> Any:
        key = np.packbits(np.asarray(genes, dtype=bool)).tobytes()
        if key not in self.store:
            self.store[key] = self.fn(cuts_to_labels(self.tree, genes))
        return self.store[key]


# length: the pymoo NSGA-III set-up with its problem, sampling, mutation and repair classes
def _nsga3_search(
    tree: CutTree,
    k: int,
    objectives: Callable[[np.ndarray], Sequence[float]],
    *,
    seed: int,
    min_size: int,
    max_size: int,
    pop_size: int,
    n_gen: int,
    weights: Sequence[float],
    p_cut: float,
) -> np.ndarray:
    """Run NSGA-III on the cut encoding with ``objectives(labels) -> (f1, f2, f3)``; return the
    chromosome of the fuzzy compromise of the final feasible non-dominated front (if no
    individual is feasible: the least violating one, ties to the lowest population index)."""

    cache = _Cache(tree, objectives)
    repairer = _Repairer(tree, k, min_size, max_size)

    class CutProblem(Problem):
        def __init__(self) -> None:
            super().__init__(n_var=tree.m, n_obj=3, n_ieq_constr=1, vtype=bool)

        def _evaluate(self, X: np.ndarray, out: dict[str, Any], *args: Any, **kw: Any) -> None:
            out["F"] = np.array([cache(x) for x in X], dtype=float).reshape(len(X), 3)
            out["G"] = np.array(
                [[size_violation(tree, x, k, min_size, max_size)] for x in X], dtype=float
            )

    class CutSampling(Sampling):
        def _do(
            self, problem: Any, n_samples: int, *args: Any, random_state: Any = None, **kw: Any
        ) -> np.ndarray:
            return sample_cuts(tree, n_samples, p_cut, random_state)

    class CutRepair(Repair):
        def _do(self, problem: Any, X: np.ndarray, **kw: Any) -> np.ndarray:
            return repairer(X)

    class CutMutation(Mutation):
        def _do(
            self, problem: Any, X: np.ndarray, *args: Any, random_state: Any = None, **kw: Any
        ) -> np.ndarray:
            return np.array([shift_mutation(tree, x, random_state) for x in X])

    n_part = 1
    while (n_part + 2) * (n_part + 3) // 2 <= pop_size:
        n_part += 1
    ref_dirs = get_reference_directions("das-dennis", 3, n_partitions=n_part)
    algorithm = NSGA3(
        ref_dirs,
        pop_size=pop_size,
        sampling=CutSampling(),
        crossover=TwoPointCrossover(prob=0.9),
        mutation=CutMutation(prob=0.3),
        repair=CutRepair(),
        eliminate_duplicates=True,
    )
    # pymoo re-mates up to 100 times per generation to replace duplicate offspring; on a
    # converged cut population that is mostly wasted work, so allow 10 rounds
    algorithm.mating.n_max_iterations = 10
    algorithm.setup(CutProblem(), termination=("n_gen", n_gen), seed=seed, verbose=False)
    while algorithm.has_next():
        algorithm.next()
    pop = algorithm.pop
    X = np.asarray(pop.get("X"), dtype=bool)
    F = np.asarray(pop.get("F"), dtype=float)
    cv = np.asarray(pop.get("CV"), dtype=float).reshape(-1)
    feasible = np.flatnonzero(cv <= 0)
    if not len(feasible):
        return X[int(np.argmin(cv))]
    front = feasible[NonDominatedSorting().do(F[feasible], only_non_dominated_front=True)]
    front = np.sort(front)
    return X[front[fuzzy_compromise(F[front], weights)]]


def nsga3_cut(
    task: PartitionTask,
    *,
    pop_size: int = 92,
    n_gen: int = 100,
    weights: Sequence[float] = (1 / 3, 1 / 3, 1 / 3),
) -> np.ndarray:
    """NSGA-III partition on branch cuts of [NSGA3PART] (search: [NSGA3]), fuzzy compromise.

    Objectives ``(f1, f2, f3)`` of :func:`clustersim.partition.metrics.s1_objectives`, all
    minimized.

    - Encoding and repair: module docstring (k connected clusters always; sizes within
      ``[min_size, max_size]`` whenever such a partition exists, else the individual stays
      infeasible for pymoo's constrained domination on ``G = V``).
    - Initialization [NSGA3PART]: every branch cut with probability ``P_tr = 1/N_bmin``
      (``N_bmin = min_size``, taken as at least 2 so that not every branch is cut), then repaired.
    - NSGA-III (pymoo ``NSGA3``) with Das–Dennis [DASDENNIS] reference directions for 3 objectives
      (the largest number of partitions whose direction count does not exceed ``pop_size``; 91
      directions for the default 92), two-point crossover (probability 0.9) and a cut-shifting
      mutation (probability 0.3 per individual, :func:`shift_mutation`).
    - Compromise [NSGA3PART]: on the feasible non-dominated front of the final population,
      μ_i = (f_i^max − f_i)/(f_i^max − f_i^min), pick ``argmax Σ λ_i μ_i`` with
      ``λ = weights`` (:func:`fuzzy_compromise`).

    Seeded by one integer drawn from ``rng`` (pymoo's own generator).
    """
    ctx, k, rng, min_size, max_size = task.ctx, task.k, task.rng, task.min_size, task.max_size

    if len(weights) != 3 or min(weights) < 0 or sum(weights) <= 0:
        raise PartitionError(f"weights must be 3 non-negative numbers, got {tuple(weights)}")
    if pop_size < 4 or n_gen < 1:
        raise PartitionError(
            f"NSGA-III needs pop_size >= 4 and n_gen >= 1, got {pop_size}, {n_gen}"
        )
    seed = int(rng.integers(2**31))
    return _on_cut_tree(
        ctx,
        k,
        lambda tree: _nsga3_search(
            tree,
            k,
            lambda labels: metrics.s1_objectives(ctx, labels),
            seed=seed,
            min_size=min_size,
            max_size=max_size,
            pop_size=pop_size,
            n_gen=n_gen,
            weights=weights,
            p_cut=1.0 / max(min_size, 2),
        ),
    )


# --------------------------------------------------------------------------------------------
# GA [CVC] and hybrid GA–SA [ZONAL] (maximize a scalar index)
# --------------------------------------------------------------------------------------------


def _random_cuts(tree: CutTree, n_samples: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """(n_samples, m) chromosomes with ``k − 1`` distinct cuts drawn uniformly."""
    X = np.zeros((n_samples, tree.m), dtype=bool)
    for i in range(n_samples):
        X[i, rng.choice(tree.m, size=k - 1, replace=False)] = True
    return X


class _Scorer:
    """Penalized fitness ``f − P·V`` (maximized): ``f`` the index, ``V`` the size violation,
    ``P`` fixed at the first call to the spread of the initial population's index (at least 1),
    so that a violating individual ranks below every feasible one of similar index."""

    def __init__(
        self,
        tree: CutTree,
        k: int,
        min_size: int,
        max_size: int,
        index: Callable[[np.ndarray], float],
    ):
        self.tree, self.k, self.lo, self.hi = tree, k, min_size, max_size
        self.index = _Cache(tree, lambda labels: float(index(labels)))
        self.penalty: float | None = None

    def raw(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = np.array([self.index(x) for x in X], dtype=float)
        v = np.array([size_violation(self.tree, x, self.k, self.lo, self.hi) for x in X])
        return f, v

    def __call__(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f, v = self.raw(X)
        if self.penalty is None:
            self.penalty = max(1.0, float(np.ptp(f)) if len(f) else 1.0)
        return f - self.penalty * v, v


class _Best:
    """Best individual seen (feasible before infeasible, then higher score, then first seen)."""

    def __init__(self) -> None:
        self.genes: np.ndarray | None = None
        self.key: tuple[int, float] = (1, -np.inf)

    def offer(self, X: np.ndarray, score: np.ndarray, v: np.ndarray) -> None:
        for x, s, vi in zip(X, score, v, strict=True):
            key = (0 if vi == 0 else 1, float(s))
            if self.genes is None or (key[0], -key[1]) < (self.key[0], -self.key[1]):
                self.genes, self.key = x.copy(), key


def _roulette(score: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Fitness-proportional selection on the window-shifted score ``s − min s + ε``
    (ε = 1 % of the spread, or 1 when all scores are equal, so every individual can be drawn)."""
    span = float(np.ptp(score))
    w = score - score.min() + (0.01 * span if span > 0 else 1.0)
    return rng.choice(len(score), size=n, p=w / w.sum())


def _check_ga(pop_size: int, n_gen: int) -> None:
    if pop_size < 2 or n_gen < 1:
        raise PartitionError(f"GA needs pop_size >= 2 and n_gen >= 1, got {pop_size}, {n_gen}")


class _GA:
    """What both GAs share: repair, penalized scoring (:class:`_Scorer`), the best individual
    seen (:class:`_Best`), the initial population and breeding."""

    def __init__(
        self,
        tree: CutTree,
        k: int,
        index: Callable[[np.ndarray], float],
        *,
        min_size: int,
        max_size: int,
        pop_size: int,
        n_gen: int,
    ):
        _check_ga(pop_size, n_gen)
        self.tree, self.k, self.pop_size = tree, k, pop_size
        self.fix = _Repairer(tree, k, min_size, max_size)
        self.score_fn = _Scorer(tree, k, min_size, max_size, index)
        self.best = _Best()

    def score(self, pop: np.ndarray) -> np.ndarray:
        """Penalized scores of ``pop`` (each individual offered as the best seen)."""
        score, v = self.score_fn(pop)
        self.best.offer(pop, score, v)
        return score

    def initial(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The repaired initial population of ``k − 1`` uniform cuts, and its scores."""
        pop = self.fix(_random_cuts(self.tree, self.pop_size, self.k, rng))
        return pop, self.score(pop)

    def breed(
        self, parents: np.ndarray, p_cross: float, p_mut: float, rng: np.random.Generator
    ) -> np.ndarray:
        """Two-point crossover (``p_cross``) on consecutive pairs of ``parents``, then a cut-shift
        mutation of each child with probability ``p_mut``; not repaired."""
        children = parents.copy()
        for i in range(0, self.pop_size - 1, 2):
            if rng.random() < p_cross:
                children[i], children[i + 1] = two_point_crossover(parents[i], parents[i + 1], rng)
        for i in range(self.pop_size):
            if rng.random() < p_mut:
                children[i] = shift_mutation(self.tree, children[i], rng)
        return children

    def result(self) -> np.ndarray:
        """The best chromosome seen."""
        assert self.best.genes is not None
        return self.best.genes


def _run_ga(
    ctx: PartitionContext,
    k: int,
    index: Callable[[PartitionContext, np.ndarray], float],
    search: Callable[[_GA], np.ndarray],
    *,
    min_size: int,
    max_size: int,
    pop_size: int,
    n_gen: int,
) -> np.ndarray:
    """Labels of ``search`` maximizing ``index(ctx, labels)`` on the cut tree of ``ctx`` (or of
    the partition with no choice)."""

    def run(tree: CutTree) -> np.ndarray:
        ga = _GA(
            tree,
            k,
            lambda labels: index(ctx, labels),
            min_size=min_size,
            max_size=max_size,
            pop_size=pop_size,
            n_gen=n_gen,
        )
        return search(ga)

    return _on_cut_tree(ctx, k, run)


def _ga_rho_search(
    ga: _GA,
    rng: np.random.Generator,
    n_gen: int,
    p_cross: float,
    p_mut: tuple[float, float],
) -> np.ndarray:
    pop, score = ga.initial(rng)
    for g in range(n_gen):
        pm = p_mut[0] + (p_mut[1] - p_mut[0]) * g / max(n_gen - 1, 1)
        elite = pop[int(np.argmax(score))]
        children = ga.breed(pop[_roulette(score, ga.pop_size, rng)], p_cross, pm, rng)
        pop = ga.fix(np.vstack([elite[None, :], children[: ga.pop_size - 1]]))
        score = ga.score(pop)
    return ga.result()


def ga_rho(
    task: PartitionTask,
    *,
    pop_size: int = 100,
    n_gen: int = 200,
    p_cross: float = 0.8,
    p_mut: tuple[float, float] = (0.1, 0.3),
) -> np.ndarray:
    """Genetic algorithm of [CVC] maximizing its comprehensive index ρ
    (:func:`clustersim.partition.metrics.s2_rho`), on the branch-cut encoding (module docstring),
    so every cluster is connected and there are exactly ``k`` of them.

    Settings of [CVC]: population 100, 200 generations, crossover probability 0.8, roulette-wheel
    selection, mutation probability rising from 0.1. Choices where [CVC] is open: the population
    starts from ``k − 1`` uniformly drawn cuts (repaired); roulette on the window-shifted
    fitness (:func:`_roulette`); the best individual is carried over unchanged (elitism of one);
    two-point crossover on consecutive pairs of selected parents; each child is mutated
    (:func:`shift_mutation`) with a probability rising linearly from ``p_mut[0]`` at the first
    generation to ``p_mut[1]`` at the last; size-bound violations that the repair cannot remove
    are penalized (:class:`_Scorer`). Returns the best partition seen over the run.
    """
    ctx, k, rng, min_size, max_size = task.ctx, task.k, task.rng, task.min_size, task.max_size

    return _run_ga(
        ctx,
        k,
        metrics.s2_rho,
        lambda ga: _ga_rho_search(ga, rng, n_gen, p_cross, p_mut),
        min_size=min_size,
        max_size=max_size,
        pop_size=pop_size,
        n_gen=n_gen,
    )


def _ga_sa_search(
    ga: _GA,
    rng: np.random.Generator,
    n_gen: int,
    p_cross: float,
    p_mut: float,
    t0: float | None,
    cooling: float,
) -> np.ndarray:
    if not 0 < cooling <= 1:
        raise PartitionError(f"cooling factor must be in (0, 1], got {cooling}")
    pop, score = ga.initial(rng)
    if t0 is None:
        spread = float(np.std(score))
        t0 = spread / np.log(2.0) if spread > 0 else 1e-6
    temp = float(t0)
    for _ in range(n_gen):
        # binary tournament: the better of two uniformly drawn individuals (lower index on ties)
        a = rng.integers(ga.pop_size, size=ga.pop_size)
        b = rng.integers(ga.pop_size, size=ga.pop_size)
        sel = np.where((score[a] > score[b]) | ((score[a] == score[b]) & (a <= b)), a, b)
        children = ga.fix(ga.breed(pop[sel], p_cross, p_mut, rng))
        c_score = ga.score(children)
        # Metropolis acceptance of each child against its (first) parent
        parent_score = score[sel]
        gain = c_score - parent_score
        u = rng.random(ga.pop_size)
        with np.errstate(over="ignore"):
            accept = (gain >= 0) | (u < np.exp(np.minimum(gain, 0.0) / max(temp, 1e-300)))
        pop = np.where(accept[:, None], children, pop[sel])
        score = np.where(accept, c_score, parent_score)
        temp *= cooling
    return ga.result()


def ga_sa(
    task: PartitionTask,
    *,
    pop_size: int = 100,
    n_gen: int = 200,
    p_cross: float = 0.8,
    p_mut: float = 0.1,
    t0: float | None = None,
    cooling: float = 0.95,
) -> np.ndarray:
    """Hybrid GA–SA of [ZONAL] maximizing its composite index
    (:func:`clustersim.partition.metrics.s3_index`) on the branch-cut encoding (module docstring).

    Each generation: binary-tournament selection, two-point crossover (``p_cross``) on
    consecutive pairs, cut-shift mutation (``p_mut`` per child), repair; then simulated-annealing
    acceptance: each child competes with its own parent (the selected individual it was bred
    from; in a crossover pair child 1 with parent 1, child 2 with parent 2) and replaces it if it
    is no worse, else with the Metropolis probability ``exp((f_child − f_parent)/T)``. The temperature starts at ``t0`` (default: the
    standard deviation of the initial population's fitness divided by ln 2, so a child worse by
    one standard deviation is accepted with probability 1/2 at first) and cools geometrically,
    ``T ← cooling · T`` per generation. Returns the best partition seen over the run.
    Defaults ([ZONAL] leaves them open): the [CVC] budget, population 100 and 200 generations, so
    the two GAs are compared at equal cost; crossover 0.8, mutation 0.1, cooling 0.95.
    """
    ctx, k, rng, min_size, max_size = task.ctx, task.k, task.rng, task.min_size, task.max_size

    return _run_ga(
        ctx,
        k,
        metrics.s3_index,
        lambda ga: _ga_sa_search(ga, rng, n_gen, p_cross, p_mut, t0, cooling),
        min_size=min_size,
        max_size=max_size,
        pop_size=pop_size,
        n_gen=n_gen,
    )
