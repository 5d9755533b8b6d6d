"""Cluster and central agents: the decision core of :mod:`clustersim.agents.control` on the wire.

One :class:`AgentNode` per cluster (or one for the central agent, whose controller sees the
whole network and has no neighbours) runs this protocol per
control interval ``n``, in simulated seconds, with every message really crossing the transport
and the channel model (:class:`~clustersim.broker.channel.Channel`) deciding at the receiver
whether it was lost and when it arrived:

1. wait for the plant's measurement of interval ``n`` (sent at ``t0 = n * interval_s``). If the
   channel lost it, or it arrives after the deadline ``t0 + deadline_s``, the agent decides at
   ``t0`` on the last measurement it has (its age of information grows);
2. solve its volt/var problem (:mod:`clustersim.agents.control`, NSGA-II by default); the compute
   time model adds the solve's simulated duration (``fixed``: a constant per solve;
   ``per-evaluation``: a cost per candidate evaluated; ``measured``: the solve's wall time — the one
   non-deterministic option);
3. coordination with the neighbouring clusters over the tie branches of the operating tree
   (``settings.coordination``; a re-optimization that would end after the deadline is
   abandoned at the deadline, the previous decision stands):

   - ``boundary``: rounds ``r = 1..R``; the parent sends the voltage it predicts at the boundary
     bus, the child the P/Q it predicts flowing into its cluster through the tie; each waits for
     the other's round-r message, and if at least one arrived before the deadline it
     re-optimizes with the announced values (warm-started from its last decision);
   - ``value-table``: ``R`` sweeps of two rounds each. Up (round ``2s − 1``, leaves first): a
     cluster waits for its children's tables (a lost or late one: the last it has, its age
     recorded), optimizes with them folded in (the interval's solve in the first sweep, a
     warm-started re-optimization after), and sends its parent its
     :class:`~clustersim.agents.problem.ValueTable` over ``table_points`` voltages around the
     measured boundary voltage (later sweeps: around the announced one, half as wide). Down
     (round ``2s``): the root decides; each cluster waits for its parent's voltage (a lost or
     late one: the measured voltage), decides for it among its candidates and sends each child
     the voltage its decision holds at their tie;
   - ``admm``: rounds of consensus ADMM on the tie voltages (:mod:`clustersim.agents.admm`);
4. send the setpoint (always, "no change" included) with a :class:`DecisionInfo` (objectives,
   evaluations, compute time, age of information, rounds, its receipt records) that the
   simulator's records are made from; the plant acts only on the setpoints.

In real time (``[comm] clock = "realtime"``) the same steps run against a
:class:`~clustersim.broker.clock.RealtimeClock`: a message the channel delivers is held until its
delivery instant (latency as a real delay), a lost one is dropped, a solve lasts its wall time
times the speed factor, and a round waits for its neighbours only until the deadline's wall
instant. Nothing is reproducible then; the protocol is the same.

Every protocol message is always sent, so a receiver never guesses whether one is still coming;
the wall-clock watchdog only turns a peer that went silent into a recorded fault.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandapower as pp

from clustersim.agents.admm import ADMM_QUANTITIES, DRAW_BAND, DRAW_FLOOR_MVA, TieState
from clustersim.agents.control import Controller, CouplingSpec, Decision, _Prepared
from clustersim.agents.network import (
    assign_buses,
    boundary_flow,
    path_impedance_pu,
    radial_tree,
)
from clustersim.agents.problem import Lever, ValueTable, tie_draw_lever
from clustersim.broker.auth import Keyring
from clustersim.broker.channel import Channel
from clustersim.broker.clock import RealtimeClock
from clustersim.broker.envelope import (
    BROADCAST,
    BoundaryBody,
    MeasBody,
    MessageRecord,
    TableBody,
)
from clustersim.broker.node import REFUSED_SAMPLE, Node
from clustersim.broker.transport import Transport
from clustersim.sim.plant import Measurement

__all__ = [
    "AgentNode",
    "ComputeModel",
    "Tie",
    "find_ties",
    "meas_body",
    "measurement_from_body",
]

PLANT = "plant"
MISMATCH = "scenario differs from the plant's"
"""start of the ``fault`` status reason of an agent that refuses a run over its scenario"""


@dataclass(frozen=True)
class ComputeModel:
    """Simulated duration of one solve (seconds)."""

    kind: Literal["fixed", "per-evaluation", "measured"] = "per-evaluation"
    fixed_s: float = 1.0
    per_evaluation_s: float = 0.001

    def seconds(self, evaluations: int, wall_s: float, *, solve: bool = True) -> float:
        """Simulated duration of a solve, s: ``fixed_s``, ``per_evaluation_s`` × ``evaluations``,
        or the measured ``wall_s``. ``solve=False``: evaluations that complete a solve (its
        choice, a value table), which take no time of their own under ``fixed``."""
        if self.kind == "fixed":
            return self.fixed_s if solve else 0.0
        if self.kind == "per-evaluation":
            return self.per_evaluation_s * evaluations
        return wall_s


@dataclass(frozen=True)
class Tie:
    """A branch of the operating tree between two clusters: ``parent`` holds ``bus``, the end
    nearer the slack; the branch ``(table, row)`` belongs to the child's sub-network."""

    parent: str
    child: str
    table: str
    row: int
    bus: int
    bus_label: str
    r_pu: float = 0.0
    x_pu: float = 0.0
    """series resistance and reactance from the slack bus to ``bus``, p.u. on the network's
    base power (:func:`~clustersim.agents.network.path_impedance_pu`)"""
    sn_mva: float = 1.0
    """the network's base power"""

    @property
    def label(self) -> str:
        """``table:row`` of the tie branch."""
        return f"{self.table}:{self.row}"

    @property
    def scales(self) -> tuple[float, float, float]:
        """What one unit of the tie's voltage (p.u.), draw P (MW) and Q (Mvar) is worth in
        voltage at ``bus``, p.u.: 1, ``r_pu/sn_mva``, ``x_pu/sn_mva`` (the linearized drop
        r·P + x·Q of [DISTFLOW]); consensus ADMM compares the copies in these units."""
        return 1.0, self.r_pu / self.sn_mva, self.x_pu / self.sn_mva


def find_ties(net: pp.pandapowerNet, clusters: Mapping[str, Sequence[int]]) -> list[Tie]:
    """The ties between clusters (``clusters``: name → bus indices, as for the controllers)."""
    full = assign_buses(net, clusters)
    owner = {b: name for name, buses in full.items() for b in buses}
    tree = radial_tree(net)
    ties = []
    for child_bus, parent_bus in sorted(tree.parent.items()):
        a, b = owner.get(parent_bus), owner.get(child_bus)
        if a is None or b is None or a == b:
            continue
        table, row = tree.edge[child_bus]
        r, x = path_impedance_pu(net, parent_bus, tree)
        label = _label(net, parent_bus)
        sn = float(net.sn_mva)
        ties.append(Tie(a, b, table, int(row), int(parent_bus), label, r, x, sn))
    return ties


def _label(net: pp.pandapowerNet, bus: int) -> str:
    """A bus's label: its ``name`` (the paper's number), as :class:`Plant` reports it."""
    return str(net.bus.at[bus, "name"])


# ------------------------------------------------------------------ measurements on the wire
def _branch_key(table: str, row: int, side: str) -> str:
    return f"{table}:{row}:{side}"


def meas_body(
    meas: Measurement,
    controller_buses: Sequence[int] | None,
    net: pp.pandapowerNet,
    boundaries: Sequence[tuple[str, int, str]] = (),
) -> dict[str, Any]:
    """The measurement message for one agent: voltages of its sub-network's buses (all buses for
    ``None``), the flows entering its downstream boundary branches, and the state of every
    device (setpoints in force, stored energy, switching used today)."""
    if controller_buses is None:
        cols = np.arange(len(meas.bus_labels))
    else:
        cols = net.bus.index.get_indexer(list(controller_buses))
    vm = {meas.bus_labels[c]: float(meas.vm_pu[c]) for c in cols if np.isfinite(meas.vm_pu[c])}
    p: dict[str, float] = {}
    q: dict[str, float] = {}
    for table, row, side in boundaries:
        arrays = {
            ("line", "from"): (meas.line_p_from_mw, meas.line_q_from_mvar),
            ("line", "to"): (meas.line_p_to_mw, meas.line_q_to_mvar),
            ("trafo", "hv"): (meas.trafo_p_hv_mw, meas.trafo_q_hv_mvar),
            ("trafo", "lv"): (meas.trafo_p_lv_mw, meas.trafo_q_lv_mvar),
        }[(table, side)]
        pos = (net.line if table == "line" else net.trafo).index.get_loc(row)
        pv, qv = float(arrays[0][pos]), float(arrays[1][pos])
        if math.isfinite(pv) and math.isfinite(qv):
            key = _branch_key(table, row, side)
            p[key], q[key] = pv, qv
    return {
        "step": int(meas.step) if meas.step >= 0 else 0,
        "vm_pu": vm,
        "p_mw": p,
        "q_mvar": q,
        "storage_energy_mwh": {k: max(0.0, float(v)) for k, v in meas.storage_energy_mwh.items()},
        "setpoints": {k: dict(v) for k, v in meas.setpoints.items() if v},
        "switching_today": {k: int(v) for k, v in meas.switching_today.items()},
    }


def measurement_from_body(
    body: MeasBody,
    net: pp.pandapowerNet,
    labels: Sequence[str],
    plant_step_s: float,
    start_step: int = 0,
) -> Measurement:
    """The :class:`Measurement` an agent rebuilds from a measurement message: NaN where the
    message says nothing (buses and branches outside its sub-network); ``start_step``: the
    profiles' step at which the run starts, for the measurement's time of day."""
    pos = {lab: i for i, lab in enumerate(labels)}
    vm = np.full(len(labels), np.nan)
    for lab, v in body.vm_pu.items():
        if lab in pos:
            vm[pos[lab]] = v
    nl, nt = len(net.line), len(net.trafo)
    arr = {
        k: np.full(nl if k[0] == "line" else nt, np.nan)
        for k in [
            ("line", "pf"),
            ("line", "qf"),
            ("line", "pt"),
            ("line", "qt"),
            ("trafo", "ph"),
            ("trafo", "qh"),
            ("trafo", "pl"),
            ("trafo", "ql"),
        ]
    }
    short = {
        ("line", "from"): ("pf", "qf"),
        ("line", "to"): ("pt", "qt"),
        ("trafo", "hv"): ("ph", "qh"),
        ("trafo", "lv"): ("pl", "ql"),
    }
    for key, pv in body.p_mw.items():
        try:
            table, row_s, side = key.split(":")
            kp, kq = short[(table, side)]
            idx = (net.line if table == "line" else net.trafo).index.get_loc(int(row_s))
        except (ValueError, KeyError):
            continue
        arr[(table, kp)][idx] = pv
        arr[(table, kq)][idx] = body.q_mvar.get(key, 0.0)
    return Measurement(
        step=int(body.step),
        time_s=float(start_step + body.step) * plant_step_s,
        vm_pu=vm,
        bus_labels=tuple(labels),
        p_slack_mw=math.nan,
        q_slack_mvar=math.nan,
        line_p_from_mw=arr[("line", "pf")],
        line_q_from_mvar=arr[("line", "qf")],
        line_p_to_mw=arr[("line", "pt")],
        line_q_to_mvar=arr[("line", "qt")],
        trafo_p_hv_mw=arr[("trafo", "ph")],
        trafo_q_hv_mvar=arr[("trafo", "qh")],
        trafo_p_lv_mw=arr[("trafo", "pl")],
        trafo_q_lv_mvar=arr[("trafo", "ql")],
        storage_energy_mwh=dict(body.storage_energy_mwh),
        setpoints={k: {str(q): x for q, x in v.items()} for k, v in body.setpoints.items()},
        switching_today=dict(body.switching_today),
    )


# --------------------------------------------------------------------------------- agents
@dataclass
class AgentSettings:
    """The protocol's knobs an agent needs (from ``[control]``, ``[comm]`` and ``[run]``)."""

    interval_s: float = 900.0
    deadline_s: float = 60.0
    rounds: int = 2
    """boundary rounds, or up/down sweeps of value tables, per interval"""
    round_generations: int = 5
    coordination: Literal["boundary", "value-table", "admm"] = "boundary"
    table_points: int = 9
    boundary_band_pu: float = 0.05
    admm_rho: float = 10.0
    admm_tolerance_pu: float = 0.001
    compute: ComputeModel = field(default_factory=ComputeModel)
    watchdog_s: float = 30.0
    plant_step_s: float = 60.0
    speed: float | None = None
    """real time: simulated seconds per wall second; ``None``: virtual time"""


@dataclass
class AgentRecord:
    """What one agent keeps for the results (fronts for the Pareto figures, its faults)."""

    fronts: dict[tuple[int, str], Any] = field(default_factory=dict)


class AgentNode(Node):
    """An optimizing agent on the wire (see module docstring)."""

    def __init__(
        self,
        controller: Controller,
        transport: Transport,
        channel: Channel,
        *,
        run_id: str,
        ties: Sequence[Tie] = (),
        settings: AgentSettings | None = None,
        keep_fronts: bool = True,
        keys: Keyring | None = None,
        fingerprint: Mapping[str, str] | None = None,
    ) -> None:
        me = controller.name
        self.controller = controller
        self.channel = channel
        self.settings = settings or AgentSettings()
        self.children = [t for t in ties if t.parent == me]
        self.parent_tie = next((t for t in ties if t.child == me), None)
        neighbours = sorted(
            {t.child for t in self.children}
            | ({self.parent_tie.parent} if self.parent_tie else set())
        )
        self.neighbours = neighbours
        acl: dict[str, list[Any]] = {
            "meas": [(PLANT, me)],
            "clock": [(PLANT, BROADCAST)],
            "boundary": [(nb, me) for nb in neighbours],
            "status": ["*"],
            "log": ["*"],
        }
        super().__init__(transport, run_id=run_id, me=me, acl=acl, keys=keys)
        self.labels = controller.grid.bus_labels
        self.record = AgentRecord()
        self.keep_fronts = keep_fronts
        self._meas: Measurement | None = None
        self._meas_t = 0.0
        self.stopped = False
        self._dead: set[str] = set()
        self.clock = RealtimeClock(self.settings.speed) if self.settings.speed else None
        self._refused_seen = 0
        self.fingerprint = dict(fingerprint) if fingerprint is not None else None
        self.online_at_start = fingerprint is None  # else online once the start's scenario matches
        self._tables: dict[str, tuple[ValueTable, int]] = {}
        """child cluster → (its last value table, the interval it came in)"""
        self._admm: dict[tuple[str, str], TieState] = {}
        """(tie label, quantity) → this side's ADMM state (carried from one interval to the next)"""
        self._theirs: dict[tuple[str, str], float] = {}
        """(tie label, quantity) → the other side's last copy (in :attr:`Tie.scales` units)"""
        self.mismatch: list[str] = []
        """scenario keys whose values differ from the plant's (the agent then refused the run)"""
        self.lost_plant = False
        """whether the agent ended because the plant went silent (not by the clock's stop)"""

    # ------------------------------------------------------------------ main loop
    async def run(self) -> AgentRecord:
        """Serve until the plant's clock says stop (or the plant goes silent)."""
        await self.start()
        try:
            n = 0
            while True:
                got = await self._next_interval(n)
                if got is None:
                    break
                await self.interval(n, *got)
                n += 1
        finally:
            await self.close()
        return self.record

    async def _next_interval(self, n: int) -> tuple[Any, int] | None:
        """Wait for interval ``n``'s measurement; ``None`` at the clock's stop or when the plant
        stays silent for longer than its own watchdog could explain."""
        s = self.settings
        spi = max(1, round(s.interval_s / s.plant_step_s))
        loop = asyncio.get_running_loop()
        end = loop.time() + s.watchdog_s * (s.rounds + 4)
        if self.clock is not None:  # the next measurement is due at the interval's wall instant
            end += self.clock.wall_until(n * s.interval_s)
        while not self.stopped:
            if loop.time() > end and n > 0:
                await self.fault("watchdog", f"no measurement from {PLANT}", n)
                self.lost_plant = True
                return None
            got = await self.expect("meas", PLANT, n * spi, timeout_s=0.25)
            if got is not None:
                return got
        return None

    async def on_clock(self, env: Any) -> None:
        """Answer the plant's clock message: ``stop`` ends the agent, ``start`` gets an ``online``
        status."""
        if env.body.event == "stop":
            self.stopped = True
        elif env.body.event == "start" and self.fingerprint is not None and not self.mismatch:
            self.mismatch = env.body.differing_keys(self.fingerprint)
            if self.mismatch:
                keys = ", ".join(self.mismatch[:10]) + (" ..." if len(self.mismatch) > 10 else "")
                await self.status("fault", f"{MISMATCH}: {keys}")
                self.stopped = True
        if env.body.event == "start" and not self.mismatch:  # the plant waits: we are here
            await self.status("online")

    async def _deliver(
        self, env: Any, nbytes: int, deadline_s: float
    ) -> tuple[MessageRecord, bool]:
        """The channel's verdict on a received message: its record, and whether it may be used
        (neither lost nor after ``deadline_s``). In real time a usable message is held until its
        delivery instant."""
        d = self.channel.deliver(env.src, self.me, env.seq, env.t_send_s)
        late = (not d.lost) and d.t_deliver_s > deadline_s
        rec = MessageRecord.received(
            env, self.me, nbytes, t_deliver_s=None if d.lost else d.t_deliver_s, late=late
        )
        if self.clock is not None and not d.lost and not late:
            await self.clock.sleep_until(d.t_deliver_s)
        return rec, not d.lost and not late

    def _now(self, t_virtual: float) -> float:
        """The agent's current simulated instant: computed in virtual time, read in real time."""
        return t_virtual if self.clock is None else self.clock.now_s()

    async def interval(self, n: int, env: Any, nbytes: int) -> None:
        """Run control interval ``n`` on its measurement envelope ``env`` (``nbytes``: payload size,
        bytes): decide, coordinate, send the setpoint (module docstring, steps 1–4)."""
        s = self.settings
        t0 = n * s.interval_s
        st = _Interval(n=n, t=t0, deadline=t0 + s.deadline_s)
        if self.clock is not None and not self.clock.started:
            self.clock.start(float(env.t_send_s))  # align on the plant's clock
        rec, used = await self._deliver(env, nbytes, st.deadline)
        st.records.append(rec)
        st.t = self._now(t0)
        if used:
            grid = self.controller.grid
            self._meas = measurement_from_body(
                env.body, grid.net, self.labels, s.plant_step_s, grid.start_step
            )
            self._meas_t = float(env.t_send_s)
            assert rec.t_deliver_s is not None
            st.t = self._now(rec.t_deliver_s)
        meas = self._meas
        info: dict[str, Any] = {}
        setpoints: dict[str, dict[str, float]] = {}
        if meas is not None:
            if s.coordination == "value-table" and self.neighbours:
                dec = await self._sweeps(meas, st)
            elif s.coordination == "admm" and self.neighbours:
                dec = await self._admm_rounds(meas, st)
            else:
                dec = await self._boundary_rounds(meas, st)
            setpoints = dec.setpoints
            info = self._info(dec, st, meas)
            if self.keep_fronts:
                r_ = dec.result
                self.record.fronts[(n, self.me)] = (
                    r_.front_f,
                    r_.f,
                    r_.population_f,
                    r_.population_cv,
                )
        else:  # nothing to decide on yet: keep the protocol, say "no values" in every round
            await self._empty_rounds(st)
        st.sent += 1
        info["sent"] = st.sent
        info["rejected"] = self.rejected_counts()
        st.records.extend(self.refused_records(self._refused_seen, limit=REFUSED_SAMPLE))
        self._refused_seen = self.refused_total
        info["messages"] = [m.model_dump() for m in st.records]
        t = self._now(st.t)
        await self.send(
            "setpoint", PLANT, step=n, t_send_s=t, body={"setpoints": setpoints, "info": info}
        )

    # ------------------------------------------------------------------ coordination
    def _round_peers(self, r: int) -> tuple[list[str], list[str]]:
        """Round ``r``'s (receivers, senders) of this agent's boundary messages: every
        neighbour both ways in boundary rounds; in value-table sweeps, odd rounds go up (children
        → parent) and even rounds down (parent → children)."""
        if self.settings.coordination != "value-table":
            return self.neighbours, self.neighbours
        up = [self.parent_tie.parent] if self.parent_tie is not None else []
        down = [t.child for t in self.children]
        return (up, down) if r % 2 else (down, up)

    def _protocol_rounds(self) -> int:
        """Boundary messages rounds per interval (two per value-table sweep)."""
        if not self.neighbours:
            return 0
        k = 2 if self.settings.coordination == "value-table" else 1
        return k * self.settings.rounds

    async def _receive(self, st: _Interval, nb: str, r: int) -> BoundaryBody | None:
        """Neighbour ``nb``'s round-``r`` boundary message, if it arrived usable (not lost, not
        after the deadline, not empty); its receipt is recorded either way. A neighbour silent
        for the watchdog's time (virtual time) becomes a fault and is not waited for again; in
        real time what has not come by the deadline is late."""
        n = st.n
        if nb in self._dead and not self.has("boundary", nb, n, r):
            return None
        if self.clock is None:
            got = await self.expect("boundary", nb, n, r, timeout_s=self.settings.watchdog_s)
            if got is None:
                self._dead.add(nb)
                await self.fault("watchdog", f"no boundary message from {nb}", n)
                return None
        else:
            wait = max(0.0, self.clock.wall_until(st.deadline))
            got = await self.expect("boundary", nb, n, r, timeout_s=wait)
            if got is None:
                return None
        benv, nbytes = got
        brec, ok = await self._deliver(benv, nbytes, st.deadline)
        st.records.append(brec)
        body = benv.body
        assert isinstance(body, BoundaryBody)  # the inbox filed it as "boundary"
        if not ok or body.empty:
            return None
        assert brec.t_deliver_s is not None
        st.t_info = max(st.t_info, brec.t_deliver_s)
        return body

    async def _send_round(self, st: _Interval, dst: str, r: int, body: Mapping[str, Any]) -> None:
        await self.send("boundary", dst, step=st.n, round=r, t_send_s=self._now(st.t), body=body)
        st.sent += 1

    def _solve(
        self,
        st: _Interval,
        meas: Measurement,
        vm_up: float | None,
        pq: Mapping[tuple[str, int], tuple[float, float]],
        initial: Sequence[np.ndarray],
        children: Sequence[tuple[int, ValueTable]] = (),
        *,
        couplings: Sequence[CouplingSpec] = (),
        band: tuple[float, float] | None = None,
        draws: Sequence[tuple[Lever, float]] = (),
    ) -> tuple[_Prepared, float]:
        """Prepare and run this interval's optimization; returns it and its simulated duration
        (counted in ``st``'s compute time and evaluations by the caller through :meth:`_spent`)."""
        c = self.controller
        t_wall = time.perf_counter()
        prep = c.prepare(
            st.n,
            meas,
            vm_upstream_pu=vm_up,
            boundary_pq=dict(pq) or None,
            initial=initial,
            generations=self.settings.round_generations if len(initial) else None,
            children=children,
            couplings=couplings,
            boundary_band_pu=band,
            draw_copies=draws,
        )
        prep.optimizer.run()
        return prep, self._spent(st, prep, 0, time.perf_counter() - t_wall, solve=True)

    def _spent(
        self, st: _Interval, prep: _Prepared, evals_before: int, wall: float, solve: bool = False
    ) -> float:
        """The simulated duration of ``prep``'s evaluations since ``evals_before`` that took
        ``wall`` seconds (compute time model), added to ``st``'s evaluations and wall time."""
        evals = int(prep.problem.n_evaluations) - evals_before
        st.evaluations += evals
        st.solve_wall_s += wall
        if self.clock is not None:
            return self.clock.simulated(wall)
        return self.settings.compute.seconds(evals, wall, solve=solve)

    def _finish(
        self, st: _Interval, prep: _Prepared, vm_up: float | None = None
    ) -> tuple[Decision, float]:
        """:meth:`Controller.finish` and its simulated duration (its evaluations counted in
        ``st``)."""
        before, t_wall = int(prep.problem.n_evaluations), time.perf_counter()
        dec = self.controller.finish(prep, vm_up)
        return dec, self._spent(st, prep, before, time.perf_counter() - t_wall)

    # length: the boundary rounds of the module docstring's step 3, in order
    async def _boundary_rounds(self, meas: Measurement, st: _Interval) -> Decision:
        """Solve, then the boundary rounds with the neighbours (module docstring, step 3)."""
        prep, compute = self._solve(st, meas, None, {}, ())
        dec, c2 = self._finish(st, prep)
        st.solves += 1
        st.t = self._now(st.t + (compute + c2))
        st.computed += compute + c2
        pq: dict[tuple[str, int], tuple[float, float]] = {}
        for r in range(1, self._protocol_rounds() + 1):
            st.attempted += 1
            for tie in self.children:
                col = dec_col(self.controller, tie.bus)
                vm = {tie.bus_label: float(dec.vm_subnet_pu[col])}
                await self._send_round(st, tie.child, r, {"vm_pu": vm})
            if self.parent_tie is not None:
                lab = self.parent_tie.label
                body = {"p_mw": {lab: dec.p_in_mw}, "q_mvar": {lab: dec.q_in_mvar}}
                await self._send_round(st, self.parent_tie.parent, r, body)
            self._record_round(st, r, meas, dec, pq)
            fresh = False
            st.t_info = st.t
            for nb in self.neighbours:
                got = await self._receive(st, nb, r)
                if got is None:
                    continue
                fresh = True
                if self.parent_tie is not None and nb == self.parent_tie.parent:
                    v = got.vm_pu.get(self.parent_tie.bus_label)
                    if v is not None:
                        st.vm_up = float(v)
                for tie in self.children:
                    if tie.child == nb and tie.label in got.p_mw:
                        pq[(tie.table, tie.row)] = (
                            float(got.p_mw[tie.label]),
                            float(got.q_mvar.get(tie.label, 0.0)),
                        )
            if not fresh:
                st.t = self._now(st.t)
                continue
            st.t = self._now(max(st.t, st.t_info))
            if st.t >= st.deadline:
                continue
            new_prep, compute = self._solve(st, meas, st.vm_up, pq, [dec.result.x])
            new, c2 = self._finish(st, new_prep)
            compute += c2
            st.computed += compute
            if st.t + compute <= st.deadline:
                dec = new
                st.t = self._now(st.t + compute)
                st.solves += 1
                st.completed += 1
            else:  # abandoned at the deadline: the previous decision stands
                st.t = st.deadline
                self.controller.remember(dec)
        return dec

    async def _sweeps(self, meas: Measurement, st: _Interval) -> Decision:
        """Value-table sweeps of the cluster tree (module docstring, step 3)."""
        sw = _Sweep()
        pt = self.parent_tie
        if pt is not None:
            sw.centre = float(meas.vm_pu[self.labels.index(pt.bus_label)])
            if not math.isfinite(sw.centre):
                sw.centre = 1.0
            sw.band = self.settings.boundary_band_pu
        for sweep in range(1, self.settings.rounds + 1):
            st.attempted += 1
            complete = await self._up(meas, st, sw, 2 * sweep - 1)
            complete &= await self._down(meas, st, sw, 2 * sweep)
            st.completed += int(complete)
        assert sw.dec is not None
        st.table_age = {
            t.child: st.n - self._tables[t.child][1]
            for t in self.children
            if t.child in self._tables
        }
        return sw.dec

    async def _up(self, meas: Measurement, st: _Interval, sw: _Sweep, r: int) -> bool:
        """Round ``r``, up: take the children's tables (the last one of a child whose table is
        lost or late), optimize with them (the interval's solve in the first sweep, a
        warm-started re-optimization after, abandoned at the deadline), send the parent this
        cluster's table around ``sw.centre``. Returns whether every child's table came."""
        st.t_info = st.t
        fresh = 0
        for tie in self.children:
            got = await self._receive(st, tie.child, r)
            if got is not None and got.table is not None:
                self._tables[tie.child] = (table_from_body(got.table), st.n)
                fresh += 1
        st.t = self._now(max(st.t, st.t_info))
        known = [t for t in self.children if t.child in self._tables]
        children = [(t.bus, self._tables[t.child][0]) for t in known]
        pq = sw.draws = {(t.table, t.row): self._child_draw(t, meas, sw.dec) for t in known}
        if sw.prep is None or (fresh and st.t < st.deadline):
            initial = [] if sw.dec is None else [sw.dec.result.x]
            new, compute = self._solve(st, meas, None, pq, initial, children)
            st.computed += compute
            if sw.prep is None or st.t + compute <= st.deadline:
                sw.prep = new
                st.solves += 1
                st.t = self._now(st.t + compute)
            else:  # abandoned at the deadline: the last optimization stands
                st.t = st.deadline
        pt = self.parent_tie
        if pt is not None:
            grid = sw.centre + sw.band * np.linspace(-1.0, 1.0, self.settings.table_points)
            prep = sw.prep
            before, t_wall = int(prep.problem.n_evaluations), time.perf_counter()
            table, _ = self.controller.value_table(prep, grid[grid > 0])
            compute = self._spent(st, prep, before, time.perf_counter() - t_wall)
            st.computed += compute
            st.t = self._now(st.t + compute)
            body = table_body(table)
            await self._send_round(st, pt.parent, r, {"table": body})
            st.rounds.append({"round": r, "tie": pt.label, "role": "child", "table": body})
        return fresh == len(self.children)

    async def _down(self, meas: Measurement, st: _Interval, sw: _Sweep, r: int) -> bool:
        """Round ``r``, down: take the boundary voltage the parent will hold (if its message is
        lost or late: the one it announced in an earlier sweep of this interval, else the
        measured one), decide for it, send each child the voltage this decision holds at its
        tie. The next sweep's table is centred on the announced voltage, half as wide. Returns
        whether the parent's message came (true at the root)."""
        pt = self.parent_tie
        came = pt is None
        if pt is not None:
            st.t_info = st.t
            got = await self._receive(st, pt.parent, r)
            v = None if got is None else got.vm_pu.get(pt.bus_label)
            if v is not None:
                came = True
                st.vm_up = float(v)
                sw.centre, sw.band = st.vm_up, sw.band / 2.0
            st.t = self._now(max(st.t, st.t_info))
        assert sw.prep is not None
        dec, compute = self._finish(st, sw.prep, st.vm_up)
        sw.dec = dec
        st.computed += compute
        st.t = self._now(st.t + compute)
        for tie in self.children:
            vm = {tie.bus_label: float(dec.vm_subnet_pu[dec_col(self.controller, tie.bus)])}
            await self._send_round(st, tie.child, r, {"vm_pu": vm})
        self._record_round(st, r, meas, dec, sw.draws)
        return came

    def _record_round(
        self,
        st: _Interval,
        r: int,
        meas: Measurement,
        dec: Decision,
        draws: Mapping[tuple[str, int], tuple[float, float]],
    ) -> None:
        """This agent's side of each of its ties in round ``r`` (a
        :class:`~clustersim.broker.envelope.RoundRecord` each), for ``decision``: as a parent,
        the voltage it holds at the tie bus and the child's draw it assumed (``draws``, else
        the measured flow); as a child, the boundary voltage it assumed and its predicted draw."""
        c = self.controller
        for tie in self.children:
            (b,) = [b for b in c.cluster.downstream if (b.table, b.row) == (tie.table, tie.row)]
            p, q = draws.get((tie.table, tie.row)) or boundary_flow(meas, b)
            vm = float(dec.vm_subnet_pu[dec_col(c, tie.bus)])
            st.rounds.append(
                {
                    "round": r,
                    "tie": tie.label,
                    "role": "parent",
                    "vm_pu": vm,
                    "p_mw": p,
                    "q_mvar": q,
                }
            )
        pt = self.parent_tie
        if pt is not None:
            v = (
                st.vm_up
                if st.vm_up is not None
                else float(meas.vm_pu[self.labels.index(pt.bus_label)])
            )
            st.rounds.append(
                {
                    "round": r,
                    "tie": pt.label,
                    "role": "child",
                    "vm_pu": v if math.isfinite(v) else None,
                    "p_mw": dec.p_in_mw,
                    "q_mvar": dec.q_in_mvar,
                }
            )

    # length: the consensus-ADMM rounds of clustersim.agents.admm, steps 1-5 in order
    async def _admm_rounds(self, meas: Measurement, st: _Interval) -> Decision:
        """Consensus ADMM on the ties' boundary voltages and draws
        (:mod:`clustersim.agents.admm`): solve with the coupling terms, then per round exchange
        the copies, update consensus, duals and penalty, and re-optimize (warm-started) while a
        tie's primal residual is above the tolerance and the deadline allows."""
        s = self.settings
        c = self.controller
        pt = self.parent_tie
        ties = [(t, True) for t in self.children] + ([(pt, False)] if pt is not None else [])
        start = self._admm_start(meas, ties)
        band = None
        if pt is not None:
            z = self._admm[(pt.label, "vm")].z
            band = (z - s.boundary_band_pu, z + s.boundary_band_pu)
        # a parent's copies of its children's draws are decisions: their loads leave the base
        pq = {(t.table, t.row): (0.0, 0.0) for t in self.children}
        draws = []
        for t in self.children:
            z_p, z_q = start[t.label]
            half = DRAW_BAND * max(math.hypot(z_p, z_q), DRAW_FLOOR_MVA)
            col = c.cluster.col_of_bus(t.bus)
            draws += [
                (tie_draw_lever(t.label, col, "p", z_p - half, z_p + half), z_p),
                (tie_draw_lever(t.label, col, "q", z_q - half, z_q + half), z_q),
            ]

        def couplings() -> list[CouplingSpec]:
            return [
                (
                    q,
                    t.label,
                    t.bus,
                    self._admm[(t.label, q)].target(),
                    self._admm[(t.label, q)].rho,
                    k,
                )
                for t, _ in ties
                for q, k in zip(ADMM_QUANTITIES, t.scales, strict=True)
            ]

        prep, compute = self._solve(
            st, meas, None, pq, (), couplings=couplings(), band=band, draws=draws
        )
        dec, c2 = self._finish(st, prep)
        st.solves += 1
        st.t = self._now(st.t + (compute + c2))
        st.computed += compute + c2
        st.vm_up = dec.vm_boundary_pu
        for r in range(1, self._protocol_rounds() + 1):
            st.attempted += 1
            mine = {t.label: self._copies(dec, t, parent) for t, parent in ties}
            for t, parent in ties:
                v, p, q = mine[t.label]
                body = {"vm_pu": {t.bus_label: v}, "p_mw": {t.label: p}, "q_mvar": {t.label: q}}
                await self._send_round(st, t.child if parent else t.parent, r, body)
            self._record_round(st, r, meas, dec, self._assumed_draws(dec))
            st.t_info = st.t
            complete = True
            for t, parent in ties:
                got = await self._receive(st, t.child if parent else t.parent, r)
                theirs = (
                    (None, None, None)
                    if got is None
                    else (
                        got.vm_pu.get(t.bus_label),
                        got.p_mw.get(t.label),
                        got.q_mvar.get(t.label),
                    )
                )
                complete &= all(x is not None for x in theirs)
                for qty, k, m, th in zip(
                    ADMM_QUANTITIES, t.scales, mine[t.label], theirs, strict=True
                ):
                    state = self._admm[(t.label, qty)]
                    if th is not None:
                        self._theirs[(t.label, qty)] = float(th) * k
                    state.update(m * k, self._theirs.get((t.label, qty), state.z))
            st.completed += int(complete)
            st.t = self._now(max(st.t, st.t_info))
            if all(x.r <= s.admm_tolerance_pu for k, x in self._admm.items() if k[0] in mine):
                continue  # converged: no re-optimization, the messages still go out
            if st.t >= st.deadline:
                continue
            new_prep, compute = self._solve(
                st, meas, None, pq, [dec.result.x], couplings=couplings(), band=band, draws=draws
            )
            new, c2 = self._finish(st, new_prep)
            compute += c2
            st.computed += compute
            if st.t + compute <= st.deadline:
                dec = new
                st.vm_up = dec.vm_boundary_pu
                st.t = self._now(st.t + compute)
                st.solves += 1
            else:  # abandoned at the deadline: the previous decision stands
                st.t = st.deadline
                self.controller.remember(dec)
        return dec

    def _admm_start(
        self, meas: Measurement, ties: Sequence[tuple[Tie, bool]]
    ) -> dict[str, tuple[float, float]]:
        """Start every tie's ADMM states for this interval (:meth:`TieState.start`): the
        voltage's at the measured tie voltage, the draw's (in :attr:`Tie.scales` units) at this
        side's estimate of the tie's flow — measured by a parent, modelled by a child. Returns
        the draw estimates (MW, Mvar) per tie."""
        c = self.controller
        out = {}
        for tie, parent in ties:
            vm = float(meas.vm_pu[self.labels.index(tie.bus_label)])
            if parent:
                (b,) = [b for b in c.cluster.downstream if (b.table, b.row) == (tie.table, tie.row)]
                out[tie.label] = boundary_flow(meas, b)
            else:
                out[tie.label] = c.modelled_draw(meas)
            values = (vm if math.isfinite(vm) else 1.0, *out[tie.label])
            for q, v, k in zip(ADMM_QUANTITIES, values, tie.scales, strict=True):
                self._admm.setdefault((tie.label, q), TieState(rho=self.settings.admm_rho))
                self._admm[(tie.label, q)].start(v * k)
        return out

    def _copies(self, dec: Decision, tie: Tie, parent: bool) -> tuple[float, float, float]:
        """This side's copies of ``tie``'s voltage (p.u.) and draw (MW, Mvar) under ``dec``: the
        voltage it holds at the tie bus and the draw it assumes there (parent), or the
        voltage it chose to assume and the draw it predicts (child)."""
        if parent:
            p, q = dec.tie_draws[tie.label]
            return float(dec.vm_subnet_pu[dec_col(self.controller, tie.bus)]), p, q
        assert dec.vm_boundary_pu is not None  # a child's ADMM problem decides its boundary
        return float(dec.vm_boundary_pu), dec.p_in_mw, dec.q_in_mvar

    def _assumed_draws(self, dec: Decision) -> dict[tuple[str, int], tuple[float, float]]:
        """The children's draws ``dec`` assumed, keyed ``(table, row)`` of their ties."""
        return {
            (t.table, t.row): dec.tie_draws[t.label]
            for t in self.children
            if t.label in dec.tie_draws
        }

    def _child_draw(self, tie: Tie, meas: Measurement, dec: Decision | None) -> tuple[float, float]:
        """The P/Q a child cluster's last table says it draws through ``tie`` at the voltage
        this cluster's decision ``dec`` holds at the tie bus (without one: the measured voltage);
        the parent's power flow models the child as this constant load."""
        table = self._tables[tie.child][0]
        if dec is not None:
            v = float(dec.vm_subnet_pu[dec_col(self.controller, tie.bus)])
        else:
            v = float(meas.vm_pu[self.labels.index(tie.bus_label)])
        if not math.isfinite(v):
            v = float(np.mean(table.vm_pu))
        return float(table.at(v, "p_mw")), float(table.at(v, "q_mvar"))

    async def _empty_rounds(self, st: _Interval) -> None:
        """The coordination rounds of an agent that has no measurement yet (its first one was
        lost): it still sends its round messages, empty, and takes its neighbours', so that no
        neighbour waits for a message that is not coming."""
        for r in range(1, self._protocol_rounds() + 1):
            to, frm = self._round_peers(r)
            for nb in to:
                await self._send_round(st, nb, r, {})
            for nb in frm:
                await self._receive(st, nb, r)

    def _info(self, dec: Decision, st: _Interval, meas: Measurement) -> dict[str, Any]:
        r = dec.result
        pred = {
            tie.bus_label: float(dec.vm_subnet_pu[dec_col(self.controller, tie.bus)])
            for tie in self.children
        }
        used: dict[str, float] = {}
        if self.parent_tie is not None:
            v = st.vm_up
            if v is None:
                v = float(meas.vm_pu[self.labels.index(self.parent_tie.bus_label)])
            if math.isfinite(v):
                used[self.parent_tie.bus_label] = v
        fin = [float(x) for x in r.f]
        return {
            "n_var": int(dec.n_var),
            "evaluations": st.evaluations,
            "generations": int(r.generations),
            "solves": st.solves,
            "solve_time_s": st.solve_wall_s,
            "compute_s": float(st.computed),
            "f_voltage_pu": fin[0] if math.isfinite(fin[0]) else None,
            "f_loss_mw": fin[1] if math.isfinite(fin[1]) else None,
            "f_cost": fin[2] if math.isfinite(fin[2]) else None,
            "cv": float(r.cv) if math.isfinite(r.cv) else None,
            "vm_pred_min_pu": float(np.min(dec.vm_pred_pu)) if dec.vm_pred_pu.size else None,
            "vm_pred_max_pu": float(np.max(dec.vm_pred_pu)) if dec.vm_pred_pu.size else None,
            "meas_step": int(meas.step) if meas.step >= 0 else 0,
            "age_of_information_s": max(0.0, st.t - self._meas_t),
            "rounds_attempted": st.attempted if self.neighbours else 0,
            "rounds_completed": st.completed,
            "boundary_pred_vm_pu": pred,
            "boundary_used_vm_pu": used,
            "table_age": st.table_age,
            "rounds": st.rounds,
        }


@dataclass
class _Interval:
    """The running state of one agent's control interval ``n``."""

    n: int
    t: float
    """the agent's simulated instant"""
    deadline: float
    records: list[MessageRecord] = field(default_factory=list)
    sent: int = 0
    t_info: float = 0.0
    """latest delivery instant of a usable message of the current round"""
    computed: float = 0.0
    """simulated compute time"""
    evaluations: int = 0
    solve_wall_s: float = 0.0
    solves: int = 0
    attempted: int = 0
    completed: int = 0
    vm_up: float | None = None
    """the upstream boundary voltage announced by the parent (None: the measured one)"""
    table_age: dict[str, int] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    """this agent's side of its ties per coordination round (``RoundRecord`` fields)"""


@dataclass
class _Sweep:
    """What one agent carries from one value-table sweep to the next within an interval."""

    prep: _Prepared | None = None
    dec: Decision | None = None
    draws: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)
    """the children's draws the last optimization assumed, keyed ``(table, row)`` of the tie"""
    centre: float = math.nan
    """centre of the next table's voltages (the measured, then the announced boundary voltage)"""
    band: float = math.nan


def table_body(table: ValueTable) -> dict[str, list[float]]:
    """A value table as the ``table`` of a :class:`~clustersim.broker.envelope.BoundaryBody`."""
    return {k: [float(x) for x in getattr(table, k)] for k in TableBody.model_fields}


def table_from_body(body: TableBody) -> ValueTable:
    """The value table a boundary message carries."""
    return ValueTable(
        **{k: np.asarray(getattr(body, k), dtype=float) for k in TableBody.model_fields}
    )


def dec_col(controller: Controller, bus: int) -> int:
    return controller.cluster.col_of_bus(bus)
