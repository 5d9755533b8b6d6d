"""The controllers' model of the grid: the whole network or one cluster's sub-network.

A controller never touches the plant's pandapower net: it owns a copy (``model net``) without the
plant's profile controllers, writes the forecast of the coming interval and the setpoints in
force into it, and evaluates candidates with :class:`~clustersim.sim.powerflow.BatchedPowerFlow`.

Cluster sub-network (the boundary model of [CVC], "Cluster Voltage Control of Active Distribution
Networks Considering Power Deficit and Resource Allocation"):

- the cluster's buses, plus its *upstream boundary bus* (the parent, outside the cluster, of the
  cluster's bus nearest to the substation on the radial operating tree) which becomes the
  sub-network's slack at the measured voltage (in a coordination round: the voltage the parent
  cluster announces); the tie branch between the two is part of the sub-network, so its losses
  and its regulator (if it is a tap-changing transformer) belong to the cluster;
- every *downstream boundary* (a branch leaving the cluster towards a child cluster) becomes a
  constant P/Q draw at the cluster bus it leaves from, equal to the power measured entering
  that branch;
- injections at the upstream boundary bus itself are dropped (a slack bus' injections do not
  change any voltage of the sub-network; they belong to the neighbouring cluster).

The centralized controller uses the same class with every bus in one "cluster" and the real
slack. Buses fused by closed bus-bus switches follow the cluster of the partition node they were
fused into.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandapower as pp
import pandapower.topology as top

from clustersim.errors import ScenarioError
from clustersim.sim.plant import Measurement
from clustersim.sim.powerflow import BatchedPowerFlow, Injections

__all__ = ["Boundary", "ClusterNetwork", "model_net", "radial_tree"]


def model_net(net: pp.pandapowerNet) -> pp.pandapowerNet:
    """A copy of the plant's net without its controllers and results (the controllers' model)."""
    controllers = net.controller
    net.controller = controllers.iloc[0:0]
    try:
        out = copy.deepcopy(net)
    finally:
        net.controller = controllers
    return out


@dataclass(frozen=True)
class _Tree:
    parent: dict[int, int]
    """bus -> parent bus on the energized radial tree (the slack bus has none)"""
    edge: dict[int, tuple[str, int]]
    """bus -> (table, row) of the branch to its parent: ("line"|"trafo"|"switch", row)"""
    depth: dict[int, int]
    slack: int


def radial_tree(net: pp.pandapowerNet) -> _Tree:
    """Parent pointers of the energized operating topology, rooted at the slack bus."""

    g = top.create_nxgraph(net, respect_switches=True, include_out_of_service=False)
    eg = net.ext_grid[net.ext_grid.in_service.astype(bool)]
    slack = int(eg.bus.iloc[0])
    parent: dict[int, int] = {}
    edge: dict[int, tuple[str, int]] = {}
    depth = {slack: 0}
    queue = deque([slack])
    while queue:
        u = queue.popleft()
        for _, v, key in g.edges(u, keys=True):
            if v in depth:
                continue
            depth[v] = depth[u] + 1
            parent[int(v)] = int(u)
            edge[int(v)] = (str(key[0]), int(key[1]))
            queue.append(v)
    return _Tree(parent=parent, edge=edge, depth=depth, slack=slack)


def path_impedance_pu(
    net: pp.pandapowerNet, bus: int, tree: _Tree | None = None
) -> tuple[float, float]:
    """Series resistance and reactance of the operating tree's path from the slack bus to
    ``bus``, p.u. on the network's base power ``sn_mva``: lines by their per-km impedance, length
    and parallel count over the base impedance at their from bus, transformers by
    ``vkr_percent``/``vk_percent`` on their rating; bus-bus switches and other branches add
    nothing. ``r·P + x·Q`` (P, Q in p.u.) is the linearized voltage drop a draw at ``bus`` causes
    along the path (LinDistFlow, [DISTFLOW])."""
    tree = tree or radial_tree(net)
    r = x = 0.0
    b = int(bus)
    while b != tree.slack:
        table, row = tree.edge[b]
        if table == "line":
            ln = net.line.loc[row]
            z_base = float(net.bus.at[int(ln.from_bus), "vn_kv"]) ** 2 / float(net.sn_mva)
            km = float(ln.length_km) / float(ln.parallel) / z_base
            r += float(ln.r_ohm_per_km) * km
            x += float(ln.x_ohm_per_km) * km
        elif table == "trafo":
            t = net.trafo.loc[row]
            per = float(net.sn_mva) / float(t.sn_mva) / float(t.parallel) / 100.0
            rt, zt = float(t.vkr_percent) * per, float(t.vk_percent) * per
            r += rt
            x += math.sqrt(max(zt**2 - rt**2, 0.0))
        b = tree.parent[b]
    return r, x


@dataclass(frozen=True)
class Boundary:
    """A branch leaving the cluster downstream: the draw at ``bus`` is the power measured entering
    the branch ``(table, row)`` at its ``side`` end ("from"/"to" for lines, "hv"/"lv" for trafos)."""

    bus: int
    table: str
    row: int
    side: str


@dataclass
class ClusterNetwork:
    """One controller's sub-network and its batched power flow (see module docstring).

    ``buses``: pandapower bus indices of the cluster (all buses for the centralized controller).
    """

    name: str
    buses: list[int]
    subnet: pp.pandapowerNet
    pf: BatchedPowerFlow
    upstream_bus: int | None
    downstream: list[Boundary]
    owned_trafos: set[int]
    contains_slack: bool
    objective_cols: np.ndarray
    """columns of ``pf.bus_index`` whose voltages the controller answers for"""
    full_cols: np.ndarray
    """for each ``pf.bus_index`` column, its column in the full net's bus order"""
    full_trafo_cols: np.ndarray
    line_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @classmethod
    def build(
        cls,
        net: pp.pandapowerNet,
        name: str,
        buses: Sequence[int] | None = None,
        tree: _Tree | None = None,
    ) -> ClusterNetwork:
        """Sub-network of ``buses`` in the model net ``net`` (all buses when None)."""
        tree = tree or radial_tree(net)
        all_buses = [int(b) for b in net.bus.index]
        if buses is None:
            members = set(all_buses)
        else:
            members = {int(b) for b in buses}
        energized = [b for b in members if b in tree.depth]
        if not energized:
            raise ScenarioError(f"cluster {name!r} has no energized bus")
        top_bus = min(energized, key=lambda b: (tree.depth[b], b))
        contains_slack = tree.slack in members
        # a connected cluster has exactly one bus whose parent lies outside it
        entries = [b for b in energized if b != tree.slack and tree.parent[b] not in members]
        if len(entries) > 1:
            raise ScenarioError(
                f"cluster {name!r} is not connected on the operating tree "
                f"({len(entries)} entry points); the control stage needs connected clusters"
            )
        upstream = None if contains_slack else tree.parent[top_bus]
        sub_buses = set(members) | ({upstream} if upstream is not None else set())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sub = pp.toolbox.select_subnet(net, sub_buses, include_results=False)
        if upstream is not None:
            sub.ext_grid.drop(sub.ext_grid.index, inplace=True)
            pp.create_ext_grid(sub, upstream, vm_pu=1.0, va_degree=0.0, name="boundary")
        # downstream boundaries: tree edges from a member to a child outside the cluster
        downstream: list[Boundary] = []
        for child, par in tree.parent.items():
            if par in members and child not in members:
                table, row = tree.edge[child]
                if table == "line":
                    side = "from" if int(net.line.at[row, "from_bus"]) == par else "to"
                elif table == "trafo":
                    side = "hv" if int(net.trafo.at[row, "hv_bus"]) == par else "lv"
                else:
                    raise ScenarioError(
                        f"cluster {name!r} ends at closed switch {row}; the buses it joins must "
                        "be in the same cluster"
                    )
                downstream.append(Boundary(bus=par, table=table, row=row, side=side))
        pf = BatchedPowerFlow(sub)
        owned = {int(t) for t in sub.trafo.index if int(net.trafo.at[t, "lv_bus"]) in members}
        full_index = net.bus.index
        objective_cols = np.flatnonzero(pf.bus_index.isin(sorted(members)))
        return cls(
            name=name,
            buses=sorted(members),
            subnet=sub,
            pf=pf,
            upstream_bus=upstream,
            downstream=downstream,
            owned_trafos=owned,
            contains_slack=contains_slack,
            objective_cols=objective_cols,
            full_cols=full_index.get_indexer(pf.bus_index),
            full_trafo_cols=net.trafo.index.get_indexer(pf.trafo_index),
            line_rows=np.asarray(pf.line_index, dtype=np.int64),
        )

    # ----------------------------------------------------------------- injections
    def injections(
        self,
        full: Injections,
        meas: Measurement | None,
        *,
        vm_slack_pu: float | None = None,
        boundary_pq: Mapping[tuple[str, int], tuple[float, float]] | None = None,
    ) -> Injections:
        """The sub-network's operating point from the full net's injections ``full`` (one
        candidate), with the boundary values of ``meas``. ``vm_slack_pu`` overrides the slack
        voltage (the OLTC of the root cluster, or a neighbour-announced boundary voltage);
        ``boundary_pq`` overrides the measured draw of downstream boundary branches, keyed by
        ``(table, row)`` (the P/Q a child cluster announced, MW and Mvar)."""
        cols = self.full_cols
        p = full.p_mw[:, cols].copy()
        q = full.q_mvar[:, cols].copy()
        sp = full.shunt_p_mw[:, cols].copy()
        sq = full.shunt_q_mvar[:, cols].copy()
        tap = full.tap_pos[:, self.full_trafo_cols].copy()
        vm = full.vm_ext_pu.copy()
        if self.upstream_bus is not None:
            c = int(self.pf.bus_index.get_loc(self.upstream_bus))
            p[:, c] = q[:, c] = sp[:, c] = sq[:, c] = 0.0
            if meas is not None and np.isfinite(meas.vm_pu[self.full_col(self.upstream_bus)]):
                vm[:] = meas.vm_pu[self.full_col(self.upstream_bus)]
        if meas is not None or boundary_pq:
            for b in self.downstream:
                if boundary_pq and (b.table, b.row) in boundary_pq:
                    dp, dq = boundary_pq[(b.table, b.row)]
                elif meas is not None:
                    dp, dq = boundary_flow(meas, b)
                else:
                    continue
                c = int(self.pf.bus_index.get_loc(b.bus))
                p[:, c] -= dp
                q[:, c] -= dq
        if vm_slack_pu is not None:
            vm[:] = vm_slack_pu
        return Injections(
            p_mw=p, q_mvar=q, shunt_p_mw=sp, shunt_q_mvar=sq, tap_pos=tap, vm_ext_pu=vm
        )

    def full_col(self, bus: int) -> int:
        """Column of a bus of the sub-network in the full net's (measurement) order."""
        return int(self.full_cols[self.pf.bus_index.get_loc(bus)])

    def col_of_bus(self, bus: int) -> int:
        """Column of a bus of the sub-network in ``pf.bus_index`` order."""
        return int(self.pf.bus_index.get_loc(bus))


def boundary_flow(meas: Measurement, b: Boundary) -> tuple[float, float]:
    """Power (MW, Mvar) measured entering branch ``b`` at its cluster end; 0 when unknown."""
    if b.table == "line":
        p = meas.line_p_from_mw if b.side == "from" else meas.line_p_to_mw
        q = meas.line_q_from_mvar if b.side == "from" else meas.line_q_to_mvar
    else:
        p = meas.trafo_p_hv_mw if b.side == "hv" else meas.trafo_p_lv_mw
        q = meas.trafo_q_hv_mvar if b.side == "hv" else meas.trafo_q_lv_mvar
    if b.row >= len(p):
        return 0.0, 0.0
    pv, qv = float(p[b.row]), float(q[b.row])
    return (pv if np.isfinite(pv) else 0.0, qv if np.isfinite(qv) else 0.0)


def assign_buses(
    net: pp.pandapowerNet, clusters: Mapping[str, Sequence[int]]
) -> dict[str, list[int]]:
    """Complete a partition given on operating-graph nodes with the buses fused into them by
    closed bus-bus switches (each joins the cluster of the bus it is fused with)."""
    owner: dict[int, str] = {}
    for name, buses in clusters.items():
        for b in buses:
            if int(b) in owner:
                raise ScenarioError(f"bus {b} is in clusters {owner[int(b)]!r} and {name!r}")
            owner[int(b)] = name
    sw = net.switch
    changed = True
    bb = sw[(sw.et == "b") & sw.closed.astype(bool)] if len(sw) else sw
    while changed:
        changed = False
        for a, e in zip(bb.bus.astype(int), bb.element.astype(int), strict=True):
            if a in owner and e not in owner:
                owner[e] = owner[a]
                changed = True
            elif e in owner and a not in owner:
                owner[a] = owner[e]
                changed = True
    out: dict[str, list[int]] = {name: [] for name in clusters}
    for b, name in owner.items():
        out[name].append(b)
    return {k: sorted(v) for k, v in out.items()}
