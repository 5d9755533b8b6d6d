"""The plant: a pandapower net driven by profiles and the setpoints in force, stepped in time.

At every plant step (default 60 s) the plant

1. writes the profile values of the step into the net (``load.p_mw``, ``load.q_mvar``,
   ``sgen.p_mw`` of the profile-driven elements): the absolute values :meth:`Plant.profile_frames`
   computes once for the whole horizon, i.e. the numbers pandapower's ``ConstControl`` fed by
   ``DFData`` frames would write, assigned as whole numpy columns, which costs a fraction of the
   controllers' pandas ``.loc`` writes (the net carries no pandapower controllers);
2. writes the setpoints in force (SVC / inverter Q, DG P, ESS P, capacitor steps, tap positions),
   limited to what each device can physically do (inverter S, storage SOC window);
3. runs pandapower's power flow (``runpp``) and records bus voltages, line loadings, losses, slack
   power, device states, storage energy and tap / capacitor switching counts.

We write the step's values ourselves instead of ``pandapower.timeseries.run_timeseries`` because
setpoints arrive from agents between steps (co-simulation): ``run_timeseries`` owns the loop and
would run the whole horizon in one call.

Power flow, fast path. Between two converged steps that changed only bus injections (loads,
sgens, storage), transformer tap positions or the slack voltage, the plant calls ``runpp`` with
pandapower's ``recycle`` option (the one ``run_timeseries`` uses): pandapower updates the internal
model it kept from the last power flow instead of rebuilding it from the tables, then runs the
same Newton-Raphson solve from the same warm start and extracts the same result tables. Every
recorded value still comes from pandapower's power flow on the net; the fast path is tested
against a full ``runpp`` at every step to 1e-9 p.u. / MW. A step that changes anything recycling
does not update (a capacitor step: pandapower's recycle leaves shunts alone; a switch; an element
added or put in or out of service), the first step, the step after a failed power flow and any
step after someone else ran a power flow on the net use a full ``runpp``. The fast path assumes
nobody edits other parameters of the net (line or transformer data) between steps: such an edit
is seen at the next full ``runpp`` only. ``Plant(..., fast_powerflow=False)`` runs a full
``runpp`` at every step.

Power flow, solver. With lightsim2grid [LIGHTSIM2GRID] installed, pandapower's ``runpp`` hands
its Newton-Raphson iterations to lightsim2grid's C++ solver by itself (its default
``lightsim2grid="auto"``), so the plant always passes the choice: ``Plant(...,
lightsim2grid=True)``, the default (lightsim2grid is a dependency), uses lightsim2grid's solver
where pandapower accepts the net, else pandapower's; ``False`` keeps pandapower's own. Recycling
works with either: a recycled ``runpp`` keeps the solver of the last full one. Measured with
``benchmarks/bench_plant.py`` (240 steps of 60 s, 2 shared cores, load average 4), lightsim2grid's
solver takes the median fast-path step from 55.2 to 35.0 ms on ``ieee33-ev`` (0.63x), 33.5 to
23.2 ms on ``ieee123-ev`` (0.69x) and 71.7 to 52.8 ms on ``case1197-pv`` (0.74x); a full
``runpp`` 0.93-1.01x; the recorded voltages differ from pandapower's solver by at most 3e-13
p.u., loadings by 6e-10 %.

A power flow that does not converge is recorded for that step (NaN voltages,
``converged = False``), the net's inputs and the setpoints changed at that step are rolled back to
the last state that converged, storage energy and switching counters are left untouched, and the
run goes on: a bad step never poisons the ones after it.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandapower as pp
import pandas as pd

from clustersim.errors import MessageError, PowerFlowError
from clustersim.sim.powerflow import ASYMMETRIC_AND_FACTS_TABLES
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

__all__ = ["Measurement", "Plant", "PlantRecord"]

# element tables whose size or in-service flags, when changed, need a full runpp (recycling
# keeps pandapower's lookups and in-service masks of the last full runpp)
_STRUCTURE_TABLES = (
    "bus",
    "line",
    "trafo",
    "trafo3w",
    "impedance",
    "switch",
    "shunt",
    "ext_grid",
    "gen",
    "sgen",
    "load",
    "storage",
    "motor",
    "ward",
    "xward",
    "dcline",
    *ASYMMETRIC_AND_FACTS_TABLES,
)
# inputs recycling cannot update (shunts, switches), and those it updates on request
_FULL_COLUMNS = {
    "switch": ("bus", "element", "et", "closed"),
    "shunt": ("bus", "p_mw", "q_mvar", "vn_kv", "step", "max_step"),
}
_TAP_COLUMNS = ("tap_pos", "tap_neutral", "tap_step_percent")
_TRAFO_COLUMNS = {"trafo": _TAP_COLUMNS, "trafo3w": _TAP_COLUMNS}
_GEN_COLUMNS = {"ext_grid": ("vm_pu", "va_degree"), "gen": ("p_mw", "vm_pu")}


class _Columns:
    """Working copies of the net's input columns a step changes, written back one column at a time.

    pandas' per-cell writes (``.at``/``.loc``) cost tens of microseconds each; the plant edits
    numpy copies instead and assigns each changed column once. ``rollback`` puts back the columns
    as they were before the step.
    """

    def __init__(self, net: pp.pandapowerNet) -> None:
        self.net = net
        self.before: dict[tuple[str, str], np.ndarray] = {}
        self.work: dict[tuple[str, str], np.ndarray] = {}
        self.written: list[tuple[str, str]] = []

    def get(self, table: str, column: str) -> np.ndarray:
        key = (table, column)
        out = self.work.get(key)
        if out is None:
            before = self.net[table][column].to_numpy(copy=True)
            self.before[key] = before
            out = self.work[key] = before.copy()
        return out

    def commit(self) -> None:
        for (table, column), values in self.work.items():
            if not np.array_equal(values, self.before[(table, column)]):
                self.net[table][column] = values
                self.written.append((table, column))

    def rollback(self) -> None:
        for table, column in self.written:
            self.net[table][column] = self.before[(table, column)]
        self.written = []


@dataclass
class _StorageState:
    name: str
    row: int
    pos: int
    e_mwh: float
    energy_mwh: float
    e_min_mwh: float
    e_max_mwh: float
    p_max_mw: float
    efficiency: float


@dataclass(frozen=True)
class Measurement:
    """What the plant's meters report after a converged plant step (arrays in net table order).

    ``step`` is the plant step measured and ``time_s`` its start time. ``p_slack_mw`` and
    ``q_slack_mvar`` are the power the external grid feeds in at the slack bus (pandapower's
    ``res_ext_grid``, summed): > 0 means import from the upstream grid, < 0 export to it. Line
    and transformer flows are pandapower's ``res_line``/``res_trafo`` columns (power entering the
    branch at its from / hv end and at its to / lv end). ``setpoints`` are the setpoints in force
    as requested (device → quantity → value); what the plant applied may be less: it clips an
    inverter's Q to ±sqrt(S_rated² − P²) at its present P and a storage P to what its SOC window
    allows over the step (the record's ``<device>.q_mvar`` / ``<device>.p_mw`` columns hold the
    applied values). ``switching_today`` counts tap operations (sum of |Δtap|) and capacitor
    switchings since the start of the current day, per device.
    """

    step: int
    time_s: float
    vm_pu: np.ndarray
    bus_labels: tuple[str, ...]
    p_slack_mw: float
    q_slack_mvar: float
    line_p_from_mw: np.ndarray
    line_q_from_mvar: np.ndarray
    line_p_to_mw: np.ndarray
    line_q_to_mvar: np.ndarray
    trafo_p_hv_mw: np.ndarray
    trafo_q_hv_mvar: np.ndarray
    trafo_p_lv_mw: np.ndarray
    trafo_q_lv_mvar: np.ndarray
    storage_energy_mwh: Mapping[str, float]
    setpoints: Mapping[str, Mapping[str, float]]
    switching_today: Mapping[str, int]

    def vm(self, bus_label: str) -> float:
        """Voltage magnitude (p.u.) at the bus with this label."""
        return float(self.vm_pu[self.bus_labels.index(bus_label)])


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
        horizon in plant steps (default: the profile horizon after ``start_step``).
    start_step:
        the plant step of the profiles at which the run starts (``[run] start_h`` × 3600 /
        ``plant_step_s``): step ``k`` of the plant is step ``start_step + k`` of the profiles,
        recorded times are seconds since midnight of the profiles' first day, and the day's
        switching counts restart at each midnight of that clock.
    fast_powerflow:
        recycle pandapower's internal model between steps where that gives the same result
        (see the module docstring); ``False`` runs a full ``runpp`` at every step (the reference
        the fast path is tested against).
    lightsim2grid:
        solve pandapower's Newton-Raphson with lightsim2grid's C++ solver (``runpp(...,
        lightsim2grid=True)``, see the module docstring); ignored, with pandapower's own solver
        used instead, when lightsim2grid is not installed or pandapower cannot hand it the net.
    """

    def __init__(
        self,
        net: pp.pandapowerNet,
        resources: ResourceSet,
        profiles: Profiles,
        *,
        plant_step_s: int = 60,
        n_steps: int | None = None,
        start_step: int = 0,
        fast_powerflow: bool = True,
        lightsim2grid: bool = True,
    ) -> None:
        self.net = net
        self.resources = resources
        self.plant_step_s = int(plant_step_s)
        self.dt_h = self.plant_step_s / 3600.0
        self.where = resources.attach(net)
        self.profiles = profiles.at_step(self.plant_step_s)
        horizon = len(self.profiles.actual)
        self.start_step = int(start_step)
        if not 0 <= self.start_step < horizon:
            raise ValueError(f"start step {self.start_step} outside the profile horizon {horizon}")
        self.n_steps = horizon - self.start_step if n_steps is None else int(n_steps)
        if self.start_step + self.n_steps > horizon:
            raise ValueError(
                f"steps {self.start_step}..{self.start_step + self.n_steps} beyond the profile "
                f"horizon {horizon}"
            )
        self.devices = {d.name: d for d in resources.devices}
        # (table, position in the table) of every device's element, for numpy column access
        self._slot = {
            name: (table, int(net[table].index.get_loc(row)))
            for name, (table, row) in self.where.items()
        }
        self._setpoints: dict[str, dict[str, float]] = {}
        self._pending: dict[str, dict[str, float]] = {}
        self._storage = self._init_storage()
        self._storage_by_name = {s.name: s for s in self._storage}
        self.tap_operations: dict[str, int] = {
            d.name: 0 for d in resources.devices if isinstance(d, OLTC | LineRegulator)
        }
        self.capacitor_switching: dict[str, int] = {
            d.name: 0 for d in resources.devices if isinstance(d, CapacitorBank)
        }
        self._initial_setpoints()
        self._base_values: dict[tuple[str, str, int], float] = {}
        self._feeds = [
            (table, variable, net[table].index.get_indexer(rows), values)
            for table, variable, rows, values in self.profile_frames("actual")
        ]
        self.powerflow_failures: list[int] = []
        self.step_index = 0
        self._warm = False
        self._fast = bool(fast_powerflow)
        self._lightsim2grid = bool(lightsim2grid) and _lightsim2grid_installed()
        self._pf_state: tuple[Any, Any, dict[str, list[np.ndarray]]] | None = None
        self._pf_counts = {"full": 0, "recycled": 0}
        self._split_tables: dict[str, pd.DataFrame] = {}
        self.bus_labels = [str(x) for x in net.bus["name"]]
        self.line_labels = [
            str(x) if x else str(i) for i, x in zip(net.line.index, net.line["name"], strict=True)
        ]
        self._record = self._alloc_record()
        self._plan_device_record()
        self._day_start_counts: dict[str, int] = {}
        self._last_measurement: Measurement | None = None

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
                        pos=self._slot[key][1],
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

    @property
    def _window(self) -> slice:
        """The profile steps of the run: ``start_step`` to ``start_step + n_steps``."""
        return slice(self.start_step, self.start_step + self.n_steps)

    def _profile_factor(self, column: str) -> np.ndarray:
        actual = self.profiles.actual
        if column not in actual.columns:
            raise KeyError(column)
        return actual[column].to_numpy(dtype=float)[self._window]

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

    def profile_frames(self, which: str = "actual") -> list[tuple[str, str, list[int], np.ndarray]]:
        """Absolute values the profiles give each profile-driven element, for the whole horizon.

        Returns ``(table, variable, rows, values)`` with ``values`` of shape steps × rows (MW or
        Mvar). ``which="forecast"`` applies the same mapping to the forecast series: what a
        controller is told the plant will see. Elements without a profile keep their base value
        and are not listed.
        """
        if which not in ("actual", "forecast"):
            raise ValueError(f"which must be 'actual' or 'forecast', got {which!r}")
        frame_src = self.profiles.actual if which == "actual" else self.profiles.forecast
        net = self.net
        out: list[tuple[str, str, list[int], np.ndarray]] = []
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
            cols: list[np.ndarray] = []
            used: list[int] = []
            for row in rows:
                col = self._element_column(table, row, variable)
                if not col:
                    continue  # no profile: the element keeps its base value
                base = self._base_values.get((table, variable, row))
                if base is None:
                    base = float(net[table].at[row, variable])
                    if table == "sgen":
                        dev = self.devices.get(str(net.sgen.at[row, "name"]))
                        if isinstance(dev, PV):
                            base = dev.p_mw
                    self._base_values[(table, variable, row)] = base
                factor = frame_src[col].to_numpy(dtype=float)[self._window]
                cols.append(factor * base)
                used.append(row)
            if used:
                out.append((table, variable, used, np.column_stack(cols)))
        return out

    def _plan_device_record(self) -> None:
        """What ``_record_devices`` copies each step: (record column, net table, net column,
        position) and (record column, device, setpoint quantity)."""
        self._device_reads: list[tuple[str, str, str, int]] = []
        self._device_setpoints: list[tuple[str, str, str]] = []
        for d in self.resources.devices:
            table, pos = self._slot[d.name]
            if isinstance(d, PV | SVC | DG):
                self._device_reads.append((f"{d.name}.p_mw", table, "p_mw", pos))
                self._device_reads.append((f"{d.name}.q_mvar", table, "q_mvar", pos))
            elif isinstance(d, EVStation | ExchangeStation):
                self._device_reads.append((f"{d.name}.p_mw", table, "p_mw", pos))
            elif isinstance(d, CapacitorBank):
                self._device_setpoints.append((f"{d.name}.step", d.name, "step"))
            elif isinstance(d, OLTC | LineRegulator):
                self._device_setpoints.append((f"{d.name}.tap_pos", d.name, "tap_pos"))
        for s in self._storage:
            self._device_reads.append((f"{s.name}.p_mw", "storage", "p_mw", s.pos))

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
            time_s=(self.start_step + np.arange(n, dtype=np.int64)) * self.plant_step_s,
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
        self.check_setpoint(device, **values)
        self._pending.setdefault(device, {}).update({k: float(v) for k, v in values.items()})

    def check_setpoint(self, device: str, **values: float) -> None:
        """Raise MessageError when :meth:`set_setpoint` would refuse this setpoint; no effect."""
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

    def _apply_setpoints(
        self, setpoints: Mapping[str, Mapping[str, float]], cols: _Columns
    ) -> None:
        for name, sp in setpoints.items():
            table, pos = self._slot[name]
            dev = self.devices.get(name.split(":")[0])
            if table == "sgen":
                p_mw = cols.get("sgen", "p_mw")
                if "p_mw" in sp:
                    p_mw[pos] = sp["p_mw"]
                q = sp.get("q_mvar", 0.0)
                if isinstance(dev, PV):  # inverter capability: |S| <= s_rated
                    p = float(p_mw[pos])
                    q_lim = math.sqrt(max(dev.s_rated_mva**2 - p**2, 0.0))
                    q = float(np.clip(q, -q_lim, q_lim))
                cols.get("sgen", "q_mvar")[pos] = q
            elif table == "storage":
                cols.get("storage", "p_mw")[pos] = self._storage_power(name, sp.get("p_mw", 0.0))
            elif table == "shunt":
                cols.get("shunt", "step")[pos] = int(sp["step"])
            elif table == "trafo":
                cols.get("trafo", "tap_pos")[pos] = int(sp["tap_pos"])
            elif table == "ext_grid":
                assert isinstance(dev, OLTC)
                cols.get("ext_grid", "vm_pu")[pos] = oltc_vm_pu(dev, sp["tap_pos"])

    def _write_inputs(self, k: int, setpoints: Mapping[str, Mapping[str, float]]) -> _Columns:
        """Write step ``k``'s profile values and ``setpoints`` into the net; return the columns
        (whose ``rollback`` restores the net as it was)."""
        cols = _Columns(self.net)
        for table, variable, pos, values in self._feeds:
            cols.get(table, variable)[pos] = values[k]
        self._apply_setpoints(setpoints, cols)
        cols.commit()
        return cols

    def _storage_power(self, name: str, p_mw: float) -> float:
        """Limit a storage setpoint (load convention, p > 0 charges) to its SOC window."""
        s = self._storage_by_name[name]
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
        if k == 0 or ((self.start_step + k) * self.plant_step_s) % 86400 == 0:
            self._day_start_counts = self._switching_counts()
        net = self.net
        previous = self.setpoints
        trial = self.setpoints
        for name, sp in self._pending.items():
            trial[name].update(sp)
        self._pending = {}

        cols = self._write_inputs(k, trial)
        converged = self._runpp()
        rec = self._record
        if not converged:
            cols.rollback()
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
            self._last_measurement = self._measure(k)
        self._record_devices(k)
        self.step_index += 1
        return converged

    def _switching_counts(self) -> dict[str, int]:
        return {**self.tap_operations, **self.capacitor_switching}

    def switching_today(self) -> dict[str, int]:
        """Tap operations and capacitor switchings per device since the start of the day."""
        now = self._switching_counts()
        return {k: v - self._day_start_counts.get(k, 0) for k, v in now.items()}

    def _measure(self, k: int) -> Measurement:
        net = self.net

        def col(table: str, name: str) -> np.ndarray:
            df = net[f"res_{table}"]
            return df[name].to_numpy(dtype=float).copy() if len(df) else np.zeros(0)

        return Measurement(
            step=k,
            time_s=float((self.start_step + k) * self.plant_step_s),
            vm_pu=net.res_bus.vm_pu.to_numpy(dtype=float).copy(),
            bus_labels=tuple(self.bus_labels),
            p_slack_mw=float(net.res_ext_grid.p_mw.sum()),
            q_slack_mvar=float(net.res_ext_grid.q_mvar.sum()),
            line_p_from_mw=col("line", "p_from_mw"),
            line_q_from_mvar=col("line", "q_from_mvar"),
            line_p_to_mw=col("line", "p_to_mw"),
            line_q_to_mvar=col("line", "q_to_mvar"),
            trafo_p_hv_mw=col("trafo", "p_hv_mw"),
            trafo_q_hv_mvar=col("trafo", "q_hv_mvar"),
            trafo_p_lv_mw=col("trafo", "p_lv_mw"),
            trafo_q_lv_mvar=col("trafo", "q_lv_mvar"),
            storage_energy_mwh=self.storage_energy_mwh(),
            setpoints=self.setpoints,
            switching_today=self.switching_today(),
        )

    def measure(self) -> Measurement:
        """The meters' reading of the last converged plant step.

        Before the first step (or when no step has converged yet) the meters read the net as it
        stands at the next step's profile values with the setpoints in force: a power flow that
        changes no state of the plant (no storage energy, counters or records).
        """
        if self._last_measurement is not None:
            return self._last_measurement
        k = min(self.step_index, self.n_steps - 1)
        cols = self._write_inputs(k, self._setpoints)
        if not self._runpp():
            cols.rollback()
            raise PowerFlowError(
                f"the plant's power flow does not converge at step {k}: nothing to measure"
            )
        return self._measure(k)

    def _runpp(self) -> bool:
        """Run pandapower's power flow on the net; return whether it converged.

        The fast path (``recycle``) is taken only when the last power flow on the net was ours
        and converged, and nothing recycling cannot update changed since (module docstring).
        """
        net = self.net
        state = self._powerflow_inputs() if self._fast else None
        recycle: dict[str, bool] | None = None
        last = self._pf_state
        if (
            state is not None
            and last is not None
            and self._warm
            and net["_ppc"] is last[0]
            and net["_options"] is last[1]
            and _same(state["full"], last[2]["full"])
        ):
            recycle = {
                "bus_pq": True,
                "trafo": not _same(state["trafo"], last[2]["trafo"]),
                "gen": not _same(state["gen"], last[2]["gen"]),
            }
        self._pf_state = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # warm start from the last converged step (also skips pandapower's slow
                # "auto" initialisation queries); the solver always named (module docstring);
                # numba off: its JIT costs ~5 s per process and gains nothing on feeders of this
                # size (measured 17 ms without vs 19 ms with per runpp on ieee69). A recycled
                # runpp keeps the options of the last full one, which were these (pandapower
                # falls back to a full runpp with them if its internal model is missing).
                self._pf_counts["full" if recycle is None else "recycled"] += 1
                options = {
                    "numba": False,
                    "init": "results" if self._warm else "auto",
                    "max_iteration": 30,
                }
                try:
                    pp.runpp(net, lightsim2grid=self._lightsim2grid, recycle=recycle, **options)
                except NotImplementedError:
                    # pandapower does not hand this net to lightsim2grid (voltage-dependent
                    # loads, FACTS, DC elements, ...): its own solver from now on
                    if not self._lightsim2grid:
                        raise
                    self._lightsim2grid = False
                    pp.runpp(net, lightsim2grid=False, **options)
        except (pp.LoadflowNotConverged, np.linalg.LinAlgError, ValueError, FloatingPointError):
            self._warm = False
            return False
        self._warm = bool(net.converged)
        if self._warm and recycle is None:
            _split_result_tables(net, self._split_tables)
        if self._warm and state is not None:
            self._pf_state = (net["_ppc"], net["_options"], state)
        return self._warm

    def _powerflow_inputs(self) -> dict[str, list[np.ndarray]]:
        """The net's inputs a recycled power flow does not see, by what it takes to update them:
        ``full`` (a full runpp), ``trafo`` (recycle the transformers), ``gen`` (recycle the
        slack and generators). Bus injections are recycled at every step."""
        net = self.net
        out: dict[str, list[np.ndarray]] = {"full": [], "trafo": [], "gen": []}
        for table in _STRUCTURE_TABLES:
            df = net[table] if table in net else None
            if df is None:
                continue
            out["full"].append(np.array([len(df)]))
            if len(df) and "in_service" in df.columns:
                out["full"].append(df["in_service"].to_numpy(copy=True))
        for group, spec in (
            ("full", _FULL_COLUMNS),
            ("trafo", _TRAFO_COLUMNS),
            ("gen", _GEN_COLUMNS),
        ):
            for table, columns in spec.items():
                df = net[table] if table in net else None
                if df is None or not len(df):
                    continue
                out[group].extend(df[c].to_numpy(copy=True) for c in columns if c in df.columns)
        return out

    def _count_switching(
        self, before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]]
    ) -> None:
        for name in self.tap_operations:
            self.tap_operations[name] += int(abs(after[name]["tap_pos"] - before[name]["tap_pos"]))
        for name in self.capacitor_switching:
            self.capacitor_switching[name] += int(after[name]["step"] != before[name]["step"])

    def _advance_storage(self) -> None:
        if not self._storage:
            return
        net = self.net
        p_mw = net.storage["p_mw"].to_numpy()
        soc = net.storage["soc_percent"].to_numpy(dtype=float, copy=True)
        for s in self._storage:
            p = float(p_mw[s.pos])
            de = p * s.efficiency if p > 0 else p / s.efficiency
            s.energy_mwh = float(np.clip(s.energy_mwh + de * self.dt_h, 0.0, s.e_mwh))
            soc[s.pos] = 100.0 * s.energy_mwh / s.e_mwh
        net.storage["soc_percent"] = soc

    def _record_devices(self, k: int) -> None:
        net, dev = self.net, self._record.device
        columns: dict[tuple[str, str], np.ndarray] = {}
        for key, table, column, pos in self._device_reads:
            values = columns.get((table, column))
            if values is None:
                values = columns[(table, column)] = net[table][column].to_numpy()
            dev[key][k] = values[pos]
        for key, name, qty in self._device_setpoints:
            dev[key][k] = self._setpoints[name][qty]
        for s in self._storage:
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
        """Everything recorded so far, one row per plant step (:class:`PlantRecord`)."""
        return self._record

    def storage_energy_mwh(self) -> dict[str, float]:
        """Stored energy of every storage device (ESS, exchange-station battery) by name, MWh."""
        return {s.name: s.energy_mwh for s in self._storage}


def _lightsim2grid_installed() -> bool:
    """Whether lightsim2grid is installed (a dependency; a plant in an environment without it
    runs pandapower's own solver)."""
    return importlib.util.find_spec("lightsim2grid") is not None


def _split_result_tables(net: pp.pandapowerNet, done: dict[str, pd.DataFrame]) -> None:
    """Store each column of the net's result tables as its own pandas block (same values, index,
    columns and dtypes).

    pandapower writes its results column by column (``res_line.loc[:, "p_from_mw"] = ...``);
    pandas takes a slower path for that when all columns share one block, as in a table
    pandapower has just created (a full runpp from a cold start creates them anew): this saves
    about a fifth of a recycled plant step. ``done`` holds the tables split so far, which are
    left alone while the net still holds them. A table pandas consolidates again later is only
    slower to write, never different.
    """
    for key in list(net.keys()):
        df = net[key]
        if (
            key.startswith("res_")
            and isinstance(df, pd.DataFrame)
            and df.shape[1] > 1
            and len(df)
            and done.get(key) is not df
        ):
            net[key] = done[key] = pd.concat([df.iloc[:, [j]] for j in range(df.shape[1])], axis=1)


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    """Whether two lists of arrays hold the same values (NaN equal to NaN)."""
    return len(a) == len(b) and all(
        x.shape == y.shape and bool(np.all((x == y) | ((x != x) & (y != y))))
        for x, y in zip(a, b, strict=True)
    )


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
