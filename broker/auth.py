"""Message authentication: every node signs what it sends with its own key, every receiver
checks the signature before it reads anything else of the message.

The signature is HMAC-SHA256 [RFC2104] with the sender's 32-byte key over the topic, a NUL
byte and the envelope's canonical encoding (:func:`clustersim.broker.envelope.encode`). It
travels as the envelope's last member, ``"sig": "<64 hex digits>"``, appended to the canonical
bytes; the receiver cuts it off, recomputes it with the key of the topic's sender and compares in
constant time. A message without a signature, from a sender the receiver has no key for, or with
a wrong one is refused with reason ``auth`` before it is parsed, so it counts against nothing
(no sequence number, no ``log`` or ``status`` taken from it).

A :class:`Keyring` holds the keys of a run's nodes and, for a node, names the one it signs with.
A run draws fresh keys for the nodes it starts itself (:meth:`Keyring.generate`); a deployment
with external agents shares the ``keys.toml`` that ``clustersim acl`` writes beside the broker
passwords (:meth:`Keyring.load`). HMAC keys are shared secrets: whoever holds a node's key can
sign as that node, so the file is written readable by its owner only and every node of one
deployment holds the keys it verifies. An intruder on the broker without the file can neither
forge a message nor replay one into another run (the topic, and with it the run id, is signed).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import tomli_w

from clustersim.broker.envelope import EnvelopeError
from clustersim.errors import ScenarioError
from clustersim.fileio import write_text

__all__ = ["KEYS_ENV", "KEY_BYTES", "Keyring", "client_id"]

KEY_BYTES: Final = 32
"""Length of a node's key (bytes): the output size of SHA-256, as [RFC2104] recommends."""
KEYS_ENV: Final = "CLUSTERSIM_KEYS_FILE"
"""environment variable naming a ``keys.toml`` when no ``--keys`` option or ``[comm] keys``
names one"""
_SIG = re.compile(rb',"sig":"([0-9a-f]{64})"\}\Z')


@dataclass(frozen=True)
class Keyring:
    """The nodes' keys (name → bytes) and ``me``, the node that signs with this ring."""

    keys: Mapping[str, bytes] = field(repr=False)
    me: str | None = None

    def __post_init__(self) -> None:
        for name, key in self.keys.items():
            if len(key) < KEY_BYTES:
                raise ValueError(f"key of {name!r} has {len(key)} bytes, fewer than {KEY_BYTES}")
        if self.me is not None and self.me not in self.keys:
            raise ValueError(f"no key for node {self.me!r}")

    def __repr__(self) -> str:  # never print keys
        return f"Keyring(nodes={sorted(self.keys)}, me={self.me!r})"

    @classmethod
    def generate(cls, nodes: Iterable[str]) -> Keyring:
        """Fresh random keys for ``nodes`` (``secrets.token_bytes``)."""
        return cls({n: secrets.token_bytes(KEY_BYTES) for n in nodes})

    def of(self, me: str) -> Keyring:
        """This ring, signing as ``me``."""
        return Keyring(self.keys, me)

    # ------------------------------------------------------------ signing
    def _mac(self, key: bytes, topic: str, body: bytes) -> bytes:
        return hmac.new(key, topic.encode("utf-8") + b"\x00" + body, hashlib.sha256).digest()

    def sign(self, topic: str, body: bytes) -> bytes:
        """``body`` (a canonical envelope: a JSON object) with ``me``'s signature appended."""
        if self.me is None:
            raise ValueError("this keyring names no node to sign as")
        mac = self._mac(self.keys[self.me], topic, body).hex().encode("ascii")
        return body[:-1] + b',"sig":"' + mac + b'"}'

    def verify(self, topic: str, src: str, payload: bytes) -> bytes:
        """The signed envelope bytes of ``payload`` sent by ``src`` on ``topic``; raises
        :class:`~clustersim.broker.envelope.EnvelopeError` (reason ``auth``) when the payload is
        unsigned, ``src`` has no key here, or the signature is wrong."""
        m = _SIG.search(payload)
        if m is None:
            raise EnvelopeError("message is not signed", reason="auth", topic=topic)
        key = self.keys.get(src)
        if key is None:
            raise EnvelopeError(f"no key for sender {src!r}", reason="auth", topic=topic)
        body = payload[: m.start()] + b"}"
        want = self._mac(key, topic, body)
        if not hmac.compare_digest(want, bytes.fromhex(m.group(1).decode("ascii"))):
            raise EnvelopeError(f"wrong signature for sender {src!r}", reason="auth", topic=topic)
        return body

    # ------------------------------------------------------------ files
    def write(self, path: Path) -> Path:
        """Write the keys as ``keys.toml`` (node = hex key), readable by its owner only."""
        doc = {n: k.hex() for n, k in sorted(self.keys.items())}
        text = "# clustersim message keys: node = HMAC-SHA256 key (keep secret)\n"
        write_text(path, text + tomli_w.dumps(doc), perm=0o600)
        return path

    @classmethod
    def load(cls, path: Path, me: str | None = None) -> Keyring:
        """The keys of a ``keys.toml`` (:meth:`write`), signing as ``me``; a
        :class:`~clustersim.errors.ScenarioError` naming the file when it is unreadable or
        malformed, or has no key for ``me``."""
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
            keys = {str(n): bytes.fromhex(str(k)) for n, k in doc.items()}
            return cls(keys, me)
        except (OSError, tomllib.TOMLDecodeError, ValueError) as e:
            raise ScenarioError(f"keys file {path}: {e}") from None


def client_id(node: str, run_id: str) -> str:
    """``<node>.<run_id>.<8 random hex digits>``: the MQTT client id of one connection of
    ``node``. The random part is drawn per connection object (kept across its reconnects), so
    nobody who reads the run's topics can take over a node's session by connecting with its
    client id; the embedded broker admits a client id only for the user it starts with."""
    return f"{node}.{run_id}.{secrets.token_hex(4)}"
