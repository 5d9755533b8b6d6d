"""docker-compose.yml: its services, its credential files, and its commands run for real.

No Docker engine runs here, so the test reads the compose file, starts a local broker (mosquitto
with compose/passwd and compose/acl when the binary exists, else the embedded amqtt broker) and
runs every clustersim service's command as a local process against it, with a short horizon.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

yaml = pytest.importorskip("yaml")

from clustersim.broker.acl import acl_text, verify_password  # noqa: E402
from clustersim.broker.mosquitto import MosquittoBroker, mosquitto_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
CLUSTERS = [f"C{i}" for i in range(1, 6)]
SHORT = [
    "run.duration_h=1",
    "control.pop_size=12",
    "control.generations=4",
    "control.round_generations=2",
    "comm.watchdog_s=20",
]
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def _interpolate(text: str) -> str:
    """Compose's ``${VAR:-default}`` with the defaults (the test ignores the environment)."""
    return _VAR.sub(lambda m: m.group(2) or "", text)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _command(service: dict) -> list[str]:
    cmd = service["command"]
    return (
        shlex.split(_interpolate(cmd)) if isinstance(cmd, str) else [_interpolate(c) for c in cmd]
    )


def _broker_url(argv: list[str]) -> str:
    return argv[argv.index("--broker") + 1]


def _default(compose: dict) -> dict:
    """The services a plain ``docker compose up`` starts (those without a profile)."""
    return {k: v for k, v in compose["services"].items() if "profiles" not in v}


def test_services_of_the_default_scenario(compose):
    services = _default(compose)
    assert set(services) == {"mosquitto", "plant", *(c.lower() for c in CLUSTERS)}
    mq = services["mosquitto"]
    assert mq["image"].startswith("eclipse-mosquitto:2")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in mq["volumes"]}
    assert mounts["/mosquitto/config/mosquitto.conf"] == "./compose/mosquitto.conf"
    conf = (ROOT / "compose" / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf
    for name in ("passwd", "acl"):
        inside = f"/mosquitto/config/{name}"
        assert mounts[inside] == f"./compose/{name}" and inside in conf
    assert "results" in compose["volumes"]
    plant = _command(services["plant"])
    assert plant[:2] == ["clustersim", "plant"]
    assert plant[plant.index("--scenario") + 1] == "ieee33-ev-clustered"
    assert plant[plant.index("--out") + 1].startswith("/results/")
    assert any(v.startswith("results:/results") for v in services["plant"]["volumes"])
    for cluster in CLUSTERS:
        svc = services[cluster.lower()]
        argv = _command(svc)
        assert argv[:2] == ["clustersim", "agent"]
        assert argv[argv.index("--cluster") + 1] == cluster
        assert argv[argv.index("--scenario") + 1] == "ieee33-ev-clustered"
        assert _broker_url(argv).startswith(f"mqtt://{cluster}:")
        assert svc["build"]["dockerfile"] == "compose/Dockerfile"
        assert (ROOT / svc["build"]["dockerfile"]).is_file()
        assert "mosquitto" in svc["depends_on"]


def test_credential_files_match_the_compose_file(compose):
    passwd = {
        line.split(":", 1)[0]: line
        for line in (ROOT / "compose" / "passwd").read_text().splitlines()
        if line.strip()
    }
    assert set(passwd) == {"plant", *CLUSTERS}
    for name in ("plant", *(c.lower() for c in CLUSTERS)):
        url = _broker_url(_command(compose["services"][name]))
        m = re.fullmatch(r"mqtt://([^:@/]+):([^@/]+)@mosquitto:1883", url)
        assert m, url
        user, password = m.groups()
        assert verify_password(passwd[user], password), user
    assert (ROOT / "compose" / "acl").read_text() == acl_text(CLUSTERS)


def test_default_scenario_has_exactly_these_agents():
    from clustersim.assemble.build import scenario_clusters
    from clustersim.scenario import load_scenario

    assert list(scenario_clusters(load_scenario("ieee33-ev-clustered"))) == CLUSTERS


def _local(argv: list[str], host_port: str, out: Path, run_id: str) -> list[str]:
    """A service command as a local process: this venv's clustersim, the local broker, a
    temporary results folder and a short horizon."""
    assert argv[0] == "clustersim"
    args = [a.replace("@mosquitto:1883", f"@{host_port}") for a in argv[1:]]
    if "--out" in args:
        args[args.index("--out") + 1] = str(out)
    sets = [x for o in [*SHORT, f"comm.run_id={run_id}"] for x in ("--set", o)]
    return [sys.executable, "-m", "clustersim.cli", *args, *sets]


def test_compose_commands_run_as_local_processes(compose, tmp_path):
    services = _default(compose)
    # CLUSTERSIM_TEST_BROKER=embedded: amqtt even where mosquitto exists (as in conftest.py)
    auth = mosquitto_path() is not None and os.environ.get("CLUSTERSIM_TEST_BROKER") != "embedded"
    if auth:
        broker = MosquittoBroker(
            passwd_file=ROOT / "compose" / "passwd",
            acl_file=ROOT / "compose" / "acl",
            workdir=tmp_path / "mosquitto",
        )
    else:  # no mosquitto: the embedded broker, without the password and ACL checks
        from clustersim.broker.embedded import EmbeddedBroker

        broker = EmbeddedBroker()
    run_id = f"compose-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "results"
    keys = compose["x-clustersim"]["environment"]["CLUSTERSIM_KEYS_FILE"]
    assert f"./compose/keys.toml:{keys}:ro" in compose["x-clustersim"]["volumes"]
    assert f"./compose/keys.toml:{keys}:ro" in services["plant"]["volumes"]
    env = {
        **os.environ,
        "MPLBACKEND": "Agg",
        "CLUSTERSIM_KEYS_FILE": str(ROOT / "compose" / "keys.toml"),
    }
    procs: dict[str, subprocess.Popen[str]] = {}
    with broker:
        host_port = broker.url.removeprefix("mqtt://")
        try:
            for name in sorted(services):
                if name == "mosquitto":
                    continue
                argv = _local(_command(services[name]), host_port, out, run_id)
                procs[name] = subprocess.Popen(
                    argv,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env=env,
                    cwd=tmp_path,
                )
            plant_out, _ = procs["plant"].communicate(timeout=300)
            assert procs["plant"].returncode == 0, plant_out
            for name, proc in procs.items():
                got, _ = proc.communicate(timeout=60)
                assert proc.returncode == 0, f"{name}: {got}"
                if name != "plant":
                    assert "run over" in got, f"{name}: {got}"
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        log = broker.log_text() if auth else ""  # type: ignore[union-attr]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenario"] == "ieee33-ev-clustered" and summary["mode"] == "clustered"
    assert summary["controllers"] == 5 and summary["faults"] == []
    assert summary["messages_sent"] > 0 and summary["messages_rejected"] == 0
    msgs = pd.read_parquet(out / "messages.parquet")
    assert len(msgs) == summary["messages_sent"]
    assert set(msgs.src) | set(msgs.dst) == {"plant", *CLUSTERS}
    assert (out / "report.html").is_file()
    if auth:  # every node logged in under its own name
        for node in ("plant", *CLUSTERS):
            assert f"u'{node}'" in log, node


def test_dask_services_run_a_sweep(compose, tmp_path):
    """The profile "dask": its scheduler and worker commands run as local processes (ports of
    this machine), and the client's sweep command, pointed at that scheduler with a short
    horizon, completes."""
    dask = {k: v for k, v in compose["services"].items() if "dask" in v.get("profiles", [])}
    assert set(dask) == {"dask-scheduler", "dask-worker", "dask-client"}
    scheduler, worker, client = (_command(dask[k]) for k in dask)
    assert scheduler[:2] == ["dask", "scheduler"] and worker[:2] == ["dask", "worker"]
    assert client[:2] == ["clustersim", "sweep"] and "--scheduler" in client
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    scheduler[scheduler.index("--port") + 1] = str(port)
    worker[2] = address
    procs = [
        subprocess.Popen([str(bin_dir / scheduler[0]), *scheduler[1:]], cwd=tmp_path),
    ]
    try:
        procs.append(subprocess.Popen([str(bin_dir / worker[0]), *worker[1:]], cwd=tmp_path))
        client[client.index("--scheduler") + 1] = address
        client[client.index("--out") + 1] = str(tmp_path / "sweep")
        sets = ["run.duration_h=0.25", "run.plant_step_s=300", "control.pop_size=8"]
        argv = [sys.executable, "-m", "clustersim.cli", *client[1:]]
        argv += [x for s in sets for x in ("--set", s)]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        frame = pd.read_parquet(tmp_path / "sweep" / "sweep.parquet")
        assert len(frame) == 3 and frame["error"].isna().all()
    finally:
        for proc in procs[::-1]:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
