"""Plant step time: the fast power flow path (pandapower ``recycle``) against a full ``runpp``,
each with pandapower's own Newton-Raphson and with lightsim2grid's.

Run from the repository root::

    python benchmarks/bench_plant.py [--steps 240] [--cases ieee33-ev ieee123-ev case1197-pv]

For each resource preset up to four plants are built on the same case and profiles: the fast path
(``fast_powerflow=True``, the default) and a full ``runpp`` at every step
(``fast_powerflow=False``), each with ``lightsim2grid=False`` and, when ``import lightsim2grid``
works, ``lightsim2grid=True``. They are stepped side by side, one step each in turn, so that all
see the same machine load. All get the same setpoints: every 15 steps (a 15 min control interval
at 60 s steps) new SVC / inverter Q and storage P, and every fourth interval new capacitor steps
and tap positions (a step that changes a capacitor always takes the full path). Prints per-step
times (median and mean, ms), each configuration's time relative to the default plant (fast path,
pandapower's solver), how many steps took the fast path, and the largest differences of each
plant's records from the reference plant (full ``runpp``, pandapower's solver): bus voltages,
and all records (voltages, loadings in %, losses, slack power, device columns).
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
from machine_info import cpu_model, wall_time_footer

from clustersim.sim import cases, profiles, resources
from clustersim.sim.plant import Plant

PRESETS = ("ieee33-ev", "ieee123-ev", "case1197-pv")


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


def bench_preset(preset: str, steps: int, seed: int, ls2g: bool) -> list[dict]:
    """One row per configuration (fast path?, lightsim2grid?), the default plant first."""
    rs = resources.load_preset(preset)
    prof = profiles.synthetic(1, seed=seed)
    configs = [(True, False), (False, False)]
    if ls2g:
        configs += [(True, True), (False, True)]
    plants = {
        cfg: Plant(
            cases.load_case(rs.case),
            rs,
            prof,
            plant_step_s=60,
            n_steps=steps,
            fast_powerflow=cfg[0],
            lightsim2grid=cfg[1],
        )
        for cfg in configs
    }
    times: dict[tuple[bool, bool], list[float]] = {cfg: [] for cfg in configs}
    for k in range(steps):
        for cfg, plant in plants.items():
            _setpoints(plant, k, seed)
            t0 = time.perf_counter()
            plant.step()
            times[cfg].append(time.perf_counter() - t0)
    ref = plants[(False, False)]
    default = statistics.median(times[(True, False)]), statistics.fmean(times[(True, False)])
    rows = []
    for cfg, plant in plants.items():
        med, mean = statistics.median(times[cfg]), statistics.fmean(times[cfg])
        rows.append(
            {
                "preset": preset,
                "buses": len(plant.net.bus),
                "steps": steps,
                "path": "fast" if cfg[0] else "full",
                "solver": "lightsim2grid" if cfg[1] else "pandapower",
                "median_ms": 1e3 * med,
                "mean_ms": 1e3 * mean,
                "rel_median": med / default[0],
                "rel_mean": mean / default[1],
                "recycled": plant._pf_counts["recycled"],
                "failed": len(plant.powerflow_failures),
                "max_diff": _max_diff(plant, ref),
                "max_dvm": float(
                    np.nanmax(np.abs(plant.record.vm_pu - ref.record.vm_pu), initial=0.0)
                ),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=240, help="plant steps per preset (60 s each)")
    ap.add_argument("--cases", nargs="+", default=list(PRESETS), help="resource presets")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    t_start = time.perf_counter()
    try:
        import lightsim2grid

        ls2g, ls_version = True, f" lightsim2grid {lightsim2grid.__version__}"
    except ImportError:
        ls2g, ls_version = False, " (lightsim2grid not installed)"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, load average {load:.1f}; python "
        f"{platform.python_version()} numpy {np.__version__} pandapower {pp.__version__}"
        + ls_version
    )
    print(
        "| preset | buses | steps | path | solver | ms median | ms mean "
        "| / default (median) | / default (mean) | recycled steps | failed steps "
        "| max abs dvm p.u. | max abs diff, all records |"
    )
    print("|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for preset in args.cases:
        for r in bench_preset(preset, args.steps, args.seed, ls2g):
            print(
                f"| {r['preset']} | {r['buses']} | {r['steps']} | {r['path']} | {r['solver']} "
                f"| {r['median_ms']:.1f} | {r['mean_ms']:.1f} | {r['rel_median']:.2f}× "
                f"| {r['rel_mean']:.2f}× | {r['recycled']}/{r['steps']} | {r['failed']} "
                f"| {r['max_dvm']:.1e} | {r['max_diff']:.1e} |",
                flush=True,
            )
    print(wall_time_footer(t_start))


if __name__ == "__main__":
    main()
