"""A private Mosquitto broker for tests and single-machine runs.

:class:`MosquittoBroker` writes a configuration for one loopback listener into a work folder and
runs the ``mosquitto`` binary on it; :meth:`~MosquittoBroker.kill` and
:meth:`~MosquittoBroker.restart` (same port) exist for fault tests. With a password file (see
:func:`clustersim.broker.acl.write_acl_files`) anonymous clients are refused; with an ACL file
a client may only publish and subscribe where the file lets it (Mosquitto drops a forbidden
publish silently).

It never touches a system broker: the port is always a fresh free one unless given, and the
broker keeps nothing on disk (``persistence false``), so a killed broker forgets every session
and every message it had queued.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from clustersim.broker.embedded import LocalBroker, free_port, port_open, wait_for_port
from clustersim.errors import BrokerError

__all__ = ["MosquittoBroker", "mosquitto_path"]

_FALLBACK_DIRS = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin")


def mosquitto_path() -> str | None:
    """Path of the ``mosquitto`` binary (``PATH`` first, then ``/usr/sbin`` and friends)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for folder in _FALLBACK_DIRS:
        candidate = Path(folder) / "mosquitto"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


class MosquittoBroker(LocalBroker):
    """Mosquitto on ``127.0.0.1:port`` (a free port when ``port`` is ``None``).

    ``passwd_file`` and ``acl_file`` are mosquitto ``password_file`` and ``acl_file`` paths;
    without a password file anonymous clients are allowed. ``workdir`` receives
    ``mosquitto.conf`` and ``mosquitto.log`` (a temporary folder, removed by :meth:`stop`, when
    not given). ``start_timeout_s`` bounds every wait for the port (seconds).

    Raises :class:`BrokerError` when the binary is missing (at construction) or the broker does
    not start (naming the last line of its log).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        passwd_file: str | os.PathLike[str] | None = None,
        acl_file: str | os.PathLike[str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        start_timeout_s: float = 10.0,
    ):
        binary = mosquitto_path()
        if binary is None:
            raise BrokerError("mosquitto binary not found (looked in PATH and /usr/sbin)")
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port(self.host)
        self.passwd_file = Path(passwd_file).resolve() if passwd_file is not None else None
        self.acl_file = Path(acl_file).resolve() if acl_file is not None else None
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else None
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:port`` of the broker."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def conf_path(self) -> Path:
        """The generated ``mosquitto.conf`` in the broker's work directory."""
        return self._workdir() / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        """The broker's log file in its work directory."""
        return self._workdir() / "mosquitto.log"

    @property
    def running(self) -> bool:
        """Whether the mosquitto process is running."""
        return self._proc is not None and self._proc.poll() is None

    def config_text(self) -> str:
        """The mosquitto.conf this broker runs with."""
        lines = [
            "# written by clustersim.broker.mosquitto",
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.passwd_file else 'true'}",
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            # no Nagle delay on the many small QoS 1 messages and their PUBACKs
            "set_tcp_nodelay true",
            # QoS 1 messages for a slow or offline subscriber are queued, not dropped at 1000
            "max_queued_messages 100000",
            # mosquitto started as root drops to user "mosquitto", which cannot read our files
            f"user {_current_user()}",
        ]
        if self.passwd_file is not None:
            lines.append(f"password_file {self.passwd_file}")
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        return "\n".join(lines) + "\n"

    def start(self) -> MosquittoBroker:
        """Start mosquitto; return once the port accepts TCP connections (else BrokerError)."""
        if self.running:
            return self
        self.conf_path.write_text(self.config_text())
        self._spawn_until_listening(self.start_timeout_s)
        return self

    def stop(self) -> None:
        """Stop the broker with SIGTERM (SIGKILL after 5 s); idempotent. Removes a temp workdir."""
        self._terminate(signal.SIGTERM)
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def kill(self) -> None:
        """SIGKILL the broker (a crash: no will messages sent, every queued message lost)."""
        self._terminate(signal.SIGKILL)

    def restart(self) -> MosquittoBroker:
        """Kill the broker if it runs and start it again on the same port."""
        self._terminate(signal.SIGTERM)
        self._spawn_until_listening(self.start_timeout_s)
        return self

    def log_text(self) -> str:
        """The broker's log so far ("" when there is none)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __repr__(self) -> str:
        return f"MosquittoBroker({self.url}, running={self.running})"

    # ------------------------------------------------------------ internals

    def _workdir(self) -> Path:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="clustersim-mosquitto-"))
            self._own_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        return self.workdir

    def _terminate(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5.0)

    def _died(self) -> str | None:
        if self._proc is None or self._proc.poll() is None:
            return None
        lines = [ln for ln in self.log_text().splitlines() if ln.strip()]
        tail = lines[-1] if lines else "no log"
        return f"mosquitto exited with code {self._proc.returncode}: {tail}"

    def _spawn_until_listening(self, timeout_s: float) -> None:
        """Start the process; retry while the port is still held (a restart right after a kill)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if port_open(self.host, self.port):
                raise BrokerError(f"port {self.host}:{self.port} is already in use")
            try:
                self._proc = subprocess.Popen(
                    [self.binary, "-c", str(self.conf_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as e:
                raise BrokerError(f"cannot run {self.binary}: {e}") from None
            try:
                wait_for_port(
                    self.host,
                    self.port,
                    max(0.1, deadline - time.monotonic()),
                    alive=self._died,
                    what="mosquitto",
                )
                return
            except BrokerError as e:
                address_busy = "in use" in str(e).lower()
                self._terminate(signal.SIGKILL)
                if not address_busy or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def _current_user() -> str:
    with contextlib.suppress(Exception):
        return getpass.getuser()
    return "root" if os.geteuid() == 0 else "nobody"
