"""Message signatures (HMAC-SHA256 per node), the nodes' checks of them, and the bounded
re-sends after reconnect announcements."""

from __future__ import annotations

import asyncio
import stat

import pytest

from clustersim.broker.auth import Keyring, client_id
from clustersim.broker.envelope import EnvelopeError, Inbox, encode, make_envelope
from clustersim.broker.node import Node
from clustersim.broker.transport import MemoryHub, MemoryTransport
from clustersim.errors import ScenarioError

RUN = "auth-run"
TOPIC = f"clustersim/{RUN}/setpoint/C1/plant"
KEYS = Keyring.generate(["plant", "C1", "C2"])


def _setpoint(seq: int = 0, tap: int = 1) -> bytes:
    env = make_envelope(
        "setpoint",
        run_id=RUN,
        src="C1",
        dst="plant",
        seq=seq,
        t_send_s=0.0,
        body={"setpoints": {"OLTC": {"tap_pos": tap}}},
    )
    return encode(env)


def test_signed_payload_verifies_to_the_canonical_envelope():
    body = _setpoint()
    signed = KEYS.of("C1").sign(TOPIC, body)
    assert signed.endswith(b'"}') and b',"sig":"' in signed
    assert KEYS.verify(TOPIC, "C1", signed) == body


@pytest.mark.parametrize(
    "case",
    ["unsigned", "other_key", "other_sender", "other_topic", "tampered", "unknown_sender"],
)
def test_forgeries_are_refused_as_auth(case):
    body = _setpoint()
    signed = KEYS.of("C1").sign(TOPIC, body)
    topic, src, payload = TOPIC, "C1", signed
    if case == "unsigned":
        payload = body
    elif case == "other_key":
        payload = Keyring.generate(["C1"]).of("C1").sign(TOPIC, body)
    elif case == "other_sender":
        src = "C2"
    elif case == "other_topic":
        topic = f"clustersim/{RUN}-x/setpoint/C1/plant"
    elif case == "tampered":
        payload = signed.replace(b'"tap_pos":1', b'"tap_pos":5')
    elif case == "unknown_sender":
        src = "intruder"
    with pytest.raises(EnvelopeError) as exc:
        KEYS.verify(topic, src, payload)
    assert exc.value.reason == "auth"


def test_inbox_refuses_before_touching_sequence_numbers():
    """An unsigned message with a fresh seq is refused as auth and does not use up the seq:
    the genuine message with that seq is then accepted."""
    inbox = Inbox(
        {"setpoint": [("C1", "plant")]}, run_id=RUN, me="plant", verify=KEYS.of("plant").verify
    )
    assert inbox.check(TOPIC, _setpoint(seq=7, tap=5)).reason == "auth"
    assert inbox.check(TOPIC, b"[" * 5000).reason == "auth"  # junk is not even parsed
    assert inbox.seen == {}
    genuine = KEYS.of("C1").sign(TOPIC, _setpoint(seq=7))
    assert inbox.check(TOPIC, genuine).ok
    assert dict(inbox.rejected) == {"auth": 2}


def test_keys_file_round_trip_is_private(tmp_path):
    path = KEYS.write(tmp_path / "keys.toml")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ring = Keyring.load(path, me="C2")
    assert ring.keys == KEYS.keys and ring.me == "C2"
    assert "keys=" not in repr(ring) and KEYS.keys["C1"].hex() not in repr(ring)
    (tmp_path / "bad.toml").write_text("C1 = 'zz'\n")
    with pytest.raises(ScenarioError, match=r"bad\.toml"):
        Keyring.load(tmp_path / "bad.toml")


def test_client_ids_are_unguessable_and_name_their_node():
    a, b = client_id("C1", RUN), client_id("C1", RUN)
    assert a != b and a.startswith(f"C1.{RUN}.")


def test_reconnect_announcements_in_a_burst_cost_at_most_two_resends():
    """50 genuine reconnect announcements within a moment: one re-send at once, one more
    when a second has passed, none per announcement."""

    async def main() -> tuple[int, int]:
        hub = MemoryHub()
        acl = {"status": ["*"], "setpoint": [("C1", "plant")]}
        plant = Node(MemoryTransport(hub, "plant.x"), run_id=RUN, me="plant", acl=acl, keys=KEYS)
        c1 = Node(MemoryTransport(hub, "C1.x"), run_id=RUN, me="C1", acl=acl, keys=KEYS)
        await plant.start()
        await c1.start()
        await c1.send("setpoint", "plant", body={"setpoints": {}})
        for _ in range(50):
            await plant.status("online", "reconnected")
        while await c1.pump(0.05):
            pass
        first = c1.resends
        await asyncio.sleep(1.2)
        while await c1.pump(0.05):
            pass
        await c1.close()
        await plant.close()
        return first, c1.resends

    first, total = asyncio.run(main())
    assert first == 1 and total == 2
