"""No payload raises out of a node's receive path: deeply nested JSON is refused (reason
``json``) before it is parsed, counted, and the node goes on taking genuine messages."""

from __future__ import annotations

import asyncio
import json

import pytest

from clustersim.broker.envelope import MAX_DEPTH, EnvelopeError, decode, loads_bounded
from clustersim.broker.node import Node
from clustersim.broker.transport import MemoryHub, MemoryTransport

RUN = "hostile"
TOPIC = f"clustersim/{RUN}/setpoint/C1/plant"


def _plant(hub: MemoryHub) -> Node:
    """The plant's node on ``hub``, taking setpoints from C1."""
    return Node(
        MemoryTransport(hub, f"{RUN}.plant"),
        run_id=RUN,
        me="plant",
        acl={"setpoint": [("C1", "plant")], "status": ["*"]},
    )


def _nested(depth: int, inner: bytes = b"0") -> bytes:
    return b"[" * depth + inner + b"]" * depth


@pytest.mark.parametrize(
    "payload",
    [
        _nested(1000),  # 2,000 bytes of arrays
        b'{"v":1,"kind":"setpoint","body":' + _nested(5000, b"{}") + b"}",
        b'{"a":' * 3000 + b"1" + b"}" * 3000,
    ],
    ids=["array", "in-body", "objects"],
)
def test_deep_nesting_is_refused_before_parsing(payload):
    """decode and the header reader refuse deep nesting with one reason, never RecursionError."""
    with pytest.raises(EnvelopeError) as exc:
        decode(payload, topic=TOPIC)
    assert exc.value.reason == "json" and "nested" in str(exc.value)
    with pytest.raises(EnvelopeError):
        loads_bounded(payload)


def test_brackets_inside_strings_do_not_count():
    """A string full of brackets is data, not nesting."""
    doc = {"message": "[" * 5000}
    assert loads_bounded(json.dumps(doc).encode()) == doc
    assert loads_bounded(_nested(MAX_DEPTH)) is not None


def test_node_survives_and_counts_hostile_payloads():
    """A node that receives nested junk on its setpoint topic records the refusals and still
    takes the genuine setpoint that follows."""

    async def main():
        hub = MemoryHub()
        plant = _plant(hub)
        agent = Node(MemoryTransport(hub, f"{RUN}.C1"), run_id=RUN, me="C1", acl={"status": ["*"]})
        intruder = MemoryTransport(hub, f"{RUN}.intruder")
        await plant.start()
        await agent.start()
        await intruder.start()
        try:
            for payload in (_nested(1000), b'{"seq":' + _nested(4000) + b"}"):
                await intruder.publish(TOPIC, payload)
            await agent.send("setpoint", "plant", step=0, body={"setpoints": {}})
            got = await plant.expect("setpoint", "C1", 0, 0, timeout_s=5.0)
        finally:
            await intruder.close()
            await agent.close()
            await plant.close()
        return got, plant

    got, plant = asyncio.run(main())
    assert got is not None
    assert plant.rejected_counts() == {"json": 2}
    rows = plant.refused_records()
    assert [(r.kind, r.src, r.reason) for r in rows] == [("setpoint", "C1", "json")] * 2


def test_refusals_are_counted_in_full_and_sampled_in_rows():
    """Junk does not amplify: a node counts every refusal by reason but keeps rows only for the
    latest REFUSED_KEPT, and an agent forwards at most REFUSED_SAMPLE of them per setpoint."""
    from clustersim.broker.node import REFUSED_KEPT, REFUSED_SAMPLE

    junk = REFUSED_KEPT * 3

    async def main():
        hub = MemoryHub()
        node = _plant(hub)
        intruder = MemoryTransport(hub, f"{RUN}.intruder")
        await node.start()
        await intruder.start()
        try:
            for _ in range(junk):
                await intruder.publish(TOPIC, b"{not json")
            while await node.pump(0.2):
                pass
        finally:
            await intruder.close()
            await node.close()
        return node

    node = asyncio.run(main())
    assert node.rejected_counts() == {"json": junk} and node.refused_total == junk
    assert len(node.refused) == REFUSED_KEPT
    assert len(node.refused_records()) == REFUSED_KEPT
    assert len(node.refused_records(0, limit=REFUSED_SAMPLE)) == REFUSED_SAMPLE
    assert len(node.refused_records(junk - 5)) == 5  # numbered over all refusals, kept or not
