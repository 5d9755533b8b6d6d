"""Budget → voltage quality: one scenario run for a ladder of optimizer budgets.

Run from the repository root::

    python benchmarks/bench_budget.py [--scenario ieee33-ev-clustered] [--hours 24] [--jobs 1]
                                      [--seed 1]

Each budget (population, generations, patience) overrides the scenario's ``[control]`` and is
run with ``clustersim.runner.run_scenario`` (full day by default). Prints, per budget: the
evaluations the agents spent (mean per solve), the voltage violation (bus·h), the largest
|V−1|, losses, the agents' summed solve time, the critical path and the run's wall time. The KPI
columns are the same on any machine for the same scenario and seed; the time columns are measured
here and grow when runs share cores (``--jobs`` above the idle cores).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd

BUDGETS = (
    (12, 8, 3),
    (24, 15, 4),
    (40, 20, 6),
    (40, 40, 8),
    (60, 60, 10),
    (80, 100, 15),
)
"""(population, generations, patience)"""


def _run(name: str, budget: tuple[int, int, int], hours: float, seed: int, out: str) -> dict:
    from clustersim.runner import run_scenario
    from clustersim.scenario import load_scenario

    pop, gens, pat = budget
    sc = load_scenario(
        name,
        overrides=[
            f"run.duration_h={hours}",
            f"control.pop_size={pop}",
            f"control.generations={gens}",
            f"control.patience={pat}",
        ],
        seed=seed,
    )
    folder = Path(out) / f"{pop}-{gens}-{pat}"
    t0 = time.perf_counter()
    run_scenario(sc, folder, overwrite=True)
    summary = json.loads((folder / "summary.json").read_text())
    summary["_wall_s"] = time.perf_counter() - t0
    control = pd.read_parquet(folder / "control.parquet")
    col = "evaluations" if "evaluations" in control.columns else None
    summary["_evals"] = float(control[col].mean()) if col else float("nan")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="ieee33-ev-clustered")
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(
        f"{args.scenario}, {args.hours:g} h, seed {args.seed}; {os.cpu_count()} cores, "
        f"python {platform.python_version()}, {args.jobs} run(s) at a time"
    )
    with tempfile.TemporaryDirectory(prefix="bench_budget_") as tmp:
        ctx = mp.get_context("spawn")
        with cf.ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
            futures = {
                b: pool.submit(_run, args.scenario, b, args.hours, args.seed, tmp) for b in BUDGETS
            }
            results = {b: f.result() for b, f in futures.items()}
    print(
        "\n| pop | generations | patience | evaluations per solve | violation bus·h "
        "| max \\|V−1\\| p.u. | losses MWh | control s | critical path s | run wall s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (pop, gens, pat), s in results.items():
        print(
            f"| {pop} | {gens} | {pat} | {s['_evals']:.0f} "
            f"| {s['voltage_violation_bus_hours']:.2f} | {s['max_abs_voltage_deviation_pu']:.4f} "
            f"| {s['energy_losses_mwh']:.3f} | {s['control_wall_time_s']:.1f} "
            f"| {s['control_critical_path_s']:.1f} | {s['_wall_s']:.0f} |"
        )
    print(f"\nbenchmark wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
