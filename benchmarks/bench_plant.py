"""Plant step time: the fast power flow path (pandapower ``recycle``) against a full ``runpp``.

Run from the repository root::

    python benchmarks/bench_plant.py [--steps 240] [--cases ieee33-ev ieee123-ev]

For each resource preset two plants are built on the same case and profiles, one with the fast
path (the default) and one with ``fast_powerflow=False`` (a full ``runpp`` at every step), and
stepped side by side, one step each in turn, so that both see the same machine load. Both get the
same setpoints: every 15 steps (a 15 min control interval at 60 s steps) new SVC / inverter Q and
storage P, and every fourth interval new capacitor steps and tap positions (a step that changes a
capacitor always takes the full path). Prints per-step times (median and mean, ms), the ratio
full / fast, how many steps took the fast path, and the largest difference between the two
plants' records (voltages, loadings, losses, slack power, device columns).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings

import numpy as np
import pandapower as pp

from clustersim.sim import cases, profiles, resources
from clustersim.sim.plant import Plant

PRESETS = ("ieee33-ev", "ieee123-ev")


def _setpoints(plant: Plant, k: int, seed: int) -> None:
    """The setpoints an interval's controller would send (the same for both plants)."""
    if k % 15:
        return
    rng = np.random.default_rng([seed, k])
    switching = (k // 15) % 4 == 3
    for d in plant.resources.devices:
        if isinstance(d, resources.SVC):
            plant.set_setpoint(d.name, q_mvar=float(rng.uniform(d.q_min_mvar, d.q_max_mvar)))
        elif isinstance(d, resources.PV):
            s = 0.5 * d.s_rated_mva
            plant.set_setpoint(d.name, q_mvar=float(rng.uniform(-s, s)))
        elif isinstance(d, resources.ESS | resources.ExchangeStation):
            name = d.name if isinstance(d, resources.ESS) else f"{d.name}:battery"
            plant.set_setpoint(name, p_mw=float(rng.uniform(-d.p_max_mw, d.p_max_mw)))
        elif switching and isinstance(d, resources.CapacitorBank):
            plant.set_setpoint(d.name, step=int(rng.integers(0, d.steps + 1)))
        elif switching and isinstance(d, resources.OLTC | resources.LineRegulator):
            tap = plant.setpoints[d.name]["tap_pos"] + int(rng.integers(-1, 2))
            plant.set_setpoint(d.name, tap_pos=float(np.clip(tap, d.tap_min, d.tap_max)))


def _max_diff(a: Plant, b: Plant) -> float:
    ra, rb = a.record, b.record
    if not np.array_equal(ra.converged, rb.converged):
        return float("inf")
    pairs = [(getattr(ra, f), getattr(rb, f)) for f in ("vm_pu", "loading_percent", "p_loss_mw")]
    pairs += [(ra.p_slack_mw, rb.p_slack_mw), (ra.q_slack_mvar, rb.q_slack_mvar)]
    pairs += [(ra.device[c], rb.device[c]) for c in ra.device]
    return max(float(np.nanmax(np.abs(x - y), initial=0.0)) for x, y in pairs)


def bench_preset(preset: str, steps: int, seed: int) -> dict:
    rs = resources.load_preset(preset)
    prof = profiles.synthetic(1, seed=seed)
    plants = {
        fast: Plant(
            cases.load_case(rs.case),
            rs,
            prof,
            plant_step_s=60,
            n_steps=steps,
            fast_powerflow=fast,
        )
        for fast in (True, False)
    }
    times: dict[bool, list[float]] = {True: [], False: []}
    for k in range(steps):
        for fast, plant in plants.items():
            _setpoints(plant, k, seed)
            t0 = time.perf_counter()
            plant.step()
            times[fast].append(time.perf_counter() - t0)
    fast_plant = plants[True]
    return {
        "preset": preset,
        "buses": len(fast_plant.net.bus),
        "steps": steps,
        "fast_median_ms": 1e3 * statistics.median(times[True]),
        "fast_mean_ms": 1e3 * statistics.fmean(times[True]),
        "full_median_ms": 1e3 * statistics.median(times[False]),
        "full_mean_ms": 1e3 * statistics.fmean(times[False]),
        "recycled": fast_plant._pf_counts["recycled"],
        "max_diff": _max_diff(fast_plant, plants[False]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=240, help="plant steps per preset (60 s each)")
    ap.add_argument("--cases", nargs="+", default=list(PRESETS), help="resource presets")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    t_start = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{os.cpu_count()} cores, load average {load:.1f}; python {platform.python_version()} "
        f"numpy {np.__version__} pandapower {pp.__version__}"
    )
    print(
        "| preset | buses | steps | fast ms median | fast ms mean | full ms median "
        "| full ms mean | full / fast (median) | full / fast (mean) | recycled steps "
        "| max abs diff |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for preset in args.cases:
        r = bench_preset(preset, args.steps, args.seed)
        print(
            f"| {r['preset']} | {r['buses']} | {r['steps']} | {r['fast_median_ms']:.1f} "
            f"| {r['fast_mean_ms']:.1f} | {r['full_median_ms']:.1f} | {r['full_mean_ms']:.1f} "
            f"| {r['full_median_ms'] / r['fast_median_ms']:.2f}× "
            f"| {r['full_mean_ms'] / r['fast_mean_ms']:.2f}× | {r['recycled']}/{r['steps']} "
            f"| {r['max_diff']:.1e} |",
            flush=True,
        )
    print(f"benchmark wall time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
