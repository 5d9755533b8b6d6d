"""An embedded MQTT broker (the ``amqtt`` package), so a fresh machine needs nothing but pip.

When a scenario names no broker, the run starts one on a free loopback port and stops it at the end.
:class:`EmbeddedBroker` does that; by default the broker runs in a child process
(``python -m clustersim.broker.embedded --host H --port P``) so that it does not share the GIL with
a CPU-heavy simulation, or, with ``in_process=True``, in a daemon thread with its own event loop
(handy in tests, and where spawning processes is not allowed).

The broker speaks MQTT 3.1.1 [MQTT311] only, allows anonymous clients, opens no websocket listener
and publishes no ``$SYS`` topics; its logging is limited to warnings. It keeps no state on disk: a
stopped broker forgets every session, subscription and queued message.

:func:`serve` runs the same broker in the foreground until Ctrl-C (``clustersim broker``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import quote

from clustersim.broker.acl import (
    NodeRights,
    parse_acl,
    parse_passwd,
    verify_password,
    write_acl_files,
)
from clustersim.broker.transport import topic_matches
from clustersim.errors import BrokerError

__all__ = ["EmbeddedBroker", "LocalBroker", "amqtt_config", "free_port", "serve", "wait_for_port"]

log = logging.getLogger(__name__)

_QUIET_LOGGERS = ("amqtt", "transitions", "passlib")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nobody listens on right now (asked from the kernel).

    Another process may take it before the caller binds it; the window is small enough for
    tests and single-machine runs.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds within ``timeout_s`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str, port: int, timeout_s: float, *, alive: Any = None, what: str = "broker"
) -> None:
    """Block until ``host:port`` accepts TCP connections; :class:`BrokerError` after ``timeout_s``.

    ``alive`` is an optional callable returning a one-line reason when the server died (then
    the wait stops at once), or ``None`` while it still runs.
    """
    deadline = time.monotonic() + timeout_s
    delay_s = 0.01
    while True:
        if alive is not None:
            reason = alive()
            if reason:
                raise BrokerError(f"{what} on {host}:{port} did not start: {reason}")
        if port_open(host, port):
            return
        if time.monotonic() > deadline:
            raise BrokerError(
                f"{what} on {host}:{port} did not accept connections within {timeout_s:g} s"
            )
        time.sleep(delay_s)
        delay_s = min(delay_s * 1.5, 0.1)


def amqtt_config(host: str, port: int, auth_dir: Path | None = None) -> dict[str, Any]:
    """The amqtt broker configuration: one TCP listener and the :data:`NodeAuthPlugin`.

    Without ``auth_dir`` every client is admitted and may publish and subscribe anywhere. With
    it, the broker reads ``passwd`` and ``acl`` there (as :func:`clustersim.broker.acl.
    write_acl_files` writes them, the files Mosquitto reads): a client must log in as a node
    with its password and a client id starting with ``"<node>."``, and may publish, subscribe
    and receive only where the ACL lets it (:data:`NodeTopicPlugin`).

    Leaving out amqtt's default plugin list disables ``$SYS`` topics and the event/packet
    loggers. Clients are admitted by the plugin rather than amqtt's ``AnonymousAuthPlugin``:
    amqtt neither queues QoS 1 messages for an offline session marked anonymous nor keeps such
    a session, and that plugin marks every session anonymous.
    """
    plugins: dict[str, Any] = {
        f"{__name__}.NodeAuthPlugin": {
            "passwd_file": str(auth_dir / "passwd") if auth_dir is not None else ""
        }
    }
    if auth_dir is not None:
        plugins[f"{__name__}.NodeTopicPlugin"] = {"acl_file": str(auth_dir / "acl")}
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 0}},
        "plugins": plugins,
    }


_PLUGINS: dict[str, Any] = {}


def _admit(session: Any, users: dict[str, str] | None) -> bool:
    """Whether a connecting ``session`` may log in: everyone without ``users`` (user → password
    file line), else a known user with the right password and a client id ``"<user>.…"``."""
    if users is not None:
        user, password = session.username, session.password
        line = users.get(user) if isinstance(user, str) else None
        if line is None or not isinstance(password, str) or not verify_password(line, password):
            log.warning("embedded broker: refused login of user %r", str(user)[:64])
            return False
        if not str(session.client_id).startswith(f"{user}."):
            log.warning(
                "embedded broker: user %r may not use client id %r", user, session.client_id
            )
            return False
    session.is_anonymous = False
    # amqtt 0.12 reuses a disconnected session that is still waiting for its cleanup when the
    # same client id reconnects with clean_session=0, and keeps the old session's clean flag:
    # the new persistent session would then be treated as a clean one (nothing queued while
    # offline). A disconnected clean session can only reach this point through that path, so
    # fix the flag.
    state = getattr(getattr(session, "transitions", None), "state", None)
    if session.clean_session and state == "disconnected":
        session.clean_session = False
        session.parent = 0  # no session was present, as MQTT 3.1.1 says
    return True


def _permitted(rights: dict[str, NodeRights], session: Any, topic: str, action: str) -> bool:
    """Whether the ACL lets ``session``'s user subscribe to, receive or publish on ``topic``."""
    r = rights.get(getattr(session, "username", None) or "")
    if r is None or not topic:
        return False
    filters = r.write if action == "publish" else r.read
    return any(topic_matches(f, topic) for f in filters)


def _build_plugins() -> dict[str, Any]:
    """Build the plugin classes on first use (amqtt takes 0.2 s to import)."""
    if not _PLUGINS:
        # amqtt is imported only in the broker's own process
        from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

        class NodeAuthPlugin(BaseAuthPlugin):
            """Admit clients as regular, named sessions (so a persistent session gets its QoS 1
            messages queued while it is offline, as with Mosquitto); with ``passwd_file``, only
            its users with their passwords, each with a client id of its own (see
            :func:`amqtt_config`)."""

            @dataclass
            class Config:
                """``passwd_file``: a Mosquitto 2 password file, or empty to admit everyone."""

                passwd_file: str = ""

            def __init__(self, context: Any) -> None:
                super().__init__(context)
                path = self.config.passwd_file
                self.users = parse_passwd(Path(path).read_text()) if path else None

            async def authenticate(self, *, session: Any) -> bool:
                return _admit(session, self.users)

        class NodeTopicPlugin(BaseTopicPlugin):
            """Apply a Mosquitto ACL file to publish, subscribe and receive (see
            :func:`amqtt_config`)."""

            @dataclass
            class Config:
                """``acl_file``: an ACL file as :func:`clustersim.broker.acl.acl_text` writes."""

                acl_file: str = ""

            def __init__(self, context: Any) -> None:
                super().__init__(context)
                self.rights = parse_acl(Path(self.config.acl_file).read_text())

            async def topic_filtering(
                self, *, session: Any = None, topic: str | None = None, action: Any = None
            ) -> bool:
                return _permitted(self.rights, session, topic or "", str(action))

        for cls in (NodeAuthPlugin, NodeTopicPlugin):
            cls.__module__ = __name__
            _PLUGINS[cls.__name__] = cls
    return _PLUGINS


def __getattr__(name: str) -> Any:
    # amqtt loads plugins by dotted path: ``clustersim.broker.embedded.NodeAuthPlugin``
    if name in ("NodeAuthPlugin", "NodeTopicPlugin"):
        return _build_plugins()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _not_a_probe(record: logging.LogRecord) -> bool:
    """Drop amqtt's warnings about connections that sent nothing (our own port probes), and its
    traceback of a failed start (the caller raises :class:`BrokerError` with the cause)."""
    msg = record.getMessage()
    return not (
        "No data to decode" in msg
        or msg.startswith("No data from")
        or msg.startswith("Broker startup failed")
    )


def _quiet_logging() -> None:
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    broker_log = logging.getLogger("amqtt.broker")
    if _not_a_probe not in broker_log.filters:
        broker_log.addFilter(_not_a_probe)


async def _start_amqtt(host: str, port: int, auth_dir: Path | None = None) -> Any:
    from amqtt.broker import Broker  # imported late: amqtt is slow to import

    _quiet_logging()
    broker = Broker(amqtt_config(host, port, auth_dir))
    await broker.start()
    return broker


async def _run_until(
    host: str,
    port: int,
    stop: asyncio.Event,
    auth_dir: Path | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    broker = await _start_amqtt(host, port, auth_dir)
    if on_ready is not None:
        on_ready()
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(broker.shutdown(), timeout=5.0)


class LocalBroker:
    """What the local brokers share: ``with broker:`` starts it and stops it on the way out."""

    def start(self) -> LocalBroker:
        """Start the broker; return it once it accepts connections."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the broker (idempotent)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedBroker(LocalBroker):
    """An amqtt broker on ``host:port`` (a free port when ``port`` is ``None``).

    Use as a context manager (``with EmbeddedBroker() as b: ... b.url``) or call
    :meth:`start` and :meth:`stop`. ``start_timeout_s`` bounds the wait for the port to accept
    connections (seconds).

    With ``nodes`` (the plant and agent names of a run) the broker admits only those nodes,
    each with a password drawn for this broker, and applies the ACL ``clustersim acl`` writes
    for Mosquitto (:func:`amqtt_config`); :meth:`url_for` is a node's URL with its credentials.
    The files live in a private temporary folder removed by :meth:`stop`.

    With ``keep_alive`` (a broker in a child process), a watcher restarts the broker on its port
    when the process dies; clients reconnect as to a restarted Mosquitto. ``restarts`` lists
    why it died each time; ``failure`` says why it could not be restarted, if so.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        in_process: bool = False,
        start_timeout_s: float = 20.0,
        nodes: Sequence[str] | None = None,
        keep_alive: bool = False,
    ):
        self.auth_dir: Path | None = None
        self._passwords: dict[str, str] = {}
        if nodes is not None:
            self.auth_dir = Path(tempfile.mkdtemp(prefix="clustersim-broker-"))
            self._passwords = write_acl_files(list(nodes), self.auth_dir).passwords
        self.keep_alive = keep_alive and not in_process
        self.restarts: list[str] = []
        self.failure: str | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.in_process = in_process
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread_error: BaseException | None = None

    @property
    def url(self) -> str:
        """``mqtt://host:port`` of the broker."""
        return f"mqtt://{self.host}:{self.port}"

    def url_for(self, node: str) -> str:
        """``mqtt://node:password@host:port``: node's URL (``url`` on an open broker)."""
        password = self._passwords.get(node)
        if password is None:
            return self.url
        return f"mqtt://{quote(node, safe='')}:{quote(password, safe='')}@{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the broker process or thread is alive."""
        if self._proc is not None:
            return self._proc.poll() is None
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> EmbeddedBroker:
        """Start the broker; return once its port accepts TCP connections (else BrokerError)."""
        if self.running:
            return self
        if port_open(self.host, self.port):
            raise BrokerError(f"embedded broker did not start: {self.host}:{self.port} is in use")
        if self.in_process:
            self._start_thread()
            alive = self._thread_died
        else:
            self._start_process()
            alive = self._process_died
        try:
            wait_for_port(
                self.host, self.port, self.start_timeout_s, alive=alive, what="embedded broker"
            )
        except BaseException:  # not started (or interrupted while starting): no orphan
            self.stop(keep_files=self._watcher is not None)  # a restart keeps its files
            raise
        log.debug("embedded broker listening on %s", self.url)
        if self.keep_alive and self._watcher is None:
            self._stopping.clear()
            self._watcher = threading.Thread(
                target=self._watch, name=f"amqtt-watch-{self.port}", daemon=True
            )
            self._watcher.start()
        return self

    def _watch(self) -> None:
        """Restart the broker process whenever it dies, until :meth:`stop`."""
        while not self._stopping.wait(0.2):
            proc = self._proc
            if proc is None or proc.poll() is None:
                continue
            reason = self._process_died() or "exited"
            log.warning("embedded broker died (%s); restarting it on port %d", reason, self.port)
            self._proc = None
            try:
                self.start()
            except BrokerError as e:
                self.failure = f"embedded broker died ({reason}) and did not restart: {e}"
                log.error("%s", self.failure)
                return
            self.restarts.append(reason)

    def stop(self, *, keep_files: bool = False) -> None:
        """Stop the broker (idempotent); every session and queued message is forgotten, and
        the password and ACL files are removed unless ``keep_files``."""
        self._stopping.set()
        if self.auth_dir is not None and not keep_files:
            shutil.rmtree(self.auth_dir, ignore_errors=True)
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout=self.start_timeout_s + 1.0)
        if self._proc is not None:
            proc, self._proc = self._proc, None
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5.0)
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._thread is not None:
            thread, self._thread = self._thread, None
            loop, stop = self._loop, self._stop_event
            if loop is not None and stop is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(stop.set)
            thread.join(timeout=10.0)
            self._loop = self._stop_event = None

    def kill(self) -> None:
        """SIGKILL the broker process (a crash: every session and queued message is lost).

        An in-process broker is stopped instead.
        """
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=5.0)
        self.stop(keep_files=True)

    def restart(self) -> EmbeddedBroker:
        """Stop the broker if it runs and start a fresh one on the same port."""
        self.stop(keep_files=True)
        return self.start()

    def __repr__(self) -> str:
        mode = "thread" if self.in_process else "process"
        return f"EmbeddedBroker({self.url}, {mode}, running={self.running})"

    # ------------------------------------------------------------ child process

    def _start_process(self) -> None:
        self._stderr = tempfile.TemporaryFile()
        cmd = [
            sys.executable,
            "-m",
            "clustersim.broker.embedded",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--exit-on-stdin-eof",
        ]
        if self.auth_dir is not None:
            cmd += ["--auth-dir", str(self.auth_dir)]
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        try:
            # a session of its own: a terminal's Ctrl-C reaches the run, which stops the broker;
            # should the run die, the broker sees its stdin close and ends
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                env=env,
                start_new_session=True,
            )
        except OSError as e:
            raise BrokerError(f"cannot start the embedded broker: {e}") from None

    def _process_died(self) -> str | None:
        if self._proc is None or self._proc.poll() is None:
            return None
        tail = ""
        if self._stderr is not None:
            self._stderr.seek(0)
            lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
            tail = lines[-1] if lines else ""
        return f"exited with code {self._proc.returncode}" + (f": {tail}" if tail else "")

    # ------------------------------------------------------------ thread

    def _start_thread(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                stop = asyncio.Event()
                self._stop_event = stop
                ready.set()
                loop.run_until_complete(_run_until(self.host, self.port, stop, self.auth_dir))
            except BaseException as e:
                self._thread_error = e
            finally:
                ready.set()
                loop.close()

        self._thread_error = None
        self._thread = threading.Thread(target=run, name=f"amqtt-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(timeout=self.start_timeout_s)

    def _thread_died(self) -> str | None:
        if self._thread is not None and not self._thread.is_alive():
            err = self._thread_error
            return f"{type(err).__name__}: {err}" if err else "broker thread ended"
        return None


def serve(
    host: str = "127.0.0.1", port: int = 1883, on_ready: Callable[[], None] | None = None
) -> None:
    """Run the embedded broker on ``host:port`` in the foreground until Ctrl-C or SIGTERM,
    calling ``on_ready`` once it listens.

    Raises :class:`BrokerError` when the port cannot be bound.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(host, port, watch_stdin=False, on_ready=on_ready))
    except KeyboardInterrupt:
        pass


async def _serve(
    host: str,
    port: int,
    *,
    watch_stdin: bool,
    auth_dir: Path | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    if watch_stdin:
        # The parent holds our stdin open; when it dies, EOF tells us to go too.
        def wait_eof() -> None:
            with contextlib.suppress(OSError):
                while os.read(0, 4096):
                    pass
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=wait_eof, daemon=True).start()
    try:
        await _run_until(host, port, stop, auth_dir, on_ready)
    except Exception as e:  # amqtt wraps bind errors in its own BrokerError
        cause = e if isinstance(e, OSError) else (e.__cause__ or e.__context__)
        if isinstance(cause, OSError):
            why = cause.strerror or str(cause)
            raise BrokerError(f"embedded broker cannot listen on {host}:{port}: {why}") from None
        raise BrokerError(f"embedded broker on {host}:{port} failed: {e}") from None


def main(argv: list[str] | None = None) -> int:
    """``python -m clustersim.broker.embedded --host H --port P``."""
    p = argparse.ArgumentParser(prog="python -m clustersim.broker.embedded")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--exit-on-stdin-eof", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--auth-dir", type=Path, default=None, help="folder with passwd and acl")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(
            _serve(args.host, args.port, watch_stdin=args.exit_on_stdin_eof, auth_dir=args.auth_dir)
        )
    except KeyboardInterrupt:
        return 0
    except BrokerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
