"""Controllable and uncontrollable resources of a feeder, and the presets of the source papers.

Every device is a typed, validated model with units in its field names. Devices name their bus
by the case's bus label (``net.bus["name"]``, e.g. ``"16"`` on ieee51), never by a row index.
``ResourceSet.attach(net)`` places the devices into a pandapower net as the plant sees them:

========================  ==========================================================
device                    pandapower element
========================  ==========================================================
PV, wind, DG              ``sgen`` (type ``PV`` / ``WP`` / ``DG``), p from profiles
EV charging station       ``load`` (type ``ev``), p = ``ev`` profile × ``p_peak_mw``
exchange station          ``load`` (type ``exchange``) + ``storage`` (its battery)
ESS                       ``storage``
SVC                       ``sgen`` (type ``SVC``), p = 0, q controllable
capacitor bank            ``shunt`` (``q_mvar`` = −``q_step_mvar`` per step, ``step``)
OLTC at the substation    ``ext_grid.vm_pu`` = ``vm_set_pu`` + tap × ``tap_step_percent``/100
                          when the case has no substation transformer; else a ``trafo``
line regulator            ``trafo`` tap changer (``tap_pos``)
========================  ==========================================================

Presets (``sim/data/presets/*.toml``) reproduce the source papers' setups (``ieee33-ev`` and
``ieee123-ev``: [EVEC]; ``ieee51-ga``: [CVC]); each file names every device and bus and says where
the paper is silent and the bus was chosen by us. ``case1197-pv`` puts rooftop PV, home EV
charging, community batteries and medium-voltage var support on the [CASE1197] feeder, every
size ours and documented in the file.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import numpy as np
import pandapower as pp
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clustersim.catalog import DEVICE_KINDS, preset_names, presets_dir
from clustersim.errors import ScenarioError

__all__ = [
    "DG",
    "ESS",
    "KIND_MODELS",
    "OLTC",
    "PV",
    "SVC",
    "CapacitorBank",
    "Device",
    "EVStation",
    "ExchangeStation",
    "LineRegulator",
    "ResourceSet",
    "Wind",
    "fields_markdown",
    "load_preset",
    "preset_names",
    "write_setpoints",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def _need_order(self, *fields: str) -> None:
        """Raise unless the named fields are in non-decreasing order."""
        values = [getattr(self, f) for f in fields]
        if not all(a <= b for a, b in itertools.pairwise(values)):
            raise ValueError("need " + " <= ".join(fields))

    def _need_not_above(self, low: str, high: str) -> None:
        """Raise if field ``low`` is above field ``high``."""
        if getattr(self, low) > getattr(self, high):
            raise ValueError(f"{low} above {high}")


class _DeviceBase(_Model):
    name: str = Field(min_length=1, description="unique name of the device in the scenario")
    bus: str = Field(min_length=1, description="bus label (`net.bus['name']`) it connects to")


class PV(_DeviceBase):
    """PV plant with a smart inverter (P from the ``pv`` profile, Q controllable within S)."""

    kind: Literal["pv"] = "pv"
    p_mw: float = Field(gt=0, description="rated active power, MW (P = profile × p_mw)")
    s_mva: float | None = Field(
        default=None, gt=0, description="inverter rating, MVA (Q within it); default 1.1 × p_mw"
    )

    @property
    def s_rated_mva(self) -> float:
        """Inverter rating, MVA: ``s_mva``, or 1.1 × ``p_mw`` when it is not set."""
        return self.s_mva if self.s_mva is not None else 1.1 * self.p_mw


class Wind(PV):
    """Wind turbine (P from the ``wind`` profile, Q controllable within S)."""

    kind: Literal["wind"] = "wind"  # type: ignore[assignment]


class DG(_DeviceBase):
    """Dispatchable distributed generator with a linear energy cost."""

    kind: Literal["dg"] = "dg"
    p_min_mw: float = Field(ge=0, description="lowest active power setpoint, MW")
    p_max_mw: float = Field(gt=0, description="highest active power setpoint, MW")
    q_min_mvar: float = Field(default=0.0, description="lowest reactive power, Mvar (generator)")
    q_max_mvar: float = Field(default=0.0, description="highest reactive power, Mvar (generator)")
    cost_per_mwh: float = Field(ge=0, description="energy cost per MWh generated (price units)")
    p_init_mw: float | None = Field(
        default=None, description="active power at the start, MW; default p_min_mw"
    )

    @model_validator(mode="after")
    def _ranges(self) -> DG:
        if self.p_min_mw > self.p_max_mw or self.q_min_mvar > self.q_max_mvar:
            raise ValueError("min above max")
        return self


class EVStation(_DeviceBase):
    """EV charging station: an uncontrolled load following the ``ev`` profile."""

    kind: Literal["ev"] = "ev"
    p_peak_mw: float = Field(gt=0, description="peak charging demand, MW (P = ev profile × it)")
    power_factor: float = Field(
        default=0.98, gt=0, le=1, description="power factor of the demand (lagging)"
    )


class _StorageFields(_Model):
    e_mwh: float = Field(gt=0, description="energy capacity, MWh")
    p_max_mw: float = Field(gt=0, description="highest charge and discharge power, MW")
    efficiency: float = Field(
        default=0.9, gt=0, le=1, description="one-way (charge or discharge) efficiency"
    )
    soc_min: float = Field(default=0.1, ge=0, le=1, description="lowest state of charge, 0-1")
    soc_max: float = Field(default=0.9, ge=0, le=1, description="highest state of charge, 0-1")
    e_init_mwh: float | None = Field(
        default=None, ge=0, description="stored energy at the start, MWh; default mid-way"
    )

    @model_validator(mode="after")
    def _soc(self) -> Any:
        self._need_not_above("soc_min", "soc_max")
        e0 = self.initial_energy_mwh
        if not (0 <= e0 <= self.e_mwh + 1e-12):
            raise ValueError("e_init_mwh outside [0, e_mwh]")
        return self

    @property
    def initial_energy_mwh(self) -> float:
        if self.e_init_mwh is not None:
            return self.e_init_mwh
        return 0.5 * (self.soc_min + self.soc_max) * self.e_mwh


class ESS(_DeviceBase, _StorageFields):
    """Battery energy storage system (P controllable, load convention: p > 0 charges)."""

    kind: Literal["ess"] = "ess"


class ExchangeStation(_DeviceBase, _StorageFields):
    """Battery-swap (exchange) station: swap demand as a load plus its battery stock as storage."""

    kind: Literal["exchange"] = "exchange"
    p_peak_mw: float = Field(
        gt=0, description="peak swap-charging demand, MW (P = ev profile × it)"
    )
    power_factor: float = Field(
        default=0.98, gt=0, le=1, description="power factor of the demand (lagging)"
    )


class SVC(_DeviceBase):
    """Static var compensator: continuous Q in [q_min_mvar, q_max_mvar] (generator convention)."""

    kind: Literal["svc"] = "svc"
    q_min_mvar: float = Field(description="lowest reactive power, Mvar (generator convention)")
    q_max_mvar: float = Field(description="highest reactive power, Mvar (generator convention)")
    q_init_mvar: float = Field(default=0.0, description="reactive power at the start, Mvar")

    @model_validator(mode="after")
    def _ranges(self) -> SVC:
        self._need_order("q_min_mvar", "q_init_mvar", "q_max_mvar")
        return self


class CapacitorBank(_DeviceBase):
    """Switched capacitor bank: ``steps`` units of ``q_step_mvar`` each."""

    kind: Literal["capacitor"] = "capacitor"
    steps: int = Field(ge=1, description="number of steps (units)")
    q_step_mvar: float = Field(gt=0, description="reactive power per step at 1.0 p.u., Mvar")
    max_switching_per_day: int = Field(
        default=8, ge=0, description="step changes allowed per day (controllers keep to it)"
    )
    step_init: int = Field(default=0, ge=0, description="steps in service at the start")

    @model_validator(mode="after")
    def _init(self) -> CapacitorBank:
        self._need_not_above("step_init", "steps")
        return self


class _TapFields(_Model):
    tap_min: int = Field(description="lowest tap position")
    tap_max: int = Field(description="highest tap position")
    tap_step_percent: float = Field(gt=0, description="voltage change per tap step, %")
    max_operations_per_day: int = Field(
        default=8, ge=0, description="tap operations allowed per day (controllers keep to it)"
    )
    tap_init: int = Field(default=0, description="tap position at the start")

    @model_validator(mode="after")
    def _taps(self) -> Any:
        self._need_order("tap_min", "tap_init", "tap_max")
        return self


class OLTC(_DeviceBase, _TapFields):
    """On-load tap changer at the substation.

    With ``trafo`` empty the case has no substation transformer (MATPOWER feeders): the OLTC is
    modelled as the source voltage ``vm_set_pu + tap * tap_step_percent / 100`` at the slack bus.
    """

    kind: Literal["oltc"] = "oltc"
    trafo: str = Field(
        default="", description="name of its `net.trafo` row; '' = the source voltage at the slack"
    )
    vm_set_pu: float = Field(
        default=1.0, gt=0.8, lt=1.2, description="source voltage at tap 0, p.u. (trafo '' only)"
    )


class LineRegulator(_DeviceBase, _TapFields):
    """Step voltage regulator on a feeder section: a tap-changing ``trafo`` of the case."""

    kind: Literal["regulator"] = "regulator"
    trafo: str = Field(min_length=1, description="name of its `net.trafo` row")


Device = Annotated[
    PV | Wind | DG | EVStation | ExchangeStation | ESS | SVC | CapacitorBank | OLTC | LineRegulator,
    Field(discriminator="kind"),
]

KINDS = DEVICE_KINDS
KIND_MODELS: dict[str, type[_DeviceBase]] = {
    "pv": PV,
    "wind": Wind,
    "dg": DG,
    "ev": EVStation,
    "exchange": ExchangeStation,
    "ess": ESS,
    "svc": SVC,
    "capacitor": CapacitorBank,
    "oltc": OLTC,
    "regulator": LineRegulator,
}
"""the model of each device kind"""


def _bounds(metadata: list[Any]) -> str:
    """A field's numeric bounds as text (``> 0``, ``≤ 1`` …)."""
    signs = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤", "min_length": "length ≥"}
    out = []
    for m in metadata:
        for attr, sign in signs.items():
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{sign} {v}")
    return ", ".join(out)


def fields_markdown() -> str:
    """Every field of every device kind, as Markdown: one table per kind, from the models (their
    types, defaults, bounds and descriptions), for the README's device reference."""
    parts = []
    for kind in KINDS:
        model = KIND_MODELS[kind]
        doc = (model.__doc__ or "").strip().splitlines()[0].replace("``", "`")
        rows = ["| field | type | default | bounds | meaning |", "|---|---|---|---|---|"]
        fields = sorted(model.model_fields.items(), key=lambda kv: kv[0] not in ("name", "bus"))
        for name, f in fields:
            if name == "kind":
                continue
            ann = f.annotation
            typ = getattr(ann, "__name__", None) or " or ".join(
                a.__name__ for a in get_args(ann) if a is not type(None)
            )
            if type(None) in get_args(ann):
                typ += " (optional)"
            default = "required" if f.is_required() else f"`{f.default!r}`"
            meaning = (f.description or "").replace("|", "\\|")
            rows.append(f"| `{name}` | {typ} | {default} | {_bounds(f.metadata)} | {meaning} |")
        parts.append(f"**`[[resources.{kind}]]`** — {doc}\n\n" + "\n".join(rows))
    return "\n\n".join(parts) + "\n"


class ResourceSet(_Model):
    """The devices of one scenario, with the case they were written for."""

    name: str = "custom"
    case: str | None = None
    description: str = ""
    devices: list[Device] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> ResourceSet:
        names = [d.name for d in self.devices]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate device names: {', '.join(dup)}")
        return self

    def of_kind(self, *kinds: str) -> list[Any]:
        """Devices whose ``kind`` is one of ``kinds``, in file order."""
        return [d for d in self.devices if d.kind in kinds]

    def counts(self) -> dict[str, int]:
        """Number of devices per kind."""
        out: dict[str, int] = {}
        for d in self.devices:
            out[d.kind] = out.get(d.kind, 0) + 1
        return out

    # length: one branch per device kind, each a few pandapower create_* calls
    def attach(self, net: pp.pandapowerNet) -> dict[str, tuple[str, int]]:
        """Create the devices in ``net`` (in place); return device name → (table, row).

        Exchange stations map to their load row; their battery row is ``"<name>:battery"``.
        Raises ScenarioError when a bus label or transformer name is not in the net.
        """
        by_label = bus_lookup(net)
        where: dict[str, tuple[str, int]] = {}

        def bus(d: Any) -> int:
            try:
                return by_label[d.bus]
            except KeyError:
                raise ScenarioError(
                    f"device {d.name!r}: bus {d.bus!r} is not a bus of case {net.name!r}"
                ) from None

        def sgen(d: Any, sgen_type: str, p_mw: float, q_mvar: float, **extra: Any) -> None:
            idx = pp.create_sgen(
                net, bus(d), p_mw=p_mw, q_mvar=q_mvar, name=d.name, type=sgen_type, **extra
            )
            where[d.name] = ("sgen", idx)

        for d in self.devices:
            if isinstance(d, PV):  # Wind derives from PV
                sgen_type = "WP" if d.kind == "wind" else "PV"
                sgen(d, sgen_type, 0.0, 0.0, sn_mva=d.s_rated_mva)
            elif isinstance(d, DG):
                p0 = d.p_init_mw if d.p_init_mw is not None else d.p_min_mw
                sgen(d, "DG", p0, 0.0, max_p_mw=d.p_max_mw, min_p_mw=d.p_min_mw, controllable=True)
            elif isinstance(d, EVStation | ExchangeStation):
                q = d.p_peak_mw * math.tan(math.acos(d.power_factor))
                idx = pp.create_load(
                    net,
                    bus(d),
                    p_mw=d.p_peak_mw,
                    q_mvar=q,
                    name=d.name,
                    type=d.kind,
                )
                where[d.name] = ("load", idx)
                if isinstance(d, ExchangeStation):
                    sidx = _create_storage(net, bus(d), d, f"{d.name}:battery")
                    where[f"{d.name}:battery"] = ("storage", sidx)
            elif isinstance(d, ESS):
                where[d.name] = ("storage", _create_storage(net, bus(d), d, d.name))
            elif isinstance(d, SVC):
                lo, hi = d.q_min_mvar, d.q_max_mvar
                sgen(d, "SVC", 0.0, d.q_init_mvar, max_q_mvar=hi, min_q_mvar=lo, controllable=True)
            elif isinstance(d, CapacitorBank):
                idx = pp.create_shunt(
                    net,
                    bus(d),
                    q_mvar=-d.q_step_mvar,
                    p_mw=0.0,
                    step=d.step_init,
                    max_step=d.steps,
                    name=d.name,
                )
                where[d.name] = ("shunt", idx)
            elif isinstance(d, OLTC | LineRegulator):
                if d.trafo:
                    hits = net.trafo.index[net.trafo["name"].astype(str) == d.trafo]
                    if len(hits) != 1:
                        raise ScenarioError(
                            f"device {d.name!r}: transformer {d.trafo!r} is not in case "
                            f"{net.name!r}"
                        )
                    t = int(hits[0])
                    net.trafo.loc[t, ["tap_min", "tap_max", "tap_pos", "tap_neutral"]] = [
                        d.tap_min,
                        d.tap_max,
                        d.tap_init,
                        0,
                    ]
                    net.trafo.loc[t, "tap_step_percent"] = d.tap_step_percent
                    net.trafo.loc[t, "tap_changer_type"] = "Ratio"
                    where[d.name] = ("trafo", t)
                else:
                    eg = net.ext_grid.index[net.ext_grid.bus == bus(d)]
                    if len(eg) != 1:
                        raise ScenarioError(
                            f"device {d.name!r}: an OLTC without 'trafo' must sit at the slack "
                            f"bus; {d.bus!r} is not the slack of case {net.name!r}"
                        )
                    e = int(eg[0])
                    assert isinstance(d, OLTC)  # a LineRegulator always names its trafo
                    net.ext_grid.loc[e, "vm_pu"] = oltc_vm_pu(d, d.tap_init)
                    where[d.name] = ("ext_grid", e)
        return where


def oltc_vm_pu(d: OLTC, tap: float) -> float:
    """Source voltage of a slack-bus OLTC at tap position ``tap``."""
    return float(d.vm_set_pu + tap * d.tap_step_percent / 100.0)


def write_setpoints(
    net: pp.pandapowerNet,
    where: Mapping[str, tuple[str, int]],
    devices: Mapping[str, Any],
    setpoints: Mapping[str, Mapping[str, float]],
) -> None:
    """Write setpoints as given (no device limits) into the input tables of a net the devices
    are attached to: ``where`` from :meth:`ResourceSet.attach`, ``devices`` by name."""
    for name, sp in setpoints.items():
        table, row = where[name]
        if table == "sgen":
            for k, v in sp.items():
                net.sgen.at[row, k] = v
        elif table == "storage":
            net.storage.at[row, "p_mw"] = sp["p_mw"]
        elif table == "shunt":
            net.shunt.at[row, "step"] = int(sp["step"])
        elif table == "ext_grid":
            net.ext_grid.at[row, "vm_pu"] = oltc_vm_pu(devices[name], sp["tap_pos"])
        elif table == "trafo":
            net.trafo.at[row, "tap_pos"] = int(sp["tap_pos"])


def _create_storage(net: pp.pandapowerNet, bus: int, d: _StorageFields, name: str) -> int:
    soc = 100.0 * d.initial_energy_mwh / d.e_mwh
    return int(
        pp.create_storage(
            net,
            bus,
            p_mw=0.0,
            max_e_mwh=d.e_mwh,
            q_mvar=0.0,
            sn_mva=d.p_max_mw,
            name=name,
            soc_percent=soc,
            min_e_mwh=d.soc_min * d.e_mwh,
            max_p_mw=d.p_max_mw,
            min_p_mw=-d.p_max_mw,
            controllable=True,
        )
    )


def bus_lookup(net: pp.pandapowerNet) -> dict[str, int]:
    """Bus label → bus index (row indices as labels when a case has no unique labels)."""
    labels = net.bus["name"].astype(str)
    if labels.duplicated().any():
        # fall back to row indices when a user case has no unique labels
        return {str(i): int(i) for i in net.bus.index}
    return {str(lbl): int(i) for lbl, i in zip(labels, net.bus.index, strict=True)}


def parse_resources(data: dict[str, Any], *, source: str) -> ResourceSet:
    """Build a ResourceSet from TOML data: one array of tables per kind (``[[pv]]``, ...)."""
    data = dict(data)
    devices: list[dict[str, Any]] = []
    for kind in KINDS:
        for entry in data.pop(kind, []):
            if not isinstance(entry, dict):
                raise ScenarioError(f"[[{kind}]] entries must be tables", source=source, key=kind)
            devices.append({"kind": kind, **entry})
    try:
        return ResourceSet.model_validate({**data, "devices": devices})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = list(err["loc"])
        key = ".".join(str(p) for p in loc)
        if loc and loc[0] == "devices" and len(loc) > 1 and isinstance(loc[1], int):
            dev = devices[loc[1]]
            key = ".".join([dev["kind"], str(dev.get("name", loc[1])), *map(str, loc[3:])])
        raise ScenarioError(err["msg"], source=source, key=key) from None


def load_preset(name_or_path: str) -> ResourceSet:
    """Load a shipped preset by name (``ieee33-ev``) or a preset TOML file by path."""
    path = Path(name_or_path)
    if not path.is_file():
        path = presets_dir() / f"{name_or_path}.toml"
        if not path.is_file():
            raise ScenarioError(
                f"unknown resource preset {name_or_path!r} (built-in: {', '.join(preset_names())})"
            )
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"not valid TOML ({exc})", source=str(path)) from None
    return parse_resources(data, source=str(path))


def penetration(resources: ResourceSet, peak_load_mw: float) -> float:
    """PV + wind rated power over peak load (the 'penetration' of the source papers)."""
    cap = sum(d.p_mw for d in resources.of_kind("pv", "wind"))
    return float(np.divide(cap, peak_load_mw))
