"""NSGA-II [NSGA2] with the population held in numpy arrays, on pymoo's kernels [PYMOO].

One generation is a handful of vectorized calls on arrays ``X`` (decisions), ``F`` (objectives)
and ``CV`` (total violation ``Σ max(G, 0)`` of the constraints ``G ≤ 0``):

1. **Mating selection**: binary tournaments between pairs drawn from random permutations of the
   population, decided by constraint violation (less wins when either is infeasible), then Pareto
   rank (lower wins), then crowding distance (larger wins), then a fair coin — Deb's constrained
   tournament [NSGA2] written as array comparisons.
2. **Variation**: simulated binary crossover ``pymoo.operators.crossover.sbx.cross_sbx``
   (η = 15, applied to a mating with probability 0.9, to each variable with probability 0.5,
   children exchanged with probability 0.5) and polynomial mutation
   ``pymoo.operators.mutation.pm.mut_pm`` (η = 20, an offspring mutated with probability 0.9,
   each variable with probability ``min(0.5, 1/n_var)``) — the operators and settings of pymoo's
   ``NSGA2``; the seeded ``numpy.random.Generator`` of the run is passed to each as
   ``random_state``. Integer columns are rounded and clipped into their bounds afterwards.
3. **Duplicates**: offspring equal to a member of the population or to an earlier offspring are
   dropped, as pymoo's default duplicate elimination does. The first round mates ``pop_size``
   pairs (twice the children needed) and keeps the first ``pop_size`` distinct children — the
   children are independent draws, so this is the distribution of pymoo's mate-until-enough loop
   at one call per kernel; up to ``DUPLICATE_ROUNDS`` further rounds make up a shortfall, after
   which a generation evaluates fewer than ``pop_size`` candidates (a nearly exhausted space).
4. **Evaluation**: the offspring in one call of the problem (one batched power flow).
5. **Survival** (constraint domination [NSGA2]): feasible candidates first, by the fronts of
   ``pymoo.util.nds.non_dominated_sorting.NonDominatedSorting`` (moocore's ``pareto_rank``) and,
   in the front that does not fit whole, by crowding distance
   (``pymoo.operators.survival.rank_and_crowding.metrics.calc_crowding_distance``, ties broken at
   random); then infeasible ones by increasing violation.

The first generation evaluates the initial population (pymoo counts it as generation 1 too), so
``generations`` generations cost ``pop_size × generations`` evaluations at most, as with pymoo's
``NSGA2``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from pymoo.operators.crossover.sbx import cross_sbx
from pymoo.operators.mutation.pm import mut_pm
from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

__all__ = ["DUPLICATE_ROUNDS", "LeanNSGA2", "crowding", "survival", "tournament"]

SBX_ETA = 15.0
SBX_PROB = 0.9
SBX_PROB_VAR = 0.5
SBX_PROB_BIN = 0.5
PM_ETA = 20.0
PM_PROB = 0.9
DUPLICATE_ROUNDS = 10
"""extra mating rounds to replace duplicate offspring before a generation settles for fewer"""


class Evaluable(Protocol):
    """What the loop needs of a problem: bounds, the integer columns and a batched evaluation."""

    xl: np.ndarray
    xu: np.ndarray
    integer_mask: np.ndarray

    def objectives(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, object]: ...


def crowding(F: np.ndarray) -> np.ndarray:
    """Crowding distance of the points of one front (pymoo's kernel; ``inf`` at the extremes and
    for fronts of at most two points). A point whose objectives repeat an earlier point's gets 0,
    and the distances are those of the distinct points, as in pymoo's ``RankAndCrowding``."""
    if len(F) <= 2:
        return np.full(len(F), np.inf)
    first = np.sort(_first_rows(F))
    if len(first) == len(F):
        return np.asarray(calc_crowding_distance(F), dtype=float)
    cd = np.zeros(len(F))
    cd[first] = calc_crowding_distance(F[first]) if len(first) > 2 else np.inf
    return cd


def survival(
    F: np.ndarray, CV: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the ``n`` survivors under constraint domination, and the Pareto rank and
    crowding distance of every survivor (rank ``len(F)`` and crowding 0 for infeasible ones,
    which are never compared on them, and for the candidates that do not survive)."""
    N = len(F)
    n = min(n, N)
    rank = np.full(N, N, dtype=int)
    cd = np.zeros(N)
    feas = np.flatnonzero(CV <= 0.0)
    chosen: list[np.ndarray] = []
    taken = 0
    if len(feas):
        fronts = NonDominatedSorting().do(F[feas], n_stop_if_ranked=n)
        for r, front in enumerate(fronts):
            if taken >= n:
                break  # the fronts after the cut do not survive: no crowding needed
            idx = feas[np.asarray(front, dtype=int)]
            rank[idx] = r
            cd[idx] = crowding(F[idx])
            if taken + len(idx) <= n:
                chosen.append(idx)
                taken += len(idx)
            else:
                order = np.lexsort((rng.random(len(idx)), -cd[idx]))
                chosen.append(idx[order[: n - taken]])
                taken = n
    if taken < n:
        infeas = np.flatnonzero(CV > 0.0)
        chosen.append(infeas[np.argsort(CV[infeas], kind="stable")[: n - taken]])
    return np.concatenate(chosen).astype(int), rank, cd


def tournament(
    n_select: int,
    CV: np.ndarray,
    rank: np.ndarray,
    cd: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """``n_select`` winners of binary tournaments (module docstring, step 1); competitors are
    drawn from concatenated random permutations of the population, as pymoo's
    ``TournamentSelection`` does."""
    N = len(CV)
    need = 2 * n_select
    perms = np.concatenate([rng.permutation(N) for _ in range(-(-need // N))])[:need]
    a, b = perms[0::2], perms[1::2]
    coin = rng.random(n_select) < 0.5
    tie = np.where(coin, a, b)
    by_cd = np.where(cd[a] > cd[b], a, np.where(cd[b] > cd[a], b, tie))
    by_rank = np.where(rank[a] < rank[b], a, np.where(rank[b] < rank[a], b, by_cd))
    by_cv = np.where(CV[a] < CV[b], a, np.where(CV[b] < CV[a], b, tie))
    either_infeasible = (CV[a] > 0.0) | (CV[b] > 0.0)
    return np.where(either_infeasible, by_cv, by_rank)


def _first_rows(A: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct row of ``A`` (exact equality)."""
    A = np.ascontiguousarray(A + 0.0)  # + 0.0 folds -0.0 into 0.0
    keys = A.view(np.dtype((np.void, A.dtype.itemsize * A.shape[1]))).ravel()
    return np.asarray(np.unique(keys, return_index=True)[1], dtype=int)


def _rows_new(X: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Mask of the rows of ``X`` that equal no row of ``known`` and no earlier row of ``X``."""
    if len(X) == 0:
        return np.zeros(0, dtype=bool)
    new = np.zeros(len(known) + len(X), dtype=bool)
    new[_first_rows(np.vstack([known, X]))] = True
    return new[len(known) :]


class LeanNSGA2:
    """NSGA-II stepped one generation per :meth:`step` (module docstring).

    ``X0`` is the initial population (rows within the bounds); ``rng`` the run's seeded generator,
    the only source of randomness.
    """

    def __init__(
        self,
        problem: Evaluable,
        X0: np.ndarray,
        pop_size: int,
        rng: np.random.Generator,
    ) -> None:
        self.problem = problem
        self.pop_size = max(int(pop_size), 2)
        self.rng = rng
        self.xl = np.asarray(problem.xl, dtype=float)
        self.xu = np.asarray(problem.xu, dtype=float)
        self.integer = np.asarray(problem.integer_mask, dtype=bool)
        self._int_lo = np.ceil(self.xl[self.integer] - 1e-9)
        self._int_hi = np.floor(self.xu[self.integer] + 1e-9)
        self._X0 = self.repair(np.asarray(X0, dtype=float))
        self.X = np.zeros((0, len(self.xl)))
        self.F = np.zeros((0, 0))
        self.CV = np.zeros(0)
        self.rank = np.zeros(0, dtype=int)
        self.cd = np.zeros(0)
        self.n_gen = 0
        self.n_eval = 0
        self.exhausted = False
        """True once a generation found no candidate that is not already in the population"""

    def repair(self, X: np.ndarray) -> np.ndarray:
        """Integer columns rounded and clipped into their bounds."""
        if not self.integer.any():
            return X
        X = X.copy()
        X[:, self.integer] = np.clip(np.rint(X[:, self.integer]), self._int_lo, self._int_hi)
        return X

    def _evaluate(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Objectives and total constraint violation of candidates ``X``."""
        F, G, _ = self.problem.objectives(X)
        self.n_eval += len(X)
        return np.asarray(F, dtype=float), np.maximum(np.asarray(G, dtype=float), 0.0).sum(axis=1)

    def _offspring(self) -> np.ndarray:
        """Up to ``pop_size`` new, distinct candidates (module docstring, steps 1-3)."""
        n_var = self.X.shape[1]
        pm_var = min(0.5, 1.0 / n_var)
        out = np.zeros((0, n_var))
        for k in range(1 + DUPLICATE_ROUNDS):
            # two children per mating; the first round draws twice the need, so that one call
            # of each kernel usually yields enough distinct children
            n_mat = (self.pop_size - len(out)) if k == 0 else -(-(self.pop_size - len(out)) // 2)
            parents = tournament(2 * n_mat, self.CV, self.rank, self.cd, self.rng)
            P = self.X[parents].reshape(n_mat, 2, n_var).swapaxes(0, 1)
            Q = P.copy()
            cross = self.rng.random(n_mat) < SBX_PROB
            if cross.any():
                col = np.ones((n_mat, 1))
                C = cross_sbx(
                    P,
                    self.xl,
                    self.xu,
                    SBX_ETA * col,
                    SBX_PROB_VAR * col,
                    SBX_PROB_BIN * col,
                    random_state=self.rng,
                )
                Q[:, cross] = C[:, cross]
            Y = Q.reshape(2 * n_mat, n_var)
            M = mut_pm(
                Y,
                self.xl,
                self.xu,
                np.full(len(Y), PM_ETA),
                np.full(len(Y), pm_var),
                False,
                random_state=self.rng,
            )
            mutate = self.rng.random(len(Y)) <= PM_PROB
            Y[mutate] = M[mutate]
            Y = self.repair(Y)
            Y = Y[_rows_new(Y, np.vstack([self.X, out]))]
            out = np.vstack([out, Y[: self.pop_size - len(out)]])
            if len(out) >= self.pop_size:
                break
        return out

    def step(self) -> int:
        """Run one generation; return the number of candidates evaluated (0 when no new
        candidate could be found: the search space is exhausted around the population)."""
        if self.n_gen == 0:
            X = self._X0[_rows_new(self._X0, np.zeros((0, self._X0.shape[1])))]
            F, CV = self._evaluate(X)
            keep, self.rank, self.cd = survival(F, CV, self.pop_size, self.rng)
            self.X, self.F, self.CV = X, F, CV
            self._select(keep)
            self.n_gen = 1
            return len(X)
        Y = self._offspring()
        if len(Y) == 0:
            self.exhausted = True
            return 0
        F, CV = self._evaluate(Y)
        self.X = np.vstack([self.X, Y])
        self.F = np.vstack([self.F, F])
        self.CV = np.concatenate([self.CV, CV])
        keep, self.rank, self.cd = survival(self.F, self.CV, self.pop_size, self.rng)
        self._select(keep)
        self.n_gen += 1
        return len(Y)

    def _select(self, keep: np.ndarray) -> None:
        self.X, self.F, self.CV = self.X[keep], self.F[keep], self.CV[keep]
        self.rank, self.cd = self.rank[keep], self.cd[keep]
