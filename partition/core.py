"""Core types of the partition stage: the context every metric and method reads, the result.

Nodes are numbered 0..n-1 in the order of ``PartitionContext.buses`` (the energized buses of the
operating topology, buses fused by closed bus-bus switches counted once). A partition is an
integer label per node, clusters numbered 0..K-1. Metrics and methods are pure functions of
``(labels, context)`` and never touch pandapower; ``clustersim.partition.context.build_context``
computes the context once per case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

__all__ = [
    "CommParams",
    "Partition",
    "PartitionContext",
    "PartitionTask",
    "clusters_of",
    "relabel",
]


@dataclass(frozen=True)
class CommParams:
    """What the [CVC] communication distance needs from the scenario's channel model.

    ``rtt_ms[i, j]`` and ``loss[i, j]`` between the agents at nodes i and j; constant matrices from
    the scenario's default latency (RTT = 2 × mean one-way) and loss; per-link overrides
    (``[[comm.links]]``) do not enter them. ``rtt_max_ms``/``loss_max`` normalize them ([CVC]:
    RTT/RTT_max, loss/loss_max).
    """

    rtt_ms: np.ndarray
    loss: np.ndarray
    rtt_max_ms: float
    loss_max: float


@dataclass(frozen=True, eq=False)
class PartitionContext:
    """Everything a partition metric or method may read, for one case at one operating setup.

    Shapes: n nodes, T profile points (15 min, 96 for a day).
    """

    name: str
    """case name"""
    buses: list[int]
    """pandapower bus index of each node"""
    bus_labels: list[str]
    """bus label (net.bus.name) of each node"""
    graph: nx.Graph
    """operating topology on nodes 0..n-1; edge attribute ``length_km``"""
    topo_dist: np.ndarray
    """(n, n) hop count of the shortest path"""
    length_dist_km: np.ndarray
    """(n, n) line length of the shortest path, km"""
    slack: int
    """node of the slack (substation) bus"""
    # --- electrical distance (clustersim.partition.distance) ---------------------------------
    s_qv: np.ndarray
    """(n, n) Q–V sensitivity ∂V_i/∂Q_j at the base point, p.u./p.u. ([CVC]: (L − M H⁻¹ N)⁻¹)"""
    s_pv: np.ndarray
    """(n, n) P–V sensitivity ∂V_i/∂P_j, p.u./p.u."""
    a_s2: np.ndarray
    """(n, n) [CVC] electrical coupling A_ij = 1 − (H^P_ij + H^Q_ij)/max, in [0, 1], diagonal 1"""
    d_s1: np.ndarray
    """(n, n) [NSGA3PART] B-matrix electrical distance M_ij (Euclidean over d_ij = lg α_ij), ≥ 0"""
    e_t: np.ndarray
    """(T_e, n, n) [EVEC] time-varying edge weights e_ijt = 1 − L_ijt / max L_ijt, per snapshot"""
    d_t: np.ndarray
    """(T_e, n, n) [EVEC] time-varying electrical distance d_ijt"""
    # --- power per node over the horizon (MW / Mvar, 15 min resolution) ----------------------
    p_load_mw: np.ndarray
    """(T, n) active load (base loads, EV and exchange-station demand)"""
    q_load_mvar: np.ndarray
    """(T, n) reactive load"""
    p_gen_mw: np.ndarray
    """(T, n) available PV / wind / DG active power"""
    q_comp_mvar: np.ndarray
    """(n,) reactive compensation capacity: SVC |q| range, capacitor banks, PV/wind inverter S"""
    p_flex_mw: np.ndarray
    """(n,) active flexibility: ESS and exchange-station battery power"""
    n_users: np.ndarray
    """(n,) number of loads (users) at the node"""
    n_resources: np.ndarray
    """(n,) controllable devices at the node (PV, wind, DG, ESS, exchange, SVC, capacitor, taps)"""
    comm: CommParams
    """channel model summary for the communication distance"""
    coords: np.ndarray | None = None
    """(n, 2) bus coordinates for drawing, when the case has them"""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of nodes."""
        return len(self.buses)


@dataclass(frozen=True)
class PartitionTask:
    """What every partition method is given: the context, the number of clusters ``k``, the
    method's own random generator and the cluster size bounds (buses, inclusive)."""

    ctx: PartitionContext
    k: int
    rng: np.random.Generator
    min_size: int
    max_size: int


@dataclass
class Partition:
    """The result of a partition method."""

    method: str
    case: str
    labels: np.ndarray
    """(n,) cluster id 0..K-1 of each node"""
    pilots: list[int]
    """pilot node of each cluster (index into the context's nodes)"""
    metrics: dict[str, float]
    constraints: dict[str, Any]
    """``connected``, ``size_ok``, ``resources_ok`` (bool, all clusters) and per-cluster lists"""
    runtime_s: float
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def k(self) -> int:
        """Number of clusters (labels are 0..K-1)."""
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def clusters(self) -> list[list[int]]:
        """Nodes of each cluster 0..K-1."""
        return clusters_of(self.labels)


def clusters_of(labels: np.ndarray) -> list[list[int]]:
    """Nodes of each cluster 0..K-1 (labels must be 0..K-1)."""
    labels = np.asarray(labels)
    k = int(labels.max()) + 1 if len(labels) else 0
    return [np.flatnonzero(labels == c).tolist() for c in range(k)]


def relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0..K-1 in order of their lowest node (a canonical form: two label
    vectors describe the same partition iff their relabelled forms are equal)."""
    labels = np.asarray(labels)
    out = np.empty_like(labels)
    seen: dict[int, int] = {}
    for i, c in enumerate(labels.tolist()):
        if c not in seen:
            seen[c] = len(seen)
        out[i] = seen[c]
    return out
