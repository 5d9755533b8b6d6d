"""Topics, the message envelope, one schema per message kind, and the receiver's guard.

Every message of a run travels on the topic ``clustersim/{run_id}/{kind}/{src}/{dst}`` and its
payload is one envelope::

    {"v": 1, "run_id": ..., "kind": ..., "src": ..., "dst": ..., "step": ..., "round": ...,
     "seq": ..., "t_send_s": ..., "body": {...}}

encoded as compact UTF-8 JSON with sorted keys (:func:`encode`), so the same envelope always
gives the same bytes. The body schema depends on ``kind``:

========== ======================= ====================================================
kind       direction               body
========== ======================= ====================================================
meas       plant → agent           :class:`MeasBody` (voltages, boundary flows, state)
setpoint   agent → plant           :class:`SetpointBody` (device → {quantity: value})
boundary   neighbour ↔ neighbour   :class:`BoundaryBody` (voltage, P/Q or value table)
clock      clock → everyone        :class:`ClockBody` (simulated time, start/tick/stop)
status     any node                :class:`StatusBody` (online/offline/fault, reason)
log        any node                :class:`LogBody` (level, message)
========== ======================= ====================================================

The envelope's ``step`` is the protocol step the message belongs to (the control interval for
setpoints and boundary rounds, the plant step for measurements), ``round`` the coordination round
inside it (0 outside rounds) and ``seq`` the sender's message counter (it must never repeat for a
sender and kind: the receiver drops a repeated ``(src, seq)`` as a replay). ``t_send_s`` is the
send time in simulated seconds, the input of the channel model (:mod:`clustersim.broker.channel`).

All models forbid unknown keys, take numbers strictly (``"1.5"`` and ``true`` are not numbers, an
integer field refuses ``1.0``) and refuse NaN and ±inf: nothing that passes :func:`decode` can put
a non-finite number into the plant. Physical ranges of devices are the plant's to check
(:meth:`clustersim.sim.plant.Plant.set_setpoint`); :class:`Inbox` takes such a check as a hook.

:func:`decode` raises :class:`EnvelopeError` (a :class:`~clustersim.errors.MessageError`) with a
one-line message and a ``reason`` attribute; :class:`Inbox` never raises for bad input: it
counts every rejection by reason, logs it and returns ``None``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from clustersim.errors import MessageError

__all__ = [
    "BROADCAST",
    "KINDS",
    "MAX_DEPTH",
    "MAX_PAYLOAD_BYTES",
    "MAX_SEQ",
    "PREFIX",
    "QUANTITIES",
    "SCHEMA_VERSION",
    "BoundaryBody",
    "BoundaryMsg",
    "ClockBody",
    "ClockMsg",
    "Envelope",
    "EnvelopeBase",
    "EnvelopeError",
    "Inbox",
    "Kind",
    "LogBody",
    "LogMsg",
    "MeasBody",
    "MeasMsg",
    "SetpointBody",
    "SetpointMsg",
    "StatusBody",
    "StatusMsg",
    "TableBody",
    "Verdict",
    "decode",
    "encode",
    "make_envelope",
    "parse_topic",
    "topic",
    "topic_filter",
]

log = logging.getLogger(__name__)

PREFIX = "clustersim"
SCHEMA_VERSION: Final = 1
MAX_PAYLOAD_BYTES = 1 << 20
"""Payloads above this size are refused before parsing (1 MiB)."""
MAX_SEQ = 2**31 - 1
"""Largest ``seq`` (and ``step``, ``round``) an envelope may carry."""
MAX_DEPTH = 12
"""Deepest nesting of JSON arrays and objects a payload may have (an envelope needs 6: envelope,
body, decision info, its message records, one record; setpoints: device, quantity); deeper
payloads are refused before parsing, so no payload can exhaust the parser's recursion."""
BROADCAST = "all"
"""Reserved ``dst`` of messages meant for every node (clock ticks, status)."""

Kind = Literal["meas", "setpoint", "boundary", "clock", "status", "log"]
KINDS: tuple[str, ...] = get_args(Kind)
Quantity = Literal["q_mvar", "p_mw", "step", "tap_pos"]
QUANTITIES: tuple[str, ...] = get_args(Quantity)
_INTEGRAL_QUANTITIES = ("step", "tap_pos")

_NAME_RE = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
_NAME = re.compile(_NAME_RE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

Name = Annotated[str, Strict(), StringConstraints(pattern=_NAME_RE)]
"""A run id or node name: 1–64 of ``A-Z a-z 0-9 _ . -`` (no MQTT separator or wildcard)."""
Label = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=128)]
"""A bus label, branch id or device name (a dict key of a body)."""
FiniteFloat = Annotated[float, Strict(), Field(allow_inf_nan=False)]
"""A finite number (JSON integers are accepted, booleans and strings are not)."""
Counter_ = Annotated[int, Strict(), Field(ge=0, le=MAX_SEQ)]
NonNegFloat = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
Digest = Annotated[str, Strict(), StringConstraints(pattern=r"^[0-9a-f]{1,64}$")]
"""A digest in lowercase hex."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- bodies


class MeasBody(_Model):
    """Plant → agent: what the meters report after a converged plant step.

    ``step`` is the plant step measured. ``vm_pu`` maps bus labels to voltage magnitudes; ``p_mw``
    and ``q_mvar`` map branch ids to the boundary flows (power entering the branch at its from /
    hv end, pandapower's convention). ``setpoints`` are the setpoints in force (as in
    :class:`SetpointBody`), ``storage_energy_mwh`` the stored energy per storage device and
    ``switching_today`` the tap operations / capacitor switchings of each device since midnight.
    """

    step: Counter_
    vm_pu: dict[Label, NonNegFloat] = Field(default_factory=dict)
    p_mw: dict[Label, FiniteFloat] = Field(default_factory=dict)
    q_mvar: dict[Label, FiniteFloat] = Field(default_factory=dict)
    storage_energy_mwh: dict[Label, NonNegFloat] = Field(default_factory=dict)
    setpoints: dict[Label, dict[Quantity, FiniteFloat]] = Field(default_factory=dict)
    switching_today: dict[Label, Counter_] = Field(default_factory=dict)

    @field_validator("setpoints")
    @classmethod
    def _setpoints(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return _check_setpoints(v)


class MessageRecord(_Model):
    """One received message as its receiver judged it (a row of ``messages.parquet``).

    ``t_deliver_s`` is the channel model's delivery time (None when lost), ``late`` that it
    arrived after the receiver's deadline, ``rejected`` that the receiver's guard refused it
    (``reason``: why; ``step``, ``round``, ``seq``, ``t_send_s`` are then what the payload said, 0
    where it said nothing readable).
    """

    kind: Kind
    src: Name
    dst: Name
    step: Counter_ = 0
    round: Counter_ = 0
    seq: Counter_ = 0
    bytes: Counter_ = 0
    t_send_s: NonNegFloat = 0.0
    t_deliver_s: NonNegFloat | None = None
    lost: bool = False
    late: bool = False
    rejected: bool = False
    reason: Annotated[str, StringConstraints(max_length=32)] = ""

    @classmethod
    def received(
        cls, env: Any, dst: str, nbytes: int, *, t_deliver_s: float | None, late: bool
    ) -> MessageRecord:
        """The record of envelope ``env`` received at ``dst`` (``nbytes``: payload size):
        ``t_deliver_s`` is the channel's delivery time, ``None`` when the channel lost it."""
        return cls(
            kind=env.kind,
            src=env.src,
            dst=dst,
            step=env.step,
            round=env.round,
            seq=env.seq,
            bytes=nbytes,
            t_send_s=env.t_send_s,
            t_deliver_s=t_deliver_s,
            lost=t_deliver_s is None,
            late=late,
        )


class TableBody(_Model):
    """A child cluster's value table for its parent (:class:`~clustersim.agents.problem.ValueTable`):
    at each upstream boundary voltage ``vm_pu`` (strictly increasing, p.u.), the voltage
    violation (> 0: out of band, p.u.), deviation (p.u.), losses (MW) and cost of the choice the
    child would make there, its subtree folded in, and the P/Q it would draw through the tie."""

    vm_pu: list[Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]] = Field(
        min_length=2, max_length=33
    )
    violation_pu: list[FiniteFloat] = Field(max_length=33)
    deviation_pu: list[FiniteFloat] = Field(max_length=33)
    losses_mw: list[FiniteFloat] = Field(max_length=33)
    cost: list[FiniteFloat] = Field(max_length=33)
    p_mw: list[FiniteFloat] = Field(max_length=33)
    q_mvar: list[FiniteFloat] = Field(max_length=33)

    @model_validator(mode="after")
    def _shape(self) -> TableBody:
        n = len(self.vm_pu)
        cols = (self.violation_pu, self.deviation_pu, self.losses_mw, self.cost, self.p_mw)
        if any(len(c) != n for c in (*cols, self.q_mvar)):
            raise ValueError("every column of a value table needs one value per voltage")
        if any(b <= a for a, b in zip(self.vm_pu, self.vm_pu[1:], strict=False)):
            raise ValueError("a value table's voltages must increase strictly")
        return self


class RoundRecord(_Model):
    """One agent's side of one tie in one coordination round (half a row of
    ``coordination.parquet``). ``role`` is the agent's side of the tie. A parent gives the
    voltage its decision holds at the boundary bus (``vm_pu``) and the child's draw its decision
    assumed (``p_mw``, ``q_mvar``); a child the boundary voltage its decision assumed and the
    draw it predicts, or, in an up-sweep, the value ``table`` it sent."""

    round: Counter_
    tie: Label
    role: Literal["parent", "child"]
    vm_pu: NonNegFloat | None = None
    p_mw: FiniteFloat | None = None
    q_mvar: FiniteFloat | None = None
    table: TableBody | None = None


class DecisionInfo(_Model):
    """Bookkeeping an agent attaches to its setpoint: how the decision was reached.

    It rides with the setpoint for the simulator's records (control.parquet, messages.parquet,
    summary); the plant never acts on it. ``age_of_information_s`` is the send time of the
    setpoint minus the time the measurement it used was taken (None without any measurement);
    ``messages`` are the agent's receipt records of this interval (measurement, boundary rounds);
    ``sent`` the messages it sent in this interval (boundary messages and this setpoint);
    ``boundary_pred_vm_pu`` the voltages it predicts at the boundary buses of its child clusters,
    ``boundary_used_vm_pu`` the upstream boundary voltage its decision assumed; ``table_age``
    maps each child cluster whose value table the decision used to that table's age in control
    intervals (0: received in this interval); ``rounds`` its side of every tie in every
    coordination round.
    """

    n_var: Counter_ = 0
    evaluations: Counter_ = 0
    generations: Counter_ = 0
    solves: Counter_ = 0
    solve_time_s: NonNegFloat = 0.0
    compute_s: NonNegFloat = 0.0
    f_voltage_pu: FiniteFloat | None = None
    f_loss_mw: FiniteFloat | None = None
    f_cost: FiniteFloat | None = None
    cv: NonNegFloat | None = None
    vm_pred_min_pu: NonNegFloat | None = None
    vm_pred_max_pu: NonNegFloat | None = None
    meas_step: Counter_ | None = None
    age_of_information_s: NonNegFloat | None = None
    rounds_attempted: Counter_ = 0
    rounds_completed: Counter_ = 0
    boundary_pred_vm_pu: dict[Label, NonNegFloat] = Field(default_factory=dict)
    boundary_used_vm_pu: dict[Label, NonNegFloat] = Field(default_factory=dict)
    table_age: dict[Label, Counter_] = Field(default_factory=dict)
    rounds: list[RoundRecord] = Field(default_factory=list, max_length=10_000)
    sent: Counter_ = 0
    rejected: dict[Label, Counter_] = Field(default_factory=dict)
    messages: list[MessageRecord] = Field(default_factory=list, max_length=10_000)


class SetpointBody(_Model):
    """Agent → plant: ``setpoints`` maps a device to ``{quantity: value}``.

    Quantities are ``q_mvar``, ``p_mw``, ``step`` (capacitor bank step) and ``tap_pos``; the last
    two must be whole numbers (``2`` or ``2.0``). An empty mapping is the explicit "no change"
    every agent sends when it keeps its devices as they are; a device with no quantity is refused
    (leave it out instead).
    """

    setpoints: dict[Label, dict[Quantity, FiniteFloat]] = Field(default_factory=dict)
    info: DecisionInfo | None = None

    @field_validator("setpoints")
    @classmethod
    def _setpoints(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return _check_setpoints(v)


class BoundaryBody(_Model):
    """Neighbour ↔ neighbour, one per coordination round.

    The parent sends ``vm_pu`` (bus label → voltage at the boundary bus), the child ``p_mw`` and
    ``q_mvar`` (tie branch id → power flowing into the child's cluster, as in :class:`MeasBody`)
    or, in the up-sweep of value tables, its ``table``. Empty mappings say "nothing new": the
    receiver keeps the last values it had.
    """

    vm_pu: dict[Label, NonNegFloat] = Field(default_factory=dict)
    p_mw: dict[Label, FiniteFloat] = Field(default_factory=dict)
    q_mvar: dict[Label, FiniteFloat] = Field(default_factory=dict)
    table: TableBody | None = None

    @property
    def empty(self) -> bool:
        """Whether the message carries no value ("nothing new")."""
        return not (self.vm_pu or self.p_mw or self.table)


class ClockBody(_Model):
    """The simulation clock: simulated time ``t_s`` and, for a control interval, its deadline.

    A ``start`` carries the plant's ``scenario`` fingerprint (resolved scenario key → a digest
    of its value, :func:`clustersim.assemble.identity.scenario_fingerprint`); an agent whose own
    differs refuses the run (:meth:`differing_keys`).
    """

    event: Literal["start", "tick", "stop"] = "tick"
    t_s: NonNegFloat
    deadline_s: NonNegFloat | None = None
    scenario: dict[Label, Digest] = Field(default_factory=dict, max_length=2000)

    def differing_keys(self, mine: Mapping[str, str]) -> list[str]:
        """The keys whose digests differ between ``scenario`` and ``mine``, or that only one
        of them has."""
        theirs = self.scenario
        return sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))


class StatusBody(_Model):
    """A node's state; ``fault`` needs a ``reason``. The MQTT last will is ``offline``."""

    state: Literal["online", "offline", "fault"]
    reason: Annotated[str, Strict(), StringConstraints(max_length=500)] = ""

    @model_validator(mode="after")
    def _reason(self) -> StatusBody:
        if self.state == "fault" and not self.reason.strip():
            raise ValueError("a fault status needs a reason")
        return self


class LogBody(_Model):
    """A log line from a remote node."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    message: Annotated[str, Strict(), StringConstraints(max_length=2000)]


def _check_setpoints(v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    for device, values in v.items():
        if not values:
            raise ValueError(f"device {device!r} has no quantity (leave it out for no change)")
        for qty in _INTEGRAL_QUANTITIES:
            if qty in values and values[qty] != round(values[qty]):
                raise ValueError(f"device {device!r}: {qty} must be a whole number")
    return v


# ---------------------------------------------------------------- envelopes


class EnvelopeBase(_Model):
    """Fields every envelope carries (units in the names); see the module docstring."""

    v: Literal[1] = SCHEMA_VERSION
    run_id: Name
    kind: Kind
    src: Name
    dst: Name
    step: Counter_ = 0
    round: Counter_ = 0
    seq: Counter_
    t_send_s: NonNegFloat

    @property
    def topic(self) -> str:
        """The topic this envelope is published on."""
        return topic(self.run_id, self.kind, self.src, self.dst)


class MeasMsg(EnvelopeBase):
    """Envelope of a ``meas`` message: the plant's measurement to an agent."""

    kind: Literal["meas"] = "meas"
    body: MeasBody


class SetpointMsg(EnvelopeBase):
    """Envelope of a ``setpoint`` message: an agent's setpoints to the plant."""

    kind: Literal["setpoint"] = "setpoint"
    body: SetpointBody = Field(default_factory=SetpointBody)


class BoundaryMsg(EnvelopeBase):
    """Envelope of a ``boundary`` message: boundary voltage and/or P/Q between neighbours."""

    kind: Literal["boundary"] = "boundary"
    body: BoundaryBody = Field(default_factory=BoundaryBody)


class ClockMsg(EnvelopeBase):
    """Envelope of a ``clock`` message: simulated time and start/tick/stop events."""

    kind: Literal["clock"] = "clock"
    body: ClockBody


class StatusMsg(EnvelopeBase):
    """Envelope of a ``status`` message: a node's online/offline/fault state and reason."""

    kind: Literal["status"] = "status"
    body: StatusBody


class LogMsg(EnvelopeBase):
    """Envelope of a ``log`` message: level and text."""

    kind: Literal["log"] = "log"
    body: LogBody


Envelope = Annotated[
    MeasMsg | SetpointMsg | BoundaryMsg | ClockMsg | StatusMsg | LogMsg,
    Field(discriminator="kind"),
]
"""Any envelope; ``kind`` selects the class (and so the body schema)."""

_ENVELOPE: TypeAdapter[Envelope] = TypeAdapter(Envelope)
_BY_KIND: dict[str, type[EnvelopeBase]] = {
    "meas": MeasMsg,
    "setpoint": SetpointMsg,
    "boundary": BoundaryMsg,
    "clock": ClockMsg,
    "status": StatusMsg,
    "log": LogMsg,
}


def make_envelope(kind: str, **fields: Any) -> Envelope:
    """Build and validate the envelope of ``kind`` from plain values (``body`` as a dict too).

    Raises :class:`EnvelopeError` (reason ``schema``) when a field is invalid.
    """
    try:
        return _ENVELOPE.validate_python({"kind": kind, **fields})
    except ValidationError as e:
        raise EnvelopeError(_explain(e), reason=_reason_of(e)) from None


# ---------------------------------------------------------------- errors


class EnvelopeError(MessageError):
    """A message was refused. ``reason`` is a short key (``json``, ``schema``, ``topic``, ...),
    ``topic`` the topic it came on, if known."""

    def __init__(self, message: str, *, reason: str, topic: str | None = None):
        self.reason = reason
        self.topic = topic
        super().__init__(message)


def _explain(e: ValidationError) -> str:
    """One line from a pydantic error: the first problem and where, plus how many more."""
    errs = e.errors(include_url=False, include_input=False)
    first = errs[0]
    parts = [str(p) for p in first["loc"]]
    if len(parts) > 1 and parts[0] in KINDS:  # the discriminated union's tag
        parts = parts[1:]
    loc = _one_line(".".join(parts), 120) or "envelope"
    more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"{loc}: {_one_line(first['msg'], 200)}{more}"


def _one_line(text: str, limit: int) -> str:
    """``text`` without control characters (no forged log lines), cut to ``limit``."""
    text = _CONTROL.sub("?", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reason_of(e: ValidationError) -> str:
    types = {err["type"] for err in e.errors(include_url=False, include_input=False)}
    return "non_finite" if "finite_number" in types else "schema"


# ---------------------------------------------------------------- topics


def _check_name(what: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise EnvelopeError(
            f"{what} {value!r} is not a valid name (1-64 of A-Z a-z 0-9 _ . -)", reason="topic"
        )
    return value


def topic(run_id: str, kind: str, src: str, dst: str) -> str:
    """``clustersim/{run_id}/{kind}/{src}/{dst}``; raises :class:`EnvelopeError` on a bad part."""
    if kind not in KINDS:
        raise EnvelopeError(f"unknown message kind {kind!r}", reason="topic")
    for what, value in (("run_id", run_id), ("src", src), ("dst", dst)):
        _check_name(what, value)
    return f"{PREFIX}/{run_id}/{kind}/{src}/{dst}"


def topic_filter(
    run_id: str, kind: str | None = None, src: str | None = None, dst: str | None = None
) -> str:
    """An MQTT subscription filter; a part left as ``None`` becomes the ``+`` wildcard."""
    parts = [_check_name("run_id", run_id)]
    if kind is not None and kind not in KINDS:
        raise EnvelopeError(f"unknown message kind {kind!r}", reason="topic")
    parts.append(kind or "+")
    parts.append(_check_name("src", src) if src is not None else "+")
    parts.append(_check_name("dst", dst) if dst is not None else "+")
    return "/".join([PREFIX, *parts])


def parse_topic(topic: str) -> tuple[str, str, str, str]:
    """``(run_id, kind, src, dst)`` of a topic; raises :class:`EnvelopeError` when malformed."""
    if not isinstance(topic, str):
        raise EnvelopeError(f"topic must be a string, got {type(topic).__name__}", reason="topic")
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != PREFIX:
        raise EnvelopeError(
            f"topic {topic[:200]!r} is not {PREFIX}/run_id/kind/src/dst", reason="topic"
        )
    _, run_id, kind, src, dst = parts
    if kind not in KINDS:
        raise EnvelopeError(f"topic {topic[:200]!r}: unknown kind {kind[:40]!r}", reason="topic")
    for what, value in (("run_id", run_id), ("src", src), ("dst", dst)):
        if not _NAME.match(value):
            raise EnvelopeError(
                f"topic {topic[:200]!r}: {what} {value[:80]!r} is not a valid name",
                reason="topic",
            )
    return run_id, kind, src, dst


# ---------------------------------------------------------------- encode / decode


def encode(envelope: EnvelopeBase) -> bytes:
    """Compact UTF-8 JSON with sorted keys: the same envelope always gives the same bytes.

    Fields that are ``None`` are left out (they decode back to ``None``).
    """
    data = envelope.model_dump(mode="json", exclude_none=True)
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


class _BadConstant(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _BadConstant(f"{name} is not allowed (numbers must be finite)")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k[:80]!r}")
        out[k] = v
    return out


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


def nesting_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` in JSON ``text``, brackets inside strings not counted
    (unbalanced text gives its running maximum)."""
    depth = deepest = 0
    for m in _BRACKETS.finditer(_STRING.sub("", text)):
        depth += 1 if m.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def loads_bounded(payload: bytes | bytearray | memoryview, *, topic: str | None = None) -> Any:
    """Parse a payload's JSON within the limits: at most :data:`MAX_PAYLOAD_BYTES`, UTF-8, at
    most :data:`MAX_DEPTH` levels, no NaN/Infinity, no duplicate keys. Raises
    :class:`EnvelopeError` (reasons ``too_large``, ``encoding``, ``json``, ``non_finite``)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise EnvelopeError(
            f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}",
            reason="too_large",
            topic=topic,
        )
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as e:
        raise EnvelopeError(
            f"payload is not UTF-8 (byte {e.start})", reason="encoding", topic=topic
        ) from None
    if (depth := nesting_depth(text)) > MAX_DEPTH:
        raise EnvelopeError(
            f"malformed JSON: nested {depth} deep, more than {MAX_DEPTH}",
            reason="json",
            topic=topic,
        )
    try:
        return json.loads(
            text, parse_constant=_refuse_constant, object_pairs_hook=_refuse_duplicates
        )
    except _BadConstant as e:
        raise EnvelopeError(f"malformed JSON: {e}", reason="non_finite", topic=topic) from None
    except json.JSONDecodeError as e:
        raise EnvelopeError(f"malformed JSON: {e}", reason="json", topic=topic) from None
    except (ValueError, RecursionError) as e:  # duplicate keys, huge integers, deep nesting
        msg = str(e) if isinstance(e, ValueError) else "nested too deeply"
        raise EnvelopeError(f"malformed JSON: {msg[:200]}", reason="json", topic=topic) from None


def decode(payload: bytes, *, topic: str | None = None) -> Envelope:
    """Parse and validate one payload; with ``topic``, check that it agrees with the envelope.

    Raises :class:`EnvelopeError` (a ``MessageError``) with one line saying what was wrong and a
    ``reason``: ``too_large``, ``encoding`` (not UTF-8), ``json`` (malformed, duplicate keys),
    ``non_finite`` (NaN, Infinity, or a number too large for a float), ``schema`` (fields
    missing, extra, of the wrong type or out of range), ``topic`` (malformed topic) or
    ``mismatch`` (the topic's run_id/kind/src/dst differ from the envelope's). Nothing else.
    """
    parts = parse_topic(topic) if topic is not None else None
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise EnvelopeError(
            f"payload must be bytes, got {type(payload).__name__}", reason="encoding", topic=topic
        )
    data = loads_bounded(payload, topic=topic)
    if not isinstance(data, dict):
        raise EnvelopeError(
            f"payload must be a JSON object, got {type(data).__name__}",
            reason="schema",
            topic=topic,
        )
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in _BY_KIND:
        raise EnvelopeError(
            f"kind: must be one of {', '.join(KINDS)}, got {str(kind)[:40]!r}",
            reason="schema",
            topic=topic,
        )
    try:
        env = _ENVELOPE.validate_python(data)
    except ValidationError as e:
        raise EnvelopeError(_explain(e), reason=_reason_of(e), topic=topic) from None
    except RecursionError:
        raise EnvelopeError("payload nested too deeply", reason="schema", topic=topic) from None
    if parts is not None:
        got = (env.run_id, env.kind, env.src, env.dst)
        for name, want, have in zip(("run_id", "kind", "src", "dst"), parts, got, strict=True):
            if want != have:
                raise EnvelopeError(
                    f"{name} {have!r} in the envelope differs from {want!r} in the topic",
                    reason="mismatch",
                    topic=topic,
                )
    return env


# ---------------------------------------------------------------- receiver's guard

AclRule = str | tuple[str, str]
"""A sender glob (``"plant"``, ``"C*"``) or a ``(src_glob, dst_glob)`` pair."""


DUPLICATE: Final = "duplicate"
"""the verdict on a byte-identical repeat of an accepted message (dropped, not refused)"""


@dataclass(frozen=True)
class Verdict:
    """What :meth:`Inbox.check` decided: the envelope, or the reason and a one-line detail."""

    envelope: Envelope | None
    reason: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Whether the message was accepted."""
        return self.envelope is not None

    @property
    def duplicate(self) -> bool:
        """Whether the message repeats one already accepted, byte for byte (a redelivery)."""
        return self.reason == DUPLICATE


class Inbox:
    """The receiver's guard: decode, check sender and replay, count rejections, never raise.

    ``acl`` maps a kind to the senders allowed on it, each a ``src`` glob or a ``(src, dst)``
    pair of globs (``fnmatch`` syntax, case-sensitive); a kind that is missing admits nobody.
    For example, for the plant and two agents::

        {"meas": [("plant", "C*")], "setpoint": [("C*", "plant")],
         "boundary": [("C1", "C2"), ("C2", "C1")], "status": ["*"], "log": ["*"],
         "clock": ["plant"]}

    A sender's identity is the ``src`` of its topic, which must equal the envelope's (else the
    message is refused as a ``mismatch``); that a client publishes only under its own name ("an
    agent may send setpoints only as itself") is enforced by the broker's ACL
    (``clustersim acl``), this guard checks who may send what to whom. With ``run_id`` set, a
    message of another run (a stale retained message, say) is refused; with ``me`` set, one whose
    ``dst`` is neither ``me`` nor :data:`BROADCAST`. ``check`` is an extra test run on an
    otherwise valid envelope (the plant's physical-range check): it returns ``None`` to accept or
    a short reason to refuse; a ``MessageError`` it raises counts as reason ``range``.
    ``verify`` checks a message's signature before anything else is read of it
    (:meth:`clustersim.broker.auth.Keyring.verify`: topic, sender, payload → the signed envelope,
    or :class:`EnvelopeError` with reason ``auth``); without it messages are taken unsigned.

    ``seen`` keeps every ``(src, seq)`` accepted per kind with a digest of its payload. A repeat
    with the same payload is a redelivery (MQTT QoS 1 delivers at least once; a node re-sends its
    window after a reconnect): it is dropped and counted in ``duplicates``, not refused, so that
    what the broker's connections did never shows among the refusals. A repeat with another
    payload is refused as ``replay``. A refused message does not use up its ``seq``.
    ``rejected`` counts refusals by reason, ``accepted`` the messages let through.
    """

    def __init__(
        self,
        acl: Mapping[str, Iterable[AclRule]],
        *,
        run_id: str | None = None,
        me: str | None = None,
        check: Callable[[Envelope], str | None] | None = None,
        verify: Callable[[str, str, bytes], bytes] | None = None,
    ):
        self._acl: dict[str, list[tuple[str, str]]] = {}
        for kind, rules in acl.items():
            if kind not in KINDS:
                raise ValueError(f"acl: unknown message kind {kind!r}")
            self._acl[kind] = [(r, "*") if isinstance(r, str) else (r[0], r[1]) for r in rules]
        self.run_id = run_id
        self.me = me
        self._check = check
        self._verify = verify
        self.seen: dict[tuple[str, str], dict[int, bytes]] = {}
        self.rejected: Counter[str] = Counter()
        self.accepted = 0
        self.duplicates = 0

    def allowed(self, kind: str, src: str, dst: str) -> bool:
        """Whether the ACL lets ``src`` send ``kind`` messages to ``dst``."""
        return any(fnmatchcase(src, s) and fnmatchcase(dst, d) for s, d in self._acl.get(kind, ()))

    def check(self, topic: str, payload: bytes) -> Verdict:
        """Judge one message; counts and logs a refusal. Never raises for bad input."""
        try:
            signed = payload
            bytes_like = isinstance(payload, bytes | bytearray | memoryview)
            if self._verify is not None and bytes_like and len(payload) <= MAX_PAYLOAD_BYTES:
                _, _, src, _ = parse_topic(topic)
                signed = self._verify(topic, src, bytes(payload))
            env = decode(signed, topic=topic)
        except EnvelopeError as e:
            return self._refuse(e.reason, str(e), topic)
        if self.run_id is not None and env.run_id != self.run_id:
            return self._refuse("run_id", f"run_id {env.run_id!r} is not this run's", topic)
        if self.me is not None and env.dst not in (self.me, BROADCAST):
            return self._refuse("not_for_me", f"dst {env.dst!r} is not {self.me!r}", topic)
        if not self.allowed(env.kind, env.src, env.dst):
            return self._refuse("acl", f"{env.src!r} may not send {env.kind} to {env.dst!r}", topic)
        key = (env.kind, env.src)
        seen = self.seen.setdefault(key, {})
        digest = hashlib.blake2b(payload, digest_size=16).digest()
        if seen.get(env.seq) == digest:
            self.duplicates += 1
            return Verdict(None, DUPLICATE, f"{env.kind} seq {env.seq} from {env.src!r} again")
        if env.seq in seen:
            return self._refuse("replay", f"{env.kind} seq {env.seq} from {env.src!r} seen", topic)
        if self._check is not None:
            try:
                reason = self._check(env)
                detail = reason or ""
            except MessageError as e:
                reason, detail = "range", str(e)
            if reason:
                return self._refuse(reason, detail, topic)
        seen[env.seq] = digest
        self.accepted += 1
        return Verdict(env)

    def accept(self, topic: str, payload: bytes) -> Envelope | None:
        """The envelope if the message passes every check, else ``None`` (counted, logged)."""
        return self.check(topic, payload).envelope

    def _refuse(self, reason: str, detail: str, topic: str) -> Verdict:
        detail = _one_line(detail, 300)
        self.rejected[reason] += 1
        level = logging.WARNING if self.rejected[reason] == 1 else logging.DEBUG
        log.log(level, "message on %s refused (%s): %s", _one_line(str(topic), 200), reason, detail)
        return Verdict(None, reason, detail)
