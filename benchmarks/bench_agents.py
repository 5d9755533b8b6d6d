"""Agents as asyncio tasks against agents as OS processes: wall time, start-up and peak memory of
one scenario's run, measured in one invocation.

    python benchmarks/bench_agents.py [--scenario case1197-pv-clustered] [--hours 24]

Both runs use the run's own embedded MQTT broker (agents as processes need a broker). A thread
samples, every 0.5 s, the memory of this process and of every process it started (agents,
broker): the proportional set size (PSS: shared pages split among the processes that share them,
so the sum is what the run occupies) and the resident set (RSS, which counts shared pages in every
process); printed are the peaks of the PSS sum and of the RSS sum, the largest process's RSS, the
run's wall time, its run-loop wall time and ``agents_online_wall_s`` (from the agents' start until
all are online). The runs' numbers must be identical (virtual time); the script checks that.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from machine_info import cpu_model

from clustersim.results.tables import WALL_CLOCK_KEYS
from clustersim.runner import run_scenario
from clustersim.scenario import load_scenario

MB = 1024**2


class MemorySampler:
    """Peak PSS and RSS of this process plus its descendants, and the peak RSS of the largest
    descendant, sampled in a background thread."""

    def __init__(self, period_s: float = 0.5) -> None:
        self.period_s = period_s
        self.peak_pss = 0
        self.peak_total = 0
        self.peak_child = 0
        self.peak_children = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            info = me.memory_full_info()
            total, pss = info.rss, info.pss
            kids = me.children(recursive=True)
            biggest = 0
            for k in kids:
                try:
                    info = k.memory_full_info()
                except psutil.Error:
                    continue
                total += info.rss
                pss += info.pss
                biggest = max(biggest, info.rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_total = max(self.peak_total, total)
            self.peak_child = max(self.peak_child, biggest)
            self.peak_children = max(self.peak_children, len(kids))
            self._stop.wait(self.period_s)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def one(scenario: str, agents: str, hours: float, out: Path) -> dict[str, Any]:
    sc = load_scenario(
        scenario,
        overrides=[f"run.duration_h={hours}", "comm.transport=mqtt", f"run.agents={agents}"],
    )
    t0 = time.perf_counter()
    with MemorySampler() as mem:
        res = run_scenario(sc, out_dir=out, overwrite=True)
    return {
        "agents": agents,
        "wall": time.perf_counter() - t0,
        "summary": res.summary,
        "peak_pss_mb": mem.peak_pss / MB,
        "peak_total_mb": mem.peak_total / MB,
        "peak_child_mb": mem.peak_child / MB,
        "processes": mem.peak_children,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="case1197-pv-clustered")
    ap.add_argument("--hours", type=float, default=24.0)
    args = ap.parse_args()
    print(f"machine: {cpu_model()}, {psutil.cpu_count()} cores, load {psutil.getloadavg()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for agents in ("tasks", "processes"):
            rows.append(one(args.scenario, agents, args.hours, Path(tmp) / agents))
            print(f"  {agents}: {rows[-1]['wall']:.1f} s", flush=True)
    same = [{k: v for k, v in r["summary"].items() if k not in WALL_CLOCK_KEYS} for r in rows]
    print(
        f"\n### {args.scenario}, {args.hours:g} h, embedded MQTT broker: agents as tasks and "
        "as processes\n"
    )
    print(
        "| agents | controllers | run wall s | run loop s | agents online s | processes "
        "| peak PSS all MB | peak RSS all MB | peak RSS largest child MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        s = r["summary"]
        print(
            f"| {r['agents']} | {s['controllers']} | {r['wall']:.1f} "
            f"| {s['run_loop_wall_time_s']:.1f} | {s.get('agents_online_wall_s', float('nan')):.1f} "
            f"| {r['processes']} | {r['peak_pss_mb']:.0f} | {r['peak_total_mb']:.0f} "
            f"| {r['peak_child_mb']:.0f} |"
        )
    identical = json.dumps(same[0], sort_keys=True) == json.dumps(same[1], sort_keys=True)
    print(f"\nsummaries identical (wall-clock keys aside): {identical}")
    print(f"load average at end: {psutil.getloadavg()}")
    if not identical:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
