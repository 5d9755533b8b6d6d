"""Coordination modes against centralized control: full-day runs of the built-in scenarios.

Run from the repository root::

    python benchmarks/bench_coordination.py [--hours 24] [--seed 1] [--jobs 2]
                                            [--cases ieee33-ev,ieee51-ga,ieee123-ev]
                                            [--modes none,boundary,value-table,...]

Per case: the centralized scenario, then the clustered one with ``[control] coordination`` =
``none``, ``boundary``, ``value-table`` and ``admm`` at 2, 4 and 8 rounds (each scenario's own
budget and partition; ``coordination_rounds`` is the scenario's except for ADMM); for ieee33-ev
also the K-means and spectral partitions with ``boundary`` and ``value-table``. Every
run is ``clustersim.runner.run_scenario`` over the in-memory transport (the numbers are the
same on any transport: tests/integration/test_cosim.py). Prints one table: the voltage
violation (bus·h), the max and mean |V−1| at the worst bus, losses, the evaluations all agents
spent per control interval (the budget), and the clustered run's violation and worst-bus
deviations relative to centralized. The KPI columns are the same on any machine for the same
seed; only the wall time is measured here.
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

MODES = ("none", "boundary", "value-table", "admm-2", "admm-4", "admm-8")
"""coordination modes of the clustered runs; ``admm-R``: ADMM with R rounds"""
PARTITIONS = {"ieee33-ev": ("kmeans", "spectral")}
"""cases whose clustered runs are repeated with these partition methods (boundary, value-table)"""


def _runs(cases: list[str], modes: list[str]) -> list[tuple[str, str, str, str]]:
    """(case, scenario, partition method or "", coordination) of every run, in table order."""
    out = []
    for case in cases:
        out.append((case, f"{case}-centralized", "", "none"))
        out.extend((case, f"{case}-clustered", "", m) for m in modes)
        for method in PARTITIONS.get(case, ()):
            out.extend((case, f"{case}-clustered", method, m) for m in MODES[1:3])
    return out


def _run(scenario: str, method: str, mode: str, hours: float, seed: int, out: str) -> dict:
    from clustersim.runner import run_scenario
    from clustersim.scenario import load_scenario

    overrides = [f"run.duration_h={hours}", "comm.transport=memory"]
    if scenario.endswith("-clustered"):
        how, rounds = mode.split("-") if mode.startswith("admm-") else (mode, "")
        overrides.append(f"control.coordination={how}")
        if rounds:
            overrides.append(f"control.coordination_rounds={rounds}")
    if method:
        overrides.append(f"partition.method={method}")
    sc = load_scenario(scenario, overrides=overrides, seed=seed)
    folder = Path(out) / f"{scenario}-{method or 'scenario'}-{mode}"
    t0 = time.perf_counter()
    run_scenario(sc, folder, overwrite=True)
    s = json.loads((folder / "summary.json").read_text())
    s["_wall_s"] = time.perf_counter() - t0
    control = pd.read_parquet(folder / "control.parquet")
    s["_evals"] = float(control.groupby("interval")["evaluations"].sum().mean())
    s["_method"] = method or sc.partition.method
    return s


def _rel(x: float, ref: float) -> str:
    if ref == 0:
        return "=" if x == 0 else "∞"
    return f"{x / ref:.2f}×"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--cases", default="ieee33-ev,ieee51-ga,ieee123-ev")
    ap.add_argument("--modes", default=",".join(MODES), help="coordination modes, comma-separated")
    args = ap.parse_args()
    runs = _runs(args.cases.split(","), args.modes.split(","))
    t0 = time.perf_counter()
    print(
        f"{args.hours:g} h from midnight, seed {args.seed}; {os.cpu_count()} cores, "
        f"python {platform.python_version()}, {args.jobs} run(s) at a time"
    )
    with tempfile.TemporaryDirectory(prefix="bench_coordination_") as tmp:
        ctx = mp.get_context("spawn")
        with cf.ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
            futures = [
                pool.submit(_run, sc, method, mode, args.hours, args.seed, tmp)
                for _, sc, method, mode in runs
            ]
            results = [f.result() for f in futures]
    print(
        "\n| case | control | partition | coordination | evaluations / interval "
        "| violation bus·h | max \\|V−1\\| worst bus | mean \\|V−1\\| worst bus "
        "| mean \\|V−1\\| all buses | losses MWh | violation vs central "
        "| worst-bus max / mean vs central | mean all vs central | wall s |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    central: dict[str, dict] = {}
    for (case, sc, _, mode), s in zip(runs, results, strict=True):
        clustered = sc.endswith("-clustered")
        if not clustered:
            central[case] = s
        c = central[case]
        vio, vmax = s["voltage_violation_bus_hours"], s["max_abs_voltage_deviation_at_worst_bus_pu"]
        vmean = s["mean_abs_voltage_deviation_at_worst_bus_pu"]
        vall = s["mean_abs_voltage_deviation_pu"]
        rel = (
            (
                _rel(vio, c["voltage_violation_bus_hours"]),
                f"{_rel(vmax, c['max_abs_voltage_deviation_at_worst_bus_pu'])} / "
                f"{_rel(vmean, c['mean_abs_voltage_deviation_at_worst_bus_pu'])}",
                _rel(vall, c["mean_abs_voltage_deviation_pu"]),
            )
            if clustered
            else ("", "", "")
        )
        print(
            f"| {case} | {'clustered' if clustered else 'centralized'} "
            f"| {s['_method'] if clustered else ''} | {mode if clustered else ''} "
            f"| {s['_evals']:.0f} | {vio:.2f} | {vmax:.4f} | {vmean:.4f} | {vall:.4f} "
            f"| {s['energy_losses_mwh']:.3f} | {rel[0]} | {rel[1]} | {rel[2]} "
            f"| {s['_wall_s']:.0f} |"
        )
    print(f"\nbenchmark wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
