"""Batched power flow vs pandapower ``runpp`` and lightsim2grid, time per candidate.

Run from the repository root::

    python benchmarks/bench_powerflow.py [--n 100] [--pp-candidates 20]

For each case a population of N random candidates (load scaling 0.3-1.5, PV p/q, shunt steps,
transformer taps, slack voltage) is solved by ``BatchedPowerFlow.solve`` in one call (median of
several calls, divided by N), and a sample of the same candidates is solved one by one the way an
optimizer without the batched solver would: write the candidate into the pandapower net, then
``runpp`` (numba on; and the lightsim2grid backend when ``import lightsim2grid`` works). The
batched results are checked against those runpp results (max |dvm|).

When lightsim2grid is installed, its batched C++ Newton-Raphson [LIGHTSIM2GRID] is a second
baseline: ``InjectionSweepCPP.compute_Vs`` (one thread) on the N candidates' load scaling and PV
active power (the injections it takes: load p/q, generator and static generator p; PV reactive
power, shunt steps, taps and slack voltage stay at their base values), against
``BatchedPowerFlow.solve`` on the same N candidates, the two timed in turn (median of the same
number of calls). Its network comes from ``lightsim2grid.network.init_from_pandapower``, which
does not read switches, shunt steps or shunt rated voltages: the script hands it a copy of the
net with those resolved the way pandapower's own power flow does (closed bus-bus switches fuse
their buses, an open line or transformer switch leaves that end on an auxiliary bus, shunt power
scaled by step and rated voltage). Its initial voltage is its own DC power flow of the base state
(a flat start does not converge across the 150° transformers of the SimBench cases); the batched
solver starts flat. A case where it does not converge gets "no convergence" in place of a number.
Prints a markdown table.
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
import pandas as pd
from machine_info import cpu_model, wall_time_footer

from clustersim.errors import CaseError
from clustersim.sim.cases import load_case
from clustersim.sim.powerflow import BatchedPowerFlow, Injections

CASES = ("ieee33", "ieee69", "ieee123", "case1197", "simbench-mv-rural")


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


def _lightsim2grid_net(net):
    """A copy of ``net`` that lightsim2grid's converter reads as pandapower's power flow reads
    ``net``, and the position of each original bus in the copy's (continuous) bus index."""
    work = copy.deepcopy(net)
    _open_switch_ends(work)
    find = _fuse_closed_bus_switches(work)
    work.switch = work.switch.iloc[0:0]
    sh = work.shunt
    if len(sh):
        vn_bus = work.bus.vn_kv.loc[sh.bus].to_numpy()
        k = sh.step.to_numpy(float) * (vn_bus / sh.vn_kv.fillna(pd.Series(vn_bus, sh.index))) ** 2
        work.shunt = sh.assign(p_mw=sh.p_mw * k, q_mvar=sh.q_mvar * k, step=1, vn_kv=vn_bus)
    for table in ("sgen", "gen", "load", "storage"):  # SimBench stores these limits as objects
        for col in ("min_p_mw", "max_p_mw", "min_q_mvar", "max_q_mvar"):
            if col in work[table]:
                work[table][col] = pd.to_numeric(work[table][col], errors="coerce")
    kept = list(work.bus.index)
    pp.toolbox.create_continuous_bus_index(work, start=0)
    return work, np.array([kept.index(find(int(b))) for b in net.bus.index])


def _open_switch_ends(net) -> None:
    """Put the end of a line or transformer behind an open switch on an auxiliary bus."""
    sw = net.switch
    open_ = ~sw.closed.to_numpy(bool)
    ends = {"l": ("line", ("from_bus", "to_bus")), "t": ("trafo", ("hv_bus", "lv_bus"))}
    for et, (table, cols) in ends.items():
        m = (sw.et == et).to_numpy() & open_
        for bus, element in zip(sw.bus[m], sw.element[m], strict=True):
            aux = pp.create_bus(net, vn_kv=net.bus.vn_kv.at[bus])
            for col in cols:
                if net[table].at[element, col] == bus:
                    net[table].at[element, col] = aux


def _fuse_closed_bus_switches(net):
    """Fuse the buses of every closed bus-bus switch; returns the map bus -> bus it became."""
    sw = net.switch
    fused: dict[int, int] = {}

    def find(b: int) -> int:
        while fused.get(b, b) != b:
            b = fused[b]
        return b

    m = (sw.et == "b").to_numpy() & sw.closed.to_numpy(bool)
    for a, b in zip(sw.bus[m], sw.element[m], strict=True):
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            pp.toolbox.fuse_buses(net, ra, rb)
            fused[rb] = ra
    return find


def _bench_lightsim2grid(net, bpf, cands, repeats: int) -> dict:
    """lightsim2grid's InjectionSweepCPP against the batched solver on the candidates' load
    scaling and PV active power (module docstring)."""
    from lightsim2grid.injectionSweep import InjectionSweepCPP
    from lightsim2grid.network import init_from_pandapower

    work = copy.deepcopy(net)
    injs = []
    for cand in cands:
        work.load["scaling"] = cand["load_scaling"]
        work.sgen["p_mw"] = cand["sgen_p_mw"]
        injs.append(bpf.base_injections(work))
    inj = Injections.concat(injs)
    ls_net, col = _lightsim2grid_net(net)
    grid = init_from_pandapower(ls_net)
    scaling = np.array([c["load_scaling"] for c in cands])
    load_p = ls_net.load.p_mw.to_numpy() * scaling
    load_q = ls_net.load.q_mvar.to_numpy() * scaling
    sgen_p = np.array([c["sgen_p_mw"] for c in cands]) * ls_net.sgen.scaling.to_numpy()
    gen_p = np.tile(np.asarray(grid.get_gen_target_p(), float), (len(cands), 1))
    eg = ls_net.ext_grid.iloc[0]
    flat = np.full(len(ls_net.bus), eg.vm_pu * np.exp(1j * np.deg2rad(eg.va_degree)))
    v_init = grid.dc_pf(flat, 10, 1e-8)
    if not len(v_init):  # the DC power flow failed: flat start
        v_init = flat
    sweep = InjectionSweepCPP(grid)
    sweep.nb_thread = 1
    bpf.solve(inj)  # warm-up
    t_batch, t_ls, status = [], [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = bpf.solve(inj)
        t_batch.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        status = sweep.compute_Vs(gen_p, sgen_p, load_p, load_q, v_init, 30, 1e-8)
        t_ls.append(time.perf_counter() - t0)
    n = len(cands)
    row = {"ls_batch_us": 1e6 * statistics.median(t_batch) / n, "ls_converged": False}
    vs = np.abs(sweep.get_voltages()) if status == 1 else None
    if vs is not None and vs.shape == (n, len(ls_net.bus)) and np.isfinite(vs).all():
        row["ls_converged"] = True
        row["ls_us"] = 1e6 * statistics.median(t_ls) / n
        row["ratio_sweep"] = statistics.median(t_ls) / statistics.median(t_batch)
        row["ls_dvm"] = float(np.nanmax(np.abs(vs[:, col] - res.vm_pu)))
    return row


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
        row.update(_bench_lightsim2grid(net, bpf, cands, repeats))
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
        import lightsim2grid

        ls2g, ls_version = True, f" lightsim2grid {lightsim2grid.__version__}"
    except ImportError:
        ls2g, ls_version = False, " (lightsim2grid not installed)"

    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores; "
        f"python {platform.python_version()} numpy {np.__version__} pandapower {pp.__version__}"
        + ls_version
    )
    head = (
        "| case | buses | N | sweeps | batched ms / call | batched µs / cand "
        "| runpp ms / cand (numba) | speed-up | runpp ms / cand (warm start) | speed-up"
    )
    sep = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:"
    if ls2g:
        head += " | runpp ms / cand (lightsim2grid) | speed-up"
        sep += "|---:|---:"
    head += " | max abs dvm p.u."
    sep += "|---:"
    if ls2g:
        head += (
            " | batched µs / cand (load scaling) | InjectionSweep µs / cand "
            "| InjectionSweep / batched | InjectionSweep max abs dvm p.u."
        )
        sep += "|---:|---:|---:|---:"
    head += " |"
    sep += "|"
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
        if ls2g:
            line += f" {row['ls_batch_us']:.1f} |"
            if row["ls_converged"]:
                line += f" {row['ls_us']:.1f} | {row['ratio_sweep']:.2f}× | {row['ls_dvm']:.1e} |"
            else:
                line += " no convergence | | |"
        print(line, flush=True)
    print(wall_time_footer(t_start))


if __name__ == "__main__":
    main()
