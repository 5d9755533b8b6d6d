"""The plant: a pandapower net driven by profiles and the setpoints in force, stepped in time.

At every plant step (default 60 s) the plant

1. writes the profile values of the step into the net with pandapower's own time-series machinery
   (one ``ConstControl`` per element table and variable, fed by ``DFData`` frames of absolute
   values computed once for the whole horizon);
2. writes the setpoints in force (SVC / inverter Q, DG P, ESS P, capacitor steps, tap positions),
   limited to what each device can physically do (inverter S, storage SOC window);
3. runs ``pandapower.runpp`` and records bus voltages, line loadings, losses, slack power, device
   states, storage energy and tap / capacitor switching counts.

We call the controllers' ``time_step`` ourselves instead of ``pandapower.timeseries.run_timeseries``
because setpoints arrive from agents between steps (co-simulation): ``run_timeseries`` owns the
loop and would run the whole horizon in one call.

A power flow that does not converge is recorded for that step (NaN voltages,
``converged = False``), the net's inputs and the setpoints changed at that step are rolled back to
the last state that converged, storage energy and switching counters are left untouched, and the
run goes on: a bad step never poisons the ones after it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandapower as pp
import pandas as pd
from pandapower.control import ConstControl
from pandapower.timeseries import DFData

from clustersim.errors import MessageError
from clustersim.sim.profiles import Profiles
from clustersim.sim.resources import (
    DG,
    ESS,
    OLTC,
    PV,
    SVC,
    CapacitorBank,
    EVStation,
    ExchangeStation,
    LineRegulator,
    ResourceSet,
    oltc_vm_pu,
)

__all__ = ["Plant", "PlantRecord"]

# the net's input columns a step may change; snapshot for roll-back on a failed power flow
_MUTABLE = {
    "load": ["p_mw", "q_mvar"],
    "sgen": ["p_mw", "q_mvar"],
    "storage": ["p_mw"],
    "shunt": ["step"],
    "trafo": ["tap_pos"],
    "ext_grid": ["vm_pu"],
}


@dataclass
class _StorageState:
    name: str
    row: int
    e_mwh: float
    energy_mwh: float
    e_min_mwh: float
    e_max_mwh: float
    p_max_mw: float
    efficiency: float


@dataclass
class PlantRecord:
    """What the plant recorded, one row per plant step (arrays are steps × items)."""

    time_s: np.ndarray
    converged: np.ndarray
    vm_pu: np.ndarray
    loading_percent: np.ndarray
    p_loss_mw: np.ndarray
    p_slack_mw: np.ndarray
    q_slack_mvar: np.ndarray
    price_per_mwh: np.ndarray
    device: dict[str, np.ndarray] = field(default_factory=dict)
    bus_labels: list[str] = field(default_factory=list)
    line_labels: list[str] = field(default_factory=list)

    def to_frame(self) -> pd.DataFrame:
        """Wide table: ``time_s``, ``converged``, totals, ``vm_pu.<bus>``, ``loading_percent.<line>``
        and ``<device>.<quantity>`` columns."""
        cols: dict[str, Any] = {
            "time_s": self.time_s,
            "converged": self.converged,
            "p_loss_mw": self.p_loss_mw,
            "p_slack_mw": self.p_slack_mw,
            "q_slack_mvar": self.q_slack_mvar,
            "price_per_mwh": self.price_per_mwh,
        }
        cols.update({f"vm_pu.{b}": self.vm_pu[:, i] for i, b in enumerate(self.bus_labels)})
        cols.update(
            {
                f"loading_percent.{ln}": self.loading_percent[:, i]
                for i, ln in enumerate(self.line_labels)
            }
        )
        cols.update(self.device)
        return pd.DataFrame(cols)


class Plant:
    """A pandapower net with resources and profiles, advanced one plant step at a time.

    Parameters
    ----------
    net:
        the grid case (modified in place: resources are attached to it).
    resources:
        the scenario's devices.
    profiles:
        actual (and forecast) series; the plant uses the actual series, interpolated to its step.
    plant_step_s:
        plant time step in seconds (divides 900).
    n_steps:
        horizon in plant steps (default: the whole profile horizon).
    """

    def __init__(
        self,
        net: pp.pandapowerNet,
        resources: ResourceSet,
        profiles: Profiles,
        *,
        plant_step_s: int = 60,
        n_steps: int | None = None,
    ) -> None:
        self.net = net
        self.resources = resources
        self.plant_step_s = int(plant_step_s)
        self.dt_h = self.plant_step_s / 3600.0
        self.where = resources.attach(net)
        self.profiles = profiles.at_step(self.plant_step_s)
        horizon = len(self.profiles.actual)
        self.n_steps = horizon if n_steps is None else int(n_steps)
        if self.n_steps > horizon:
            raise ValueError(f"n_steps {self.n_steps} beyond the profile horizon {horizon}")
        self.devices = {d.name: d for d in resources.devices}
        self._setpoints: dict[str, dict[str, float]] = {}
        self._pending: dict[str, dict[str, float]] = {}
        self._storage = self._init_storage()
        self.tap_operations: dict[str, int] = {
            d.name: 0 for d in resources.devices if isinstance(d, OLTC | LineRegulator)
        }
        self.capacitor_switching: dict[str, int] = {
            d.name: 0 for d in resources.devices if isinstance(d, CapacitorBank)
        }
        self._initial_setpoints()
        self._controllers = self._build_controllers()
        self.powerflow_failures: list[int] = []
        self.step_index = 0
        self._warm = False
        self.bus_labels = [str(x) for x in net.bus["name"]]
        self.line_labels = [
            str(x) if x else str(i) for i, x in zip(net.line.index, net.line["name"], strict=True)
        ]
        self._record = self._alloc_record()

    # ------------------------------------------------------------------ set-up
    def _init_storage(self) -> list[_StorageState]:
        out = []
        for d in self.resources.devices:
            if isinstance(d, ESS | ExchangeStation):
                key = d.name if isinstance(d, ESS) else f"{d.name}:battery"
                out.append(
                    _StorageState(
                        name=key,
                        row=self.where[key][1],
                        e_mwh=d.e_mwh,
                        energy_mwh=d.initial_energy_mwh,
                        e_min_mwh=d.soc_min * d.e_mwh,
                        e_max_mwh=d.soc_max * d.e_mwh,
                        p_max_mw=d.p_max_mw,
                        efficiency=d.efficiency,
                    )
                )
        return out

    def _initial_setpoints(self) -> None:
        for d in self.resources.devices:
            if isinstance(d, PV):
                self._setpoints[d.name] = {"q_mvar": 0.0}
            elif isinstance(d, SVC):
                self._setpoints[d.name] = {"q_mvar": d.q_init_mvar}
            elif isinstance(d, DG):
                p0 = d.p_init_mw if d.p_init_mw is not None else d.p_min_mw
                self._setpoints[d.name] = {"p_mw": p0, "q_mvar": 0.0}
            elif isinstance(d, ESS):
                self._setpoints[d.name] = {"p_mw": 0.0}
            elif isinstance(d, ExchangeStation):
                self._setpoints[f"{d.name}:battery"] = {"p_mw": 0.0}
            elif isinstance(d, CapacitorBank):
                self._setpoints[d.name] = {"step": float(d.step_init)}
            elif isinstance(d, OLTC | LineRegulator):
                self._setpoints[d.name] = {"tap_pos": float(d.tap_init)}

    def _profile_factor(self, column: str) -> np.ndarray:
        actual = self.profiles.actual
        if column not in actual.columns:
            raise KeyError(column)
        return actual[column].to_numpy(dtype=float)[: self.n_steps]

    def _element_column(self, table: str, row: int, variable: str) -> str:
        """Profile column that drives element ``row`` of ``table`` (its own SimBench profile where
        the profile set has it, else the generic shape of its kind)."""
        el = self.net[table].loc[row]
        cols = self.profiles.actual.columns
        prof = el.get("profile") if "profile" in el.index else None
        if table == "load":
            if el.get("type") in ("ev", "exchange"):
                return "ev"
            suffix = "_pload" if variable == "p_mw" else "_qload"
            if isinstance(prof, str) and f"{prof}{suffix}" in cols:
                return f"{prof}{suffix}"
            return "load_p" if variable == "p_mw" else "load_q"
        # sgen p_mw
        if isinstance(prof, str) and prof in cols:
            return prof
        return {"PV": "pv", "WP": "wind"}.get(str(el.get("type")), "")

    def _build_controllers(self) -> list[ConstControl]:
        """One ConstControl per (table, variable) for the profile-driven elements."""
        net = self.net
        ctrls: list[ConstControl] = []
        specs: list[tuple[str, str, list[int]]] = [
            ("load", "p_mw", list(net.load.index)),
            ("load", "q_mvar", list(net.load.index)),
            (
                "sgen",
                "p_mw",
                [i for i in net.sgen.index if net.sgen.type.get(i) not in ("SVC", "DG")],
            ),
        ]
        for table, variable, rows in specs:
            frame: dict[str, np.ndarray] = {}
            used: list[int] = []
            for row in rows:
                col = self._element_column(table, row, variable)
                if not col:
                    continue  # no profile: the element keeps its base value
                base = float(net[table].at[row, variable])
                if table == "sgen":
                    dev = self.devices.get(str(net.sgen.at[row, "name"]))
                    if isinstance(dev, PV):
                        base = dev.p_mw
                frame[f"{table}{row}"] = self._profile_factor(col) * base
                used.append(row)
            if not used:
                continue
            df = pd.DataFrame(frame, index=pd.RangeIndex(self.n_steps))
            ctrls.append(
                ConstControl(
                    net,
                    element=table,
                    variable=variable,
                    element_index=used,
                    profile_name=[f"{table}{r}" for r in used],
                    data_source=DFData(df),
                    drop_same_existing_ctrl=False,
                    overwrite=False,
                )
            )
        return ctrls

    def _alloc_record(self) -> PlantRecord:
        n = self.n_steps
        nb, nl = len(self.net.bus), len(self.net.line)
        device: dict[str, np.ndarray] = {}
        for d in self.resources.devices:
            if isinstance(d, PV | SVC | DG):
                device[f"{d.name}.p_mw"] = np.full(n, np.nan)
                device[f"{d.name}.q_mvar"] = np.full(n, np.nan)
            elif isinstance(d, EVStation | ExchangeStation):
                device[f"{d.name}.p_mw"] = np.full(n, np.nan)
            elif isinstance(d, CapacitorBank):
                device[f"{d.name}.step"] = np.full(n, np.nan)
            elif isinstance(d, OLTC | LineRegulator):
                device[f"{d.name}.tap_pos"] = np.full(n, np.nan)
        for s in self._storage:
            device[f"{s.name}.p_mw"] = np.full(n, np.nan)
            device[f"{s.name}.energy_mwh"] = np.full(n, np.nan)
        price = (
            self._profile_factor("price_per_mwh")
            if "price_per_mwh" in self.profiles.actual.columns
            else np.zeros(n)
        )
        return PlantRecord(
            time_s=np.arange(n, dtype=np.int64) * self.plant_step_s,
            converged=np.zeros(n, dtype=bool),
            vm_pu=np.full((n, nb), np.nan),
            loading_percent=np.full((n, nl), np.nan),
            p_loss_mw=np.full(n, np.nan),
            p_slack_mw=np.full(n, np.nan),
            q_slack_mvar=np.full(n, np.nan),
            price_per_mwh=price,
            device=device,
            bus_labels=self.bus_labels,
            line_labels=self.line_labels,
        )

    # -------------------------------------------------------------- setpoints
    @property
    def setpoints(self) -> dict[str, dict[str, float]]:
        """The setpoints in force (a copy)."""
        return {k: dict(v) for k, v in self._setpoints.items()}

    def set_setpoint(self, device: str, **values: float) -> None:
        """Queue a setpoint; it takes effect at the next plant step.

        Raises MessageError when the device is unknown, the quantity is not one it accepts, or
        the value is outside the device's physical range (the caller counts and drops it).
        """
        accepted = self._setpoints.get(device)
        if accepted is None:
            raise MessageError(f"setpoint for unknown or non-controllable device {device!r}")
        dev = self.devices.get(device.split(":")[0])
        for qty, value in values.items():
            if qty not in accepted:
                raise MessageError(f"device {device!r} takes {sorted(accepted)}, not {qty!r}")
            v = float(value)
            if not math.isfinite(v):
                raise MessageError(f"device {device!r}: {qty} = {value!r} is not finite")
            lo, hi = _physical_range(dev, qty)
            if not lo - 1e-9 <= v <= hi + 1e-9:
                raise MessageError(f"device {device!r}: {qty} = {v} outside [{lo}, {hi}]")
            if qty in ("step", "tap_pos") and v != round(v):
                raise MessageError(f"device {device!r}: {qty} must be an integer, got {v}")
        self._pending.setdefault(device, {}).update({k: float(v) for k, v in values.items()})

    def _apply_setpoints(self, setpoints: Mapping[str, Mapping[str, float]]) -> None:
        net = self.net
        for name, sp in setpoints.items():
            table, row = self.where[name]
            dev = self.devices.get(name.split(":")[0])
            if table == "sgen":
                if "p_mw" in sp:
                    net.sgen.at[row, "p_mw"] = sp["p_mw"]
                q = sp.get("q_mvar", 0.0)
                if isinstance(dev, PV):  # inverter capability: |S| <= s_rated
                    p = float(net.sgen.at[row, "p_mw"])
                    q_lim = math.sqrt(max(dev.s_rated_mva**2 - p**2, 0.0))
                    q = float(np.clip(q, -q_lim, q_lim))
                net.sgen.at[row, "q_mvar"] = q
            elif table == "storage":
                net.storage.at[row, "p_mw"] = self._storage_power(name, sp.get("p_mw", 0.0))
            elif table == "shunt":
                net.shunt.at[row, "step"] = int(sp["step"])
            elif table == "trafo":
                net.trafo.at[row, "tap_pos"] = int(sp["tap_pos"])
            elif table == "ext_grid":
                assert isinstance(dev, OLTC)
                net.ext_grid.at[row, "vm_pu"] = oltc_vm_pu(dev, sp["tap_pos"])

    def _storage_power(self, name: str, p_mw: float) -> float:
        """Limit a storage setpoint (load convention, p > 0 charges) to its SOC window."""
        s = next(x for x in self._storage if x.name == name)
        p = float(np.clip(p_mw, -s.p_max_mw, s.p_max_mw))
        if p > 0:
            p = min(p, (s.e_max_mwh - s.energy_mwh) / (s.efficiency * self.dt_h))
        elif p < 0:
            p = max(p, -(s.energy_mwh - s.e_min_mwh) * s.efficiency / self.dt_h)
        return max(min(p, s.p_max_mw), -s.p_max_mw) if abs(p) > 1e-12 else 0.0

    # ------------------------------------------------------------------- step
    def step(self) -> bool:
        """Advance one plant step; return whether its power flow converged."""
        k = self.step_index
        if k >= self.n_steps:
            raise IndexError("the plant has reached the end of its horizon")
        net = self.net
        snapshot = {t: net[t][cols].copy() for t, cols in _MUTABLE.items() if len(net[t])}
        previous = self.setpoints
        trial = self.setpoints
        for name, sp in self._pending.items():
            trial[name].update(sp)
        self._pending = {}

        for c in self._controllers:
            c.time_step(net, k)
        self._apply_setpoints(trial)
        converged = self._runpp()
        rec = self._record
        if not converged:
            for t, frame in snapshot.items():
                net[t].loc[frame.index, frame.columns] = frame
            self.powerflow_failures.append(k)
            self._setpoints = previous
        else:
            self._count_switching(previous, trial)
            self._setpoints = trial
            rec.converged[k] = True
            rec.vm_pu[k] = net.res_bus.vm_pu.to_numpy()
            rec.loading_percent[k] = net.res_line.loading_percent.to_numpy()
            rec.p_loss_mw[k] = net.res_line.pl_mw.sum() + (
                net.res_trafo.pl_mw.sum() if len(net.trafo) else 0.0
            )
            rec.p_slack_mw[k] = net.res_ext_grid.p_mw.sum()
            rec.q_slack_mvar[k] = net.res_ext_grid.q_mvar.sum()
            self._advance_storage()
        self._record_devices(k)
        self.step_index += 1
        return converged

    def _runpp(self) -> bool:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # warm start from the last converged step (also skips pandapower's slow
                # "auto" initialisation queries); lightsim2grid checks off: not a dependency;
                # numba off: its JIT costs ~5 s per process and gains nothing on feeders of this
                # size (measured 17 ms without vs 19 ms with per runpp on ieee69)
                pp.runpp(
                    self.net,
                    numba=False,
                    init="results" if self._warm else "auto",
                    max_iteration=30,
                    lightsim2grid=False,
                )
        except (pp.LoadflowNotConverged, np.linalg.LinAlgError, ValueError, FloatingPointError):
            self._warm = False
            return False
        self._warm = bool(self.net.converged)
        return self._warm

    def _count_switching(
        self, before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]]
    ) -> None:
        for name in self.tap_operations:
            self.tap_operations[name] += int(abs(after[name]["tap_pos"] - before[name]["tap_pos"]))
        for name in self.capacitor_switching:
            self.capacitor_switching[name] += int(after[name]["step"] != before[name]["step"])

    def _advance_storage(self) -> None:
        for s in self._storage:
            p = float(self.net.storage.at[s.row, "p_mw"])
            de = p * s.efficiency if p > 0 else p / s.efficiency
            s.energy_mwh = float(np.clip(s.energy_mwh + de * self.dt_h, 0.0, s.e_mwh))
            self.net.storage.at[s.row, "soc_percent"] = 100.0 * s.energy_mwh / s.e_mwh

    def _record_devices(self, k: int) -> None:
        net, dev = self.net, self._record.device
        for d in self.resources.devices:
            _, row = self.where[d.name]
            if isinstance(d, PV | SVC | DG):
                dev[f"{d.name}.p_mw"][k] = net.sgen.at[row, "p_mw"]
                dev[f"{d.name}.q_mvar"][k] = net.sgen.at[row, "q_mvar"]
            elif isinstance(d, EVStation | ExchangeStation):
                dev[f"{d.name}.p_mw"][k] = net.load.at[row, "p_mw"]
            elif isinstance(d, CapacitorBank):
                dev[f"{d.name}.step"][k] = self._setpoints[d.name]["step"]
            elif isinstance(d, OLTC | LineRegulator):
                dev[f"{d.name}.tap_pos"][k] = self._setpoints[d.name]["tap_pos"]
        for s in self._storage:
            dev[f"{s.name}.p_mw"][k] = net.storage.at[s.row, "p_mw"]
            dev[f"{s.name}.energy_mwh"][k] = s.energy_mwh

    def run(
        self, n_steps: int | None = None, progress: Callable[[int], None] | None = None
    ) -> PlantRecord:
        """Run ``n_steps`` (default: to the end of the horizon) with the setpoints in force."""
        end = self.n_steps if n_steps is None else min(self.n_steps, self.step_index + n_steps)
        while self.step_index < end:
            self.step()
            if progress is not None:
                progress(self.step_index)
        return self._record

    @property
    def record(self) -> PlantRecord:
        return self._record

    def storage_energy_mwh(self) -> dict[str, float]:
        return {s.name: s.energy_mwh for s in self._storage}


def _physical_range(dev: Any, qty: str) -> tuple[float, float]:
    if isinstance(dev, SVC):
        return dev.q_min_mvar, dev.q_max_mvar
    if isinstance(dev, PV):
        return -dev.s_rated_mva, dev.s_rated_mva
    if isinstance(dev, DG):
        return (dev.p_min_mw, dev.p_max_mw) if qty == "p_mw" else (dev.q_min_mvar, dev.q_max_mvar)
    if isinstance(dev, ESS | ExchangeStation):
        return -dev.p_max_mw, dev.p_max_mw
    if isinstance(dev, CapacitorBank):
        return 0.0, float(dev.steps)
    if isinstance(dev, OLTC | LineRegulator):
        return float(dev.tap_min), float(dev.tap_max)
    return -math.inf, math.inf
