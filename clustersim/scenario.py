"""Scenario files: schema, loading, ``--set`` overrides and the resolved form.

A scenario is a TOML file with one table per pipeline stage. Every
table is a pydantic model that forbids unknown keys, so a typo ends in one line naming the file
and the key. Built-in scenarios live in the ``clustersim.scenarios`` data package and are
addressed by name (``ieee33-ev-none``).
"""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clustersim.agents.control import Mode
from clustersim.agents.local import LocalSettings
from clustersim.broker.channel import ChannelSettings
from clustersim.catalog import CASE_DESCRIPTIONS, builtin_scenarios, preset_names, scenarios_dir
from clustersim.errors import ScenarioError
from clustersim.sim.resources import parse_resources

__all__ = [
    "DEFAULT_SCENARIO",
    "Scenario",
    "apply_overrides",
    "builtin_scenarios",
    "load_scenario",
]

DEFAULT_SCENARIO = "ieee33-ev-clustered"


def _positive(default: Any, description: str, *, le: float) -> Any:
    """A finite field above zero and at most ``le``."""
    return Field(default=default, gt=0, le=le, allow_inf_nan=False, description=description)


def _non_negative(default: Any, description: str, *, le: float) -> Any:
    """A finite field of zero or more, at most ``le``."""
    return Field(default=default, ge=0, le=le, allow_inf_nan=False, description=description)


DAY_S = 86_400.0
"""one day in seconds: the upper bound of the time settings of a control interval"""


class _Table(BaseModel):
    """A scenario table: unknown keys refused, numbers finite."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class CaseConfig(_Table):
    name: str = Field(default="ieee33", description="built-in case name or pandapower JSON path")


class ResourcesConfig(_Table):
    preset: str = Field(default="", description="built-in preset name or preset TOML path")
    pv: list[dict[str, Any]] = Field(default_factory=list)
    wind: list[dict[str, Any]] = Field(default_factory=list)
    dg: list[dict[str, Any]] = Field(default_factory=list)
    ev: list[dict[str, Any]] = Field(default_factory=list)
    exchange: list[dict[str, Any]] = Field(default_factory=list)
    ess: list[dict[str, Any]] = Field(default_factory=list)
    svc: list[dict[str, Any]] = Field(default_factory=list)
    capacitor: list[dict[str, Any]] = Field(default_factory=list)
    oltc: list[dict[str, Any]] = Field(default_factory=list)
    regulator: list[dict[str, Any]] = Field(default_factory=list)


class ProfilesConfig(_Table):
    source: Literal["synthetic", "simbench"] = Field(
        default="synthetic",
        description="load, PV, wind, EV and price profiles: synthetic or simbench",
    )
    day: int = Field(
        default=0, ge=0, le=365, description="day of the SimBench year 2016 (0-365) / start day"
    )
    simbench_code: str = Field(
        default="", description="SimBench grid whose profiles to use; default: the case's own"
    )
    load_sigma: float = Field(default=0.05, ge=0, le=1, description="load forecast error std")


class PartitionConfig(_Table):
    method: str = Field(
        default="hi", description="partition method (clustersim partition-compare lists them)"
    )
    clusters: int = Field(default=5, ge=1, le=10_000, description="number of clusters")
    min_size: int = Field(default=3, ge=1, le=100_000, description="fewest buses per cluster")
    max_size: int = Field(default=10, ge=1, le=100_000, description="most buses per cluster")

    @model_validator(mode="after")
    def _sizes(self) -> PartitionConfig:
        if self.min_size > self.max_size:
            raise ValueError("min_size is above max_size")
        return self


class ControlConfig(_Table):
    mode: Mode = Field(
        default="none",
        description="none | local | centralized | clustered | active-only | reactive-only",
    )
    interval_s: int = _positive(900, "control interval", le=DAY_S)
    optimizer: Literal["nsga2", "pymoo-nsga2", "nsga3", "moead"] = Field(
        default="nsga2", description="multi-objective optimizer of the agents"
    )
    pop_size: int = Field(default=40, ge=4, le=10_000, description="population per problem")
    generations: int = Field(
        default=40, ge=1, le=100_000, description="generations per problem, at most"
    )
    patience: int = _non_negative(
        8, "stop after this many generations without progress; 0: off", le=100_000
    )
    evaluations_per_variable: int = _non_negative(
        0,
        "cap a problem's generations at ceil(this × decision variables / pop_size), so that "
        "problems get evaluations in proportion to their size; 0: off",
        le=10_000_000,
    )
    warm_start: bool = Field(
        default=True, description="seed with the setpoints in force and the previous choice"
    )
    compromise: Literal["fuzzy", "knee", "weighted"] = "fuzzy"
    weights: list[float] = Field(
        default_factory=lambda: [1.0, 1.0, 1.0],
        min_length=3,
        max_length=3,
        description="compromise = weighted: weights of voltage deviation, losses, cost",
    )
    voltage_objective: Literal["max", "sumsq"] = "max"
    correction_gain: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="adaptive correction: share of the last measured-minus-modelled voltage "
        "added to the predictions; 0: off",
    )
    tap_operation_cost: float = _non_negative(1.0, "currency per tap step", le=1e9)
    capacitor_switching_cost: float = _non_negative(0.5, "currency per switch", le=1e9)
    storage_cost_per_mwh: float = _non_negative(5.0, "storage wear", le=1e9)
    coordination: Literal["none", "boundary", "value-table", "admm"] = Field(
        default="value-table",
        description="how cluster agents coordinate per interval: none = each decides on its "
        "measured boundary values alone; boundary = coordination_rounds exchanges of boundary "
        "voltage and tie P/Q with the neighbouring clusters, each followed by a re-optimization; "
        "value-table = coordination_rounds up/down sweeps of the cluster tree, children sending "
        "their parent their choice and its cost as a function of the boundary voltage, parents "
        "sending back the boundary voltage they will hold; admm = coordination_rounds rounds of "
        "consensus ADMM on each tie's boundary voltage and P/Q",
    )
    coordination_rounds: int = _non_negative(
        2,
        "exchanges (boundary, admm) or up/down sweeps (value-table) with the neighbouring "
        "clusters per interval",
        le=100,
    )
    table_points: int = Field(
        default=9,
        ge=2,
        le=33,
        description="coordination = value-table: boundary voltages per table",
    )
    boundary_band_pu: float = Field(
        default=0.05,
        gt=0,
        le=0.5,
        description="value-table: a table spans the measured boundary voltage ± this (p.u.) in "
        "the first sweep, half of it around the announced voltage in each further sweep; admm: "
        "a child's copy of its boundary voltage stays within the measured one ± this",
    )
    admm_rho: float = Field(
        default=10.0,
        gt=0,
        le=1e9,
        description="coordination = admm: the penalty ρ of the first interval (residual "
        "balancing adapts it, and it carries over to the next interval)",
    )
    admm_tolerance_pu: float = Field(
        default=0.001,
        gt=0,
        le=1.0,
        description="coordination = admm: an agent stops re-optimizing once the primal residual "
        "of each copy of each of its ties (voltage; P and Q as the voltage they move) is at "
        "most this (p.u.)",
    )
    round_generations: int = Field(
        default=5,
        ge=1,
        le=100_000,
        description="generations of a re-optimization in a coordination round (warm-started)",
    )
    deadline_s: float = _positive(
        60.0, "simulated time after the interval start for rounds", le=DAY_S
    )
    compute_time: Literal["fixed", "per-evaluation", "measured"] = Field(
        default="per-evaluation",
        description="simulated duration of a solve; measured = wall time (not reproducible)",
    )
    compute_fixed_s: float = _non_negative(1.0, "compute_time = fixed", le=DAY_S)
    compute_per_evaluation_s: float = _non_negative(
        0.001, "compute_time = per-evaluation: seconds per candidate", le=60.0
    )
    local: LocalSettings = Field(
        default_factory=LocalSettings,
        description="mode local (and the fallback): Volt-VAR curve, tap control with LDC",
    )

    @model_validator(mode="after")
    def _check(self) -> ControlConfig:
        if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ValueError("weights must be non-negative and not all zero")
        return self


class CommConfig(ChannelSettings):
    """``[comm]``: the transport and broker, plus the channel model of
    :mod:`clustersim.broker.channel` (``latency``, ``loss``, ``outages``, ``[[comm.links]]``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    transport: Literal["mqtt", "memory"] = Field(
        default="mqtt", description="mqtt (a real broker) or memory (in one process)"
    )
    broker: str = Field(default="", description="empty: embedded broker; else mqtt://host:port")
    clock: Literal["virtual", "realtime"] = "virtual"
    speed: float = _positive(
        60.0, "clock = realtime: simulated seconds per wall second (1 = real time)", le=1e6
    )
    run_id: str = Field(
        default="",
        pattern=r"^([A-Za-z0-9_][A-Za-z0-9_.-]{0,63})?$",
        description="topic namespace of the run; empty: <scenario name>-s<seed>",
    )
    watchdog_s: float = _positive(30.0, "wall seconds before a silent peer is a fault", le=3600.0)
    startup_timeout_s: float = _positive(
        120.0, "wall seconds the plant waits for agents to come online", le=3600.0
    )
    agent_timeout_s: float = _positive(
        1800.0, "simulated seconds without an applied setpoint before local fallback", le=DAY_S
    )
    keys: str = Field(
        default="",
        description="keys.toml of `clustersim acl` (message keys); needed with external agents",
    )
    accept_fallback: bool = Field(
        default=False,
        description="a run that lost an agent for good (its devices under local fallback to "
        "the end) exits 0; otherwise it exits non-zero after writing its results",
    )


class RunConfig(_Table):
    start_h: float = Field(
        default=0.0,
        ge=0,
        le=24 * 365,
        description="hour of the profiles' first day at which the run starts (17 = 17:00); "
        "a multiple of the plant step",
    )
    duration_h: float = Field(default=24.0, gt=0, le=24 * 366, description="simulated hours")
    plant_step_s: int = Field(
        default=60, gt=0, le=3600, description="plant (power-flow) step, s; divides 900"
    )
    seed: int = Field(default=1, ge=0, description="seed of profiles, partition and optimizers")
    agents: Literal["tasks", "processes", "external"] = Field(
        default="tasks",
        description="where agents run: tasks of this process, OS processes, or external "
        "(`clustersim agent`)",
    )
    vm_min_pu: float = Field(default=0.95, gt=0, le=2)
    vm_max_pu: float = Field(default=1.05, gt=0, le=2)

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if 900 % self.plant_step_s:
            raise ValueError("plant_step_s must divide 900 s (the profiles' 15 min resolution)")
        start_s = self.start_h * 3600
        if abs(start_s - round(start_s / self.plant_step_s) * self.plant_step_s) > 1e-6:
            raise ValueError("start_h must be a multiple of the plant step")
        if self.vm_min_pu >= self.vm_max_pu:
            raise ValueError("vm_min_pu must be below vm_max_pu")
        return self


class Scenario(_Table):
    """A fully validated scenario."""

    name: str = ""
    description: str = ""
    case: CaseConfig = Field(default_factory=CaseConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    profiles: ProfilesConfig = Field(default_factory=ProfilesConfig)
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    comm: CommConfig = Field(default_factory=CommConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    provenance: dict[str, str] = Field(
        default_factory=dict,
        description="package versions and seed, written by the runner; informational only",
    )


STARTER_KEYS: dict[str, tuple[str, ...]] = {
    "case": ("name",),
    "resources": ("preset",),
    "profiles": ("source",),
    "partition": ("method", "clusters", "min_size", "max_size"),
    "control": (
        "mode",
        "coordination",
        "coordination_rounds",
        "interval_s",
        "pop_size",
        "generations",
        "deadline_s",
    ),
    "comm": ("transport", "broker"),
    "run": ("start_h", "duration_h", "plant_step_s", "seed", "agents"),
}
"""the keys ``clustersim init`` writes, table by table (every other key keeps its default)"""


def starter_toml(name: str, values: dict[str, Any]) -> str:
    """A commented starting scenario: :data:`STARTER_KEYS` with their defaults (or ``values``,
    keyed ``table.key``) and the models' descriptions as comments."""
    fields = {t: Scenario.model_fields[t].annotation for t in STARTER_KEYS}
    lines = [
        "# A clustersim scenario. Every key is optional; the README's Scenario reference lists",
        "# them all with their defaults, and Device fields the keys of [[resources.<kind>]]",
        "# tables. Validate with `clustersim check FILE`, run with `clustersim run FILE`.",
        "",
        tomli_w.dumps({"name": name}).strip(),
        'description = ""',
    ]
    for table, keys in STARTER_KEYS.items():
        model = fields[table]
        assert isinstance(model, type) and issubclass(model, BaseModel)
        lines += ["", f"[{table}]"]
        for key in keys:
            f = model.model_fields[key]
            value = values.get(f"{table}.{key}", f.get_default(call_default_factory=True))
            if f.description:
                lines += [f"# {ln}" for ln in textwrap.wrap(f.description, 94)]
            lines.append(tomli_w.dumps({key: value}).strip())
    lines += [
        "",
        "# devices beyond the preset, e.g.:",
        "# [[resources.svc]]",
        '# name = "SVC9"',
        '# bus = "18"',
        "# q_min_mvar = -0.3",
        "# q_max_mvar = 0.3",
    ]
    return "\n".join(lines) + "\n"


def parse_value(text: str) -> Any:
    """A ``--set`` value: any TOML value (number, bool, string, array, inline table), else text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``table.key=value`` overrides (dotted paths, created as needed) to raw scenario data."""
    out = _deepcopy(data)
    for item in overrides:
        path, sep, value = item.partition("=")
        path = path.strip()
        if not sep or not path:
            raise ScenarioError(f"expected table.key=value, got {item!r}", source="--set")
        keys = path.split(".")
        node = out
        for k in keys[:-1]:
            nxt = node.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise ScenarioError("is not a table", source="--set", key=k)
            node = nxt
        node[keys[-1]] = parse_value(value.strip())
    return out


def _deepcopy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deepcopy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deepcopy(v) for v in d]
    return d


def validate_scenario(data: dict[str, Any], *, source: str) -> Scenario:
    """Validate raw scenario data; any problem is a one-line ScenarioError naming the key."""
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "literal_error":
            msg = f"{msg}, got {err.get('input')!r}"
        raise ScenarioError(msg, source=source, key=key) from None
    _check_across(scenario, source)
    return scenario


def _check_across(scenario: Scenario, source: str) -> None:
    """What the schema cannot see, refused with the file and key: a case or preset that is
    neither built in nor a file, device tables that are not valid devices, and agents in other
    processes on the in-memory transport."""
    if scenario.comm.transport == "memory" and scenario.run.agents != "tasks":
        raise ScenarioError(
            f'agents = "{scenario.run.agents}" needs transport = "mqtt" (the memory transport '
            "lives in one process)",
            source=source,
            key="run.agents",
        )
    case = scenario.case.name
    if case not in CASE_DESCRIPTIONS and not Path(case).is_file():
        raise ScenarioError(
            f"unknown case {case!r}: not a built-in ({', '.join(CASE_DESCRIPTIONS)}) nor a "
            "pandapower JSON file",
            source=source,
            key="case.name",
        )
    rc = scenario.resources
    if rc.preset and rc.preset not in preset_names() and not Path(rc.preset).is_file():
        raise ScenarioError(
            f"unknown resource preset {rc.preset!r}: not a built-in ({', '.join(preset_names())})"
            " nor a preset TOML file",
            source=source,
            key="resources.preset",
        )
    extra = {k: v for k, v in rc.model_dump().items() if k != "preset" and v}
    try:
        parse_resources(extra, source=source)
    except ScenarioError as exc:
        raise ScenarioError(exc.detail, source=source, key=f"resources.{exc.key}") from None


def read_scenario_file(name_or_path: str) -> tuple[dict[str, Any], str]:
    """Raw data and source path of a scenario given by built-in name or file path."""
    path = Path(name_or_path)
    if not path.is_file():
        builtin = scenarios_dir() / f"{name_or_path}.toml"
        if builtin.is_file():
            path = builtin
        else:
            raise ScenarioError(
                "no such scenario file or built-in scenario "
                f"(built-in: {', '.join(builtin_scenarios())})",
                source=name_or_path,
            )
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"not valid TOML ({exc})", source=str(path)) from None
    except OSError as exc:
        raise ScenarioError(f"cannot read ({exc.strerror})", source=str(path)) from None
    if not data.get("name"):
        data["name"] = path.stem
    return data, str(path)


def load_scenario(
    name_or_path: str = DEFAULT_SCENARIO,
    *,
    overrides: list[str] | None = None,
    seed: int | None = None,
) -> Scenario:
    """Load, override and validate a scenario. ``seed`` (if given) wins over the file."""
    data, source = read_scenario_file(name_or_path)
    if overrides:
        data = apply_overrides(data, overrides)
        source = f"{source} (with --set)"
    if seed is not None:
        data = apply_overrides(data, [f"run.seed={int(seed)}"])
    return validate_scenario(data, source=source)


def resolved_dict(scenario: Scenario) -> dict[str, Any]:
    """The scenario with every default filled in, ready to write as TOML (no None values)."""

    def strip_none(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: strip_none(x) for k, x in v.items() if x is not None}
        if isinstance(v, list):
            return [strip_none(x) for x in v]
        return v

    return strip_none(scenario.model_dump(mode="json"))
