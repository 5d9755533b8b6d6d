"""Faults of a co-simulation's parts over real brokers: an embedded broker that dies, a plant
that dies under its external agents, an agent started with another scenario, an agent that
never comes online."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import pandas as pd
import psutil
import pytest

from clustersim.broker.transport import MqttTransport
from clustersim.runner import run_scenario
from clustersim.scenario import load_scenario

SHORT = [
    "run.duration_h=1",
    "control.pop_size=12",
    "control.generations=4",
    "control.round_generations=2",
]
CENTRAL = "ieee33-ev-centralized"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "clustersim.cli", *args]


def _agent(url: str, keys: str) -> list[str]:
    """`clustersim agent` of the centralized scenario's one agent on broker ``url``."""
    return _cli("agent", "-s", CENTRAL, "-k", "central", "--broker", url, "--keys", keys)


def _plant(url: str, keys: str) -> list[str]:
    """`clustersim plant` of the centralized scenario on broker ``url``, quiet."""
    return _cli("plant", "-s", CENTRAL, "--broker", url, "--keys", keys, "-q")


def _sets(*overrides: str) -> list[str]:
    return [x for o in [*SHORT, *overrides] for x in ("--set", o)]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> str:
    """The nodes' keys of the centralized scenario, as `clustersim acl` writes them."""
    out = tmp_path_factory.mktemp("acl")
    r = subprocess.run(_cli("acl", CENTRAL, "--out", str(out)), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return str(out / "keys.toml")


def _embedded_broker_children() -> list[psutil.Process]:
    me = psutil.Process()
    return [
        p
        for p in me.children(recursive=True)
        if "clustersim.broker.embedded" in " ".join(p.cmdline())
    ]


def test_a_dead_embedded_broker_is_restarted(tmp_path):
    """The run's embedded broker is killed mid-run: it is restarted on its port, the nodes
    reconnect and the run ends with the numbers of an undisturbed run; the restart is a
    transport event, not a fault."""
    clean = run_scenario(
        load_scenario(CENTRAL, overrides=[*SHORT, "comm.transport=memory"]), tmp_path / "clean"
    )
    killed: list[int] = []
    others = {p.pid for p in _embedded_broker_children()}  # brokers of other tests

    def kill_broker(k: int) -> None:
        if k == 20 and not killed:
            for p in _embedded_broker_children():
                if p.pid not in others:
                    p.send_signal(signal.SIGKILL)
                    killed.append(p.pid)

    res = run_scenario(
        load_scenario(CENTRAL, overrides=SHORT), tmp_path / "r", progress=kill_broker
    )
    assert killed, "no embedded broker process found"
    s = res.summary
    assert s["faults"] == [] and s["agents_lost"] == []
    assert "restarted" in [e["kind"] for e in s["transport_events"]], s["transport_events"]
    a = pd.read_parquet(res.out_dir / "timeseries.parquet")
    pd.testing.assert_frame_equal(a, pd.read_parquet(clean.out_dir / "timeseries.parquet"))


def test_an_agent_with_another_scenario_is_refused(tmp_path, mqtt_broker, keys):
    """An external agent started with a different scenario refuses the run naming the keys
    that differ; the plant, which lost that agent for good, writes its results and exits
    non-zero naming it."""
    agent = subprocess.Popen(
        [*_agent(mqtt_broker.url, keys), *_sets("control.pop_size=14", "comm.run_id=mismatch")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    plant = subprocess.run(
        [
            *_plant(mqtt_broker.url, keys),
            "--out",
            str(tmp_path / "plant"),
            *_sets("comm.run_id=mismatch"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    _, err = agent.communicate(timeout=60)
    assert agent.returncode == 2, err
    assert err.strip().count("\n") == 0 and "control.pop_size" in err, err
    assert plant.returncode == 2, plant.stderr
    assert "central" in plant.stderr and "lost for good" in plant.stderr
    s = json.loads((tmp_path / "plant" / "summary.json").read_text())
    assert s["agents_lost"] == ["central"]
    assert [f["kind"] for f in s["faults"]] == ["mismatch", "fallback_on"]
    assert json.loads((tmp_path / "plant" / "complete.json").read_text())["complete"] is True


def test_a_lost_agent_fails_the_run_unless_accepted(tmp_path, mqtt_broker, keys):
    """No agent ever comes online: the plant runs on local fallback, writes its results and
    exits non-zero; with ``comm.accept_fallback`` the same run exits 0."""
    base = _plant(mqtt_broker.url, keys)
    short = _sets("comm.startup_timeout_s=1", "run.duration_h=0.5")
    lost = subprocess.run(
        [*base, "--out", str(tmp_path / "a"), *short], capture_output=True, text=True, timeout=300
    )
    assert lost.returncode == 2 and "lost for good" in lost.stderr, lost.stderr
    assert (tmp_path / "a" / "timeseries.parquet").is_file()
    ok = subprocess.run(
        [*base, "--out", str(tmp_path / "b"), *short, "--set", "comm.accept_fallback=true"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    s = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert s["agents_lost"] == ["central"] and s["faults"][0]["kind"] == "startup"


@pytest.mark.slow
def test_external_agent_exits_non_zero_when_the_plant_dies(tmp_path, mqtt_broker, keys):
    """The plant is killed mid-run: its external agent ends with one line naming the lost
    plant and a non-zero exit (not "run over" and 0)."""
    sets = _sets("comm.run_id=plantdies", "comm.watchdog_s=2", "run.duration_h=24")
    agent = subprocess.Popen(
        [*_agent(mqtt_broker.url, keys), *sets],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    plant = subprocess.Popen(
        [*_plant(mqtt_broker.url, keys), "--out", str(tmp_path / "p"), *sets],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    async def first_setpoint() -> bool:
        async with MqttTransport(mqtt_broker.url, "watcher.x") as t:
            await t.subscribe("clustersim/+/setpoint/central/plant")
            return await t.receive(120) is not None

    assert asyncio.run(first_setpoint()), "the agent sent no setpoint"
    assert plant.poll() is None
    os.kill(plant.pid, signal.SIGKILL)
    plant.wait()
    _, err = agent.communicate(timeout=120)
    assert agent.returncode == 2, err
    assert "lost the plant" in err and err.strip().count("\n") == 0, err


def test_external_agents_need_a_broker_they_can_reach(tmp_path):
    """The embedded broker a run starts admits only the nodes it starts: a run whose agents
    are started elsewhere is refused without a broker URL, before any agent or broker starts;
    its folder says why it is incomplete."""
    from clustersim.errors import ScenarioError
    from clustersim.fileio import incomplete_reason

    sc = load_scenario(CENTRAL, overrides=[*SHORT, "run.agents=external", "comm.keys=x.toml"])
    with pytest.raises(ScenarioError, match="needs a broker"):
        run_scenario(sc, tmp_path / "r")
    assert "needs a broker" in str(incomplete_reason(tmp_path / "r"))
