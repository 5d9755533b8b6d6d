"""Convert the IEEE 123-node test feeder (OpenDSS) into a balanced pandapower net.

Run ``python -m clustersim.sim.data.convert_ieee123 SRC_DIR [OUT_DIR]`` (SRC_DIR holds the
OpenDSS files named below; OUT_DIR defaults to ``sim/data/cases``). It writes
``ieee123.json`` (``pandapower.to_json``) and ``ieee123_opendss_vm.csv`` (OpenDSS reference
voltages, so the shipped net can be checked without OpenDSSDirect). OpenDSSDirect.py is needed
only here, never at run time.

Source
    IEEE PES 123-node test feeder [IEEE123] as distributed with OpenDSS [OPENDSS]
    (dss-extensions/electricdss-tst, commit 3b208397, ``Version8/Distrib/IEEETestCases/123Bus``):
    ``IEEE123Master.dss`` with its redirects ``IEEELineCodes.DSS``, ``IEEE123Regulators.DSS``,
    ``IEEE123Loads.DSS``, and ``BusCoords.dat``. 4.16 kV, three-phase unbalanced, 3490 kW /
    1920 kvar of spot load.

How it is read
    The feeder is compiled and solved with OpenDSSDirect.py (``CalcVoltageBases`` for 4.16 and
    0.48 kV, snapshot solution with the RegControls active). Every element is read from that
    compiled circuit (not from the text), and the pandapower net is built from scratch. pandapower's
    ``from_opendss`` is not used: it imports every regulator phase as its own transformer at its
    own solved ratio (reg4a/b/c in parallel at 4.420/4.264/4.316 kV, vk 0.01 %, no tap changer),
    and its power flow does not converge.

Modelling choices (balanced single-phase equivalent)
    * Buses: every OpenDSS bus keeps its OpenDSS name (lower case, as OpenDSS reports it) in
      ``net.bus["name"]``; 129 of OpenDSS's 132 buses, all 4.16 kV. Removed: the dummy buses
      ``300_open`` and ``94_open`` (see switches) and bus 610, the 0.48 kV secondary of the
      150 kVA delta-delta transformer ``xfm1`` at 61s, which carries no load or capacitor (the
      transformer goes with it: the net's only trafos are the four regulators, and there is one
      voltage level). No other bus is removed or merged (the 114-bus equivalent of [EVEC] drops
      intermediate nodes; here every node is kept so resource presets can name any OpenDSS bus).
      ``net.bus["phases"]`` records which phases the bus has in the unbalanced feeder ("abc",
      "ac", "a", ...), ``net.bus.geo`` the BusCoords.dat position.
    * Source: ``ext_grid`` at bus 150, vm_pu 1.0 (the Vsource; its 1e-4 ohm impedance is
      neglected).
    * Lines: one pandapower line per OpenDSS line, whatever its phase count, with the
      positive-sequence series impedance and charging of its phase matrices
      (z1 = mean(self) − mean(mutual) of the line codes' phase R/X matrices, neutral already
      Kron-reduced in the files; c1 likewise from the capacitance matrix; for a one-phase line
      z1 = z_self, so a single-phase lateral's balanced drop is a third of its real one-phase
      drop: a balanced load of P draws P/3 per phase). Lengths in kft → km. ``max_i_ka``
      is the OpenDSS NormAmps (400 A, the OpenDSS default, for every line here). Columns
      ``linecode`` and ``phases`` keep the OpenDSS line code and phase count.
    * Switches: the six normally closed switches (``sw1``..``sw6``, modelled in OpenDSS as 1e-6
      ohm lines) become closed bus-bus switches. The two normally open ties of the IEEE feeder
      (151–300 and 54–94) are modelled in OpenDSS as closed stubs ``sw7`` 151→300_open and
      ``sw8`` 54→94_open to dangling buses; here they are open bus-bus switches 151–300 and
      54–94, so closing one of them closes the real loop. The operating topology is radial.
    * Regulators: each of the four regulator banks (reg1 150→150r, three-phase ganged at the
      substation; reg2 9→9r, phase a; reg3 25→25r, phases a and c; reg4 160→160r, phases a, b, c
      with independent controls) becomes ONE three-phase pandapower trafo named "reg1".."reg4",
      hv_bus = source side, lv_bus = regulated side, 4.16/4.16 kV, Yy0, tap on the lv
      (regulated) side, tap_changer_type "Ratio", tap_neutral 0, tap_min −16, tap_max +16,
      tap_step_percent 0.625 (OpenDSS ±10 % in 32 steps; read from the files and checked), so one
      step raises the regulated side by 0.625 % of the source side exactly as the OpenDSS
      winding-2 tap does. pfe_kw = 0 and i0_percent = 0 (no magnetizing branch), ``oltc`` True,
      sn_mva 5 (reg1) and 3 × 2 MVA (the single-phase units of reg2..reg4, per-unit impedance
      kept on a three-phase base), vkr_percent = the files' %LoadLoss (1e-5 %).
      Short-circuit voltage: reg1 keeps the files' vk 0.001 %. The mid-feeder regulators do NOT
      keep the files' 0.01 %: with it pandapower's Newton-Raphson (flat start, default options)
      diverges as soon as reg4 is 3 or more steps off neutral (a stiff, off-nominal branch between
      weaker lines: the first iterate's second-order error is ~ y_reg · Δtap² · x_upstream; a
      4-bus toy net shows the same), so the shipped taps (reg4 at +7) would not solve. They get
      vk 1 % (``REG_VK_PERCENT``), with which every one of the 7⁴ = 2401 tap combinations
      {−16, −10, −4, 0, 4, 10, 16}⁴ converges in ≤ 6 Newton iterations at load scaling 0, 1 and 2
      (0.5 % converges too but needs up to 10, pandapower's default limit). Cost: a drop of
      ≈ 0.0017 pu per Mvar through the regulator (x = 1 % on 6 MVA); at base load < 1e-4 pu
      across each of reg2..reg4 (reg4 carries 1.43 MW and almost no Mvar). reg1 converges at
      any tap with the tiny impedance because its hv bus is the slack.
    * Regulator taps: the taps the OpenDSS RegControls settle on in OpenDSS's own snapshot
      solution (MaxControlIter 100), PHASE-AVERAGED over the phases of the bank and rounded to
      the nearest step (half away from zero): reg1 +6 (ganged); reg2 0 (phase a only); reg3 a +2,
      c 0 → +1; reg4 a +10, b +4, c +6 → +7 (20/3 rounded).
    * Loads: one pandapower load per bus, the SUM of the OpenDSS loads at that bus over all
      phases (wye and delta; named "s76a+s76b+s76c" etc.), 85 loads, 3490 kW / 1920 kvar. Every
      load is CONSTANT POWER at its rated kW/kvar: the constant-impedance (model 2, 17 loads) and
      constant-current (model 5, 15 loads) loads of the feeder are converted to constant power at
      nominal voltage (their kW/kvar are given at rated voltage, so p_mw = kW/1000,
      q_mvar = kvar/1000).
    * Capacitors: one pandapower shunt per OpenDSS capacitor (c83 600 kvar three-phase, c88a,
      c90b, c92c 50 kvar single-phase), q_mvar < 0 (capacitive), the rated kvar taken as the
      three-phase rating of the balanced equivalent (total kvar kept), shunt vn_kv = rated kV
      line-to-line (4.16 kV, or √3 × 2.402 kV for the single-phase units).

Validation (numbers of the last conversion; ``main()`` prints the current ones)
    Reference: OpenDSS's own unbalanced solution of the same files with every regulator phase
    frozen at the tap its RegControl settled on (controls switched off, the solution then
    re-solved; it is the original solution to within the OpenDSS tolerance) and the loads in
    their OpenDSS load models. Compared quantity: per bus the PHASE-AVERAGED voltage magnitude
    (mean over the bus's existing phases of |V| in pu of the line-to-neutral base; this is also
    what ``net["opendss_import"]["vm_pu_opendss"]`` of pandapower's converter holds, despite the
    README calling it positive sequence: ``_capture_voltages`` averages ``Bus.puVmagAngle``)
    against pandapower's ``res_bus.vm_pu``.

    * max |Δvm| over all 129 buses: 0.0184 pu (bus 58, a phase-b lateral: phase b at its
      three-phase parent 57 is 0.019 pu above that bus's phase average, an unbalance a balanced
      model cannot show);
    * three-phase buses only: 0.0029 pu; against the positive-sequence magnitude (three-phase
      buses): 0.0030 pu;
    * against OpenDSS with every phase of each bank at the single balanced tap (column
      ``vm_pu_opendss_equal_taps``): 0.0302 pu at bus 114 (phase-a lateral behind reg4, whose
      phase a sits 0.023 pu below the phase average once the per-phase taps 10/4/6 are all set to
      7); 0.0007 pu on the three-phase buses. So the balanced model reproduces the phase-averaged
      trunk closely; the error at one- and two-phase buses is the feeder's phase unbalance.
      The settled per-phase taps are the reference because the balanced tap stands for phase taps
      that really differ: forcing all phases of reg3/reg4 to one tap solves a more unbalanced
      feeder than the one OpenDSS regulates (phase b behind reg4 rises to 1.06 pu). Part of the
      0.0029 pu on the three-phase buses is the rounding of reg4's 20/3 to +7 (+0.002 pu).

    Base operating point of the shipped net (pandapower): 3490 kW load, losses 87.4 kW (OpenDSS,
    unbalanced: 96.0 kW), min vm 0.9953 pu (OpenDSS: lowest phase 0.979 pu).
"""

from __future__ import annotations

import argparse
import faulthandler
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandapower as pp
import pandas as pd
from pandapower.toolbox import clear_result_tables

from clustersim.errors import CaseError
from clustersim.fileio import write_text

__all__ = [
    "DEFAULT_OUT_DIR",
    "ConversionReport",
    "convert",
    "main",
]

DEFAULT_OUT_DIR = Path(__file__).resolve().parent / "cases"
MASTER_FILE = "IEEE123Master.dss"
COORDS_FILE = "BusCoords.dat"
JSON_NAME = "ieee123.json"
CSV_NAME = "ieee123_opendss_vm.csv"

VOLTAGE_BASES_KV = (4.16, 0.48)
TAP_MIN, TAP_MAX, TAP_NEUTRAL = -16, 16, 0
TAP_STEP_PERCENT = 0.625
# short-circuit voltage of the mid-feeder regulators (reg2..reg4) in pandapower: with the files'
# 0.01 % pandapower's flat-start Newton-Raphson diverges once a tap is 3 steps off neutral (see the
# module docstring); 1 % converges for every tap combination tried
REG_VK_PERCENT = 1.0
KM_PER_KFT = 0.3048
# OpenDSS LineUnits enum → km (0 "none" only appears on the switches, whose length is moot)
_UNIT_KM = {0: 1.0, 1: 1.609344, 2: KM_PER_KFT, 3: 1.0, 4: 1e-3, 5: 3.048e-4, 6: 2.54e-5, 7: 1e-5}
_PHASE_LETTERS = {1: "a", 2: "b", 3: "c"}
_OPEN_SUFFIX = "_open"


@dataclass
class ConversionReport:
    """What the conversion measured (voltages in pu, powers as named).

    ``vm`` is indexed by bus name (the order of ``net.bus``) with columns ``phases``;
    ``vm_pu_opendss``, the reference: OpenDSS phase-averaged |V| with every regulator phase
    frozen at the tap its RegControl settled on; ``vm_pu_opendss_pos_seq`` (positive sequence
    of the same solution, three-phase buses only, NaN elsewhere); ``vm_a_pu``/``vm_b_pu``/
    ``vm_c_pu`` (per phase, NaN where absent); ``vm_pu_opendss_equal_taps`` (phase-averaged,
    every phase of a bank at the balanced ``tap_pos``); ``vm_pu_pandapower``; ``dvm_pu``
    (pandapower − reference). ``taps`` has one row per regulator: the per-phase taps OpenDSS
    settles on and the balanced ``tap_pos``.
    """

    vm: pd.DataFrame
    taps: pd.DataFrame
    max_deviation_pu: float
    worst_bus: str
    max_deviation_three_phase_pu: float
    max_deviation_pos_seq_pu: float
    max_deviation_equal_taps_pu: float
    worst_bus_equal_taps: str
    max_deviation_equal_taps_three_phase_pu: float
    losses_kw: float
    losses_kw_opendss: float
    min_vm_pu: float
    total_load_mw: float
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The conversion report as text: taps, load, losses and the deviation from OpenDSS."""
        taps = ", ".join(f"{r.Index} {int(r.tap_pos):+d}" for r in self.taps.itertuples())
        return (
            f"ieee123: {len(self.vm)} buses; taps {taps}; load {1e3 * self.total_load_mw:.1f} kW; "
            f"losses {self.losses_kw:.2f} kW (OpenDSS {self.losses_kw_opendss:.2f} kW); "
            f"min vm {self.min_vm_pu:.4f} pu\n"
            f"max |dvm| vs OpenDSS phase-averaged (settled per-phase taps): "
            f"{self.max_deviation_pu:.4f} pu at bus {self.worst_bus}, three-phase buses "
            f"{self.max_deviation_three_phase_pu:.4f}, positive sequence "
            f"{self.max_deviation_pos_seq_pu:.4f}\n"
            f"max |dvm| vs OpenDSS phase-averaged (every phase at tap_pos): "
            f"{self.max_deviation_equal_taps_pu:.4f} pu at bus {self.worst_bus_equal_taps}, "
            f"three-phase buses {self.max_deviation_equal_taps_three_phase_pu:.4f}"
        )


# --------------------------------------------------------------------------------------------
# OpenDSS side (the only part that needs OpenDSSDirect.py)
# --------------------------------------------------------------------------------------------


def _import_dss():
    # OpenDSSDirect's native backend may raise a first-chance exception that faulthandler
    # misreports as fatal on some platforms; disable it for the import only.
    was_enabled = faulthandler.is_enabled()
    faulthandler.disable()
    try:
        import opendssdirect as dss  # optional (the dev extra): only the converter reads OpenDSS
    except ImportError as exc:
        raise CaseError(
            "converting ieee123 needs OpenDSSDirect.py (pip install 'OpenDSSDirect.py')"
        ) from exc
    finally:
        if was_enabled:
            faulthandler.enable()
    return dss


def _each(collection) -> Iterator[None]:
    """Iterate an OpenDSSDirect collection (each step makes the next element active)."""
    i = collection.First()
    while i:
        yield None
        i = collection.Next()


def _bus_of(token: str) -> str:
    return token.split(".", 1)[0].strip().lower()


def _positive_sequence(matrix: list[float], n: int) -> float | complex:
    """Positive-sequence value of an n×n phase matrix: mean(self) − mean(mutual)."""
    m = np.asarray(matrix).reshape(n, n)
    self_avg = np.trace(m) / n
    mutual_avg = (m.sum() - np.trace(m)) / (n * (n - 1)) if n > 1 else 0.0
    return self_avg - mutual_avg


def _bus_voltages(dss) -> dict[str, dict]:
    out = {}
    for name in dss.Circuit.AllBusNames():
        dss.Circuit.SetActiveBus(name)
        nodes = [n for n in dss.Bus.Nodes() if n in _PHASE_LETTERS]
        mags = dss.Bus.puVmagAngle()[::2]
        per_phase = {
            _PHASE_LETTERS[n]: float(m)
            for n, m in zip(dss.Bus.Nodes(), mags, strict=True)
            if n in nodes
        }
        pos_seq = math.nan
        if len(nodes) == 3:
            pos_seq = float(dss.Bus.SeqVoltages()[1]) / (1e3 * dss.Bus.kVBase())
        out[name.lower()] = {
            "phases": "".join(_PHASE_LETTERS[n] for n in sorted(nodes)),
            "per_phase": per_phase,
            "avg": float(np.mean(list(per_phase.values()))),
            "pos_seq": pos_seq,
            "kv_base_ln": float(dss.Bus.kVBase()),
        }
    return out


# length: a straight-line read of the OpenDSS model, element class by element class
def _read_opendss(src_dir: Path) -> dict:
    """Compile and solve the feeder in OpenDSS; return plain Python data (no dss objects)."""
    master = src_dir / MASTER_FILE
    if not master.is_file():
        raise CaseError(f"{master} not found: not an IEEE 123-bus OpenDSS folder")
    dss = _import_dss()
    dss.Command("Clear")
    dss.Command(f'Redirect "{master}"')
    dss.Command(f"Set VoltageBases=[{', '.join(str(v) for v in VOLTAGE_BASES_KV)}]")
    dss.Command("CalcVoltageBases")
    dss.Command("Set MaxControlIter=100")
    dss.Solution.Solve()
    if not dss.Solution.Converged():
        raise CaseError(f"{master}: the OpenDSS solution does not converge")
    data: dict = {"vm_regcontrol": _bus_voltages(dss)}  # RegControls active

    # regulators: which transformer each RegControl taps, and the tap it settled on
    regs: list[dict] = []
    for _ in _each(dss.RegControls):
        xf = dss.RegControls.Transformer().lower()
        wdg = dss.RegControls.TapWinding()
        dss.Transformers.Name(xf)
        dss.Transformers.Wdg(wdg)
        step = (dss.Transformers.MaxTap() - dss.Transformers.MinTap()) / dss.Transformers.NumTaps()
        if not math.isclose(100 * step, TAP_STEP_PERCENT) or not math.isclose(
            dss.Transformers.MaxTap(), 1 + TAP_MAX * step
        ):
            raise CaseError(f"regulator {xf}: tap range is not ±10 % in 32 steps")
        tap = dss.Transformers.Tap()
        dss.Circuit.SetActiveElement(f"Transformer.{xf}")
        buses = dss.CktElement.BusNames()
        regs.append(
            {
                "transformer": xf,
                "winding": wdg,
                "bank": re.sub(r"[abc]$", "", xf),
                "hv_bus": _bus_of(buses[0]),
                "lv_bus": _bus_of(buses[1]),
                "phases": "".join(
                    _PHASE_LETTERS[int(n)] for n in buses[1].split(".")[1:] if n in ("1", "2", "3")
                )
                or "abc",
                "tap_pos": round((tap - 1.0) / step),
                "step": step,
            }
        )
    data["regs"] = regs

    # transformers (the regulators' and any other)
    xfs: dict[str, dict] = {}
    for _ in _each(dss.Transformers):
        name = dss.Transformers.Name().lower()
        dss.Circuit.SetActiveElement(f"Transformer.{name}")
        buses = [_bus_of(b) for b in dss.CktElement.BusNames()]
        wdgs = []
        for w in range(1, dss.Transformers.NumWindings() + 1):
            dss.Transformers.Wdg(w)
            wdgs.append(
                {
                    "kv": dss.Transformers.kV(),
                    "kva": dss.Transformers.kVA(),
                    "r_percent": dss.Transformers.R(),
                    "conn": "delta" if dss.Transformers.IsDelta() else "wye",
                }
            )
        xfs[name] = {
            "buses": buses,
            "phases": dss.CktElement.NumPhases(),
            "xhl_percent": dss.Transformers.Xhl(),
            "windings": wdgs,
        }
    data["transformers"] = xfs

    lines = []
    for _ in _each(dss.Lines):
        n = dss.Lines.Phases()
        km = _UNIT_KM[dss.Lines.Units()] * dss.Lines.Length()
        z1 = _positive_sequence(dss.Lines.RMatrix(), n) + 1j * _positive_sequence(
            dss.Lines.XMatrix(), n
        )
        c1 = _positive_sequence(dss.Lines.CMatrix(), n)
        per_unit_km = _UNIT_KM[dss.Lines.Units()]
        lines.append(
            {
                "name": dss.Lines.Name().lower(),
                "bus1": _bus_of(dss.Lines.Bus1()),
                "bus2": _bus_of(dss.Lines.Bus2()),
                "phases": n,
                "length_km": km,
                "r_ohm_per_km": float(np.real(z1)) / per_unit_km,
                "x_ohm_per_km": float(np.imag(z1)) / per_unit_km,
                "c_nf_per_km": float(np.real(c1)) / per_unit_km,
                "max_i_ka": dss.Lines.NormAmps() / 1e3,
                "linecode": dss.Lines.LineCode().lower(),
                "switch": bool(dss.Lines.IsSwitch()),
                "closed": not (dss.CktElement.IsOpen(1, 0) or dss.CktElement.IsOpen(2, 0)),
                "enabled": bool(dss.CktElement.Enabled()),
            }
        )
    data["lines"] = lines

    loads = []
    for _ in _each(dss.Loads):
        dss.Circuit.SetActiveElement(f"Load.{dss.Loads.Name()}")
        loads.append(
            {
                "name": dss.Loads.Name().lower(),
                "bus": _bus_of(dss.CktElement.BusNames()[0]),
                "kw": dss.Loads.kW(),
                "kvar": dss.Loads.kvar(),
                "model": dss.Loads.Model(),
                "enabled": bool(dss.CktElement.Enabled()),
            }
        )
    data["loads"] = loads

    caps = []
    for _ in _each(dss.Capacitors):
        dss.Circuit.SetActiveElement(f"Capacitor.{dss.Capacitors.Name()}")
        nph = dss.CktElement.NumPhases()
        kv = dss.Capacitors.kV()  # line-to-line for 2-3 phases, line-to-neutral for 1 phase
        caps.append(
            {
                "name": dss.Capacitors.Name().lower(),
                "bus": _bus_of(dss.CktElement.BusNames()[0]),
                "kvar": dss.Capacitors.kvar()
                * sum(dss.Capacitors.States())
                / len(dss.Capacitors.States()),
                "kv_ll": kv if nph > 1 else kv * math.sqrt(3),
                "enabled": bool(dss.CktElement.Enabled()),
            }
        )
    data["capacitors"] = caps

    dss.Vsources.First()
    dss.Circuit.SetActiveElement(f"Vsource.{dss.Vsources.Name()}")
    data["source"] = {"bus": _bus_of(dss.CktElement.BusNames()[0]), "vm_pu": dss.Vsources.PU()}

    # The reference: the regulators frozen at the taps their controls settled on (RegControls
    # off, same taps, so the same solution), then every phase of a bank at the balanced tap.
    dss.Command("Set ControlMode=Off")
    dss.Solution.Solve()
    if not dss.Solution.Converged():
        raise CaseError("OpenDSS does not converge with the regulators frozen")
    data["vm_settled"] = _bus_voltages(dss)
    drift = max(
        abs(data["vm_settled"][b]["avg"] - v["avg"]) for b, v in data["vm_regcontrol"].items()
    )
    if drift > 1e-4:  # OpenDSS solution tolerance
        raise CaseError(f"freezing the regulators moved the OpenDSS solution by {drift:.2e} pu")
    data["losses_kw_settled"] = dss.Circuit.Losses()[0] / 1e3

    taps = _choose_taps(regs)
    for r in regs:
        tap = 1.0 + taps[r["bank"]] * r["step"]
        dss.Command(f"Transformer.{r['transformer']}.Wdg={r['winding']}")
        dss.Command(f"Transformer.{r['transformer']}.Tap={tap:.10f}")
    dss.Solution.Solve()
    if not dss.Solution.Converged():
        raise CaseError("OpenDSS does not converge with the regulators at the balanced taps")
    for r in regs:  # make sure the taps really are the chosen ones
        dss.Transformers.Name(r["transformer"])
        dss.Transformers.Wdg(r["winding"])
        if round((dss.Transformers.Tap() - 1) / r["step"]) != taps[r["bank"]]:
            raise CaseError(f"could not set the tap of {r['transformer']}")
    data["vm_equal"] = _bus_voltages(dss)
    data["losses_kw_equal"] = dss.Circuit.Losses()[0] / 1e3
    data["taps"] = taps
    return data


def _choose_taps(regs: list[dict]) -> dict[str, int]:
    """Phase-averaged settled tap of each bank, rounded to the nearest step (half away from 0)."""
    by_bank: dict[str, list[int]] = {}
    for r in regs:
        by_bank.setdefault(r["bank"], []).append(r["tap_pos"])
    out = {}
    for bank, taps in by_bank.items():
        avg = sum(taps) / len(taps)
        out[bank] = int(math.copysign(math.floor(abs(avg) + 0.5), avg))
    return out


# --------------------------------------------------------------------------------------------
# pandapower side
# --------------------------------------------------------------------------------------------


def _read_coords(src_dir: Path) -> dict[str, tuple[float, float]]:
    path = src_dir / COORDS_FILE
    coords: dict[str, tuple[float, float]] = {}
    if not path.is_file():
        return coords
    for line in path.read_text().splitlines():
        parts = line.replace(",", " ").split()
        if len(parts) >= 3:
            coords[parts[0].lower()] = (float(parts[1]), float(parts[2]))
    return coords


# length: a straight-line build of the pandapower net, element class by element class
def _build_net(data: dict, coords: dict[str, tuple[float, float]]) -> pp.pandapowerNet:
    net = pp.create_empty_network(name="ieee123", f_hz=60.0)
    vm = data["vm_settled"]

    # dummy buses behind the normally open ties: dropped, the tie goes to the real bus
    open_stub = {
        name: name[: -len(_OPEN_SUFFIX)]
        for name in vm
        if name.endswith(_OPEN_SUFFIX) and name[: -len(_OPEN_SUFFIX)] in vm
    }
    # a transformer without a RegControl whose secondary bus feeds nothing (xfm1 → 610, no load):
    # dropped with that bus. Any other one becomes a plain trafo (none in this feeder).
    regulated = {r["transformer"] for r in data["regs"]}
    used = (
        {ln["bus1"] for ln in data["lines"]}
        | {ln["bus2"] for ln in data["lines"]}
        | {ld["bus"] for ld in data["loads"]}
        | {cap["bus"] for cap in data["capacitors"]}
    )
    dead_xf = {
        name: xf["buses"][1]
        for name, xf in data["transformers"].items()
        if name not in regulated
        and xf["buses"][1] not in used
        and sum(xf["buses"][1] in x["buses"] for x in data["transformers"].values()) == 1
    }
    dropped = set(open_stub) | set(dead_xf.values())
    bus_idx: dict[str, int] = {}
    for name, v in vm.items():
        if name in dropped:
            continue
        bus_idx[name] = pp.create_bus(
            net,
            vn_kv=round(v["kv_base_ln"] * math.sqrt(3), 6),
            name=name,
            geodata=coords.get(name),
            phases=v["phases"],
        )

    src = data["source"]
    pp.create_ext_grid(net, bus_idx[src["bus"]], vm_pu=src["vm_pu"], va_degree=0.0, name="source")

    for ln in data["lines"]:
        if not ln["enabled"]:
            continue
        b1, b2 = ln["bus1"], ln["bus2"]
        if ln["switch"]:
            closed = ln["closed"]
            if b2 in open_stub or b1 in open_stub:  # a normally open tie
                b1, b2 = open_stub.get(b1, b1), open_stub.get(b2, b2)
                closed = False
            pp.create_switch(
                net, bus_idx[b1], bus_idx[b2], et="b", closed=closed, type="LBS", name=ln["name"]
            )
            continue
        if not ln["closed"]:
            raise CaseError(f"line {ln['name']} is open in OpenDSS; not supported")
        pp.create_line_from_parameters(
            net,
            bus_idx[b1],
            bus_idx[b2],
            length_km=ln["length_km"],
            r_ohm_per_km=ln["r_ohm_per_km"],
            x_ohm_per_km=ln["x_ohm_per_km"],
            c_nf_per_km=ln["c_nf_per_km"],
            max_i_ka=ln["max_i_ka"],
            name=ln["name"],
            linecode=ln["linecode"],
            phases=int(ln["phases"]),
        )
    net.line["phases"] = net.line["phases"].astype(int)

    # regulators: one three-phase trafo per bank
    banks: dict[str, list[dict]] = {}
    for r in data["regs"]:
        banks.setdefault(r["bank"], []).append(r)
    for bank, units in banks.items():
        xf = data["transformers"][units[0]["transformer"]]
        if {(u["hv_bus"], u["lv_bus"]) for u in units} != {
            (units[0]["hv_bus"], units[0]["lv_bus"])
        }:
            raise CaseError(f"regulator bank {bank} spans more than one pair of buses")
        w1, w2 = xf["windings"]
        # single-phase units: the three-phase rating of the balanced bank is 3 × the unit's
        sn_mva = w1["kva"] / 1e3 * (3 if xf["phases"] == 1 else 1)
        vkr = w1["r_percent"] + w2["r_percent"]
        hv, lv = bus_idx[units[0]["hv_bus"]], bus_idx[units[0]["lv_bus"]]
        vk = math.hypot(vkr, xf["xhl_percent"])
        if units[0]["hv_bus"] != src["bus"]:  # mid-feeder: see REG_VK_PERCENT
            vk = max(vk, REG_VK_PERCENT)
        pp.create_transformer_from_parameters(
            net,
            hv_bus=hv,
            lv_bus=lv,
            sn_mva=sn_mva,
            vn_hv_kv=net.bus.at[hv, "vn_kv"],
            vn_lv_kv=net.bus.at[lv, "vn_kv"],
            vkr_percent=vkr,
            vk_percent=vk,
            pfe_kw=0.0,
            i0_percent=0.0,
            shift_degree=0.0,
            tap_side="lv" if units[0]["winding"] == 2 else "hv",
            tap_neutral=TAP_NEUTRAL,
            tap_min=TAP_MIN,
            tap_max=TAP_MAX,
            tap_step_percent=TAP_STEP_PERCENT,
            tap_step_degree=0.0,
            tap_pos=data["taps"][bank],
            tap_changer_type="Ratio",
            vector_group="Yy0",
            oltc=True,
            name=bank,
        )

    for name, xf in data["transformers"].items():
        if name in regulated or name in dead_xf:
            continue
        if len(xf["windings"]) != 2:
            raise CaseError(f"transformer {name}: only two-winding transformers are supported")
        w1, w2 = xf["windings"]
        vkr = w1["r_percent"] + w2["r_percent"]
        hv, lv = bus_idx[xf["buses"][0]], bus_idx[xf["buses"][1]]
        vg = ("D" if w1["conn"] == "delta" else "Y") + ("d" if w2["conn"] == "delta" else "y")
        pp.create_transformer_from_parameters(
            net,
            hv_bus=hv,
            lv_bus=lv,
            sn_mva=w1["kva"] / 1e3,
            vn_hv_kv=w1["kv"] if xf["phases"] > 1 else w1["kv"] * math.sqrt(3),
            vn_lv_kv=w2["kv"] if xf["phases"] > 1 else w2["kv"] * math.sqrt(3),
            vkr_percent=vkr,
            vk_percent=math.hypot(vkr, xf["xhl_percent"]),
            pfe_kw=0.0,
            i0_percent=0.0,
            shift_degree=0.0,
            vector_group=f"{vg}0",
            name=name,
        )

    # loads: summed per bus, constant power at rated kW/kvar
    per_bus: dict[str, list[dict]] = {}
    for ld in data["loads"]:
        if ld["enabled"]:
            per_bus.setdefault(ld["bus"], []).append(ld)
    for bus in sorted(per_bus, key=lambda b: bus_idx[b]):
        lds = per_bus[bus]
        pp.create_load(
            net,
            bus_idx[bus],
            p_mw=round(sum(ld["kw"] for ld in lds) / 1e3, 9),
            q_mvar=round(sum(ld["kvar"] for ld in lds) / 1e3, 9),
            name="+".join(ld["name"] for ld in lds),
        )

    for cap in data["capacitors"]:
        if not cap["enabled"]:
            continue
        pp.create_shunt(
            net,
            bus_idx[cap["bus"]],
            q_mvar=-cap["kvar"] / 1e3,
            p_mw=0.0,
            vn_kv=round(cap["kv_ll"], 6),
            name=cap["name"],
        )
    return net


def convert(src_dir: str | Path) -> tuple[pp.pandapowerNet, ConversionReport]:
    """Build the balanced ieee123 pandapower net from the OpenDSS files in ``src_dir``.

    Returns the net (power flow already run) and the report comparing it with OpenDSS.
    """
    src_dir = Path(src_dir)
    data = _read_opendss(src_dir)
    net = _build_net(data, _read_coords(src_dir))
    try:
        pp.runpp(net, lightsim2grid=False)
    except pp.LoadflowNotConverged as exc:
        raise CaseError("ieee123: the converted net's power flow does not converge") from exc

    names = list(net.bus["name"])
    ref, equal = data["vm_settled"], data["vm_equal"]
    vm = pd.DataFrame(
        {
            "phases": [ref[b]["phases"] for b in names],
            "vm_pu_opendss": [ref[b]["avg"] for b in names],
            "vm_pu_opendss_pos_seq": [ref[b]["pos_seq"] for b in names],
            **{f"vm_{p}_pu": [ref[b]["per_phase"].get(p, math.nan) for b in names] for p in "abc"},
            "vm_pu_opendss_equal_taps": [equal[b]["avg"] for b in names],
            "vm_pu_pandapower": net.res_bus.vm_pu.to_numpy(),
        },
        index=pd.Index(names, name="bus"),
    )
    vm["dvm_pu"] = vm["vm_pu_pandapower"] - vm["vm_pu_opendss"]
    three = vm["phases"] == "abc"
    dev = vm["dvm_pu"].abs()
    dev_pos = (vm["vm_pu_pandapower"] - vm["vm_pu_opendss_pos_seq"]).abs()
    dev_equal = (vm["vm_pu_pandapower"] - vm["vm_pu_opendss_equal_taps"]).abs()

    rows: dict[str, dict] = {}
    for r in data["regs"]:
        row = rows.setdefault(r["bank"], {"hv_bus": r["hv_bus"], "lv_bus": r["lv_bus"]})
        for p in r["phases"]:
            row[f"tap_{p}_opendss"] = r["tap_pos"]
    taps = pd.DataFrame.from_dict(rows, orient="index").astype({"hv_bus": str, "lv_bus": str})
    taps = taps.astype({c: "Int64" for c in taps.columns if c.startswith("tap_")})
    taps["tap_pos"] = pd.Series(data["taps"])
    taps.index.name = "regulator"

    report = ConversionReport(
        vm=vm,
        taps=taps,
        max_deviation_pu=float(dev.max()),
        worst_bus=str(dev.idxmax()),
        max_deviation_three_phase_pu=float(dev[three].max()),
        max_deviation_pos_seq_pu=float(dev_pos.max()),
        max_deviation_equal_taps_pu=float(dev_equal.max()),
        worst_bus_equal_taps=str(dev_equal.idxmax()),
        max_deviation_equal_taps_three_phase_pu=float(dev_equal[three].max()),
        losses_kw=float(1e3 * (net.res_line.pl_mw.sum() + net.res_trafo.pl_mw.sum())),
        losses_kw_opendss=float(data["losses_kw_settled"]),
        min_vm_pu=float(net.res_bus.vm_pu.min()),
        total_load_mw=float(net.load.p_mw.sum()),
        notes=[
            "loads: constant-Z and constant-I loads converted to constant power at rated kW/kvar",
            "reference: OpenDSS phase-averaged |V|, regulators frozen at their settled taps",
        ],
    )
    return net, report


def main(argv: list[str] | None = None) -> int:
    """Convert the feeder in SRC_DIR and write the net and the OpenDSS reference voltages to
    OUT_DIR; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m clustersim.sim.data.convert_ieee123", description=__doc__.splitlines()[0]
    )
    parser.add_argument("src_dir", help="folder with the OpenDSS files of the feeder")
    parser.add_argument("out_dir", nargs="?", default=str(DEFAULT_OUT_DIR))
    args = parser.parse_args(argv)
    try:
        net, report = convert(args.src_dir)
    except CaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clear_result_tables(net)  # ship inputs only
    net.converged = False
    write_text(out / JSON_NAME, pp.to_json(net))
    write_text(out / CSV_NAME, report.vm.to_csv(float_format="%.8f", lineterminator="\n"))
    print(report.summary())
    print(f"wrote {out / JSON_NAME} and {out / CSV_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
