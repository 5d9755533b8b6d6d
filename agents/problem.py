"""The volt/var problem of one controller at one control step, as a pymoo problem.

Formulation of [CVC] §3 ("Cluster Voltage Control of Active Distribution Networks Considering
Power Deficit and Resource Allocation"; [EVEC] uses the same three objectives):

decision vector ``x`` (one entry per *active lever*, see :class:`Lever`)
    continuous: SVC ``q_mvar``; PV / wind inverter ``q_mvar`` within ``sqrt(S² − P²)`` at the
    interval's highest forecast P; ESS and exchange-station battery ``p_mw`` (load convention,
    > 0 charges) within power and the energy the state of charge leaves for the interval; DG
    ``p_mw``. Integer: capacitor ``step``, OLTC / regulator ``tap_pos`` — rounded by the
    optimizer's repair and again at evaluation.
objectives (all minimized, evaluated for the whole population in one batched power flow)
    ``f1`` voltage deviation over the controller's buses: ``max_i |V_i − 1|`` (default) or
    ``Σ_i (V_i − 1)²`` (``voltage_objective = "sumsq"``), p.u.;
    ``f2`` active losses of the (sub-)network, MW;
    ``f3`` cost of the interval, currency: energy bought at the slack (the upstream boundary for
    a cluster) at the time-of-use price, DG energy at its cost, storage wear per MWh moved, the
    stored energy's change valued at the day's mean price (so that charging when cheap and
    discharging when dear pays, instead of emptying every battery at the first interval), and a
    cost per tap operation and per capacitor switching.
constraints (``G ≤ 0``)
    ``g1`` voltage band ``max_i max(vmin − V_i, V_i − vmax)``; ``g2`` line current
    ``max_l (loading_l − cap_l) / 100`` with
    ``cap_l = max(100 %, loading_l at the setpoints in force)``: a line the forecast load alone
    overloads (no decision can fix that) may not get worse, but does not make every candidate
    infeasible — otherwise the least-violation search trades the voltage band away for a few percent
    of unavoidable overload (with a plain ``loading ≤ 100 %`` bound on ieee123 at its 0.4 kA
    placeholder rating, it drives the taps to +10 for 1 % less current). Device limits, energy
    bounds and the per-day switching budgets are the variable bounds: a tap may move at most the
    operations left today, a capacitor whose budget is spent is frozen at its step. So no candidate,
    chosen or not, can break them.

A candidate whose power flow does not converge gets ``F = G = 1e3``.

Children (value tables, dynamic programming on the tree of clusters): a cluster may be given,
per downstream tie, the :class:`ValueTable` of the child cluster behind it — what the child's
decision yields as a function of the voltage at the tie's bus. Each candidate's predicted tie
voltage ``V_b`` then folds the child in: ``f1 = max(f1, deviation(V_b))`` (``+`` for
``sumsq``), ``f2 += losses(V_b)``, ``f3 += cost(V_b)``, ``g1 = max(g1, violation(V_b))``, the
table interpolated linearly between its voltages and held at its ends. The child's draw through
the tie stays the constant P/Q the caller put into the operating point.

Couplings (consensus ADMM on the tree of clusters, :mod:`clustersim.agents.admm`): a
:class:`Coupling` adds ``(ρ/2)(y − z̄ + u)²`` to each of ``f1``, ``f2``, ``f3``, ``y`` being the
candidate's copy of one of a tie's coupling quantities. Of the boundary voltage: the voltage it
predicts at the tie bus (parent), or the upstream boundary voltage it assumes, a decision through
:func:`boundary_lever` (child). Of the tie's P or Q (times a scale, in voltage units): the draw
it assumes the child takes, a decision through :func:`tie_draw_lever` (parent), or the draw its
power flow predicts at its slack (child).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pymoo.core.problem import Problem

from clustersim.agents.network import ClusterNetwork
from clustersim.sim import resources as rsc
from clustersim.sim.powerflow import Injections

__all__ = [
    "ACTIVE_KINDS",
    "BOUNDARY_KIND",
    "REACTIVE_KINDS",
    "CostSettings",
    "Coupling",
    "Lever",
    "ValueTable",
    "VoltVarProblem",
    "boundary_lever",
    "levers",
    "tie_draw_lever",
]

ACTIVE_KINDS = frozenset({"dg", "ess", "exchange"})
"""device kinds an ``active-only`` controller may use (active power: DG and storage)"""
REACTIVE_KINDS = frozenset({"svc", "capacitor", "oltc", "regulator", "pv", "wind"})
"""device kinds a ``reactive-only`` controller may use (SVC, capacitors, taps, inverter q)"""
_FAIL = 1e3
BOUNDARY_KIND = "boundary"
"""kind of the virtual lever that makes a cluster's upstream boundary voltage a decision
(consensus ADMM, :func:`boundary_lever`): no device, never a setpoint"""


@dataclass(frozen=True)
class Lever:
    """One controllable quantity of one device as the sub-network sees it.

    ``target`` says which column of the :class:`Injections` the value moves: ``q``/``p`` (bus
    injection, generator convention, times ``coef``), ``shunt_q`` (absorbed Mvar per step),
    ``tap`` (transformer tap position) or ``vm_ext`` (slack voltage ``offset + coef·x``).
    """

    device: str
    quantity: str
    kind: str
    target: Literal["p", "q", "shunt_q", "tap", "vm_ext"]
    col: int
    coef: float
    offset: float
    lower: float
    upper: float
    integer: bool
    active: bool


def boundary_lever(lower_pu: float, upper_pu: float) -> Lever:
    """A virtual lever that sets the sub-network's slack (upstream boundary) voltage, p.u.:
    the child's own copy of the tie voltage in consensus ADMM."""
    return Lever(
        device="",
        quantity="vm_pu",
        kind=BOUNDARY_KIND,
        target="vm_ext",
        col=0,
        coef=1.0,
        offset=0.0,
        lower=float(lower_pu),
        upper=float(upper_pu),
        integer=False,
        active=True,
    )


def tie_draw_lever(
    tie: str, col: int, quantity: Literal["p", "q"], lower: float, upper: float
) -> Lever:
    """A virtual lever that sets the draw (MW or Mvar, load convention) of downstream tie ``tie``
    (its label, kept as the lever's ``device``) at sub-network bus column ``col``: a parent's own
    copy of its child's P or Q in consensus ADMM."""
    return Lever(
        device=tie,
        quantity="p_mw" if quantity == "p" else "q_mvar",
        kind=BOUNDARY_KIND,
        target=quantity,
        col=int(col),
        coef=-1.0,
        offset=0.0,
        lower=float(lower),
        upper=float(upper),
        integer=False,
        active=True,
    )


@dataclass(frozen=True)
class Coupling:
    """One augmented-Lagrangian term of consensus ADMM on a tie, in the scaled form of [ADMM]
    §3.1.1: ``(ρ/2)·(y − target)²`` with ``target = z̄ − u`` (consensus value minus scaled dual),
    ``y`` the candidate's own copy of the tie's ``quantity``:

    - ``"vm"``: the (bias-corrected) voltage of sub-network bus column ``col`` — the tie bus for a
      parent, the slack bus for a child;
    - ``"p"``/``"q"`` with ``lever`` set (parent): decision variable ``lever``, the draw it assumes;
    - ``"p"``/``"q"`` without ``lever`` (child): the power its flow predicts entering at the slack.

    A P (Q) copy is the draw in MW (Mvar) times ``scale``, the unit its ``target`` is in."""

    col: int
    target_pu: float
    rho: float
    quantity: Literal["vm", "p", "q"] = "vm"
    lever: int | None = None
    scale: float = 1.0

    def copy(self, X: np.ndarray, res: Any, vm_bias: np.ndarray) -> np.ndarray:
        """This side's copy for each candidate (row of ``X``, power-flow result ``res``)."""
        if self.quantity == "vm":
            return np.asarray(res.vm_pu[:, self.col] + vm_bias[self.col])
        if self.lever is not None:
            return X[:, self.lever] * self.scale
        flow = res.p_slack_mw if self.quantity == "p" else res.q_slack_mvar
        return np.asarray(flow) * self.scale


@dataclass(frozen=True)
class CostSettings:
    """Operating-cost parameters of ``f3`` (currency of the price profile)."""

    tap_operation: float = 1.0
    capacitor_switching: float = 0.5
    storage_per_mwh: float = 5.0


def _bus_col(cluster: ClusterNetwork, members: set[int], where: tuple[str, int]) -> int | None:
    """Column of the bus of the element at ``where`` (table, row), ``None`` when the element is
    not in the sub-network or its bus is not one of its ``members``."""
    table, row = where
    net = cluster.subnet
    bus = int(net[table].at[row, "bus"]) if row in net[table].index else None
    if bus is None or bus not in members:
        return None
    return cluster.col_of_bus(bus)


def _shunt_q_per_step(net: Any, row: int) -> float:
    """Mvar a capacitor step absorbs at 1 p.u. of its bus (rated at the shunt's own ``vn_kv``)."""
    sh = net.shunt.loc[row]
    vn_sh = float(sh.vn_kv) if "vn_kv" in sh and np.isfinite(sh.vn_kv) else math.nan
    vn_bus = float(net.bus.at[int(sh.bus), "vn_kv"])
    ratio = (vn_bus / vn_sh) ** 2 if np.isfinite(vn_sh) and vn_sh > 0 else 1.0
    return float(sh.q_mvar) * ratio


def levers(
    cluster: ClusterNetwork,
    resources: rsc.ResourceSet,
    where: Mapping[str, tuple[str, int]],
    *,
    allowed_kinds: Iterable[str],
) -> list[Lever]:
    """Every controllable quantity inside the sub-network; ``active`` for those this controller
    decides (its own devices of the allowed kinds), the rest are held at the setpoints in force.

    Devices at the upstream boundary bus (the sub-network's slack) are left out: they cannot move
    any voltage of the sub-network."""
    net = cluster.subnet
    kinds = set(allowed_kinds)
    members = set(cluster.buses)
    out: list[Lever] = []

    def bus_col(name: str) -> int | None:
        return _bus_col(cluster, members, where[name])

    def add(
        d: Any,
        quantity: str,
        target: Literal["p", "q", "shunt_q", "tap", "vm_ext"],
        col: int,
        lower: float,
        upper: float,
        *,
        key: str | None = None,
        coef: float = 1.0,
        offset: float = 0.0,
        integer: bool = False,
        owned: bool = True,
    ) -> None:
        name, active = key or d.name, d.kind in kinds and owned
        out.append(
            Lever(name, quantity, d.kind, target, col, coef, offset, lower, upper, integer, active)
        )

    for d in resources.devices:
        if isinstance(d, rsc.PV):  # and Wind
            c = bus_col(d.name)
            if c is not None:
                add(d, "q_mvar", "q", c, -d.s_rated_mva, d.s_rated_mva)
        elif isinstance(d, rsc.SVC):
            c = bus_col(d.name)
            if c is not None:
                add(d, "q_mvar", "q", c, d.q_min_mvar, d.q_max_mvar)
        elif isinstance(d, rsc.DG):
            c = bus_col(d.name)
            if c is not None:
                add(d, "p_mw", "p", c, d.p_min_mw, d.p_max_mw)
                if d.q_max_mvar > d.q_min_mvar:
                    add(d, "q_mvar", "q", c, d.q_min_mvar, d.q_max_mvar)
        elif isinstance(d, rsc.ESS | rsc.ExchangeStation):
            key = d.name if isinstance(d, rsc.ESS) else f"{d.name}:battery"
            c = bus_col(key)
            if c is not None:
                add(d, "p_mw", "p", c, -d.p_max_mw, d.p_max_mw, key=key, coef=-1.0)
        elif isinstance(d, rsc.CapacitorBank):
            c = bus_col(d.name)
            if c is not None:
                q_step = _shunt_q_per_step(net, where[d.name][1])
                add(d, "step", "shunt_q", c, 0.0, float(d.steps), coef=q_step, integer=True)
        elif isinstance(d, rsc.OLTC | rsc.LineRegulator):
            lo, hi = float(d.tap_min), float(d.tap_max)
            table, row = where[d.name]
            if table == "trafo":
                if row in net.trafo.index:
                    c = int(cluster.pf.trafo_index.get_loc(row))
                    owned = row in cluster.owned_trafos
                    add(d, "tap_pos", "tap", c, lo, hi, integer=True, owned=owned)
            elif cluster.contains_slack and isinstance(d, rsc.OLTC):
                step = d.tap_step_percent / 100.0
                add(d, "tap_pos", "vm_ext", 0, lo, hi, coef=step, offset=d.vm_set_pu, integer=True)
    return out


def apply_levers(inj: Injections, levers_: list[Lever], X: np.ndarray) -> Injections:
    """Candidates ``X`` (n × len(levers_)) on top of a single base operating point ``inj``."""
    n = X.shape[0]
    out = inj.repeat(n) if inj.n == 1 else inj.copy()
    for j, lv in enumerate(levers_):
        x = np.rint(X[:, j]) if lv.integer else X[:, j]
        if lv.target == "q":
            out.q_mvar[:, lv.col] += lv.coef * x
        elif lv.target == "p":
            out.p_mw[:, lv.col] += lv.coef * x
        elif lv.target == "shunt_q":
            out.shunt_q_mvar[:, lv.col] += lv.coef * x
        elif lv.target == "tap":
            out.tap_pos[:, lv.col] = x
        else:  # vm_ext
            out.vm_ext_pu[:] = lv.offset + lv.coef * x
    return out


@dataclass(frozen=True)
class ValueTable:
    """A cluster's decision as a function of the voltage at its upstream boundary bus: at each
    voltage ``vm_pu`` (increasing), the objectives and the voltage constraint of the candidate
    it would choose there (its children folded in), and the P/Q it would draw through its tie."""

    vm_pu: np.ndarray
    violation_pu: np.ndarray
    """``g1`` of the chosen candidate: > 0 is a voltage-band violation, ≤ 0 a margin, p.u."""
    deviation_pu: np.ndarray
    losses_mw: np.ndarray
    cost: np.ndarray
    p_mw: np.ndarray
    q_mvar: np.ndarray

    def at(self, vm_pu: np.ndarray | float, name: str) -> np.ndarray:
        """Column ``name`` at voltages ``vm_pu``, linear between the table's voltages and held
        at its ends."""
        return np.interp(vm_pu, self.vm_pu, getattr(self, name))


class VoltVarProblem(Problem):
    """pymoo problem of one controller at one control step (see the module docstring).

    Parameters
    ----------
    cluster:
        the controller's sub-network.
    base:
        operating point of the interval with every lever at zero (one candidate).
    active, fixed:
        the levers decided here, and the others with their values in force.
    xl, xu:
        bounds of the active levers for this step (device limits, SOC window, budgets).
    x_now:
        the active levers' values in force (switching is counted against them).
    price_per_mwh, price_ref_per_mwh:
        the interval's (forecast) tariff and the value of stored energy.
    dt_h:
        length of the control interval, hours.
    storage_eff:
        one-way efficiency of each active storage lever (by lever position, NaN otherwise).
    dg_cost_per_mwh:
        energy cost per active DG ``p_mw`` lever (0 otherwise).
    vm_bias_pu:
        measured minus modelled voltage per sub-network bus (adaptive correction; zeros = off).
    """

    def __init__(
        self,
        cluster: ClusterNetwork,
        base: Injections,
        active: list[Lever],
        fixed: list[tuple[Lever, float]],
        *,
        xl: np.ndarray,
        xu: np.ndarray,
        x_now: np.ndarray,
        price_per_mwh: float,
        price_ref_per_mwh: float,
        dt_h: float,
        storage_eff: np.ndarray,
        dg_cost_per_mwh: np.ndarray,
        vm_min_pu: float = 0.95,
        vm_max_pu: float = 1.05,
        voltage_objective: Literal["max", "sumsq"] = "max",
        costs: CostSettings | None = None,
        vm_bias_pu: np.ndarray | None = None,
        penalty: bool = False,
        children: Iterable[tuple[int, ValueTable]] = (),
        couplings: Iterable[Coupling] = (),
    ) -> None:
        self.cluster = cluster
        self.active = active
        self.fixed = fixed
        self.x_now = np.asarray(x_now, dtype=float)
        self.price = float(price_per_mwh)
        self.price_ref = float(price_ref_per_mwh)
        self.dt_h = float(dt_h)
        self.storage_eff = np.asarray(storage_eff, dtype=float)
        self.dg_cost = np.asarray(dg_cost_per_mwh, dtype=float)
        self.vm_min = float(vm_min_pu)
        self.vm_max = float(vm_max_pu)
        self.voltage_objective = voltage_objective
        self.costs = costs or CostSettings()
        self.penalty = bool(penalty)
        self.children = list(children)
        """(sub-network bus column of the tie's bus, the child's table) per child (module doc)"""
        self.couplings = list(couplings)
        """consensus-ADMM terms added to every objective (module doc)"""
        self.integer_mask = np.array([lv.integer for lv in active], dtype=bool)
        nb = len(cluster.pf.bus_index)
        self.vm_bias = np.zeros(nb) if vm_bias_pu is None else np.asarray(vm_bias_pu, float)
        if fixed:
            fx = np.array([[v for _, v in fixed]])
            self.base = apply_levers(base, [lv for lv, _ in fixed], fx)
        else:
            self.base = base
        self.n_evaluations = 0
        self.n_calls = 0
        now = cluster.pf.solve(apply_levers(self.base, active, self.x_now[None, :]))
        cap = now.loading_percent[0] if now.loading_percent.shape[1] else np.zeros(0)
        self.loading_cap_percent = np.maximum(100.0, np.where(np.isfinite(cap), cap, 100.0))
        super().__init__(
            n_var=len(active),
            n_obj=3,
            n_ieq_constr=0 if penalty else 2,
            xl=np.asarray(xl, dtype=float),
            xu=np.asarray(xu, dtype=float),
        )

    # ------------------------------------------------------------------ evaluation
    def objectives(
        self, X: np.ndarray, vm_upstream_pu: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, Any]:
        """``(F, G, result)`` of candidates ``X`` (n × n_var); no penalty applied.
        ``vm_upstream_pu``: a slack (upstream boundary) voltage per candidate instead of the
        operating point's, for a cluster's value table."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        X = np.where(self.integer_mask, np.rint(X), X)
        inj = apply_levers(self.base, self.active, X)
        if vm_upstream_pu is not None:
            inj.vm_ext_pu[:] = vm_upstream_pu
        res = self.cluster.pf.solve(inj)
        self.n_evaluations += X.shape[0]
        self.n_calls += 1
        cols = self.cluster.objective_cols
        v = res.vm_pu[:, cols] + self.vm_bias[cols]
        dev = v - 1.0
        with np.errstate(invalid="ignore"):
            if self.voltage_objective == "sumsq":
                f1 = np.sum(dev**2, axis=1)
            else:
                f1 = np.max(np.abs(dev), axis=1)
            f2 = res.p_loss_mw
            f3 = self.price * res.p_slack_mw * self.dt_h + self._device_cost(X)
            g1 = np.maximum(np.max(self.vm_min - v, axis=1), np.max(v - self.vm_max, axis=1))
            if res.loading_percent.shape[1]:
                g2 = np.nanmax(res.loading_percent - self.loading_cap_percent, axis=1) / 100.0
            else:
                g2 = np.full(X.shape[0], -1.0)
            for col, table in self.children:
                vb = res.vm_pu[:, col] + self.vm_bias[col]
                dev_c = table.at(vb, "deviation_pu")
                f1 = f1 + dev_c if self.voltage_objective == "sumsq" else np.maximum(f1, dev_c)
                f2 = f2 + table.at(vb, "losses_mw")
                f3 = f3 + table.at(vb, "cost")
                g1 = np.maximum(g1, table.at(vb, "violation_pu"))
        F = np.column_stack([f1, f2, f3])
        for c in self.couplings:
            y = c.copy(X, res, self.vm_bias)
            F += (0.5 * c.rho * (y - c.target_pu) ** 2)[:, None]
        G = np.column_stack([g1, g2])
        bad = ~res.converged | ~np.isfinite(F).all(axis=1) | ~np.isfinite(G).all(axis=1)
        F[bad] = _FAIL
        G[bad] = _FAIL
        return F, G, res

    def _device_cost(self, X: np.ndarray) -> np.ndarray:
        cost = np.zeros(X.shape[0])
        c = self.costs
        for j, lv in enumerate(self.active):
            x = X[:, j]
            if lv.kind in ("ess", "exchange"):
                eff = self.storage_eff[j]
                de = np.where(x > 0, x * eff, x / eff) * self.dt_h
                cost += -self.price_ref * de + c.storage_per_mwh * np.abs(x) * self.dt_h
            elif lv.kind == "dg" and lv.quantity == "p_mw":
                cost += self.dg_cost[j] * x * self.dt_h
            elif lv.quantity == "tap_pos":
                cost += c.tap_operation * np.abs(x - self.x_now[j])
            elif lv.quantity == "step":
                cost += c.capacitor_switching * (np.abs(x - self.x_now[j]) > 0.5)
        return cost

    def _evaluate(self, X: np.ndarray, out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        F, G, _ = self.objectives(X)
        if self.penalty:
            cv = np.sum(np.maximum(G, 0.0), axis=1)
            out["F"] = F + _FAIL * cv[:, None]
        else:
            out["F"] = F
            out["G"] = G

    # ------------------------------------------------------------------ helpers
    def clip(self, X: np.ndarray) -> np.ndarray:
        """Project candidates into the bounds, integers rounded."""
        X = np.clip(np.atleast_2d(np.asarray(X, dtype=float)), self.xl, self.xu)
        return np.where(
            self.integer_mask,
            np.clip(np.rint(X), np.ceil(self.xl - 1e-9), np.floor(self.xu + 1e-9)),
            X,
        )

    def decode(self, x: np.ndarray) -> dict[str, dict[str, float]]:
        """A decision vector as plant setpoints (device → {quantity: value})."""
        x = self.clip(x)[0]
        out: dict[str, dict[str, float]] = {}
        for lv, v in zip(self.active, x, strict=True):
            if lv.kind != BOUNDARY_KIND:
                out.setdefault(lv.device, {})[lv.quantity] = float(v)
        return out
