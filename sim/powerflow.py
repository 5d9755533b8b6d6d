"""Batched power flow: a whole population of candidate setpoints in one vectorized call.

Optimizers call this in their inner loop instead of pandapower. It solves N candidates at once
on the radial operating topology of a pandapower net and agrees with ``pandapower.runpp``
(defaults: ``calculate_voltage_angles=True``, ``trafo_model="t"``) to better than 1e-6 p.u.;
pandapower [PANDAPOWER] stays the authority on every voltage the plant reports.

Method
------
Backward/forward sweep in the matrix form of Teng [TENG] (J.-H. Teng, "A direct approach for
distribution system load flow solutions", IEEE Trans. Power Delivery 18(3), 2003, 882-887),
extended to off-nominal complex transformer ratios.

*Topology, compiled once.* Buses joined by closed bus-bus switches are fused into one node;
open switches and out-of-service elements are dropped; a line (or transformer) with an open
switch at one end only stays energized from the other end and hangs on an auxiliary leaf node,
as in pandapower. Parallel branches between the same pair of nodes (the two HV/MV transformers of
the SimBench MV grids) are summed into one two-port. The energized part must then be a tree
rooted at the slack node, else :class:`~clustersim.errors.PowerFlowError` is raised. Nodes are
numbered in breadth-first order and every non-root node ``k`` is the child end of exactly one
branch, also numbered ``k``. ``T[k, j] = 1`` when node ``j`` lies in the subtree of ``k``
(``T`` is Teng's BIBC matrix; its transpose adds branch drops along the path from the root,
Teng's BCBV).

*Branch model.* Every branch two-port ``[[Yff, Yft], [Ytf, Ytt]]`` (pandapower's pi model of
lines, and of transformers after its T-to-pi conversion, ``build_branch.py``) oriented
parent -> child is written as an ideal transformer of complex ratio ``a`` at the parent end,
followed by a series admittance ``Ys`` and two shunts ``y_p`` (at the parent node) and ``y_c``
(at the child node): ``Ys = -a*Ytf``, ``y_p = Yff - Ys/|a|^2``, ``y_c = Ytt - Ys``. This is exact
for a single line or transformer, and for parallel elements whose ratios have the same angle
(checked at compile time); a tap difference between parallel transformers (circulating current)
ends up, exactly, in ``y_p`` and ``y_c``. Lines have ``a = 1``; transformer ratios, impedances
and magnetizing admittances are recomputed per candidate from the tap positions with
pandapower's formulas ("Ratio"/"Symmetrical" and "Ideal" tap changers, tap on either side,
bus-vs-rated voltage correction, ``shift_degree``).

*Sweep.* With ``tau_i`` the product of the ratios on the path root -> i, the root-referred
voltages ``U_i = tau_i V_i`` and currents ``J_i = I_i / conj(tau_i)`` see a ratio-free tree whose
branch impedances are ``zeta_k = |tau_k|^2 / Ys_k``. One iteration is::

    J = conj(S_draw / U) + (y_shunt / |tau|^2) * U      node currents drawn
    B = J @ T.T                                         backward sweep: branch currents (BIBC)
    U = V_slack - (zeta * B) @ T                        forward sweep: path drops (BCBV)

with constant-power loads and generation in ``S_draw`` and every constant-impedance element
(shunts, line charging, transformer magnetizing, the ``y_p``/``y_c`` remainders) in ``y_shunt``.
Taps only scale columns (``tau``, ``zeta``): no factorization per candidate or per tap vector.

*Evaluation.* ``T`` is never formed as a dense product: because nodes are in breadth-first
order, ``J @ T.T`` is a reverse pass adding each node's current into its parent and
``(zeta * B) @ T`` a forward pass ``U[k] = U[parent[k]] - zeta[k] B[k]``, both O(n) instead of
O(n^2). The passes for all N candidates run in one numba-compiled kernel (no Python loop over
candidates or branches; no BLAS, so no thread oversubscription on small shared machines: the
dense-product version took 5-25x longer and varied 4x from call to call on 2 cores). Each
candidate stops on its own when ``max |dV| < tol_pu``; one that becomes non-finite, leaves
[0.05, 5] p.u., stops contracting, or reaches ``max_iter`` is flagged ``converged=False`` and
gets NaNs without touching the others. Losses follow from the power balance (slack +
injections - bus-shunt absorption), line currents from each line's own two-port.

*Convergence near the loadability limit.* The sweep is a fixed-point iteration: it converges
linearly, at a rate that tends to 1 as the operating point approaches the nose of the P-V curve,
where pandapower's Newton-Raphson still converges in a few iterations. On ``case1197`` with all
LV loads scaled alike (nose at 4.304x the base load) the sweep takes 14 sweeps at 50 % of the
nose scaling, 41 at 95 %, 98 at 99.5 % and 444 at 99.99 %; with the same PV export at every LV
bus (nose at 31.40 kW per bus) 25, 95, 271 and 1475. Beyond the nose neither solver converges
(there is no solution), and the sweep flags the candidate as not contracting after at most a few
hundred sweeps (315 at 1.0001x the nose, 35 or fewer from 1.01x on). The default ``max_iter`` of
1000 thus costs time only on candidates that are converging; it leaves out the last 0.001 %
(load) and 0.03 % (PV export) before the nose, where a cap of 100 left out the last 0.5 % and
4.5 %. At 99.9 % of either nose the default ``tol_pu`` stops the sweep within 8e-10 p.u. of
its own fully converged solution, which agrees with pandapower run to ``tolerance_mva=1e-13``
within 5e-13 p.u. pandapower needs that tolerance there: its default ``tolerance_mva=1e-8``,
which it compares with the per-unit mismatch on ``sn_mva`` (100 MVA in ``case1197``), leaves
errors of up to 3e-5 p.u. at the 0.415 kV buses of such states, and 1e-11 up to 8e-9.

Units: per-unit on ``net.sn_mva`` and each bus' ``vn_kv`` inside; MW, MVAr, kA, degrees and
per-unit magnitudes at the interface (names carry the unit).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import pandas as pd

from clustersim.errors import PowerFlowError

__all__ = ["BatchResult", "BatchedPowerFlow", "Injections"]

ASYMMETRIC_AND_FACTS_TABLES = ("asymmetric_load", "asymmetric_sgen", "svc", "tcsc", "ssc", "vsc")
"""pandapower's element tables of asymmetric injections and FACTS devices"""
# Element tables this solver does not model; an in-service row in any of them is an error.
_UNSUPPORTED_TABLES = (
    "gen",
    "trafo3w",
    "impedance",
    "ward",
    "xward",
    "dcline",
    "motor",
    *ASYMMETRIC_AND_FACTS_TABLES,
    "line_dc",
    "bus_dc",
    "source_dc",
    "load_dc",
)
_LOAD_VOLTAGE_DEPENDENCE = (
    "const_z_percent",
    "const_i_percent",
    "const_z_p_percent",
    "const_z_q_percent",
    "const_i_p_percent",
    "const_i_q_percent",
)
# tap changer types: 0 = tap ignored (pandapower ignores tap_pos without a changer type),
# 1 = "Ratio"/"Symmetrical" (complex voltage step), 2 = "Ideal" (pure phase shifter)
_TAP_NONE, _TAP_RATIO, _TAP_IDEAL = 0, 1, 2
_CHECK_EVERY = 5  # iterations between divergence checks
_VM_BOUNDS_PU = (0.05, 5.0)  # outside: the candidate has diverged


@dataclass
class Injections:
    """Candidate operating points, one row per candidate, columns in ``bus_index`` order.

    ``p_mw``/``q_mvar``: net constant-power injection per bus, generator convention
    (sgen + storage discharge - load). ``shunt_p_mw``/``shunt_q_mvar``: power *absorbed* at
    1.0 p.u. bus voltage by constant-impedance shunts (pandapower convention, a capacitor has
    ``q < 0``), already multiplied by the step and by ``(bus vn_kv / shunt vn_kv)**2``.
    ``tap_pos``: positions of the ``net.trafo`` rows (``trafo_index`` order; float allowed,
    NaN means neutral; like pandapower, a trafo without ``tap_changer_type`` ignores it).
    ``vm_ext_pu``: slack voltage magnitude (its angle stays the ext_grid's ``va_degree``).
    """

    p_mw: np.ndarray
    q_mvar: np.ndarray
    shunt_p_mw: np.ndarray
    shunt_q_mvar: np.ndarray
    tap_pos: np.ndarray
    vm_ext_pu: np.ndarray

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, np.asarray(getattr(self, f.name), dtype=np.float64))

    @property
    def n(self) -> int:
        """Number of candidates."""
        return int(self.vm_ext_pu.shape[0])

    def copy(self) -> Injections:
        """A copy with every array copied."""
        return Injections(
            **{f.name: getattr(self, f.name).copy() for f in dataclasses.fields(self)}
        )

    def repeat(self, n: int) -> Injections:
        """Tile a single candidate (``self.n == 1``) to ``n`` identical candidates."""
        if self.n != 1:
            raise ValueError(f"repeat() needs a single candidate, got {self.n}")
        return Injections(
            **{
                f.name: np.repeat(getattr(self, f.name), n, axis=0)
                for f in dataclasses.fields(self)
            }
        )

    def take(self, rows: Any) -> Injections:
        """The candidates ``rows`` (an index array, slice or boolean mask)."""
        return Injections(
            **{f.name: getattr(self, f.name)[rows].copy() for f in dataclasses.fields(self)}
        )

    @staticmethod
    def concat(items: list[Injections]) -> Injections:
        """Stack populations (candidate axis) in order."""
        return Injections(
            **{
                f.name: np.concatenate([getattr(it, f.name) for it in items], axis=0)
                for f in dataclasses.fields(Injections)
            }
        )


@dataclass
class BatchResult:
    """Solution of a population. Rows are candidates; NaN rows where ``converged`` is False.

    ``vm_pu``/``va_degree`` per ``bus_index`` column (NaN at buses that are not energized),
    ``i_ka``/``loading_percent`` per ``line_index`` column (pandapower's definitions: the larger
    end current; 0 on a dead line between energized buses, NaN if an end is not energized). ``p_loss_mw``/``q_loss_mvar``: sum of line and transformer losses (pandapower's
    ``res_line.pl_mw + res_trafo.pl_mw``); ``p_slack_mw``/``q_slack_mvar``: ext_grid supply.
    ``iterations``: sweeps of the longest-running candidate; ``n_iter`` per candidate.
    """

    vm_pu: np.ndarray
    va_degree: np.ndarray
    p_loss_mw: np.ndarray
    q_loss_mvar: np.ndarray
    p_slack_mw: np.ndarray
    q_slack_mvar: np.ndarray
    i_ka: np.ndarray
    loading_percent: np.ndarray
    converged: np.ndarray
    iterations: int
    n_iter: np.ndarray = field(repr=False)


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _col(df: pd.DataFrame, name: str, default: float) -> np.ndarray:
    if name not in df.columns:
        return np.full(len(df), default, dtype=np.float64)
    return pd.to_numeric(df[name], errors="coerce").fillna(default).to_numpy(np.float64)


def _pos(index: pd.Index, labels: Any) -> np.ndarray:
    return index.get_indexer(np.asarray(labels))


class BatchedPowerFlow:
    """Batched backward/forward sweep power flow of one pandapower net (see module docstring).

    The operating topology (switch states, in-service flags, element parameters) is compiled
    once; candidates vary injections, shunt steps, transformer taps and the slack voltage.
    Recompile after a topology or parameter change. ``net`` is kept (not copied) as the default
    source of :meth:`base_injections`. The numba kernels compile on the first ``solve`` of a
    process (about 4 s, cached on disk afterwards).
    """

    def __init__(self, net: Any, *, tol_pu: float = 1e-10, max_iter: int = 1000):
        self.net = net
        self.tol_pu = float(tol_pu)
        self.max_iter = int(max_iter)
        self.sn_mva = float(net.sn_mva)
        self.bus_index: pd.Index = net.bus.index
        self.line_index: pd.Index = net.line.index
        self.trafo_index: pd.Index = net.trafo.index
        self._check_supported(net)
        self._compile(net)

    # ------------------------------------------------------------------ compile
    @staticmethod
    def _check_supported(net: Any) -> None:
        for table in _UNSUPPORTED_TABLES:
            if table in net and len(net[table]):
                df = net[table]
                active = (
                    df["in_service"].astype(bool) if "in_service" in df else df.index == df.index
                )
                if np.any(active):
                    raise PowerFlowError(
                        f"batched power flow does not model in-service {table!r} elements"
                    )
        load = net.load[net.load.in_service.astype(bool)]
        for col in _LOAD_VOLTAGE_DEPENDENCE:
            if col in load.columns and np.any(load[col].fillna(0.0).to_numpy(float) != 0.0):
                raise PowerFlowError(
                    f"batched power flow models constant-power loads only; load column {col} "
                    "is non-zero"
                )
        shunt = net.shunt[net.shunt.in_service.astype(bool)]
        if (
            "step_dependency_table" in shunt.columns
            and shunt.step_dependency_table.fillna(False).astype(bool).any()
        ):
            raise PowerFlowError("shunts with a step_dependency_table are not supported")
        eg = net.ext_grid[net.ext_grid.in_service.astype(bool)]
        if len(eg) != 1:
            raise PowerFlowError(f"need exactly one in-service ext_grid, found {len(eg)}")

    # length: turns the net into the sweep's arrays table by table (bus, switch, line, trafo, loads)
    def _compile(self, net: Any) -> None:
        n_bus = len(net.bus)
        bus_in = net.bus.in_service.to_numpy(bool)
        vn_bus_kv = net.bus.vn_kv.to_numpy(np.float64)
        sw = net.switch
        et = sw.et.to_numpy(str) if len(sw) else np.array([], dtype=str)
        closed = sw.closed.to_numpy(bool) if len(sw) else np.array([], dtype=bool)

        # -- fuse buses joined by closed bus-bus switches (both buses in service)
        uf = _UnionFind(n_bus)
        bb = (et == "b") & closed
        if bb.any():
            a = _pos(self.bus_index, sw.bus.to_numpy()[bb])
            b = _pos(self.bus_index, sw.element.to_numpy()[bb])
            z_ohm = _col(sw, "z_ohm", 0.0)[bb]
            for i, j, z in zip(a, b, z_ohm, strict=True):
                if not (bus_in[i] and bus_in[j]):
                    continue
                if z > 0:
                    raise PowerFlowError("closed bus-bus switches with z_ohm > 0 are not supported")
                uf.union(int(i), int(j))
        rep = np.array([uf.find(i) for i in range(n_bus)])

        def open_ends(kind: str, element_labels: pd.Index) -> set[tuple[int, int]]:
            m = (et == kind) & ~closed
            if not m.any():
                return set()
            el = _pos(element_labels, sw.element.to_numpy()[m])
            bu = _pos(self.bus_index, sw.bus.to_numpy()[m])
            return {(int(e), int(u)) for e, u in zip(el, bu, strict=True) if e >= 0}

        # -- branch elements: (kind, table position, node at from/hv end, node at to/lv end)
        n_aux = 0
        elements: list[tuple[str, int, int, int]] = []

        def add_branch(kind: str, i: int, a: int, b: int, a_off: bool, b_off: bool) -> None:
            """Branch ``i`` from bus ``a`` to ``b``; an open end gets an auxiliary node of its own
            and a branch open at both ends is left out."""
            nonlocal n_aux
            if a_off and b_off:
                return
            u = n_bus + n_aux if a_off else int(rep[a])
            n_aux += int(a_off)
            v = n_bus + n_aux if b_off else int(rep[b])
            n_aux += int(b_off)
            elements.append((kind, i, u, v))

        line = net.line
        lf = _pos(self.bus_index, line.from_bus.to_numpy())
        lt = _pos(self.bus_index, line.to_bus.to_numpy())
        l_open = open_ends("l", self.line_index)
        for i in np.flatnonzero(line.in_service.to_numpy(bool)):
            f_off = (int(i), int(lf[i])) in l_open or not bus_in[lf[i]]
            t_off = (int(i), int(lt[i])) in l_open or not bus_in[lt[i]]
            add_branch("line", int(i), lf[i], lt[i], f_off, t_off)
        trafo = net.trafo
        th = _pos(self.bus_index, trafo.hv_bus.to_numpy())
        tl = _pos(self.bus_index, trafo.lv_bus.to_numpy())
        t_open = open_ends("t", self.trafo_index)
        for i in np.flatnonzero(trafo.in_service.to_numpy(bool)):
            if not (bus_in[th[i]] and bus_in[tl[i]]):
                raise PowerFlowError(
                    f"in-service trafo {self.trafo_index[i]} is connected to an out-of-service bus"
                )
            h_off = (int(i), int(th[i])) in t_open
            l_off = (int(i), int(tl[i])) in t_open
            add_branch("trafo", int(i), th[i], tl[i], h_off, l_off)

        # -- energized component from the slack node
        eg = net.ext_grid[net.ext_grid.in_service.astype(bool)].iloc[0]
        slack_bus = int(_pos(self.bus_index, [eg.bus])[0])
        if not bus_in[slack_bus]:
            raise PowerFlowError("the ext_grid bus is out of service")
        root = int(rep[slack_bus])
        self._va_ext_rad = np.deg2rad(float(eg.get("va_degree", 0.0)))
        adj: dict[int, list[int]] = {}
        for e, (_, _, u, v) in enumerate(elements):
            adj.setdefault(u, []).append(e)
            adj.setdefault(v, []).append(e)
        energized = {root}
        queue = deque([root])
        while queue:
            x = queue.popleft()
            for e in adj.get(x, []):
                _, _, u, v = elements[e]
                y = v if u == x else u
                if y not in energized:
                    energized.add(y)
                    queue.append(y)
        live = [e for e, (_, _, u, _) in enumerate(elements) if u in energized]

        # -- group parallel elements, keep self-loops apart, check radiality
        groups: dict[tuple[int, int], list[int]] = {}
        self_loops: list[int] = []
        for e in live:
            _, _, u, v = elements[e]
            if u == v:
                if elements[e][0] == "trafo":
                    raise PowerFlowError(
                        "a transformer whose two sides are fused by closed switches is not supported"
                    )
                self_loops.append(e)
            else:
                groups.setdefault((min(u, v), max(u, v)), []).append(e)
        if len(groups) != len(energized) - 1:
            raise PowerFlowError(
                f"operating topology is not radial: {len(energized)} energized nodes but "
                f"{len(groups)} branches after fusing buses and merging parallel branches"
            )

        # -- breadth-first numbering; branch k is the branch whose child end is node k
        nbr: dict[int, list[tuple[int, tuple[int, int]]]] = {}
        for key in groups:
            u, v = key
            nbr.setdefault(u, []).append((v, key))
            nbr.setdefault(v, []).append((u, key))
        order: list[int] = []
        parent_node: dict[int, int] = {}
        branch_key: dict[int, tuple[int, int]] = {}
        seen = {root}
        queue = deque([root])
        while queue:
            x = queue.popleft()
            for y, key in nbr.get(x, []):
                if y not in seen:
                    seen.add(y)
                    parent_node[y] = x
                    branch_key[y] = key
                    order.append(y)
                    queue.append(y)
        n = len(order)
        node_pos = {node: k for k, node in enumerate(order)}
        node_pos[root] = n  # the slack takes the last column of "extended" arrays
        self.n_nodes = n
        parent = np.array([node_pos[parent_node[x]] for x in order], dtype=np.int64)
        self._parent = parent

        # -- map buses to node columns (n = slack; -1 = not energized)
        bus_col = np.array(
            [node_pos.get(int(rep[i]), -1) if bus_in[i] else -1 for i in range(n_bus)],
            dtype=np.int64,
        )
        self._bus_col = bus_col
        self._agg_layers = self._aggregation_layers(bus_col, n)

        # -- line two-ports (constant)
        sn = self.sn_mva
        base_kv_from = vn_bus_kv[rep[lf]] if len(line) else np.zeros(0)
        base_r = base_kv_from**2 / sn
        length = line.length_km.to_numpy(np.float64)
        par = line.parallel.to_numpy(np.float64)
        r = line.r_ohm_per_km.to_numpy(np.float64) * length / base_r / par
        x = line.x_ohm_per_km.to_numpy(np.float64) * length / base_r / par
        c_f = line.c_nf_per_km.to_numpy(np.float64) * 1e-9
        b = 2 * np.pi * net.f_hz * c_f * base_r * length * par
        g = _col(line, "g_us_per_km", 0.0) * 1e-6 * base_r * length * par
        with np.errstate(divide="ignore", invalid="ignore"):
            ys_line = 1.0 / (r + 1j * x)
        ysh_line = (g + 1j * b) / 2
        self._line_yff = ys_line + ysh_line
        self._line_yft = -ys_line

        # -- transformer data (two-ports per candidate, see _trafo_two_ports)
        self._compile_trafos(net, rep, vn_bus_kv, th, tl)

        # -- per-branch constant parts and the transformer scatter
        yff_c = np.zeros(n, complex)
        yft_c = np.zeros(n, complex)
        ytf_c = np.zeros(n, complex)
        ytt_c = np.zeros(n, complex)
        tb_cols: list[int] = []
        t_members: list[tuple[int, int, bool]] = []  # (trafo pos, tb position, forward)
        lead: list[tuple[int, bool]] = []  # per tb: (trafo pos, forward)
        for k, node in enumerate(order):
            pnode = parent_node[node]
            members = groups[branch_key[node]]
            trafos = [e for e in members if elements[e][0] == "trafo"]
            if trafos:
                tb = len(tb_cols)
                tb_cols.append(k)
                angles = []
                for e in trafos:
                    _, i, u, _ = elements[e]
                    fwd = u == pnode
                    t_members.append((i, tb, fwd))
                    angles.append((self._t_shift_deg[i] if fwd else -self._t_shift_deg[i], i))
                _, i0, u0, _ = elements[trafos[0]]
                lead.append((i0, u0 == pnode))
                if len(members) > 1:
                    self._check_parallel_angles(members, elements, angles)
            for e in members:
                kind, i, u, _ = elements[e]
                if kind != "line":
                    continue
                yff, yft = self._line_yff[i], self._line_yft[i]
                # a line is symmetric: Ytt = Yff, Ytf = Yft whatever its orientation
                yff_c[k] += yff
                ytt_c[k] += yff
                yft_c[k] += yft
                ytf_c[k] += yft
        self._br_const = (yff_c, yft_c, ytf_c, ytt_c)
        self._tb_cols = np.array(tb_cols, dtype=np.int64)
        ntb, nt = len(tb_cols), len(trafo)
        self._m_fwd = np.zeros((nt, ntb))
        self._m_rev = np.zeros((nt, ntb))
        for i, tb, fwd in t_members:
            (self._m_fwd if fwd else self._m_rev)[i, tb] = 1.0
        self._lead_trafo = np.array([i for i, _ in lead], dtype=np.int64)
        self._lead_fwd = np.array([f for _, f in lead], dtype=bool)
        tb_pos = np.full(n, -1, dtype=np.int64)
        tb_pos[self._tb_cols] = np.arange(ntb)
        self._tb_pos = tb_pos

        # constant branches: a = 1
        with np.errstate(divide="ignore", invalid="ignore"):
            ys_c = -ytf_c
            self._zeta_const = 1.0 / ys_c
        yp_c = yff_c - ys_c
        yc_c = ytt_c - ys_c
        const = np.ones(n, dtype=bool)
        const[self._tb_cols] = False
        y_node = np.zeros(n + 1, complex)
        np.add.at(y_node, parent[const], yp_c[const])
        y_node[:n][const] += yc_c[const]
        for e in self_loops:
            _, i, u, _ = elements[e]
            y_node[node_pos[u]] += 2 * (self._line_yff[i] + self._line_yft[i])
        self._y_node_const = y_node
        # parent-end shunts of the transformer branches: scatter-added layer by layer (a dense
        # one-hot product cost 30 ms per 100 candidates on case1197)
        self._tb_parent_layers = self._aggregation_layers(parent[self._tb_cols], n)

        # -- line result mapping (both ends as extended node columns; aux nodes included)
        l_from = np.full(len(line), -1, dtype=np.int64)
        l_to = np.full(len(line), -1, dtype=np.int64)
        for e in live:
            kind, i, u, v = elements[e]
            if kind == "line":
                l_from[i] = node_pos[u]
                l_to[i] = node_pos[v]
        self._line_live = np.flatnonzero(l_from >= 0)
        # pandapower reports i = 0 on a dead line between two energized buses, NaN when one of
        # its ends is not energized (an open switch puts the end on an isolated auxiliary bus)
        open_line = np.zeros(len(line), dtype=bool)
        open_line[[i for i, _ in l_open]] = True
        ends_live = (bus_col[lf] >= 0) & (bus_col[lt] >= 0) if len(line) else open_line
        self._line_nan = (l_from < 0) & (open_line | ~ends_live)
        self._line_from = l_from[self._line_live]
        self._line_to = l_to[self._line_live]
        kv_t = vn_bus_kv[rep[lt]] if len(line) else np.zeros(0)
        self._line_ibase_from_ka = (sn / (np.sqrt(3) * base_kv_from))[self._line_live]
        self._line_ibase_to_ka = (sn / (np.sqrt(3) * kv_t))[self._line_live]
        self._line_imax_ka = (line.max_i_ka.to_numpy(np.float64) * _col(line, "df", 1.0) * par)[
            self._line_live
        ]
        self._shunt_vn_bus_kv = vn_bus_kv[rep]

    @staticmethod
    def _aggregation_layers(bus_col: np.ndarray, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Layers of (node columns, bus positions) with unique node columns per layer."""
        layers: list[tuple[list[int], list[int]]] = []
        count: dict[int, int] = {}
        for i, c in enumerate(bus_col):
            if c < 0:
                continue
            depth = count.get(int(c), 0)
            count[int(c)] = depth + 1
            if depth == len(layers):
                layers.append(([], []))
            layers[depth][0].append(int(c))
            layers[depth][1].append(i)
        return [(np.array(c, dtype=np.int64), np.array(b, dtype=np.int64)) for c, b in layers]

    def _aggregate(self, x: np.ndarray) -> np.ndarray:
        """(N, n_bus) per-bus values -> (N, n + 1) per node (slack node last)."""
        out = np.zeros((x.shape[0], self.n_nodes + 1), dtype=x.dtype)
        for cols, buses in self._agg_layers:
            out[:, cols] += x[:, buses]
        return out

    def _compile_trafos(self, net: Any, rep: np.ndarray, vn_bus_kv: np.ndarray, th, tl) -> None:
        t = net.trafo
        nt = len(t)
        self._t_vn_hv_kv = t.vn_hv_kv.to_numpy(np.float64) if nt else np.zeros(0)
        self._t_vn_lv_kv = t.vn_lv_kv.to_numpy(np.float64) if nt else np.zeros(0)
        self._t_bus_hv_kv = vn_bus_kv[rep[th]] if nt else np.zeros(0)
        self._t_bus_lv_kv = vn_bus_kv[rep[tl]] if nt else np.zeros(0)
        self._t_sn_mva = _col(t, "sn_mva", np.nan)
        self._t_vk = _col(t, "vk_percent", np.nan)
        self._t_vkr = _col(t, "vkr_percent", np.nan)
        self._t_pfe_mw = _col(t, "pfe_kw", 0.0) * 1e-3
        self._t_i0 = _col(t, "i0_percent", 0.0)
        self._t_shift_deg = _col(t, "shift_degree", 0.0)
        self._t_parallel = _col(t, "parallel", 1.0)
        self._t_rr = _col(t, "leakage_resistance_ratio_hv", 0.5)
        self._t_xr = _col(t, "leakage_reactance_ratio_hv", 0.5)
        self._t_step_pct = _col(t, "tap_step_percent", np.nan)
        self._t_step_deg = _col(t, "tap_step_degree", np.nan)
        self._t_neutral = _col(t, "tap_neutral", np.nan)
        side = t.tap_side.astype(object).where(t.tap_side.notna(), "") if nt else pd.Series([])
        self._t_side = np.array([1.0 if s == "hv" else (-1.0 if s == "lv" else 0.0) for s in side])
        if "tap_changer_type" in t.columns:
            ctype = t.tap_changer_type.astype(object).where(t.tap_changer_type.notna(), "")
        else:
            ctype = pd.Series([""] * nt, dtype=object)
        code = []
        for c in ctype:
            if c in ("Ratio", "Symmetrical"):
                code.append(_TAP_RATIO)
            elif c == "Ideal":
                code.append(_TAP_IDEAL)
            elif c in ("", None, "None"):
                code.append(_TAP_NONE)
            else:
                raise PowerFlowError(f"tap_changer_type {c!r} is not supported")
        self._t_type = np.array(code, dtype=np.int64)
        active = t.in_service.to_numpy(bool) if nt else np.zeros(0, bool)
        if "tap_dependency_table" in t.columns:
            dep = t.tap_dependency_table.astype(object).where(t.tap_dependency_table.notna(), False)
            if np.any(dep.astype(bool).to_numpy() & active):
                raise PowerFlowError("trafos with a tap_dependency_table are not supported")
        for col in ("tap2_pos",):
            if col in t.columns and np.any(t[col].notna().to_numpy() & active):
                raise PowerFlowError("trafos with a second tap changer are not supported")
        self._t_has_mag = (self._t_pfe_mw != 0) | (self._t_i0 != 0)
        # angle that the tap adds (makes the ratio angle tap-dependent)
        self._t_tap_angle = (self._t_type == _TAP_IDEAL) | (
            (self._t_type == _TAP_RATIO) & (np.nan_to_num(self._t_step_deg) != 0)
        )
        self._t_tap_angle &= self._t_side != 0

    def _check_parallel_angles(self, members, elements, angles) -> None:
        for _, i in angles:
            if self._t_tap_angle[i]:
                raise PowerFlowError(
                    f"trafo {self.trafo_index[i]} is parallel to another branch and has a "
                    "tap-dependent phase angle; not supported"
                )
        ref = angles[0][0]
        others = [a for a, _ in angles[1:]]
        if any(elements[e][0] == "line" for e in members):
            others.append(0.0)
        for a in others:
            if abs(np.exp(1j * np.deg2rad(a - ref)) - 1) > 1e-9:
                raise PowerFlowError(
                    "parallel branches with different phase shifts are not supported"
                )

    def _trafo_two_ports(self, tap_pos: np.ndarray):
        """Per-candidate pandapower trafo model (pi after T conversion) -> a, Yff, Yft, Ytf, Ytt.

        Mirrors pandapower's ``_calc_tap_from_dataframe``, ``_calc_nominal_ratio_from_dataframe``,
        ``_calc_r_x_from_dataframe``, ``_calc_y_from_dataframe``, ``_wye_delta`` and
        ``makeYbus.branch_vectors``; arrays are (N, n_trafo).
        """
        N = tap_pos.shape[0]
        vnh = np.broadcast_to(self._t_vn_hv_kv, (N, len(self._t_vn_hv_kv))).copy()
        vnl = np.broadcast_to(self._t_vn_lv_kv, vnh.shape).copy()
        shift = np.broadcast_to(self._t_shift_deg, vnh.shape).copy()
        diff = np.nan_to_num(tap_pos - self._t_neutral)
        side = self._t_side
        ratio_type = self._t_type == _TAP_RATIO
        ideal_type = self._t_type == _TAP_IDEAL
        if ratio_type.any():
            step = np.nan_to_num(self._t_step_pct * diff / 100.0)
            ang = np.deg2rad(np.nan_to_num(self._t_step_deg))
            cos, sin = np.cos(ang), np.sin(ang)
            for s, vn in ((1.0, vnh), (-1.0, vnl)):
                m = ratio_type & (side == s)
                if not m.any():
                    continue
                u1 = vn[:, m]
                du = u1 * step[:, m]
                re = u1 + du * cos[m]
                im = du * sin[m]
                vn[:, m] = np.sqrt(re**2 + im**2)
                shift[:, m] += np.rad2deg(np.arctan(s * im / re))
        if ideal_type.any():
            deg_set = np.nan_to_num(self._t_step_deg) != 0
            for s in (1.0, -1.0):
                m = ideal_type & (side == s)
                if not m.any():
                    continue
                d = diff[:, m]
                by_deg = s * d * np.nan_to_num(self._t_step_deg[m])
                by_pct = s * 2 * np.rad2deg(np.arcsin(d * np.nan_to_num(self._t_step_pct[m]) / 200))
                shift[:, m] += np.where(deg_set[m], by_deg, by_pct)
        sn = self.sn_mva
        ratio = (vnh / vnl) / (self._t_bus_hv_kv / self._t_bus_lv_kv)
        tap_lv = (vnl / self._t_bus_lv_kv) ** 2 * sn
        z = self._t_vk / 100.0 / self._t_sn_mva * tap_lv
        r = self._t_vkr / 100.0 / self._t_sn_mva * tap_lv
        x = np.sign(z) * np.sqrt(z**2 - r**2)
        r = r / self._t_parallel
        x = x / self._t_parallel
        zs = r + 1j * x
        ys = 1.0 / zs
        yf = np.zeros_like(ys)
        yt = np.zeros_like(ys)
        m = self._t_has_mag
        if m.any():
            base_z = self._t_bus_lv_kv[m] ** 2 / sn
            vn_lv = self._t_vn_lv_kv[m]
            pfe = self._t_pfe_mw[m]
            ym = self._t_i0[m] / 100.0 * self._t_sn_mva[m]
            b_mva = -np.sqrt(np.maximum(ym**2 - pfe**2, 0.0))
            scale = base_z * self._t_parallel[m] / vn_lv**2 / (vnl[:, m] / vn_lv) ** 2
            ymag = (pfe + 1j * b_mva) * scale
            # T model -> pi (pandapower _wye_delta)
            za = r[:, m] * self._t_rr[m] + 1j * x[:, m] * self._t_xr[m]
            zb = r[:, m] * (1 - self._t_rr[m]) + 1j * x[:, m] * (1 - self._t_xr[m])
            zc = 1.0 / ymag
            zsum = za * zb + za * zc + zb * zc
            ys[:, m] = zc / zsum
            yf[:, m] = zb / zsum
            yt[:, m] = za / zsum
        a = ratio * np.exp(1j * np.deg2rad(shift))
        abs2 = a.real**2 + a.imag**2
        yff = (ys + yf) / abs2
        yft = -ys / np.conj(a)
        ytf = -ys / a
        ytt = ys + yt
        return a, yff, yft, ytf, ytt

    # ------------------------------------------------------------------ injections
    def base_injections(self, net: Any = None) -> Injections:
        """The present state of ``net`` (default: the compiled net) as one candidate."""
        net = self.net if net is None else net
        n_bus = len(self.bus_index)
        p = np.zeros(n_bus)
        q = np.zeros(n_bus)

        def add(table: str, sign: float) -> None:
            df = net[table] if table in net else None
            if df is None or not len(df):
                return
            on = df.in_service.to_numpy(bool)
            scaling = _col(df, "scaling", 1.0)
            cols = _pos(self.bus_index, df.bus.to_numpy())[on]
            np.add.at(p, cols, sign * (df.p_mw.to_numpy(np.float64) * scaling)[on])
            np.add.at(q, cols, sign * (df.q_mvar.to_numpy(np.float64) * scaling)[on])

        add("load", -1.0)
        add("sgen", 1.0)
        add("storage", -1.0)  # pandapower storage uses the load convention (p > 0 charges)
        sp = np.zeros(n_bus)
        sq = np.zeros(n_bus)
        sh = net.shunt
        if len(sh):
            on = sh.in_service.to_numpy(bool)
            cols = _pos(self.bus_index, sh.bus.to_numpy())
            vn_bus = self._shunt_vn_bus_kv[cols]
            vn_sh = _col(sh, "vn_kv", np.nan)
            vn_sh = np.where(np.isnan(vn_sh), net.bus.vn_kv.to_numpy(np.float64)[cols], vn_sh)
            k = _col(sh, "step", 1.0) * (vn_bus / vn_sh) ** 2
            np.add.at(sp, cols[on], (sh.p_mw.to_numpy(np.float64) * k)[on])
            np.add.at(sq, cols[on], (sh.q_mvar.to_numpy(np.float64) * k)[on])
        eg = net.ext_grid[net.ext_grid.in_service.astype(bool)]
        tap = (
            pd.to_numeric(net.trafo.tap_pos, errors="coerce").to_numpy(np.float64)
            if len(net.trafo)
            else np.zeros(0)
        )
        return Injections(
            p_mw=p[None, :],
            q_mvar=q[None, :],
            shunt_p_mw=sp[None, :],
            shunt_q_mvar=sq[None, :],
            tap_pos=tap[None, :],
            vm_ext_pu=np.array([float(eg.vm_pu.iloc[0])]),
        )

    # ------------------------------------------------------------------ solve
    def _check_shapes(self, inj: Injections) -> int:
        N = inj.n
        nb, nt = len(self.bus_index), len(self.trafo_index)
        expected = {
            "p_mw": (N, nb),
            "q_mvar": (N, nb),
            "shunt_p_mw": (N, nb),
            "shunt_q_mvar": (N, nb),
            "tap_pos": (N, nt),
            "vm_ext_pu": (N,),
        }
        for name, shape in expected.items():
            if getattr(inj, name).shape != shape:
                raise ValueError(
                    f"Injections.{name} has shape {getattr(inj, name).shape}, expected {shape}"
                )
        return N

    def _branches(self, tap_pos: np.ndarray):
        """Transformer-carrying branches per candidate: ratio a, series Ys, shunts y_p and y_c."""
        yff_c, _, ytf_c, ytt_c = (c[self._tb_cols] for c in self._br_const)
        a_t, tyff, tyft, tytf, tytt = self._trafo_two_ports(tap_pos)
        mf, mr = self._m_fwd, self._m_rev
        yff = yff_c + tyff @ mf + tytt @ mr
        ytf = ytf_c + tytf @ mf + tyft @ mr
        ytt = ytt_c + tytt @ mf + tyff @ mr
        a = a_t[:, self._lead_trafo]
        a = np.where(self._lead_fwd, a, 1.0 / a)
        ys = -a * ytf
        yp = yff - ys / (a.real**2 + a.imag**2)
        yc = ytt - ys
        return a, ys, yp, yc

    # length: one batched solve: set-up, kernel call, and the result arrays it returns
    def solve(self, inj: Injections) -> BatchResult:
        """Solve every candidate of ``inj``; never raises on a non-convergent candidate."""
        N = self._check_shapes(inj)
        n = self.n_nodes
        sn = self.sn_mva
        tb = self._tb_cols
        v0 = inj.vm_ext_pu * np.exp(1j * self._va_ext_rad)
        s_node = self._aggregate(inj.p_mw + 1j * inj.q_mvar) / sn  # injected, (N, n + 1)
        y_bus = self._aggregate(inj.shunt_p_mw - 1j * inj.shunt_q_mvar) / sn
        y_node = y_bus + self._y_node_const
        if tb.size:
            a_tb, ys_tb, yp, yc = self._branches(inj.tap_pos)
            for cols, pos in self._tb_parent_layers:
                y_node[:, cols] += yp[:, pos]
            y_node[:, tb] += yc
            z_tb = 1.0 / ys_tb
        else:
            a_tb = z_tb = np.ones((N, 0), dtype=np.complex128)

        v = np.full((N, n + 1), complex(np.nan, np.nan))
        s_slack = np.full(N, complex(np.nan, np.nan))
        conv = np.zeros(N, dtype=np.bool_)
        n_iter = np.zeros(N, dtype=np.int64)
        lo, hi = _VM_BOUNDS_PU
        with np.errstate(all="ignore"):
            _sweep_kernel(
                self._parent,
                self._tb_pos,
                self._zeta_const,
                np.ascontiguousarray(a_tb),
                np.ascontiguousarray(z_tb),
                v0.astype(np.complex128),
                s_node,
                y_node,
                self.tol_pu**2,
                self.max_iter,
                lo**2,
                hi**2,
                _CHECK_EVERY,
                v,
                s_slack,
                conv,
                n_iter,
            )
            # losses by power balance: what the slack and the injections supply and the bus
            # shunts do not absorb is lost in lines and transformers (their shunts included)
            abs2_v = v.real**2 + v.imag**2
            s_loss = s_slack + s_node.sum(axis=1) - (np.conj(y_bus) * abs2_v).sum(axis=1)

        n_bus, n_line = len(self.bus_index), len(self.line_index)
        vm = np.full((N, n_bus), np.nan)
        va = np.full((N, n_bus), np.nan)
        i_ka = np.zeros((N, n_line))
        loading = np.zeros((N, n_line))
        _results_kernel(
            v,
            conv,
            self._bus_col,
            self._line_live,
            self._line_from,
            self._line_to,
            self._line_yff[self._line_live],
            self._line_yft[self._line_live],
            self._line_ibase_from_ka,
            self._line_ibase_to_ka,
            self._line_imax_ka,
            vm,
            va,
            i_ka,
            loading,
        )
        i_ka[:, self._line_nan] = np.nan
        loading[:, self._line_nan] = np.nan
        return BatchResult(
            vm_pu=vm,
            va_degree=va,
            p_loss_mw=s_loss.real * sn,
            q_loss_mvar=s_loss.imag * sn,
            p_slack_mw=s_slack.real * sn,
            q_slack_mvar=s_slack.imag * sn,
            i_ka=i_ka,
            loading_percent=loading,
            converged=conv,
            iterations=int(n_iter.max(initial=0)),
            n_iter=n_iter,
        )


@numba.njit(cache=True, nogil=True, inline="always")
def _branch_currents(parent, sc, yh, u, b):  # pragma: no cover - compiled
    """Node currents drawn at voltages ``u`` (constant power ``sc``, constant admittance ``yh``,
    root-referred) summed over each subtree by a backward sweep: ``b[k]`` is the current of the
    branch into node k. Inlined into :func:`_sweep_kernel` at compile time."""
    n = parent.shape[0]
    for k in range(n):
        uk = u[k]
        b[k] = sc[k] * uk / (uk.real * uk.real + uk.imag * uk.imag) + yh[k] * uk
    for k in range(n - 1, -1, -1):
        p = parent[k]
        if p < n:
            b[p] += b[k]


# length: a numba kernel; splitting it would cost calls inside the sweep's inner loop
@numba.njit(cache=True, nogil=True)
def _sweep_kernel(
    parent,
    tb_pos,
    zeta_const,
    a_tb,
    z_tb,
    v0,
    s_node,
    y_node,
    tol2,
    max_iter,
    vm2_lo,
    vm2_hi,
    check,
    v_out,
    s_slack,
    conv,
    n_iter,
):  # pragma: no cover - compiled; exercised through BatchedPowerFlow.solve
    """Backward/forward sweeps of every candidate (row); fills the last four arguments.

    Nodes are in breadth-first order and ``parent[k]`` is the parent of node k (``n`` = slack),
    so a reverse pass accumulates subtree sums (``J @ T.T``, the BIBC of [TENG]) and a forward pass
    path sums (``(zeta * B) @ T``, BCBV), each O(n). Branch k has ratio ``a_tb[c, tb_pos[k]]``
    and impedance ``z_tb[c, tb_pos[k]]`` when it carries a transformer, else ratio 1 and
    impedance ``zeta_const[k]``. ``s_node``/``y_node`` (columns ``0..n``, slack last) are the
    per-unit constant-power injection and total constant admittance per node. Rows that do not
    converge keep NaN in ``v_out`` and ``s_slack``.
    """
    N = s_node.shape[0]
    n = parent.shape[0]
    tau = np.empty(n, dtype=np.complex128)
    inv_abs2_tau = np.empty(n, dtype=np.float64)
    zeta = np.empty(n, dtype=np.complex128)
    yh = np.empty(n, dtype=np.complex128)
    sc = np.empty(n, dtype=np.complex128)
    b = np.empty(n, dtype=np.complex128)
    u = np.empty(n, dtype=np.complex128)
    for c in range(N):
        slack = v0[c]
        # per-candidate ratios: tau = product of ratios root -> node; referred parameters
        for k in range(n):
            p = parent[k]
            t = 1.0 + 0.0j if p == n else tau[p]
            j = tb_pos[k]
            if j >= 0:
                t = t * a_tb[c, j]
                z = z_tb[c, j]
            else:
                z = zeta_const[k]
            tau[k] = t
            a2 = t.real * t.real + t.imag * t.imag
            inv_abs2_tau[k] = 1.0 / a2
            zeta[k] = z * a2
            yh[k] = y_node[c, k] / a2
            sc[k] = -np.conj(s_node[c, k])  # conj of the power drawn
            u[k] = slack
        dv_ref = np.inf
        ok = False
        for it in range(1, max_iter + 1):
            _branch_currents(parent, sc, yh, u, b)
            # forward sweep: voltage = parent voltage - branch drop
            dv2 = 0.0
            finite = True
            vmin2 = np.inf
            vmax2 = 0.0
            for k in range(n):
                p = parent[k]
                up = slack if p == n else u[p]
                un = up - zeta[k] * b[k]
                d = un - u[k]
                e = (d.real * d.real + d.imag * d.imag) * inv_abs2_tau[k]
                if e > dv2:
                    dv2 = e
                elif e != e:
                    finite = False
                u[k] = un
                w = (un.real * un.real + un.imag * un.imag) * inv_abs2_tau[k]
                vmin2 = min(vmin2, w)
                vmax2 = max(vmax2, w)
            n_iter[c] = it
            if finite and dv2 < tol2:
                ok = True
                break
            if not finite or not dv2 < np.inf or vmin2 < vm2_lo or vmax2 > vm2_hi:
                break
            if it % check == 0:
                if it >= 2 * check and dv2 >= dv_ref:
                    break  # the update is not contracting: diverging or oscillating
                dv_ref = dv2
        if not ok:
            continue
        conv[c] = True
        # slack supply from the converged voltages: currents into the root's children
        # (root-referred current = current at the slack side) plus the root's own elements
        i_root = y_node[c, n] * slack
        _branch_currents(parent, sc, yh, u, b)
        for k in range(n - 1, -1, -1):
            if parent[k] >= n:
                i_root += b[k]
        s_slack[c] = slack * np.conj(i_root) - s_node[c, n]
        for k in range(n):
            v_out[c, k] = u[k] / tau[k]
        v_out[c, n] = slack


@numba.njit(cache=True, nogil=True)
def _results_kernel(
    v,
    conv,
    bus_col,
    line_live,
    line_from,
    line_to,
    yff,
    yft,
    ibase_f,
    ibase_t,
    imax,
    vm,
    va,
    i_ka,
    loading,
):  # pragma: no cover - compiled; exercised through BatchedPowerFlow.solve
    """Bus magnitudes/angles and line currents/loadings (pandapower's definitions) per row."""
    N = v.shape[0]
    rad2deg = 180.0 / np.pi
    for c in range(N):
        if not conv[c]:
            for i in range(i_ka.shape[1]):
                i_ka[c, i] = np.nan
                loading[c, i] = np.nan
            continue
        for i in range(bus_col.shape[0]):
            col = bus_col[i]
            if col >= 0:
                x = v[c, col]
                vm[c, i] = np.abs(x)
                va[c, i] = np.arctan2(x.imag, x.real) * rad2deg
        for m in range(line_live.shape[0]):
            vf = v[c, line_from[m]]
            vt = v[c, line_to[m]]
            i_f = np.abs(yff[m] * vf + yft[m] * vt) * ibase_f[m]
            i_t = np.abs(yft[m] * vf + yff[m] * vt) * ibase_t[m]
            im = max(i_f, i_t)
            i_ka[c, line_live[m]] = im
            loading[c, line_live[m]] = 100.0 * im / imax[m] if imax[m] != 0 else np.inf
