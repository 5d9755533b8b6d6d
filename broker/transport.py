"""Transports: how a node's messages reach the other nodes (MQTT, or an in-process hub).

Every message of a run really crosses a broker; the channel model (:mod:`clustersim.broker.channel`)
is applied at the receiver afterwards. A transport only has to deliver what was published, in order,
at least once:

- :meth:`Transport.publish` never blocks on and never raises because of a dead connection: the
  message goes to an outbox that a background task drains while connected. A message whose
  PUBACK did not arrive before the connection broke is sent again after the reconnect, ahead
  of newer ones (at-least-once; receivers drop repeats by ``(src, seq)``, see
  :class:`clustersim.broker.envelope.Inbox`).
- Subscriptions are remembered and re-established after every reconnect, *before* the outbox
  is drained again, so a node that publishes to itself never misses its own message.
- Incoming messages wait in an inbox that survives reconnects; :meth:`Transport.receive` hands
  them out in arrival order.
- :attr:`Transport.on_reconnect` is awaited after each re-connect once the subscriptions are
  back: the place to re-send state a broker crash may have lost (messages the broker had
  accepted but not yet delivered when it died are gone; nothing below the protocol can know
  which).

:class:`MqttTransport` uses aiomqtt 2 (``async with Client(...)`` inside a reconnect loop that
catches ``aiomqtt.MqttError``), MQTT 3.1.1 [MQTT311] (the embedded amqtt broker speaks nothing else)
and QoS 1 everywhere. The session is persistent (``clean_session=False`` under a fixed client id),
so a broker that stays up keeps queueing a briefly disconnected client's QoS 1 messages; a session
left over from an earlier process with the same client id is erased by one clean connect before the
first real one. :class:`MemoryTransport` on a :class:`MemoryHub` does the same in-process, with
MQTT's topic-filter semantics (:func:`topic_matches`).

Times are wall-clock seconds (``time.time()`` for event stamps); sizes are bytes.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import unquote, urlsplit

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from clustersim.errors import BrokerError

__all__ = [
    "PASSWORD_ENV",
    "BrokerAddress",
    "MemoryHub",
    "MemoryTransport",
    "MqttTransport",
    "Transport",
    "TransportEvent",
    "check_topic",
    "check_topic_filter",
    "open_transport",
    "parse_url",
    "topic_matches",
    "without_password",
]

log = logging.getLogger(__name__)

DEFAULT_PORT: Final = 1883
EVENT_KINDS: Final = ("connected", "disconnected", "reconnected", "publish_retry")
_FATAL_CONNACK: Final = frozenset({2, 4, 5, 0x85, 0x86, 0x87, 0x8A, 0x8C})
"""CONNACK codes retrying cannot fix: bad client id, bad credentials, not authorised, banned."""
_MQTT_KWARGS: Final = frozenset({"keepalive_s", "reconnect_interval_s", "connect_timeout_s"})


# ---------------------------------------------------------------- topics


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches the MQTT subscription filter ``topic_filter``.

    ``+`` matches exactly one level (which may be empty), ``#`` (last level only) matches the
    parent level and any number of levels below it, so ``a/#`` matches ``a``, ``a/b`` and
    ``a/b/c``. Filters starting with a wildcard do not match topics starting with ``$``
    (MQTT 3.1.1, 4.7.2). Matching is case-sensitive.
    """
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


def check_topic(topic: str) -> str:
    """``topic`` if it is a valid topic to publish on, else ``ValueError`` (one line)."""
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"topic must be a non-empty string, got {topic!r}")
    if "+" in topic or "#" in topic or "\x00" in topic:
        raise ValueError(f"topic {topic[:200]!r} may not contain '+', '#' or NUL")
    if len(topic.encode("utf-8")) > 65535:
        raise ValueError("topic is longer than 65535 bytes")
    return topic


def check_topic_filter(topic_filter: str) -> str:
    """``topic_filter`` if it is a valid subscription filter, else ``ValueError`` (one line)."""
    if not isinstance(topic_filter, str) or not topic_filter:
        raise ValueError(f"topic filter must be a non-empty string, got {topic_filter!r}")
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"topic filter {topic_filter[:200]!r}: '#' must be a whole last level")
        if "+" in level and level != "+":
            raise ValueError(f"topic filter {topic_filter[:200]!r}: '+' must be a whole level")
    if "\x00" in topic_filter or len(topic_filter.encode("utf-8")) > 65535:
        raise ValueError("topic filter contains NUL or is longer than 65535 bytes")
    return topic_filter


# ---------------------------------------------------------------- broker address


@dataclass(frozen=True)
class BrokerAddress:
    """Where a broker listens and whom to log in as; ``str()`` masks the password."""

    host: str
    port: int = DEFAULT_PORT
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """``mqtt://[user:***@]host:port`` (the password is never shown)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        auth = ""
        if self.username is not None:
            auth = self.username + (":***" if self.password is not None else "") + "@"
        return f"mqtt://{auth}{host}:{self.port}"

    def __str__(self) -> str:
        return self.url


PASSWORD_ENV = "CLUSTERSIM_BROKER_PASSWORD"
"""environment variable with the broker password of a URL that names a user but no password"""


def without_password(url: str) -> str:
    """``url`` with the password of its user-info left out (``mqtt://user@host:port``): what
    results folders and console lines show; the password then comes from :data:`PASSWORD_ENV`."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    if not sep or "@" not in netloc:
        return url
    userinfo, _, hostport = netloc.rpartition("@")
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}@{hostport}{slash}{tail}"


def _mask(url: str) -> str:
    """``url`` with the password of its user-info replaced by ``***`` (best effort)."""
    if not isinstance(url, str):
        return repr(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{hostport}"
    return f"{scheme}://{netloc}{slash}{tail}"


def parse_url(url: str) -> BrokerAddress:
    """Parse ``mqtt://[user[:password]@]host[:port]`` (port 1883 when left out).

    User name and password may be percent-encoded; a URL with a user and no password takes the
    password from the environment variable :data:`PASSWORD_ENV`, so that it need not appear on a
    command line or in a file. Anything else (another scheme, no host, a
    port that is not an integer in 1..65535, a path, query or fragment) raises
    :class:`BrokerError` with one line naming the URL, its password masked.
    """
    if not isinstance(url, str):
        raise BrokerError(f"broker URL must be a string like mqtt://host:port, got {url!r}")
    shown = _mask(url.strip())

    def bad(reason: str) -> BrokerError:
        return BrokerError(f"bad broker URL {shown!r}: {reason} (expected mqtt://host:port)")

    try:
        parts = urlsplit(url.strip())
    except ValueError as e:
        raise bad(str(e)) from None
    if parts.scheme.lower() != "mqtt":
        raise bad(f"scheme must be 'mqtt', got {parts.scheme!r}" if parts.scheme else "no scheme")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise bad("no path, query or fragment allowed")
    host = parts.hostname
    if not host:
        raise bad("no host")
    try:
        port = parts.port
    except ValueError:
        raise bad("port must be an integer in 1..65535") from None
    if port is None:
        hostport = parts.netloc.rpartition("@")[2]
        if hostport.endswith(":"):
            raise bad("empty port")
        port = DEFAULT_PORT
    if not 1 <= port <= 65535:
        raise bad("port must be an integer in 1..65535")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if username is not None and password is None:
        password = os.environ.get(PASSWORD_ENV) or None
    return BrokerAddress(host=host, port=port, username=username, password=password)


# ---------------------------------------------------------------- the interface


@dataclass(frozen=True)
class TransportEvent:
    """Something that happened to a connection: ``kind`` is one of :data:`EVENT_KINDS`.

    ``wall_time_s`` is ``time.time()`` when it happened (seconds since the epoch); ``detail``
    is the error text of a disconnect, or the number of messages re-queued by a retry.
    """

    kind: str
    wall_time_s: float
    detail: str = ""


_CLOSED: Final = object()
"""Sentinel in the inbox: the transport was closed, wake every waiting receiver."""


class Transport(abc.ABC):
    """A node's connection to the other nodes: publish, subscribe, receive (QoS 1 semantics).

    Use as ``async with transport: ...`` or call :meth:`start` and :meth:`close`. Counters:
    ``messages_published`` and ``bytes_published`` (payload bytes) count :meth:`publish` calls
    (not re-sends), ``messages_received`` every message that arrived.
    """

    client_id: str
    events: list[TransportEvent]
    on_reconnect: Callable[[], Awaitable[None]] | None

    def __init__(self, client_id: str):
        if not isinstance(client_id, str) or not client_id:
            raise ValueError(f"client_id must be a non-empty string, got {client_id!r}")
        self.client_id = client_id
        self.events = []
        self.on_reconnect = None
        self.messages_published = 0
        self.bytes_published = 0
        self.messages_received = 0
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._closed = False

    # -- to implement

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect; return once connected and ready. BrokerError when that is impossible."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush what is queued (bounded by a few seconds) and disconnect; idempotent."""

    @abc.abstractmethod
    async def subscribe(self, topic_filter: str) -> None:
        """Subscribe with QoS 1; the subscription is re-established after every reconnect."""

    @abc.abstractmethod
    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish with QoS 1; queued (never an error) while the broker is away."""

    # -- shared

    @property
    def closed(self) -> bool:
        """Whether the transport has been closed."""
        return self._closed

    async def receive(self, timeout_s: float | None = None) -> tuple[str, bytes] | None:
        """The next incoming message ``(topic, payload)`` in arrival order.

        Waits at most ``timeout_s`` seconds (forever when ``None``) and returns ``None`` on
        timeout, or once the transport is closed and every message that came before is out.
        """
        try:
            item = self._inbox.get_nowait()
        except asyncio.QueueEmpty:
            if timeout_s is not None and timeout_s <= 0:
                return None
            try:
                if timeout_s is None:
                    item = await self._inbox.get()
                else:
                    item = await asyncio.wait_for(self._inbox.get(), timeout_s)
            except TimeoutError:
                return None
        if item is _CLOSED:
            self._inbox.put_nowait(_CLOSED)  # for the next receiver
            return None
        topic, payload = item
        return topic, payload

    def _record(self, kind: str, detail: str = "") -> None:
        self.events.append(TransportEvent(kind, time.time(), detail))

    def _deliver(self, topic: str, payload: bytes) -> None:
        self.messages_received += 1
        self._inbox.put_nowait((topic, payload))

    def _count_published(self, payload: bytes) -> None:
        self.messages_published += 1
        self.bytes_published += len(payload)

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerError(f"transport {self.client_id!r} is closed")

    def _wake_receivers(self) -> None:
        self._inbox.put_nowait(_CLOSED)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _as_bytes(payload: bytes) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray | memoryview):
        return bytes(payload)
    raise TypeError(f"payload must be bytes, got {type(payload).__name__}")


# ---------------------------------------------------------------- in-process hub


class MemoryHub:
    """An in-process broker: delivers each publish to every subscribed :class:`MemoryTransport`.

    Delivery is immediate and synchronous, in publish order; a transport whose filters match
    a topic several times gets the message once; the sender gets its own message when it is
    subscribed, as with MQTT. :meth:`drop` simulates a client crash: it detaches the client
    and publishes its last will.
    """

    def __init__(self) -> None:
        self._clients: dict[str, MemoryTransport] = {}
        self.messages_routed = 0

    @property
    def client_ids(self) -> list[str]:
        """The attached clients, in the order they connected."""
        return list(self._clients)

    def attach(self, transport: MemoryTransport) -> None:
        """Connect ``transport``; one with the same client id is taken over (as MQTT does)."""
        old = self._clients.pop(transport.client_id, None)
        if old is not None and old is not transport:
            old._lost("taken over by a new connection with the same client id")
        self._clients[transport.client_id] = transport

    def detach(self, client_id: str) -> None:
        """Disconnect ``client_id`` cleanly (no will)."""
        self._clients.pop(client_id, None)

    def publish(self, topic: str, payload: bytes) -> int:
        """Deliver ``payload`` to every client with a matching filter; returns how many."""
        delivered = 0
        for client in list(self._clients.values()):
            if any(topic_matches(f, topic) for f in client._filters):
                client._deliver(topic, payload)
                delivered += 1
        self.messages_routed += 1
        return delivered

    def drop(self, client_id: str) -> bool:
        """Drop ``client_id`` as if it crashed: detach it and publish its will, if any.

        Returns whether the client was attached.
        """
        client = self._clients.pop(client_id, None)
        if client is None:
            return False
        client._lost("dropped by the hub")
        if client.will is not None:
            topic, payload = client.will
            self.publish(topic, payload)
        return True


class MemoryTransport(Transport):
    """A :class:`Transport` on a :class:`MemoryHub` (no network, no broker, no reconnects).

    Messages published before :meth:`start` are delivered when it runs. After the hub dropped
    the client (:meth:`MemoryHub.drop`), its publishes go nowhere, as a crashed client's would.
    """

    def __init__(self, hub: MemoryHub, client_id: str, *, will: tuple[str, bytes] | None = None):
        super().__init__(client_id)
        if not isinstance(hub, MemoryHub):
            raise TypeError(f"hub must be a MemoryHub, got {type(hub).__name__}")
        if will is not None:
            will = (check_topic(will[0]), _as_bytes(will[1]))
        self.hub = hub
        self.will = will
        self._filters: list[str] = []
        self._started = False
        self._dropped = False
        self._early: list[tuple[str, bytes]] = []

    async def start(self) -> None:
        """Attach to the hub; deliver what was published before."""
        self._check_open()
        if self._started:
            return
        self._started = True
        self.hub.attach(self)
        self._record("connected", "memory hub")
        early, self._early = self._early, []
        for topic, payload in early:
            self.hub.publish(topic, payload)

    async def close(self) -> None:
        """Detach from the hub (no will); idempotent. Waiting receivers get ``None``."""
        if self._closed:
            return
        early, self._early = self._early, []
        if self._started and not self._dropped:
            for topic, payload in early:
                self.hub.publish(topic, payload)
            self.hub.detach(self.client_id)
        self._closed = True
        self._wake_receivers()

    async def subscribe(self, topic_filter: str) -> None:
        """Subscribe (QoS 1 semantics: nothing is ever lost in memory)."""
        check_topic_filter(topic_filter)
        self._check_open()
        if topic_filter not in self._filters:
            self._filters.append(topic_filter)

    async def publish(self, topic: str, payload: bytes) -> None:
        """Deliver to every matching subscriber now (or at :meth:`start`)."""
        check_topic(topic)
        payload = _as_bytes(payload)
        self._check_open()
        self._count_published(payload)
        if self._dropped:
            return
        if not self._started:
            self._early.append((topic, payload))
            return
        self.hub.publish(topic, payload)

    def _lost(self, reason: str) -> None:
        self._dropped = True
        self._record("disconnected", reason)


# ---------------------------------------------------------------- MQTT


@dataclass
class _Outgoing:
    n: int
    topic: str
    payload: bytes


class MqttTransport(Transport):
    """A :class:`Transport` over an MQTT 3.1.1 broker (aiomqtt 2), QoS 1, persistent session.

    ``url`` is ``mqtt://[user:password@]host:port``; ``will`` a ``(topic, payload)`` the broker
    publishes (QoS 1, not retained) when the connection dies without a DISCONNECT.
    ``keepalive_s`` is the MQTT keep-alive (seconds; a silent broker is noticed within about
    1.5 times that), ``reconnect_interval_s`` the pause before each reconnect attempt
    (seconds), ``connect_timeout_s`` the time :meth:`start` keeps trying (seconds).
    ``max_inflight`` bounds the QoS 1 messages awaiting PUBACK.

    Background: one task runs ``async with aiomqtt.Client(...)`` in a loop; while connected it
    re-subscribes, then drains the outbox and moves incoming messages to the inbox until the
    connection breaks (``aiomqtt.MqttError``, recorded as a ``disconnected`` event), then waits
    ``reconnect_interval_s`` and connects again (``reconnected``). Messages not yet
    acknowledged when the connection broke go back to the front of the outbox
    (``publish_retry``).
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        will: tuple[str, bytes] | None = None,
        keepalive_s: int = 30,
        reconnect_interval_s: float = 0.5,
        connect_timeout_s: float = 10.0,
        max_inflight: int = 100,
    ):
        super().__init__(client_id)
        self.address = parse_url(url)
        if will is not None:
            will = (check_topic(will[0]), _as_bytes(will[1]))
        if keepalive_s < 1:
            raise ValueError(f"keepalive_s must be at least 1, got {keepalive_s}")
        if reconnect_interval_s < 0 or connect_timeout_s <= 0 or max_inflight < 1:
            raise ValueError("reconnect_interval_s >= 0, connect_timeout_s > 0, max_inflight >= 1")
        self.url = self.address.url
        self.will = will
        self.keepalive_s = int(keepalive_s)
        self.reconnect_interval_s = float(reconnect_interval_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self.max_inflight = int(max_inflight)
        self.flush_timeout_s = 3.0
        """How long :meth:`close` waits for queued messages to be acknowledged (seconds)."""
        self.reconnects = 0
        self.messages_resent = 0
        self._filters: list[str] = []
        self._outbox: collections.deque[_Outgoing] = collections.deque()
        self._outbox_ready = asyncio.Event()
        self._unacked: dict[int, _Outgoing] = {}
        self._next_n = 0
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._flush_deadline = math.inf
        self._last_error = ""
        self._fatal: BrokerError | None = None
        self._ever_connected = False

    # -- public

    @property
    def connected(self) -> bool:
        """Whether the transport is connected and its subscriptions are in place."""
        return self._client is not None

    @property
    def queued(self) -> int:
        """Messages published but not yet acknowledged by the broker."""
        return len(self._outbox) + len(self._unacked)

    async def start(self) -> None:
        """Connect; return once connected and subscribed.

        Raises :class:`BrokerError` (one line: URL, reason) when no connection succeeds within
        ``connect_timeout_s``, or at once when the broker refuses the credentials.
        """
        self._check_open()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"mqtt-{self.client_id}")
        if self._ready.is_set():
            return
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait(
                {ready, self._task},
                timeout=self.connect_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            ready.cancel()
        if self._ready.is_set():
            return
        reason = self._fatal or self._last_error or "no answer"
        if self._fatal is None and self._task is not None and self._task.done():
            exc = None if self._task.cancelled() else self._task.exception()
            reason = f"{type(exc).__name__}: {exc}" if exc else reason
        await self._stop_task()
        self._closed = True
        self._wake_receivers()
        if self._fatal is not None:
            raise self._fatal
        raise BrokerError(
            f"cannot connect to {self.url} as {self.client_id!r} within "
            f"{self.connect_timeout_s:g} s: {reason}"
        )

    async def close(self, *, flush_timeout_s: float | None = None) -> None:
        """Wait up to ``flush_timeout_s`` (default :attr:`flush_timeout_s`) seconds for queued
        messages to be acknowledged, then disconnect cleanly (no will); idempotent.

        Messages still unacknowledged then are dropped with a warning.
        """
        if self._closed:
            return
        wait_s = self.flush_timeout_s if flush_timeout_s is None else flush_timeout_s
        self._flush_deadline = time.monotonic() + wait_s
        self._closing.set()
        self._outbox_ready.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=wait_s + 5.0)  # never raises
            await self._stop_task()
        if self.queued:
            log.warning(
                "%s closed with %d message(s) not acknowledged by %s",
                self.client_id,
                self.queued,
                self.url,
            )
        self._closed = True
        self._client = None
        self._wake_receivers()

    async def subscribe(self, topic_filter: str) -> None:
        """Subscribe with QoS 1 (remembered and re-established after every reconnect).

        When connected, returns once the broker acknowledged the subscription; raises
        :class:`BrokerError` if the broker refuses it. While disconnected, it is only
        remembered.
        """
        check_topic_filter(topic_filter)
        self._check_open()
        if topic_filter not in self._filters:
            self._filters.append(topic_filter)
        client = self._client
        if client is None:
            return
        try:
            granted = await client.subscribe(topic_filter, qos=1, timeout=self.connect_timeout_s)
        except aiomqtt.MqttError as e:  # the connection broke: the reconnect re-subscribes
            log.debug("%s: subscribe %s interrupted: %s", self.client_id, topic_filter, e)
            return
        _check_granted(topic_filter, granted, self.url)

    async def publish(self, topic: str, payload: bytes) -> None:
        """Queue ``payload`` for ``topic`` (QoS 1); it is sent as soon as the link allows.

        Never blocks on and never raises because of the broker; raises ``ValueError`` for a
        topic with wildcards, ``TypeError`` for a payload that is not bytes and
        :class:`BrokerError` once :meth:`close` has returned (a publish made while
        :meth:`close` is flushing is still sent if the flush time allows).
        """
        check_topic(topic)
        payload = _as_bytes(payload)
        self._check_open()
        self._outbox.append(_Outgoing(self._next_n, topic, payload))
        self._next_n += 1
        self._count_published(payload)
        self._outbox_ready.set()

    # -- the connection loop

    def _make_client(self, *, clean: bool) -> aiomqtt.Client:
        will = None
        if self.will is not None and not clean:
            will = aiomqtt.Will(self.will[0], self.will[1], qos=1, retain=False)
        client = aiomqtt.Client(
            self.address.host,
            self.address.port,
            username=self.address.username,
            password=self.address.password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V311,
            will=will,
            clean_session=clean,
            keepalive=self.keepalive_s,
            timeout=self.connect_timeout_s,
            max_inflight_messages=self.max_inflight,
            logger=log,
            # small messages, each waiting for its PUBACK: Nagle's algorithm would hold them
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        client.pending_calls_threshold = self.max_inflight + 16
        return client

    async def _erase_old_session(self) -> None:
        """Connect once with a clean session and leave: drops a stale session of this id."""
        async with self._make_client(clean=True):
            pass

    async def _run(self) -> None:
        first = True
        while True:
            if self._closing.is_set() and (
                not self.queued or time.monotonic() > self._flush_deadline
            ):
                return
            try:
                if first:
                    await self._erase_old_session()
                async with self._make_client(clean=False) as client:
                    first = False
                    await self._on_connected(client)
                    await self._serve(client)
                    return  # closing, and flushed (or out of time)
            except aiomqtt.MqttError as e:
                self._after_connection(_describe(e))
                fatal = _fatal_connack(e)
                if fatal and not self._ever_connected:
                    self._fatal = BrokerError(
                        f"broker {self.url} refused {self.client_id!r}: {_one_line(str(e))}"
                    )
                    return
            except BrokerError as e:  # a subscription refused on the first connection
                self._after_connection(str(e))
                self._fatal = e
                return
            except OSError as e:
                self._after_connection(f"{type(e).__name__}: {e}")
            await self._pause()

    async def _pause(self) -> None:
        """Wait ``reconnect_interval_s`` before the next attempt (less once closing)."""
        delay_s = self.reconnect_interval_s
        if not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay_s)
        if self._closing.is_set() and self.queued:
            remaining_s = self._flush_deadline - time.monotonic()
            await asyncio.sleep(max(0.0, min(delay_s, remaining_s)))

    async def _on_connected(self, client: aiomqtt.Client) -> None:
        i = 0
        while i < len(self._filters):  # filters added meanwhile are picked up too
            granted = await client.subscribe(self._filters[i], qos=1)
            try:
                _check_granted(self._filters[i], granted, self.url)
            except BrokerError as e:
                if not self._ever_connected:
                    raise
                log.warning("%s: %s", self.client_id, e)
            i += 1
        self._client = client
        self._last_error = ""
        if self._ever_connected:
            self.reconnects += 1
            self._record("reconnected", self.url)
            log.info("%s reconnected to %s", self.client_id, self.url)
        else:
            self._ever_connected = True
            self._record("connected", self.url)
        self._ready.set()

    def _after_connection(self, reason: str) -> None:
        """Bookkeeping once a connection (or an attempt) ended: re-queue what was unacked."""
        reason = _one_line(reason)
        was_connected = self._client is not None
        self._client = None
        self._last_error = reason
        if was_connected:
            self._record("disconnected", reason)
            log.warning("%s lost %s: %s", self.client_id, self.url, reason)
        if self._unacked:
            again = sorted(self._unacked.values(), key=lambda m: m.n)
            self._unacked.clear()
            self._outbox.extendleft(reversed(again))
            self.messages_resent += len(again)
            self._record("publish_retry", f"{len(again)} message(s) re-queued")
            self._outbox_ready.set()

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Run receiver, sender and (after a reconnect) on_reconnect until closing or failure."""
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        window = asyncio.Semaphore(self.max_inflight)
        pubs: set[asyncio.Task[None]] = set()
        main = {
            asyncio.create_task(self._receiver(client)),
            asyncio.create_task(self._sender(client, window, pubs, failed)),
            asyncio.create_task(self._wait_flushed()),
        }
        extra: set[asyncio.Task[None]] = set()
        if self.reconnects and self.on_reconnect is not None:
            extra.add(asyncio.create_task(self._call_on_reconnect(self.on_reconnect)))
        try:
            done, _ = await asyncio.wait({*main, failed}, return_when=asyncio.FIRST_COMPLETED)
            broke = failed.done()
        finally:
            for t in (*main, *pubs, *extra):
                t.cancel()
            await asyncio.gather(*main, *pubs, *extra, return_exceptions=True)
            if not failed.done():
                failed.cancel()
            elif not failed.cancelled():
                failed.exception()  # retrieved: no "never retrieved" warning
            self._drain_leftovers(client)
        for fut in done:
            if fut.cancelled():
                continue
            exc = fut.exception()
            if exc is not None:
                raise exc
        if broke or not self._closing.is_set():
            raise aiomqtt.MqttError("connection ended")

    async def _receiver(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self._deliver(str(message.topic), _payload_bytes(message.payload))
        raise aiomqtt.MqttError("message stream ended")

    def _drain_leftovers(self, client: aiomqtt.Client) -> None:
        """Move messages aiomqtt queued but nobody iterated yet into the inbox (PUBACK sent)."""
        queue = getattr(client, "_queue", None)
        if queue is None:
            return
        while True:
            try:
                message = queue.get_nowait()
            except (asyncio.QueueEmpty, AttributeError):
                return
            self._deliver(str(message.topic), _payload_bytes(message.payload))

    async def _sender(
        self,
        client: aiomqtt.Client,
        window: asyncio.Semaphore,
        pubs: set[asyncio.Task[None]],
        failed: asyncio.Future[None],
    ) -> None:
        timeout_s = max(10.0, 2.0 * self.keepalive_s)
        while True:
            if not self._outbox:
                self._outbox_ready.clear()
                await self._outbox_ready.wait()
                continue
            await window.acquire()
            if not self._outbox:
                window.release()
                continue
            msg = self._outbox.popleft()
            self._unacked[msg.n] = msg
            task = asyncio.create_task(self._publish_one(client, msg, window, failed, timeout_s))
            pubs.add(task)
            task.add_done_callback(pubs.discard)

    async def _publish_one(
        self,
        client: aiomqtt.Client,
        msg: _Outgoing,
        window: asyncio.Semaphore,
        failed: asyncio.Future[None],
        timeout_s: float,
    ) -> None:
        try:
            await client.publish(msg.topic, msg.payload, qos=1, timeout=timeout_s)
        except aiomqtt.MqttError as e:
            if not failed.done():
                failed.set_exception(e)
            return
        self._unacked.pop(msg.n, None)
        window.release()
        if self._closing.is_set():
            self._outbox_ready.set()  # let _wait_flushed look again

    async def _wait_flushed(self) -> None:
        await self._closing.wait()
        while self.queued and time.monotonic() < self._flush_deadline:
            self._outbox_ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox_ready.wait(), 0.05)

    async def _call_on_reconnect(self, hook: Callable[[], Awaitable[None]]) -> None:
        try:
            await hook()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: on_reconnect hook failed", self.client_id)

    async def _stop_task(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        if not task.done():
            task.cancel()
            await asyncio.wait({task})  # raises nothing for the task, only our own cancel
        if not task.cancelled() and task.exception() is not None:
            log.debug("%s: connection task ended with %r", self.client_id, task.exception())


def _payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray | memoryview):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode("utf-8")


def _check_granted(topic_filter: str, granted: Any, url: str) -> None:
    for code in granted or ():
        value = getattr(code, "value", code)
        if isinstance(value, int) and value >= 0x80:
            raise BrokerError(f"broker {url} refused the subscription to {topic_filter!r}")


def _fatal_connack(e: BaseException) -> bool:
    if not isinstance(e, MqttConnectError):
        return False
    rc = getattr(e, "rc", None)
    value = getattr(rc, "value", rc)
    return isinstance(value, int) and value in _FATAL_CONNACK


def _describe(e: BaseException) -> str:
    """``e``'s text and, when aiomqtt wrapped another error, that error's text."""
    text = str(e) or type(e).__name__
    cause = e.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return text


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- factory


def open_transport(spec: str | MemoryHub, client_id: str, **kw: Any) -> Transport:
    """A transport for ``client_id``: :class:`MemoryTransport` on a hub, else MQTT on a URL.

    ``kw`` are the keyword arguments of :class:`MqttTransport`; a memory transport takes
    ``will`` and ignores the MQTT-only timing options, so callers can pass the same ones.
    """
    if isinstance(spec, MemoryHub):
        unknown = set(kw) - _MQTT_KWARGS - {"will", "max_inflight"}
        if unknown:
            raise TypeError(f"open_transport: unexpected argument(s) {', '.join(sorted(unknown))}")
        return MemoryTransport(spec, client_id, will=kw.get("will"))
    if isinstance(spec, str):
        return MqttTransport(spec, client_id, **kw)
    raise TypeError(f"transport spec must be an mqtt:// URL or a MemoryHub, got {spec!r}")
