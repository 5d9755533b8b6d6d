"""Ctrl-C and SIGTERM during a run: the command ends within seconds on every transport and agent
placement, with one line on stderr and exit code 130 (SIGINT) or 143 (SIGTERM), its agents and
broker stopped, its results folder marked incomplete ("interrupted").

A terminal's Ctrl-C reaches the whole foreground process group (the run, its agent processes,
its embedded broker): those cases signal the run's process group, which the test starts in a
session of its own; SIGTERM, as a service manager sends it, goes to the run's process alone.
Every broker is the run's own embedded one or a Mosquitto the test starts on a free port.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import pytest
from pymoo.core.problem import Problem

from clustersim.agents.optimizer import Optimizer, SolveCancelled, cancel_solves
from clustersim.broker.mosquitto import MosquittoBroker, mosquitto_path
from clustersim.broker.transport import MqttTransport
from clustersim.cosim.run import stop_loop
from clustersim.fileio import incomplete_reason

CLI = [sys.executable, "-m", "clustersim.cli"]
EXIT_BOUND_S = 10.0
"""what the tests allow from the signal to the exit (the aim is about 2 s; printed per test)"""
EXIT_CODE = {signal.SIGINT: 130, signal.SIGTERM: 143}
LINE = {signal.SIGINT: "interrupted", signal.SIGTERM: "interrupted (SIGTERM)"}


# ---------------------------------------------------------------- solves stop on a cancelled loop


class _Toy(Problem):
    """Four continuous levers (too many to enumerate), three objectives, two constraints."""

    def __init__(self) -> None:
        super().__init__(n_var=4, n_obj=3, n_ieq_constr=2, xl=np.zeros(4), xu=np.ones(4))
        self.integer_mask = np.zeros(4, dtype=bool)
        self.n_evaluations = 0
        self.n_calls = 0

    def clip(self, X):
        return np.clip(np.atleast_2d(np.asarray(X, dtype=float)), self.xl, self.xu)

    def objectives(self, X):
        X = np.atleast_2d(np.asarray(X, dtype=float))
        self.n_evaluations += len(X)
        self.n_calls += 1
        F = np.column_stack([X.sum(axis=1), (1 - X).sum(axis=1), ((X - 0.3) ** 2).sum(axis=1)])
        G = np.column_stack([X[:, 0] - 0.9, 0.1 - X[:, 1]])
        return F, G, None

    def _evaluate(self, X, out, *args, **kwargs):
        out["F"], out["G"], _ = self.objectives(X)


def _solve() -> np.ndarray:
    return Optimizer(_Toy(), pop_size=12, generations=15, seed=4).run().x


def test_a_cancelled_loop_stops_its_solve_within_one_generation():
    alone = _solve()  # outside any event loop

    async def on_loop() -> tuple[np.ndarray, int]:
        x = _solve()  # this loop is not cancelled (yet): the very same solve
        opt = Optimizer(_Toy(), pop_size=12, generations=15, seed=4)
        opt.step()
        cancel_solves(asyncio.get_running_loop())
        with pytest.raises(SolveCancelled):
            opt.step()
        return x, opt.generation

    x, generations = asyncio.run(on_loop())
    np.testing.assert_array_equal(x, alone)
    assert generations == 1
    assert isinstance(SolveCancelled(), asyncio.CancelledError)  # ends a task as cancelled
    np.testing.assert_array_equal(asyncio.run(asyncio.to_thread(_solve)), alone)
    np.testing.assert_array_equal(_solve(), alone)  # another loop, and none: unaffected


def test_stop_loop_ends_a_task_that_absorbed_its_cancellation():
    """A task whose cancellation a completed wait absorbed goes on solving; stop_loop cancels it
    again and its next solve ends at its first generation."""
    loop = asyncio.new_event_loop()
    solves = []

    async def agent() -> None:
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                pass  # absorbed, as asyncio.wait_for can when its inner wait completed
            solves.append(_solve())

    task = loop.create_task(agent())
    loop.run_until_complete(asyncio.sleep(0.2))
    assert solves
    t0 = time.monotonic()
    stop_loop(loop)
    elapsed = time.monotonic() - t0
    print(f"stop_loop: {elapsed:.3f} s")
    assert elapsed < 2.0
    assert task.cancelled() and loop.is_closed()


# ---------------------------------------------------------------- `clustersim run`, interrupted


def _group_gone(pgid: int, timeout_s: float = 3.0) -> bool:
    """Whether every process of group ``pgid`` has ended (within ``timeout_s``)."""
    end = time.monotonic() + timeout_s
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # a member that is not ours (cannot happen here): still there
            pass
        if time.monotonic() > end:
            return False
        time.sleep(0.05)


def _stderr_lines(text: str) -> list[str]:
    """stderr without the progress bar's lines."""
    return [ln.strip() for ln in text.splitlines() if ln.strip() and "plant steps" not in ln]


def _embedded_clients(n: int) -> Callable[[int], bool]:
    """Whether the run ``pid``'s embedded broker has ``n`` clients connected (the plant and its
    agents: the co-simulation can begin)."""

    def ready(pid: int) -> bool:
        try:
            for child in psutil.Process(pid).children(recursive=True):
                if "clustersim.broker.embedded" in " ".join(child.cmdline()):
                    conns = child.net_connections(kind="tcp")
                    return sum(c.status == psutil.CONN_ESTABLISHED for c in conns) >= n
        except psutil.Error:
            pass
        return False

    return ready


class _Setpoints:
    """Watches a broker for the first setpoint of a run (the agents are deciding)."""

    def __init__(self, url: str) -> None:
        self.seen = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._watch(url),), daemon=True)

    async def _watch(self, url: str) -> None:
        async with MqttTransport(url, "interrupt-watch") as t:
            await t.subscribe("#")
            while not self._stop.is_set():
                got = await t.receive(0.2)
                if got is not None and "/setpoint/" in got[0]:
                    self.seen.set()

    def __enter__(self) -> _Setpoints:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _interrupt_run(
    tmp_path: Path,
    sets: list[str],
    sig: signal.Signals,
    *,
    group: bool,
    settle_s: float,
    ready: Callable[[int], bool] | None = None,
) -> None:
    """Start ``clustersim run`` (ieee33-ev-clustered, 24 h), let it get into the co-simulation
    (its partition is written, then ``ready(pid)`` holds, then ``settle_s`` more seconds), send
    ``sig`` (to its process group when ``group``, as a terminal's Ctrl-C does) and check the
    exit."""
    out = tmp_path / "run"
    cmd = [*CLI, "run", "ieee33-ev-clustered", "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err, open(tmp_path / "stdout.txt", "w") as so:
        proc = subprocess.Popen(cmd, stdout=so, stderr=err, start_new_session=True)
        try:
            end = time.monotonic() + 120
            while not (out / "partition.json").exists():
                assert proc.poll() is None, err_path.read_text()
                assert time.monotonic() < end, "the run did not start within 120 s"
                time.sleep(0.1)
            while ready is not None and not ready(proc.pid):
                assert proc.poll() is None, err_path.read_text()
                assert time.monotonic() < end, "the co-simulation did not begin within 120 s"
                time.sleep(0.1)
            time.sleep(settle_s)
            assert proc.poll() is None, err_path.read_text()
            t0 = time.monotonic()
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail(f"no exit within 60 s of {sig.name}")
            elapsed = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    stderr = err_path.read_text()
    print(
        f"{' '.join(sets) or 'defaults'}: {sig.name} -> exit {proc.returncode} in {elapsed:.2f} s"
    )
    print(stderr)
    assert elapsed < EXIT_BOUND_S
    assert proc.returncode == EXIT_CODE[sig]
    assert "Traceback" not in stderr
    assert _stderr_lines(stderr) == [LINE[sig]]  # nothing else: no "lost", no reconnect
    assert _group_gone(proc.pid), "a process of the run outlived it"
    assert incomplete_reason(out) == "interrupted"
    assert not (out / "summary.json").exists()


def test_ctrl_c_memory_transport_agents_as_tasks(tmp_path):
    _interrupt_run(tmp_path, ["comm.transport=memory"], signal.SIGINT, group=True, settle_s=3.0)


def test_sigterm_embedded_broker_agents_as_tasks(tmp_path):
    _interrupt_run(
        tmp_path, [], signal.SIGTERM, group=False, settle_s=2.0, ready=_embedded_clients(6)
    )


@pytest.mark.slow
def test_sigterm_memory_transport_agents_as_tasks(tmp_path):
    _interrupt_run(tmp_path, ["comm.transport=memory"], signal.SIGTERM, group=False, settle_s=3.0)


@pytest.mark.slow
def test_ctrl_c_embedded_broker_agents_as_tasks(tmp_path):
    _interrupt_run(
        tmp_path, [], signal.SIGINT, group=True, settle_s=2.0, ready=_embedded_clients(6)
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "group"), [(signal.SIGINT, True), (signal.SIGTERM, False)], ids=["ctrl-c", "sigterm"]
)
def test_embedded_broker_agents_as_processes(tmp_path, sig, group):
    # once the plant and its five agents are connected, the agents are deciding
    _interrupt_run(
        tmp_path,
        ["run.agents=processes"],
        sig,
        group=group,
        settle_s=2.0,
        ready=_embedded_clients(6),
    )


@pytest.mark.slow
@pytest.mark.skipif(mosquitto_path() is None, reason="needs the mosquitto binary")
@pytest.mark.parametrize("agents", ["tasks", "processes"])
def test_ctrl_c_mosquitto(tmp_path, agents):
    with MosquittoBroker(workdir=tmp_path / "mosq") as mq, _Setpoints(mq.url) as watch:
        _interrupt_run(
            tmp_path,
            [f"comm.broker={mq.url}", f"run.agents={agents}"],
            signal.SIGINT,
            group=True,
            settle_s=0.0,
            ready=lambda _pid: watch.seen.is_set(),
        )


@pytest.mark.slow
@pytest.mark.skipif(mosquitto_path() is None, reason="needs the mosquitto binary")
def test_agent_and_plant_commands_interrupted(tmp_path):
    """`clustersim agent` ends on Ctrl-C mid-run with one line and 130; the plant it served,
    on SIGTERM with one line and 143, its folder marked interrupted."""
    sc = "ieee33-ev-centralized"
    acl = subprocess.run([*CLI, "acl", sc, "--out", str(tmp_path / "acl")], capture_output=True)
    assert acl.returncode == 0, acl.stderr
    sets = ["--set", "comm.run_id=interrupt", "--keys", str(tmp_path / "acl" / "keys.toml")]
    out = tmp_path / "plant"
    with MosquittoBroker(workdir=tmp_path / "mosq") as mq, _Setpoints(mq.url) as watch:
        common = ["--scenario", sc, "--broker", mq.url, *sets]
        agent = subprocess.Popen(
            [*CLI, "agent", "--cluster", "central", *common],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        plant = subprocess.Popen(
            [*CLI, "plant", "--out", str(out), *common],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            assert watch.seen.wait(120), "no setpoint within 120 s"
            ended = {}
            for proc, sig, name in (
                (agent, signal.SIGINT, "agent"),
                (plant, signal.SIGTERM, "plant"),
            ):
                t0 = time.monotonic()
                os.killpg(proc.pid, sig)
                _, err = proc.communicate(timeout=60)
                ended[name] = (time.monotonic() - t0, proc.returncode, err)
                print(f"{name}: {sig.name} -> exit {proc.returncode} in {ended[name][0]:.2f} s")
                print(err)
        finally:
            for proc in (agent, plant):
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    for name, sig in (("agent", signal.SIGINT), ("plant", signal.SIGTERM)):
        elapsed, code, err = ended[name]
        assert elapsed < EXIT_BOUND_S, name
        assert code == EXIT_CODE[sig], (name, err)
        assert "Traceback" not in err and _stderr_lines(err) == [LINE[sig]], (name, err)
    assert _group_gone(agent.pid) and _group_gone(plant.pid)
    assert incomplete_reason(out) == "interrupted"
