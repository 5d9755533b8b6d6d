"""[TCSOM]: two-stage self-organizing map (TC-SOM) partition, written with numpy.

Features (:func:`clustersim.partition.metrics.node_features_s4`, every column in [0, 1]): the
``n`` electrical-coupling columns (row ``i`` of the [TCSOM] coupling matrix E) and the three fine
columns ramp, correlation and load factor (:data:`~clustersim.partition.metrics.S4_FINE_FEATURES`).

- **Coarse stage.** A SOM on the coupling block only groups electrically coupled nodes; its units
  are merged into ``k_coarse`` coarse clusters (default ``⌈k/2⌉``).
- **Fine stage.** Each coarse cluster receives a share of the ``k`` final clusters (largest
  remainder on its node count, at least one, at most its node count) and, when that share is
  more than one, a SOM of its own nodes on the fine block — with the coupling block kept at weight
  ``fine_coupling_weight`` so that sub-clusters stay electrically coherent — whose units are
  merged into the share. The result has exactly ``k`` clusters (for ``k ≤ n``).

Dynamic weighted Euclidean distance [TCSOM]: ``d(x, w)² = Σ_j α_j (x_j − w_j)²``. Choices where
[TCSOM] is open:

- Stage weights: each block's column weights sum to the block's stage weight (coarse stage:
  coupling 1, fine 0; fine stage: coupling ``fine_coupling_weight``, fine 1), so a block counts by
  its stage weight, not by its number of columns.
- Adaptation per epoch: within each block, ``α_j`` moves halfway (``adapt = 0.5``) towards the
  block weight shared in proportion to the column's separation ratio
  ``r_j = Σ_u N_u (m_uj − m̄_j)² / Σ_i (x_ij − m_{b(i)j})²`` (between-unit over within-unit
  variance of the nodes mapped to the units, ``b(i)`` the best-matching unit of node ``i``):
  columns that separate the units gain weight. A floor of 10 % of the uniform share keeps every
  column in play.
- Adaptive learning rate: ``η(t) = η_0 (η_end/η_0)^{t/t_max}`` (exponential decay over the
  updates, ``η_0 = 0.5``, ``η_end = 0.01``), multiplied by 1/2 each time an epoch ends with a
  larger quantization error than the one before. Gaussian neighbourhood on the rectangular grid
  with radius decaying the same way from half the grid's longer side to 0.5.
- Grid: about ``5 √N`` units for ``N`` nodes (Vesanto's rule), at least the number of clusters
  wanted, as near square as possible; prototypes start at randomly drawn nodes' features.
- Units → clusters: the nodes of each non-empty unit form a group; groups are merged by Ward's
  criterion ``N_a N_b / (N_a + N_b) · ‖μ_a − μ_b‖²`` in the weighted feature space, preferring
  pairs of groups joined by a line of the operating topology whenever such a pair exists (ties to
  the lowest group indices); if fewer groups than wanted, the largest group is split around its
  two most distant nodes.

Not repaired: the size bounds are ignored and a cluster may be disconnected;
:func:`clustersim.partition.methods.run_partition` reports the violations. Seeded only through
the given generator (initial prototypes and the order of the training samples).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import networkx as nx
import numpy as np

from clustersim.errors import PartitionError
from clustersim.partition import metrics
from clustersim.partition.core import PartitionTask

__all__ = ["SomResult", "agglomerate", "grid_shape", "share_clusters", "tc_som", "train_som"]


@dataclass(frozen=True)
class SomResult:
    """A trained map: prototypes (U, f), column weights α (f,), best-matching unit of each
    sample (N,), grid coordinates of the units (U, 2) and the quantization error per epoch."""

    prototypes: np.ndarray
    alpha: np.ndarray
    bmu: np.ndarray
    coords: np.ndarray
    qe: np.ndarray


def grid_shape(n_samples: int, at_least: int = 1) -> tuple[int, int]:
    """(rows, cols) of a near-square grid of about ``5 √N`` units, at least ``at_least``."""
    units = max(at_least, math.ceil(5 * math.sqrt(max(n_samples, 1))), 1)
    rows = max(1, math.floor(math.sqrt(units)))
    cols = math.ceil(units / rows)
    return rows, cols


def _block_alpha(blocks: np.ndarray, block_weight: np.ndarray) -> np.ndarray:
    """Uniform column weights within each block, summing to the block's weight."""
    counts = np.bincount(blocks, minlength=len(block_weight)).astype(float)
    return block_weight[blocks] / np.maximum(counts[blocks], 1.0)


_BMU_EXACT_MAX = 1 << 22
"""largest (samples × units × features) difference array :func:`_bmu` forms (32 MB)"""


def _bmu(X: np.ndarray, W: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best-matching unit of each row of X and its squared weighted distance (ties: first).

    From the differences ``Σ_j α_j (x_j − w_j)²`` while their array holds at most
    :data:`_BMU_EXACT_MAX` numbers (every built-in case but case1197); beyond, from the
    expanded form ``Σ α x² − 2 Σ α x w + Σ α w²`` (one matrix product: 20 times faster on
    case1197's 1197 × 173 × 1200 coarse stage, equal up to rounding; every term lies in [0, 1]
    per block weight, so the rounding is about 1e-16)."""
    n = len(X)
    if n * W.size <= _BMU_EXACT_MAX:
        d2 = ((X[:, None, :] - W[None, :, :]) ** 2) @ alpha
    else:
        d2 = ((X * X) @ alpha)[:, None] - 2.0 * ((X * alpha) @ W.T) + ((W * W) @ alpha)[None, :]
        np.maximum(d2, 0.0, out=d2)
    b = np.argmin(d2, axis=1)
    return b, d2[np.arange(n), b]


def _adapt_alpha(
    X: np.ndarray,
    bmu: np.ndarray,
    alpha: np.ndarray,
    blocks: np.ndarray,
    block_weight: np.ndarray,
    adapt: float,
) -> np.ndarray:
    """One step of the dynamic weighting (module docstring)."""
    units, inv = np.unique(bmu, return_inverse=True)
    inv = inv.reshape(-1)
    hits = np.bincount(inv, minlength=len(units)).astype(float)
    means = np.zeros((len(units), X.shape[1]))
    np.add.at(means, inv, X)
    means /= hits[:, None]
    grand = X.mean(axis=0)
    between = (hits[:, None] * (means - grand) ** 2).sum(axis=0)
    within = ((X - means[inv]) ** 2).sum(axis=0)
    scale = float((between + within).mean())
    ratio = between / (within + 1e-9 * scale + 1e-300)
    target = alpha.copy()
    for b, wb in enumerate(block_weight):
        cols = blocks == b
        if wb <= 0 or not cols.any():
            continue
        r = ratio[cols]
        if r.sum() <= 0:
            continue
        share = r / r.sum()
        floor = 0.1 / cols.sum()
        share = np.maximum(share, floor)
        target[cols] = wb * share / share.sum()
    return (1.0 - adapt) * alpha + adapt * target


def train_som(
    X: np.ndarray,
    *,
    shape: tuple[int, int],
    epochs: int,
    rng: np.random.Generator,
    blocks: np.ndarray,
    block_weight: np.ndarray,
    eta: tuple[float, float] = (0.5, 0.01),
    adapt: float = 0.5,
) -> SomResult:
    """Train an online SOM on the rows of ``X`` (N, f) with the dynamic weighted Euclidean
    distance and the adaptive learning rate of the module docstring. ``blocks[j]`` is the block
    of column ``j``, ``block_weight[b]`` that block's stage weight (0 leaves a block out)."""
    X = np.asarray(X, dtype=float)
    n, f = X.shape
    rows, cols = shape
    coords = np.array([(r, c) for r in range(rows) for c in range(cols)], dtype=float)
    units = len(coords)
    blocks = np.asarray(blocks, dtype=int)
    block_weight = np.asarray(block_weight, dtype=float)
    alpha = _block_alpha(blocks, block_weight)
    start = rng.choice(n, size=units, replace=units > n)
    W = X[start] + 1e-3 * rng.standard_normal((units, f))
    sigma0, sigma1 = max(rows, cols) / 2.0, 0.5
    sigma0 = max(sigma0, sigma1)
    t_max = max(epochs * n - 1, 1)
    damp = 1.0
    t = 0
    qe: list[float] = []
    for _ in range(epochs):
        for i in rng.permutation(n):
            frac = t / t_max
            lr = damp * eta[0] * (eta[1] / eta[0]) ** frac
            sigma = sigma0 * (sigma1 / sigma0) ** frac
            x = X[i]
            b = int(np.argmin(((W - x) ** 2) @ alpha))
            g2 = ((coords - coords[b]) ** 2).sum(axis=1)
            h = np.exp(-g2 / (2.0 * sigma * sigma))
            W += (lr * h)[:, None] * (x - W)
            t += 1
        bmu, d2 = _bmu(X, W, alpha)
        qe.append(float(np.sqrt(d2).mean()))
        if len(qe) > 1 and qe[-1] > qe[-2]:
            damp *= 0.5
        alpha = _adapt_alpha(X, bmu, alpha, blocks, block_weight, adapt)
    bmu, _ = _bmu(X, W, alpha)
    return SomResult(W, alpha, bmu, coords, np.array(qe))


def _split_largest(groups: list[list[int]], Xw: np.ndarray) -> list[list[int]]:
    """Split the largest group (ties: lowest first node) around its two most distant nodes."""
    sizes = [len(g) for g in groups]
    i = max(range(len(groups)), key=lambda j: (sizes[j], -min(groups[j])))
    g = groups[i]
    P = Xw[g]
    d2 = ((P[:, None, :] - P[None, :, :]) ** 2).sum(axis=2)
    a, b = np.unravel_index(int(np.argmax(d2)), d2.shape)
    if d2[a, b] <= 0:
        half = len(g) // 2
        parts = [g[:half], g[half:]]
    else:
        near_a = d2[:, a] <= d2[:, b]
        parts = [[v for v, s in zip(g, near_a, strict=True) if s]]
        parts.append([v for v, s in zip(g, near_a, strict=True) if not s])
    return groups[:i] + parts + groups[i + 1 :]


def agglomerate(
    groups: list[list[int]],
    Xw: np.ndarray,
    target: int,
    adjacency: np.ndarray | None = None,
) -> list[list[int]]:
    """Merge (or split) node groups into exactly ``target`` groups (module docstring: Ward's
    criterion in the weighted space ``Xw``, pairs adjacent in ``adjacency`` (n, n) preferred).
    Groups are lists of row indices of ``Xw``; returned sorted by their lowest node."""
    groups = [sorted(g) for g in groups if g]
    n_nodes = sum(len(g) for g in groups)
    if not 1 <= target <= n_nodes:
        raise PartitionError(f"cannot form {target} clusters from {n_nodes} nodes")
    while len(groups) < target:
        groups = _split_largest(groups, Xw)
    while len(groups) > target:
        cnt = np.array([len(g) for g in groups], dtype=float)
        mu = np.array([Xw[g].mean(axis=0) for g in groups])
        d2 = ((mu[:, None, :] - mu[None, :, :]) ** 2).sum(axis=2)
        cost = (cnt[:, None] * cnt[None, :] / (cnt[:, None] + cnt[None, :])) * d2
        iu = np.triu_indices(len(groups), k=1)
        c = cost[iu]
        if adjacency is not None:
            member = np.zeros((len(groups), adjacency.shape[0]))
            for j, g in enumerate(groups):
                member[j, g] = 1.0
            adj = (member @ adjacency @ member.T)[iu] > 0
            if adj.any():
                c = np.where(adj, c, np.inf)
        best = int(np.argmin(c))  # first minimum: lowest (a, b) in row-major order
        a, b = int(iu[0][best]), int(iu[1][best])
        groups[a] = sorted(groups[a] + groups[b])
        del groups[b]
    return sorted(groups, key=min)


def share_clusters(sizes: list[int], k: int) -> list[int]:
    """Split ``k`` clusters over groups of the given node counts: largest remainder on the quota
    ``k · N_c / N``, every group at least 1 and at most ``N_c`` (ties to the lower index)."""
    total = sum(sizes)
    if not len(sizes) <= k <= total:
        raise PartitionError(f"cannot share {k} clusters over groups of sizes {sizes}")
    quota = [k * s / total for s in sizes]
    share = [min(max(1, math.floor(q)), s) for q, s in zip(quota, sizes, strict=True)]
    while sum(share) < k:
        cand = [i for i in range(len(sizes)) if share[i] < sizes[i]]
        i = max(cand, key=lambda j: (quota[j] - share[j], -j))
        share[i] += 1
    while sum(share) > k:
        cand = [i for i in range(len(sizes)) if share[i] > 1]
        i = min(cand, key=lambda j: (quota[j] - share[j], j))
        share[i] -= 1
    return share


def _stage(
    X: np.ndarray,
    nodes: list[int],
    target: int,
    *,
    rng: np.random.Generator,
    blocks: np.ndarray,
    block_weight: np.ndarray,
    epochs: int,
    adjacency: np.ndarray,
) -> list[list[int]]:
    """One SOM stage on ``nodes``: train, then map the units to ``target`` groups of nodes."""
    if target == 1:
        return [sorted(nodes)]
    sub = X[nodes]
    som = train_som(
        sub,
        shape=grid_shape(len(nodes), at_least=target),
        epochs=epochs,
        rng=rng,
        blocks=blocks,
        block_weight=block_weight,
    )
    Xw = sub * np.sqrt(som.alpha)
    local = [np.flatnonzero(som.bmu == u).tolist() for u in range(len(som.coords))]
    merged = agglomerate(local, Xw, target, adjacency[np.ix_(nodes, nodes)])
    return [sorted(nodes[i] for i in g) for g in merged]


def tc_som(
    task: PartitionTask,
    *,
    k_coarse: int | None = None,
    epochs: int = 100,
    fine_coupling_weight: float = 0.5,
) -> np.ndarray:
    """[TCSOM]: two-stage SOM partition into exactly ``k`` clusters (module docstring).

    ``k_coarse`` coarse clusters (default ``⌈k/2⌉``, at most ``k``); ``epochs`` passes over the
    nodes per SOM; ``fine_coupling_weight`` the weight of the coupling block in the fine stage
    (the fine block has 1). ``min_size``/``max_size`` are ignored (not repaired).
    """
    ctx, k, rng = task.ctx, task.k, task.rng

    n = ctx.n
    if not 1 <= k <= n:
        raise PartitionError(f"clusters = {k} must be in 1..{n}")
    kc = math.ceil(k / 2) if k_coarse is None else int(k_coarse)
    if not 1 <= kc <= k:
        raise PartitionError(f"k_coarse = {kc} must be in 1..{k}")
    if epochs < 1 or fine_coupling_weight < 0:
        raise PartitionError("tc_som needs epochs >= 1 and fine_coupling_weight >= 0")
    X = np.asarray(metrics.node_features_s4(ctx), dtype=float)
    n_fine = len(metrics.S4_FINE_FEATURES)
    blocks = np.zeros(X.shape[1], dtype=int)
    blocks[-n_fine:] = 1
    adjacency = nx.to_numpy_array(ctx.graph, nodelist=range(n), weight=None) > 0
    adjacency = adjacency.astype(float)
    nodes = list(range(n))
    coarse = _stage(
        X,
        nodes,
        kc,
        rng=rng,
        blocks=blocks,
        block_weight=np.array([1.0, 0.0]),
        epochs=epochs,
        adjacency=adjacency,
    )
    shares = share_clusters([len(g) for g in coarse], k)
    labels = np.empty(n, dtype=int)
    nxt = 0
    for group, share in zip(coarse, shares, strict=True):
        fine = _stage(
            X,
            group,
            share,
            rng=rng,
            blocks=blocks,
            block_weight=np.array([fine_coupling_weight, 1.0]),
            epochs=epochs,
            adjacency=adjacency,
        )
        for g in fine:
            labels[g] = nxt
            nxt += 1
    return labels
