"""A validated scenario turned into the objects of a run: resources, profiles, the plant, the
partition and its clusters, the controllers' and agents' settings, the run id.

Every seed comes from :mod:`clustersim.assemble.seeds` (profiles, partition, control and channel
model each get their own stage seed of ``run.seed``), so the plant node, every agent process and
``clustersim partition`` build identical objects from the same scenario.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from clustersim.agents.control import CLUSTER_MODES, ControlSettings
from clustersim.agents.node import AgentSettings, ComputeModel, Tie, find_ties
from clustersim.agents.problem import CostSettings
from clustersim.assemble.seeds import Stage, stage_seed
from clustersim.errors import CaseError, PartitionError, ScenarioError
from clustersim.fileio import safe_label
from clustersim.partition.context import build_context
from clustersim.partition.core import Partition, PartitionContext
from clustersim.partition.methods import run_partition
from clustersim.scenario import Scenario
from clustersim.sim import cases, profiles, resources
from clustersim.sim.plant import Plant

__all__ = [
    "SIMBENCH_CODES",
    "agent_names",
    "agent_settings",
    "build_plant",
    "build_profiles",
    "clock_speed",
    "clusters_of",
    "control_settings",
    "package_versions",
    "resource_set",
    "run_id_for",
    "run_id_of",
    "scenario_clusters",
    "scenario_net",
    "scenario_partition",
    "scenario_ties",
]

SIMBENCH_CODES = {
    "simbench-mv-rural": "1-MV-rural--0-sw",
    "simbench-mv-semiurb": "1-MV-semiurb--0-sw",
}
"""the SimBench grid whose profiles a SimBench case uses by default"""
_VERSIONED = (
    "clustersim",
    "pandapower",
    "numpy",
    "pandas",
    "scipy",
    "pymoo",
    "simbench",
    "networkx",
    "lightsim2grid",
)


def package_versions() -> dict[str, str]:
    """Installed versions of clustersim and the packages its numbers depend on."""
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def resource_set(scenario: Scenario) -> resources.ResourceSet:
    """The scenario's devices: its preset plus any explicit device tables."""
    rc = scenario.resources
    base = resources.load_preset(rc.preset) if rc.preset else resources.ResourceSet()
    extra = {k: v for k, v in rc.model_dump().items() if k != "preset" and v}
    if not extra:
        return base
    added = resources.parse_resources(extra, source="[resources]")
    try:
        return resources.ResourceSet(
            name=base.name,
            case=base.case,
            description=base.description,
            devices=[*base.devices, *added.devices],
        )
    except ValueError as exc:
        raise ScenarioError(str(exc).splitlines()[-1].strip(), key="resources") from None


def build_profiles(scenario: Scenario) -> profiles.Profiles:
    """The scenario's profiles (whole days covering ``start_h`` plus the horizon), seeded by the
    profiles stage."""
    pc = scenario.profiles
    seed = stage_seed(scenario.run.seed, Stage.PROFILES)
    days = max(1, math.ceil((scenario.run.start_h + scenario.run.duration_h) / 24.0))
    if pc.source == "synthetic":
        return profiles.synthetic(days, seed=seed, load_sigma=pc.load_sigma, start_day=pc.day)
    code = pc.simbench_code or SIMBENCH_CODES.get(scenario.case.name, "1-MV-rural--0-sw")
    return profiles.from_simbench(code, day=pc.day, days=days, seed=seed, load_sigma=pc.load_sigma)


def scenario_net(scenario: Scenario) -> Any:
    """The scenario's grid case as a fresh pandapower net, refused (``ScenarioError`` on
    ``case.name``) unless every in-service bus is fed from the ext_grid over a radial operating
    topology (:func:`clustersim.sim.cases.check_topology`)."""
    net = cases.load_case(scenario.case.name)
    try:
        cases.check_topology(net, scenario.case.name)
    except CaseError as exc:
        raise ScenarioError(str(exc), key="case.name") from None
    return net


def build_plant(scenario: Scenario) -> Plant:
    """Case + resources + profiles → a plant ready to run the scenario's horizon."""
    net = scenario_net(scenario)
    res = resource_set(scenario)
    if res.case and res.case != scenario.case.name:
        raise ScenarioError(
            f"preset {res.name!r} is written for case {res.case!r}, not {scenario.case.name!r}",
            key="resources.preset",
        )
    prof = build_profiles(scenario)
    n_steps = round(scenario.run.duration_h * 3600 / scenario.run.plant_step_s)
    if n_steps < 1:
        raise ScenarioError("shorter than one plant step", key="run.duration_h")
    step_s = scenario.run.plant_step_s
    return Plant(
        net,
        res,
        prof,
        plant_step_s=step_s,
        n_steps=n_steps,
        start_step=round(scenario.run.start_h * 3600 / step_s),
    )


def scenario_partition(scenario: Scenario) -> tuple[Partition, PartitionContext]:
    """The partition the scenario's ``[partition]`` table asks for, on the scenario's own case,
    resources, profiles and channel model. Returns ``(partition, context)``."""
    ctx = build_context(
        scenario_net(scenario),
        resource_set(scenario),
        build_profiles(scenario),
        comm=scenario.comm,
        name=scenario.case.name,
    )
    pc = scenario.partition
    part = run_partition(
        ctx,
        pc.method,
        pc.clusters,
        seed=stage_seed(scenario.run.seed, Stage.PARTITION),
        min_size=pc.min_size,
        max_size=pc.max_size,
    )
    return part, ctx


def clusters_of(part: Partition, ctx: PartitionContext, mode: str) -> dict[str, list[int]]:
    """The agents' clusters ``C1..Ck`` (name → bus indices) of a partition; a cluster mode needs
    every cluster connected."""
    if not part.constraints["connected"]:
        raise ScenarioError(
            f"partition {part.method!r} gives a disconnected cluster; mode {mode!r} needs "
            "connected clusters (choose another [partition] method)",
            key="partition.method",
        )
    return {f"C{c + 1}": [ctx.buses[i] for i in nodes] for c, nodes in enumerate(part.clusters())}


def scenario_clusters(scenario: Scenario) -> dict[str, list[int]]:
    """The clusters (name → bus indices) the scenario's partition gives its agents."""
    try:
        part, ctx = scenario_partition(scenario)
    except PartitionError as exc:
        raise ScenarioError(str(exc), key="partition") from None
    return clusters_of(part, ctx, scenario.control.mode)


def agent_names(scenario: Scenario) -> list[str]:
    """The scenario's agents: its clusters' names, ``central``, or none (modes without agents)."""
    if scenario.control.mode in CLUSTER_MODES:
        return list(scenario_clusters(scenario))
    if scenario.control.mode == "centralized":
        return ["central"]
    return []


def scenario_ties(
    plant: Plant, mode: str, clusters: Mapping[str, Sequence[int]] | None
) -> list[Tie]:
    """The tie branches between the clusters (none for the central agent)."""
    if mode == "centralized" or not clusters:
        return []
    return find_ties(plant.net, clusters)


def control_settings(scenario: Scenario) -> ControlSettings:
    """The agents' view of the scenario's ``[control]`` and ``[run]`` tables."""
    c = scenario.control
    return ControlSettings(
        interval_s=c.interval_s,
        optimizer=c.optimizer,
        pop_size=c.pop_size,
        generations=c.generations,
        patience=c.patience,
        evaluations_per_variable=c.evaluations_per_variable,
        compromise=c.compromise,
        weights=(c.weights[0], c.weights[1], c.weights[2]),
        voltage_objective=c.voltage_objective,
        correction_gain=c.correction_gain,
        warm_start=c.warm_start,
        vm_min_pu=scenario.run.vm_min_pu,
        vm_max_pu=scenario.run.vm_max_pu,
        costs=CostSettings(
            tap_operation=c.tap_operation_cost,
            capacitor_switching=c.capacitor_switching_cost,
            storage_per_mwh=c.storage_cost_per_mwh,
        ),
    )


def clock_speed(scenario: Scenario) -> float | None:
    """Simulated seconds per wall second in real-time mode; ``None`` in virtual time."""
    return float(scenario.comm.speed) if scenario.comm.clock == "realtime" else None


def _coordination_rounds(scenario: Scenario) -> int:
    """Boundary rounds per interval: ``[control] coordination_rounds``, or 0 for
    ``coordination = "none"``."""
    m = scenario.control
    return 0 if m.coordination == "none" else int(m.coordination_rounds)


def agent_settings(scenario: Scenario) -> AgentSettings:
    """An agent node's protocol settings from ``[control]``, ``[comm]`` and ``[run]``."""
    c, m = scenario.comm, scenario.control
    return AgentSettings(
        interval_s=float(m.interval_s),
        deadline_s=float(m.deadline_s),
        rounds=_coordination_rounds(scenario),
        round_generations=int(m.round_generations),
        coordination="boundary" if m.coordination == "none" else m.coordination,
        table_points=int(m.table_points),
        boundary_band_pu=float(m.boundary_band_pu),
        admm_rho=float(m.admm_rho),
        admm_tolerance_pu=float(m.admm_tolerance_pu),
        compute=ComputeModel(m.compute_time, m.compute_fixed_s, m.compute_per_evaluation_s),
        watchdog_s=float(c.watchdog_s),
        plant_step_s=float(scenario.run.plant_step_s),
        speed=clock_speed(scenario),
    )


def run_id_for(name: str, seed: int) -> str:
    """The default run id of a scenario: its name and seed, as a valid topic level."""
    return safe_label(f"{name or 'run'}-s{seed}", limit=64)


def run_id_of(scenario: Scenario) -> str:
    """The scenario's run id: ``[comm] run_id``, else :func:`run_id_for` its name and seed."""
    return scenario.comm.run_id or run_id_for(scenario.name, scenario.run.seed)
