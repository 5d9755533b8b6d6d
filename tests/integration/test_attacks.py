"""Attacks on a running co-simulation by a foreign MQTT client, on an open Mosquitto and an open
embedded broker (anyone may connect and publish), and on the run's own embedded broker (which
admits only the run's nodes).

One run per broker takes a bundle of attacks (forged, unsigned and wrongly signed messages of
every kind, deep-nested junk, pre-empted sequence numbers, forged ``status``/``log``/``clock
stop``, a replay with another payload); the physics, the control decisions and the faults must
equal those of an unattacked run, every attack must be refused as ``auth`` before it touches a
sequence number, and forged ``status`` messages must trigger no re-send.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from clustersim.broker.auth import Keyring
from clustersim.broker.embedded import EmbeddedBroker
from clustersim.broker.envelope import encode, make_envelope
from clustersim.broker.transport import MqttTransport
from clustersim.errors import BrokerError
from clustersim.runner import run_scenario
from clustersim.scenario import load_scenario

SHORT = [
    "run.duration_h=2",
    "control.pop_size=12",
    "control.generations=4",
    "control.round_generations=2",
    "comm.watchdog_s=10",
]
SCENARIO = "ieee33-ev-clustered"


def _run(tmp: Path, name: str, *overrides: str):
    sc = load_scenario(SCENARIO, overrides=[*SHORT, *overrides])
    return run_scenario(sc, out_dir=tmp / name)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"0" + b"]" * depth


class Intruder(threading.Thread):
    """A foreign client: waits for C1's first setpoint (which tells it the run id), then sends
    its bundle of attacks and returns once the broker has passed every one of them on."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.sent = 0
        self.run_id = ""
        self.ready = threading.Event()

    def run(self) -> None:
        asyncio.run(self._main())

    def _bundle(self, rid: str, captured: tuple[str, bytes]) -> list[tuple[str, bytes]]:
        base = f"clustersim/{rid}"
        head = {"run_id": rid, "t_send_s": 1.0}

        def env(kind: str, src: str, dst: str, seq: int, body: dict, step: int = 1) -> bytes:
            fields = {**head, "src": src, "dst": dst, "seq": seq, "step": step, "body": body}
            return encode(make_envelope(kind, **fields))

        forger = Keyring.generate(["C1", "plant"])
        sp = {"setpoints": {"OLTC": {"tap_pos": 5}}}
        out = [
            (f"{base}/setpoint/C1/plant", _nested(1000)),  # 2,000 bytes of nested arrays
            (f"{base}/meas/plant/C1", _nested(1000)),
            (f"{base}/setpoint/C1/plant", env("setpoint", "C1", "plant", 10_000, sp)),
            (  # signed, but with a key the run never gave out
                f"{base}/setpoint/C1/plant",
                forger.of("C1").sign(
                    f"{base}/setpoint/C1/plant", env("setpoint", "C1", "plant", 10_001, sp)
                ),
            ),
            (f"{base}/meas/plant/C1", env("meas", "plant", "C1", 10_000, {"step": 15})),
            (
                f"{base}/clock/plant/all",
                env("clock", "plant", "all", 10_000, {"event": "stop", "t_s": 0.0}),
            ),
        ]
        # pre-empted sequence numbers: C1's next 40 setpoints, unsigned
        out += [
            (f"{base}/setpoint/C1/plant", env("setpoint", "C1", "plant", seq, {"setpoints": {}}))
            for seq in range(1, 41)
        ]
        # forged reconnect announcements (each would make every node re-send its window)
        out += [
            (
                f"{base}/status/C2/all",
                env(
                    "status", "C2", "all", 10_000 + i, {"state": "online", "reason": "reconnected"}
                ),
            )
            for i in range(200)
        ]
        # forged remote faults
        out += [
            (
                f"{base}/log/C3/all",
                env("log", "C3", "all", 10_000 + i, {"level": "warning", "message": "forged"}),
            )
            for i in range(50)
        ]
        doc = json.loads(captured[1])  # C1's genuine setpoint again, another payload
        doc["t_send_s"] = float(doc["t_send_s"]) + 1.0
        out.append((captured[0], json.dumps(doc).encode()))
        return out

    async def _main(self) -> None:
        async with MqttTransport(self.url, "intruder.x") as t:
            await t.subscribe("clustersim/+/setpoint/C1/plant")
            await t.subscribe("clustersim/intruder-done")
            self.ready.set()
            captured = None
            end = time.monotonic() + 120
            while captured is None and time.monotonic() < end:
                captured = await t.receive(1.0)
            if captured is None:
                return
            self.run_id = captured[0].split("/")[1]
            for topic, payload in self._bundle(self.run_id, captured):
                await t.publish(topic, payload)
                self.sent += 1
            # the broker handles one connection's messages in order: once this marker comes
            # back, every attack before it has been passed on
            await t.publish("clustersim/intruder-done", b"")
            end = time.monotonic() + 30
            while time.monotonic() < end:
                got = await t.receive(1.0)
                if got is not None and got[0] == "clustersim/intruder-done":
                    break


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The unattacked run (memory transport: the same numbers as on any broker)."""
    return _run(tmp_path_factory.mktemp("clean"), "clean", "comm.transport=memory")


def _tables(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    ts = pd.read_parquet(out / "timeseries.parquet")
    ctl = pd.read_parquet(out / "control.parquet").drop(columns=["solve_time_s"])
    return ts, ctl


@pytest.mark.parametrize("kind", ["mosquitto", "embedded"])
def test_attacks_on_an_open_broker_change_nothing(tmp_path, clean, kind, request):
    """Every forged message is refused as ``auth``: same physics, decisions and faults as the
    unattacked run, no remote fault, no re-send (no duplicate delivered), reproducible."""
    if kind == "mosquitto":
        broker = request.getfixturevalue("mosquitto_broker")
    else:
        broker = request.getfixturevalue("embedded_broker")
    intruder = Intruder(broker.url)
    intruder.start()
    assert intruder.ready.wait(30), "the intruder did not subscribe"
    attacked = _run(tmp_path, "attacked", f"comm.broker={broker.url}")
    intruder.join(timeout=60)
    assert intruder.sent == 2 + 4 + 40 + 200 + 50 + 1, intruder.sent
    s = attacked.summary
    assert s["provenance"]["run_id"] == intruder.run_id
    # the plant and C1..C3 were attacked: the plant's refusals are all auth
    assert set(s["messages_rejected_by_reason"]) == {"auth"}, s["messages_rejected_by_reason"]
    assert s["messages_rejected"] >= 2 + 2 + 40 + 200 + 50 + 1
    assert s["faults"] == clean.summary["faults"] == []
    assert s["messages_duplicate"] == 0  # no re-send was triggered
    assert s["reproducible"] is True and s["agents_lost"] == []
    for a, c in zip(_tables(attacked.out_dir), _tables(clean.out_dir), strict=True):
        pd.testing.assert_frame_equal(a, c)
    msgs = pd.read_parquet(attacked.out_dir / "messages.parquet")
    assert set(msgs[msgs.rejected].reason) == {"auth"}


def test_the_runs_own_broker_admits_only_its_nodes(tmp_path):
    """The embedded broker a run starts asks every node for its password and binds client ids
    to users: an anonymous client, a wrong password and a node using another node's client id
    are refused; a node cannot publish as another (the ACL drops it)."""

    async def main(b: EmbeddedBroker) -> None:
        plant = MqttTransport(b.url_for("plant"), "plant.a", connect_timeout_s=5)
        c1 = MqttTransport(b.url_for("C1"), "C1.b", connect_timeout_s=5)
        await plant.start()
        await plant.subscribe("clustersim/#")
        await c1.start()
        await c1.publish("clustersim/r/meas/plant/C1", b"forged")  # not C1's topic
        await c1.publish("clustersim/r/setpoint/C1/plant", b"own")
        got = await plant.receive(5)
        assert got == ("clustersim/r/setpoint/C1/plant", b"own")
        assert await plant.receive(1) is None
        bad_pw = b.url_for("C1").replace("@", "x@", 1)
        for url, cid in [(b.url, "anon.c"), (bad_pw, "C1.d"), (b.url_for("C1"), "plant.e")]:
            t = MqttTransport(url, cid, connect_timeout_s=3)
            with pytest.raises(BrokerError, match="refused"):
                await t.start()
        await plant.close()
        await c1.close()

    with EmbeddedBroker(nodes=["plant", "C1"]) as b:
        assert b.auth_dir is not None and oct(b.auth_dir.stat().st_mode)[-3:] == "700"
        asyncio.run(main(b))
    assert not b.auth_dir.exists()


def test_two_runs_of_one_scenario_on_one_broker_do_not_meet(tmp_path, mqtt_broker, clean):
    """Two runs of the same scenario and seed at once on one broker: different run ids, no
    refused message, each with the numbers of a run alone."""
    cmd = [sys.executable, "-m", "clustersim.cli", "run", SCENARIO, "-q"]
    cmd += [x for o in [*SHORT, f"comm.broker={mqtt_broker.url}"] for x in ("--set", o)]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    procs = [
        subprocess.Popen(
            [*cmd, "--out", str(tmp_path / name)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for name in ("a", "b")
    ]
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out
    ids = set()
    for name in ("a", "b"):
        s = json.loads((tmp_path / name / "summary.json").read_text())
        ids.add(s["provenance"]["run_id"])
        assert s["messages_rejected"] == 0 and s["faults"] == []
        for a, c in zip(_tables(tmp_path / name), _tables(clean.out_dir), strict=True):
            pd.testing.assert_frame_equal(a, c)
    assert len(ids) == 2
