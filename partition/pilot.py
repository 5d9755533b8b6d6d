"""Pilot buses: the one node per cluster whose voltage the cluster agent measures and controls.

[CVC] selects the pilot bus of each cluster by a composite index ``I = I^V + I^D``: a
voltage-position index ``I^V`` (how well the node's voltage stands for the cluster's voltages)
plus a communication index ``I^D`` (how cheaply the node reaches the other nodes of its cluster),
each normalized to [0, 1] within the cluster, and takes the node of largest ``I``.

The exact choices made here ([CVC] leaves the normalization open):

- ``I^V_i = Σ_{j ∈ C} ∂V_i/∂Q_j`` (``ctx.s_qv``): the voltage change at ``i`` when every node of
  its cluster ``C`` injects 1 p.u. of reactive power. It rewards both the node's own sensitivity
  and its Q–V coupling to the rest of the cluster, so it picks the most voltage-sensitive,
  best-coupled node (on a radial feeder: the electrically deepest node of the cluster's main path).
- ``I^D_i = mean_{j ∈ C, j ≠ i} exp(−c_ij)``: the node's share of the communication-distance
  index C_dis (:func:`clustersim.partition.metrics.s2_comm_distance`, whose per-cluster value is
  the mean of ``I^D`` over the cluster), with the [CVC] distance
  ``c_ij = γ1 ℓ_ij / 100 km + γ2 RTT_ij / RTT_max + γ3 loss_ij / loss_max`` (``ctx.length_dist_km``,
  ``ctx.comm``; a zero maximum drops its term; γ = ``metrics.S2_GAMMAS``): a closeness centrality
  of the node among its cluster's agents.
- Both are min–max normalized over the nodes of the cluster (a cluster in which a term is constant
  gets 0 for it; a single-node cluster's pilot is its node). Ties go to the lowest node index.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clustersim.partition import metrics
from clustersim.partition.core import PartitionContext

__all__ = ["communication_distance", "pilot_buses", "pilot_index", "raw_pilot_index"]


def communication_distance(
    ctx: PartitionContext, gammas: Sequence[float] = metrics.S2_GAMMAS
) -> np.ndarray:
    """(n, n) [CVC] communication distance
    ``c_ij = γ1 ℓ_ij / 100 km + γ2 RTT_ij / RTT_max + γ3 loss_ij / loss_max`` (dimensionless,
    the distance inside :func:`clustersim.partition.metrics.s2_comm_distance`), 0 on the diagonal."""
    n = ctx.n
    comm = ctx.comm
    rtt = np.broadcast_to(np.asarray(comm.rtt_ms, dtype=float), (n, n))
    loss = np.broadcast_to(np.asarray(comm.loss, dtype=float), (n, n))
    out = gammas[0] * np.asarray(ctx.length_dist_km, dtype=float) / 100.0
    if comm.rtt_max_ms > 0:
        out = out + gammas[1] * rtt / comm.rtt_max_ms
    if comm.loss_max > 0:
        out = out + gammas[2] * loss / comm.loss_max
    out = np.array(out, dtype=float)
    np.fill_diagonal(out, 0.0)
    return out


def _contiguous(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Cluster ids 0..K-1 in increasing label order (the metrics' convention) and K."""
    _, inv = np.unique(np.asarray(labels), return_inverse=True)
    inv = inv.reshape(-1).astype(int)
    return inv, int(inv.max()) + 1


def _minmax_per_cluster(values: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    lo = np.full(k, np.inf)
    hi = np.full(k, -np.inf)
    np.minimum.at(lo, labels, values)
    np.maximum.at(hi, labels, values)
    span = (hi - lo)[labels]
    out = np.zeros_like(values)
    ok = span > 1e-12 * np.maximum(1.0, np.abs(hi[labels]))
    out[ok] = (values[ok] - lo[labels][ok]) / span[ok]
    return out


def raw_pilot_index(ctx: PartitionContext, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-node ``(I^V, I^D)`` before normalization: ``I^V`` in p.u./p.u., ``I^D`` in [0, 1]
    (1 for a single-node cluster). Vectorized: two masked (n, n) row sums."""
    lab, k = _contiguous(labels)
    same = lab[:, None] == lab[None, :]
    size = np.bincount(lab, minlength=k)[lab]
    iv = np.where(same, np.asarray(ctx.s_qv, dtype=float), 0.0).sum(axis=1)
    e = np.exp(-communication_distance(ctx))
    e[~np.isfinite(e)] = 0.0
    np.fill_diagonal(e, 0.0)
    id_ = np.where(same, e, 0.0).sum(axis=1) / np.maximum(size - 1, 1)
    id_[size == 1] = 1.0
    return iv, id_


def pilot_index(ctx: PartitionContext, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-node ``(I^V, I^D)`` of [CVC], each min–max normalized to [0, 1] within its cluster."""
    lab, k = _contiguous(labels)
    iv, id_ = raw_pilot_index(ctx, lab)
    return _minmax_per_cluster(iv, lab, k), _minmax_per_cluster(id_, lab, k)


def pilot_buses(ctx: PartitionContext, labels: np.ndarray) -> list[int]:
    """Pilot node of each cluster: ``argmax_{i ∈ C} I^V_i + I^D_i`` ([CVC]; the two indices are
    defined in the module docstring). Clusters are the distinct labels in increasing order (for
    labels 0..K-1, entry c is cluster c's pilot). Returns node indices (into ``ctx.buses``)."""
    lab, k = _contiguous(labels)
    iv, id_ = pilot_index(ctx, lab)
    score = iv + id_
    # order by (cluster, -score, node): the first node of each cluster block is its pilot
    order = np.lexsort((np.arange(len(lab)), -score, lab))
    first = np.searchsorted(lab[order], np.arange(k))
    return [int(i) for i in order[first]]
