"""The README's control-mode KPI table: each built-in scenario run once, its summary.json read.

Run from the repository root::

    python benchmarks/kpi_table.py [--jobs 2] [--scenarios ieee33-ev-none ...] [--seed 1]
                                   [--hours 24]

Each scenario is loaded with ``clustersim.scenario.load_scenario`` (its default settings, plus
``run.seed`` and ``run.duration_h``) and run with ``clustersim.runner.run_scenario`` into a
temporary folder, in ``--jobs`` worker processes. Prints the markdown table of the README
("What the built-in scenarios give") and, after it, each run's wall time and the benchmark's.

The KPI columns are identical for the same scenario and seed on any machine; "control s" and
"critical path s" are wall-clock measurements (``control_wall_time_s``,
``control_critical_path_s`` of summary.json) and grow when the runs share cores (``--jobs``
larger than the idle cores).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

SCENARIOS = (
    "ieee33-ev-none",
    "ieee33-ev-local",
    "ieee33-ev-centralized",
    "ieee33-ev-clustered",
    "ieee51-ga-none",
    "ieee51-ga-centralized",
    "ieee51-ga-active",
    "ieee51-ga-reactive",
    "ieee51-ga-clustered",
)

HEADER = (
    "| scenario | violation bus·h | max \\|V−1\\| p.u. | min V p.u. | losses MWh | cost "
    "| switchings | control s | critical path s |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def _run(name: str, seed: int, hours: float, out_root: str) -> dict:
    """One scenario run in a worker process; returns its summary.json."""
    from clustersim.runner import run_scenario
    from clustersim.scenario import load_scenario

    sc = load_scenario(name, overrides=[f"run.duration_h={hours}"], seed=seed)
    out = Path(out_root) / name
    t0 = time.perf_counter()
    run_scenario(sc, out, overwrite=True)
    wall = time.perf_counter() - t0
    summary = json.loads((out / "summary.json").read_text())
    summary["_bench_wall_s"] = wall
    return summary


def _row(name: str, s: dict) -> str:
    optimizing = s.get("controllers", 0) and s["mode"] not in ("none", "local")
    ctrl = f"{s['control_wall_time_s']:.1f}" if optimizing else "–"
    crit = f"{s['control_critical_path_s']:.1f}" if optimizing else "–"
    return (
        f"| {name} | {s['voltage_violation_bus_hours']:.2f} "
        f"| {s['max_abs_voltage_deviation_pu']:.4f} | {s['min_vm_pu']:.4f} "
        f"| {s['energy_losses_mwh']:.3f} | {s['energy_cost']:.0f} "
        f"| {s['switching_operations']} | {ctrl} | {crit} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), metavar="NAME")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hours", type=float, default=24.0, help="run.duration_h (24 in the README)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    started = dt.datetime.now(dt.UTC)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="kpi_table_") as tmp:
        ctx = mp.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
            futs = {
                pool.submit(_run, name, args.seed, args.hours, tmp): name for name in args.scenarios
            }
            for fut in cf.as_completed(futs):
                name = futs[fut]
                results[name] = fut.result()
                print(
                    f"done {name} ({results[name]['_bench_wall_s']:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    total = time.perf_counter() - t0

    print(
        f"{args.hours:g} h, plant step {results[args.scenarios[0]]['plant_step_s']} s, "
        f"seed {args.seed}, default settings; {started:%Y-%m-%d}, {os.cpu_count()} cores, "
        f"--jobs {args.jobs}, python {platform.python_version()}"
    )
    print()
    print(HEADER)
    for name in args.scenarios:
        print(_row(name, results[name]))
    print()
    print(
        "run wall s (wall_time_s): "
        + ", ".join(f"{n} {results[n]['wall_time_s']:.0f}" for n in args.scenarios)
    )
    load = os.getloadavg()
    print(
        f"benchmark wall time {total:.0f} s; load average at end (1/5/15 min) "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
    )


if __name__ == "__main__":
    main()
