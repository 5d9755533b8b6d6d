"""Wall time of a scenario over MQTT (embedded amqtt broker, and mosquitto when installed)
versus over the in-memory transport, measured in one run, and the broker message rate.

    python benchmarks/bench_cosim.py [--scenario ieee33-ev-clustered] [--hours 24]

The numbers of the runs must be identical (virtual time); the script checks that and prints
the ratio MQTT / memory of the whole run's wall time and of the run loop's.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from clustersim.broker.mosquitto import MosquittoBroker, mosquitto_path
from clustersim.runner import WALL_CLOCK_KEYS, run_scenario
from clustersim.scenario import load_scenario


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="ieee33-ev-clustered")
    ap.add_argument("--hours", type=float, default=24.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_cosim_"))
    base = [f"run.duration_h={args.hours}"]
    runs = [("memory", ["comm.transport=memory"]), ("embedded amqtt", [])]
    results = {}
    for name, extra in runs:
        sc = load_scenario(args.scenario, overrides=[*base, *extra])
        t0 = time.perf_counter()
        res = run_scenario(sc, out_dir=tmp / name.replace(" ", "_"))
        results[name] = (time.perf_counter() - t0, res.summary)
    if mosquitto_path():
        with MosquittoBroker(workdir=tmp / "mosq") as mq:
            sc = load_scenario(args.scenario, overrides=[*base, f"comm.broker={mq.url}"])
            t0 = time.perf_counter()
            res = run_scenario(sc, out_dir=tmp / "mosquitto")
            results["mosquitto"] = (time.perf_counter() - t0, res.summary)
    wall0, s0 = results["memory"]
    ref = {k: v for k, v in s0.items() if k not in WALL_CLOCK_KEYS}
    print(f"{args.scenario}, {args.hours} h, {s0['messages_sent']} protocol messages")
    print(f"{'transport':16s} {'wall s':>8s} {'loop s':>8s} {'ratio':>6s} {'msg/s':>7s} same")
    for name, (wall, s) in results.items():
        same = {k: v for k, v in s.items() if k not in WALL_CLOCK_KEYS} == ref
        loop = s["run_loop_wall_time_s"]
        print(
            f"{name:16s} {wall:8.1f} {loop:8.1f} {wall / wall0:6.2f} "
            f"{s['messages_sent'] / loop:7.1f} {same}"
        )
    print(json.dumps({k: s0[k] for k in ("voltage_violation_bus_hours", "latency_p50_ms")}))


if __name__ == "__main__":
    main()
