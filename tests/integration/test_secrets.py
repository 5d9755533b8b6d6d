"""No secret in any output: a broker password given in the URL appears in no file of the
results folder and on no console line; a URL without one takes it from the environment."""

from __future__ import annotations

import os
import subprocess
import sys

from clustersim.broker.transport import PASSWORD_ENV, parse_url, without_password

SECRET = "s3cret-Pw"


def test_password_comes_from_the_environment(monkeypatch):
    """mqtt://user@host takes its password from CLUSTERSIM_BROKER_PASSWORD; the URL shown has
    none."""
    monkeypatch.setenv(PASSWORD_ENV, SECRET)
    addr = parse_url("mqtt://C1@127.0.0.1:1883")
    assert addr.username == "C1" and addr.password == SECRET
    assert SECRET not in repr(addr) and SECRET not in str(addr)
    assert without_password(f"mqtt://C1:{SECRET}@h:1") == "mqtt://C1@h:1"


def test_no_password_in_results_or_console(embedded_broker, tmp_path):
    """A run given a password in its broker URL writes it nowhere."""
    url = f"mqtt://plant:{SECRET}@127.0.0.1:{embedded_broker.port}"
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "clustersim.cli",
            "run",
            "ieee33-ev-centralized",
            "--set",
            "run.duration_h=0.5",
            "--set",
            "control.generations=3",
            "--broker",
            url,
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    leaks = [p.name for p in out.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaks, leaks
    assert f"plant@127.0.0.1:{embedded_broker.port}" in (out / "scenario.toml").read_text()
