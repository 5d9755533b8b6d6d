"""Runtime of every partition method on ieee33, ieee123 and a SimBench case (one run each).

    python benchmarks/bench_partition.py [--cases ieee33 ieee123 simbench-mv-rural] [--k 5]

Prints a markdown table: context build time per case, then per method the runtime (as measured
by ``run_partition``: the method alone, not the uniform evaluation), tau, and whether the result
met the constraints. Default options of every method (the papers' settings).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from machine_info import wall_time_footer

from clustersim.partition.context import context_for_case
from clustersim.partition.methods import method_names, run_partition


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", nargs="*", default=["ieee33", "ieee123", "simbench-mv-rural"])
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", nargs="*", default=method_names())
    args = ap.parse_args()
    t_start = time.perf_counter()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print("| case | n | method | runtime s | tau | connected | size ok | resources ok |")
    print("|---|---:|---|---:|---:|---|---|---|")
    for case in args.cases:
        t0 = time.perf_counter()
        ctx = context_for_case(case)
        t_ctx = time.perf_counter() - t0
        print(f"| {case} | {ctx.n} | (context build) | {t_ctx:.2f} | | | | |", flush=True)
        max_size = max(ctx.n // args.k * 2, 1)
        min_size = max(1, ctx.n // args.k // 3)
        for m in args.methods:
            p = run_partition(ctx, m, args.k, seed=args.seed, min_size=min_size, max_size=max_size)
            c = p.constraints
            print(
                f"| {case} | {ctx.n} | {m} | {p.runtime_s:.2f} | {p.metrics['tau']:.4f} "
                f"| {'✓' if c['connected'] else '×'} | {'✓' if c['size_ok'] else '×'} "
                f"| {'✓' if c['resources_ok'] else '×'} |",
                flush=True,
            )
    print(wall_time_footer(t_start))


if __name__ == "__main__":
    main()
