"""Optimizing controllers: the central agent and the cluster agents' decision core.

One :class:`GridModel` per process holds the controllers' copy of the grid and the forecast; one
:class:`Controller` per agent (the whole network for ``centralized``, one per cluster for
``clustered``, ``active-only`` and ``reactive-only``) turns a plant :class:`Measurement` into
setpoints at each control interval:

1. operating point of the coming interval: the forecast averaged over the interval's plant
   steps, written into the model net; every controllable device zeroed, so that its value is a
   pure decision (``GridModel.zero_injections``);
2. the sub-network's boundary values from the measurement (upstream voltage, downstream P/Q,
   :mod:`clustersim.agents.network`), devices of other controllers and of other kinds held at the
   setpoints in force;
3. bounds of this step (PV capability at the highest forecast P, the energy the SOC leaves for
   the interval, the switching operations left today), optional adaptive correction ([CVC] §3.2):
   the measured-minus-modelled voltage at the last plant step, times ``correction_gain``, is added
   to every candidate's predicted voltages;
4. an :class:`~clustersim.agents.optimizer.Optimizer` stepped to the end (or, in an agent on the
   wire, :mod:`clustersim.agents.node`, stepped between messages) and its compromise decoded into
   setpoints.

The split into :meth:`Controller.prepare` (problem and optimizer) and :meth:`Controller.finish`
(decision) is what lets an agent on the wire drive the same code between messages.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

import numpy as np

from clustersim.agents.network import ClusterNetwork, assign_buses, model_net, radial_tree
from clustersim.agents.optimizer import Optimizer, OptResult, choose
from clustersim.agents.problem import (
    ACTIVE_KINDS,
    BOUNDARY_KIND,
    REACTIVE_KINDS,
    CostSettings,
    Coupling,
    Lever,
    ValueTable,
    VoltVarProblem,
    apply_levers,
    boundary_lever,
    levers,
)
from clustersim.sim import resources
from clustersim.sim.plant import Measurement, Plant
from clustersim.sim.powerflow import BatchedPowerFlow, BatchResult, Injections

__all__ = [
    "CLUSTER_MODES",
    "MODES",
    "OPTIMIZING_MODES",
    "ControlSettings",
    "Controller",
    "CouplingSpec",
    "Decision",
    "GridModel",
    "Mode",
    "allowed_kinds",
]

Mode = Literal["none", "local", "centralized", "clustered", "active-only", "reactive-only"]
"""the control modes of ``[control] mode``"""
MODES: tuple[str, ...] = get_args(Mode)
OPTIMIZING_MODES: tuple[str, ...] = ("centralized", "clustered", "active-only", "reactive-only")
"""modes whose agents solve an optimization problem (run as a co-simulation over a transport)"""
CLUSTER_MODES: tuple[str, ...] = ("clustered", "active-only", "reactive-only")
"""modes with one agent per cluster of the partition stage (they need connected clusters)"""
ALL_KINDS = ACTIVE_KINDS | REACTIVE_KINDS


def allowed_kinds(mode: str) -> frozenset[str]:
    """Device kinds a control mode may move."""
    if mode == "active-only":
        return ACTIVE_KINDS
    if mode == "reactive-only":
        return REACTIVE_KINDS
    return ALL_KINDS


@dataclass(frozen=True)
class ControlSettings:
    """What a controller needs from the scenario's ``[control]`` and ``[run]`` tables."""

    interval_s: int = 900
    optimizer: str = "nsga2"
    pop_size: int = 40
    generations: int = 40
    patience: int = 8
    evaluations_per_variable: int = 0
    """> 0: a problem's generations are capped at ``ceil(this × n_var / pop_size)``"""
    compromise: str = "fuzzy"
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    voltage_objective: Literal["max", "sumsq"] = "max"
    correction_gain: float = 0.0
    warm_start: bool = True
    vm_min_pu: float = 0.95
    vm_max_pu: float = 1.05
    costs: CostSettings = field(default_factory=CostSettings)


class GridModel:
    """The controllers' model: a copy of the plant's net, its forecast and a batched power flow.

    Built from a :class:`Plant` (which is not stepped by it) so that an agent process can build
    the same model from the scenario alone.
    """

    def __init__(self, plant: Plant) -> None:
        self.net = model_net(plant.net)
        self.resources: resources.ResourceSet = plant.resources
        self.where = dict(plant.where)
        self.plant_step_s = plant.plant_step_s
        self.n_steps = plant.n_steps
        self.start_step = plant.start_step
        """the profiles' plant step at which the run starts (:class:`Plant`)"""
        self.bus_labels: tuple[str, ...] = tuple(plant.bus_labels)
        self.frames = plant.profile_frames("forecast")
        fc = plant.profiles.forecast
        self._price_all = (
            fc["price_per_mwh"].to_numpy(dtype=float)
            if "price_per_mwh" in fc.columns
            else np.zeros(plant.start_step + plant.n_steps)
        )
        self.price_per_mwh = self._price_all[plant.start_step : plant.start_step + plant.n_steps]
        self.tree = radial_tree(self.net)
        self.full_pf = BatchedPowerFlow(self.net)
        self._controlled_sgen = [
            self.where[d.name][1]
            for d in self.resources.devices
            if isinstance(d, resources.PV | resources.SVC | resources.DG)
        ]
        self._storage_rows = [
            self.where[d.name if isinstance(d, resources.ESS) else f"{d.name}:battery"][1]
            for d in self.resources.devices
            if isinstance(d, resources.ESS | resources.ExchangeStation)
        ]
        self._cap_rows = [
            self.where[d.name][1]
            for d in self.resources.devices
            if isinstance(d, resources.CapacitorBank)
        ]
        self._sgen_p: tuple[list[int], np.ndarray] = next(
            ((rows, values) for table, var, rows, values in self.frames if table == "sgen"),
            ([], np.zeros((self.n_steps, 0))),
        )
        self._compile_injections()

    def price_ref(self, k0: int) -> float:
        """Value of stored energy: the mean forecast price of the day of plant step ``k0``."""
        per_day = max(1, round(86400 / self.plant_step_s))
        d0 = ((self.start_step + k0) // per_day) * per_day
        return float(np.mean(self._price_all[d0 : d0 + per_day]))

    def forecast_max_p_mw(self, sgen_row: int, k0: int, k1: int) -> float:
        """Highest forecast active power of an sgen over plant steps [k0, k1)."""
        rows, values = self._sgen_p
        if sgen_row not in rows:
            return float(self.net.sgen.at[sgen_row, "p_mw"])
        return float(np.max(values[k0:k1, rows.index(sgen_row)]))

    def _compile_injections(self) -> None:
        """Split the full net's injections into a static part (every profile-driven element and
        every controllable device at zero) and one bus-aggregation per profile frame."""
        net = self.net
        for table, var, rows, _ in self.frames:
            net[table].loc[rows, var] = 0.0
        if self._controlled_sgen:
            net.sgen.loc[self._controlled_sgen, "q_mvar"] = 0.0
            dg = [r for r in self._controlled_sgen if net.sgen.at[r, "type"] == "DG"]
            if dg:
                net.sgen.loc[dg, "p_mw"] = 0.0
        if self._storage_rows:
            net.storage.loc[self._storage_rows, "p_mw"] = 0.0
        if self._cap_rows:
            net.shunt.loc[self._cap_rows, "step"] = 0
        self._static = self.full_pf.base_injections(net)
        self._frame_maps = []
        bus_index = self.full_pf.bus_index
        for table, var, rows, _ in self.frames:
            df = net[table].loc[rows]
            cols = bus_index.get_indexer(df.bus.to_numpy())
            on = df.in_service.to_numpy(bool)
            scale = (
                df.scaling.fillna(1.0).to_numpy(float)
                if "scaling" in df.columns
                else np.ones(len(df))
            )
            sign = -1.0 if table in ("load", "storage") else 1.0
            self._frame_maps.append((var, cols, sign * scale * on))

    def zero_injections(self, k0: int, k1: int) -> Injections:
        """Full-net operating point: forecast averaged over plant steps [k0, k1), every
        controllable device at zero (taps as in the model net; levers overwrite them)."""
        out = self._static.copy()
        for (var, cols, weight), (_, _, _, values) in zip(
            self._frame_maps, self.frames, strict=True
        ):
            mean = values[k0:k1].mean(axis=0) * weight
            target = out.p_mw if var == "p_mw" else out.q_mvar
            np.add.at(target[0], cols, mean)
        return out


@dataclass
class Decision:
    """A controller's decision at one control step."""

    controller: str
    interval: int
    setpoints: dict[str, dict[str, float]]
    result: OptResult
    solve_time_s: float
    n_var: int
    levers: list[str]
    vm_pred_pu: np.ndarray
    """predicted voltages of the controller's buses at the chosen decision"""
    vm_subnet_pu: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """predicted voltage of every sub-network bus (``cluster.pf.bus_index`` order), p.u."""
    p_in_mw: float = 0.0
    """predicted power entering the sub-network at its slack / upstream boundary bus, MW"""
    q_in_mvar: float = 0.0
    vm_boundary_pu: float | None = None
    """the upstream boundary voltage the decision chose (consensus ADMM's boundary lever)"""
    tie_draws: dict[str, tuple[float, float]] = field(default_factory=dict)
    """per downstream tie (its label), the child's draw (MW, Mvar) the decision assumed, where it was a
    decision (consensus ADMM's draw copies)"""


CouplingSpec = tuple[Literal["vm", "p", "q"], str, int, float, float, float]
"""a consensus-ADMM term as a caller states it: quantity, tie label, tie bus, target z̄ − u, ρ,
and the scale of a P/Q copy (:class:`~clustersim.agents.problem.Coupling`)"""


@dataclass
class _Prepared:
    problem: VoltVarProblem
    optimizer: Optimizer
    interval: int
    t0: float


class Controller:
    """The decision core of one agent (see module docstring)."""

    def __init__(
        self,
        name: str,
        grid: GridModel,
        settings: ControlSettings,
        *,
        buses: Sequence[int] | None = None,
        kinds: Iterable[str] = ALL_KINDS,
        seed: int = 0,
    ) -> None:
        self.name = name
        self.grid = grid
        self.settings = settings
        self.seed = int(seed)
        self.cluster = ClusterNetwork.build(grid.net, name, buses, tree=grid.tree)
        self.all_levers = levers(self.cluster, grid.resources, grid.where, allowed_kinds=kinds)
        self.active = [lv for lv in self.all_levers if lv.active]
        self.fixed = [lv for lv in self.all_levers if not lv.active]
        self._previous: np.ndarray | None = None
        self._devices = {d.name: d for d in grid.resources.devices}

    @property
    def steps_per_interval(self) -> int:
        """Plant steps per control interval (at least 1)."""
        return max(1, self.settings.interval_s // self.grid.plant_step_s)

    # ------------------------------------------------------------------ problem
    def _value(self, meas: Measurement, lv: Lever) -> float:
        sp = meas.setpoints.get(lv.device, {})
        return float(sp.get(lv.quantity, 0.0))

    def _bounds(self, meas: Measurement, k0: int, k1: int) -> tuple[np.ndarray, np.ndarray]:
        dt_h = (k1 - k0) * self.grid.plant_step_s / 3600.0
        day_start = ((self.grid.start_step + k0) * self.grid.plant_step_s) % 86400 == 0
        xl, xu = [], []
        for lv in self.active:
            lo, hi = lv.lower, lv.upper
            dev = self._devices[lv.device.split(":")[0]]
            if isinstance(dev, resources.PV) and lv.quantity == "q_mvar":
                p = self.grid.forecast_max_p_mw(self.grid.where[lv.device][1], k0, k1)
                q = math.sqrt(max(dev.s_rated_mva**2 - p**2, 0.0))
                lo, hi = -q, q
            elif isinstance(dev, resources.ESS | resources.ExchangeStation):
                e = float(meas.storage_energy_mwh.get(lv.device, dev.initial_energy_mwh))
                e_min, e_max = dev.soc_min * dev.e_mwh, dev.soc_max * dev.e_mwh
                charge = max(0.0, (e_max - e) / (dev.efficiency * dt_h))
                discharge = max(0.0, (e - e_min) * dev.efficiency / dt_h)
                lo, hi = -min(dev.p_max_mw, discharge), min(dev.p_max_mw, charge)
            elif lv.quantity in ("tap_pos", "step"):
                if lv.quantity == "tap_pos":
                    assert isinstance(dev, resources.OLTC | resources.LineRegulator)
                    budget = dev.max_operations_per_day
                else:
                    assert isinstance(dev, resources.CapacitorBank)
                    budget = dev.max_switching_per_day
                used = 0 if day_start else int(meas.switching_today.get(lv.device, 0))
                left = max(0, budget - used)
                cur = self._value(meas, lv)
                if lv.quantity == "tap_pos":
                    lo, hi = max(lo, cur - left), min(hi, cur + left)
                elif left == 0:
                    lo = hi = cur
            xl.append(lo)
            xu.append(hi)
        return np.array(xl, dtype=float), np.array(xu, dtype=float)

    def prepare(
        self,
        interval: int,
        meas: Measurement,
        *,
        vm_upstream_pu: float | None = None,
        boundary_pq: Mapping[tuple[str, int], tuple[float, float]] | None = None,
        initial: Sequence[np.ndarray] = (),
        generations: int | None = None,
        children: Sequence[tuple[int, ValueTable]] = (),
        couplings: Sequence[CouplingSpec] = (),
        boundary_band_pu: tuple[float, float] | None = None,
        draw_copies: Sequence[tuple[Lever, float]] = (),
    ) -> _Prepared:
        """Build this step's problem and optimizer (``vm_upstream_pu``: a neighbour-announced
        boundary voltage instead of the measured one; ``boundary_pq``: neighbour-announced draws
        of downstream tie branches, keyed ``(table, row)``; ``initial``: extra decisions for the
        first population; ``children``: (downstream tie bus, the child's value table);
        ``couplings``: consensus-ADMM terms (:data:`CouplingSpec`), a ``p``/``q`` term of a
        downstream tie acting on that tie's ``draw_copies`` lever; ``boundary_band_pu``: make the upstream boundary voltage a decision within
        these bounds; ``draw_copies``: virtual levers
        (:func:`~clustersim.agents.problem.tie_draw_lever`) and their values in force, appended
        last — the caller leaves those ties' draws out of ``boundary_pq``)."""
        t0 = time.perf_counter()
        s = self.settings
        grid = self.grid
        spi = self.steps_per_interval
        k0 = min(interval * spi, grid.n_steps - 1)
        k1 = min(k0 + spi, grid.n_steps)
        base = self.cluster.injections(
            grid.zero_injections(k0, k1),
            meas,
            vm_slack_pu=vm_upstream_pu,
            boundary_pq=boundary_pq,
        )
        fixed = [(lv, self._value(meas, lv)) for lv in self.fixed]
        active, xl, xu, x_now = self._decisions(meas, k0, k1, boundary_band_pu)
        for lv, now in draw_copies:
            active.append(lv)
            xl, xu = np.append(xl, lv.lower), np.append(xu, lv.upper)
            x_now = np.append(x_now, np.clip(now, lv.lower, lv.upper))
        bias = None
        if s.correction_gain > 0:
            bias = self._bias(meas, vm_upstream_pu) * s.correction_gain
        devs = [self._devices.get(lv.device.split(":")[0]) for lv in active]
        problem = VoltVarProblem(
            self.cluster,
            base,
            active,
            fixed,
            xl=xl,
            xu=xu,
            x_now=x_now,
            price_per_mwh=float(np.mean(grid.price_per_mwh[k0:k1])),
            price_ref_per_mwh=grid.price_ref(k0),
            dt_h=(k1 - k0) * grid.plant_step_s / 3600.0,
            storage_eff=np.array([getattr(d, "efficiency", math.nan) for d in devs], dtype=float),
            dg_cost_per_mwh=np.array(
                [d.cost_per_mwh if isinstance(d, resources.DG) else 0.0 for d in devs], dtype=float
            ),
            vm_min_pu=s.vm_min_pu,
            vm_max_pu=s.vm_max_pu,
            voltage_objective=s.voltage_objective,
            costs=s.costs,
            vm_bias_pu=bias,
            penalty=s.optimizer == "moead",
            children=[(self.cluster.col_of_bus(bus), table) for bus, table in children],
            couplings=[self._coupling(active, *c) for c in couplings],
        )
        opt = self._optimizer(problem, interval, [x_now, *initial], generations)
        return _Prepared(problem=problem, optimizer=opt, interval=interval, t0=t0)

    def _coupling(
        self,
        active: Sequence[Lever],
        quantity: Literal["vm", "p", "q"],
        tie: str,
        bus: int,
        target: float,
        rho: float,
        scale: float = 1.0,
    ) -> Coupling:
        """A consensus-ADMM term on tie ``tie`` at bus ``bus`` (see :meth:`prepare`)."""
        col = self.cluster.col_of_bus(bus)
        if quantity == "vm":
            return Coupling(col, target, rho)
        lever = None
        if bus != self.cluster.upstream_bus:
            (lever,) = [
                j
                for j, lv in enumerate(active)
                if lv.kind == BOUNDARY_KIND and lv.target == quantity and lv.device == tie
            ]
        return Coupling(col, target, rho, quantity, lever, scale)

    def _optimizer(
        self,
        problem: VoltVarProblem,
        interval: int,
        initial: Sequence[np.ndarray],
        generations: int | None,
    ) -> Optimizer:
        """The optimizer of a step's problem: its first population seeded with ``initial[0]``
        (the decision in force), the previous choice (warm start) and the rest of ``initial``;
        its generations capped by ``evaluations_per_variable``; its seed from the controller's
        and the interval's."""
        s = self.settings
        first = list(initial[:1])
        if s.warm_start and self._previous is not None:
            first.append(self._previous)
        first.extend(np.asarray(x, dtype=float) for x in initial[1:])
        first = [x for x in first if len(x) == problem.n_var]  # a decision of another shape
        seed = int(np.random.SeedSequence([self.seed, interval]).generate_state(1)[0])
        if generations is None:
            generations = s.generations
            if s.evaluations_per_variable > 0:
                per_var = math.ceil(s.evaluations_per_variable * problem.n_var / s.pop_size)
                generations = min(generations, max(1, per_var))
        return Optimizer(
            problem,
            algorithm=s.optimizer,
            pop_size=s.pop_size,
            generations=generations,
            seed=seed,
            initial=first if s.warm_start else [],
            patience=s.patience,
            compromise=s.compromise,
            weights=s.weights,
        )

    def _decisions(
        self, meas: Measurement, k0: int, k1: int, band: tuple[float, float] | None
    ) -> tuple[list[Lever], np.ndarray, np.ndarray, np.ndarray]:
        """The step's levers, their bounds and their values in force; with ``band`` (and an
        upstream boundary), the boundary voltage as a last, virtual lever within it, in force
        at the measured voltage."""
        xl, xu = self._bounds(meas, k0, k1)
        x_now = np.array([self._value(meas, lv) for lv in self.active])
        active = list(self.active)
        if band is not None and not self.cluster.contains_slack:
            lo, hi = band
            active.append(boundary_lever(lo, hi))
            xl, xu = np.append(xl, lo), np.append(xu, hi)
            assert self.cluster.upstream_bus is not None  # not the slack cluster
            v = meas.vm_pu[self.cluster.full_col(self.cluster.upstream_bus)]
            x_now = np.append(x_now, np.clip(v if np.isfinite(v) else 1.0, lo, hi))
        return active, xl, xu, x_now

    def _modelled(self, meas: Measurement, vm_upstream_pu: float | None = None) -> BatchResult:
        """The sub-network's power flow at the measured step with the setpoints in force."""
        k = min(max(meas.step, 0), self.grid.n_steps - 1)
        inj = self.cluster.injections(
            self.grid.zero_injections(k, k + 1), meas, vm_slack_pu=vm_upstream_pu
        )
        all_lv = self.all_levers
        x = np.array([[self._value(meas, lv) for lv in all_lv]])
        return self.cluster.pf.solve(apply_levers(inj, all_lv, x))

    def modelled_draw(self, meas: Measurement) -> tuple[float, float]:
        """The power (MW, Mvar) the sub-network's model draws at its slack at the measured step
        with the setpoints in force (a child's estimate of its tie's flow, which it does not
        measure)."""
        res = self._modelled(meas)
        return float(res.p_slack_mw[0]), float(res.q_slack_mvar[0])

    def _bias(self, meas: Measurement, vm_upstream_pu: float | None) -> np.ndarray:
        """Measured minus modelled voltage at the measured step, per sub-network bus, p.u. (the
        adaptive correction of [CVC] §3.2)."""
        res = self._modelled(meas, vm_upstream_pu)
        measured = meas.vm_pu[self.cluster.full_cols]
        bias = measured - res.vm_pu[0]
        return np.where(np.isfinite(bias), bias, 0.0)

    def finish(self, prep: _Prepared, vm_upstream_pu: float | None = None) -> Decision:
        """The compromise of the prepared optimizer's current front, as setpoints.
        ``vm_upstream_pu``: the upstream boundary voltage a parent announced; the optimizer's
        final candidates are then evaluated at it (one batched power flow) and the choice is
        made among them as :meth:`value_table` makes it."""
        res = prep.optimizer.result()
        problem = prep.problem
        vm_up = None
        if vm_upstream_pu is not None and not self.cluster.contains_slack:
            vm_up = np.array([float(vm_upstream_pu)])
            X = prep.optimizer.candidates(limit=self.settings.pop_size)
            F, G, _ = problem.objectives(X, np.repeat(vm_up, len(X)))
            s = self.settings
            k = choose(F, G, s.compromise, s.weights)
            cv = float(np.sum(np.maximum(G[k], 0.0)))
            res = replace(res, x=problem.clip(X[k])[0], f=F[k], cv=cv, feasible=cv <= 0)
        _, _, pf = problem.objectives(res.x[None, :], vm_up)
        problem.n_evaluations -= 1  # bookkeeping: the prediction is not a search evaluation
        problem.n_calls -= 1
        vm_pred = (
            pf.vm_pu[0, self.cluster.objective_cols] + problem.vm_bias[self.cluster.objective_cols]
        )
        self._previous = res.x.copy() if len(res.x) else None
        chosen_vm = None
        draws: dict[str, list[float]] = {}
        for j, lv in enumerate(problem.active):
            if lv.kind != BOUNDARY_KIND:
                continue
            if lv.target == "vm_ext":
                chosen_vm = float(res.x[j])
            else:
                pq = draws.setdefault(lv.device, [math.nan, math.nan])
                pq[lv.target == "q"] = float(res.x[j])
        return Decision(
            vm_boundary_pu=chosen_vm,
            vm_subnet_pu=pf.vm_pu[0] + problem.vm_bias,
            p_in_mw=float(pf.p_slack_mw[0]),
            q_in_mvar=float(pf.q_slack_mvar[0]),
            controller=self.name,
            interval=prep.interval,
            setpoints=problem.decode(res.x) if len(res.x) else {},
            result=res,
            solve_time_s=time.perf_counter() - prep.t0,
            n_var=problem.n_var,
            levers=[f"{lv.device}.{lv.quantity}" for lv in self.active],
            vm_pred_pu=vm_pred,
            tie_draws={tie: (p, q) for tie, (p, q) in draws.items()},
        )

    def value_table(
        self, prep: _Prepared, vm_pu: Sequence[float] | np.ndarray
    ) -> tuple[ValueTable, np.ndarray]:
        """This cluster's :class:`~clustersim.agents.problem.ValueTable` over upstream boundary
        voltages ``vm_pu`` (increasing): the optimizer's final candidates evaluated at every
        voltage in one batched power flow (at most ``pop_size`` of them:
        :meth:`~clustersim.agents.optimizer.Optimizer.candidates`), and at each voltage the
        candidate the controller would choose there
        (:func:`~clustersim.agents.optimizer.choose`, the compromise rule of :meth:`finish`). Returns the table and those decisions (one row per voltage). The
        evaluations count towards the problem's."""
        problem = prep.problem
        if self.cluster.contains_slack:
            raise ValueError(f"{self.name} holds the slack: it has no upstream boundary")
        grid = np.asarray(vm_pu, dtype=float)
        X = prep.optimizer.candidates(limit=self.settings.pop_size)
        n = len(X)
        F, G, res = problem.objectives(np.tile(X, (len(grid), 1)), np.repeat(grid, n))
        s = self.settings
        best = np.array(
            [
                k * n
                + choose(F[k * n : (k + 1) * n], G[k * n : (k + 1) * n], s.compromise, s.weights)
                for k in range(len(grid))
            ]
        )
        table = ValueTable(
            vm_pu=grid,
            violation_pu=G[best, 0],
            deviation_pu=F[best, 0],
            losses_mw=F[best, 1],
            cost=F[best, 2],
            p_mw=np.asarray(res.p_slack_mw)[best],
            q_mvar=np.asarray(res.q_slack_mvar)[best],
        )
        return table, problem.clip(X[best % n])

    def remember(self, decision: Decision) -> None:
        """Make ``decision`` the one the next step warm-starts from (after a coordination
        round's re-optimization was abandoned)."""
        x = decision.result.x
        self._previous = x.copy() if len(x) else None

    def decide(self, interval: int, meas: Measurement) -> Decision:
        """Prepare, run the optimizer to its end, decide."""
        prep = self.prepare(interval, meas)
        prep.optimizer.run()
        return self.finish(prep)


def build_controllers(
    plant: Plant,
    mode: str,
    settings: ControlSettings,
    *,
    clusters: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    only: str | None = None,
) -> list[Controller]:
    """The controllers of a control mode: one central controller for ``centralized``, one per
    cluster (``clusters``: name → bus indices) for the other optimizing modes."""

    grid = GridModel(plant)
    kinds = allowed_kinds(mode)
    seeds = [
        int(c.generate_state(1)[0])
        for c in np.random.SeedSequence(seed).spawn(max(1, len(clusters or {})))
    ]
    if mode == "centralized" or not clusters:
        return [Controller("central", grid, settings, buses=None, kinds=kinds, seed=seeds[0])]
    full = assign_buses(grid.net, clusters)
    return [
        Controller(name, grid, settings, buses=buses, kinds=kinds, seed=seeds[i])
        for i, (name, buses) in enumerate(full.items())
        if only is None or name == only
    ]
