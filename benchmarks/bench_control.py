"""Control benchmarks: clustered against centralized control, and what makes a solve fast.

Run from the repository root::

    python benchmarks/bench_control.py [--quick] [--out DIR] [--cases ...] [--only-modes]

Everything printed is measured in this one run on this machine (tables on stdout, progress on
stderr); ratios are of times measured here, never compared with a fixed number of seconds.

1. Full-day runs (``run_scenario`` on the built-in scenarios, default settings, except
   ``run.plant_step_s = 300`` to keep the plant's share of the run small) of ieee33-ev,
   ieee123-ev and case1197-pv (``--cases``), centralized and clustered, under one budget rule
   (``EVALS_PER_VAR`` evaluations per decision variable): control wall time (sum of solve times,
   the agents one after the other in one process), critical path (per interval the slowest agent, summed: the
   control time if the cluster agents run in parallel), whole-run wall time, each as a
   clustered/centralized ratio beside the EV/EC paper's ratio and the project's target, and the
   voltage quality of both runs.
2. Per-step solve time (median, p95) per controller kind, from the runs' ``control.parquet``.
3. Batched evaluator: one population of the central problem at one control step evaluated by
   ``VoltVarProblem.objectives`` (one batched power flow) against the same candidates written
   into the model net one by one and solved by pandapower ``runpp``.
4. Warm start: consecutive control intervals of ieee33-ev (centralized and clustered), the plant
   driven forward between them with the decisions applied, with ``warm_start`` on and off
   (patience-based termination, generations capped at 100).
5. Optimizers: NSGA-II (lean and pymoo's), NSGA-III and MOEA/D on the centralized problem of one ieee51-ga step
   (evening peak), seeds 0..4, the same evaluation budget; objectives of the chosen solution,
   feasibility, front size, hypervolume of the final front, solve time.

``--quick`` shortens every part (2 h runs, fewer intervals and seeds) for a smoke run; its
figures are not the benchmark.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandapower as pp
import pandas as pd
import pymoo
from machine_info import cpu_model

from clustersim.agents.control import Controller, build_controllers
from clustersim.assemble.build import build_plant, control_settings, scenario_partition
from clustersim.assemble.seeds import Stage, stage_seed
from clustersim.errors import MessageError
from clustersim.runner import run_scenario
from clustersim.scenario import Scenario, load_scenario
from clustersim.sim.plant import Plant
from clustersim.sim.resources import write_setpoints

PLANT_STEP_S = 300
# clustered / centralized time: (EV/EC paper, project target)
TIME_RATIOS: dict[str, tuple[float | None, float]] = {
    "ieee33-ev": (0.33, 0.25),
    "ieee123-ev": (0.79, 0.20),
    "case1197-pv": (None, 0.10),
}
EVALS_PER_VAR = 60
"""budget rule of part 1: ``control.evaluations_per_variable`` on both sides"""
_T0 = time.perf_counter()


def _progress(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


def _scenario(name: str, *extra: str) -> Scenario:
    return load_scenario(name, overrides=[f"run.plant_step_s={PLANT_STEP_S}", *extra])


def _spi(sc: Scenario) -> int:
    return max(1, sc.control.interval_s // sc.run.plant_step_s)


def _clusters(sc: Scenario) -> dict[str, list[int]]:
    """The scenario's clusters, as ``run_scenario`` builds them."""
    part, ctx = scenario_partition(sc)
    return {f"C{c + 1}": [ctx.buses[i] for i in nodes] for c, nodes in enumerate(part.clusters())}


_PLANTS: dict[tuple[str, int], Plant] = {}


def _plant_at(name: str, interval: int) -> Plant:
    """A fresh copy of the scenario's plant run without control to the start of ``interval``."""
    key = (name, interval)
    if key not in _PLANTS:
        sc = _scenario(name)
        plant = build_plant(sc)
        plant.run(interval * _spi(sc))
        _PLANTS[key] = plant
    return copy.deepcopy(_PLANTS[key])


def _apply(plant: Plant, setpoints: dict[str, dict[str, float]]) -> int:
    rejected = 0
    for dev, values in setpoints.items():
        try:
            plant.set_setpoint(dev, **values)
        except MessageError:
            rejected += 1
    return rejected


def _timed_objectives(problem: Any) -> list[float]:
    """Wrap ``problem.objectives`` to accumulate the time spent in it (returned list, [s])."""
    spent = [0.0]
    inner = problem.objectives

    def objectives(X: np.ndarray) -> Any:
        t = time.perf_counter()
        out = inner(X)
        spent[0] += time.perf_counter() - t
        return out

    problem.objectives = objectives
    return spent


def _ms(s: float) -> str:
    return f"{1e3 * s:.1f}"


def _pm(a: list[float] | np.ndarray, fmt: str) -> str:
    a = np.asarray(a, dtype=float)
    sd = float(np.std(a, ddof=1)) if len(a) > 1 else 0.0
    return f"{format(float(np.mean(a)), fmt)} ± {format(sd, fmt)}"


# --------------------------------------------------------------------------- 1 and 2
def bench_modes(out_root: Path, quick: bool, cases: list[str]) -> dict[tuple[str, str], Any]:
    extra = [f"control.evaluations_per_variable={EVALS_PER_VAR}"]
    if quick:
        extra.append("run.duration_h=2")
    runs = {}
    for case in cases:
        for mode in ("centralized", "clustered"):
            name = f"{case}-{mode}"
            sc = _scenario(name, *extra)
            n_steps = [0]

            def on_start(n: int, n_steps: list[int] = n_steps) -> None:
                n_steps[0] = n

            def progress(k: int, name: str = name, n_steps: list[int] = n_steps) -> None:
                n = n_steps[0]
                if n >= 8 and k % (n // 4) == 0 and k < n:
                    _progress(f"  {name}: plant step {k}/{n}")

            _progress(f"run {name} ({sc.run.duration_h:g} h, plant step {PLANT_STEP_S} s)")
            r = run_scenario(
                sc, out_root / name, overwrite=True, on_start=on_start, progress=progress
            )
            _progress(f"  done: wall {r.summary['wall_time_s']:.1f} s")
            runs[(case, mode)] = r
    return runs


def print_modes(runs: dict[tuple[str, str], Any], quick: bool) -> None:
    dur = "2 h (--quick)" if quick else "24 h"
    print(f"\n### 1. Clustered vs centralized, {dur}, plant step {PLANT_STEP_S} s\n")
    print(
        "Settings of the built-in scenarios, except `run.plant_step_s=300` and the budget rule "
        f"`control.evaluations_per_variable={EVALS_PER_VAR}` on both sides: a problem of n "
        f"decision variables runs at most ⌈{EVALS_PER_VAR}·n / pop_size⌉ generations (and at most "
        "the scenario's `generations`; patience may stop it earlier). Control wall time = sum of "
        "solve times (agents one after the other in one process); critical path = per interval "
        "the slowest agent, summed (agents in parallel); run wall time = `wall_time_s` (partition, "
        "plant, control, results folder).\n"
    )
    print(
        "| scenario | agents | control wall s | critical path s | run wall s "
        "| violation bus·h | max abs dV p.u. | losses MWh |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for (case, mode), r in runs.items():
        s = r.summary
        print(
            f"| {case}-{mode} | {s['controllers']} | {s['control_wall_time_s']:.1f} "
            f"| {s['control_critical_path_s']:.1f} | {s['wall_time_s']:.1f} "
            f"| {s['voltage_violation_bus_hours']:.2f} | {s['max_abs_voltage_deviation_pu']:.4f} "
            f"| {s['energy_losses_mwh']:.4f} |"
        )
    print(
        "\nclustered / centralized time (≤ target is met; the EV/EC paper's ratio for reference):\n"
    )
    print("| case | time measured | ratio | EV/EC paper | target | target met |")
    print("|---|---|---:|---:|---:|---|")
    keys = (
        ("control wall (sequential)", "control_wall_time_s"),
        ("critical path (parallel)", "control_critical_path_s"),
        ("whole run wall", "wall_time_s"),
    )
    cases = sorted({case for case, _ in runs}, key=list(TIME_RATIOS).index)
    for case in cases:
        paper, target = TIME_RATIOS[case]
        a, b = runs[(case, "clustered")].summary, runs[(case, "centralized")].summary
        for label, key in keys:
            ratio = a[key] / b[key] if b[key] > 0 else float("nan")
            print(
                f"| {case} | {label} | {ratio:.2f} | {'–' if paper is None else f'{paper:.2f}'} "
                f"| ≤ {target:.2f} "
                f"| {'yes' if ratio <= target else 'no'} |"
            )
    print("\nvoltage quality of clustered against centralized (lower is better):\n")
    print("| case | KPI | centralized | clustered | clustered equal or better |")
    print("|---|---|---:|---:|---|")
    for case in cases:
        a, b = runs[(case, "clustered")].summary, runs[(case, "centralized")].summary
        for key in (
            "voltage_violation_bus_hours",
            "max_abs_voltage_deviation_pu",
            "energy_losses_mwh",
        ):
            ok = a[key] <= b[key] + 1e-12
            print(f"| {case} | {key} | {b[key]:.4f} | {a[key]:.4f} | {'yes' if ok else 'no'} |")


def print_per_step(runs: dict[tuple[str, str], Any]) -> None:
    print("\n### 2. Per-step solve time (from control.parquet of the runs above)\n")
    print(
        "| scenario | controller kind | solves | n_var | median ms | p95 ms | mean generations "
        "| mean evaluations | median ms / generation |"
    )
    print("|---|---|---:|---|---:|---:|---:|---:|---:|")
    for (case, mode), r in runs.items():
        df = pd.read_parquet(r.out_dir / "control.parquet")
        df["kind"] = np.where(df.controller == "central", "central", "cluster")
        for kind, g in df.groupby("kind"):
            t = g.solve_time_s.to_numpy()
            per_gen = (g.solve_time_s / g.generations.clip(lower=1)).to_numpy()
            print(
                f"| {case}-{mode} | {kind} | {len(g)} | {g.n_var.min()}–{g.n_var.max()} "
                f"| {_ms(float(np.median(t)))} | {_ms(float(np.percentile(t, 95)))} "
                f"| {g.generations.mean():.1f} | {g.evaluations.mean():.0f} "
                f"| {_ms(float(np.median(per_gen)))} |"
            )


# --------------------------------------------------------------------------- 3
def _runpp_each(
    net: Any, ctl: Controller, decode: Callable[[np.ndarray], dict], X: np.ndarray, **kw: Any
) -> tuple[float, np.ndarray]:
    """Total time to write + runpp every candidate; voltages in the problem's bus order."""
    devices = {d.name: d for d in ctl.grid.resources.devices}
    bus_index = ctl.cluster.pf.bus_index
    vms = np.full((len(X), len(bus_index)), np.nan)
    total = 0.0
    for i, x in enumerate(X):
        t = time.perf_counter()
        write_setpoints(net, ctl.grid.where, devices, decode(x))
        try:
            pp.runpp(net, **kw)
        except pp.LoadflowNotConverged:  # a warm start too far from this candidate: cold retry
            pp.runpp(net, **{**kw, "init": "auto"})
        total += time.perf_counter() - t
        vms[i] = net.res_bus.vm_pu.loc[bus_index].to_numpy()
    return total, vms


def bench_batched(name: str, interval: int, n: int, repeats: int) -> dict[str, Any]:
    plant = _plant_at(name, interval)
    sc = _scenario(name)
    ctl = build_controllers(plant, "centralized", control_settings(sc), seed=0)[0]
    prep = ctl.prepare(interval, plant.measure())
    prob = prep.problem
    rng = np.random.default_rng(0)
    X = prob.clip(rng.uniform(prob.xl, prob.xu, size=(n, prob.n_var)))
    prob.objectives(X)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        _, _, res = prob.objectives(X)
        times.append(time.perf_counter() - t)
    t_batch = statistics.median(times)
    # the model net (controllable devices at zero) at the interval's operating point: the
    # forecast averaged over the interval's plant steps, as the problem's base injections
    base = copy.deepcopy(ctl.grid.net)
    k0 = min(interval * ctl.steps_per_interval, ctl.grid.n_steps - 1)
    k1 = min(k0 + ctl.steps_per_interval, ctl.grid.n_steps)
    for table, var, rows, values in ctl.grid.frames:
        base[table].loc[rows, var] = values[k0:k1].mean(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = copy.deepcopy(base)
        pp.runpp(net, numba=True, lightsim2grid=False)  # numba JIT warm-up
        t_numba, vms = _runpp_each(net, ctl, prob.decode, X, numba=True, lightsim2grid=False)
        net = copy.deepcopy(base)
        pp.runpp(net, numba=False, lightsim2grid=False)
        t_warm, _ = _runpp_each(
            net,
            ctl,
            prob.decode,
            X,
            numba=False,
            lightsim2grid=False,
            init="results",
            max_iteration=30,
        )
    return {
        "case": name.rsplit("-", 1)[0],
        "interval": interval,
        "n_var": prob.n_var,
        "buses": len(ctl.cluster.pf.bus_index),
        "n": n,
        "batch_ms": 1e3 * t_batch,
        "numba_ms": 1e3 * t_numba,
        "warm_ms": 1e3 * t_warm,
        "max_dvm": float(np.nanmax(np.abs(res.vm_pu - vms))),
    }


def print_batched(rows: list[dict[str, Any]]) -> None:
    print("\n### 3. Batched evaluator: one population of the central problem\n")
    print(
        "`problem.objectives(X)` (one batched power flow plus objectives and constraints, median "
        "of repeated calls) against writing each candidate's setpoints into a copy of the model "
        "net and `pandapower.runpp` one by one (total over the population; numba on after its "
        'warm-up, and the plant\'s configuration: warm start `init="results"`, numba off). '
        "max abs dvm: batched against the numba runpp voltages.\n"
    )
    print(
        "| case | interval | buses | n_var | candidates | batched ms / population "
        "| runpp ms / population (numba) | speed-up | runpp ms / population (warm start) "
        "| speed-up | max abs dvm p.u. |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['case']} | {r['interval']} | {r['buses']} | {r['n_var']} | {r['n']} "
            f"| {r['batch_ms']:.2f} | {r['numba_ms']:.0f} | {r['numba_ms'] / r['batch_ms']:.0f}× "
            f"| {r['warm_ms']:.0f} | {r['warm_ms'] / r['batch_ms']:.0f}× | {r['max_dvm']:.1e} |"
        )


# --------------------------------------------------------------------------- 4
def bench_warm(case: str, start: int, n_intervals: int, cap: int) -> list[dict[str, Any]]:
    rows = []
    for mode in ("centralized", "clustered"):
        sc = _scenario(f"{case}-{mode}")
        clusters = _clusters(sc) if mode == "clustered" else None
        seed = stage_seed(sc.run.seed, Stage.CONTROL)
        spi = _spi(sc)
        for warm in (True, False):
            _progress(f"warm start: {case}-{mode}, warm_start={warm}")
            settings = dataclasses.replace(control_settings(sc), generations=cap, warm_start=warm)
            plant = _plant_at(f"{case}-centralized", start)  # same plant for both modes
            ctls = build_controllers(plant, mode, settings, clusters=clusters, seed=seed)
            gens, evals, solve, f, feas, at_cap = [], [], [], [], [], 0
            crit, obj_s, rejected = 0.0, 0.0, 0
            k0 = plant.step_index
            for interval in range(start, start + n_intervals):
                meas = plant.measure()
                slowest = 0.0
                for c in ctls:
                    prep = c.prepare(interval, meas)
                    spent = _timed_objectives(prep.problem)
                    prep.optimizer.run()
                    d = c.finish(prep)
                    obj_s += spent[0]
                    r = d.result
                    gens.append(r.generations)
                    at_cap += int(r.generations >= cap)
                    evals.append(r.evaluations)
                    solve.append(d.solve_time_s)
                    slowest = max(slowest, d.solve_time_s)
                    f.append(r.f)
                    feas.append(r.cv <= 1e-12)
                    rejected += _apply(plant, d.setpoints)
                crit += slowest
                plant.run(spi)
            vm = plant.record.vm_pu[k0 : plant.step_index]
            with np.errstate(invalid="ignore"):
                viol = float(np.sum((vm < sc.run.vm_min_pu) | (vm > sc.run.vm_max_pu)) * plant.dt_h)
            F = np.array(f)
            rows.append(
                {
                    "case": case,
                    "mode": mode,
                    "warm": warm,
                    "solves": len(gens),
                    "gens": float(np.mean(gens)),
                    "at_cap": at_cap,
                    "evals": float(np.mean(evals)),
                    "solve_s": float(np.sum(solve)),
                    "crit_s": crit,
                    "obj_share": obj_s / float(np.sum(solve)),
                    "f": F.mean(axis=0),
                    "feasible": float(np.mean(feas)),
                    "plant_max_dv": float(np.nanmax(np.abs(vm - 1.0))),
                    "plant_viol": viol,
                    "rejected": rejected,
                }
            )
    return rows


def print_warm(rows: list[dict[str, Any]], start: int, n: int, cap: int) -> None:
    t0 = start * 0.25
    print(
        f"\n### 4. Warm start: {n} consecutive intervals from {int(t0):02d}:{int(60 * (t0 % 1)):02d}"
        f" (intervals {start}–{start + n - 1}), plant driven between them\n"
    )
    print(
        f"Default settings except generations ≤ {cap} (patience 8 decides when to stop) and "
        "`warm_start`; the plant was run without control to the first interval (the same start "
        "for every row). warm = initial population seeded with the setpoints in force and the "
        "previous choice; cold = uniform random. Objectives are the means of the chosen "
        "solutions; 'objective share' = part of the solve time spent in `problem.objectives` "
        "(batched power flow + objectives); plant KPIs over the window.\n"
    )
    print(
        "| case | mode | start | solves | mean generations | at cap | mean evaluations "
        "| solve s (sum) | critical path s | objective share | f1 max abs dV p.u. | f2 loss MW "
        "| f3 cost | feasible | plant max abs dV p.u. | plant violation bus·h |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['case']} | {r['mode']} | {'warm' if r['warm'] else 'cold'} | {r['solves']} "
            f"| {r['gens']:.1f} | {r['at_cap']} | {r['evals']:.0f} | {r['solve_s']:.2f} "
            f"| {r['crit_s']:.2f} | {100 * r['obj_share']:.0f} % | {r['f'][0]:.4f} "
            f"| {r['f'][1]:.4f} | {r['f'][2]:.2f} | {100 * r['feasible']:.0f} % "
            f"| {r['plant_max_dv']:.4f} | {r['plant_viol']:.2f} |"
        )
    print("\nwarm / cold ratios:\n")
    print(
        "| case | mode | generations | solve time | critical path | f1 | f2 | f3 "
        "| plant max abs dV |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    by = {(r["case"], r["mode"], r["warm"]): r for r in rows}
    for case, mode, warm in by:
        if not warm:
            continue
        w, c = by[(case, mode, True)], by[(case, mode, False)]

        def q(a: float, b: float) -> str:
            return f"{a / b:.2f}" if abs(b) > 1e-12 else "n/a"

        print(
            f"| {case} | {mode} | {q(w['gens'], c['gens'])} | {q(w['solve_s'], c['solve_s'])} "
            f"| {q(w['crit_s'], c['crit_s'])} | {q(w['f'][0], c['f'][0])} "
            f"| {q(w['f'][1], c['f'][1])} | {q(w['f'][2], c['f'][2])} "
            f"| {q(w['plant_max_dv'], c['plant_max_dv'])} |"
        )


# --------------------------------------------------------------------------- 5
def bench_optimizers(interval: int, seeds: list[int], budget: int) -> list[dict[str, Any]]:
    name = "ieee51-ga-centralized"
    sc = _scenario(name)
    _progress(f"optimizers: {name}, plant to interval {interval} without control")
    plant = _plant_at(name, interval)
    meas = plant.measure()
    runs = []
    for alg in ("nsga2", "pymoo-nsga2", "nsga3", "moead"):
        for seed in seeds:
            settings = dataclasses.replace(
                control_settings(sc), optimizer=alg, generations=10_000, patience=0
            )
            ctl = build_controllers(plant, "centralized", settings, seed=seed)[0]
            prep = ctl.prepare(interval, meas)
            prob, opt = prep.problem, prep.optimizer
            while prob.n_evaluations < budget and opt.step():
                pass
            calls = prob.n_calls
            d = ctl.finish(prep)
            r = d.result
            runs.append(
                {
                    "alg": alg,
                    "seed": seed,
                    "f": r.f,
                    "feasible": r.cv <= 1e-12,
                    "front": r.front_f,
                    "front_feasible": bool(np.all(r.front_cv <= 1e-12)),
                    "evals": r.evaluations,
                    "gens": r.generations,
                    "calls": calls,
                    "time": d.solve_time_s,
                    "n_var": d.n_var,
                }
            )
        _progress(f"  {alg}: {len(seeds)} seeds done")
    set_hypervolumes(runs)
    return runs


def set_hypervolumes(runs: list[dict[str, Any]]) -> None:
    """``run["hv"]``: hypervolume of each run's ``front`` after min-max normalization over all
    the runs' fronts, one reference point (1.1 per objective) for every run."""
    from pymoo.indicators.hv import HV

    allf = np.vstack([r["front"] for r in runs])
    lo, hi = allf.min(axis=0), allf.max(axis=0)
    span = np.where(hi - lo > 1e-12, hi - lo, 1.0)
    hv = HV(ref_point=np.full(allf.shape[1], 1.1))
    for r in runs:
        r["hv"] = float(hv((r["front"] - lo) / span))


def print_optimizers(runs: list[dict[str, Any]], interval: int, budget: int) -> None:
    t = interval * 0.25
    n_var = runs[0]["n_var"]
    seeds = sorted({r["seed"] for r in runs})
    print(
        f"\n### 5. Optimizers on one ieee51-ga step: interval {interval} "
        f"({int(t):02d}:{int(60 * (t % 1)):02d}), centralized problem ({n_var} variables)\n"
    )
    print(
        f"Plant (step {PLANT_STEP_S} s) run without control to the interval; seeds "
        f"{seeds[0]}..{seeds[-1]}; budget {budget} evaluations each (population 40 for NSGA-II "
        "(both) and NSGA-III, 36 reference directions = population for MOEA/D; no patience); fuzzy "
        "compromise. Mean ± std over seeds. HV: hypervolume of each run's final front after "
        "min-max normalization over all runs' fronts, reference point 1.1 per objective "
        "(larger is better). 'batched calls' = calls of the batched evaluator.\n"
    )
    print(
        "| algorithm | f1 max abs dV p.u. | f2 losses MW | f3 cost | feasible | front size | HV "
        "| evaluations | generations | batched calls | time s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    label = {
        "nsga2": "NSGA-II (lean)",
        "pymoo-nsga2": "NSGA-II (pymoo)",
        "nsga3": "NSGA-III",
        "moead": "MOEA/D",
    }
    for alg in label:
        rs = [r for r in runs if r["alg"] == alg]
        F = np.array([r["f"] for r in rs])
        print(
            f"| {label[alg]} | {_pm(F[:, 0], '.4f')} | {_pm(F[:, 1], '.4f')} "
            f"| {_pm(F[:, 2], '.2f')} | {sum(r['feasible'] for r in rs)}/{len(rs)} "
            f"| {_pm([len(r['front']) for r in rs], '.1f')} | {_pm([r['hv'] for r in rs], '.3f')} "
            f"| {rs[0]['evals']} | {rs[0]['gens']} | {rs[0]['calls']} "
            f"| {_pm([r['time'] for r in rs], '.2f')} |"
        )


# --------------------------------------------------------------------------- main
def _load() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run (not the benchmark)")
    ap.add_argument("--out", type=Path, default=None, help="keep the runs' results folders here")
    ap.add_argument(
        "--cases",
        nargs="+",
        default=list(TIME_RATIOS),
        choices=list(TIME_RATIOS),
        help="cases of part 1 (each run centralized and clustered)",
    )
    ap.add_argument("--only-modes", action="store_true", help="part 1 and 2 only")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    quick = args.quick
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores; python {platform.python_version()} "
        f"numpy {np.__version__} pandapower {pp.__version__} pymoo {pymoo.__version__}; "
        f"load average at start (1/5/15 min) {_load()}"
        + ("; --quick: smoke run, not the benchmark" if quick else "")
    )
    with tempfile.TemporaryDirectory(prefix="bench_control_") as tmp:
        out_root = args.out or Path(tmp)
        runs = bench_modes(out_root, quick, args.cases)
        print_modes(runs, quick)
        print_per_step(runs)
        if args.only_modes:
            return

        interval33 = 68
        rows = []
        for name in ("ieee33-ev-centralized", "ieee123-ev-centralized"):
            _progress(f"batched evaluator: {name}, interval {interval33}")
            rows.append(bench_batched(name, interval33, n=40, repeats=5 if quick else 20))
        print_batched(rows)

        n_int = 4 if quick else 12
        cap = 100
        warm = bench_warm("ieee33-ev", interval33, n_int, cap)
        print_warm(warm, interval33, n_int, cap)

        interval51, budget = 76, 1440
        seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
        opt_runs = bench_optimizers(interval51, seeds, budget)
        print_optimizers(opt_runs, interval51, budget)
    print(
        f"\nload average at end (1/5/15 min) {_load()}; "
        f"benchmark wall time {time.perf_counter() - _T0:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
