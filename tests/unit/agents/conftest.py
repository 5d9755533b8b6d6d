"""Fixtures shared by the agents' tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def clusters33() -> dict[str, list[int]]:
    """The HI partition of ieee33 (5 clusters, 3-10 buses) as bus indices; C1 holds the slack."""
    return {
        "C1": [0, 1, 2, 3, 4, 18, 19, 20, 21],
        "C2": [5, 25, 26, 27, 28, 29, 30, 31, 32],
        "C3": [6, 7, 8, 9, 10, 11],
        "C4": [12, 13, 14, 15, 16, 17],
        "C5": [22, 23, 24],
    }
