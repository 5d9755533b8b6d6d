"""``clustersim broker`` in the foreground: a busy port ends in one clean line."""

from __future__ import annotations

import socket
import subprocess
import sys


def test_broker_on_a_busy_port_prints_one_line_and_exits_2():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "clustersim.cli", "broker", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 2
    assert r.stdout == ""  # never claimed to listen
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"error: embedded broker cannot listen on 127.0.0.1:{port}")
    assert "address already in use" in lines[0]
