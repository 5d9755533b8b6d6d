"""Compromise rules of the optimizer (clustersim.agents.optimizer.compromise) on a planted
front."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from clustersim.agents.optimizer import compromise

# Every point is f = (w1², w2², w3²) with w on the simplex (w ≥ 0, Σw = 1), so Σ√f = 1 for all of
# them: if a ≤ b componentwise with one strict inequality, Σ√a < Σ√b, so no point dominates
# another (a genuine front).
#
# The three anchors are permutations of (0.96, 0.03, 0.01): each objective then has the same
# minimum 0.01² and maximum 0.96², so the same span, and the fuzzy score Σ_i (hi − f_i)/span is a
# constant minus Σ_i f_i / span. Σ w_i² under Σ w_i = 1 has its unique minimum at w = 1/3 each,
# so the centre point is the fuzzy best, whatever the other points are.
#
# The crowding distance (the code's "knee") is, per objective, the gap between a point's two
# neighbours in that objective's sorted order over the span, averaged over objectives; a point
# that is the smallest or largest in any objective has an infinite distance and is excluded.
# K = (0.55, 0.12, 0.33) sits in a hole: the other points are spread over the front, but none has
# w1 within 0.1 of K's or w2 within 0.06 of it, and only the centre has w3 near it, so K's two
# neighbours are far apart in every objective's sorted order; the rest are packed closer.
W = {
    "A1": (0.96, 0.03, 0.01),
    "A2": (0.01, 0.96, 0.03),
    "A3": (0.03, 0.01, 0.96),
    "C": (1 / 3, 1 / 3, 1 / 3),
    "K": (0.55, 0.12, 0.33),
    "P1": (0.06, 0.25, 0.69),
    "P2": (0.14, 0.82, 0.04),
    "P3": (0.10, 0.04, 0.86),
    "P4": (0.18, 0.29, 0.53),
    "P5": (0.22, 0.32, 0.46),
    "P6": (0.13, 0.74, 0.13),
    "P7": (0.28, 0.57, 0.15),
    "P8": (0.27, 0.56, 0.17),
}
NAMES = list(W)
F = np.array([[w**2 for w in W[n]] for n in NAMES])


def _fuzzy_scores(rows: list[list[float]]) -> list[float]:
    """Σ_i (max_i − f_i) / (max_i − min_i) per point, plain Python."""
    m = len(rows[0])
    lo = [min(r[i] for r in rows) for i in range(m)]
    hi = [max(r[i] for r in rows) for i in range(m)]
    return [sum((hi[i] - r[i]) / (hi[i] - lo[i]) for i in range(m)) for r in rows]


def _crowding(rows: list[list[float]]) -> list[float]:
    """Crowding distance per point, plain Python (inf at either end of any objective)."""
    n, m = len(rows), len(rows[0])
    cd = [0.0] * n
    for i in range(m):
        order = sorted(range(n), key=lambda k: rows[k][i])
        span = rows[order[-1]][i] - rows[order[0]][i]
        cd[order[0]] = cd[order[-1]] = math.inf
        for pos in range(1, n - 1):
            k = order[pos]
            cd[k] += (rows[order[pos + 1]][i] - rows[order[pos - 1]][i]) / span / m
    return cd


def _winner(scores: list[float]) -> tuple[str, float]:
    """The best point's name and its margin over the runner-up."""
    ranked = sorted(zip(scores, NAMES, strict=True), reverse=True)
    return ranked[0][1], ranked[0][0] - ranked[1][0]


def test_planted_front_is_what_it_claims():
    """The planted front is non-dominated, with distinct values per objective, the centre the
    clear fuzzy best and K the clear largest finite crowding distance."""
    rows = F.tolist()
    for a, b in itertools.permutations(range(len(rows)), 2):
        assert not all(x <= y for x, y in zip(rows[a], rows[b], strict=True)), (a, b)
    for i in range(3):
        assert len({r[i] for r in rows}) == len(rows)
    best, margin = _winner(_fuzzy_scores(rows))
    assert best == "C" and margin > 0.02
    cd = [c if math.isfinite(c) else -math.inf for c in _crowding(rows)]
    assert [NAMES[k] for k, c in enumerate(cd) if c == -math.inf] == ["A1", "A2", "A3"]
    best, margin = _winner(cd)
    assert best == "K" and margin > 0.1


def test_fuzzy_picks_the_planted_point():
    """The fuzzy rule picks the point with the largest membership sum."""
    assert NAMES[compromise(F, "fuzzy")] == "C"


def test_knee_picks_the_planted_point():
    """The knee rule picks the interior point with the largest crowding distance."""
    assert NAMES[compromise(F, "knee")] == "K"


def test_weighted_picks_the_normalized_minimum():
    """The weighted rule picks the smallest weighted sum of min-max normalized objectives:
    the centre for equal weights (equal spans here), the best point of one objective alone."""
    assert NAMES[compromise(F, "weighted", (1.0, 1.0, 1.0))] == "C"
    assert NAMES[compromise(F, "weighted", (0.0, 1.0, 0.0))] == "A3"  # f2 = 0.01² is A3's


@pytest.mark.parametrize(("rule", "planted"), [("fuzzy", "C"), ("knee", "K")])
def test_rules_do_not_depend_on_the_order_of_points(rule, planted):
    """Shuffling or reversing the front's rows does not change which point a rule picks."""
    rng = np.random.default_rng(0)
    orders = [np.arange(len(F))[::-1]] + [rng.permutation(len(F)) for _ in range(30)]
    for order in orders:
        k = compromise(F[order], rule)
        assert NAMES[order[k]] == planted, order
