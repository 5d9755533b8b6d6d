"""The lean NSGA-II loop: its sorting, crowding and survival against pymoo's, determinism,
constraint domination, integer levers, and a problem whose Pareto front is known by enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.operators.survival.rank_and_crowding import RankAndCrowding

from clustersim.agents.nsga2 import LeanNSGA2, survival, tournament
from clustersim.agents.optimizer import Optimizer


class _Constrained(Problem):
    def __init__(self) -> None:
        super().__init__(n_var=1, n_obj=3, n_ieq_constr=1, xl=0.0, xu=1.0)


def _pymoo_survival(F: np.ndarray, CV: np.ndarray, n: int) -> tuple[set[int], dict[int, tuple]]:
    pop = Population.new(X=np.arange(len(F))[:, None].astype(float), F=F, G=CV[:, None])
    surv = RankAndCrowding().do(
        _Constrained(), pop, n_survive=n, random_state=np.random.default_rng(0)
    )
    ids = surv.get("X")[:, 0].astype(int)
    attrs = {
        int(i): (int(r), float(c))
        for i, r, c in zip(ids, surv.get("rank"), surv.get("crowding"), strict=True)
        if CV[int(i)] <= 0
    }
    return set(ids.tolist()), attrs


@pytest.mark.parametrize("seed", range(8))
def test_survival_equals_pymoos_rank_and_crowding(seed: int) -> None:
    """Random fronts (continuous objectives: no crowding ties), a third of them infeasible: the
    same survivors, Pareto ranks and crowding distances as pymoo's RankAndCrowding survival."""
    rng = np.random.default_rng(seed)
    N, n = 80, 40
    F = rng.random((N, 3))
    F[:, 2] = 1.0 - F[:, 0] + 0.3 * rng.random(N)  # conflicting objectives: several fronts
    CV = np.where(rng.random(N) < 0.33, rng.random(N), 0.0)
    keep, rank, cd = survival(F, CV, n, np.random.default_rng(1))
    ref_ids, ref_attrs = _pymoo_survival(F, CV, n)
    assert set(keep.tolist()) == ref_ids
    for i, (r, c) in ref_attrs.items():
        assert rank[i] == r
        assert cd[i] == pytest.approx(c) or (np.isinf(cd[i]) and np.isinf(c))


def test_a_feasible_candidate_always_beats_an_infeasible_one() -> None:
    """Constraint domination: every feasible candidate survives before any infeasible one, the
    infeasible ones by increasing violation, and a feasible competitor wins every tournament
    against an infeasible one whatever their objectives."""
    rng = np.random.default_rng(3)
    F = rng.random((30, 3))
    CV = np.zeros(30)
    CV[:20] = rng.random(20) + 0.01  # the 20 best-looking candidates are all infeasible
    F[:20] *= 0.01
    keep, _, _ = survival(F, CV, 15, rng)
    assert set(keep[:10].tolist()) == set(range(20, 30))
    assert list(keep[10:]) == list(np.argsort(CV[:20])[:5])
    CV2 = np.array([0.0, 0.5])
    wins = tournament(200, CV2, np.array([5, 0]), np.array([0.0, np.inf]), rng)
    assert np.all(wins == 0)


class _Grid:
    """Two integer levers on 0..20 and one continuous one; objectives with a discrete Pareto
    front known by enumeration; one constraint."""

    def __init__(self) -> None:
        self.xl = np.array([0.0, 0.0, 0.0])
        self.xu = np.array([20.0, 20.0, 1.0])
        self.integer_mask = np.array([True, True, False])
        self.n_evaluations = 0

    def objectives(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
        self.n_evaluations += len(X)
        a, b, c = X[:, 0], X[:, 1], X[:, 2]
        f1 = a + c
        f2 = (20.0 - a) + (b - a // 2) ** 2 + c
        g = a - 15.0  # feasible only up to 15
        return np.column_stack([f1, f2]), g[:, None], None


def test_integer_levers_stay_integer_and_in_bounds() -> None:
    prob = _Grid()
    rng = np.random.default_rng(0)
    alg = LeanNSGA2(prob, rng.uniform(prob.xl, prob.xu, (20, 3)), 20, rng)
    for _ in range(15):
        alg.step()
        ints = alg.X[:, :2]
        assert np.array_equal(ints, np.rint(ints))
        assert np.all(alg.X >= prob.xl) and np.all(alg.X <= prob.xu)


def test_the_known_pareto_front_is_found() -> None:
    """The feasible front of :class:`_Grid` (b = a // 2, c = 0, a = 0..15: 16 points, found by
    evaluating every integer point) is exactly the rank-1 set of the final population."""
    prob = _Grid()
    pts = np.array([(a, b, 0.0) for a, b in itertools.product(range(21), range(21))])
    F, G, _ = prob.objectives(pts)
    feas = G[:, 0] <= 0
    Ff = F[feas]
    dominated = np.array(
        [np.any(np.all(Ff <= f, axis=1) & np.any(Ff < f, axis=1)) for f in Ff], dtype=bool
    )
    truth = {tuple(f) for f in Ff[~dominated]}
    assert len(truth) == 16
    rng = np.random.default_rng(7)
    alg = LeanNSGA2(prob, rng.uniform(prob.xl, prob.xu, (40, 3)), 40, rng)
    for _ in range(80):
        alg.step()
    front = {
        tuple(f) for f, cv, r in zip(alg.F, alg.CV, alg.rank, strict=True) if cv <= 0 and r == 0
    }
    assert front == truth


def test_the_same_seed_gives_the_same_population() -> None:
    def run(seed: int) -> LeanNSGA2:
        prob = _Grid()
        rng = np.random.default_rng(seed)
        alg = LeanNSGA2(prob, rng.uniform(prob.xl, prob.xu, (24, 3)), 24, rng)
        for _ in range(12):
            alg.step()
        return alg

    a, b, c = run(5), run(5), run(6)
    assert np.array_equal(a.X, b.X) and np.array_equal(a.F, b.F)
    assert not np.array_equal(a.X, c.X)


def test_generations_and_evaluations_follow_pymoos_counting() -> None:
    """The first generation evaluates the initial population: ``generations`` generations cost
    at most ``pop_size × generations`` evaluations."""
    prob = _Grid()
    prob.integer_mask = np.array([False, False, False])  # continuous: no exhausted space
    rng = np.random.default_rng(1)
    alg = LeanNSGA2(prob, rng.uniform(prob.xl, prob.xu, (30, 3)), 30, rng)
    for _ in range(10):
        alg.step()
    assert alg.n_gen == 10
    assert prob.n_evaluations == alg.n_eval == 300


def test_optimizer_names_the_lean_loop_and_pymoos_apart() -> None:
    """``nsga2`` runs the lean loop, ``pymoo-nsga2`` pymoo's NSGA2 (through the same Optimizer
    interface), each reproducible from its seed."""

    for name in ("nsga2", "pymoo-nsga2"):
        results = []
        for _ in range(2):
            prob = _pymoo_wrapped(_Grid())
            opt = Optimizer(prob, algorithm=name, pop_size=20, generations=10, seed=4)
            assert (opt._lean is not None) == (name == "nsga2")
            results.append(opt.run().x)
        assert np.array_equal(results[0], results[1])


def _pymoo_wrapped(p: _Grid) -> Problem:
    """A pymoo Problem around :class:`_Grid` with the attributes :class:`Optimizer` uses."""

    class W(Problem):
        def __init__(self) -> None:
            super().__init__(n_var=3, n_obj=2, n_ieq_constr=1, xl=p.xl, xu=p.xu)
            self.integer_mask = p.integer_mask
            self.n_evaluations = 0
            self.n_calls = 0

        def objectives(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
            X = np.where(self.integer_mask, np.rint(X), X)
            self.n_evaluations += len(X)
            self.n_calls += 1
            return p.objectives(X)

        def _evaluate(self, X: np.ndarray, out: dict, *args: object, **kwargs: object) -> None:
            F, G, _ = self.objectives(X)
            out["F"], out["G"] = F, G

        def clip(self, X: np.ndarray) -> np.ndarray:
            X = np.clip(np.atleast_2d(np.asarray(X, dtype=float)), self.xl, self.xu)
            return np.where(self.integer_mask, np.rint(X), X)

    return W()
