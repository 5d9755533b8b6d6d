"""Transports (broker/transport.py), the embedded broker and the private mosquitto."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from clustersim.broker.embedded import EmbeddedBroker, free_port, port_open
from clustersim.broker.mosquitto import MosquittoBroker, mosquitto_path
from clustersim.broker.transport import (
    BrokerAddress,
    MemoryHub,
    MemoryTransport,
    MqttTransport,
    Transport,
    TransportEvent,
    check_topic,
    check_topic_filter,
    open_transport,
    parse_url,
    topic_matches,
)
from clustersim.errors import BrokerError

needs_mosquitto = pytest.mark.skipif(mosquitto_path() is None, reason="mosquitto not installed")


def run(coro, timeout_s: float = 30.0):
    """Run one test coroutine on a fresh event loop, bounded by ``timeout_s`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


def unique(prefix: str = "test") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


async def collect(t: Transport, n: int, timeout_s: float = 5.0) -> list[tuple[str, bytes]]:
    """Up to ``n`` messages, stopping at the first wait longer than ``timeout_s``."""
    out = []
    while len(out) < n:
        m = await t.receive(timeout_s)
        if m is None:
            break
        out.append(m)
    return out


# ---------------------------------------------------------------- topics and URLs


@pytest.mark.parametrize(
    ("flt", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/b", "a/b/c", False),
        ("a/b/c", "a/b", False),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/+", "a/", True),  # + matches an empty level
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("+/+", "a/b", True),
        ("+", "a", True),
        ("+", "a/b", False),
        ("+", "/a", False),
        ("+/+", "/a", True),
        ("#", "a/b/c", True),
        ("#", "/", True),
        ("a/#", "a", True),  # the parent level too
        ("a/#", "a/b", True),
        ("a/#", "a/b/c", True),
        ("a/#", "ab", False),
        ("a/b/#", "a/c/d", False),
        ("a/+/#", "a/b", True),
        ("a/+/#", "a", False),
        ("A/b", "a/b", False),  # case-sensitive
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("clustersim/+/setpoint/C1/#", "clustersim/r1/setpoint/C1/plant", True),
        ("clustersim/+/setpoint/C1/#", "clustersim/r1/setpoint/C2/plant", False),
        ("clustersim/r1/+/+/C1", "clustersim/r1/boundary/C2/C1", True),
    ],
)
def test_topic_matches(flt, topic, expected):
    assert topic_matches(flt, topic) is expected


@pytest.mark.parametrize("bad", ["", "a/#/b", "a#", "a/b+", "+a/b", "a/##"])
def test_bad_topic_filter(bad):
    with pytest.raises(ValueError):
        check_topic_filter(bad)


@pytest.mark.parametrize("bad", ["", "a/+", "a/#", "a\x00b"])
def test_bad_topic(bad):
    with pytest.raises(ValueError):
        check_topic(bad)


def test_parse_url():
    assert parse_url("mqtt://127.0.0.1:1884") == BrokerAddress("127.0.0.1", 1884)
    assert parse_url("mqtt://broker.lan") == BrokerAddress("broker.lan", 1883)
    a = parse_url("mqtt://C1:p%40ss:w@host:2000/")
    assert (a.host, a.port, a.username, a.password) == ("host", 2000, "C1", "p@ss:w")
    assert "p%40ss" not in str(a) and "p@ss" not in str(a) and "p@ss" not in repr(a)
    assert str(a) == "mqtt://C1:***@host:2000"
    assert parse_url("MQTT://[::1]:1883").host == "::1"


@pytest.mark.parametrize(
    "url",
    [
        "http://host:1883",
        "host:1883",
        "mqtt://:1883",
        "mqtt://",
        "mqtt://host:0",
        "mqtt://host:70000",
        "mqtt://host:port",
        "mqtt://host:",
        "mqtt://host:1883/path",
        "mqtt://host:1883?x=1",
        "mqtts://u:secret@host:8883",
    ],
)
def test_parse_url_refuses(url):
    with pytest.raises(BrokerError) as e:
        parse_url(url)
    msg = str(e.value)
    assert "\n" not in msg and "secret" not in msg
    assert "expected mqtt://host:port" in msg


def test_bad_url_at_construction():
    with pytest.raises(BrokerError, match="bad broker URL"):
        MqttTransport("tcp://127.0.0.1:1", "x")
    with pytest.raises(BrokerError, match="bad broker URL"):
        open_transport("mqtt://u:hunter2@host:99999", "x")


# ---------------------------------------------------------------- memory transport


def test_memory_pub_sub_wildcards_and_order():
    async def main():
        hub = MemoryHub()
        a, b, c = (MemoryTransport(hub, n) for n in ("A", "B", "C"))
        for t in (a, b, c):
            await t.start()
        await a.subscribe("clustersim/r1/+/+/A")
        await b.subscribe("clustersim/#")
        await b.subscribe("clustersim/r1/meas/#")  # overlapping: delivered once
        await c.subscribe("other/+")
        for i in range(20):
            await c.publish(f"clustersim/r1/meas/plant/{'A' if i % 2 else 'B'}", b"%d" % i)
        got_a = await collect(a, 20, 0.05)
        got_b = await collect(b, 20, 0.05)
        assert [int(p) for _, p in got_a] == list(range(1, 20, 2))
        assert [int(p) for _, p in got_b] == list(range(20))
        assert await c.receive(0) is None
        # the sender gets its own message when subscribed
        await c.publish("other/x", b"self")
        assert await c.receive(0.1) == ("other/x", b"self")
        assert c.messages_published == 21 and c.bytes_published == sum(
            len(b"%d" % i) for i in range(20)
        ) + len(b"self")
        assert b.messages_received == 20
        for t in (a, b, c):
            await t.close()

    run(main())


def test_memory_receive_timeout_and_close():
    async def main():
        hub = MemoryHub()
        t = MemoryTransport(hub, "A")
        async with t:
            await t.subscribe("x/#")
            t0 = time.monotonic()
            assert await t.receive(0.05) is None
            assert time.monotonic() - t0 >= 0.04
            waiter = asyncio.create_task(t.receive())
            await asyncio.sleep(0)  # the waiter runs up to its wait
        assert await asyncio.wait_for(waiter, 1.0) is None  # close wakes the receiver
        assert t.closed and hub.client_ids == []
        with pytest.raises(BrokerError):
            await t.publish("x/y", b"")
        await t.close()  # idempotent

    run(main())


def test_memory_publish_before_start_is_delivered_at_start():
    async def main():
        hub = MemoryHub()
        sub = MemoryTransport(hub, "S")
        await sub.start()
        await sub.subscribe("x/#")
        pub = MemoryTransport(hub, "P")
        await pub.publish("x/1", b"early")
        assert await sub.receive(0) is None
        await pub.start()
        assert await sub.receive(0) == ("x/1", b"early")

    run(main())


def test_memory_will_on_drop():
    async def main():
        hub = MemoryHub()
        watcher = MemoryTransport(hub, "W")
        agent = MemoryTransport(hub, "C1", will=("clustersim/r1/status/C1/all", b"offline"))
        quiet = MemoryTransport(hub, "C2", will=("clustersim/r1/status/C2/all", b"offline"))
        for t in (watcher, agent, quiet):
            await t.start()
        await watcher.subscribe("clustersim/+/status/#")
        await quiet.close()  # a clean disconnect sends no will
        assert await watcher.receive(0) is None
        assert hub.drop("C1") is True
        assert await watcher.receive(0) == ("clustersim/r1/status/C1/all", b"offline")
        assert [e.kind for e in agent.events] == ["connected", "disconnected"]
        await agent.publish("clustersim/r1/status/C1/all", b"ghost")  # goes nowhere
        assert await watcher.receive(0) is None
        assert hub.drop("C1") is False

    run(main())


def test_open_transport():
    hub = MemoryHub()
    t = open_transport(hub, "A", will=("a/b", b"x"), keepalive_s=5, reconnect_interval_s=0.1)
    assert isinstance(t, MemoryTransport) and t.will == ("a/b", b"x")
    m = open_transport("mqtt://127.0.0.1:1", "A", keepalive_s=5)
    assert isinstance(m, MqttTransport) and m.keepalive_s == 5
    with pytest.raises(TypeError):
        open_transport(hub, "A", bogus=1)
    with pytest.raises(TypeError):
        open_transport(42, "A")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        MemoryTransport(hub, "")
    ev = TransportEvent("connected", 1.0)
    assert ev.detail == ""


# ---------------------------------------------------------------- brokers


def test_free_port_and_embedded_in_process():
    port = free_port()
    assert not port_open("127.0.0.1", port)
    with EmbeddedBroker(port=port, in_process=True) as b:
        assert b.url == f"mqtt://127.0.0.1:{port}" and b.running
        assert port_open("127.0.0.1", port)

        async def main():
            async with MqttTransport(b.url, "solo") as t:
                await t.subscribe("x/#")
                await t.publish("x/1", b"hi")
                assert await t.receive(5) == ("x/1", b"hi")

        run(main())
    assert not b.running
    b.stop()  # idempotent


def test_embedded_port_in_use_is_a_broker_error():
    with EmbeddedBroker() as b:
        t0 = time.monotonic()
        with pytest.raises(BrokerError, match="did not start"):
            EmbeddedBroker(port=b.port, start_timeout_s=10).start()
        assert time.monotonic() - t0 < 10


def test_serve_on_a_busy_port_is_a_broker_error():
    from clustersim.broker.embedded import serve

    with EmbeddedBroker(in_process=True) as b:
        t0 = time.monotonic()
        with pytest.raises(BrokerError, match=str(b.port)) as e:
            serve(b.host, b.port)
        assert "\n" not in str(e.value) and time.monotonic() - t0 < 10


@needs_mosquitto
def test_mosquitto_lifecycle(tmp_path):
    b = MosquittoBroker(workdir=tmp_path)
    with b:
        assert b.running and port_open("127.0.0.1", b.port)
        conf = b.conf_path.read_text()
        assert f"listener {b.port} 127.0.0.1" in conf and "allow_anonymous true" in conf
        assert "persistence false" in conf
        b.kill()
        assert not b.running and not port_open("127.0.0.1", b.port)
        b.restart()
        assert b.running and port_open("127.0.0.1", b.port)
    assert not b.running
    assert "running" in b.log_text()
    b.stop()  # idempotent


def test_mosquitto_missing_binary(monkeypatch):
    import clustersim.broker.mosquitto as mq

    monkeypatch.setattr(mq, "mosquitto_path", lambda: None)
    with pytest.raises(BrokerError, match="mosquitto binary not found"):
        mq.MosquittoBroker()


# ---------------------------------------------------------------- MQTT transport


@pytest.fixture(params=["mosquitto", "embedded"])
def broker(request):
    """Each MQTT test runs over mosquitto (when installed) and over the embedded amqtt."""
    if request.param == "mosquitto":
        return request.getfixturevalue("mosquitto_broker")
    return request.getfixturevalue("embedded_broker")


@pytest.fixture(params=["mosquitto", "embedded"])
def own_broker(request, tmp_path):
    """A broker of the test's own (for tests that kill and restart it)."""
    if request.param == "mosquitto":
        if mosquitto_path() is None:
            pytest.skip("mosquitto is not installed")
        b: MosquittoBroker | EmbeddedBroker = MosquittoBroker(workdir=tmp_path / "mq")
    else:
        b = EmbeddedBroker()
    with b:
        yield b


def test_round_trip_50_in_order(broker):
    async def main():
        base = unique()
        async with (
            MqttTransport(broker.url, unique("sub").replace("/", "-")) as sub,
            MqttTransport(broker.url, unique("pub").replace("/", "-")) as pub,
        ):
            await sub.subscribe(f"{base}/#")
            payloads = [(b"%03d" % i) * 67 for i in range(50)]  # ~200 bytes each
            for i, p in enumerate(payloads):
                await pub.publish(f"{base}/{i % 3}", p)
            got = await collect(sub, 50)
            assert [p for _, p in got] == payloads
            assert [t for t, _ in got] == [f"{base}/{i % 3}" for i in range(50)]
            assert await sub.receive(0.1) is None
            assert pub.messages_published == 50
            assert pub.bytes_published == sum(map(len, payloads))
            assert sub.messages_received == 50
            assert [e.kind for e in pub.events] == ["connected"]

    run(main())


async def _until(cond, timeout_s: float = 10.0) -> None:
    """Wait until ``cond()`` holds (checked every 10 ms); fail after ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.01)


def test_subscribe_before_publish(broker):
    """Once subscribe() returns, the broker routes the next publish to the subscriber."""

    async def main():
        base = unique()
        async with (
            MqttTransport(broker.url, unique("s").replace("/", "-")) as sub,
            MqttTransport(broker.url, unique("p").replace("/", "-")) as pub,
        ):
            await pub.publish(f"{base}/early", b"before")
            # pub's own marker comes back after the broker handled "early" (one connection's
            # messages are handled in order): "early" was routed while nobody subscribed
            await pub.subscribe(f"{base}-marker")
            await pub.publish(f"{base}-marker", b"")
            assert await pub.receive(5) == (f"{base}-marker", b"")
            for i in range(5):
                await sub.subscribe(f"{base}/{i}")
                await pub.publish(f"{base}/{i}", b"%d" % i)
                assert await sub.receive(5) == (f"{base}/{i}", b"%d" % i)
            assert await sub.receive(0.1) is None

    run(main())


def test_receive_timeout_returns_none(broker):
    async def main():
        async with MqttTransport(broker.url, unique("t").replace("/", "-")) as t:
            await t.subscribe(f"{unique()}/#")
            t0 = time.monotonic()
            assert await t.receive(0.2) is None
            assert 0.15 <= time.monotonic() - t0 < 2.0
            assert await t.receive(0) is None

    run(main())


def test_close_flushes_queued_messages(broker):
    async def main():
        base = unique()
        async with MqttTransport(broker.url, unique("s").replace("/", "-")) as sub:
            await sub.subscribe(f"{base}/#")
            pub = MqttTransport(broker.url, unique("p").replace("/", "-"))
            await pub.start()
            for i in range(300):
                await pub.publish(f"{base}/x", b"%d" % i)
            await pub.close()  # returns once all 300 are acknowledged
            assert pub.queued == 0
            got = await collect(sub, 300)
            assert [int(p) for _, p in got] == list(range(300))
            with pytest.raises(BrokerError):
                await pub.publish(f"{base}/x", b"late")
            await pub.close()  # idempotent

    run(main())


def test_unreachable_port_fails_fast():
    async def main():
        url = f"mqtt://127.0.0.1:{free_port()}"
        t = MqttTransport(url, "nobody", connect_timeout_s=0.5, reconnect_interval_s=0.05)
        t0 = time.monotonic()
        with pytest.raises(BrokerError) as e:
            await t.start()
        assert time.monotonic() - t0 < 3.0
        msg = str(e.value)
        assert url in msg and "\n" not in msg and "refused" in msg.lower()
        await t.close()

    run(main())


def test_publish_while_never_connected_then_close_is_bounded():
    async def main():
        t = MqttTransport(f"mqtt://127.0.0.1:{free_port()}", "lonely", connect_timeout_s=0.3)
        await t.publish("a/b", b"queued")  # no error: queued
        with pytest.raises(BrokerError):
            await t.start()
        t0 = time.monotonic()
        await t.close(flush_timeout_s=0.2)
        assert time.monotonic() - t0 < 2.0

    run(main())


def test_broker_restart_self_delivery(own_broker):
    """One client that subscribes to what it publishes: after a broker crash and restart it
    re-subscribes before it re-sends, so nothing it published while the broker was down is
    lost; the disconnect and reconnect are recorded and on_reconnect is awaited."""

    async def main():
        base = unique()
        t = MqttTransport(own_broker.url, "self-loop", reconnect_interval_s=0.05)
        hook_calls = []

        async def hook():
            hook_calls.append(t.connected)
            await t.publish(f"{base}/hook", b"again")

        t.on_reconnect = hook
        async with t:
            await t.subscribe(f"{base}/#")
            for i in range(10):
                await t.publish(f"{base}/m", b"%d" % i)
            assert [int(p) for _, p in await collect(t, 10)] == list(range(10))
            own_broker.kill()
            for i in range(10, 20):
                await t.publish(f"{base}/m", b"%d" % i)  # queued, never raises
            await _until(lambda: not t.connected)
            own_broker.restart()
            got = await collect(t, 11, timeout_s=10)
            msgs = [int(p) for topic, p in got if topic.endswith("/m")]
            assert msgs == list(range(10, 20))
            assert (f"{base}/hook", b"again") in got
            assert hook_calls == [True]
            kinds = [e.kind for e in t.events]
            assert kinds[0] == "connected"
            assert "disconnected" in kinds and kinds[-1] == "reconnected"
            disc = next(e for e in t.events if e.kind == "disconnected")
            assert disc.detail and disc.wall_time_s > 0
            assert t.reconnects == 1

    run(main(), timeout_s=40)


def test_broker_restart_pub_sub(own_broker):
    """Publisher and subscriber both reconnect; what was published while the broker was down
    arrives after the reconnect, in order (the subscriber is back first here: it retries
    every 50 ms, the publisher every 1.5 s)."""

    async def main():
        base = unique()
        sub = MqttTransport(own_broker.url, "rs-sub", reconnect_interval_s=0.05)
        pub = MqttTransport(own_broker.url, "rs-pub", reconnect_interval_s=1.5)
        async with sub, pub:
            await sub.subscribe(f"{base}/#")
            for i in range(10):
                await pub.publish(f"{base}/m", b"%d" % i)
            assert [int(p) for _, p in await collect(sub, 10)] == list(range(10))
            own_broker.kill()
            await _until(lambda: not pub.connected)
            for i in range(10, 20):
                await pub.publish(f"{base}/m", b"%d" % i)
            own_broker.restart()
            for i in range(20, 30):
                await pub.publish(f"{base}/m", b"%d" % i)
            got = [int(p) for _, p in await collect(sub, 20, timeout_s=10)]
            assert got == list(range(10, 30))
            for t in (sub, pub):
                kinds = [e.kind for e in t.events]
                assert kinds == ["connected", "disconnected", "reconnected"], kinds

    run(main(), timeout_s=40)


def _cut(t: MqttTransport) -> None:
    """Cut ``t``'s TCP connection under it (no DISCONNECT packet: the broker sends the will)."""
    import socket

    client = t._client
    assert client is not None
    sock = client._client.socket()
    assert sock is not None
    sock.shutdown(socket.SHUT_RDWR)


def test_will_when_connection_drops(broker):
    """The broker publishes the will of a client whose connection died; the client reconnects."""

    async def main():
        base = unique()
        will = (f"{base}/status/sub", b"offline")
        t = MqttTransport(broker.url, unique("wd").replace("/", "-"), will=will)
        t.reconnect_interval_s = 0.05
        watcher = MqttTransport(broker.url, unique("w").replace("/", "-"))
        async with t, watcher:
            await watcher.subscribe(f"{base}/status/#")
            await t.subscribe(f"{base}/m/#")
            _cut(t)
            assert await watcher.receive(5) == will
            for _ in range(100):
                if t.reconnects:
                    break
                await asyncio.sleep(0.05)
            assert [e.kind for e in t.events] == ["connected", "disconnected", "reconnected"]
            await watcher.publish(f"{base}/m/x", b"back")
            assert await t.receive(5) == (f"{base}/m/x", b"back")
        assert await watcher.receive(0.2) is None  # a clean close sends no will

    run(main())


@needs_mosquitto
def test_persistent_session_keeps_messages_for_a_dropped_client(mosquitto_broker):
    """With the broker up, QoS 1 messages for a briefly disconnected client are kept for it
    (clean_session=False under a fixed client id). amqtt 0.12 does not do this reliably."""

    async def main():
        base = unique()
        sub = MqttTransport(mosquitto_broker.url, "ps-sub", reconnect_interval_s=0.3)
        pub = MqttTransport(mosquitto_broker.url, "ps-pub")
        async with sub, pub:
            await sub.subscribe(f"{base}/m/#")
            _cut(sub)
            await _until(lambda: not sub.connected)
            for i in range(5):
                await pub.publish(f"{base}/m/x", b"%d" % i)
            got = [int(p) for _, p in await collect(sub, 5, timeout_s=10)]
            assert got == list(range(5))
            assert [e.kind for e in sub.events] == ["connected", "disconnected", "reconnected"]

    run(main())


def test_client_takes_over_a_stale_session(broker):
    """A new process with the same client id does not get the old one's leftovers."""

    async def main():
        base = unique()
        cid = unique("same").replace("/", "-")
        old = MqttTransport(broker.url, cid)
        await old.start()
        await old.subscribe(f"{base}/old/#")
        await old.close()  # the persistent session stays on the broker
        async with MqttTransport(broker.url, unique("p").replace("/", "-")) as pub:
            await pub.publish(f"{base}/old/x", b"stale")
        async with MqttTransport(broker.url, cid) as new:
            assert await new.receive(0.3) is None

    run(main())


def test_mqtt_broker_fixture(mqtt_broker):
    """The shared `mqtt_broker` fixture gives a started broker with a working ``url``."""

    async def main():
        async with MqttTransport(mqtt_broker.url, unique("f").replace("/", "-")) as t:
            await t.subscribe("fixture/#")
            await t.publish("fixture/x", b"1")
            assert await t.receive(5) == ("fixture/x", b"1")

    run(main())
