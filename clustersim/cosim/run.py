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
import contextlib
import logging
import multiprocessing as mp
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from clustersim.agents.control import CLUSTER_MODES, ControlSettings, build_controllers
from clustersim.agents.node import PLANT, AgentNode
from clustersim.agents.optimizer import cancel_solves
from clustersim.assemble.build import (
    agent_settings,
    build_plant,
    control_settings,
    run_id_of,
    scenario_clusters,
    scenario_ties,
)
from clustersim.assemble.identity import new_run_id, run_keys, run_stem, scenario_fingerprint
from clustersim.assemble.seeds import Stage, stage_seed
from clustersim.broker.auth import Keyring, client_id
from clustersim.broker.channel import Channel
from clustersim.broker.embedded import EmbeddedBroker
from clustersim.broker.envelope import (
    BROADCAST,
    PREFIX,
    ClockMsg,
    EnvelopeError,
    decode,
    parse_topic,
)
from clustersim.broker.node import Fault
from clustersim.broker.transport import MemoryHub, open_transport, without_password
from clustersim.cosim.plant_node import (
    AgentSpec,
    CosimResult,
    CosimSettings,
    PlantNode,
    comm_summary,
)
from clustersim.errors import RunError, ScenarioError
from clustersim.scenario import Scenario
from clustersim.sim.model import CoSimModel
from clustersim.sim.plant import Plant

__all__ = [
    "agent_process",
    "cosim_settings",
    "discover_run",
    "run_cosim",
    "run_interruptible",
    "serve_agent",
    "stop_loop",
]


def cosim_settings(scenario: Scenario, fingerprint: dict[str, str] | None = None) -> CosimSettings:
    """The plant node's protocol settings: the agents' deadline, rounds, watchdog and clock
    (:func:`~clustersim.assemble.build.agent_settings`), the control interval, the startup
    and fallback timeouts of ``[comm]``, and the scenario's ``fingerprint``."""
    shared = agent_settings(scenario)
    return CosimSettings(
        fingerprint=fingerprint or {},
        interval_s=scenario.control.interval_s,
        startup_timeout_s=scenario.comm.startup_timeout_s,
        agent_timeout_s=scenario.comm.agent_timeout_s,
        **{k: getattr(shared, k) for k in ("deadline_s", "rounds", "watchdog_s", "speed")},
    )


def _open_broker(
    comm: Any, nodes: Sequence[str]
) -> tuple[Callable[[str], str | MemoryHub], EmbeddedBroker | None]:
    """Each node's transport spec (node → the in-memory hub, ``[comm] broker``, or its URL on
    a new embedded broker) and the embedded broker started for the run, if any. The embedded
    broker admits only ``nodes``, each with a password drawn for it, under the ACL of
    :mod:`clustersim.broker.acl`, and is restarted on its port should it die."""
    if comm.transport == "memory":
        hub = MemoryHub()
        return (lambda _node: hub), None
    if comm.broker:
        return (lambda _node: str(comm.broker)), None
    broker = EmbeddedBroker(nodes=nodes, keep_alive=True)
    broker.start()
    return broker.url_for, broker


def _start_processes(
    scenario: Scenario,
    names: Sequence[str],
    url_for: Callable[[str], str | MemoryHub],
    clusters: Mapping[str, Sequence[int]] | None,
    seed: int,
    identity: tuple[str, Keyring],
) -> list[Any]:
    """One OS process per agent (``[run] agents = "processes"``); each gets its URL, the run id
    and the keys through its start pipe, not on its command line. Processes are forked from
    multiprocessing's fork server, which imports this module (and so the simulator and its
    numeric libraries) once: an agent starts without re-importing them and shares those pages
    with its siblings until it writes them."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    procs = []
    for name in names:
        url = url_for(name)
        assert isinstance(url, str)
        p = ctx.Process(
            target=agent_process,
            args=(scenario.model_dump(mode="json"), name, url, clusters, seed, identity),
            name=f"clustersim-agent-{name}",
            daemon=True,
        )
        with _sigint_ignored():  # the child inherits it: the run stops its agents itself
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


def _result(
    scenario: Scenario,
    pnode: PlantNode,
    model: CoSimModel,
    broker: EmbeddedBroker | None,
    online_s: float,
) -> CosimResult:
    """The plant node's result with its refused messages, communication KPIs (the embedded
    broker's restarts among the transport events, its failure to restart among the faults),
    the run id, the wall seconds until every agent was online (``online_s``) and the model's
    per-interval tables."""
    result = pnode.result
    result.message_rows.extend(r.model_dump() for r in pnode.refused_records())
    if broker is not None:
        for why in broker.restarts:
            pnode.transport_events.append(Fault("broker", "restarted", f"embedded broker {why}"))
        if broker.failure:
            pnode.faults.append(Fault("broker", "broker", broker.failure))
    result.summary = comm_summary(pnode)
    result.summary["provenance"] = {"run_id": pnode.run_id}
    result.summary["clock"] = scenario.comm.clock
    result.summary["agents_online_wall_s"] = round(online_s, 3)
    result.summary["coordination"] = (
        scenario.control.coordination if scenario.control.mode in CLUSTER_MODES else "none"
    )
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
        if not t.cancelled() and t.exception() is None:
            pnode.result.fronts.update(t.result().fronts)


log = logging.getLogger(__name__)

STOP_TASKS_S = 1.5
"""wall seconds an interrupted run gives the tasks of its event loop to end once cancelled"""
STOP_PROCESSES_S = 1.0
"""wall seconds an agent process has to end once terminated (SIGTERM) before it is killed"""


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT in the block (main thread only; elsewhere nothing changes). A process
    started in it inherits that: a Ctrl-C at the terminal, which reaches the whole process
    group, then leaves it to this process to stop its children, even before they could install
    a handler of their own."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old if old is not None else signal.SIG_DFL)


@contextlib.contextmanager
def _quiet_broker_logs() -> Iterator[None]:
    """Log nothing below CRITICAL from :mod:`clustersim.broker` in the block: while a run is
    being stopped on purpose, the connections it closes and the broker it stops are expected
    losses (unacknowledged messages, reconnect attempts), not warnings."""
    logger = logging.getLogger("clustersim.broker")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _quiet_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The exception handler of a loop stopped on purpose: what its tasks raised while being
    torn down (KeyboardInterrupt, a lost connection, a task left pending) is logged at debug
    level only."""
    log.debug("after the stop: %s", context.get("message"), exc_info=context.get("exception"))


def _end_tasks(loop: asyncio.AbstractEventLoop, budget_s: float) -> bool:
    """Cancel every task of ``loop`` and run the loop until they have ended, cancelling again
    every 0.1 s those that go on (a cancellation can be absorbed by a wait that completed at the
    same moment) for at most ``budget_s`` wall seconds; whether none is left."""
    end = time.monotonic() + budget_s
    slice_s = 0.5  # the first cancellation gets time for an orderly disconnect
    while pending := asyncio.all_tasks(loop):
        left = end - time.monotonic()
        if left <= 0:
            return False
        for t in pending:
            t.cancel()
        try:
            loop.run_until_complete(asyncio.wait(pending, timeout=min(left, slice_s)))
        except KeyboardInterrupt:  # a second Ctrl-C, or one a task held: the stop goes on
            pass
        slice_s = 0.1
    return True


def _stop_processes(procs: Sequence[Any], timeout_s: float = STOP_PROCESSES_S) -> None:
    """Terminate (SIGTERM) the agent processes still alive, wait up to ``timeout_s`` for all of
    them together, kill (SIGKILL) those still alive."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    end = time.monotonic() + timeout_s
    for p in procs:
        p.join(timeout=max(0.0, end - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(timeout=1.0)


def stop_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Stop everything running on ``loop`` at once and quietly, and close it: its solves end
    within a generation (:func:`~clustersim.agents.optimizer.cancel_solves`), its tasks are
    cancelled (for at most :data:`STOP_TASKS_S`), what they raise or log on the way is not
    reported (:func:`_quiet_exception_handler`, :func:`_quiet_broker_logs`). A loop with a task
    still pending then is left open, so that the task can be discarded without touching a
    closed loop."""
    if loop.is_closed():
        return
    cancel_solves(loop)
    loop.set_exception_handler(_quiet_exception_handler)
    with _quiet_broker_logs():
        if _end_tasks(loop, STOP_TASKS_S):
            loop.close()


def _shut_down(
    loop: asyncio.AbstractEventLoop,
    tasks: Sequence[asyncio.Task[Any]],
    procs: Sequence[Any],
    broker: EmbeddedBroker | None,
    *,
    quick: bool = False,
) -> None:
    """Stop the agent tasks and the loop, the agent processes and the embedded broker.

    After a run that ended, the agent tasks are cancelled and awaited. ``quick`` (a run ended by
    Ctrl-C, SIGTERM through the command line, or an error) stops within about 2 s of wall time
    and without a line on stderr: the agent processes first (before they could see the broker
    go), then the loop (:func:`stop_loop`), then the broker.
    """
    if quick:
        with _quiet_broker_logs():
            _stop_processes(procs)
            for t in tasks:  # KeyboardInterrupt held by the task that was solving: retrieved
                if t.done() and not t.cancelled():
                    t.exception()
            stop_loop(loop)
            if broker is not None:
                broker.stop()
        return
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.close()
    _stop_processes(procs)
    if broker is not None:
        broker.stop()


T = TypeVar("T")


def run_interruptible(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on a new event loop to its end, as :func:`asyncio.run` does, except that
    Ctrl-C (``KeyboardInterrupt``, raised where the main thread is, even in a solve) or an error
    stops every task of the loop within about 2 s and quietly (:func:`stop_loop`) before it is
    raised again."""
    loop = asyncio.new_event_loop()
    try:
        result = loop.run_until_complete(main)
    except BaseException:
        stop_loop(loop)
        raise
    _shut_down(loop, list(asyncio.all_tasks(loop)), [], None)
    return result


# length: the run's setup, its main loop and its stop (at the end, or at once) in order
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
    if where == "external" and comm.transport == "mqtt" and not comm.broker:
        raise ScenarioError(
            'agents = "external" needs a broker the agents can reach: give --broker or [comm] '
            "broker (the embedded broker a run starts admits only the nodes it starts)",
            key="comm.broker",
        )
    controllers = build_controllers(plant, mode, settings, clusters=clusters, seed=seed)
    specs = [AgentSpec.of(c) for c in controllers]
    comm_seed = stage_seed(scenario.run.seed, Stage.COMM)
    run_id = new_run_id(scenario)
    nodes = [PLANT, *(c.name for c in controllers)]
    keys = run_keys(scenario, nodes)
    fingerprint = scenario_fingerprint(scenario)
    ties = scenario_ties(plant, mode, clusters)
    a_settings = agent_settings(scenario)
    spec, broker = _open_broker(comm, nodes)
    procs: list[Any] = []
    loop = asyncio.new_event_loop()
    tasks: list[asyncio.Task[Any]] = []
    ended = False  # else the run stops at once and quietly: Ctrl-C, SIGTERM, an error
    try:
        pnode = PlantNode(
            plant,
            open_transport(spec(PLANT), client_id(PLANT, run_id)),
            Channel(comm, seed=comm_seed),
            run_id=run_id,
            specs=specs,
            settings=cosim_settings(scenario, fingerprint),
            local_settings=scenario.control.local,
            progress=progress,
            keys=keys,
        )
        agents = [
            AgentNode(
                c,
                open_transport(spec(c.name), client_id(c.name, run_id)),
                Channel(comm, seed=comm_seed),
                run_id=run_id,
                ties=ties,
                settings=a_settings,
                keys=keys,
                fingerprint=fingerprint,
            )
            for c in (controllers if where == "tasks" else [])
        ]
        t_begin = time.perf_counter()
        if where == "processes":
            names = [c.name for c in controllers]
            procs = _start_processes(scenario, names, spec, clusters, seed, (run_id, keys))

        async def _begin() -> None:
            await pnode.start()
            for a in agents:  # subscribed before the plant's first start
                await a.start()
            tasks.extend(asyncio.ensure_future(a.run()) for a in agents)
            await pnode.begin()

        loop.run_until_complete(_begin())
        online_s = time.perf_counter() - t_begin
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
        ended = True
        return _result(scenario, pnode, model, broker, online_s)
    finally:
        _shut_down(loop, tasks, procs, broker, quick=not ended)


def agent_process(
    scenario_doc: dict[str, Any],
    name: str,
    url: str,
    clusters: Mapping[str, Sequence[int]] | None,
    seed: int,
    identity: tuple[str, Keyring],
) -> None:
    """Entry point of one agent's OS process (``[run] agents = "processes"``); ``identity`` is
    the run id and the keys. SIGINT and SIGTERM end the process at once and silently: the run
    that started it stops it (SIGTERM) when interrupted, and the terminal's Ctrl-C reaches the
    whole process group; the run reports the interruption, once."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    logging.basicConfig(level=logging.WARNING)
    scenario = Scenario.model_validate(scenario_doc)
    run_id, keys = identity
    asyncio.run(
        serve_agent(scenario, name, url, clusters=clusters, seed=seed, run_id=run_id, keys=keys)
    )


async def discover_run(url: str, name: str, stem: str, keys: Keyring, *, timeout_s: float) -> str:
    """The run id of the plant's run with stem ``stem`` on broker ``url``: taken from the
    first ``start`` clock message the plant signed (see :mod:`clustersim.broker.auth`); a
    :class:`~clustersim.errors.RunError` when none comes within ``timeout_s`` wall seconds."""
    transport = open_transport(url, client_id(name, stem))
    await transport.start()
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    try:
        await transport.subscribe(f"{PREFIX}/+/clock/{PLANT}/{BROADCAST}")
        while (left := end - loop.time()) > 0:
            got = await transport.receive(left)
            if got is None:
                break
            topic, payload = got
            try:
                run_id = parse_topic(topic)[0]
                if run_stem(run_id) != stem:
                    continue
                env = decode(keys.verify(topic, PLANT, payload), topic=topic)
            except EnvelopeError:
                continue
            if isinstance(env, ClockMsg) and env.body.event == "start":
                return run_id
    finally:
        await transport.close()
    raise RunError(
        f"agent {name}: no plant started run {stem!r} on {without_password(url)} "
        f"within {timeout_s:g} s"
    )


async def serve_agent(
    scenario: Any,
    name: str,
    url: str,
    *,
    clusters: Mapping[str, Sequence[int]] | None = None,
    seed: int | None = None,
    run_id: str | None = None,
    keys: Keyring | None = None,
    keys_file: str | None = None,
) -> None:
    """Build agent ``name`` of the scenario and serve the run on broker ``url`` until it ends.

    ``clusters`` and ``seed`` default to what the scenario gives (partition, control seed);
    ``keys`` to the keys file (``keys_file``, ``[comm] keys`` or ``CLUSTERSIM_KEYS_FILE``);
    ``run_id`` to the one of the plant's signed start (:func:`discover_run`). Raises
    :class:`~clustersim.errors.ScenarioError` when the plant's scenario differs from this one
    (naming the keys) and :class:`~clustersim.errors.RunError` when the plant went silent."""
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
    if keys is None:
        keys = run_keys(scenario, [PLANT, name], keys_file, required=True)
    if run_id is None:
        timeout_s = scenario.comm.startup_timeout_s
        run_id = await discover_run(url, name, run_id_of(scenario), keys, timeout_s=timeout_s)
    node = AgentNode(
        controllers[0],
        open_transport(url, client_id(name, run_id)),
        Channel(scenario.comm, seed=stage_seed(scenario.run.seed, Stage.COMM)),
        run_id=run_id,
        ties=scenario_ties(plant, mode, clusters),
        settings=agent_settings(scenario),
        keep_fronts=False,
        keys=keys,
        fingerprint=scenario_fingerprint(scenario),
    )
    await node.run()
    if node.mismatch:
        raise ScenarioError(
            f"agent {name}: the scenario differs from the plant's in {', '.join(node.mismatch)}"
        )
    if node.lost_plant:
        raise RunError(f"agent {name}: lost the plant (no measurement came); the run did not end")
