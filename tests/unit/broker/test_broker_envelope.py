"""Topics, envelopes, body schemas and the receiver's guard (clustersim.broker.envelope)."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustersim.broker.envelope import (
    BROADCAST,
    KINDS,
    MAX_PAYLOAD_BYTES,
    EnvelopeError,
    Inbox,
    MeasMsg,
    SetpointBody,
    SetpointMsg,
    decode,
    encode,
    make_envelope,
    parse_topic,
    topic,
    topic_filter,
)
from clustersim.errors import MessageError

RUN = "r1"
TABLE = {
    "vm_pu": [0.95, 1.0, 1.05],
    "violation_pu": [0.01, -0.02, -0.01],
    "deviation_pu": [0.06, 0.03, 0.05],
    "losses_mw": [0.02, 0.018, 0.017],
    "cost": [3.0, 2.9, 2.8],
    "p_mw": [0.8, 0.79, 0.78],
    "q_mvar": [0.2, 0.19, 0.18],
}
"""a child's value table as a boundary message carries it"""
BODIES = {
    "meas": {
        "step": 15,
        "vm_pu": {"bus 3": 1.01, "18": 0.97},
        "p_mw": {"line 7": 0.42},
        "q_mvar": {"line 7": -0.1},
        "storage_energy_mwh": {"ess1": 1.5},
        "setpoints": {"svc1": {"q_mvar": 0.2}, "cap1": {"step": 2}},
        "switching_today": {"oltc": 3},
    },
    "setpoint": {"setpoints": {"pv12": {"q_mvar": -0.05, "p_mw": 0.3}, "oltc": {"tap_pos": -2}}},
    "boundary": {"vm_pu": {"6": 1.003}, "p_mw": {"line 5": 0.8}, "q_mvar": {"line 5": 0.2}},
    "clock": {"event": "tick", "t_s": 900.0, "deadline_s": 960.0},
    "status": {"state": "fault", "reason": "optimizer crashed"},
    "log": {"level": "warning", "message": "no feasible point"},
}
SENDERS = {
    "meas": ("plant", "C1"),
    "setpoint": ("C1", "plant"),
    "boundary": ("C1", "C2"),
    "clock": ("plant", BROADCAST),
    "status": ("C2", BROADCAST),
    "log": ("C1", "plant"),
}
ACL = {
    "meas": [("plant", "C*")],
    "setpoint": [("C*", "plant")],
    "boundary": [("C1", "C2"), ("C2", "C1")],
    "clock": ["plant"],
    "status": ["*"],
    "log": ["*"],
}


def make(kind: str, seq: int = 1, **over):
    src, dst = SENDERS[kind]
    fields = dict(
        run_id=RUN, src=src, dst=dst, step=4, round=1, seq=seq, t_send_s=3600.5, body=BODIES[kind]
    )
    fields.update(over)
    return make_envelope(kind, **fields)


def wire(kind: str, seq: int = 1, **over) -> tuple[str, bytes]:
    env = make(kind, seq, **over)
    return env.topic, encode(env)


def edit(payload: bytes, **changes) -> bytes:
    data = json.loads(payload)
    for path, value in changes.items():
        node = data
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        if value is ...:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return json.dumps(data).encode()


def reason_of(payload: bytes, topic_: str | None = None) -> str:
    with pytest.raises(EnvelopeError) as info:
        decode(payload, topic=topic_)
    assert isinstance(info.value, MessageError)
    msg = str(info.value)
    assert msg and "\n" not in msg
    return info.value.reason


# ---------------------------------------------------------------- topics


def test_topic_round_trip():
    t = topic("run-7", "setpoint", "C3", "plant")
    assert t == "clustersim/run-7/setpoint/C3/plant"
    assert parse_topic(t) == ("run-7", "setpoint", "C3", "plant")
    assert topic_filter("run-7") == "clustersim/run-7/+/+/+"
    assert topic_filter("run-7", "meas", dst="C1") == "clustersim/run-7/meas/+/C1"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "clustersim/r1/meas/plant",
        "clustersim/r1/meas/plant/C1/x",
        "other/r1/meas/plant/C1",
        "clustersim/r1/gossip/plant/C1",
        "clustersim//meas/plant/C1",
        "clustersim/r1/meas/+/C1",
        "clustersim/r1/meas/plant/#",
        "clustersim/r1/meas/pl ant/C1",
        "clustersim/r1/meas/" + "x" * 65 + "/C1",
    ],
)
def test_parse_topic_rejects_malformed(bad):
    with pytest.raises(EnvelopeError) as info:
        parse_topic(bad)
    assert info.value.reason == "topic"


def test_topic_rejects_bad_parts():
    with pytest.raises(MessageError):
        topic("r1", "gossip", "a", "b")
    with pytest.raises(MessageError):
        topic("r/1", "meas", "a", "b")
    with pytest.raises(MessageError):
        topic("r1", "meas", "a+", "b")


# ---------------------------------------------------------------- envelopes


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_round_trips(kind):
    env = make(kind)
    payload = encode(env)
    back = decode(payload, topic=env.topic)
    assert back == env and type(back) is type(env) and back.kind == kind
    assert encode(back) == payload


def test_encode_is_compact_sorted_and_deterministic():
    payload = encode(make("meas"))
    text = payload.decode()
    assert " " not in text.replace("bus 3", "").replace("line 7", "")
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert list(data["body"]["vm_pu"]) == sorted(data["body"]["vm_pu"])
    # the same envelope built with another dict order gives the same bytes
    shuffled = dict(reversed(list(BODIES["meas"].items())))
    shuffled["vm_pu"] = dict(reversed(list(BODIES["meas"]["vm_pu"].items())))
    assert encode(make("meas", body=shuffled)) == payload
    assert set(data) == {
        "v",
        "run_id",
        "kind",
        "src",
        "dst",
        "step",
        "round",
        "seq",
        "t_send_s",
        "body",
    }


def test_explicit_no_change_setpoint_is_valid():
    env = make("setpoint", body={})
    assert isinstance(env, SetpointMsg) and env.body.setpoints == {}
    assert decode(encode(env)).body == SetpointBody()
    env2 = make("setpoint", body={"setpoints": {}})
    assert encode(env2) == encode(env)


def test_integral_quantities_accept_whole_floats():
    env = make("setpoint", body={"setpoints": {"oltc": {"tap_pos": 3.0}, "cap": {"step": 1}}})
    assert env.body.setpoints["oltc"]["tap_pos"] == 3


@pytest.mark.parametrize(
    "changes",
    [
        {"seq": ...},  # missing
        {"extra": 1},  # unknown key
        {"v": 2},  # unknown version
        {"seq": -1},
        {"seq": 1.0},  # integer field given a float
        {"seq": "1"},
        {"step": True},
        {"t_send_s": "3600"},
        {"t_send_s": -1.0},
        {"kind": "gossip"},
        {"kind": 3},
        {"src": "C+1"},
        {"body": []},
        {"body__setpoints": {"pv12": {"v_pu": 1.0}}},  # unknown quantity
        {"body__setpoints": {"oltc": {"tap_pos": 1.5}}},  # not whole
        {"body__setpoints": {"pv12": {}}},  # device with no quantity
        {"body__setpoints": {"pv12": {"q_mvar": True}}},
        {"body__setpoints": {"": {"q_mvar": 0.1}}},
        {"body__setpoints": {"pv12": {"q_mvar": "0.1"}}},
        {"body__setpoints": {"pv12": {"q_mvar": 10**400}}},
        {"body__setpoints": {"\ud800": {"q_mvar": 0.1}}},  # lone surrogate: not encodable
        {"src": "C\ud800"},
    ],
)
def test_schema_violations_are_rejected(changes):
    _, payload = wire("setpoint")
    assert reason_of(edit(payload, **changes)) == "schema"


@pytest.mark.parametrize(
    "kind,body",
    [
        ("meas", {"vm_pu": {"1": 1.0}}),  # step missing
        ("meas", {"step": 1, "vm_pu": {"1": -0.1}}),
        ("meas", {"step": 1, "switching_today": {"oltc": -1}}),
        ("boundary", {"vm_pu": {"6": "1.0"}}),
        ("boundary", {"table": {**TABLE, "cost": [1.0, 2.0]}}),  # a column too short
        ("boundary", {"table": {**TABLE, "vm_pu": [0.97, 0.97, 1.0]}}),  # not increasing
        ("boundary", {"table": {**TABLE, "vm_pu": [-0.1, 0.97, 1.0]}}),  # not a voltage
        ("boundary", {"table": {**TABLE, "p_mw": [0.1, "0.2", 0.3]}}),
        ("boundary", {"table": {k: v[:1] for k, v in TABLE.items()}}),  # one point is no table
        ("boundary", {"table": {k: v * 12 for k, v in TABLE.items()}}),  # 36 points: too many
        ("boundary", {"table": {**TABLE, "extra": [1, 2, 3]}}),
        ("clock", {"event": "tick"}),  # t_s missing
        ("status", {"state": "fault"}),  # fault without a reason
        ("status", {"state": "sleeping"}),
        ("log", {"level": "loud", "message": "x"}),
        ("log", {"message": "x" * 2001}),
    ],
)
def test_body_schemas(kind, body):
    _, payload = wire(kind)
    assert reason_of(edit(payload, body=body)) == "schema"


def test_a_value_table_crosses_the_wire():
    t, payload = wire("boundary")
    got = decode(edit(payload, body={"table": TABLE}), topic=t)
    assert got.body.table is not None and list(got.body.table.vm_pu) == TABLE["vm_pu"]
    assert not got.body.empty


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400"])
def test_non_finite_numbers_are_rejected(token):
    _, payload = wire("setpoint")
    bad = payload.replace(b"-0.05", token)
    assert bad != payload
    assert reason_of(bad) == "non_finite"


def test_non_finite_floats_cannot_be_built():
    with pytest.raises(MessageError):
        make("setpoint", body={"setpoints": {"pv": {"q_mvar": float("nan")}}})
    with pytest.raises(MessageError):
        make("meas", t_send_s=float("inf"))


@pytest.mark.parametrize(
    "payload,reason",
    [
        (b"", "json"),
        (b"{", "json"),
        (b'{"seq": 1,}', "json"),
        (b'{"seq": 1, "seq": 2}', "json"),  # duplicate key
        (b"\xff\xfe{}", "encoding"),
        (b"[1, 2]", "schema"),
        (b'"text"', "schema"),
        (b"{}", "schema"),
        (b"[" * 100_000 + b"]" * 100_000, "json"),
        (b"1" * 5000, "json"),  # integer with too many digits
        (b" " * (MAX_PAYLOAD_BYTES + 1), "too_large"),
    ],
)
def test_malformed_payloads(payload, reason):
    assert reason_of(payload) == reason


@pytest.mark.parametrize("part,index", [("run_id", 1), ("kind", 2), ("src", 3), ("dst", 4)])
def test_topic_envelope_disagreement(part, index):
    t, payload = wire("boundary")
    parts = t.split("/")
    parts[index] = {"run_id": "r2", "kind": "log", "src": "C2", "dst": "C3"}[part]
    with pytest.raises(EnvelopeError) as info:
        decode(payload, topic="/".join(parts))
    assert info.value.reason == "mismatch" and part in str(info.value)


def test_bad_topic_on_decode():
    _, payload = wire("boundary")
    assert reason_of(payload, "clustersim/r1/boundary/C1") == "topic"


# ---------------------------------------------------------------- properties

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
labels = st.text(min_size=1, max_size=12)
meas_bodies = st.fixed_dictionaries(
    {
        "step": st.integers(0, 2**31 - 1),
        "vm_pu": st.dictionaries(labels, st.floats(0, 2)),
        "p_mw": st.dictionaries(labels, finite),
        "q_mvar": st.dictionaries(labels, finite),
        "setpoints": st.dictionaries(
            labels,
            st.dictionaries(st.sampled_from(["q_mvar", "p_mw"]), finite, min_size=1),
        ),
        "switching_today": st.dictionaries(labels, st.integers(0, 100)),
    }
)


@given(
    body=meas_bodies,
    seq=st.integers(0, 2**31 - 1),
    t=st.floats(0, 1e9),
    src=st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True),
)
@settings(max_examples=150, deadline=None)
def test_round_trip_property(body, seq, t, src):
    env = make_envelope("meas", run_id=RUN, src=src, dst="C1", seq=seq, t_send_s=t, body=body)
    payload = encode(env)
    back = decode(payload, topic=env.topic)
    assert isinstance(back, MeasMsg) and back == env
    assert encode(back) == payload


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_decode_never_raises_anything_but_message_error_on_bytes(payload):
    try:
        decode(payload)
    except MessageError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(
    key=st.sampled_from(["seq", "step", "t_send_s", "body", "kind", "src", "v", "x"]),
    value=json_values,
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_decode_never_raises_anything_but_message_error_on_mutations(key, value):
    t, payload = wire("meas")
    data = json.loads(payload)
    data[key] = value
    try:
        decode(json.dumps(data).encode(), topic=t)
    except MessageError:
        pass


@given(topic_=st.text(max_size=60), payload=st.binary(max_size=80))
@settings(max_examples=200, deadline=None)
def test_inbox_never_raises(topic_, payload):
    inbox = Inbox(ACL)
    assert inbox.accept(topic_, payload) is None
    assert sum(inbox.rejected.values()) == 1


# ---------------------------------------------------------------- inbox


def test_inbox_accepts_and_rejects_by_reason():
    plant = Inbox(ACL, run_id=RUN, me="plant")
    t, payload = wire("setpoint", seq=1)
    assert plant.accept(t, payload) is not None
    # a byte-identical repeat is a redelivery: dropped, counted apart, not refused
    again = plant.check(t, payload)
    assert again.envelope is None and again.duplicate and plant.duplicates == 1
    # the same seq with another payload is a replay
    assert plant.accept(t, edit(payload, t_send_s=99.0)) is None
    # malformed JSON, wrong schema, NaN
    assert plant.accept(t, payload[:-5]) is None
    assert plant.accept(t, edit(payload, seq=...)) is None
    assert (
        plant.accept(t, payload.replace(b"-0.05", b"NaN").replace(b'"seq":1', b'"seq":2')) is None
    )
    # foreign sender: the plant's measurement topic is not C1's, and C1 may not send meas
    t2, p2 = wire("meas", seq=5, src="C1", dst="plant")
    assert plant.accept(t2, p2) is None
    # topic and envelope disagree (C2 publishing under C1's name in the payload)
    t3 = t.replace("/C1/", "/C2/")
    assert plant.accept(t3, edit(payload, seq=3)) is None
    # another run, another receiver
    t4, p4 = wire("setpoint", seq=4, run_id="old-run")
    assert plant.accept(t4, p4) is None
    t5, p5 = wire("boundary", seq=5)
    assert plant.accept(t5, p5) is None
    assert plant.rejected == {
        "replay": 1,
        "json": 1,
        "schema": 1,
        "non_finite": 1,
        "acl": 1,
        "mismatch": 1,
        "run_id": 1,
        "not_for_me": 1,
    }
    assert plant.accepted == 1
    # after all that, a fresh seq from the right sender still passes
    t6, p6 = wire("setpoint", seq=2)
    assert plant.accept(t6, p6) is not None and plant.accepted == 2


def test_inbox_acl_rules():
    inbox = Inbox(ACL)
    assert inbox.allowed("meas", "plant", "C7")
    assert not inbox.allowed("meas", "C1", "C7")
    assert not inbox.allowed("meas", "plant", "plant")
    assert inbox.allowed("boundary", "C2", "C1") and not inbox.allowed("boundary", "C1", "C3")
    assert inbox.allowed("status", "anyone", BROADCAST)
    assert not Inbox({}).allowed("status", "plant", "C1")  # a kind not listed admits nobody
    with pytest.raises(ValueError):
        Inbox({"gossip": ["*"]})


def test_replay_is_per_kind_and_sender():
    inbox = Inbox(ACL)
    for kind in ("setpoint", "log"):
        assert inbox.accept(*wire(kind, seq=9)) is not None
    t, p = wire("boundary", seq=9)
    assert inbox.accept(t, p) is not None
    t2, p2 = wire("boundary", seq=9, src="C2", dst="C1")
    assert inbox.accept(t2, p2) is not None
    assert inbox.accept(t2, edit(p2, t_send_s=99.0)) is None
    assert inbox.rejected == {"replay": 1} and inbox.accepted == 4


def test_check_hook_and_refused_seq_is_not_used_up():
    def in_range(env):
        for device, values in env.body.setpoints.items():
            if abs(values.get("q_mvar", 0.0)) > 1.0:
                raise MessageError(f"{device}: q_mvar out of range")
        return "empty" if not env.body.setpoints else None

    inbox = Inbox(ACL, check=in_range)
    bad = make("setpoint", seq=7, body={"setpoints": {"svc": {"q_mvar": 5.0}}})
    assert inbox.accept(bad.topic, encode(bad)) is None
    empty = make("setpoint", seq=7, body={})
    assert inbox.accept(empty.topic, encode(empty)) is None
    good = make("setpoint", seq=7)
    assert inbox.accept(good.topic, encode(good)) == good
    assert inbox.rejected == {"range": 1, "empty": 1}
    verdict = inbox.check(good.topic, encode(make("setpoint", seq=7, t_send_s=99.0)))
    assert not verdict.ok and verdict.reason == "replay" and "seq 7" in verdict.detail
    assert inbox.check(good.topic, encode(good)).duplicate  # the same bytes again


def test_rejections_are_logged_once_loudly_and_sanitized(caplog):
    inbox = Inbox(ACL)
    t, payload = wire("setpoint")
    evil = edit(payload, **{"x\nFAKE LOG LINE": 1})
    with caplog.at_level(logging.DEBUG, logger="clustersim.broker.envelope"):
        inbox.accept(t, evil)
        inbox.accept(t, evil)
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.WARNING, logging.DEBUG]
    assert all("\n" not in r.getMessage() for r in caplog.records)
