"""Broker capacity: messages per second through the embedded amqtt broker and a private mosquitto.

Run from the repository root::

    python benchmarks/bench_broker.py [--messages 5000] [--bytes 200] [--repeats 3]

Both brokers are started by the script on a free loopback port
(``clustersim.broker.embedded.EmbeddedBroker``, amqtt in a child process as in a run, and
``clustersim.broker.mosquitto.MosquittoBroker``, skipped when mosquitto is not installed); the
machine's own mosquitto service is never used. Clients are the project's own
``clustersim.broker.transport.MqttTransport`` (aiomqtt, QoS 1, up to 100 messages awaiting
PUBACK), publisher and subscriber in this process. Two measurements per broker, interleaved
over ``--repeats`` (medians printed):

- stream: one publisher queues ``--messages`` payloads of ``--bytes`` bytes on one topic; the
  rate is messages / (time from the first publish to the subscriber's last receipt);
- ping-pong: one message in flight at a time (publish, wait for its delivery, publish the
  next), as the co-simulation's sequential protocol does per hop; the rate is the inverse of the
  median publish-to-receipt time.

"client CPU during stream" is this process's CPU time over the stream's wall time: near 100 %
means the Python clients, not the broker, set the stream rate (one core for both clients).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import time

from machine_info import wall_time_footer

from clustersim.broker.embedded import EmbeddedBroker
from clustersim.broker.mosquitto import MosquittoBroker, mosquitto_path
from clustersim.broker.transport import MqttTransport


async def _pair(url: str, tag: str) -> tuple[MqttTransport, MqttTransport]:
    pub = MqttTransport(url, f"bench-pub-{tag}")
    sub = MqttTransport(url, f"bench-sub-{tag}")
    await sub.start()
    await sub.subscribe(f"bench/{tag}")
    await pub.start()
    return pub, sub


async def _stream(url: str, n: int, size: int, tag: str) -> tuple[float, float]:
    """(messages per second, CPU seconds of this process per wall second meanwhile)."""
    pub, sub = await _pair(url, tag)
    payload = b"x" * size
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            await pub.publish(f"bench/{tag}", payload)
        for i in range(n):
            if await sub.receive(timeout_s=60.0) is None:
                raise RuntimeError(f"stream {tag}: message {i} of {n} not received within 60 s")
        wall = time.perf_counter() - t0
        return n / wall, (time.process_time() - c0) / wall
    finally:
        await pub.close()
        await sub.close()


async def _ping_pong(url: str, n: int, size: int, tag: str) -> float:
    pub, sub = await _pair(url, tag)
    payload = b"x" * size
    times: list[float] = []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            await pub.publish(f"bench/{tag}", payload)
            if await sub.receive(timeout_s=30.0) is None:
                raise RuntimeError(f"ping-pong {tag}: message {i} not received within 30 s")
            times.append(time.perf_counter() - t0)
        return 1.0 / statistics.median(times)
    finally:
        await pub.close()
        await sub.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=5000, help="messages per stream measurement")
    ap.add_argument("--pings", type=int, default=500, help="messages per ping-pong measurement")
    ap.add_argument("--bytes", type=int, default=200, help="payload size")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    t_start = time.perf_counter()
    names = ["embedded amqtt"] + (["mosquitto"] if mosquitto_path() else [])
    stream: dict[str, list[float]] = {n: [] for n in names}
    client_cpu: dict[str, list[float]] = {n: [] for n in names}
    pong: dict[str, list[float]] = {n: [] for n in names}
    with contextlib.ExitStack() as stack:
        urls = {"embedded amqtt": stack.enter_context(EmbeddedBroker()).url}
        if "mosquitto" in names:
            urls["mosquitto"] = stack.enter_context(MosquittoBroker()).url
        for r in range(args.repeats):
            for name in names:
                tag = f"{name.split()[0]}{r}"
                rate, cpu = asyncio.run(_stream(urls[name], args.messages, args.bytes, tag))
                stream[name].append(rate)
                client_cpu[name].append(cpu)
                pong[name].append(
                    asyncio.run(_ping_pong(urls[name], args.pings, args.bytes, tag + "p"))
                )

    print(
        f"{args.bytes}-byte payloads, QoS 1, one publisher -> one subscriber (MqttTransport), "
        f"{args.messages} messages per stream, {args.pings} per ping-pong, "
        f"{args.repeats} interleaved repeats (medians); {os.cpu_count()} cores, "
        f"python {platform.python_version()}"
    )
    print()
    print(
        "| broker | stream msg/s | ping-pong msg/s | client CPU during stream "
        "| stream per repeat | ping-pong per repeat |"
    )
    print("|---|---:|---:|---:|---|---|")
    for name in names:
        print(
            f"| {name} | {statistics.median(stream[name]):.0f} "
            f"| {statistics.median(pong[name]):.0f} "
            f"| {statistics.median(client_cpu[name]):.0%} "
            f"| {' / '.join(f'{v:.0f}' for v in stream[name])} "
            f"| {' / '.join(f'{v:.0f}' for v in pong[name])} |"
        )
    print()
    print(wall_time_footer(t_start))


if __name__ == "__main__":
    main()
