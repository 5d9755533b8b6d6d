"""A protocol node: one participant of a run (the plant or an agent) on a :class:`Transport`.

It owns what every node of the virtual-time protocol does alike:

- **sending**: one ``seq`` counter per message kind, every envelope validated and encoded by
  :mod:`clustersim.broker.envelope`; the messages of the current protocol window are kept so
  they can be sent again after a broker outage (see below);
- **signing**: with a :class:`~clustersim.broker.auth.Keyring`, every message it sends is signed
  with its own key, and every message it receives must be signed by its sender (reason
  ``auth`` otherwise, before anything else of it is read);
- **receiving**: every message goes through the node's :class:`~clustersim.broker.envelope.Inbox`
  (signature, schema, sender, replay, range check); what passes is filed by
  ``(kind, src, step, round)`` until the protocol asks for it with :meth:`Node.expect`, which
  waits for that one message up to a wall-clock watchdog. A protocol step always knows which messages it expects, so the wait
  ends with the message or, if the peer is gone, with the watchdog: never with a guess;
- **reconnects**: after its own transport reconnects, a node re-announces itself with a
  ``status`` message (``online``, reason ``reconnected``); a node that sees such an announcement
  sends its window again (at most once per :data:`RESEND_MIN_S`). A message the broker had accepted but not delivered when it died is
  so sent again once everyone is back; the receiver's guard drops the copies that did arrive
  (byte-identical: counted as duplicates, not refused). A reconnect is a transport event
  (``transport_events`` in ``summary.json``), not a fault of the simulation.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from clustersim.broker.auth import Keyring
from clustersim.broker.envelope import (
    BROADCAST,
    MAX_SEQ,
    AclRule,
    ClockMsg,
    Envelope,
    EnvelopeError,
    Inbox,
    LogMsg,
    MessageRecord,
    StatusMsg,
    encode,
    loads_bounded,
    make_envelope,
    parse_topic,
    topic_filter,
)
from clustersim.broker.transport import Transport

__all__ = ["Fault", "Node"]

log = logging.getLogger(__name__)

WINDOW = 512
"""messages kept for re-sending after a reconnect"""
RESEND_MIN_S = 1.0
"""least wall time between two re-sends of a node's window (seconds)"""
REFUSED_KEPT = 1000
"""refused messages a node keeps rows for (the latest); their counts by reason are complete"""
REFUSED_SAMPLE = 50
"""refused messages an agent reports with one setpoint (a sample: their counts are complete), so
that junk sent to an agent cannot grow its setpoints"""


@dataclass(frozen=True)
class Fault:
    """Something that went wrong and was survived: recorded in ``summary.json`` ``faults``."""

    node: str
    kind: str
    detail: str
    step: int | None = None
    wall_time_s: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        """The fault as ``summary.json`` lists it: no wall-clock time, so that a fault the
        channel model causes (a fallback after lost setpoints) is the same in every run of the
        scenario and seed."""
        return {"node": self.node, "kind": self.kind, "detail": self.detail, "step": self.step}


def _lenient_header(payload: bytes) -> dict[str, Any]:
    """``step``, ``round``, ``seq``, ``t_send_s`` of a refused payload, where it has readable
    ones (for its row in ``messages.parquet``); nothing else of it is trusted."""
    try:
        doc = loads_bounded(payload)
    except EnvelopeError:
        return {}
    if not isinstance(doc, dict):
        return {}
    out: dict[str, Any] = {}
    for key in ("step", "round", "seq"):
        v = doc.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_SEQ:
            out[key] = v
    t = doc.get("t_send_s")
    if isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t) and t >= 0:
        out["t_send_s"] = float(t)
    return out


class Node:
    """One participant of run ``run_id`` named ``me`` (see module docstring)."""

    def __init__(
        self,
        transport: Transport,
        *,
        run_id: str,
        me: str,
        acl: Mapping[str, Iterable[AclRule]],
        check: Any = None,
        keys: Keyring | None = None,
    ) -> None:
        self.transport = transport
        self.run_id = run_id
        self.me = me
        self.keys = keys.of(me) if keys is not None else None
        verify = self.keys.verify if self.keys is not None else None
        self.inbox = Inbox(acl, run_id=run_id, me=me, check=check, verify=verify)
        self._seq: Counter[str] = Counter()
        self._window: dict[tuple[str, int], bytes] = {}
        self._filed: dict[tuple[str, str, int, int], tuple[Envelope, int]] = {}
        self._taken: set[tuple[str, str, int, int]] = set()
        self.refused: deque[dict[str, Any]] = deque(maxlen=REFUSED_KEPT)
        """the latest refused messages, one entry each: the topic's kind/src/dst when readable,
        reason, bytes (their counts by reason: :meth:`rejected_counts`)"""
        self.refused_total = 0
        """refused messages so far, kept or not: the number of the next one"""
        self.extra: Counter[str] = Counter()
        """accepted messages the protocol had no use for (a second setpoint for one step)"""
        self.statuses: list[StatusMsg] = []
        self.faults: list[Fault] = []
        self.remote_faults: list[dict[str, Any]] = []
        """faults other nodes reported with ``log`` messages of level warning or error"""
        self.transport_events: list[Fault] = []
        """this node's transport events (reconnects): they depend on the broker, not the run"""
        self.remote_events: list[dict[str, Any]] = []
        """transport events other nodes reported with ``log`` messages of level info"""
        self.sent: Counter[str] = Counter()
        self.bytes_sent = 0
        self.resends = 0
        """times this node sent its window again"""
        self._last_resend = -math.inf
        self._resend_later: asyncio.Task[None] | None = None
        self._started = False
        self.online_at_start = True
        """whether :meth:`start` announces the node online"""
        transport.on_reconnect = self._reconnected

    # ------------------------------------------------------------------ setup
    async def start(self) -> None:
        """Connect, subscribe to the messages for this node and its broadcasts, and go online
        (unless :attr:`online_at_start` is false: a node that answers the clock's start
        instead); nothing when started already."""
        if self._started:
            return
        await self.transport.start()
        await self.transport.subscribe(topic_filter(self.run_id, dst=self.me))
        await self.transport.subscribe(topic_filter(self.run_id, dst=BROADCAST))
        self._started = True
        if self.online_at_start:
            await self.status("online")

    async def close(self, state: str = "offline", reason: str = "") -> None:
        """Announce ``state`` with ``reason`` and close the transport; nothing when not started."""
        if self._started:
            try:
                await self.status(state, reason)
            finally:
                self._started = False
                if self._resend_later is not None:
                    self._resend_later.cancel()
                await self.transport.close()

    async def status(self, state: str, reason: str = "") -> None:
        """Broadcast a ``status`` message: ``state`` (``online``, ``offline``, ...), ``reason``."""
        await self.send("status", BROADCAST, body={"state": state, "reason": reason})

    async def fault(self, kind: str, detail: str, step: int | None = None) -> None:
        """Record a fault and tell the others (a ``log`` message of level warning)."""
        await self._record(self.faults, "warning", Fault(self.me, kind, detail, step))

    async def event(self, kind: str, detail: str, step: int | None = None) -> None:
        """Record an event of the transport (not of the simulation: it depends on the broker's
        wall-clock behaviour) and tell the others (a ``log`` message of level info)."""
        await self._record(self.transport_events, "info", Fault(self.me, kind, detail, step))

    async def _record(self, into: list[Fault], level: str, what: Fault) -> None:
        into.append(what)
        if self._started:
            await self.send(
                "log",
                BROADCAST,
                step=what.step or 0,
                body={"level": level, "message": f"{what.kind}: {what.detail}"[:2000]},
            )

    async def _reconnected(self) -> None:
        await self.status("online", "reconnected")
        await self.event("reconnected", "broker connection lost and re-established")
        await self._resend()

    async def _resend(self) -> None:
        """Send the window again, at most once per :data:`RESEND_MIN_S`: a request within that
        time after the last re-send is served once when it has passed (so announcements in a
        burst cost one re-send, and the last of them is still served)."""
        loop = asyncio.get_running_loop()
        wait = self._last_resend + RESEND_MIN_S - loop.time()
        if wait > 0:
            if self._resend_later is None or self._resend_later.done():
                self._resend_later = asyncio.ensure_future(self._resend_after(wait))
            return
        self._last_resend = loop.time()
        self.resends += 1
        for (topic, _), payload in list(self._window.items()):
            await self.transport.publish(topic, payload)

    async def _resend_after(self, wait_s: float) -> None:
        await asyncio.sleep(wait_s)
        if self._started:
            await self._resend()

    # ---------------------------------------------------------------- sending
    async def send(
        self,
        kind: str,
        dst: str,
        *,
        step: int = 0,
        round: int = 0,
        t_send_s: float = 0.0,
        body: Mapping[str, Any] | Any = None,
    ) -> int:
        """Publish one envelope; return its size in bytes."""
        seq = self._seq[kind]
        self._seq[kind] += 1
        fields: dict[str, Any] = {
            "run_id": self.run_id,
            "src": self.me,
            "dst": dst,
            "step": step,
            "round": round,
            "seq": seq,
            "t_send_s": float(t_send_s),
        }
        if body is not None:
            fields["body"] = body
        env = make_envelope(kind, **fields)
        payload = encode(env)
        if self.keys is not None:
            payload = self.keys.sign(env.topic, payload)
        if kind not in ("status", "log"):
            self._window[(env.topic, seq)] = payload
            while len(self._window) > WINDOW:
                self._window.pop(next(iter(self._window)))
        await self.transport.publish(env.topic, payload)
        self.sent[kind] += 1
        self.bytes_sent += len(payload)
        return len(payload)

    # -------------------------------------------------------------- receiving
    async def pump(self, timeout_s: float | None) -> bool:
        """Take one message from the transport and file it; False when none came in time."""
        got = await self.transport.receive(timeout_s)
        if got is None:
            return False
        topic, payload = got
        verdict = self.inbox.check(topic, payload)
        env = verdict.envelope
        if verdict.duplicate:  # a redelivery of what was already taken: nothing new
            return True
        if env is None:
            self._refused(topic, payload, verdict.reason)
            return True
        if isinstance(env, StatusMsg):
            self.statuses.append(env)
            await self.on_status(env)
            return True
        if isinstance(env, ClockMsg):
            await self.on_clock(env)
            return True
        if isinstance(env, LogMsg):
            self._remote_log(env)
            return True
        key = (env.kind, env.src, env.step, env.round)
        if key in self._filed or key in self._taken:
            self.extra[env.kind] += 1
            return True
        self._filed[key] = (env, len(payload))
        return True

    def _refused(self, topic: str, payload: bytes, reason: str | None) -> None:
        """Keep what can be read of a refused message (its topic's kind, sender and receiver,
        the header fields the payload had) for ``messages.parquet``."""
        entry: dict[str, Any] = {"reason": reason, "bytes": len(payload)}
        try:
            _, kind, src, dst = parse_topic(topic)
            entry.update(kind=kind, src=src, dst=dst)
        except EnvelopeError:
            pass
        entry.update(_lenient_header(payload))
        self.refused.append(entry)
        self.refused_total += 1

    def _remote_log(self, env: LogMsg) -> None:
        """Another node's log line: warnings and errors are its faults, info lines its
        transport events."""
        if env.src == self.me:
            return
        entry = {"node": env.src, "step": env.step, "message": env.body.message}
        if env.body.level in ("warning", "error"):
            self.remote_faults.append(entry)
        elif env.body.level == "info":
            self.remote_events.append(entry)

    async def on_status(self, env: StatusMsg) -> None:
        """A peer's status: re-send the window to a peer that has just reconnected."""
        if env.src != self.me and env.body.state == "online" and env.body.reason == "reconnected":
            await self._resend()

    async def on_clock(self, env: ClockMsg) -> None:
        """The clock's start / stop (the plant's); nodes that care override this."""

    async def expect(
        self, kind: str, src: str, step: int, round: int = 0, *, timeout_s: float
    ) -> tuple[Envelope, int] | None:
        """Wait for the message ``(kind, src, step, round)``; ``(envelope, bytes)`` or ``None``
        once ``timeout_s`` wall seconds pass without it (the watchdog)."""
        key = (kind, src, step, round)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while key not in self._filed:
            left = end - loop.time()
            if left <= 0:
                return None
            await self.pump(left)
        self._taken.add(key)
        return self._filed.pop(key)

    def has(self, kind: str, src: str, step: int, round: int = 0) -> bool:
        """Whether the message ``(kind, src, step, round)`` has arrived and is filed."""
        return (kind, src, step, round) in self._filed

    def rejected_counts(self) -> dict[str, int]:
        """Refused messages so far, by reason (``json``, ``schema``, ``acl``, ...)."""
        return dict(self.inbox.rejected)

    def refused_records(self, start: int = 0, limit: int | None = None) -> list[MessageRecord]:
        """Rows of ``messages.parquet`` (``rejected`` true) for the refused messages from number
        ``start`` (of :attr:`refused_total`) on that are still kept and whose topic named a kind,
        sender and receiver, at most ``limit`` of them; every refusal is counted by reason in
        :meth:`rejected_counts` whether or not it has a row."""
        out: list[MessageRecord] = []
        first_kept = self.refused_total - len(self.refused)
        for e in list(self.refused)[max(0, start - first_kept) :]:
            if limit is not None and len(out) >= limit:
                break
            if "kind" not in e:
                continue
            try:
                out.append(
                    MessageRecord(
                        kind=e["kind"],
                        src=e["src"],
                        dst=e["dst"],
                        step=e.get("step", 0),
                        round=e.get("round", 0),
                        seq=e.get("seq", 0),
                        bytes=min(int(e["bytes"]), MAX_SEQ),
                        t_send_s=e.get("t_send_s", 0.0),
                        rejected=True,
                        reason=str(e["reason"])[:32],
                    )
                )
            except ValidationError:  # a topic level our schema would not name a node by
                continue
        return out
