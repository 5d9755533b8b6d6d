"""Who a run is: its run id (a stem from the scenario plus a random part drawn per run), the
fingerprint of its resolved scenario that the plant and every agent compare at start-up, and
the nodes' message keys.

Two runs of one scenario and seed on one broker get different run ids, so different topics,
client ids and keys: neither sees the other's messages. The random part changes no result (the
channel model and the optimizers are seeded from ``[run] seed`` alone); it is recorded in
``summary.json`` ``provenance``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from clustersim.assemble.build import run_id_of
from clustersim.broker.auth import KEYS_ENV, Keyring
from clustersim.errors import ScenarioError
from clustersim.scenario import Scenario, resolved_dict

__all__ = [
    "FINGERPRINT_SKIP",
    "new_run_id",
    "run_keys",
    "run_stem",
    "scenario_fingerprint",
]

RANDOM_HEX = 8
"""hex digits of a run id's random part (32 bits)"""

FINGERPRINT_SKIP = (
    "description",
    "provenance",
    "comm.broker",
    "comm.keys",
    "comm.run_id",
    "comm.accept_fallback",
    "run.agents",
)
"""scenario keys the nodes of one run may set differently: where the broker is and how a node
logs in, where its keys are, where the agents run, what the plant accepts of lost agents"""


def new_run_id(scenario: Scenario) -> str:
    """``<stem>-<8 random hex digits>`` (the stem: :func:`~clustersim.assemble.build.
    run_id_of`, cut so that the whole is a valid topic level of at most 64 characters)."""
    stem = run_id_of(scenario)[: 63 - RANDOM_HEX]
    return f"{stem}-{secrets.token_hex(RANDOM_HEX // 2)}"


def run_stem(run_id: str) -> str:
    """The stem of a run id :func:`new_run_id` drew (the run id itself if it has no random
    part)."""
    stem, _, tail = run_id.rpartition("-")
    if stem and len(tail) == RANDOM_HEX and all(c in "0123456789abcdef" for c in tail):
        return stem
    return run_id


def _flat(doc: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in doc.items():
        if isinstance(value, Mapping) and value:
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def scenario_fingerprint(scenario: Scenario) -> dict[str, str]:
    """Every key of the resolved scenario but :data:`FINGERPRINT_SKIP`, each with the first 16
    hex digits of the SHA-256 of its value's canonical JSON."""
    out = {}
    for key, value in _flat(resolved_dict(scenario)):
        if key in FINGERPRINT_SKIP or key.split(".", 1)[0] in FINGERPRINT_SKIP:
            continue
        blob = json.dumps(value, sort_keys=True, default=str).encode("utf-8")
        out[key] = hashlib.sha256(blob).hexdigest()[:16]
    return out


def run_keys(
    scenario: Scenario,
    nodes: Sequence[str],
    keys_file: str | None = None,
    *,
    required: bool = False,
) -> Keyring:
    """The message keys of a run's ``nodes``: read from ``keys_file``, else ``[comm] keys``,
    else the file named by ``CLUSTERSIM_KEYS_FILE``; fresh ones when none is named and every
    agent is started by the run. With external agents (or ``required``: an agent started on
    its own) a keys file is required (``clustersim acl`` writes one), and it must hold a key
    for every node."""
    path = keys_file or scenario.comm.keys or os.environ.get(KEYS_ENV, "")
    if not path:
        if required or scenario.run.agents == "external":
            raise ScenarioError(
                "the plant and agents started apart need the message keys that `clustersim "
                f"acl` writes: give --keys FILE, [comm] keys or {KEYS_ENV}",
                key="comm.keys",
            )
        return Keyring.generate(nodes)
    ring = Keyring.load(Path(path))
    missing = [n for n in nodes if n not in ring.keys]
    if missing:
        raise ScenarioError(
            f"keys file {path} has no key for {', '.join(missing)} (write it anew with "
            "`clustersim acl`)",
            key="comm.keys",
        )
    return ring
