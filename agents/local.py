"""The ``local`` control mode: autonomous device controllers, also the fallback of silent agents.

Every device acts on its own measurement only, no communication:

- **Inverters (PV, wind) and SVCs** follow a static Volt-VAR curve of their bus voltage, IEEE Std
  1547-2018 [IEEE1547], clause 5.3.3 (voltage-reactive power mode) with the Category B default
  settings of its Table 8: V1 = 0.92, V2 = 0.98, V3 = 1.02, V4 = 1.08 p.u.; Q1 = 44 % of the
  nameplate apparent power (injection), Q2 = Q3 = 0, Q4 = 44 % (absorption); flat beyond V1 and V4.
  An inverter's curve is scaled by its rating ``s_rated_mva``; an SVC's curve is mapped onto its own
  range, the injection side onto ``q_max_mvar`` and the absorption side onto ``q_min_mvar``. The set
  value follows the curve through a first-order lag with the standard's open-loop response time
  (Category B default 5 s, so with plant steps of a minute the curve is followed at once; raise it
  to damp a weak feeder).
- **OLTCs and line regulators** run the classic step-voltage-regulator control with line-drop
  compensation (Kersting [KERSTING], *Distribution System Modeling and Analysis*, chapter 7, "The
  line drop compensator"): the compensator estimates the voltage at a remote point of the feeder
  from the regulated voltage and the power leaving the regulator,

      V_c = V_reg − (R·P + X·Q) / V_reg                                   (all per unit)

  and when V_c stays outside the band ``ldc_v_set_pu ± ldc_bandwidth_pu/2`` for at least
  ``ldc_delay_s`` the tap moves one step towards the band (at most one step per plant step, never
  beyond ``tap_min``/``tap_max`` nor the device's daily operation budget). The regulated voltage
  itself is kept inside [``ldc_vm_min_pu``, ``ldc_vm_max_pu``] (the "voltage limiter", or
  first-customer protection, of regulator controls): a step that would take it out is not made,
  and when it is out the tap moves back whatever V_c says.

Capacitor banks, storage (ESS, exchange-station batteries) and DG are left as they are: their
setpoints in force are never changed here. A switched capacitor's local rule would compete with
the tap changers for the same daily switching budget and voltage band (the source papers give it
none), and storage and DG are scheduled by energy and cost, which a local voltage rule cannot
judge.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import pandapower as pp
import pandapower.topology as pp_topology
from pydantic import BaseModel, ConfigDict, Field, model_validator

from clustersim.errors import PowerFlowError, ScenarioError
from clustersim.sim.plant import Measurement
from clustersim.sim.resources import OLTC, PV, SVC, LineRegulator, ResourceSet

__all__ = [
    "LocalController",
    "LocalSettings",
    "compensated_vm_pu",
    "design_ldc_impedance_pu",
    "volt_var_frac",
    "volt_var_q_mvar",
]

_TOL_PU = 1e-9


class LocalSettings(BaseModel):
    """Settings of the local controllers (Volt-VAR curve and line-drop-compensated tap control).

    Per-unit values are on the bus's nominal voltage and, for the compensator's R and X, on the
    net's ``sn_mva`` base (the per-unit system of pandapower).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # --- Volt-VAR curve, IEEE Std 1547-2018 Table 8, Category B defaults ---------------------
    vv_v1_pu: float = Field(default=0.92, gt=0, description="V1: full injection at or below")
    vv_v2_pu: float = Field(default=0.98, gt=0, description="V2: lower end of the dead band")
    vv_v3_pu: float = Field(default=1.02, gt=0, description="V3: upper end of the dead band")
    vv_v4_pu: float = Field(default=1.08, gt=0, description="V4: full absorption at or above")
    vv_q1_frac: float = Field(
        default=0.44,
        ge=0,
        le=1,
        description="Q1 at V1, fraction of the rating (inverter: s_rated_mva; SVC: q_max_mvar)",
    )
    vv_q4_frac: float = Field(
        default=-0.44,
        ge=-1,
        le=0,
        description="Q4 at V4, fraction of the rating (inverter: s_rated_mva; SVC: |q_min_mvar|)",
    )
    vv_response_time_s: float = Field(
        default=5.0,
        ge=0,
        description="open-loop response time (90 % of a step change), IEEE 1547 Cat. B default",
    )

    # --- tap changers with line-drop compensation ---------------------------------------------
    ldc_v_set_pu: float = Field(
        default=1.0,
        gt=0.8,
        lt=1.2,
        description="band centre of the compensated voltage: nominal, the centre of ANSI C84.1 "
        "Range A (0.95-1.05 p.u.), equal margin to both limits",
    )
    ldc_bandwidth_pu: float = Field(
        default=0.02, gt=0, description="total band width (band = v_set ± bandwidth/2)"
    )
    ldc_delay_s: float = Field(
        default=120.0,
        ge=0,
        description="time the compensated voltage must stay outside the band before a tap "
        "step: two plant steps at the default 60 s, so a one-step excursion (a fleet of EVs "
        "switching on) never moves a tap, yet well inside the 15 min control interval",
    )
    ldc_r_pu: float | None = Field(
        default=None,
        description="compensator R for every tap changer; None: designed per device "
        "(design_ldc_impedance_pu); 0 with ldc_x_pu = 0: plain voltage regulation",
    )
    ldc_x_pu: float | None = Field(
        default=None, description="compensator X for every tap changer; None: designed per device"
    )
    ldc_impedance_pu: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="per-device compensator (R, X), overriding ldc_r_pu/ldc_x_pu",
    )
    ldc_vm_min_pu: float = Field(
        default=0.95, gt=0, description="voltage limiter: lowest regulated-bus voltage"
    )
    ldc_vm_max_pu: float = Field(
        default=1.05, gt=0, description="voltage limiter: highest regulated-bus voltage"
    )

    @model_validator(mode="after")
    def _check(self) -> LocalSettings:
        v1, v2, v3, v4 = self.vv_v1_pu, self.vv_v2_pu, self.vv_v3_pu, self.vv_v4_pu
        if not (v1 < v2 <= v3 < v4):
            raise ValueError(
                f"Volt-VAR curve must have V1 < V2 <= V3 < V4, got {v1}, {v2}, {v3}, {v4}"
            )
        if (self.ldc_r_pu is None) != (self.ldc_x_pu is None):
            raise ValueError("set both ldc_r_pu and ldc_x_pu, or neither (automatic)")
        if not self.ldc_vm_min_pu < self.ldc_vm_max_pu:
            raise ValueError("need ldc_vm_min_pu < ldc_vm_max_pu")
        lo, hi = self.band_pu
        if not self.ldc_vm_min_pu <= lo < hi <= self.ldc_vm_max_pu:
            raise ValueError("the LDC band must lie inside [ldc_vm_min_pu, ldc_vm_max_pu]")
        return self

    @property
    def band_pu(self) -> tuple[float, float]:
        """Lower and upper edge of the compensated-voltage band."""
        half = 0.5 * self.ldc_bandwidth_pu
        return self.ldc_v_set_pu - half, self.ldc_v_set_pu + half


# ------------------------------------------------------------------------------ pure functions
def volt_var_frac(vm_pu: Any, settings: LocalSettings) -> Any:
    """Volt-VAR curve: reactive power as a fraction of the rating (> 0 injects) at ``vm_pu``.

    Piecewise linear through (V1, Q1), (V2, 0), (V3, 0), (V4, Q4), constant beyond V1 and V4
    (IEEE Std 1547-2018, clause 5.3.3 and Table 8). Works on scalars and arrays; NaN in,
    NaN out.
    """
    s = settings
    xp = [s.vv_v1_pu, s.vv_v2_pu, s.vv_v3_pu, s.vv_v4_pu]
    fp = [s.vv_q1_frac, 0.0, 0.0, s.vv_q4_frac]
    out = np.interp(vm_pu, xp, fp)
    return float(out) if np.ndim(out) == 0 else out


def volt_var_q_mvar(device: PV | SVC, vm_pu: float, settings: LocalSettings) -> float:
    """The Volt-VAR reactive power (Mvar, generator convention) of an inverter or SVC at ``vm_pu``.

    Inverter (PV, wind): fraction × ``s_rated_mva`` (always inside the plant's accepted range
    [−s_rated, s_rated]; the plant further limits it to √(S² − P²)). SVC: the injection side of
    the curve scaled onto ``q_max_mvar``, the absorption side onto ``q_min_mvar``, clipped to
    [q_min_mvar, q_max_mvar] (an SVC that cannot reach 0 sits at its nearest limit in the dead
    band).
    """
    f = float(volt_var_frac(vm_pu, settings))
    if isinstance(device, PV):
        return f * device.s_rated_mva
    if f >= 0:
        q = f / settings.vv_q1_frac * max(device.q_max_mvar, 0.0) if settings.vv_q1_frac else 0.0
    else:
        q = f / settings.vv_q4_frac * min(device.q_min_mvar, 0.0) if settings.vv_q4_frac else 0.0
    return float(np.clip(q, device.q_min_mvar, device.q_max_mvar))


def compensated_vm_pu(v_reg_pu: float, p_pu: float, q_pu: float, r_pu: float, x_pu: float) -> float:
    """Line-drop compensator: estimated remote voltage V_reg − (R·P + X·Q)/V_reg (per unit).

    ``p_pu``/``q_pu`` is the power flowing out of the regulator into the feeder. This is the
    first-order (real-part) form of Kersting's compensator V_c = V_reg − Z_eq·I_reg with
    I_reg = conj(S/V_reg), chapter 7.
    """
    return v_reg_pu - (r_pu * p_pu + x_pu * q_pu) / v_reg_pu


# length: the line-drop-compensation design of [KERSTING] ch. 7, step by step
def design_ldc_impedance_pu(
    net: pp.pandapowerNet,
    resources: ResourceSet,
    where: Mapping[str, tuple[str, int]],
    *,
    target_buses: Mapping[str, str] | None = None,
) -> dict[str, tuple[float, float]]:
    """Compensator (R, X) per tap changer, by Kersting's equivalent-impedance method.

    One power flow on a copy of ``net`` (never modified) at its loads as they stand, with all
    generation and storage at zero (the design condition of a regulator: peak load, no DER;
    pass the case's base loads, i.e. build the controller before the first plant step). For each
    OLTC / line regulator its *zone* is the part of the feeder it supplies up to the next
    regulator; the target is ``target_buses[device]`` (a bus label) or, by default, the zone's
    lowest-voltage bus, so the band is held at the weakest point of the zone. Then
    Z_eq = (V_reg − V_target) / I_reg (phasors, Kersting ch. 7) gives the R:X ratio, and Z_eq is
    scaled so that ``compensated_vm_pu`` reproduces |V_target| exactly at the design load.

    Returns device name → (r_pu, x_pu) on the net's ``sn_mva`` base; (0, 0) where no power
    flows out of the regulator. Raises PowerFlowError when the design power flow fails.
    """
    taps = [d for d in resources.devices if isinstance(d, OLTC | LineRegulator)]
    if not taps:
        return {}
    work = copy.deepcopy(net)
    for table, cols in (("sgen", ("p_mw", "q_mvar")), ("storage", ("p_mw", "q_mvar"))):
        if len(work[table]):
            for c in cols:
                work[table][c] = 0.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pp.runpp(work, numba=False, lightsim2grid=False)
    except (pp.LoadflowNotConverged, np.linalg.LinAlgError, ValueError) as exc:
        raise PowerFlowError(f"LDC design power flow did not converge ({exc})") from None

    graph = pp_topology.create_nxgraph(work, respect_switches=True)
    for d in taps:
        table, row = where[d.name]
        if table == "trafo":
            hv, lv = int(work.trafo.at[row, "hv_bus"]), int(work.trafo.at[row, "lv_bus"])
            if graph.has_edge(hv, lv, key=("trafo", row)):
                graph.remove_edge(hv, lv, key=("trafo", row))
    vm = work.res_bus.vm_pu
    va = np.deg2rad(work.res_bus.va_degree)
    labels = {str(lbl): int(i) for i, lbl in zip(work.bus.index, work.bus["name"], strict=True)}
    sn_mva = float(work.sn_mva)
    out: dict[str, tuple[float, float]] = {}
    for d in taps:
        table, row = where[d.name]
        if table == "trafo":
            reg = int(work.trafo.at[row, "lv_bus"])
            p_pu = -float(work.res_trafo.at[row, "p_lv_mw"]) / sn_mva
            q_pu = -float(work.res_trafo.at[row, "q_lv_mvar"]) / sn_mva
        else:
            reg = int(work.ext_grid.at[row, "bus"])
            p_pu = float(work.res_ext_grid.at[row, "p_mw"]) / sn_mva
            q_pu = float(work.res_ext_grid.at[row, "q_mvar"]) / sn_mva
        zone = [b for b in nx.node_connected_component(graph, reg) if np.isfinite(vm.at[b])]
        if target_buses and d.name in target_buses:
            lbl = target_buses[d.name]
            if lbl not in labels:
                raise ScenarioError(f"LDC target bus {lbl!r} of {d.name!r} is not in the net")
            tgt = labels[lbl]
        else:
            tgt = min(zone, key=lambda b: float(vm.at[b]))
        v_reg = vm.at[reg] * np.exp(1j * va.at[reg])
        v_tgt = vm.at[tgt] * np.exp(1j * va.at[tgt])
        s_pu = complex(p_pu, q_pu)
        drop = float(vm.at[reg] - vm.at[tgt])
        if abs(s_pu) < 1e-9 or drop <= 0:
            out[d.name] = (0.0, 0.0)
            continue
        z = (v_reg - v_tgt) / np.conj(s_pu / v_reg)
        proj = z.real * p_pu + z.imag * q_pu
        if not np.isfinite(proj) or proj <= 0:
            out[d.name] = (0.0, 0.0)
            continue
        k = float(vm.at[reg]) * drop / proj
        out[d.name] = (float(k * z.real), float(k * z.imag))
    return out


# ------------------------------------------------------------------------------ the controller
@dataclass
class _Inverter:
    device: PV | SVC
    bus_pos: int


@dataclass
class _Tap:
    device: OLTC | LineRegulator
    reg_bus_pos: int
    trafo_pos: int | None  # None: slack-bus OLTC
    sign: int  # +1: a higher tap raises the regulated voltage
    r_pu: float
    x_pu: float
    since_s: float | None = None  # start of the current excursion
    direction: int = 0  # +1 raise wanted, -1 lower wanted, 0 in band


class LocalController:
    """Local Volt-VAR and LDC tap control of a plant's devices.

    Parameters
    ----------
    net:
        the plant's pandapower net (read only: bus order, trafo ``tap_side``, ``sn_mva``).
    resources:
        the scenario's devices.
    where:
        ``Plant.where``: device name → (table, row) in ``net``.
    settings:
        curve and regulator settings (default ``LocalSettings()``); a compensator R/X left at
        None is designed per device by ``design_ldc_impedance_pu`` on ``net`` at construction.
    plant_step_s:
        the plant step: each measurement stands for that many seconds of the tap timers.
    devices:
        device names to control (default: every PV, wind, SVC, OLTC and line regulator). Names
        of capacitors, storage, DG and EV stations are accepted and ignored (left as they are);
        a name that is no device of ``resources`` raises ScenarioError.

    ``setpoints(meas)`` is called once after each plant step with ``plant.measure()`` and returns
    only the setpoints that change (device → {"q_mvar": ...} or {"tap_pos": ...}); every value
    lies inside the range ``Plant.set_setpoint`` accepts.
    """

    def __init__(
        self,
        net: pp.pandapowerNet,
        resources: ResourceSet,
        where: Mapping[str, tuple[str, int]],
        *,
        settings: LocalSettings | None = None,
        plant_step_s: int = 60,
        devices: Iterable[str] | None = None,
    ) -> None:
        self.settings = settings if settings is not None else LocalSettings()
        self.plant_step_s = float(plant_step_s)
        if self.plant_step_s <= 0:
            raise ValueError("plant_step_s must be positive")
        known = {d.name: d for d in resources.devices}
        if devices is None:
            chosen = list(known)
        else:
            chosen = list(devices)
            unknown = sorted(n for n in chosen if n.split(":")[0] not in known)
            if unknown:
                raise ScenarioError(f"local control: unknown devices {', '.join(unknown)}")
        chosen_set = set(chosen)
        s = self.settings
        bus_pos = {int(b): i for i, b in enumerate(net.bus.index)}
        self._inverters: dict[str, _Inverter] = {}
        self._taps: dict[str, _Tap] = {}
        designed: dict[str, tuple[float, float]] | None = None
        for d in resources.devices:
            if d.name not in chosen_set:
                continue
            if isinstance(d, PV | SVC):
                table, row = _where(where, d.name)
                self._inverters[d.name] = _Inverter(d, bus_pos[int(net[table].at[row, "bus"])])
            elif isinstance(d, OLTC | LineRegulator):
                table, row = _where(where, d.name)
                if d.name in s.ldc_impedance_pu:
                    r, x = s.ldc_impedance_pu[d.name]
                elif s.ldc_r_pu is not None and s.ldc_x_pu is not None:
                    r, x = s.ldc_r_pu, s.ldc_x_pu
                else:
                    if designed is None:
                        designed = design_ldc_impedance_pu(net, resources, where)
                    r, x = designed[d.name]
                if table == "trafo":
                    side = str(net.trafo.at[row, "tap_side"]).lower()
                    if side not in ("hv", "lv"):
                        raise ScenarioError(
                            f"local control: transformer of {d.name!r} has no tap_side "
                            f"('hv' or 'lv'), got {side!r}"
                        )
                    self._taps[d.name] = _Tap(
                        d,
                        reg_bus_pos=bus_pos[int(net.trafo.at[row, "lv_bus"])],
                        trafo_pos=int(net.trafo.index.get_loc(row)),
                        sign=1 if side == "lv" else -1,
                        r_pu=r,
                        x_pu=x,
                    )
                else:
                    self._taps[d.name] = _Tap(
                        d,
                        reg_bus_pos=bus_pos[int(net.ext_grid.at[row, "bus"])],
                        trafo_pos=None,
                        sign=1,
                        r_pu=r,
                        x_pu=x,
                    )
        self.sn_mva = float(net.sn_mva)
        self._last_time_s: float | None = None

    @property
    def devices(self) -> list[str]:
        """The devices this controller acts on."""
        return [*self._inverters, *self._taps]

    @property
    def ldc_impedance_pu(self) -> dict[str, tuple[float, float]]:
        """The compensator (R, X) in use per tap changer (p.u. on the net's sn_mva)."""
        return {n: (t.r_pu, t.x_pu) for n, t in self._taps.items()}

    def setpoints(self, meas: Measurement | None) -> dict[str, dict[str, float]]:
        """Setpoints to queue after the plant step ``meas`` reports; only those that change.

        The tap timers run on ``meas.time_s``, so a repeated reading (``plant.measure()``
        returns the last converged step again after a failed power flow, whose setpoints the
        plant rolled back) adds no time: the Volt-VAR values lost with the failed step are sent
        again, and a tap changer at most repeats the step it already asked for (computed from
        the same tap in force), never a second one. A reading older than the last one seen, one
        without a finite time, or None gives no setpoints. Devices whose inputs are not finite
        are skipped (and their tap timers restarted). This never raises on a measurement.
        """
        if meas is None:
            return {}
        try:
            t_s = float(meas.time_s)
        except (TypeError, ValueError):
            return {}
        if not math.isfinite(t_s) or (self._last_time_s is not None and t_s < self._last_time_s):
            return {}
        self._last_time_s = t_s
        out: dict[str, dict[str, float]] = {}
        for name, inv in self._inverters.items():
            q = self._volt_var(name, inv, meas)
            if q is not None:
                out[name] = {"q_mvar": q}
        for name, tap in self._taps.items():
            t = self._tap(name, tap, meas)
            if t is not None:
                out[name] = {"tap_pos": float(t)}
        return out

    # -------------------------------------------------------------------------------- internals
    def _volt_var(self, name: str, inv: _Inverter, meas: Measurement) -> float | None:
        vm = _finite(meas.vm_pu, inv.bus_pos)
        if vm is None:
            return None
        target = volt_var_q_mvar(inv.device, vm, self.settings)
        prev = _in_force(meas, name, "q_mvar")
        q = target
        if prev is not None and self.settings.vv_response_time_s > 0:
            # first-order lag reaching 90 % in the response time: tau = T / ln(10)
            tau = self.settings.vv_response_time_s / math.log(10.0)
            q = prev + (target - prev) * (1.0 - math.exp(-self.plant_step_s / tau))
        q = float(np.clip(q, *_q_range(inv.device)))
        if prev is not None and abs(q - prev) <= 1e-9 * max(1.0, abs(prev)):
            return None
        return q

    def _tap(self, name: str, tap: _Tap, meas: Measurement) -> int | None:
        s = self.settings
        d = tap.device
        v_reg = _finite(meas.vm_pu, tap.reg_bus_pos)
        if tap.trafo_pos is None:
            p_mw, q_mvar = meas.p_slack_mw, meas.q_slack_mvar
        else:
            p_mw = -_item(meas.trafo_p_lv_mw, tap.trafo_pos)
            q_mvar = -_item(meas.trafo_q_lv_mvar, tap.trafo_pos)
        pos = _in_force(meas, name, "tap_pos")
        if (
            v_reg is None
            or v_reg <= 0
            or not (math.isfinite(p_mw) and math.isfinite(q_mvar))
            or pos is None
        ):
            tap.since_s, tap.direction = None, 0
            return None
        v_c = compensated_vm_pu(v_reg, p_mw / self.sn_mva, q_mvar / self.sn_mva, tap.r_pu, tap.x_pu)
        lo, hi = s.band_pu
        # per-step change of the regulated voltage (exact for a slack OLTC, to first order for a
        # ratio tap changer)
        dv = d.tap_step_percent / 100.0 * (1.0 if tap.trafo_pos is None else v_reg)
        if v_reg > s.ldc_vm_max_pu + _TOL_PU:
            want = -1
        elif v_reg < s.ldc_vm_min_pu - _TOL_PU:
            want = 1
        elif v_c < lo - _TOL_PU:
            want = 1
        elif v_c > hi + _TOL_PU:
            want = -1
        else:
            want = 0
        if want != tap.direction or want == 0:
            tap.direction = want
            tap.since_s = meas.time_s if want else None
        if want == 0 or tap.since_s is None:
            return None
        if meas.time_s + self.plant_step_s - tap.since_s < s.ldc_delay_s - 1e-9:
            return None
        # a step the limits allow: inside the tap range, within the daily budget, not pushing the
        # regulated voltage past the limiter, and (for a band move) not overshooting the band
        new = round(pos) + want * tap.sign
        if not d.tap_min <= new <= d.tap_max:
            return None
        used = meas.switching_today.get(name)
        if used is None or used + 1 > d.max_operations_per_day:
            return None
        v_after = v_reg + want * dv
        limiter = not (s.ldc_vm_min_pu - _TOL_PU <= v_reg <= s.ldc_vm_max_pu + _TOL_PU)
        if not limiter:
            if v_after > s.ldc_vm_max_pu + _TOL_PU or v_after < s.ldc_vm_min_pu - _TOL_PU:
                return None
            v_c_after = v_c + want * dv
            if (want > 0 and v_c_after > hi + _TOL_PU) or (want < 0 and v_c_after < lo - _TOL_PU):
                return None
        tap.since_s, tap.direction = None, 0  # the timer restarts after an operation
        return new


def _where(where: Mapping[str, tuple[str, int]], name: str) -> tuple[str, int]:
    try:
        table, row = where[name]
    except KeyError:
        raise ScenarioError(f"local control: device {name!r} is not placed in the net") from None
    return str(table), int(row)


def _finite(arr: np.ndarray, pos: int) -> float | None:
    v = _item(arr, pos)
    return v if math.isfinite(v) else None


def _item(arr: np.ndarray, pos: int) -> float:
    try:
        return float(arr[pos])
    except (IndexError, TypeError, ValueError):
        return math.nan


def _in_force(meas: Measurement, name: str, qty: str) -> float | None:
    try:
        v = float(meas.setpoints[name][qty])
    except (KeyError, TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _q_range(d: PV | SVC) -> tuple[float, float]:
    if isinstance(d, PV):
        return -d.s_rated_mva, d.s_rated_mva
    return d.q_min_mvar, d.q_max_mvar
