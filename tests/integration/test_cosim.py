"""The co-simulation over real brokers: determinism across transports, security, faults.

Every broker here is started by the test on a free loopback port (mosquitto where the binary
exists, else the embedded amqtt broker); none relies on a broker the machine happens to run.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from clustersim.broker.mosquitto import MosquittoBroker, mosquitto_path
from clustersim.broker.transport import MqttTransport
from clustersim.results.tables import WALL_CLOCK_KEYS
from clustersim.runner import run_scenario
from clustersim.scenario import load_scenario

# one hour of ieee33-ev-clustered with a light optimizer budget: 4 control intervals
SHORT = [
    "run.duration_h=1",
    "control.pop_size=12",
    "control.generations=4",
    "control.round_generations=2",
    "comm.watchdog_s=10",
]


def _run(tmp: Path, name: str, *overrides: str, scenario: str = "ieee33-ev-clustered"):
    sc = load_scenario(scenario, overrides=[*SHORT, *overrides])
    return run_scenario(sc, out_dir=tmp / name)


def _summary(res) -> dict:
    s = json.loads((res.out_dir / "summary.json").read_text())
    return {k: v for k, v in s.items() if k not in WALL_CLOCK_KEYS}


@pytest.mark.parametrize("coordination", ["boundary", "value-table", "admm", "none"])
def test_same_numbers_on_memory_embedded_and_mosquitto(tmp_path, embedded_broker, coordination):
    mode = f"control.coordination={coordination}"
    runs = {
        "memory": _run(tmp_path, "memory", "comm.transport=memory", mode),
        "embedded": _run(tmp_path, "embedded", f"comm.broker={embedded_broker.url}", mode),
    }
    if mosquitto_path():
        with MosquittoBroker(workdir=tmp_path / "mosq") as mq:
            runs["mosquitto"] = _run(tmp_path, "mosquitto", f"comm.broker={mq.url}", mode)
    ref = runs["memory"]
    assert ref.summary["messages_sent"] > 0 and ref.summary["faults"] == []
    assert ref.summary["latency_p50_ms"] is not None
    ts = pd.read_parquet(ref.out_dir / "timeseries.parquet")
    for name, res in runs.items():
        assert _summary(res) == _summary(ref), name
        assert pd.read_parquet(res.out_dir / "timeseries.parquet").equals(ts), name
    for f in ("messages.parquet", "steps.parquet", "agent_steps.parquet", "control.parquet"):
        assert (ref.out_dir / f).is_file()
    msgs = pd.read_parquet(ref.out_dir / "messages.parquet")
    rounds = set() if coordination == "none" else {"boundary"}
    assert set(msgs.kind) == {"meas", "setpoint", *rounds}
    assert len(msgs) == ref.summary["messages_sent"]
    assert ref.summary["coordination"] == coordination
    steps = pd.read_parquet(ref.out_dir / "steps.parquet")
    assert len(steps) == 4 and "messages_sent" in steps


def test_loss_and_latency_change_the_run(tmp_path):
    clean = _run(tmp_path, "clean", "comm.transport=memory", "comm.loss.p=0")
    lossy = _run(tmp_path, "lossy", "comm.transport=memory", "comm.loss.p=0.5")
    assert clean.summary["messages_lost"] == 0
    assert lossy.summary["messages_lost"] > 0.3 * lossy.summary["messages_sent"]
    assert lossy.summary["coordination_rounds_mean"] < clean.summary["coordination_rounds_mean"]
    slow = _run(
        tmp_path,
        "slow",
        "comm.transport=memory",
        "comm.loss.p=0",
        "comm.latency.dist=constant",
        "comm.latency.mean_ms=30000",
    )
    # a measurement 30 s old, rounds past the 60 s deadline: late messages, staler decisions
    assert slow.summary["messages_late"] > 0
    assert slow.summary["mean_age_of_information_s"] > clean.summary["mean_age_of_information_s"]


def test_channel_faults_are_part_of_the_deterministic_summary(tmp_path):
    """A fallback the channel causes (every setpoint of C1 lost for longer than the agent
    timeout) is recorded as a fault, identically in two runs: no wall-clock time in it."""
    lossy = [
        "comm.transport=memory",
        "comm.agent_timeout_s=600",
        "comm.links=[{src='C1', dst='plant', loss={model='bernoulli', p=1.0}}]",
    ]
    a = _run(tmp_path, "a", *lossy)
    b = _run(tmp_path, "b", *lossy)
    kinds = [(f["node"], f["kind"]) for f in a.summary["faults"]]
    assert ("plant", "fallback_on") in kinds
    assert all("wall_time_s" not in f for f in a.summary["faults"])
    assert _summary(a) == _summary(b)
    assert a.summary["reproducible"] is True and a.summary["clock"] == "virtual"


@pytest.mark.parametrize("coordination", ["boundary", "value-table", "admm"])
def test_agent_without_measurement_keeps_the_protocol(tmp_path, coordination):
    """C2 never gets a measurement (every plant → C2 message lost): it has nothing to decide
    on, but still sends its (empty) round messages, so its neighbours never wait out the
    watchdog; its devices go to the fallback after the agent timeout."""
    res = _run(
        tmp_path,
        "blind",
        "comm.transport=memory",
        f"control.coordination={coordination}",
        "comm.agent_timeout_s=600",
        "comm.links=[{src='plant', dst='C2', loss={model='bernoulli', p=1.0}}]",
    )
    faults = res.summary["faults"]
    # agents' own faults arrive at the plant as "remote" log messages
    assert not any("watchdog" in f["kind"] + f["detail"] for f in faults), faults
    assert ("plant", "fallback_on") in {(f["node"], f["kind"]) for f in faults}
    ctl = pd.read_parquet(res.out_dir / "control.parquet")
    c2 = ctl[ctl.controller == "C2"]
    assert len(c2) == 4 and c2.f_voltage_pu.isna().all()  # C2 never decided ...
    assert (c2.setpoints == "{}").all()  # ... and sent its "no change" setpoint each interval
    assert ctl[ctl.controller != "C2"].f_voltage_pu.notna().all()
    msgs = pd.read_parquet(res.out_dir / "messages.parquet")
    from_c2 = msgs[(msgs.kind == "boundary") & (msgs.src == "C2")]
    assert len(from_c2) > 0  # its neighbours got its empty round messages


def test_a_lost_value_table_falls_back_to_the_last_one(tmp_path):
    """Every message C4 sends its parent C3 in [900 s, 2700 s) is lost (an outage of that link):
    C3 decides in intervals 1 and 2 on C4's table of interval 0, and records its age; from
    interval 3 on the tables come again. C4 still gets C3's announced voltages."""
    res = _run(
        tmp_path,
        "outage",
        "comm.transport=memory",
        "control.coordination=value-table",
        "control.coordination_rounds=2",
        "comm.loss.p=0",
        "comm.links=[{src='C4', dst='C3', outages=[{start_s=900, end_s=2700}]}]",
    )
    ctl = pd.read_parquet(res.out_dir / "control.parquet").sort_values("interval")
    c3 = ctl[ctl.controller == "C3"]
    assert [json.loads(a).get("C4") for a in c3.table_age] == [0, 1, 2, 0]
    assert list(c3.rounds_completed) == [2, 0, 0, 2]  # no sweep complete without C4's table
    c4 = ctl[ctl.controller == "C4"]
    assert all(json.loads(u) for u in c4.boundary_used_vm_pu)
    assert res.summary["table_age_max_intervals"] == 2
    assert res.summary["faults"] == []
    # coordination.parquet: 4 ties × 4 rounds (2 sweeps) per interval; the children's tables
    # go up in the odd rounds; in the even ones each child decides for the voltage its parent
    # announced (no loss but the outage): no voltage residual
    coord = pd.read_parquet(res.out_dir / "coordination.parquet")
    assert len(coord) == 4 * 4 * 4 and set(coord["round"]) == {1, 2, 3, 4}
    up, down = coord[coord["round"] % 2 == 1], coord[coord["round"] % 2 == 0]
    assert (up.table != "").all() and (down.table == "").all()
    assert (down.residual_vm_pu == 0).all() and res.summary["primal_residual_vm_pu"] == 0
    assert set(zip(coord.parent, coord.child, strict=True)) == {
        ("C1", "C2"),
        ("C2", "C3"),
        ("C3", "C4"),
        ("C1", "C5"),
    }


def test_realtime_clock(tmp_path):
    """Real time at 900 simulated s per wall s (one interval per second): the run completes,
    latency is a real delay, and the summary says the results are not reproducible."""
    res = _run(
        tmp_path,
        "rt",
        "comm.transport=memory",
        "comm.clock=realtime",
        "comm.speed=900",
        "comm.loss.p=0",
        "comm.latency.dist=constant",
        "comm.latency.mean_ms=5000",
    )
    s = res.summary
    assert s["clock"] == "realtime" and s["reproducible"] is False
    assert s["steps"] == 60 and s["powerflow_failures"] == 0
    assert s["controllers"] == 5 and s["messages_sent"] > 0
    assert s["latency_p50_ms"] == pytest.approx(5000.0)
    # 1 h simulated at 900x: about 4 s of wall time for the run loop, not less
    assert 3.5 < s["run_loop_wall_time_s"] < 60
    ctl = pd.read_parquet(res.out_dir / "control.parquet")
    assert len(ctl) == 4 * 5
    # every decision came at least one latency after its measurement was sent
    assert (ctl.age_of_information_s >= 5.0 - 1e-6).all()
    applied = ctl[ctl.applied_step >= 0]
    assert len(applied) > 0
    # applied at the first plant step after the setpoint's delivery (5 s after sending)
    assert (applied.applied_step * 60 >= applied.t_sent_s + 5.0 - 1e-6).all()


@pytest.mark.slow
def test_killed_agent_process_falls_back(tmp_path, mqtt_broker):
    """One agent process is killed mid-run: watchdog fault, local fallback, run completes."""
    import multiprocessing as mp
    import os
    import signal

    killed: list[int] = []

    async def watch_and_kill() -> None:
        # kill C3 once it is serving (its first setpoint crossed the broker), so that the
        # plant's watchdog, not its startup timeout, is what finds it gone
        async with MqttTransport(mqtt_broker.url, "killer") as t:
            await t.subscribe("clustersim/+/setpoint/C3/plant")
            end = time.monotonic() + 240
            while time.monotonic() < end and not killed:
                if await t.receive(1.0) is None:
                    continue
                for p in mp.active_children():
                    if p.name == "clustersim-agent-C3" and p.pid:
                        os.kill(p.pid, signal.SIGKILL)
                        killed.append(p.pid)

    def killer() -> None:
        asyncio.run(watch_and_kill())

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    res = _run(
        tmp_path,
        "killed",
        f"comm.broker={mqtt_broker.url}",
        "run.agents=processes",
        "run.duration_h=3",
        "comm.watchdog_s=3",
        "comm.agent_timeout_s=900",
        "comm.accept_fallback=true",  # C3 is lost for good: a failed run otherwise
    )
    th.join(timeout=1)
    assert killed
    kinds = {(f["kind"], f["node"]) for f in res.summary["faults"]}
    assert ("watchdog", "plant") in kinds
    assert res.summary["reproducible"] is False  # a wall-clock timeout changed the physics
    assert any(k == "fallback_on" for k, _ in kinds)
    ctl = pd.read_parquet(res.out_dir / "control.parquet")
    assert 1 <= (ctl.controller == "C3").sum() < 12  # it decided, then fell silent
    assert res.summary["steps"] == 180  # the run completed
    assert res.summary["agents_lost"] == ["C3"]


@pytest.mark.slow
@pytest.mark.skipif(mosquitto_path() is None, reason="needs the mosquitto binary")
def test_broker_restart_mid_run(tmp_path):
    """Mosquitto is killed and restarted mid-run: the run completes, the outage is recorded."""
    with MosquittoBroker(workdir=tmp_path / "mosq") as mq:
        done = threading.Event()

        async def first_setpoint() -> None:
            async with MqttTransport(mq.url, "outage-watch") as t:
                await t.subscribe("clustersim/+/setpoint/#")
                await t.receive(120)

        def outage() -> None:
            asyncio.run(first_setpoint())  # the agents are deciding: cut the broker now
            mq.kill()
            time.sleep(2.0)  # the outage itself lasts 2 s of wall time
            mq.restart()
            done.set()

        th = threading.Thread(target=outage, daemon=True)
        th.start()
        res = _run(tmp_path, "outage", f"comm.broker={mq.url}", "run.duration_h=4")
        th.join(timeout=30)
    assert done.is_set()
    assert res.summary["steps"] == 240
    # the outage is a transport event, not a fault of the simulation
    kinds = [e["kind"] for e in res.summary["transport_events"]]
    assert "reconnected" in kinds
    assert "reconnected" not in [f["kind"] for f in res.summary["faults"]]


def _cli(*args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "clustersim.cli", *args]


def test_plant_and_agent_commands_across_processes(tmp_path, mqtt_broker):
    """`clustersim plant` and `clustersim agent` as separate OS processes finish one run, with
    the same numbers as the in-process run over the memory transport."""
    import subprocess

    sc = "ieee33-ev-centralized"
    acl = subprocess.run(_cli("acl", sc, "--out", str(tmp_path / "acl")), capture_output=True)
    assert acl.returncode == 0, acl.stderr
    keys = str(tmp_path / "acl" / "keys.toml")
    sets = [a for o in SHORT for a in ("--set", o)] + ["--set", "comm.run_id=cli-run"]
    sets += ["--keys", keys]
    agent = subprocess.Popen(
        _cli("agent", "--scenario", sc, "--cluster", "central", "--broker", mqtt_broker.url, *sets),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    plant = subprocess.run(
        _cli(
            "plant",
            "--scenario",
            sc,
            "--broker",
            mqtt_broker.url,
            "-q",
            "--out",
            str(tmp_path / "cli"),
            *sets,
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    out, _ = agent.communicate(timeout=60)
    assert plant.returncode == 0, plant.stdout + plant.stderr
    assert agent.returncode == 0, out
    ref = _run(tmp_path, "ref", "comm.transport=memory", "comm.run_id=cli-run", scenario=sc)
    got = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert {k: v for k, v in got.items() if k not in WALL_CLOCK_KEYS} == _summary(ref)


def test_acl_command_names_every_node(tmp_path):
    import subprocess

    r = subprocess.run(
        _cli("acl", "ieee33-ev-clustered", "--out", str(tmp_path / "acl")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    acl = (tmp_path / "acl" / "acl").read_text()
    passwd = (tmp_path / "acl" / "passwd").read_text()
    for node in ("plant", "C1", "C2", "C3", "C4", "C5"):
        assert f"{node}:" in passwd
    assert "setpoint" in acl and "meas" in acl
