"""Baseline partition methods: K-means, K-medoids, spectral clustering and Louvain.

They cluster on electrical distance / coupling alone and know nothing of the size bounds or of
the topology: **their results are not repaired.** A cluster that is disconnected, too small or
too large is returned as it is, and :func:`clustersim.partition.methods.run_partition` reports
the violation (``constraints``). ``min_size``/``max_size`` are accepted for the common method
signature and ignored.

Every method draws one integer seed from the given ``rng`` and passes it to the library, so the
same generator state gives the same labels.
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np

from clustersim.errors import PartitionError
from clustersim.partition.core import PartitionContext, PartitionTask

__all__ = ["classical_mds", "electrical_dissimilarity", "kmeans", "kmedoids", "louvain", "spectral"]


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def electrical_dissimilarity(ctx: PartitionContext, distance: str = "d_s1") -> np.ndarray:
    """(n, n) symmetric dissimilarity with zero diagonal, dimensionless.

    ``"d_s1"``: the B-matrix electrical distance ``M_ij`` of [NSGA3PART]; ``"a_s2"``: one minus
    the electrical coupling of [CVC], ``1 − A_ij``."""
    if distance == "d_s1":
        d = np.asarray(ctx.d_s1, dtype=float)
    elif distance == "a_s2":
        d = 1.0 - np.asarray(ctx.a_s2, dtype=float)
    else:
        raise PartitionError(f"unknown distance {distance!r} (known: d_s1, a_s2)")
    d = 0.5 * (d + d.T)
    d = np.maximum(d, 0.0)
    np.fill_diagonal(d, 0.0)
    return d


def classical_mds(d: np.ndarray, dims: int) -> np.ndarray:
    """Classical (Torgerson) MDS [MDS]: ``B = −½ J D² J``, coordinates ``V_r √λ_r`` of the ``dims``
    largest positive eigenvalues. Returns (n, ≤ dims); eigenvector signs fixed (largest |entry|
    positive) so the embedding is deterministic."""
    n = d.shape[0]
    d2 = np.asarray(d, dtype=float) ** 2
    # J D² J with J = I − 1/n: subtract row and column means, add back the grand mean (O(n²))
    b = -0.5 * (d2 - d2.mean(axis=1)[:, None] - d2.mean(axis=0)[None, :] + d2.mean())
    w, v = np.linalg.eigh(0.5 * (b + b.T))
    order = np.argsort(w)[::-1]
    w, v = w[order], v[:, order]
    keep = w > 1e-12 * max(1.0, float(w[0]) if len(w) else 1.0)
    keep[dims:] = False
    if not keep.any():
        return np.zeros((n, 1))
    v = v[:, keep]
    signs = np.sign(v[np.argmax(np.abs(v), axis=0), np.arange(v.shape[1])])
    return v * signs * np.sqrt(w[keep])


def kmeans(
    task: PartitionTask,
    *,
    distance: str = "d_s1",
    dims: int | None = None,
    n_init: int = 10,
) -> np.ndarray:
    """Baseline K-means (Lloyd, k-means++ seeding, ``n_init`` restarts) on a classical-MDS
    embedding of the electrical distance (``distance="d_s1"``: [NSGA3PART] ``M_ij``; ``"a_s2"``:
    ``1 − A_ij`` of [CVC]) in ``dims`` dimensions (default ``max(k, 2)``).

    Not repaired: size bounds and connectivity are ignored; violations are reported by
    ``run_partition``."""
    ctx, k, rng = task.ctx, task.k, task.rng
    # scikit-learn takes 0.2 s to import; only this baseline uses it
    from sklearn.cluster import KMeans

    x = classical_mds(electrical_dissimilarity(ctx, distance), dims or max(k, 2))
    model = KMeans(n_clusters=k, n_init=n_init, random_state=_seed(rng))
    return np.asarray(model.fit_predict(x), dtype=int)


def kmedoids(
    task: PartitionTask,
    *,
    distance: str = "d_s1",
    init: str = "build",
    max_iter: int = 300,
) -> np.ndarray:
    """Baseline K-medoids (FasterPAM [FASTERPAM], ``kmedoids`` package) directly on the
    electrical-distance matrix (``distance`` as in :func:`kmeans`); ``init="build"`` is PAM's BUILD,
    ``"random"`` draws the initial medoids from the seed. Single-threaded so the result is
    reproducible.

    Not repaired: size bounds and connectivity are ignored; violations are reported by
    ``run_partition``."""
    ctx, k, rng = task.ctx, task.k, task.rng
    # kmedoids takes 0.1 s to import; only this baseline uses it
    import kmedoids as km

    d = electrical_dissimilarity(ctx, distance)
    res = km.fasterpam(d, k, max_iter=max_iter, init=init, random_state=_seed(rng), n_cpu=1)
    return np.asarray(res.labels, dtype=int)


def spectral(
    task: PartitionTask,
    *,
    n_neighbors: int | None = None,
    assign_labels: str = "kmeans",
) -> np.ndarray:
    """Baseline spectral clustering (normalized-cut embedding, then K-means on it) with the [CVC]
    electrical coupling ``A_ij`` as affinity (sklearn ``SpectralClustering``,
    ``affinity="precomputed"``).

    U-SPEC-like [USPEC] sparsification: with ``n_neighbors`` set, each node keeps only its
    ``n_neighbors`` strongest couplings (the union over both ends is kept, so the affinity stays
    symmetric), as U-SPEC's K-nearest-representative affinity does; the default keeps the dense
    coupling (the cases are small enough for the exact eigenproblem).

    Not repaired: size bounds and connectivity are ignored; violations are reported by
    ``run_partition``."""
    ctx, k, rng = task.ctx, task.k, task.rng
    # scikit-learn takes 0.2 s to import; only this baseline uses it
    from sklearn.cluster import SpectralClustering

    a = np.asarray(ctx.a_s2, dtype=float)
    a = np.clip(0.5 * (a + a.T), 0.0, None)
    np.fill_diagonal(a, 1.0)
    n = a.shape[0]
    if n_neighbors is not None and n_neighbors < n - 1:
        off = a - 2.0 * np.eye(n)  # never pick the node itself
        nearest = np.argsort(-off, axis=1, kind="stable")[:, :n_neighbors]
        mask = np.zeros_like(a, dtype=bool)
        mask[np.repeat(np.arange(n), n_neighbors), nearest.ravel()] = True
        mask |= mask.T
        np.fill_diagonal(mask, True)
        a = np.where(mask, a, 0.0)
    if k == 1:
        return np.zeros(n, dtype=int)
    model = SpectralClustering(
        n_clusters=k,
        affinity="precomputed",
        assign_labels=assign_labels,
        random_state=_seed(rng),
    )
    return np.asarray(model.fit_predict(a), dtype=int)


def _louvain_labels(g: nx.Graph, resolution: float, seed: int) -> np.ndarray:
    comms = nx.community.louvain_communities(g, weight="weight", resolution=resolution, seed=seed)
    labels = np.empty(g.number_of_nodes(), dtype=int)
    for c, nodes in enumerate(sorted(comms, key=min)):
        labels[list(nodes)] = c
    return labels


def louvain(
    task: PartitionTask,
    *,
    resolution: float | None = None,
    bisection_steps: int = 40,
) -> np.ndarray:
    """Baseline Louvain community detection [LOUVAIN] (networkx ``louvain_communities``) on the
    operating topology ``ctx.graph`` with edge weight = [CVC] electrical coupling ``A_uv`` of the
    line's ends (floored at 1e-6 so every line counts).

    Louvain does not take a cluster count; unless ``resolution`` is given, the resolution γ is
    tuned by bisection on log γ ∈ [1e-4, 1e4] (``bisection_steps``, one fixed seed for every
    trial so the count is a deterministic function of γ) until the community count equals
    ``k``; when no γ gives exactly ``k`` communities, the trial whose count is closest to ``k``
    is returned (ties: the smaller count).

    Not repaired: the count may differ from ``k``, size bounds are ignored and a Louvain
    community can be disconnected; violations are reported by ``run_partition``."""
    ctx, k, rng = task.ctx, task.k, task.rng
    n = ctx.n
    a = np.asarray(ctx.a_s2, dtype=float)
    g = nx.Graph()
    g.add_nodes_from(range(n))
    for u, v in ctx.graph.edges():
        g.add_edge(int(u), int(v), weight=max(0.5 * (a[u, v] + a[v, u]), 1e-6))
    seed = _seed(rng)
    if resolution is not None:
        return _louvain_labels(g, resolution, seed)

    best: tuple[int, int, np.ndarray] | None = None

    def trial(gamma: float) -> int:
        nonlocal best
        labels = _louvain_labels(g, gamma, seed)
        count = int(labels.max()) + 1
        key = (abs(count - k), count)
        if best is None or key < best[:2]:
            best = (key[0], key[1], labels)
        return count

    lo, hi = math.log(1e-4), math.log(1e4)
    if trial(math.exp(lo)) < k:
        for _step in range(bisection_steps):
            if best is not None and best[0] == 0:
                break
            mid = 0.5 * (lo + hi)
            if trial(math.exp(mid)) < k:
                lo = mid
            else:
                hi = mid
    assert best is not None
    return best[2]
