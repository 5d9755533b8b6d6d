"""Mosquitto password and ACL files for a run, so each node may publish only on its own topics.

Every message travels on ``clustersim/{run_id}/{kind}/{src}/{dst}``. The receiver's
:class:`~clustersim.broker.envelope.Inbox` checks who may send what to whom, but it trusts the
``src`` in the topic; the broker's ACL makes that trust safe by letting a client publish only under
its own name. :func:`write_acl_files` writes, for the plant and the agent nodes of a run:

- ``passwd`` — Mosquitto 2's password file, one ``user:$7$<iterations>$<salt>$<hash>`` line per
  node: PBKDF2-HMAC-SHA512 over the password with a random 12-byte salt, salt and 64-byte hash in
  standard base64, exactly what ``mosquitto_passwd -b`` writes;
- ``acl`` — every node may read ``clustersim/#``; the plant may write measurements and clock
  ticks (``clustersim/+/meas/plant/#``, ``clustersim/+/clock/plant/#``) and its own status and
  log; an agent ``A`` may write ``clustersim/+/{setpoint,boundary,status,log}/A/#`` and nothing
  else. So only the plant publishes measurements, and nobody publishes as somebody else
  (Mosquitto drops a forbidden publish silently; the publisher is not told);
- ``credentials.toml`` — node → password (mode 600), for the nodes' own configuration;
- ``keys.toml`` — node → message key (mode 600): every node signs its messages with its own key
  and checks the others' (:mod:`clustersim.broker.auth`); give it to each node with ``--keys``;
- ``README.txt`` — how to use the files with Mosquitto.

The ACL uses one ``user`` block per node rather than ``pattern`` lines with ``%u``, so the file
states plainly what each node may do and a node name cannot be abused as a pattern.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import tomli_w

from clustersim.broker.auth import Keyring
from clustersim.broker.envelope import _NAME, BROADCAST, PREFIX
from clustersim.fileio import write_text

__all__ = [
    "AclFiles",
    "NodeRights",
    "acl_text",
    "hash_password",
    "parse_acl",
    "parse_passwd",
    "passwd_line",
    "verify_password",
    "write_acl_files",
]

PBKDF2_ITERATIONS: Final = 101
"""Iterations of PBKDF2-HMAC-SHA512: ``mosquitto_passwd``'s own default."""
SALT_BYTES: Final = 12
"""Salt length (bytes), as ``mosquitto_passwd`` uses."""
AGENT_KINDS: Final = ("setpoint", "boundary", "status", "log")
"""Message kinds an agent node may publish (as ``src``)."""
PLANT_KINDS: Final = ("meas", "clock", "status", "log")
"""Message kinds the plant may publish (as ``src``)."""


@dataclass(frozen=True)
class AclFiles:
    """What :func:`write_acl_files` wrote: paths and the password of every node."""

    passwd_path: Path
    acl_path: Path
    credentials_path: Path
    passwords: dict[str, str]
    readme_path: Path | None = None
    keys_path: Path | None = None

    def __repr__(self) -> str:  # never print passwords
        return (
            f"AclFiles(passwd_path={self.passwd_path!s}, acl_path={self.acl_path!s}, "
            f"credentials_path={self.credentials_path!s}, nodes={sorted(self.passwords)})"
        )


def hash_password(password: str, salt: bytes, iterations: int = PBKDF2_ITERATIONS) -> bytes:
    """PBKDF2-HMAC-SHA512 of ``password`` (UTF-8) with ``salt``: 64 bytes."""
    return hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)


def passwd_line(
    user: str, password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS
) -> str:
    """One Mosquitto 2 password-file line (no newline): ``user:$7$iter$salt_b64$hash_b64``."""
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    digest = hash_password(password, salt, iterations)
    salt_b64 = base64.b64encode(salt).decode("ascii")
    hash_b64 = base64.b64encode(digest).decode("ascii")
    return f"{user}:$7${iterations}${salt_b64}${hash_b64}"


def verify_password(line: str, password: str) -> bool:
    """Whether ``password`` matches a ``$7$`` password-file ``line`` (for tests and tools)."""
    try:
        _, encoded = line.strip().split(":", 1)
        empty, alg, iterations, salt_b64, hash_b64 = encoded.split("$")
        if empty or alg != "7":
            return False
        salt = base64.b64decode(salt_b64, validate=True)
        want = base64.b64decode(hash_b64, validate=True)
        got = hash_password(password, salt, int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(got, want)


def _check_node(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"node name {name!r} is not valid (1-64 characters from A-Z a-z 0-9 _ . -, "
            "not starting with . or -)"
        )
    if name == BROADCAST:
        raise ValueError(f"node name {name!r} is reserved for broadcast messages")
    return name


def acl_text(agents: Sequence[str], plant: str = "plant") -> str:
    """The Mosquitto ACL file for ``plant`` and the agent nodes ``agents`` (names unchecked)."""
    lines = [
        "# clustersim ACL: every node reads the whole run; each publishes only its own topics.",
        "# Written by clustersim.broker.acl; use with `acl_file` in mosquitto.conf.",
        "",
        "# plant: measurements, clock ticks, its own status and log",
        f"user {plant}",
        f"topic read {PREFIX}/#",
    ]
    lines += [f"topic write {PREFIX}/+/{kind}/{plant}/#" for kind in PLANT_KINDS]
    for agent in agents:
        lines += ["", f"# agent {agent}: its own setpoints, boundary values, status and log"]
        lines += [f"user {agent}", f"topic read {PREFIX}/#"]
        lines += [f"topic write {PREFIX}/+/{kind}/{agent}/#" for kind in AGENT_KINDS]
    return "\n".join(lines) + "\n"


_README = """\
clustersim broker credentials
=============================

Files (written by clustersim for the nodes: {nodes}):

  passwd            Mosquitto 2 password file (PBKDF2-SHA512, as `mosquitto_passwd` writes)
  acl               Mosquitto ACL: every node reads clustersim/#, each node writes only its
                    own topics, only "{plant}" writes measurements and clock ticks
  credentials.toml  node = "password" for every node (keep it secret: mode 600)
  keys.toml         node = message key for every node (keep it secret: mode 600); every node
                    signs its messages with its key and checks the others': give it to the
                    plant and each agent (`--keys keys.toml` or CLUSTERSIM_KEYS_FILE)

Use them with Mosquitto by adding to mosquitto.conf:

  listener 1883
  allow_anonymous false
  password_file {passwd}
  acl_file {acl}
  # recommended for clustersim's many small QoS 1 messages:
  set_tcp_nodelay true
  max_queued_messages 100000

Mosquitto must be able to read both files: when it runs as user `mosquitto`, give it the
files (`chown mosquitto: passwd acl`). Restart it, or send SIGHUP, after rewriting them.

Each node then connects with its own name and password, e.g. the broker URL of node C1 is

  mqtt://C1:<password from credentials.toml>@broker-host:1883

A publish a node is not allowed (another node's topic, or measurements from an agent) is
dropped by the broker without telling the publisher.
"""


def write_acl_files(
    nodes: Sequence[str],
    out_dir: Path,
    *,
    plant: str = "plant",
    passwords: Mapping[str, str] | None = None,
) -> AclFiles:
    """Write ``passwd``, ``acl``, ``credentials.toml``, ``keys.toml`` and ``README.txt`` into
    ``out_dir``.

    ``nodes`` are the agent nodes (``plant`` among them is taken as the plant); every name must
    be a valid envelope name (``ValueError``, one line, otherwise; also for duplicates and the
    reserved ``all``). ``passwords`` gives some or all passwords (non-empty strings); the others
    are random (``secrets.token_urlsafe(24)``, 192 bits). Returns the paths and every node's
    password.
    """
    if isinstance(nodes, str):
        raise ValueError("nodes must be a sequence of names, not one string")
    _check_node(plant)
    agents: list[str] = []
    for name in nodes:
        _check_node(name)
        if name == plant:
            continue
        if name in agents:
            raise ValueError(f"node name {name!r} is given twice")
        agents.append(name)
    given = dict(passwords or {})
    everyone = [plant, *agents]
    unknown = sorted(set(given) - set(everyone))
    if unknown:
        raise ValueError(f"passwords given for unknown node(s): {', '.join(unknown)}")
    resolved: dict[str, str] = {}
    for name in everyone:
        pw = given.get(name)
        if pw is None:
            pw = secrets.token_urlsafe(24)
        elif not isinstance(pw, str) or not pw or "\n" in pw or "\x00" in pw:
            raise ValueError(f"password of {name!r} must be a non-empty one-line string")
        resolved[name] = pw

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    passwd_path = out / "passwd"
    acl_path = out / "acl"
    credentials_path = out / "credentials.toml"
    readme_path = out / "README.txt"
    passwd = "".join(passwd_line(name, resolved[name]) + "\n" for name in everyone)
    write_text(passwd_path, passwd, perm=0o600)
    write_text(acl_path, acl_text(agents, plant), perm=0o644)
    creds = "# clustersim node credentials: node = password (keep secret)\n" + tomli_w.dumps(
        resolved
    )
    write_text(credentials_path, creds, perm=0o600)
    readme = _README.format(
        nodes=", ".join(everyone),
        plant=plant,
        passwd=passwd_path.resolve(),
        acl=acl_path.resolve(),
    )
    write_text(readme_path, readme, perm=0o644)
    keys_path = Keyring.generate(everyone).write(out / "keys.toml")
    return AclFiles(
        keys_path=keys_path,
        passwd_path=passwd_path,
        acl_path=acl_path,
        credentials_path=credentials_path,
        passwords=resolved,
        readme_path=readme_path,
    )


@dataclass(frozen=True)
class NodeRights:
    """The topic filters one user may read and write (from an ACL file)."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()


def parse_acl(text: str) -> dict[str, NodeRights]:
    """The ``user`` blocks of an ACL file as :func:`acl_text` writes it: user → rights
    (``topic read F`` / ``topic write F``; ``topic F`` and ``readwrite`` give both). Lines
    before the first ``user`` line and comments are ignored."""
    read: dict[str, list[str]] = {}
    write: dict[str, list[str]] = {}
    user: str | None = None
    for raw in text.splitlines():
        words = raw.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user" and len(words) == 2:
            user = words[1]
            read.setdefault(user, [])
            write.setdefault(user, [])
        elif words[0] == "topic" and user is not None and len(words) in (2, 3):
            access, filt = (words[1], words[2]) if len(words) == 3 else ("readwrite", words[1])
            if access in ("read", "readwrite"):
                read[user].append(filt)
            if access in ("write", "readwrite"):
                write[user].append(filt)
    return {u: NodeRights(tuple(read[u]), tuple(write[u])) for u in read}


def parse_passwd(text: str) -> dict[str, str]:
    """user → the whole line, of a password file as :func:`passwd_line` writes it."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#") and ":" in line:
            out[line.split(":", 1)[0]] = line.strip()
    return out
