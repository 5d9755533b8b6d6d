"""The one exception hierarchy of clustersim.

This module is a leaf: it imports nothing of ours, so every layer (``broker`` at the bottom
included) may raise these without breaking the one-way import rule (README, "Architecture").
Context is kept as attributes so callers can report it without parsing messages.
"""

from __future__ import annotations


class ClusterSimError(Exception):
    """Base of every error clustersim raises on purpose."""


class ScenarioError(ClusterSimError):
    """A scenario file (or a ``--set`` override) is invalid.

    ``source`` names the file (or ``--set``), ``key`` the dotted key that is wrong.
    """

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        self.source = source
        self.key = key
        self.detail = message
        """the message without the source and key"""
        where = ": ".join(p for p in (source, key) if p)
        super().__init__(f"{where}: {message}" if where else message)


class CaseError(ClusterSimError):
    """A grid case cannot be found, read or converted."""


class PartitionError(ClusterSimError):
    """A partition method failed or was given invalid input."""


class PowerFlowError(ClusterSimError):
    """A power flow failed to converge or the network is not solvable.

    ``step`` is the plant step (or ``None`` outside a run).
    """

    def __init__(self, message: str, *, step: int | None = None):
        self.step = step
        super().__init__(message if step is None else f"step {step}: {message}")


class BrokerError(ClusterSimError):
    """The MQTT broker cannot be reached or went away."""


class MessageError(ClusterSimError):
    """A message failed validation (schema, sender, duplicate, physical range)."""


class RunError(ClusterSimError):
    """A run ended other than it was asked to: an agent lost for good (its results are
    written first), or, for an external agent, the plant gone silent."""
