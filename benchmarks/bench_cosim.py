"""Wall time of a scenario over MQTT (embedded amqtt broker, and mosquitto when installed)
versus over the in-memory transport, measured in one run, and the broker message rate.

    python benchmarks/bench_cosim.py [--scenario ieee33-ev-clustered] [--hours 24]

The numbers of the runs must be identical (virtual time); the script checks that and prints
the ratio MQTT / memory of the whole run's wall time and of the run loop's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

from clustersim.broker.mosquitto import MosquittoBroker, mosquitto_path
from clustersim.results.tables import WALL_CLOCK_KEYS
from clustersim.runner import run_scenario
from clustersim.scenario import load_scenario


def _one(scenario: str, overrides: list[str], out: Path) -> tuple[float, dict]:
    sc = load_scenario(scenario, overrides=overrides)
    t0 = time.perf_counter()
    res = run_scenario(sc, out_dir=out, overwrite=True)
    return time.perf_counter() - t0, res.summary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="ieee33-ev-clustered")
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="interleaved repeats (memory, embedded, mosquitto, memory, ...); the ratios are "
        "medians over repeats, since one run's solve time varies by 10-30 %% on 2 cores",
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_cosim_"))
    base = [f"run.duration_h={args.hours}"]
    names = ["memory", "embedded amqtt"] + (["mosquitto"] if mosquitto_path() else [])
    walls: dict[str, list[float]] = {n: [] for n in names}
    loops: dict[str, list[float]] = {n: [] for n in names}
    summaries: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        mq = (
            stack.enter_context(MosquittoBroker(workdir=tmp / "mosq")) if mosquitto_path() else None
        )
        for r in range(args.repeats):
            for name in names:
                extra = {
                    "memory": ["comm.transport=memory"],
                    "embedded amqtt": [],  # the run starts its own embedded broker
                    "mosquitto": [f"comm.broker={mq.url}" if mq else ""],
                }[name]
                out = tmp / f"{name.replace(' ', '_')}-{r}"
                wall, s = _one(args.scenario, [*base, *extra], out)
                walls[name].append(wall)
                loops[name].append(s["run_loop_wall_time_s"])
                summaries.setdefault(name, s)
    s0 = summaries["memory"]
    ref = {k: v for k, v in s0.items() if k not in WALL_CLOCK_KEYS}
    print(
        f"{args.scenario}, {args.hours} h, {s0['messages_sent']} protocol messages, "
        f"{args.repeats} interleaved repeats (medians)"
    )
    print(
        f"{'transport':16s} {'wall s':>8s} {'loop s':>8s} {'ratio':>6s} {'loop ratio':>10s} "
        f"{'msg/s':>7s} same"
    )
    m_wall, m_loop = statistics.median(walls["memory"]), statistics.median(loops["memory"])
    for name in names:
        same = {k: v for k, v in summaries[name].items() if k not in WALL_CLOCK_KEYS} == ref
        wall, loop = statistics.median(walls[name]), statistics.median(loops[name])
        print(
            f"{name:16s} {wall:8.1f} {loop:8.1f} {wall / m_wall:6.2f} {loop / m_loop:10.2f} "
            f"{s0['messages_sent'] / loop:7.1f} {same}"
        )
    print("per repeat, wall s:", json.dumps({n: [round(w, 1) for w in walls[n]] for n in names}))
    print(json.dumps({k: s0[k] for k in ("voltage_violation_bus_hours", "latency_p50_ms")}))


if __name__ == "__main__":
    main()
