"""Runtime, tau, feasibility and peak memory of every partition method, one run each.

    python benchmarks/bench_partition.py [--cases ieee33 ieee123 simbench-mv-rural case1197]
        [--k K] [--methods M ...] [--min-size A] [--max-size B] [--disk-cache]

Prints a markdown table: per case the context build (time and peak memory), then per method the
runtime of the method alone (as measured by ``run_partition``), the time of the whole
``run_partition`` call (method, pilot buses, every metric, the constraint checks), tau, the
constraint checks and the peak memory. Clusters: ``--k`` for every case, else 30 for case1197
and 5 for the others; size bounds n/k/3 … 2n/k unless given. ``feasible`` is ``connected`` and
``size ok`` (k connected clusters within the bounds; ``resources ok`` is reported beside it and
cannot hold on case1197 for 30 clusters, which has 23 tap changers as its only devices).

Peak memory is the process's resident-set high-water mark (Linux ``VmHWM``) reset before each
step (``/proc/self/clear_refs``), so each row shows the largest resident size during that step,
the context and everything loaded before included; elsewhere the process maximum so far. The
context is built, not read from the disk cache, unless ``--disk-cache`` is given.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path

from machine_info import cpu_model, wall_time_footer

from clustersim.partition import context_cache
from clustersim.partition.context import context_cache_info, context_for_case
from clustersim.partition.methods import method_names, run_partition

DEFAULT_CASES = ["ieee33", "ieee123", "simbench-mv-rural"]
CASE_K = {"case1197": 30}
"""clusters per case when ``--k`` is not given (others: 5)"""

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak() -> None:
    """Reset the resident-set high-water mark (Linux; a no-op elsewhere)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        pass


def peak_mb() -> float:
    """Resident-set high-water mark since the last :func:`reset_peak`, MB."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tick(ok: bool) -> str:
    return "✓" if ok else "×"


def bench_case(case: str, k: int, args: argparse.Namespace) -> None:
    reset_peak()
    builds = context_cache_info()["builds"]
    t0 = time.perf_counter()
    ctx = context_for_case(case)
    t_ctx = time.perf_counter() - t0
    how = "built" if context_cache_info()["builds"] > builds else "cached"
    lo = args.min_size or max(1, ctx.n // k // 3)
    hi = args.max_size or max(ctx.n // k * 2, 1)
    print(
        f"| {case} | {ctx.n} | {k} | {lo}..{hi} | (context, {how}) | {t_ctx:.2f} | | | | | | "
        f"| {peak_mb():.0f} |",
        flush=True,
    )
    for m in args.methods:
        reset_peak()
        t0 = time.perf_counter()
        p = run_partition(ctx, m, k, seed=args.seed, min_size=lo, max_size=hi)
        total = time.perf_counter() - t0
        c = p.constraints
        print(
            f"| {case} | {ctx.n} | {k} | {lo}..{hi} | {m} | {p.runtime_s:.2f} | {total:.2f} "
            f"| {p.metrics['tau']:.4f} | {tick(c['connected'])} | {tick(c['size_ok'])} "
            f"| {tick(c['resources_ok'])} | {tick(c['connected'] and c['size_ok'])} "
            f"| {peak_mb():.0f} |",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", nargs="*", default=DEFAULT_CASES)
    ap.add_argument("--k", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", nargs="*", default=method_names())
    ap.add_argument("--min-size", type=int, default=None)
    ap.add_argument("--max-size", type=int, default=None)
    ap.add_argument("--disk-cache", action="store_true", help="read contexts from the disk cache")
    args = ap.parse_args()
    if not args.disk_cache:
        os.environ[context_cache.CACHE_DIR_ENV] = "off"
    t_start = time.perf_counter()
    print(f"machine: {cpu_model() or platform.machine()}, {os.cpu_count()} cores")
    print(
        "| case | n | k | sizes | method | runtime s | total s | tau | connected | size ok "
        "| resources ok | feasible | peak MB |"
    )
    print("|---|---:|---:|---|---|---:|---:|---:|---|---|---|---|---:|")
    for case in args.cases:
        bench_case(case, args.k or CASE_K.get(case, 5), args)
    print(wall_time_footer(t_start))


if __name__ == "__main__":
    main()
