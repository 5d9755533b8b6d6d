"""Small problems solved by enumerating their grid (clustersim.agents.optimizer) give what a
brute-force search of the same grid gives."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from clustersim.agents.control import ControlSettings, build_controllers
from clustersim.agents.optimizer import Optimizer
from clustersim.sim import cases, profiles
from clustersim.sim.plant import Plant
from clustersim.sim.resources import load_preset

# the grid the optimizer documents: each integer lever at every whole value within its bounds,
# one continuous lever at 65 points, two at 21 points each (bounds included)
POINTS = {1: 65, 2: 21}


def _axes(xl, xu, integer):
    n_cont = sum(1 for i in integer if not i)
    axes = []
    for lo, hi, is_int in zip(xl, xu, integer, strict=True):
        if is_int:
            axes.append([float(v) for v in range(math.ceil(lo), math.floor(hi) + 1)])
        else:
            n = POINTS[n_cont]
            axes.append([lo + (hi - lo) * k / (n - 1) for k in range(n)])
    return axes


class ToyProblem:
    """A deterministic three-objective problem with two constraints, in the shape the optimizer
    expects of a VoltVarProblem (bounds, integer mask, clip, objectives)."""

    def __init__(self, xl, xu, integer, *, limit):
        self.xl = np.asarray(xl, dtype=float)
        self.xu = np.asarray(xu, dtype=float)
        self.integer_mask = np.asarray(integer, dtype=bool)
        self.n_var = len(xl)
        self.limit = limit
        rng = np.random.default_rng(len(xl))
        self.a = rng.uniform(self.xl, self.xu)
        self.b = rng.uniform(self.xl, self.xu)
        self.c = rng.uniform(0.5, 2.0, self.n_var)
        self.n_evaluations = 0
        self.n_calls = 0

    def clip(self, X):
        X = np.clip(np.atleast_2d(np.asarray(X, dtype=float)), self.xl, self.xu)
        lo, hi = np.ceil(self.xl - 1e-9), np.floor(self.xu + 1e-9)
        return np.where(self.integer_mask, np.clip(np.rint(X), lo, hi), X)

    def objectives(self, X):
        X = np.atleast_2d(np.asarray(X, dtype=float))
        X = np.where(self.integer_mask, np.rint(X), X)
        self.n_evaluations += len(X)
        self.n_calls += 1
        F = np.column_stack(
            [
                ((X - self.a) ** 2).sum(axis=1),
                ((X - self.b) ** 2).sum(axis=1),
                (self.c * np.abs(X)).sum(axis=1),
            ]
        )
        G = np.column_stack([X.sum(axis=1) - self.limit, -X[:, 0] - 10.0])
        return F, G, None


def _dominates(a, b) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )


def _brute_force(points, evaluate, rule, weights):
    """Every grid point evaluated alone; the front (rank 1 of the feasible points, or of the least
    violating ones when none is feasible) and its compromise, in plain Python."""
    rows = []
    for x in points:
        f, g = evaluate(x)
        rows.append((x, f, sum(max(v, 0.0) for v in g)))
    feasible = [r for r in rows if r[2] <= 1e-12]
    if not feasible:
        least = min(r[2] for r in rows)
        feasible = [r for r in rows if r[2] <= least + 1e-12]
    front = [r for r in feasible if not any(_dominates(o[1], r[1]) for o in feasible)]
    m = len(front[0][1])
    lo = [min(r[1][i] for r in front) for i in range(m)]
    hi = [max(r[1][i] for r in front) for i in range(m)]
    span = [h - lo_ if h - lo_ > 1e-12 else 1.0 for lo_, h in zip(lo, hi, strict=True)]
    if rule == "fuzzy":
        score = [
            sum((hi[i] - r[1][i]) / span[i] if hi[i] - lo[i] > 1e-12 else 1.0 for i in range(m))
            for r in front
        ]
    else:  # weighted: smallest weighted sum of min-max normalized objectives
        score = [
            -sum(w * (r[1][i] - lo[i]) / span[i] for i, w in enumerate(weights)) for r in front
        ]
    ranked = sorted(range(len(front)), key=lambda k: score[k], reverse=True)
    if len(front) > 1:  # the pick must be unambiguous for the comparison to mean anything
        assert score[ranked[0]] - score[ranked[1]] > 1e-9
    return rows, front, front[ranked[0]][0]


def _sorted_rows(a) -> list[tuple[float, ...]]:
    return sorted(tuple(float(v) for v in r) for r in np.atleast_2d(a))


def _assert_same_rows(a, b, atol=1e-12):
    """The same multiset of objective rows, up to ``atol``."""
    a, b = np.array(_sorted_rows(a)), np.array(_sorted_rows(b))
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=0, atol=atol)


CASES = {
    "one continuous": ([-1.0], [2.0], [False], 0.5),
    "two continuous": ([-1.0, 0.0], [1.0, 3.0], [False, False], 1.5),
    "continuous and integer": ([-0.5, -2.5], [1.5, 3.7], [False, True], 1.0),
    "two continuous and integer": ([-1.0, 0.0, 0.0], [1.0, 2.0, 1.0], [False, False, True], 2.0),
    "all integer": ([0.0, -3.0, 0.0], [7.0, 3.0, 5.0], [True, True, True], 6.0),
    "nothing feasible": ([1.0, 0.0], [2.0, 4.0], [False, True], -1.0),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(("rule", "weights"), [("fuzzy", (1, 1, 1)), ("weighted", (1, 2, 0.5))])
def test_enumeration_equals_brute_force(case, rule, weights):
    """On a toy problem small enough to enumerate, the optimizer evaluates the whole grid in one
    call and returns the brute-force front and compromise of that grid."""
    xl, xu, integer, limit = CASES[case]
    prob = ToyProblem(xl, xu, integer, limit=limit)
    points = list(itertools.product(*_axes(xl, xu, integer)))
    assert len(points) <= 1024

    def one(x):
        F, G, _ = prob.objectives(np.array([x]))
        return [float(v) for v in F[0]], [float(v) for v in G[0]]

    rows, front, best_x = _brute_force(points, one, rule, weights)
    calls = prob.n_calls

    opt = Optimizer(prob, pop_size=16, generations=64, seed=3, compromise=rule, weights=weights)
    res = opt.run()
    assert prob.n_calls - calls == 1  # one batched call for the whole grid
    assert res.generations == 1
    # the test's grid is computed independently of np.linspace: equal to the last bit or two
    _assert_same_rows(res.population_f, [r[1] for r in rows])
    _assert_same_rows(res.front_f, [r[1] for r in front])
    assert res.feasible == (case != "nothing feasible")
    np.testing.assert_allclose(res.x, best_x, rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def small_cluster_problem():
    """Reactive-only control of the ieee33 cluster of buses 23-25 (PV5 inverter q and
    capacitor bank CB3) at 05:00: one continuous and one integer lever."""
    rs = load_preset("ieee33-ev")
    plant = Plant(
        cases.load_case(rs.case), rs, profiles.synthetic(1, seed=3), plant_step_s=300, n_steps=96
    )
    plant.run(60)
    clusters = {"C1": [0, 1, 2, 3, 4, 18, 19, 20, 21], "C2": [5, *range(6, 18), *range(25, 33)]}
    clusters["C5"] = [22, 23, 24]
    settings = ControlSettings(pop_size=16, generations=30, patience=0)
    ctl = build_controllers(plant, "reactive-only", settings, clusters=clusters, seed=1)
    c5 = next(c for c in ctl if c.name == "C5")
    prep = c5.prepare(61, plant.measure())
    return prep


def test_small_cluster_problem_is_enumerated_like_brute_force(small_cluster_problem):
    """A real one-inverter, one-capacitor cluster problem is solved by enumeration, and its
    front and choice equal those of evaluating every grid point in its own power flow."""
    prep = small_cluster_problem
    prob = prep.problem
    assert sorted(lv.quantity for lv in prob.active) == ["q_mvar", "step"]
    points = list(itertools.product(*_axes(prob.xl, prob.xu, prob.integer_mask)))

    def one(x):
        F, G, _ = prob.objectives(np.array([x]))
        return [float(v) for v in F[0]], [float(v) for v in G[0]]

    rows, front, best_x = _brute_force(points, one, "fuzzy", (1, 1, 1))
    calls = prob.n_calls
    res = prep.optimizer.run()
    assert prob.n_calls - calls == 1 and len(res.population_f) == len(points)
    # batched and single power flows agree to solver precision, not to the last bit
    _assert_same_rows(res.front_f, [r[1] for r in front], atol=1e-9)
    _assert_same_rows(res.population_f, [r[1] for r in rows], atol=1e-9)
    np.testing.assert_allclose(res.x, best_x, rtol=0, atol=1e-12)


def test_a_limited_candidate_set_of_a_grid_is_its_best_points():
    """``candidates(limit)`` of an enumerated problem: ``limit`` grid points, the compromise
    among them, the others at least as good (in Pareto rank among the feasible points) as every
    grid point left out."""
    xl, xu, integer, limit = CASES["continuous and integer"]
    prob = ToyProblem(xl, xu, integer, limit=limit)
    opt = Optimizer(prob, pop_size=8, generations=60, seed=1)
    res = opt.run()
    grid = opt.candidates()
    some = opt.candidates(limit=8)
    assert len(grid) > 8 and some.shape == (8, 2)
    in_grid = {tuple(r) for r in grid}
    assert all(tuple(r) in in_grid for r in some)
    assert tuple(res.x) in {tuple(r) for r in some}
    F, G, _ = prob.objectives(grid)
    feasible = np.maximum(G, 0).sum(axis=1) <= 0
    kept = np.array([tuple(r) in {tuple(s) for s in some} for r in grid])
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    rank = np.full(len(grid), len(grid))
    for r, front in enumerate(NonDominatedSorting().do(F[feasible])):
        rank[np.flatnonzero(feasible)[front]] = r
    others = kept & np.array([tuple(r) != tuple(res.x) for r in grid])
    assert rank[others].max() <= rank[~kept].min()


def test_a_grid_larger_than_the_budget_is_searched():
    """Enumeration costs the whole grid; a problem whose grid holds more points than its
    optimizer would evaluate (``pop_size × (generations + 1)``) is searched instead."""
    xl, xu, integer, limit = CASES["continuous and integer"]  # 65 × 6 = 390 points
    prob = ToyProblem(xl, xu, integer, limit=limit)
    assert len(Optimizer(prob, pop_size=8, generations=48).candidates()) == 390  # 392: grid
    searched = Optimizer(prob, pop_size=8, generations=47, seed=1)  # 384 < 390: search
    assert len(searched.candidates()) == 1  # the initial decision, before the first generation
    res = searched.run()
    assert res.evaluations <= 8 * 48 and res.generations > 1
