"""What a scenario will run, found without running it (``clustersim check``): its devices, the
partition its agents get, the devices of each cluster, and the warnings a run gives when a mode
that moves devices has none to move."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clustersim.agents.control import CLUSTER_MODES, MODES, allowed_kinds
from clustersim.agents.network import assign_buses
from clustersim.assemble.build import build_plant, clusters_of, scenario_partition
from clustersim.errors import PartitionError, ScenarioError
from clustersim.scenario import Scenario
from clustersim.sim.resources import ResourceSet, bus_lookup

__all__ = ["ScenarioCheck", "check_scenario", "cluster_devices", "device_warnings"]

_MOVING_MODES = frozenset(MODES) - {"none"}
"""the control modes that move devices"""


@dataclass
class ScenarioCheck:
    """A scenario as a run would set it up: devices per kind, the partition (method, k, its
    constraints, or the error that prevents it), each cluster's buses and devices, warnings."""

    scenario: Scenario
    devices: dict[str, int]
    partition: dict[str, Any]
    clusters: dict[str, tuple[int, dict[str, int]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def cluster_devices(
    net: Any, resources: ResourceSet, clusters: Mapping[str, Sequence[int]]
) -> dict[str, dict[str, int]]:
    """Devices per kind in each cluster (a device belongs to the cluster of its bus)."""
    owner = {b: name for name, buses in assign_buses(net, clusters).items() for b in buses}
    label_to_bus = bus_lookup(net)
    out: dict[str, dict[str, int]] = {name: {} for name in clusters}
    for d in resources.devices:
        name = owner.get(label_to_bus.get(d.bus, -1))
        if name is not None:
            out[name][d.kind] = out[name].get(d.kind, 0) + 1
    return out


def device_warnings(
    mode: str, resources: ResourceSet, cluster_devices: Mapping[str, Mapping[str, int]] | None
) -> list[str]:
    """Warnings for a mode that moves devices: none it may move in the whole network, or
    clusters without one (their agents can only exchange messages)."""
    if mode not in _MOVING_MODES:
        return []
    kinds = allowed_kinds(mode)
    if not any(d.kind in kinds for d in resources.devices):
        return [
            f"mode {mode!r} has no device it may move ({', '.join(sorted(kinds))}): the run "
            "is an uncontrolled one with agents (add a preset or device tables under [resources])"
        ]
    idle = [
        name
        for name, counts in (cluster_devices or {}).items()
        if not any(k in kinds for k in counts)
    ]
    if idle:
        return [
            f"cluster(s) {', '.join(idle)} have no device mode {mode!r} may move: their agents "
            "only exchange messages"
        ]
    return []


def check_scenario(scenario: Scenario) -> ScenarioCheck:
    """Build what a run of ``scenario`` builds before it runs — the plant (case, topology,
    devices on their buses), the partition and the clusters — and report it. Raises the errors
    a run would raise before its first step (:class:`~clustersim.errors.ScenarioError`)."""
    plant = build_plant(scenario)
    res = plant.resources
    mode = scenario.control.mode
    check = ScenarioCheck(scenario=scenario, devices=res.counts(), partition={})
    try:
        part, ctx = scenario_partition(scenario)
    except PartitionError as exc:
        if mode in CLUSTER_MODES:
            raise ScenarioError(str(exc), key="partition") from None
        check.partition = {"method": scenario.partition.method, "error": str(exc)}
        check.warnings += device_warnings(mode, res, None)
        return check
    check.partition = {
        "method": part.method,
        "k": part.k,
        **{k: bool(part.constraints[k]) for k in ("connected", "size_ok", "resources_ok")},
    }
    per_cluster = None
    if mode in CLUSTER_MODES:
        clusters = clusters_of(part, ctx, mode)
        per_cluster = cluster_devices(plant.net, res, clusters)
        check.clusters = {n: (len(b), per_cluster[n]) for n, b in clusters.items()}
    check.warnings += device_warnings(mode, res, per_cluster)
    return check
