"""The plant on the wire.

:class:`PlantNode`: per control interval ``n`` (``t0 = n * interval_s``) it sends each agent its
measurement (voltages of the agent's sub-network, the flows at its boundary branches, device
states), waits for exactly one setpoint per agent (wall-clock watchdog), asks the channel model
when each arrived, and runs the interval's plant steps, applying every setpoint at the first
plant step that starts at or after its arrival (in arrival order). A lost setpoint, or one
arriving after the interval's end (late), leaves the previous one in force; an agent without an
applied setpoint for longer than ``[comm] agent_timeout_s`` (or gone silent) has its devices
handed to the local Volt-VAR / line-drop-compensation fallback of
:mod:`clustersim.agents.local` until it is heard again. Setpoints are checked at receipt
(sender, device ownership, physical range): a refused one changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from clustersim.agents.control import Controller
from clustersim.agents.local import LocalController
from clustersim.agents.node import MISMATCH, PLANT, meas_body
from clustersim.broker.auth import Keyring
from clustersim.broker.channel import Channel
from clustersim.broker.clock import RealtimeClock
from clustersim.broker.envelope import BROADCAST, Envelope, MessageRecord, SetpointMsg
from clustersim.broker.node import Node
from clustersim.broker.transport import Transport
from clustersim.errors import MessageError
from clustersim.sim.plant import Plant

__all__ = ["AgentSpec", "CosimResult", "CosimSettings", "PlantNode", "comm_summary"]


@dataclass(frozen=True)
class AgentSpec:
    """What the plant knows of an agent: the buses it is told about, the boundary branches
    whose flows it gets, the devices it may set."""

    name: str
    buses: tuple[int, ...] | None
    boundaries: tuple[tuple[str, int, str], ...]
    devices: frozenset[str]

    @classmethod
    def of(cls, c: Controller) -> AgentSpec:
        """What the plant needs to know of controller ``c``'s agent."""
        cl = c.cluster
        buses = None
        if cl.upstream_bus is not None or cl.downstream:
            extra = [cl.upstream_bus] if cl.upstream_bus is not None else []
            buses = tuple(sorted({*cl.buses, *extra}))
        return cls(
            name=c.name,
            buses=buses,
            boundaries=tuple((b.table, b.row, b.side) for b in cl.downstream),
            devices=frozenset(lv.device for lv in c.active),
        )


@dataclass
class CosimSettings:
    """The plant node's protocol settings (intervals and deadlines in simulated seconds,
    watchdog and startup timeout in wall seconds)."""

    interval_s: int = 900
    deadline_s: float = 60.0
    rounds: int = 2
    watchdog_s: float = 30.0
    startup_timeout_s: float = 120.0
    agent_timeout_s: float = 1800.0
    speed: float | None = None
    """real time: simulated seconds per wall second; ``None``: virtual time"""
    fingerprint: dict[str, str] = field(default_factory=dict)
    """the resolved scenario's fingerprint, sent with the clock's start for the agents to
    compare with their own"""


@dataclass
class CosimResult:
    """What a co-simulation produced: the rows of control.parquet and messages.parquet, the
    Pareto fronts, the communication KPIs and the Mesa model's per-interval tables."""

    control_rows: list[dict[str, Any]] = field(default_factory=list)
    message_rows: list[dict[str, Any]] = field(default_factory=list)
    round_rows: list[dict[str, Any]] = field(default_factory=list)
    """each agent's side of its ties per interval and coordination round (see
    :func:`coordination_frame`)"""
    fronts: dict[tuple[int, str], Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    steps: pd.DataFrame | None = None
    agent_steps: pd.DataFrame | None = None
    controllers: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)


class PlantNode(Node):
    """The plant on the wire (see module docstring)."""

    def __init__(
        self,
        plant: Plant,
        transport: Transport,
        channel: Channel,
        *,
        run_id: str,
        specs: Sequence[AgentSpec],
        settings: CosimSettings,
        local_settings: Any = None,
        progress: Callable[[int], None] | None = None,
        keys: Keyring | None = None,
    ) -> None:
        self.plant = plant
        self.channel = channel
        self.specs = list(specs)
        self.cfg = settings
        self.local_settings = local_settings
        self.progress = progress
        self.owner = {d: s.name for s in specs for d in s.devices}
        acl: dict[str, list[str | tuple[str, str]]] = {
            "setpoint": [(s.name, PLANT) for s in specs],
            "clock": [(PLANT, BROADCAST)],
            "status": ["*"],
            "log": ["*"],
        }
        super().__init__(transport, run_id=run_id, me=PLANT, acl=acl, check=self._check, keys=keys)
        self.spi = max(1, settings.interval_s // plant.plant_step_s)
        self.n_intervals = -(-plant.n_steps // self.spi)
        self.current = 0
        self.dead: set[str] = set()
        self.last_ok = {s.name: 0.0 for s in specs}
        self.fallback: set[str] = set()
        self._local: dict[str, Any] = {}
        self.result = CosimResult(controllers=[s.name for s in specs])
        self._agent_rejected: dict[str, dict[str, int]] = {}
        self._schedule: dict[int, list[tuple[float, str, dict[str, dict[str, float]]]]] = {}
        """setpoints waiting for the plant step at which they take effect (may be the next
        interval's first step)"""
        self.clock = RealtimeClock(settings.speed) if settings.speed else None

    # ------------------------------------------------------------------ checks
    def _check(self, env: Envelope) -> str | None:
        if not isinstance(env, SetpointMsg):
            return None
        if env.step < self.current:
            return "stale"
        for dev, values in env.body.setpoints.items():
            if self.owner.get(dev) != env.src:
                return "not_owner"
            self.plant.check_setpoint(dev, **values)  # MessageError → "range"
        return None

    # ------------------------------------------------------------------ run
    async def begin(self) -> None:
        """Go online and wait until every agent is (re-announcing the start each second)."""
        if not self._started:
            await self.start()
        loop = asyncio.get_running_loop()
        end = loop.time() + self.cfg.startup_timeout_s
        waiting = {s.name for s in self.specs}
        start = {"event": "start", "t_s": 0.0, "scenario": self.cfg.fingerprint}
        while waiting and loop.time() < end:
            await self.send("clock", BROADCAST, body=start)
            stop = min(end, loop.time() + 1.0)
            while waiting and loop.time() < stop:
                await self.pump(max(0.01, stop - loop.time()))
                waiting -= {e.src for e in self.statuses if e.body.state == "online"}
                for e in self.statuses:
                    if e.src in waiting and e.body.reason.startswith(MISMATCH):
                        waiting.discard(e.src)
                        self.dead.add(e.src)
                        await self.fault("mismatch", f"agent {e.src}: {e.body.reason}", 0)
        for name in sorted(waiting):
            self.dead.add(name)
            await self.fault("startup", f"agent {name} did not come online", 0)
        if self.clock is not None:
            self.clock.start(0.0)

    async def interval(self, n: int) -> dict[str, Any]:
        """Control interval ``n``: measurements out, setpoints in, plant steps (module doc)."""
        if self.clock is not None:
            return await self._interval_realtime(n)
        plant, cfg, spi = self.plant, self.cfg, self.spi
        self.current = n
        k0 = n * spi
        k1 = min(k0 + spi, plant.n_steps)
        t0 = k0 * float(plant.plant_step_s)
        sent = await self._send_measurements(k0, t0)
        loop = asyncio.get_running_loop()
        wall_end = loop.time() + cfg.watchdog_s * (cfg.rounds + 2)
        states: dict[str, dict[str, Any]] = {s.name: _fresh_state() for s in self.specs}
        rows_before = len(self.result.message_rows)
        for s in self.specs:
            name = s.name
            if name in self.dead and not self.has("setpoint", name, n):
                continue
            got = await self.expect(
                "setpoint", name, n, timeout_s=max(0.05, wall_end - loop.time())
            )
            if got is None:
                self.dead.add(name)
                await self.fault("watchdog", f"no setpoint from {name}", n)
                continue
            self.dead.discard(name)
            env, nbytes = got
            sent += self._take_setpoint(name, env, nbytes, states[name], k_min=k0)
        for k in range(k0, k1):
            await self._plant_step(k, n)
        return self._interval_result(states, sent, rows_before)

    async def _interval_realtime(self, n: int) -> dict[str, Any]:
        """Interval ``n`` in real time: the plant steps at their wall instants, and whatever
        setpoints have arrived by a step's start (their channel delivery instant included) take
        effect at it; a setpoint still missing at the interval's end is not waited for (it is
        late when it comes)."""
        plant, clock, spi = self.plant, self.clock, self.spi
        assert clock is not None
        self.current = n - 1  # a setpoint of the previous interval is late, not stale
        k0 = n * spi
        k1 = min(k0 + spi, plant.n_steps)
        dt = float(plant.plant_step_s)
        await clock.sleep_until(k0 * dt)
        sent = await self._send_measurements(k0, clock.now_s())
        states: dict[str, dict[str, Any]] = {s.name: _fresh_state() for s in self.specs}
        rows_before = len(self.result.message_rows)
        for k in range(k0, k1):
            await clock.sleep_until(k * dt)
            while await self.pump(0.0):  # everything the transport holds now
                pass
            for s in self.specs:
                for m in (n - 1, n):
                    if self.has("setpoint", s.name, m):
                        got = await self.expect("setpoint", s.name, m, timeout_s=0.0)
                        assert got is not None
                        env, nbytes = got
                        st = states[s.name] if m == n else _fresh_state()
                        sent += self._take_setpoint(s.name, env, nbytes, st, k_min=k)
            await self._plant_step(k, n)
        return self._interval_result(states, sent, rows_before)

    async def _send_measurements(self, k0: int, t_send_s: float) -> int:
        meas = self.plant.measure()
        for s in self.specs:
            await self.send(
                "meas",
                s.name,
                step=k0,
                t_send_s=t_send_s,
                body=meas_body(meas, s.buses, self.plant.net, s.boundaries),
            )
        return len(self.specs)

    def _take_setpoint(
        self, name: str, env: Envelope, nbytes: int, st: dict[str, Any], *, k_min: int
    ) -> int:
        """Judge one received setpoint (channel verdict: lost, late, arrival instant), schedule
        it for the first plant step at or after its arrival (not before ``k_min``), and keep its
        records. Returns the messages the agent reports having sent for it."""
        assert isinstance(env, SetpointMsg)
        n = env.step
        dt = float(self.plant.plant_step_s)
        k0 = n * self.spi
        t0 = k0 * dt
        d = self.channel.deliver(name, PLANT, env.seq, env.t_send_s)
        late = (not d.lost) and d.t_deliver_s >= t0 + self.cfg.interval_s
        applied = None
        if not d.lost and not late:
            applied = max(k_min, k0 + math.ceil((d.t_deliver_s - t0) / dt - 1e-9))
            self._schedule.setdefault(applied, []).append(
                (
                    d.t_deliver_s,
                    name,
                    {k: {str(q): x for q, x in v.items()} for k, v in env.body.setpoints.items()},
                )
            )
        rec = MessageRecord.received(
            env, PLANT, nbytes, t_deliver_s=None if d.lost else d.t_deliver_s, late=late
        )
        st.update(
            setpoint_received=True,
            lost=d.lost,
            late=late,
            t_arrival_s=None if d.lost else d.t_deliver_s,
        )
        self.result.message_rows.append(rec.model_dump())
        info = env.body.info
        if info is None:
            return 0
        self.result.message_rows.extend(m.model_dump() for m in info.messages)
        self.result.round_rows.extend(
            {"interval": n, "controller": name, **r.model_dump()} for r in info.rounds
        )
        st.update(
            age_of_information_s=info.age_of_information_s,
            rounds_completed=info.rounds_completed,
        )
        self.result.control_rows.append(_control_row(n, t0, name, env, info, d.lost, late, applied))
        self._agent_rejected[name] = dict(info.rejected)
        return int(info.sent)

    async def _plant_step(self, k: int, n: int) -> None:
        """Plant step ``k`` (of interval ``n``): the setpoints scheduled for it in arrival order,
        the fallback hand-over of agents silent for longer than ``agent_timeout_s``, the power
        flow."""
        plant, cfg = self.plant, self.cfg
        for t_arr, name, sps in sorted(self._schedule.pop(k, []), key=lambda x: (x[0], x[1])):
            for dev, values in sps.items():
                try:
                    plant.set_setpoint(dev, **values)
                except MessageError as exc:  # checked at receipt; kept as a guard
                    self.result.rejected.append(str(exc))
            self.last_ok[name] = t_arr
            if name in self.fallback:
                self.fallback.discard(name)
                await self.fault("fallback_off", f"{name} is back in control", n)
        t_k = k * float(plant.plant_step_s)
        for s in self.specs:
            if s.name not in self.fallback and t_k - self.last_ok[s.name] > cfg.agent_timeout_s:
                self.fallback.add(s.name)
                await self.fault(
                    "fallback_on",
                    f"agent {s.name} silent for {t_k - self.last_ok[s.name]:.0f} s: "
                    "its devices go to local control",
                    n,
                )
        plant.step()
        if self.fallback:
            self._run_fallback()
        if self.progress is not None:
            self.progress(plant.step_index)

    def _interval_result(
        self, states: dict[str, dict[str, Any]], sent: int, rows_before: int
    ) -> dict[str, Any]:
        new_rows = self.result.message_rows[rows_before:]
        for name, st in states.items():
            st["fallback"] = name in self.fallback
        return {
            "nodes": states,
            "counters": {
                "messages_sent": sent,
                "messages_lost": sum(1 for r in new_rows if r["lost"]),
                "messages_late": sum(1 for r in new_rows if r["late"]),
                "agents_in_fallback": len(self.fallback),
            },
        }

    def _run_fallback(self) -> None:
        meas = self.plant.measure()
        for name in sorted(self.fallback):
            local = self._local.get(name)
            if local is None:
                spec = next(s for s in self.specs if s.name == name)
                local = LocalController(
                    self.plant.net,
                    self.plant.resources,
                    self.plant.where,
                    settings=self.local_settings,
                    plant_step_s=self.plant.plant_step_s,
                    devices=sorted(spec.devices),
                )
                self._local[name] = local
            for dev, values in local.setpoints(meas).items():
                self.plant.set_setpoint(dev, **values)

    async def end(self) -> None:
        """Tell everyone the run is over and collect their last words (bounded)."""
        await self.send(
            "clock",
            BROADCAST,
            step=self.n_intervals,
            body={"event": "stop", "t_s": self.n_intervals * self.cfg.interval_s},
        )
        loop = asyncio.get_running_loop()
        end = loop.time() + 5.0
        names = {s.name for s in self.specs} - self.dead
        while loop.time() < end:
            off = {e.src for e in self.statuses if e.body.state == "offline"}
            if names <= off:
                break
            await self.pump(max(0.01, end - loop.time()))


def _fresh_state() -> dict[str, Any]:
    return {"setpoint_received": False, "lost": False, "late": False}


def _control_row(
    n: int,
    t0: float,
    name: str,
    env: SetpointMsg,
    info: Any,
    lost: bool,
    late: bool,
    applied: int | None,
) -> dict[str, Any]:
    nan = float("nan")

    def f(x: float | None) -> float:
        return nan if x is None else float(x)

    return {
        "interval": n,
        "time_s": t0,
        "controller": name,
        "n_var": info.n_var,
        "f_voltage_pu": f(info.f_voltage_pu),
        "f_loss_mw": f(info.f_loss_mw),
        "f_cost": f(info.f_cost),
        "cv": f(info.cv),
        "feasible": bool(info.cv is not None and info.cv <= 1e-12),
        "solve_time_s": float(info.solve_time_s),
        "evaluations": int(info.evaluations),
        "generations": int(info.generations),
        "vm_pred_min_pu": f(info.vm_pred_min_pu),
        "vm_pred_max_pu": f(info.vm_pred_max_pu),
        "setpoints": json.dumps(
            {k: dict(v) for k, v in env.body.setpoints.items()}, sort_keys=True
        ),
        "solves": int(info.solves),
        "compute_s": float(info.compute_s),
        "t_sent_s": float(env.t_send_s),
        "applied_step": -1 if applied is None else int(applied),
        "lost": bool(lost),
        "late": bool(late),
        "age_of_information_s": f(info.age_of_information_s),
        "rounds_attempted": int(info.rounds_attempted),
        "rounds_completed": int(info.rounds_completed),
        "boundary_pred_vm_pu": json.dumps(dict(info.boundary_pred_vm_pu), sort_keys=True),
        "boundary_used_vm_pu": json.dumps(dict(info.boundary_used_vm_pu), sort_keys=True),
        "table_age": json.dumps(dict(info.table_age), sort_keys=True),
        "messages_sent": int(info.sent),
    }


# ------------------------------------------------------------------------- summary
def comm_summary(node: PlantNode) -> dict[str, Any]:
    """The communication KPIs of ``summary.json`` (see README, results folder)."""
    rows = node.result.message_rows
    ctl = node.result.control_rows
    sent = int(node.sent["meas"]) + sum(int(r["messages_sent"]) for r in ctl)
    lat = np.array(
        [
            (r["t_deliver_s"] - r["t_send_s"]) * 1000.0
            for r in rows
            if not r["lost"] and r["t_deliver_s"] is not None
        ]
    )
    rejected: Counter[str] = Counter(node.rejected_counts())
    for counts in node._agent_rejected.values():
        rejected.update(counts)
    aoi = [r["age_of_information_s"] for r in ctl if np.isfinite(r["age_of_information_s"])]
    rounds = [r["rounds_completed"] for r in ctl if r["rounds_attempted"] > 0]
    mismatch = _boundary_mismatch(ctl)
    ages = [a for r in ctl for a in json.loads(r["table_age"]).values()]
    final = final_residuals(coordination_frame(node.result.round_rows))
    faults = [f.as_dict() for f in node.faults] + [
        {"node": f["node"], "kind": "remote", "detail": f["message"], "step": f["step"]}
        for f in node.remote_faults
    ]
    return {
        "messages_sent": sent,
        "messages_lost": int(sum(1 for r in rows if r["lost"])),
        "messages_late": int(sum(1 for r in rows if r["late"])),
        "messages_rejected": int(sum(rejected.values())),
        "messages_rejected_by_reason": dict(sorted(rejected.items())),
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
        "latency_p95_ms": round(float(np.percentile(lat, 95)), 3) if lat.size else None,
        "mean_age_of_information_s": round(float(np.mean(aoi)), 3) if aoi else None,
        "coordination_rounds_mean": round(float(np.mean(rounds)), 3) if rounds else 0.0,
        "boundary_mismatch_pu": mismatch,
        **final,
        "table_age_mean_intervals": round(float(np.mean(ages)), 3) if ages else None,
        "table_age_max_intervals": int(max(ages)) if ages else None,
        "faults": faults,
        "agents_lost": sorted(node.dead),
        "messages_duplicate": int(node.inbox.duplicates),
        "transport_events": [e.as_dict() for e in node.transport_events]
        + [
            {"node": e["node"], "kind": "remote", "detail": e["message"], "step": e["step"]}
            for e in node.remote_events
        ],
    }


COORDINATION_COLUMNS = [
    "interval",
    "round",
    "tie",
    "parent",
    "child",
    "vm_parent_pu",
    "vm_child_pu",
    "p_parent_mw",
    "p_child_mw",
    "q_parent_mvar",
    "q_child_mvar",
    "residual_vm_pu",
    "residual_p_mw",
    "table",
]
"""columns of coordination.parquet: one row per control interval, coordination round and tie.
``vm_parent_pu`` is the voltage the parent's decision of that round holds at the boundary bus,
``vm_child_pu`` the one the child's decision assumed; ``p_child_mw``/``q_child_mvar`` the draw
the child's decision predicts, ``p_parent_mw``/``q_parent_mvar`` the one the parent's assumed.
The residuals are their absolute differences (the primal residual of the tie's boundary
values); ``table`` is the value table the child sent in that round (JSON, value-table up-sweeps),
else empty."""


def coordination_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """``coordination.parquet`` from the agents' round records (:class:`~clustersim.broker.envelope.RoundRecord` fields
    plus ``interval`` and ``controller``): the parent's and the child's side of each tie and
    round side by side."""
    by_key: dict[tuple[int, int, str], dict[str, Any]] = {}
    for r in rows:
        row = by_key.setdefault(
            (r["interval"], r["round"], r["tie"]),
            {c: None for c in COORDINATION_COLUMNS}
            | {"interval": r["interval"], "round": r["round"], "tie": r["tie"], "table": ""},
        )
        side = r["role"]
        row[side] = r["controller"]
        row[f"vm_{side}_pu"] = r["vm_pu"]
        row[f"p_{side}_mw"] = r["p_mw"]
        row[f"q_{side}_mvar"] = r["q_mvar"]
        if r.get("table"):
            row["table"] = json.dumps(r["table"], sort_keys=True)
    sides: dict[tuple[int, str], dict[str, str]] = {}
    for (n, _, tie), row in by_key.items():  # an up-sweep round has the child's side only
        known = sides.setdefault((n, tie), {})
        known.update({k: row[k] for k in ("parent", "child") if row[k] is not None})
    for (n, _, tie), row in by_key.items():
        row.update(sides[(n, tie)])
    frame = pd.DataFrame([by_key[k] for k in sorted(by_key)], columns=COORDINATION_COLUMNS).astype(
        {c: float for c in COORDINATION_COLUMNS[5:13]}
    )
    frame["residual_vm_pu"] = (frame.vm_parent_pu - frame.vm_child_pu).abs()
    frame["residual_p_mw"] = (frame.p_parent_mw - frame.p_child_mw).abs()
    return frame


def final_residuals(frame: pd.DataFrame) -> dict[str, float | None]:
    """``summary.json``'s primal residuals: per interval and tie, the residual of the last round
    that has both sides, averaged over intervals and ties (None without rounds)."""
    both = frame.dropna(subset=["residual_vm_pu"])
    last = both.sort_values("round").groupby(["interval", "tie"]).tail(1)
    out: dict[str, float | None] = {"primal_residual_vm_pu": None, "primal_residual_p_mw": None}
    if len(last):
        out["primal_residual_vm_pu"] = round(float(last.residual_vm_pu.mean()), 6)
        out["primal_residual_p_mw"] = round(float(last.residual_p_mw.mean()), 6)
    return out


def _boundary_mismatch(ctl: Sequence[Mapping[str, Any]]) -> float | None:
    """Mean |voltage the parent predicts at a boundary bus − voltage the child assumed there|,
    over intervals and ties (p.u.)."""
    pred: dict[tuple[int, str], float] = {}
    used: dict[tuple[int, str], float] = {}
    for r in ctl:
        for lab, v in json.loads(r["boundary_pred_vm_pu"]).items():
            pred[(r["interval"], lab)] = v
        for lab, v in json.loads(r["boundary_used_vm_pu"]).items():
            used[(r["interval"], lab)] = v
    diffs = [abs(pred[k] - used[k]) for k in pred.keys() & used.keys()]
    return round(float(np.mean(diffs)), 6) if diffs else None
