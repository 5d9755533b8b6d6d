"""Build the :class:`~clustersim.partition.core.PartitionContext` of a case.

:func:`build_context` turns a pandapower net (plus the scenario's resources, profiles and channel
model) into the arrays every partition metric and method reads; it is the only place of the
partition stage that touches pandapower. :func:`context_for_case` does it for a built-in case
with its default preset and synthetic (or SimBench) profiles, cached per argument set. Built
contexts are cached by a hash of their inputs (:func:`context_key`), in the process and, for large
networks, on disk (:mod:`clustersim.partition.context_cache`).

Nodes are the energized buses of the operating topology (``clustersim.sim.cases.operating_graph``:
buses fused by closed bus-bus switches count once, represented by their lowest bus index, and
only the part connected to the slack is kept), numbered 0..n-1 in increasing bus index.

Operating points
- **base** (``s_qv``, ``s_pv``, ``a_s2``, ``d_s1``, ``extra["vm_pu_base"]``): the case as given,
  with the resources attached as ``ResourceSet.attach`` leaves them (loads at their case values,
  PV / wind at 0 MW, DG at ``p_init_mw`` or ``p_min_mw``, ESS idle, capacitors and taps at their
  initial step). ``d_s1`` only depends on the network data.
- **snapshots** (``e_t``, ``d_t``): ``snapshots`` profile points evenly spread over the horizon
  (``extra["snapshot_index"]``), at each the loads, EV / exchange stations and PV / wind /
  SimBench generators set from the profiles exactly as the plant applies them
  (``clustersim.sim.plant.Plant``: a load or generator with its own SimBench profile column
  follows it, else the generic column of its kind), the rest as in the base case. Without
  profiles there is one snapshot, the base case.

Power per node (``p_load_mw``, ``q_load_mvar``, ``p_gen_mw``) over the whole horizon (T points,
15 min for the built-in profiles), with the same column rules; without profiles T = 1 and every
profile factor is 1 (the case's peak load, PV / wind / EV at their rating). Loads and generators
count with their pandapower ``scaling``; elements out of service or on de-energized buses are left
out (devices so left out are listed in ``extra["unplaced_devices"]``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import pandapower as pp
import pandas as pd
import scipy
import scipy.sparse as sp
from pandapower.pypower.idx_bus import CID_P, CID_Q, CZD_P, CZD_Q
from scipy.sparse.csgraph import shortest_path
from threadpoolctl import threadpool_limits

from clustersim.errors import PartitionError, PowerFlowError, ScenarioError
from clustersim.partition import context_cache, distance
from clustersim.partition.core import CommParams, PartitionContext
from clustersim.sim import cases
from clustersim.sim import profiles as prof
from clustersim.sim.resources import (
    DG,
    ESS,
    PV,
    SVC,
    CapacitorBank,
    ExchangeStation,
    ResourceSet,
    load_preset,
)

__all__ = [
    "CONTROLLABLE_KINDS",
    "DEFAULT_LATENCY_MS",
    "DEFAULT_LOSS",
    "DEFAULT_PRESETS",
    "SIMBENCH_CODES",
    "build_context",
    "clear_context_cache",
    "comm_params",
    "context_cache_info",
    "context_for_case",
    "context_key",
]

DEFAULT_PRESETS = {"ieee33": "ieee33-ev", "ieee51": "ieee51-ga", "ieee123": "ieee123-ev"}
"""Resource preset :func:`context_for_case` attaches by default (other cases: none)."""
SIMBENCH_CODES = {
    "simbench-mv-rural": "1-MV-rural--0-sw",
    "simbench-mv-semiurb": "1-MV-semiurb--0-sw",
}
"""SimBench code of each SimBench case (a copy of ``clustersim.runner.SIMBENCH_CODES``: the
partition stage may not import the runner)."""
CONTROLLABLE_KINDS = frozenset(
    {"pv", "wind", "dg", "ess", "exchange", "svc", "capacitor", "oltc", "regulator"}
)
"""Device kinds counted in ``n_resources`` (EV charging stations are uncontrolled loads)."""
DEFAULT_LATENCY_MS = 50.0
"""Mean one-way latency of the default channel model (the scenario default), ms."""
DEFAULT_LOSS = 0.01
"""Loss probability of the default channel model (the scenario default)."""


# --------------------------------------------------------------------------------------------
# Topology
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Topology:
    buses: list[int]
    """representative pandapower bus of each node"""
    node_of_bus: dict[int, int]
    """every energized pandapower bus (fused members included) -> node"""
    graph: nx.Graph
    slack: int
    fused: dict[int, list[int]]
    """node -> its pandapower buses, for nodes of more than one bus"""


def _topology(net: pp.pandapowerNet) -> _Topology:
    mg = cases.operating_graph(net)
    buses = sorted(int(b) for b in mg.nodes)
    if not buses:
        raise PartitionError(f"case {net.name!r}: no energized bus connected to a slack")
    node = {b: i for i, b in enumerate(buses)}
    # the fusion rule of operating_graph: closed bus-bus switches, lowest bus index represents
    rep = {int(b): int(b) for b in net.bus.index}
    bb = net.switch[(net.switch.et == "b") & net.switch.closed]
    if len(bb):
        fuse = nx.Graph()
        fuse.add_edges_from(zip(bb.bus.astype(int), bb.element.astype(int), strict=True))
        for comp in nx.connected_components(fuse):
            r = min(comp)
            rep.update({b: r for b in comp})
    node_of_bus = {b: node[r] for b, r in rep.items() if r in node}
    members: dict[int, list[int]] = {}
    for b, i in sorted(node_of_bus.items()):
        members.setdefault(i, []).append(b)
    fused = {i: bs for i, bs in members.items() if len(bs) > 1}

    g = nx.Graph()
    g.add_nodes_from(range(len(buses)))
    line_len = net.line["length_km"].astype(float)
    for u, v, key in mg.edges(keys=True):
        table, idx = key if isinstance(key, tuple) else ("", key)
        length = float(line_len.at[idx]) if table == "line" else 0.0
        a, b = node[int(u)], node[int(v)]
        if g.has_edge(a, b):  # parallel branches: one edge, the shortest length
            data = g.edges[a, b]
            data["length_km"] = min(data["length_km"], length)
            data["branches"].append((str(table), int(idx)))
        else:
            g.add_edge(a, b, length_km=length, branches=[(str(table), int(idx))])

    slacks = sorted(
        node_of_bus[int(b)]
        for b in net.ext_grid.bus[net.ext_grid.in_service]
        if int(b) in node_of_bus
    )
    if not slacks:
        raise PartitionError(f"case {net.name!r}: no in-service slack (ext_grid)")
    return _Topology(buses, node_of_bus, g, slacks[0], fused)


def _distances(g: nx.Graph) -> tuple[np.ndarray, np.ndarray]:
    """(hop count, line length in km) of the shortest paths; explicit zeros are edges."""
    n = g.number_of_nodes()
    if g.number_of_edges() == 0:
        return np.zeros((n, n)), np.zeros((n, n))
    u, v, w = zip(*((a, b, d["length_km"]) for a, b, d in g.edges(data=True)), strict=True)
    lengths = sp.csr_matrix((np.asarray(w, dtype=float), (u, v)), shape=(n, n))
    topo = shortest_path(lengths, directed=False, unweighted=True)
    length = shortest_path(lengths, directed=False)
    return topo, length


def _coords(net: pp.pandapowerNet, buses: list[int]) -> np.ndarray | None:
    """(n, 2) bus coordinates from ``net.bus.geo`` (GeoJSON points), when every node has one."""
    if "geo" not in net.bus.columns:
        return None
    out = np.empty((len(buses), 2))
    for i, b in enumerate(buses):
        geo = net.bus.at[b, "geo"]
        if not isinstance(geo, str) or not geo:
            return None
        try:
            xy = json.loads(geo)["coordinates"]
            out[i] = [float(xy[0]), float(xy[1])]
        except (ValueError, KeyError, TypeError, IndexError):
            return None
    return out


# --------------------------------------------------------------------------------------------
# Channel model summary
# --------------------------------------------------------------------------------------------


def _field(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _channel(comm: Any) -> tuple[float, float]:
    """(mean one-way latency ms, loss probability) of a ``[comm]`` table (defaults filled in)."""
    mean_ms = _field(_field(comm, "latency"), "mean_ms")
    p = _field(_field(comm, "loss"), "p")
    mean_ms = DEFAULT_LATENCY_MS if mean_ms is None else float(mean_ms)
    p = DEFAULT_LOSS if p is None else float(p)
    if not (np.isfinite(mean_ms) and mean_ms >= 0 and np.isfinite(p) and 0 <= p <= 1):
        raise PartitionError(f"invalid channel model: latency {mean_ms} ms, loss {p}")
    return mean_ms, p


def comm_params(n: int, comm: Any = None) -> CommParams:
    """The channel model summary for ``n`` nodes.

    ``comm``: a :class:`CommParams` (returned as is after a shape check), or the scenario's
    ``[comm]`` table as a mapping or object (``latency.mean_ms``, ``loss.p``; missing keys take
    the defaults), or None for the defaults (50 ms mean one-way latency, loss 0.01). Matrices are
    constant (per-link overrides ``[[comm.links]]`` do not enter them):
    ``rtt_ms = 2 × mean one-way latency`` and ``loss = p`` between distinct nodes, 0 on the diagonal
    (an agent does not message itself). ``rtt_max_ms``/``loss_max`` are the matrix maxima, at least
    a tiny positive number.
    """
    if isinstance(comm, CommParams):
        for name, mat in (("rtt_ms", comm.rtt_ms), ("loss", comm.loss)):
            if np.shape(mat) != (n, n):
                raise PartitionError(f"comm.{name} has shape {np.shape(mat)}, expected ({n}, {n})")
        return comm
    mean_ms, p = _channel(comm)
    off = 1.0 - np.eye(n)
    rtt = 2.0 * mean_ms * off
    loss = p * off
    tiny = 1e-12
    return CommParams(
        rtt_ms=rtt,
        loss=loss,
        rtt_max_ms=max(float(rtt.max()) if n else 0.0, tiny),
        loss_max=max(float(loss.max()) if n else 0.0, tiny),
    )


# --------------------------------------------------------------------------------------------
# Element series (the plant's profile rules)
# --------------------------------------------------------------------------------------------


@dataclass
class _Series:
    """Values written into one element column over the horizon, and the element's node."""

    rows: np.ndarray
    """element rows (net table index) that follow a profile"""
    values: np.ndarray
    """(T, len(rows)) values of the column (before pandapower's ``scaling``)"""
    nodes: np.ndarray
    """node of each row"""
    scaling: np.ndarray


class _Factors:
    def __init__(self, profiles: prof.Profiles | None) -> None:
        self.frame = profiles.actual if profiles is not None else None
        self.t = len(self.frame) if self.frame is not None else 1
        self._cache: dict[str, np.ndarray] = {}

    def has(self, col: str) -> bool:
        return self.frame is not None and col in self.frame.columns

    def __call__(self, col: str) -> np.ndarray:
        if self.frame is None or not col:
            return np.ones(self.t)
        if col not in self._cache:
            if col not in self.frame.columns:
                raise PartitionError(f"the profiles have no column {col!r}")
            self._cache[col] = self.frame[col].to_numpy(dtype=float)
        return self._cache[col]


def _prof_name(table: Any, row: int) -> str | None:
    if "profile" not in table.columns:
        return None
    value = table.at[row, "profile"]
    return value if isinstance(value, str) and value else None


def _load_column(net: pp.pandapowerNet, row: int, variable: str, factors: _Factors) -> str:
    """Profile column of load ``row`` (as ``Plant._element_column``)."""
    if str(net.load.at[row, "type"]) in ("ev", "exchange"):
        return "ev"
    name = _prof_name(net.load, row)
    suffix = "_pload" if variable == "p_mw" else "_qload"
    if name is not None and factors.has(f"{name}{suffix}"):
        return f"{name}{suffix}"
    return "load_p" if variable == "p_mw" else "load_q"


def _sgen_column(net: pp.pandapowerNet, row: int, factors: _Factors) -> str:
    """Profile column of sgen ``row`` ('' = none: keeps its base value), as the plant."""
    name = _prof_name(net.sgen, row)
    if name is not None and factors.has(name):
        return name
    return {"PV": "pv", "WP": "wind"}.get(str(net.sgen.at[row, "type"]), "")


def _in_service_rows(table: Any, topo: _Topology) -> tuple[np.ndarray, np.ndarray]:
    rows = [
        int(r)
        for r, b, on in zip(table.index, table.bus, table.in_service, strict=True)
        if bool(on) and int(b) in topo.node_of_bus
    ]
    nodes = [topo.node_of_bus[int(table.at[r, "bus"])] for r in rows]
    return np.asarray(rows, dtype=int), np.asarray(nodes, dtype=int)


def _per_node(values: np.ndarray, nodes: np.ndarray, n: int) -> np.ndarray:
    """Sum the columns of ``values`` (T, m) into their nodes: (T, n)."""
    out = np.zeros((values.shape[0], n))
    if len(nodes):
        inc = np.zeros((len(nodes), n))
        inc[np.arange(len(nodes)), nodes] = 1.0
        out = values @ inc
    return out


def _scaling(table: Any, rows: np.ndarray) -> np.ndarray:
    if "scaling" not in table.columns:
        return np.ones(len(rows))
    return table.loc[rows, "scaling"].fillna(1.0).to_numpy(dtype=float)


def _load_series(
    net: pp.pandapowerNet, topo: _Topology, factors: _Factors
) -> tuple[_Series, _Series]:
    rows, nodes = _in_service_rows(net.load, topo)
    scaling = _scaling(net.load, rows)
    out = []
    for variable in ("p_mw", "q_mvar"):
        base = net.load.loc[rows, variable].to_numpy(dtype=float)
        cols = [_load_column(net, int(r), variable, factors) for r in rows]
        f = np.column_stack([factors(c) for c in cols]) if len(rows) else np.zeros((factors.t, 0))
        out.append(_Series(rows, f * base[None, :], nodes, scaling))
    return out[0], out[1]


def _sgen_series(
    net: pp.pandapowerNet,
    topo: _Topology,
    factors: _Factors,
    devices: Mapping[tuple[str, int], Any],
) -> tuple[_Series, np.ndarray]:
    """Profile-driven sgen p (the plant's rule) and the available generation per node (T, n)."""
    rows, nodes = _in_service_rows(net.sgen, topo)
    scaling = _scaling(net.sgen, rows)
    t, n = factors.t, len(topo.buses)
    avail = np.zeros((t, len(rows)))
    driven: list[int] = []
    for k, r in enumerate(rows):
        kind = str(net.sgen.at[r, "type"])
        dev = devices.get(("sgen", int(r)))
        if kind == "SVC" or isinstance(dev, SVC):
            continue  # reactive only
        if kind == "DG" or isinstance(dev, DG):
            p_now = float(net.sgen.at[r, "p_mw"])
            avail[:, k] = (
                dev.p_max_mw
                if isinstance(dev, DG)
                else _num(net.sgen.loc[r].get("max_p_mw"), p_now)
            )
            continue
        base = dev.p_mw if isinstance(dev, PV) else float(net.sgen.at[r, "p_mw"])
        col = _sgen_column(net, int(r), factors)
        avail[:, k] = factors(col) * base if col else base
        if col:
            driven.append(k)
    idx = np.asarray(driven, dtype=int)
    series = _Series(rows[idx], avail[:, idx], nodes[idx], scaling[idx])
    return series, _per_node(avail * scaling[None, :], nodes, n)


# --------------------------------------------------------------------------------------------
# Resources per node
# --------------------------------------------------------------------------------------------


def _label_lookup(net: pp.pandapowerNet) -> dict[str, int]:
    """Bus label -> bus index, as ``ResourceSet.attach`` resolves device buses."""
    labels = net.bus["name"].astype(str)
    if labels.duplicated().any():
        return {str(i): int(i) for i in net.bus.index}
    return {str(lbl): int(i) for lbl, i in zip(labels, net.bus.index, strict=True)}


def _resources_from_set(
    net: pp.pandapowerNet, topo: _Topology, resources: ResourceSet
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray], list[str]]:
    n = len(topo.buses)
    q_comp = np.zeros(n)
    p_flex = np.zeros(n)
    by_kind: dict[str, np.ndarray] = {}
    unplaced: list[str] = []
    label = _label_lookup(net)
    for d in resources.devices:
        bus = label.get(d.bus)
        if bus is None or bus not in topo.node_of_bus:
            unplaced.append(d.name)
            continue
        i = topo.node_of_bus[bus]
        if d.kind in CONTROLLABLE_KINDS:
            by_kind.setdefault(d.kind, np.zeros(n, dtype=int))[i] += 1
        if isinstance(d, PV):  # PV and wind: the inverter rating
            q_comp[i] += d.s_rated_mva
        elif isinstance(d, SVC):
            q_comp[i] += max(abs(d.q_min_mvar), abs(d.q_max_mvar))
        elif isinstance(d, DG):
            q_comp[i] += max(abs(d.q_min_mvar), abs(d.q_max_mvar))
        elif isinstance(d, CapacitorBank):
            q_comp[i] += d.steps * d.q_step_mvar
        if isinstance(d, ESS | ExchangeStation):
            p_flex[i] += d.p_max_mw
    n_res = sum(by_kind.values(), np.zeros(n, dtype=int))
    return n_res, q_comp, p_flex, by_kind, unplaced


def _num(value: Any, default: float = 0.0) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return default
    return v if np.isfinite(v) else default


def _resources_from_net(
    net: pp.pandapowerNet, topo: _Topology
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray], list[str]]:
    """Fallback without a ResourceSet: every in-service sgen, storage, shunt and tap changer."""
    n = len(topo.buses)
    q_comp = np.zeros(n)
    p_flex = np.zeros(n)
    by_kind: dict[str, np.ndarray] = {}

    def add(kind: str, i: int) -> None:
        by_kind.setdefault(kind, np.zeros(n, dtype=int))[i] += 1

    rows, nodes = _in_service_rows(net.sgen, topo)
    for r, i in zip(rows, nodes, strict=True):
        sg = net.sgen.loc[r]
        kind = str(sg.get("type", "")).upper()
        if kind == "SVC":
            add("svc", i)
            q_comp[i] += max(abs(_num(sg.get("min_q_mvar"))), abs(_num(sg.get("max_q_mvar"))))
        else:
            add({"PV": "pv", "WP": "wind", "DG": "dg"}.get(kind, "sgen"), i)
            q_comp[i] += _num(sg.get("sn_mva"), abs(_num(sg.get("p_mw"))))
    rows, nodes = _in_service_rows(net.storage, topo)
    for r, i in zip(rows, nodes, strict=True):
        st = net.storage.loc[r]
        add("ess", i)
        p_flex[i] += _num(st.get("max_p_mw"), _num(st.get("sn_mva")))
    rows, nodes = _in_service_rows(net.shunt, topo)
    for r, i in zip(rows, nodes, strict=True):
        sh = net.shunt.loc[r]
        add("capacitor", i)
        steps = _num(sh.get("max_step"), _num(sh.get("step"), 1.0))
        q_comp[i] += abs(_num(sh.get("q_mvar"))) * max(steps, 1.0)
    trafo = net.trafo[net.trafo.in_service]
    for r in trafo.index:
        tr = trafo.loc[r]
        hv = int(tr.hv_bus)
        if pd.isna(tr.get("tap_pos")) or _num(tr.get("tap_step_percent")) <= 0:
            continue
        if hv not in topo.node_of_bus:
            continue
        regulator = str(tr.get("name", "")).lower().startswith("reg")
        add("regulator" if regulator else "oltc", topo.node_of_bus[hv])
    n_res = sum(by_kind.values(), np.zeros(n, dtype=int))
    return n_res, q_comp, p_flex, by_kind, []


# --------------------------------------------------------------------------------------------
# Power flow
# --------------------------------------------------------------------------------------------


def _runpp(net: pp.pandapowerNet, warm: bool) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pp.runpp(
                net,
                numba=False,
                lightsim2grid=False,
                init="results" if warm else "auto",
                max_iteration=30,
            )
    except (pp.LoadflowNotConverged, np.linalg.LinAlgError, ValueError, FloatingPointError):
        return False
    return bool(net.converged)


def _snapshot_index(t: int, snapshots: int) -> np.ndarray:
    """``snapshots`` points evenly spread over ``t`` profile points (all of them if fewer)."""
    k = min(snapshots, t)
    return (np.arange(k) * t) // k


def _zip_loads(net: pp.pandapowerNet) -> bool:
    """True when pandapower modelled voltage-dependent (ZIP) loads in the last power flow."""
    if not net._options.get("voltage_depend_loads", False):
        return False

    bus = net._ppc["internal"]["bus"]
    return bool(np.any(bus[:, [CID_P, CID_Q, CZD_P, CZD_Q]] != 0))


class _SnapshotDistances:
    """The (T_e, n, n) [EVEC] distances ``d_t`` filled snapshot by snapshot (no matrix of
    sensitivities is kept), and the profile rows whose power flow failed."""

    def __init__(self, t_e: int, n: int, s_qv_base: np.ndarray) -> None:
        self.d_t = np.empty((t_e, n, n))
        self.failed: list[int] = []
        self.base = s_qv_base

    def put(self, i: int, row: int, s_qv: np.ndarray | None) -> None:
        """Snapshot ``i`` (profile row ``row``); a failed one (None) repeats the previous
        snapshot's distances (the first: the base case's)."""
        if s_qv is not None:
            self.d_t[i] = distance.electrical_distance(s_qv)
            return
        self.failed.append(int(row))
        self.d_t[i] = self.d_t[i - 1] if i > 0 else distance.electrical_distance(self.base)


def _snapshots_runpp(
    net: pp.pandapowerNet,
    topo: _Topology,
    series: tuple[_Series, _Series, _Series],
    index: np.ndarray,
    out: _SnapshotDistances,
) -> None:
    """The snapshots by pandapower's ``runpp`` (voltage-dependent loads), warm-started."""
    load_p, load_q, sgen_p = series
    warm = True
    for i, t in enumerate(index):
        net.load.loc[load_p.rows, "p_mw"] = load_p.values[t]
        net.load.loc[load_q.rows, "q_mvar"] = load_q.values[t]
        net.sgen.loc[sgen_p.rows, "p_mw"] = sgen_p.values[t]
        warm = _runpp(net, warm)
        out.put(i, t, distance.net_sensitivities(net, topo.buses)[0] if warm else None)


def _snapshots(
    net: pp.pandapowerNet,
    topo: _Topology,
    series: tuple[_Series, _Series, _Series],
    index: np.ndarray,
    s_qv_base: np.ndarray,
) -> tuple[np.ndarray, list[int]]:
    """(T_e, n, n) [EVEC] distance ``d_t`` (:func:`~clustersim.partition.distance.electrical_distance`
    of ``∂|V|/∂Q``) at each snapshot (profile row in ``index``), and the rows that failed.

    ``net`` holds the converged base case. Only load and generator injections change between
    snapshots, so the power flow is solved directly on pandapower's admittance matrix of the base
    case (:func:`~clustersim.partition.distance.newton_raphson`, warm-started from the previous
    snapshot); with voltage-dependent (ZIP) loads pandapower's ``runpp`` is run instead.
    """
    out = _SnapshotDistances(len(index), len(topo.buses), s_qv_base)
    if _zip_loads(net):
        _snapshots_runpp(net, topo, series, index, out)
        return out.d_t, out.failed

    internal = net._ppc["internal"]
    base_mva = float(internal["baseMVA"])
    ybus = internal["Ybus"]
    pv, pq = internal["pv"], internal["pq"]
    sub = np.ix_(distance.ppc_index(net, topo.buses), distance.ppc_index(net, topo.buses))
    # injection change (p.u.) of each element per unit of its column value
    parts = []
    for (table, col, sign), s in zip(
        (("load", "p_mw", -1.0), ("load", "q_mvar", -1.0j), ("sgen", "p_mw", 1.0)),
        series,
        strict=True,
    ):
        base = net[table].loc[s.rows, col].to_numpy(dtype=float)
        at = distance.ppc_index(net, net[table].loc[s.rows, "bus"].to_numpy(dtype=int))
        parts.append((s, base, at, sign * s.scaling / base_mva))
    sbus0 = np.asarray(internal["Sbus"], dtype=complex)
    v = np.asarray(internal["V"], dtype=complex)
    for i, t in enumerate(index):
        sbus = sbus0.copy()
        for s, base, at, gain in parts:
            np.add.at(sbus, at, gain * (s.values[t] - base))
        v_t, ok = distance.newton_raphson(ybus, sbus, v, pv, pq)
        if ok:
            v = v_t
        op = distance.OperatingPoint(ybus, v, pv, pq)
        out.put(i, t, op.sensitivities()[0][sub] if ok else None)
    return out.d_t, out.failed


def _readonly(ctx_arrays: list[np.ndarray]) -> None:
    for a in ctx_arrays:
        a.flags.writeable = False


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def build_context(
    net: pp.pandapowerNet,
    resources: ResourceSet | None = None,
    profiles: prof.Profiles | None = None,
    *,
    comm: Any = None,
    name: str = "",
    snapshots: int = 24,
) -> PartitionContext:
    """The partition context of ``net`` with ``resources`` and ``profiles`` (module docstring).

    ``net`` is not modified (the resources are attached to a copy). ``comm``: see
    :func:`comm_params`. ``snapshots``: number of [EVEC] snapshots (≥ 1; at most one per profile
    point). Every array of the result is read-only and its graph frozen: contexts are shared,
    so nothing may change them in place. The same inputs (:func:`context_key`) give the same
    context object within a process, and a context of a large network is read back from the disk
    cache in a later process (:mod:`clustersim.partition.context_cache`); ``extra["build_time_s"]``
    is the time of the build that made it.

    Fields beyond core.py's docstrings:

    - ``graph`` edges carry ``length_km`` (lines: their length; transformers and other branches:
      0; parallel branches: the shortest) and ``branches``, the ``(table, index)`` pandapower
      elements behind the edge.
    - ``q_comp_mvar``: PV / wind inverter rating ``s_rated_mva``, SVC ``max(|q_min|, |q_max|)``,
      capacitor ``steps × q_step_mvar``, and a DG's ``max(|q_min|, |q_max|)`` (0 by default).
      Without resources: sgen ``sn_mva`` (SVC-type sgens their Q range), shunt
      ``|q_mvar| × max_step``; ``p_flex_mw`` from storage ``max_p_mw``.
    - ``n_resources``: the ResourceSet's devices of :data:`CONTROLLABLE_KINDS` at their bus;
      without resources every in-service sgen, storage, shunt and tap-changing transformer (at
      its HV bus). ``n_users``: every in-service load (EV and exchange stations included).
    - ``extra``: ``base_mva`` (``net.sn_mva``, the p.u. base of the sensitivities), ``vm_pu_base``
      (n,), ``x_b_pu`` (the [NSGA3PART] ``X = (−B)⁻¹``, n × n), ``snapshot_index`` and
      ``snapshot_time_s`` (T_e,), ``failed_snapshots``, ``fused_buses`` (node → its pandapower
      buses, for nodes of several), ``resources_by_kind`` (kind → (n,) counts),
      ``unplaced_devices``, ``resource_set``, ``profiles_source``, ``build_time_s``.

    Raises PowerFlowError when the base case does not converge, ScenarioError when a device
    names a bus or transformer the case does not have, PartitionError on invalid arguments.
    A snapshot whose power flow does not converge keeps the previous snapshot's matrices and is
    listed in ``extra["failed_snapshots"]``.
    """
    key = context_key(net, resources, profiles, comm=comm, name=name, snapshots=snapshots)
    ctx = context_cache.get(key)
    if ctx is None:
        with _single_thread_blas():
            ctx = _build(net, resources, profiles, comm, name, int(snapshots))
        context_cache.count_build()
        context_cache.put(key, ctx)
    return ctx


def context_cache_info() -> dict[str, int]:
    """Counters of the context cache (:mod:`clustersim.partition.context_cache`): ``builds``,
    ``memory_hits``, ``disk_hits``, ``disk_writes``, ``disk_errors``, ``entries``."""
    return context_cache.info()


def clear_context_cache(*, disk: bool = False) -> None:
    """Forget every cached context (``disk``: also remove the cache files); ``context_for_case``
    forgets its own argument cache too."""
    _context_for_case.cache_clear()
    context_cache.clear(disk=disk)


def _hash_frame(h: Any, frame: pd.DataFrame) -> None:
    """Feed a table's columns, dtypes, index and values into the hash ``h``."""
    h.update(repr((list(frame.columns), [str(t) for t in frame.dtypes], frame.shape)).encode())
    if frame.empty:
        return
    h.update(frame.index.to_numpy().astype(str).tobytes())
    for col in frame.columns:
        try:
            values = pd.util.hash_pandas_object(frame[col], index=False).to_numpy()
        except TypeError:  # unhashable cells (lists, dicts): by their text
            values = frame[col].astype(str).to_numpy().astype(str)
        h.update(values.tobytes())


def context_key(
    net: pp.pandapowerNet,
    resources: ResourceSet | None = None,
    profiles: prof.Profiles | None = None,
    *,
    comm: Any = None,
    name: str = "",
    snapshots: int = 24,
) -> str:
    """SHA-256 (hex) of everything :func:`build_context` reads, the key of its cache.

    The net's tables and settings (every entry except results ``res_*``, pandapower's internal
    ``_*`` state and the ``converged`` flags), the resource set (its JSON), the profiles' actual
    frame, step and source, the channel model summary (the matrices of a :class:`CommParams`,
    else the mean latency and loss :func:`comm_params` reads), ``name``, ``snapshots``, the cache
    format (:data:`~clustersim.partition.context_cache.FORMAT`) and the versions of numpy, scipy,
    networkx and pandapower.
    """
    h = hashlib.sha256()
    h.update(
        repr(
            (
                context_cache.FORMAT,
                np.__version__,
                scipy.__version__,
                nx.__version__,
                pp.__version__,
                name or str(net.name or "case"),
                int(snapshots),
            )
        ).encode()
    )
    for entry in sorted(net.keys()):
        if entry.startswith(("_", "res_")) or entry in ("converged", "OPF_converged"):
            continue
        value = net[entry]
        h.update(f"net.{entry}".encode())
        if isinstance(value, pd.DataFrame):
            _hash_frame(h, value)
        else:
            h.update(json.dumps(value, sort_keys=True, default=repr).encode())
    h.update(b"resources" + (resources.model_dump_json().encode() if resources else b"none"))
    if profiles is not None:
        h.update(f"profiles {profiles.step_s} {profiles.source}".encode())
        _hash_frame(h, profiles.actual)
    if isinstance(comm, CommParams):
        h.update(repr((comm.rtt_max_ms, comm.loss_max)).encode())
        h.update(np.ascontiguousarray(comm.rtt_ms, dtype=float).tobytes())
        h.update(np.ascontiguousarray(comm.loss, dtype=float).tobytes())
    else:
        h.update(repr(("channel", *_channel(comm))).encode())
    return h.hexdigest()


def _single_thread_blas() -> contextlib.AbstractContextManager[Any]:
    """Limit BLAS to one thread while building: on a small shared machine multi-threaded BLAS
    made the triangular solves ~25x slower (measured on 2 cores, n ≈ 30..130); at n = 1197 each
    distance matrix's one matrix product takes about 0.2 s on one thread."""
    return threadpool_limits(limits=1, user_api="blas")


# length: computes each field of the context once, in dependency order
def _build(
    net: pp.pandapowerNet,
    resources: ResourceSet | None,
    profiles: prof.Profiles | None,
    comm: Any,
    name: str,
    snapshots: int,
) -> PartitionContext:
    t0 = time.perf_counter()
    if int(snapshots) < 1:
        raise PartitionError(f"snapshots must be at least 1, got {snapshots}")
    net = copy.deepcopy(net)
    name = name or str(net.name or "case")
    where = resources.attach(net) if resources is not None else {}
    devices: dict[tuple[str, int], Any] = {}
    if resources is not None:
        by_name = {d.name: d for d in resources.devices}
        devices = {loc: by_name[dev] for dev, loc in where.items() if dev in by_name}

    topo = _topology(net)
    n = len(topo.buses)
    topo_dist, length_dist = _distances(topo.graph)

    # --- base operating point
    if not _runpp(net, warm=False):
        raise PowerFlowError(f"case {name}: the base power flow does not converge")
    s_qv, s_pv = distance.net_sensitivities(net, topo.buses)
    x_b = distance.net_b_matrix_reactance(net, topo.buses)
    vm_base = net.res_bus.vm_pu.loc[topo.buses].to_numpy(dtype=float)
    base_mva = float(net.sn_mva)

    # --- power per node over the horizon
    factors = _Factors(profiles)
    load_p, load_q = _load_series(net, topo, factors)
    sgen_p, p_gen = _sgen_series(net, topo, factors, devices)
    p_load = _per_node(load_p.values * load_p.scaling[None, :], load_p.nodes, n)
    q_load = _per_node(load_q.values * load_q.scaling[None, :], load_q.nodes, n)
    n_users = np.bincount(load_p.nodes, minlength=n).astype(int)

    if resources is not None:
        n_res, q_comp, p_flex, by_kind, unplaced = _resources_from_set(net, topo, resources)
    else:
        n_res, q_comp, p_flex, by_kind, unplaced = _resources_from_net(net, topo)

    # --- [EVEC] snapshots
    failed: list[int] = []
    if profiles is None:
        index = np.zeros(1, dtype=int)
        d_t = distance.electrical_distance(s_qv)[None]
    else:
        index = _snapshot_index(factors.t, int(snapshots))
        d_t, failed = _snapshots(net, topo, (load_p, load_q, sgen_p), index, s_qv)
    e_t = distance.edge_weights(d_t)
    step_s = profiles.step_s if profiles is not None else prof.NATIVE_STEP_S

    ctx_comm = comm_params(n, comm)
    if not isinstance(comm, CommParams):  # ours: shared, read-only like the rest
        _readonly([ctx_comm.rtt_ms, ctx_comm.loss])
    arrays = {
        "topo_dist": topo_dist,
        "length_dist_km": length_dist,
        "s_qv": s_qv,
        "s_pv": s_pv,
        "a_s2": distance.s2_coupling(s_pv, s_qv),
        "d_s1": distance.s1_distance(x_b),
        "e_t": e_t,
        "d_t": d_t,
        "p_load_mw": p_load,
        "q_load_mvar": q_load,
        "p_gen_mw": p_gen,
        "q_comp_mvar": q_comp,
        "p_flex_mw": p_flex,
        "n_users": n_users,
        "n_resources": n_res,
    }
    coords = _coords(net, topo.buses)
    extra: dict[str, Any] = {
        "base_mva": base_mva,
        "vm_pu_base": vm_base,
        "x_b_pu": x_b,
        "snapshot_index": index,
        "snapshot_time_s": index * int(step_s),
        "failed_snapshots": failed,
        "fused_buses": topo.fused,
        "resources_by_kind": by_kind,
        "unplaced_devices": unplaced,
        "resource_set": resources.name if resources is not None else None,
        "profiles_source": profiles.source if profiles is not None else None,
    }
    _readonly(
        [
            *arrays.values(),
            vm_base,
            x_b,
            index,
            extra["snapshot_time_s"],
            *by_kind.values(),
            *([coords] if coords is not None else []),
        ]
    )
    extra["build_time_s"] = time.perf_counter() - t0
    return PartitionContext(
        name=name,
        buses=list(topo.buses),
        bus_labels=[str(net.bus.at[b, "name"]) for b in topo.buses],
        graph=nx.freeze(topo.graph),
        slack=topo.slack,
        comm=ctx_comm,
        coords=coords,
        extra=extra,
        **arrays,
    )


def context_for_case(
    case: str,
    *,
    preset: str | None = "default",
    profiles_seed: int = 0,
    snapshots: int = 24,
) -> PartitionContext:
    """The context of a built-in case (or pandapower JSON path), cached per argument set.

    ``preset``: ``"default"`` attaches the case's default preset (:data:`DEFAULT_PRESETS`:
    ieee33 → ieee33-ev, ieee51 → ieee51-ga, ieee123 → ieee123-ev, others none), ``""`` or None
    attaches none, anything else names a preset (or preset file). Profiles: one day, synthetic
    (``clustersim.sim.profiles.synthetic(1, seed=profiles_seed)``) or, for the SimBench cases,
    SimBench's own (``from_simbench(code, day=0, seed=profiles_seed)``). The same arguments
    return the same (read-only) context object.
    """
    chosen = DEFAULT_PRESETS.get(case, "") if preset == "default" else (preset or "")
    return _context_for_case(case, chosen, int(profiles_seed), int(snapshots))


@functools.lru_cache(maxsize=16)
def _context_for_case(case: str, preset: str, seed: int, snapshots: int) -> PartitionContext:
    net = cases.load_case(case)
    cases.check_topology(net, case)  # CaseError: an islanded or meshed case is refused
    resources = load_preset(preset) if preset else None
    if resources is not None and resources.case and resources.case != case:
        raise ScenarioError(
            f"preset {resources.name!r} is written for case {resources.case!r}, not {case!r}",
            key="resources.preset",
        )
    if case in SIMBENCH_CODES:
        profiles = prof.from_simbench(SIMBENCH_CODES[case], day=0, seed=seed, net=net)
    else:
        profiles = prof.synthetic(1, seed=seed)
    return build_context(net, resources, profiles, name=case, snapshots=snapshots)
