"""Measurement and setpoint bodies survive the wire: the sender's envelope (Node.send), the
memory transport, the receiver's guard (Inbox) and decode give back the same body."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustersim.broker.envelope import BROADCAST, KINDS, MAX_SEQ, MeasMsg, SetpointMsg
from clustersim.broker.node import Node
from clustersim.broker.transport import MemoryHub, MemoryTransport

RUN = "rt-1"
PLANT = "plant"

# ------------------------------------------------------------------ strategies (the schema)
finite = st.floats(allow_nan=False, allow_infinity=False)
non_neg = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)
counter = st.integers(0, MAX_SEQ)
label = st.text(min_size=1, max_size=128)  # bus labels, branch ids, device names
name = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", fullmatch=True).filter(
    lambda s: s not in (PLANT, BROADCAST)
)
# step and tap_pos must be whole numbers: agents send floats, a JSON integer is accepted too
whole = st.one_of(
    st.integers(-(2**53), 2**53), st.integers(-(2**53), 2**53).map(float), st.just(-0.0)
)
quantities = st.fixed_dictionaries(
    {},
    optional={"q_mvar": finite, "p_mw": finite, "step": whole, "tap_pos": whole},
).filter(bool)  # a device with no quantity is refused by the schema
setpoints = st.dictionaries(label, quantities, max_size=6)

meas_bodies = st.fixed_dictionaries(
    {
        "step": counter,
        "vm_pu": st.dictionaries(label, non_neg, max_size=8),
        "p_mw": st.dictionaries(label, finite, max_size=4),
        "q_mvar": st.dictionaries(label, finite, max_size=4),
        "storage_energy_mwh": st.dictionaries(label, non_neg, max_size=4),
        "setpoints": setpoints,
        "switching_today": st.dictionaries(label, counter, max_size=4),
    }
)

records = st.fixed_dictionaries(
    {"kind": st.sampled_from(KINDS), "src": name, "dst": name},
    optional={
        "step": counter,
        "round": counter,
        "seq": counter,
        "bytes": counter,
        "t_send_s": non_neg,
        "t_deliver_s": st.none() | non_neg,
        "lost": st.booleans(),
        "late": st.booleans(),
        "rejected": st.booleans(),
        "reason": st.text(max_size=32),
    },
)
infos = st.fixed_dictionaries(
    {},
    optional={
        "n_var": counter,
        "evaluations": counter,
        "generations": counter,
        "solves": counter,
        "solve_time_s": non_neg,
        "compute_s": non_neg,
        "f_voltage_pu": st.none() | finite,
        "f_loss_mw": st.none() | finite,
        "f_cost": st.none() | finite,
        "cv": st.none() | non_neg,
        "vm_pred_min_pu": st.none() | non_neg,
        "vm_pred_max_pu": st.none() | non_neg,
        "meas_step": st.none() | counter,
        "age_of_information_s": st.none() | non_neg,
        "rounds_attempted": counter,
        "rounds_completed": counter,
        "boundary_pred_vm_pu": st.dictionaries(label, non_neg, max_size=3),
        "boundary_used_vm_pu": st.dictionaries(label, non_neg, max_size=3),
        "sent": counter,
        "rejected": st.dictionaries(label, counter, max_size=3),
        "messages": st.lists(records, max_size=3),
    },
)
setpoint_bodies = st.fixed_dictionaries({"setpoints": setpoints}, optional={"info": infos})


# ------------------------------------------------------------------ helpers
def canon(x: Any) -> Any:
    """A structure compared exactly: every number as the hex of its float value (so -0.0 and
    0.0 differ, and 3 equals 3.0), booleans and strings as they are."""
    if isinstance(x, dict):
        return {k: canon(v) for k, v in x.items()}
    if isinstance(x, list):
        return [canon(v) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    assert isinstance(x, int | float) and math.isfinite(x)
    return float(x).hex()


def given_part(sent: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """``got`` restricted to the keys ``sent`` gave, recursively into nested models (the rest
    are the schema's defaults)."""
    out = {}
    for k, v in sent.items():
        if k in ("info",) and isinstance(v, dict):
            out[k] = given_part(v, got[k])
        elif k == "messages":
            out[k] = [given_part(a, b) for a, b in zip(v, got[k], strict=True)]
        else:
            out[k] = got[k]
    return out


async def _over_the_wire(kind: str, src: str, dst: str, step: int, t: float, body: dict):
    """Send ``body`` as ``src`` to ``dst`` through a memory hub; the receiver's envelope, and its
    inbox."""
    hub = MemoryHub()
    tx = Node(MemoryTransport(hub, f"{RUN}.{src}"), run_id=RUN, me=src, acl={"status": ["*"]})
    rx = Node(
        MemoryTransport(hub, f"{RUN}.{dst}"),
        run_id=RUN,
        me=dst,
        acl={kind: [(src, dst)], "status": ["*"]},
    )
    await rx.start()
    await tx.start()
    try:
        await tx.send(kind, dst, step=step, t_send_s=t, body=body)
        got = await rx.expect(kind, src, step, 0, timeout_s=5.0)
    finally:
        await tx.close()
        await rx.close()
    return got, rx.inbox


def _check(kind: str, model: type, src: str, dst: str, step: int, t: float, body: dict):
    got, inbox = asyncio.run(_over_the_wire(kind, src, dst, step, t, body))
    assert got is not None, dict(inbox.rejected)
    env, nbytes = got
    assert isinstance(env, model) and nbytes > 0
    assert (env.src, env.dst, env.step, env.round) == (src, dst, step, 0)
    assert float(env.t_send_s).hex() == float(t).hex()
    assert not inbox.rejected
    back = env.body.model_dump()
    assert canon(given_part(body, back)) == canon(body)
    return env


# ------------------------------------------------------------------ properties
ADDRESS = {"agent": name, "step": counter, "t": st.floats(0, 1e9, allow_nan=False)}
"""the strategies of a message's addressing: the agent, the control step, the send time"""
EXAMPLES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@given(body=meas_bodies, **ADDRESS)
@EXAMPLES
def test_measurement_body_round_trips(body, agent, step, t):
    """A schema-valid measurement body sent by the plant arrives at the agent unchanged."""
    env = _check("meas", MeasMsg, PLANT, agent, step, t, body)
    # every field of a measurement body was given: the whole body is what was sent
    assert canon(env.body.model_dump()) == canon(body)


@given(body=setpoint_bodies, **ADDRESS)
@EXAMPLES
def test_setpoint_body_round_trips(body, agent, step, t):
    """A schema-valid setpoint body (with or without its decision info) sent by an agent
    arrives at the plant unchanged."""
    env = _check("setpoint", SetpointMsg, agent, PLANT, step, t, body)
    assert canon(env.body.setpoints) == canon(body["setpoints"])
    if "info" not in body:
        assert env.body.info is None
