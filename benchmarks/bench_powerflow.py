"""Batched power flow vs pandapower ``runpp``, time per candidate.

Run from the repository root::

    python benchmarks/bench_powerflow.py [--n 100] [--pp-candidates 20]

For each case a population of N random candidates (load scaling 0.3-1.5, PV p/q, shunt steps,
transformer taps, slack voltage) is solved by ``BatchedPowerFlow.solve`` in one call (median of
several calls, divided by N), and a sample of the same candidates is solved one by one the way an
optimizer without the batched solver would: write the candidate into the pandapower net, then
``runpp`` (numba on; and the lightsim2grid backend when ``import lightsim2grid`` works). The
batched results are checked against those runpp results (max |dvm|). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time
import warnings

import numpy as np
import pandapower as pp
from machine_info import cpu_model, wall_time_footer

from clustersim.errors import CaseError
from clustersim.sim.cases import load_case
from clustersim.sim.powerflow import BatchedPowerFlow, Injections

CASES = ("ieee33", "ieee69", "ieee123", "simbench-mv-rural")


def _prepare(net, rng: np.random.Generator):
    """Add 3 PV sgens and 2 switchable capacitors; let transformer taps act ("Ratio")."""
    if len(net.trafo):
        net.trafo["tap_changer_type"] = "Ratio"
    slack = set(net.ext_grid.bus)
    buses = np.array([b for b in net.bus.index if b not in slack and net.bus.vn_kv[b] < 50])
    load_mw = float((net.load.p_mw * net.load.scaling).sum())
    for b in rng.choice(buses, 3, replace=False):
        pp.create_sgen(net, int(b), p_mw=0.1 * load_mw, q_mvar=0.0, type="PV")
    for b in rng.choice(buses, 2, replace=False):
        pp.create_shunt(net, int(b), q_mvar=-0.03 * load_mw, p_mw=0.0, step=1, max_step=4)
    return net


def _candidates(net, rng: np.random.Generator, n: int) -> list[dict[str, np.ndarray]]:
    p0 = net.sgen.p_mw.to_numpy()
    out = []
    for _ in range(n):
        p = p0 * rng.uniform(0.0, 1.2, len(p0))
        cand = {
            "load_scaling": rng.uniform(0.3, 1.5, len(net.load)),
            "sgen_p_mw": p,
            "sgen_q_mvar": p * rng.uniform(-0.4, 0.4, len(p0)),
            "shunt_step": rng.integers(0, net.shunt.max_step.to_numpy() + 1),
            "vm_ext_pu": np.array([rng.uniform(0.95, 1.05)]),
        }
        if len(net.trafo):
            lo = net.trafo.tap_min.fillna(0).astype(int).to_numpy()
            hi = net.trafo.tap_max.fillna(0).astype(int).to_numpy()
            cand["tap_pos"] = rng.integers(lo, hi + 1)
        out.append(cand)
    return out


def _apply(net, cand: dict[str, np.ndarray]) -> None:
    """Write one candidate into the net (what an optimizer calling runpp has to do)."""
    net.load["scaling"] = cand["load_scaling"]
    net.sgen["p_mw"] = cand["sgen_p_mw"]
    net.sgen["q_mvar"] = cand["sgen_q_mvar"]
    net.shunt["step"] = cand["shunt_step"]
    net.ext_grid["vm_pu"] = cand["vm_ext_pu"][0]
    if "tap_pos" in cand:
        net.trafo["tap_pos"] = cand["tap_pos"]


def _time_runpp(net, cands, **kwargs) -> tuple[float, list[np.ndarray]]:
    times, vms = [], []
    for cand in cands:
        t0 = time.perf_counter()
        _apply(net, cand)
        try:
            pp.runpp(net, **kwargs)
        except pp.LoadflowNotConverged:  # a warm start too far from this candidate: cold retry
            pp.runpp(net, **{**kwargs, "init": "auto"})
        times.append(time.perf_counter() - t0)
        vms.append(net.res_bus.vm_pu.to_numpy().copy())
    return statistics.median(times), vms


def bench_case(name: str, n: int, n_pp: int, repeats: int, ls2g: bool) -> dict | None:
    try:
        net = load_case(name)
    except CaseError:
        return None
    rng = np.random.default_rng(20240601)
    net = _prepare(net, rng)
    bpf = BatchedPowerFlow(net)
    cands = _candidates(net, rng, n)
    work = copy.deepcopy(net)
    injs = []
    for cand in cands:
        _apply(work, cand)
        injs.append(bpf.base_injections(work))
    inj = Injections.concat(injs)

    bpf.solve(inj)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = bpf.solve(inj)
        times.append(time.perf_counter() - t0)
    t_batch = statistics.median(times)

    sample = cands[:n_pp]
    pp_net = copy.deepcopy(net)
    pp.runpp(pp_net, numba=True, lightsim2grid=False)  # warm-up (numba JIT)
    t_pp, vms = _time_runpp(pp_net, sample, numba=True, lightsim2grid=False)
    # the plant's configuration, the fastest runpp found: warm start from the previous result
    # (skips pandapower's "auto" initialisation), no numba JIT
    warm_net = copy.deepcopy(net)
    pp.runpp(warm_net, numba=False, lightsim2grid=False)
    t_warm, _ = _time_runpp(warm_net, sample, numba=False, lightsim2grid=False, init="results")
    err = max(float(np.nanmax(np.abs(res.vm_pu[i] - vm))) for i, vm in enumerate(vms))
    row = {
        "case": name,
        "buses": len(net.bus),
        "n": n,
        "iterations": res.iterations,
        "converged": int(res.converged.sum()),
        "batch_ms": 1e3 * t_batch,
        "batch_us_per_cand": 1e6 * t_batch / n,
        "pp_ms": 1e3 * t_pp,
        "ratio_pp": t_pp / (t_batch / n),
        "pp_warm_ms": 1e3 * t_warm,
        "ratio_warm": t_warm / (t_batch / n),
        "max_dvm": err,
    }
    if ls2g:
        ls_net = copy.deepcopy(net)
        pp.runpp(ls_net, lightsim2grid=True)
        t_ls, _ = _time_runpp(ls_net, sample, lightsim2grid=True)
        row["ls_ms"] = 1e3 * t_ls
        row["ratio_ls"] = t_ls / (t_batch / n)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="candidates per batched call")
    ap.add_argument("--pp-candidates", type=int, default=20, help="candidates timed with runpp")
    ap.add_argument("--repeats", type=int, default=15, help="batched calls timed per case")
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    t_start = time.perf_counter()
    try:
        import lightsim2grid  # noqa: F401

        ls2g = True
    except ImportError:
        ls2g = False

    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores; "
        f"python {platform.python_version()} numpy {np.__version__} pandapower {pp.__version__}"
        + (" lightsim2grid available" if ls2g else " (lightsim2grid not installed)")
    )
    head = (
        "| case | buses | N | sweeps | batched ms / call | batched µs / cand "
        "| runpp ms / cand (numba) | speed-up | runpp ms / cand (warm start) | speed-up"
    )
    sep = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:"
    if ls2g:
        head += " | runpp ms / cand (lightsim2grid) | speed-up"
        sep += "|---:|---:"
    head += " | max abs dvm p.u. |"
    sep += "|---:|"
    print(head, sep, sep="\n", flush=True)
    for name in args.cases:
        row = bench_case(name, args.n, args.pp_candidates, args.repeats, ls2g)
        if row is None:
            print(f"| {name} | case data not available |" + " |" * (sep.count("|") - 3))
            continue
        line = (
            f"| {row['case']} | {row['buses']} | {row['n']} | {row['iterations']} "
            f"| {row['batch_ms']:.2f} | {row['batch_us_per_cand']:.1f} | {row['pp_ms']:.1f} "
            f"| {row['ratio_pp']:.0f}× | {row['pp_warm_ms']:.1f} | {row['ratio_warm']:.0f}× |"
        )
        if ls2g:
            line += f" {row['ls_ms']:.2f} | {row['ratio_ls']:.0f}× |"
        line += f" {row['max_dvm']:.1e} |"
        print(line, flush=True)
    print(wall_time_footer(t_start))


if __name__ == "__main__":
    main()
