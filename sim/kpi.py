"""Key performance indicators of a run, computed from the plant record only.

Definitions (dt = plant step in hours; sums over converged steps and energized buses):

- ``max_abs_voltage_deviation_pu`` = max |V − 1|; ``mean_abs_voltage_deviation_pu`` = mean |V − 1|
  (the voltage deviation objective of the source papers: ΔU in [EVEC], ΔV in [CVC]);
- ``min_vm_pu``, ``max_vm_pu``;
- ``voltage_violation_bus_hours`` = Σ_t Σ_i [V_it < vm_min or V_it > vm_max] · dt;
- ``energy_losses_mwh`` = Σ_t P_loss,t · dt (lines and transformers);
- ``energy_cost`` = Σ_t price_t · P_slack,t · dt + Σ_t Σ_DG cost_g · P_g,t · dt
  (currency of the price profile; energy exported to the upstream grid is credited at price_t);
- ``powerflow_failures`` = steps whose power flow did not converge;
- ``worst_bus`` = label of the bus with the largest max |V − 1| over the run, and
  ``max_abs_voltage_deviation_at_worst_bus_pu`` / ``mean_abs_voltage_deviation_at_worst_bus_pu``
  its largest and mean |V − 1|;
- ``switching_operations`` = tap operations (Σ |Δtap|) + capacitor switchings.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clustersim.sim.plant import Plant

__all__ = ["summarize"]


def summarize(plant: Plant, *, vm_min_pu: float = 0.95, vm_max_pu: float = 1.05) -> dict[str, Any]:
    """KPIs of the steps the plant has run so far."""
    rec = plant.record
    n = plant.step_index
    dt_h = plant.dt_h
    ok = rec.converged[:n]
    vm = rec.vm_pu[:n][ok]
    vm = vm[:, ~np.all(np.isnan(vm), axis=0)] if vm.size else vm
    dev = np.abs(vm - 1.0)
    with np.errstate(invalid="ignore"):
        violations = float(np.sum((vm < vm_min_pu) | (vm > vm_max_pu)) * dt_h) if vm.size else 0.0
    dg_cost = 0.0
    for d in plant.resources.of_kind("dg"):
        p = rec.device[f"{d.name}.p_mw"][:n][ok]
        dg_cost += float(np.sum(p) * d.cost_per_mwh * dt_h)

    def stat(fn: Any, a: np.ndarray) -> float | None:
        return float(fn(a)) if a.size else None

    worst: str | None = None
    worst_max = worst_mean = None
    if vm.size:
        full = rec.vm_pu[:n][ok]
        per_bus = np.nanmax(np.abs(full - 1.0), axis=0)
        if np.isfinite(per_bus).any():
            b = int(np.nanargmax(per_bus))
            worst = rec.bus_labels[b]
            worst_max = float(per_bus[b])
            worst_mean = float(np.nanmean(np.abs(full[:, b] - 1.0)))

    return {
        "steps": int(n),
        "max_abs_voltage_deviation_pu": stat(np.nanmax, dev),
        "mean_abs_voltage_deviation_pu": stat(np.nanmean, dev),
        "min_vm_pu": stat(np.nanmin, vm),
        "max_vm_pu": stat(np.nanmax, vm),
        "voltage_violation_bus_hours": violations,
        "energy_losses_mwh": float(np.nansum(rec.p_loss_mw[:n][ok]) * dt_h),
        "energy_import_mwh": float(np.nansum(rec.p_slack_mw[:n][ok]) * dt_h),
        "energy_cost": float(np.nansum(rec.p_slack_mw[:n][ok] * rec.price_per_mwh[:n][ok]) * dt_h)
        + dg_cost,
        "powerflow_failures": int(n - int(ok.sum())),
        "tap_operations": int(sum(plant.tap_operations.values())),
        "capacitor_switching": int(sum(plant.capacitor_switching.values())),
        "max_line_loading_percent": stat(np.nanmax, rec.loading_percent[:n][ok]),
        "worst_bus": worst,
        "max_abs_voltage_deviation_at_worst_bus_pu": worst_max,
        "mean_abs_voltage_deviation_at_worst_bus_pu": worst_mean,
        "switching_operations": int(
            sum(plant.tap_operations.values()) + sum(plant.capacitor_switching.values())
        ),
    }
