"""The lean NSGA-II (``nsga2``) against pymoo's NSGA-II (``pymoo-nsga2``) on the control problems.

Run from the repository root::

    python benchmarks/bench_optimizer.py [--seeds 10] [--pop 40] [--generations 40] [--only TEXT]

Problems: one control step of the central ieee51-ga problem (evening peak) and of the central
problem and the largest cluster problem (most decision variables, not grid-searched) of ieee33-ev
and ieee123-ev (interval 68, 17:00), the plant run without control up to the interval. Each
optimizer solves each problem for seeds 0..N-1 with the same population and generation count
(no patience, so the same evaluation budget). Printed, all measured in this run:

- HV: hypervolume of the final front (rank 1 of the feasible candidates) after min-max
  normalization over both optimizers' fronts of that problem, reference point 1.1 per objective;
  the ratio lean / pymoo of the means (≥ 0.98 is parity within 2 %), with its 95 % bootstrap
  interval (seeds resampled per optimizer, 2,000 draws) and the two-sided Mann–Whitney p-value of
  the two samples of hypervolumes, so a gap can be told from the spread over seeds;
- f1 of the chosen compromise (fuzzy rule), mean over seeds;
- per-generation overhead: solve time minus the time spent in the problem's evaluation, divided
  by the generations run; and the ratio pymoo / lean;
- solve time, and the ratio pymoo / lean.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
import warnings
from typing import Any

import numpy as np
import pymoo
from bench_control import (
    _clusters,
    _plant_at,
    _pm,
    _progress,
    _scenario,
    _timed_objectives,
    set_hypervolumes,
)
from machine_info import cpu_model

from clustersim.agents.control import build_controllers
from clustersim.assemble.build import control_settings
from clustersim.assemble.seeds import Stage, stage_seed

ALGORITHMS = ("nsga2", "pymoo-nsga2")
PROBLEMS = (
    ("ieee51-ga", "central", 76),
    ("ieee33-ev", "central", 68),
    ("ieee33-ev", "cluster", 68),
    ("ieee123-ev", "central", 68),
    ("ieee123-ev", "cluster", 68),
)


def _controller(case: str, kind: str, interval: int, settings_of: Any) -> tuple[Any, Any, str]:
    """(controller factory, plant, label) for one problem; the factory takes (algorithm, seed)."""
    sc_c = _scenario(f"{case}-centralized")
    plant = _plant_at(f"{case}-centralized", interval)
    meas = plant.measure()
    if kind == "central":
        settings = control_settings(sc_c)

        def make(alg: str, seed: int) -> Any:
            s = settings_of(settings, alg)
            return build_controllers(plant, "centralized", s, seed=seed)[0]

        return make, meas, f"{case} central"
    sc = _scenario(f"{case}-clustered")
    clusters = _clusters(sc)
    settings = control_settings(sc)
    base = stage_seed(sc.run.seed, Stage.CONTROL)
    best, best_n = None, -1
    for ctl in build_controllers(plant, "clustered", settings, clusters=clusters, seed=base):
        prep = ctl.prepare(interval, meas)
        opt = prep.optimizer
        if opt.searching and prep.problem.n_var > best_n:
            best, best_n = ctl.name, prep.problem.n_var

    def make_cluster(alg: str, seed: int) -> Any:
        s = settings_of(settings, alg)
        return build_controllers(plant, "clustered", s, clusters=clusters, seed=seed, only=best)[0]

    return make_cluster, meas, f"{case} cluster {best}"


def bench(seeds: int, pop: int, gens: int, only: str | None = None) -> list[dict[str, Any]]:
    rows = []

    def settings_of(s: Any, alg: str) -> Any:
        return dataclasses.replace(s, optimizer=alg, pop_size=pop, generations=gens, patience=0)

    for case, kind, interval in PROBLEMS:
        if only and only not in f"{case} {kind}":
            continue
        make, meas, label = _controller(case, kind, interval, settings_of)
        _progress(f"{label}: {len(ALGORITHMS)} optimizers × {seeds} seeds")
        runs = []
        for alg in ALGORITHMS:
            for seed in range(seeds):
                ctl = make(alg, seed)
                prep = ctl.prepare(interval, meas)
                spent = _timed_objectives(prep.problem)
                t0 = time.perf_counter()
                while prep.optimizer.step():
                    pass
                solve = time.perf_counter() - t0
                evals = prep.problem.n_evaluations
                r = prep.optimizer.result()
                runs.append(
                    {
                        "alg": alg,
                        "seed": seed,
                        "front": r.front_f[r.front_cv <= 1e-12]
                        if np.any(r.front_cv <= 1e-12)
                        else r.front_f,
                        "f1": float(r.f[0]),
                        "feasible": bool(r.cv <= 1e-12),
                        "gens": prep.optimizer.generation,
                        "evals": evals,
                        "solve": solve,
                        "eval_s": spent[0],
                        "n_var": prep.problem.n_var,
                    }
                )
        set_hypervolumes(runs)
        for r in runs:
            r["overhead"] = (r["solve"] - r["eval_s"]) / max(r["gens"], 1)
        rows.append({"problem": label, "runs": runs})
    return rows


def hv_ratio_interval(
    lean: np.ndarray, ref: np.ndarray, draws: int = 2000
) -> tuple[float, float, float]:
    """95 % bootstrap interval of mean(lean) / mean(ref), seeds resampled independently per
    optimizer, and the two-sided Mann–Whitney p-value of the two samples."""
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(0)
    a = rng.choice(lean, size=(draws, len(lean))).mean(axis=1)
    b = rng.choice(ref, size=(draws, len(ref))).mean(axis=1)
    lo, hi = np.percentile(a / np.maximum(b, 1e-12), [2.5, 97.5])
    return float(lo), float(hi), float(mannwhitneyu(lean, ref).pvalue)


def _mean(runs: list[dict[str, Any]], alg: str, key: str) -> float:
    return float(np.mean([r[key] for r in runs if r["alg"] == alg]))


def report(rows: list[dict[str, Any]], seeds: int, pop: int, gens: int) -> None:
    print(
        f"\n### Lean NSGA-II (`nsga2`) vs pymoo NSGA-II (`pymoo-nsga2`): population {pop}, "
        f"{gens} generations, no patience, seeds 0..{seeds - 1}; mean ± std over seeds\n"
    )
    print(
        "| problem | vars | optimizer | evaluations | HV | HV lean/pymoo [95 % CI] | MW p "
        "| f1 compromise p.u. | feasible | overhead ms/gen | overhead pymoo/lean | solve s | solve pymoo/lean |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        runs = row["runs"]
        ratio_hv = _mean(runs, "nsga2", "hv") / max(_mean(runs, "pymoo-nsga2", "hv"), 1e-12)
        lo, hi, p = hv_ratio_interval(
            np.array([r["hv"] for r in runs if r["alg"] == "nsga2"]),
            np.array([r["hv"] for r in runs if r["alg"] == "pymoo-nsga2"]),
        )
        ratio_oh = _mean(runs, "pymoo-nsga2", "overhead") / _mean(runs, "nsga2", "overhead")
        ratio_t = _mean(runs, "pymoo-nsga2", "solve") / _mean(runs, "nsga2", "solve")
        for alg in ALGORITHMS:
            rs = [r for r in runs if r["alg"] == alg]
            lean = alg == "nsga2"
            print(
                f"| {row['problem']} | {rs[0]['n_var']} | {alg} "
                f"| {_pm([r['evals'] for r in rs], '.0f')} | {_pm([r['hv'] for r in rs], '.4f')} "
                f"| {f'{ratio_hv:.3f} [{lo:.3f}, {hi:.3f}]' if lean else ''} "
                f"| {f'{p:.2f}' if lean else ''} | {_pm([r['f1'] for r in rs], '.4f')} "
                f"| {sum(r['feasible'] for r in rs)}/{len(rs)} "
                f"| {_pm([1e3 * r['overhead'] for r in rs], '.2f')} "
                f"| {f'{ratio_oh:.1f}×' if lean else ''} | {_pm([r['solve'] for r in rs], '.3f')} "
                f"| {f'{ratio_t:.2f}×' if lean else ''} |"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--pop", type=int, default=40)
    ap.add_argument("--generations", type=int, default=40)
    ap.add_argument("--only", default=None, help="problems whose label contains this text")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores; python {platform.python_version()} "
        f"numpy {np.__version__} pymoo {pymoo.__version__}"
    )
    rows = bench(args.seeds, args.pop, args.generations, args.only)
    report(rows, args.seeds, args.pop, args.generations)
    print(f"\nbenchmark wall time {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
