"""A whole co-simulation run of an optimizing control mode.

:func:`run_cosim` starts the broker (an embedded amqtt broker on a free port when ``[comm]
broker`` is empty, or the given URL; or the in-memory hub for ``transport = "memory"``), the
plant node, the agents as asyncio tasks of this process (``[run] agents = "tasks"``), as one OS
process each (``"processes"``) or started elsewhere by ``clustersim agent`` (``"external"``), and
the :class:`~clustersim.sim.model.CoSimModel` that steps the intervals and collects the
per-interval tables. :func:`serve_agent` is one agent of a scenario on a broker.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from clustersim.agents.control import ControlSettings, build_controllers
from clustersim.agents.node import PLANT, AgentNode
from clustersim.assemble.build import (
    agent_settings,
    build_plant,
    control_settings,
    run_id_of,
    scenario_clusters,
    scenario_ties,
)
from clustersim.assemble.seeds import Stage, stage_seed
from clustersim.broker.channel import Channel
from clustersim.broker.embedded import EmbeddedBroker
from clustersim.broker.transport import MemoryHub, open_transport
from clustersim.cosim.plant_node import (
    AgentSpec,
    CosimResult,
    CosimSettings,
    PlantNode,
    comm_summary,
)
from clustersim.errors import ScenarioError
from clustersim.scenario import Scenario
from clustersim.sim.model import CoSimModel
from clustersim.sim.plant import Plant

__all__ = ["agent_process", "cosim_settings", "run_cosim", "serve_agent"]


def cosim_settings(scenario: Scenario) -> CosimSettings:
    """The plant node's protocol settings: the agents' deadline, rounds, watchdog and clock
    (:func:`~clustersim.assemble.build.agent_settings`), the control interval, and the startup
    and fallback timeouts of ``[comm]``."""
    shared = agent_settings(scenario)
    return CosimSettings(
        interval_s=scenario.control.interval_s,
        startup_timeout_s=scenario.comm.startup_timeout_s,
        agent_timeout_s=scenario.comm.agent_timeout_s,
        **{k: getattr(shared, k) for k in ("deadline_s", "rounds", "watchdog_s", "speed")},
    )


def _open_broker(comm: Any) -> tuple[str | MemoryHub, EmbeddedBroker | None]:
    """The transport spec of a run and the embedded broker started for it, if any: the
    in-memory hub, ``[comm] broker``, or a new embedded broker on a free port."""
    if comm.transport == "memory":
        return MemoryHub(), None
    if comm.broker:
        return comm.broker, None
    broker = EmbeddedBroker()
    broker.start()
    return broker.url, broker


def _start_processes(
    scenario: Scenario,
    names: Sequence[str],
    url: str,
    clusters: Mapping[str, Sequence[int]] | None,
    seed: int,
) -> list[Any]:
    """One spawned OS process per agent (``[run] agents = "processes"``)."""
    ctx = mp.get_context("spawn")
    procs = []
    for name in names:
        p = ctx.Process(
            target=agent_process,
            args=(scenario.model_dump(mode="json"), name, url, clusters, seed),
            name=f"clustersim-agent-{name}",
            daemon=True,
        )
        p.start()
        procs.append(p)
    return procs


WALL_CLOCK_FAULTS = ("watchdog", "startup")
"""fault kinds a wall-clock timeout raises: a run that had one depends on the machine's speed"""


def _wall_clock_fault(fault: dict[str, Any]) -> bool:
    """Whether a summary fault (the plant's own, or a remote one ``"<kind>: <detail>"``) was
    raised by a wall-clock timeout."""
    kind = fault["kind"]
    if kind == "remote":
        kind = str(fault["detail"]).split(":", 1)[0]
    return kind in WALL_CLOCK_FAULTS


def _result(scenario: Scenario, pnode: PlantNode, model: CoSimModel) -> CosimResult:
    """The plant node's result with its refused messages, communication KPIs and the model's
    per-interval tables."""
    result = pnode.result
    result.message_rows.extend(r.model_dump() for r in pnode.refused_records())
    result.summary = comm_summary(pnode)
    result.summary["clock"] = scenario.comm.clock
    result.summary["reproducible"] = (
        scenario.comm.clock == "virtual"
        and scenario.control.compute_time != "measured"
        and not any(_wall_clock_fault(f) for f in result.summary["faults"])
    )
    result.steps, result.agent_steps = model.tables()
    return result


def _collect_fronts(
    loop: asyncio.AbstractEventLoop,
    tasks: Sequence[asyncio.Task[Any]],
    pnode: PlantNode,
    *,
    timeout_s: float,
) -> None:
    """Wait up to ``timeout_s`` for the agent tasks to end; keep the fronts of those that did."""
    if not tasks:
        return
    done, _ = loop.run_until_complete(asyncio.wait(tasks, timeout=timeout_s))
    for t in done:
        if t.exception() is None:
            pnode.result.fronts.update(t.result().fronts)


def _shut_down(
    loop: asyncio.AbstractEventLoop,
    tasks: Sequence[asyncio.Task[Any]],
    procs: Sequence[Any],
    broker: EmbeddedBroker | None,
) -> None:
    """Cancel the agent tasks, close the loop, stop agent processes and the embedded broker."""
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.close()
    for p in procs:
        if p.is_alive():
            p.terminate()
    if broker is not None:
        broker.stop()


def run_cosim(
    scenario: Scenario,
    plant: Plant,
    settings: ControlSettings,
    *,
    clusters: Mapping[str, Sequence[int]] | None,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> CosimResult:
    """Run the scenario's optimizing control mode over its transport (module docstring)."""
    comm = scenario.comm
    mode = scenario.control.mode
    where = scenario.run.agents
    if comm.transport == "memory" and where != "tasks":
        raise ScenarioError(
            f'agents = "{where}" needs transport = "mqtt" (the memory transport lives in one '
            "process)",
            key="run.agents",
        )
    controllers = build_controllers(plant, mode, settings, clusters=clusters, seed=seed)
    specs = [AgentSpec.of(c) for c in controllers]
    comm_seed = stage_seed(scenario.run.seed, Stage.COMM)
    run_id = run_id_of(scenario)
    ties = scenario_ties(plant, mode, clusters)
    a_settings = agent_settings(scenario)
    spec, broker = _open_broker(comm)
    procs: list[Any] = []
    loop = asyncio.new_event_loop()
    tasks: list[asyncio.Task[Any]] = []
    try:
        pnode = PlantNode(
            plant,
            open_transport(spec, f"{run_id}.{PLANT}"),
            Channel(comm, seed=comm_seed),
            run_id=run_id,
            specs=specs,
            settings=cosim_settings(scenario),
            local_settings=scenario.control.local,
            progress=progress,
        )
        agents = [
            AgentNode(
                c,
                open_transport(spec, f"{run_id}.{c.name}"),
                Channel(comm, seed=comm_seed),
                run_id=run_id,
                ties=ties,
                settings=a_settings,
            )
            for c in (controllers if where == "tasks" else [])
        ]
        if where == "processes":
            assert isinstance(spec, str)
            procs = _start_processes(scenario, [c.name for c in controllers], spec, clusters, seed)

        async def _begin() -> None:
            await pnode.start()
            tasks.extend(asyncio.ensure_future(a.run()) for a in agents)
            await pnode.begin()

        loop.run_until_complete(_begin())
        model = CoSimModel(
            plant,
            [s.name for s in specs],
            lambda n: loop.run_until_complete(pnode.interval(n)),
            interval_s=settings.interval_s,
            vm_min_pu=scenario.run.vm_min_pu,
            vm_max_pu=scenario.run.vm_max_pu,
            seed=seed,
        )
        while model.running:
            model.step()
        loop.run_until_complete(pnode.end())
        _collect_fronts(loop, tasks, pnode, timeout_s=max(5.0, comm.watchdog_s))
        loop.run_until_complete(pnode.close())
        for p in procs:
            p.join(timeout=10)
        return _result(scenario, pnode, model)
    finally:
        _shut_down(loop, tasks, procs, broker)


def agent_process(
    scenario_doc: dict[str, Any],
    name: str,
    url: str,
    clusters: Mapping[str, Sequence[int]] | None,
    seed: int,
) -> None:
    """Entry point of one agent's OS process (``[run] agents = "processes"``)."""
    logging.basicConfig(level=logging.WARNING)
    scenario = Scenario.model_validate(scenario_doc)
    asyncio.run(serve_agent(scenario, name, url, clusters=clusters, seed=seed))


async def serve_agent(
    scenario: Any,
    name: str,
    url: str,
    *,
    clusters: Mapping[str, Sequence[int]] | None = None,
    seed: int | None = None,
) -> None:
    """Build agent ``name`` of the scenario and serve the run on broker ``url`` until it ends.
    ``clusters`` and ``seed`` default to what the scenario gives (partition, control seed)."""
    plant = build_plant(scenario)
    if seed is None:
        seed = stage_seed(scenario.run.seed, Stage.CONTROL)
    mode = scenario.control.mode
    if clusters is None and mode != "centralized":
        clusters = scenario_clusters(scenario)
    controllers = build_controllers(
        plant, mode, control_settings(scenario), clusters=clusters, seed=seed, only=name
    )
    if not controllers:
        names = [
            c.name
            for c in build_controllers(
                plant, mode, control_settings(scenario), clusters=clusters, seed=seed
            )
        ]
        raise ScenarioError(f"no agent {name!r} in this scenario (agents: {', '.join(names)})")
    run_id = run_id_of(scenario)
    node = AgentNode(
        controllers[0],
        open_transport(url, f"{run_id}.{name}"),
        Channel(scenario.comm, seed=stage_seed(scenario.run.seed, Stage.COMM)),
        run_id=run_id,
        ties=scenario_ties(plant, mode, clusters),
        settings=agent_settings(scenario),
        keep_fronts=False,
    )
    await node.run()
