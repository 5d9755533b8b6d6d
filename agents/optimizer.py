"""Multi-objective optimizers for the volt/var problem, stepped generation by generation.

``nsga2`` (default): NSGA-II [NSGA2] with the population in numpy arrays on pymoo's kernels
(:mod:`clustersim.agents.nsga2`); ``pymoo-nsga2``, ``nsga3`` and ``moead``: pymoo's [PYMOO]
NSGA-II, NSGA-III [NSGA3] and MOEA/D [MOEAD], driven with pymoo's ask/tell interface. Either way
an agent (:mod:`clustersim.agents.node`) can interleave generations with message exchange:
:meth:`Optimizer.step` runs one generation, :meth:`Optimizer.result` picks the compromise from the
current front at any time. :func:`implementation` names the code behind each name, with the
pymoo version, for the results' provenance.

- Mixed variables: integer levers (capacitor steps, taps) are real-coded and rounded by
  :class:`IntegerRepair` after every variation, and again at evaluation.
- Warm start: the initial population holds the setpoints in force and the previous step's choice
  (both projected into this step's bounds), the rest is uniform random from the run's seed.
- Termination: ``generations`` at most; with ``patience > 0`` also when neither the least
  constraint violation nor any objective's best value has improved by more than ``tol``
  (relative) for ``patience`` generations — small and warm-started problems stop early.
- Small problems — all-integer, or one or two continuous levers (on a 65- or 21-point grid)
  times a few integer ones (e.g. a cluster that holds one inverter and a capacitor bank), with
  at most ``ENUMERATE_LIMIT`` grid points and no more than the optimizer's own budget
  (``pop_size × (generations + 1)`` evaluations) — are solved by evaluating every grid point in
  one batched call: in so small a space a genetic algorithm spends its time re-drawing
  duplicates (measured 40-80 ms per generation on one-lever clusters of ieee51-ga, against one
  1-3 ms call), and the grid costs no more evaluations than the search would. The grid's
  evaluation is its result: choosing again costs nothing.
- MOEA/D in pymoo does not accept constraints: for it the problem adds ``1e3 × CV`` to every
  objective (``VoltVarProblem(penalty=True)``).
- Cancellation: once :func:`cancel_solves` was called for an event loop, every
  :meth:`Optimizer.step` running on that loop raises :class:`SolveCancelled` before its next
  generation, so an agent task cancelled in the middle of its synchronous solve ends within one
  generation. A solve on a loop never cancelled runs exactly as without this check.

Compromise selection on the final front (rank 1 of the feasible solutions, or the least-violating
ones when none is feasible):

- ``fuzzy``: membership ``μ_i = (f_i^max − f_i)/(f_i^max − f_i^min)`` per objective, the solution
  with the largest normalized ``Σ_i μ_i`` (the fuzzy decision of [NSGA3PART]);
- ``knee``: the solution with the largest crowding distance [NSGA2] in rank 1, boundary points
  excluded ([CVC]);
- ``weighted``: the smallest weighted sum of min-max normalized objectives.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymoo.algorithms.moo.moead import MOEAD
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.algorithms.moo.nsga3 import NSGA3
from pymoo.core.individual import Individual
from pymoo.core.population import Population
from pymoo.core.repair import Repair
from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting
from pymoo.util.ref_dirs import get_reference_directions
from pymoo.version import __version__ as PYMOO_VERSION

from clustersim.agents.nsga2 import LeanNSGA2, survival
from clustersim.agents.problem import VoltVarProblem
from clustersim.errors import ScenarioError

__all__ = [
    "ALGORITHMS",
    "IntegerRepair",
    "OptResult",
    "Optimizer",
    "SolveCancelled",
    "cancel_solves",
    "choose",
    "compromise",
    "implementation",
]

ALGORITHMS = ("nsga2", "pymoo-nsga2", "nsga3", "moead")
_IMPLEMENTATIONS = {
    "nsga2": "clustersim.agents.nsga2.LeanNSGA2 on pymoo {v} kernels",
    "pymoo-nsga2": "pymoo {v} pymoo.algorithms.moo.nsga2.NSGA2",
    "nsga3": "pymoo {v} pymoo.algorithms.moo.nsga3.NSGA3",
    "moead": "pymoo {v} pymoo.algorithms.moo.moead.MOEAD",
}
ENUMERATE_LIMIT = 1024
"""a problem whose search grid has at most this many points is solved by enumeration"""
_CONTINUOUS_POINTS = {1: 65, 2: 21}
"""grid resolution per continuous lever when a problem has one or two of them"""
_CANCELLED_LOOPS: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
"""event loops whose solves are cancelled (:func:`cancel_solves`)"""


def implementation(algorithm: str) -> str:
    """The code an optimizer name runs, with the installed pymoo version (for provenance)."""
    return _IMPLEMENTATIONS[algorithm].format(v=PYMOO_VERSION)


class SolveCancelled(asyncio.CancelledError):
    """A solve stopped because :func:`cancel_solves` was called for the event loop it runs on;
    inside an asyncio task it ends the task as cancelled."""


def cancel_solves(loop: asyncio.AbstractEventLoop) -> None:
    """Stop every solve running on ``loop``, now or later: :meth:`Optimizer.step` raises
    :class:`SolveCancelled` from its next generation on (an agent task's solve is synchronous,
    so the task's own cancellation reaches it only after the solve)."""
    _CANCELLED_LOOPS.add(loop)


def _check_cancelled() -> None:
    """:class:`SolveCancelled` when the running event loop's solves are cancelled."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # a solve outside an event loop is never cancelled
        return
    if loop in _CANCELLED_LOOPS:
        raise SolveCancelled("the solves of this event loop were cancelled")


def search_grid(
    xl: np.ndarray, xu: np.ndarray, integer: np.ndarray, limit: int
) -> np.ndarray | None:
    """Every point of the problem's grid (integers at each value, at most two continuous levers
    at :data:`_CONTINUOUS_POINTS` points each), or None when it would exceed ``limit`` points."""
    n_cont = int((~integer).sum())
    if n_cont > 2:
        return None
    axes = []
    size = 1.0
    for lo, hi, is_int in zip(xl, xu, integer, strict=True):
        if is_int:
            ax = np.arange(np.ceil(lo - 1e-9), np.floor(hi + 1e-9) + 1, dtype=float)
        elif hi > lo:
            ax = np.linspace(lo, hi, _CONTINUOUS_POINTS[n_cont])
        else:
            ax = np.array([lo], dtype=float)
        axes.append(ax if len(ax) else np.array([lo], dtype=float))
        size *= len(axes[-1])
        if size > limit:
            return None
    return np.array(np.meshgrid(*axes, indexing="ij")).reshape(len(axes), -1).T


class IntegerRepair(Repair):
    """Round the integer columns of every offspring and keep them within bounds."""

    def _do(self, problem: Any, X: np.ndarray, **kwargs: Any) -> np.ndarray:
        mask = getattr(problem, "integer_mask", None)
        if mask is None or not np.any(mask):
            return X
        X = np.asarray(X, dtype=float).copy()
        lo = np.ceil(problem.xl[mask] - 1e-9)
        hi = np.floor(problem.xu[mask] + 1e-9)
        X[:, mask] = np.clip(np.rint(X[:, mask]), lo, hi)
        return X


@dataclass
class OptResult:
    """Outcome of one controller's optimization at one step."""

    x: np.ndarray
    """chosen decision vector"""
    f: np.ndarray
    """its objectives (f1 voltage deviation p.u., f2 losses MW, f3 cost)"""
    cv: float
    """its constraint violation (0 = feasible)"""
    front_f: np.ndarray
    """objectives of the final front (rank 1, or least violating), rows = solutions"""
    front_cv: np.ndarray
    population_f: np.ndarray
    """objectives of the whole final population (or of every grid point)"""
    population_cv: np.ndarray
    evaluations: int
    generations: int
    feasible: bool
    extra: dict[str, Any] = field(default_factory=dict)


def _ref_dirs(pop_size: int) -> np.ndarray:

    p = 1
    while (p + 2) * (p + 3) // 2 <= pop_size:  # das-dennis [DASDENNIS] count for 3 objectives
        p += 1
    return np.asarray(get_reference_directions("das-dennis", 3, n_partitions=p))


class Optimizer:
    """One optimization run, stepped with ask/tell (see module docstring).

    ``initial`` rows (e.g. the setpoints in force, the previous choice) seed the first population.
    """

    def __init__(
        self,
        problem: VoltVarProblem,
        *,
        algorithm: str = "nsga2",
        pop_size: int = 40,
        generations: int = 40,
        seed: int = 0,
        initial: Sequence[np.ndarray] = (),
        patience: int = 0,
        tol: float = 1e-4,
        compromise: str = "fuzzy",
        weights: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise ScenarioError(
                f"unknown optimizer {algorithm!r} (available: {', '.join(ALGORITHMS)})",
                key="control.optimizer",
            )
        self.problem = problem
        self.algorithm_name = algorithm
        self.generations = int(generations)
        self.patience = int(patience)
        self.tol = float(tol)
        self.compromise_rule = compromise
        self.weights = np.asarray(weights, dtype=float)
        rng = np.random.default_rng(seed)
        n = problem.n_var
        X0 = rng.uniform(problem.xl, problem.xu, size=(max(pop_size, 2), n))
        for i, row in enumerate(initial):
            if i < len(X0) and row is not None and len(row) == n:
                X0[i] = row
        X0 = problem.clip(X0)
        self._x0 = X0[0]
        self._gen = 0
        self._exhausted = False
        self._best: np.ndarray | None = None
        self._stall = 0
        self._enum: np.ndarray | None = None
        self._enum_fcv: tuple[np.ndarray, np.ndarray, int] | None = None
        """objectives, constraint violations and compromise of the grid at its evaluation"""
        self._enum_result: OptResult | None = None
        self._alg: Any = None
        self._lean: LeanNSGA2 | None = None
        if n == 0 or bool(np.all(problem.xu - problem.xl <= 0)):
            self._alg = None  # nothing to decide: every lever is pinned (or there is none)
            return
        budget = min(ENUMERATE_LIMIT, pop_size * (self.generations + 1))
        grid = search_grid(problem.xl, problem.xu, problem.integer_mask, budget)
        if grid is not None:  # a small search space: evaluate all of it in one batched call
            self._alg = None
            self._enum = grid
            return
        if algorithm == "nsga2":
            self._lean = LeanNSGA2(problem, X0, pop_size, rng)
            return
        self._alg = self._make(algorithm, pop_size, X0)
        self._alg.setup(problem, termination=("n_gen", self.generations), seed=int(seed))

    @staticmethod
    def _make(name: str, pop_size: int, X0: np.ndarray) -> Any:
        if name == "pymoo-nsga2":
            return NSGA2(pop_size=pop_size, sampling=X0, repair=IntegerRepair())
        if name == "nsga3":
            return NSGA3(
                ref_dirs=_ref_dirs(pop_size), pop_size=pop_size, sampling=X0, repair=IntegerRepair()
            )

        ref = _ref_dirs(pop_size)
        return MOEAD(
            ref,
            n_neighbors=min(15, len(ref)),
            sampling=X0[: len(ref)] if len(X0) >= len(ref) else X0,
            repair=IntegerRepair(),
        )

    # ---------------------------------------------------------------- stepping
    @property
    def done(self) -> bool:
        """Whether the run is over: generation cap, patience, an exhausted algorithm, or the one
        evaluation of a grid-searched small problem."""
        if self._lean is not None:
            if self._exhausted or self._gen >= self.generations:
                return True
        elif self._alg is None:
            return self._gen >= 1
        elif self._exhausted or not self._alg.has_next():
            return True
        return self.patience > 0 and self._stall >= self.patience

    @property
    def searching(self) -> bool:
        """Whether a population search runs (not a grid-searched, pinned or empty problem)."""
        return self._lean is not None or self._alg is not None

    @property
    def generation(self) -> int:
        """Generations run so far."""
        return self._gen

    def step(self) -> bool:
        """Run one generation (ask, evaluate the whole population in one call, tell); return
        whether another generation would run. :class:`SolveCancelled` when the solves of the
        running event loop were cancelled (:func:`cancel_solves`)."""
        _check_cancelled()
        if self.done:
            return False
        if self._lean is not None:
            if self._lean.step() == 0:  # no new candidate left around the population
                self._exhausted = True
                return False
            self._gen += 1
            self._track()
            return not self.done
        if self._alg is None:
            self._gen += 1
            return False
        pop = self._alg.ask()
        if isinstance(pop, Individual):  # steady state (MOEA/D): one offspring per ask
            self._steady_state_generation(pop)
            return not self.done
        if pop is None or len(pop) == 0:  # no new candidate left (tiny, pinned search space)
            self._stall = max(self._stall, self.patience) if self.patience else self._stall
            self._exhausted = True
            return False
        self._alg.evaluator.eval(self.problem, pop)
        self._alg.tell(infills=pop)
        self._gen += 1
        self._track()
        return not self.done

    def _steady_state_generation(self, first: Any) -> None:
        """One generation of a steady-state algorithm: one pass over its population, each
        offspring evaluated (one batched call of one candidate) and told on its own."""
        alg = self._alg
        n_gen = alg.n_gen
        ind = first
        while True:
            alg.evaluator.eval(self.problem, Population.create(ind))
            alg.tell(infills=ind)
            if alg.n_gen != n_gen or not alg.has_next():
                break
            ind = alg.ask()
            if ind is None:
                self._exhausted = True
                break
        self._gen += 1
        self._track()

    def run(self) -> OptResult:
        """Step until done and return the compromise (:meth:`result`)."""
        while self.step():
            pass
        return self.result()

    def candidates(self, limit: int | None = None) -> np.ndarray:
        """The decisions :meth:`result` chooses from: the whole grid of a grid-searched problem,
        else the current population (the initial decision before the first generation).
        ``limit``: of a grid larger than this, once :meth:`result` has evaluated it, the
        ``limit`` best grid points by NSGA-II survival (rank, then crowding; [NSGA2]), in grid
        order: what a population of that size would hold, the compromise always among them."""
        if self._enum is not None:
            if limit is not None and len(self._enum) > limit and self._enum_fcv is not None:
                F, cv, best = self._enum_fcv
                keep = survival(F, cv, limit, np.random.default_rng(0))[0]
                if best not in keep:  # the compromise always stays (in place of the last)
                    keep[-1] = best
                return self._enum[np.sort(keep)]
            return self._enum
        pop = self._population()
        if pop is None:
            prob = self.problem
            return prob.clip(self._x0)[:1] if prob.n_var else np.zeros((1, 0))
        return pop

    def _population(self) -> np.ndarray | None:
        """Decision vectors of the current population (None before the first generation)."""
        if self._lean is not None:
            return self._lean.X if self._lean.n_gen else None
        if self._alg is None or self._alg.pop is None or len(self._alg.pop) == 0:
            return None
        return np.asarray(self._alg.pop.get("X"), dtype=float)

    def _track(self) -> None:
        if self._lean is not None:
            F, cv = self._lean.F, self._lean.CV
        else:
            pop = self._alg.pop
            F = pop.get("F")
            cv = pop.get("CV")
            cv = np.zeros(len(F)) if cv is None else cv.ravel()
        feas = cv <= 0
        stat = np.concatenate(
            [[cv.min()], F[feas].min(axis=0) if feas.any() else np.full(F.shape[1], np.inf)]
        )
        if self._best is None:
            self._best = stat
            return
        old = self._best
        improved = False
        for a, b in zip(stat, old, strict=True):
            if np.isinf(b) and np.isfinite(a):
                improved = True
            elif np.isfinite(b) and a < b - self.tol * max(abs(b), 1e-9):
                improved = True
        self._best = np.minimum(stat, old)
        self._stall = 0 if improved else self._stall + 1

    # ---------------------------------------------------------------- result
    def result(self) -> OptResult:
        """The compromise of the current front."""
        if self._enum_result is not None:
            return self._enum_result
        prob = self.problem
        pop_x = self._population()
        if self._enum is not None:
            X = self._enum
        elif pop_x is None:
            x = prob.clip(self._x0)[0] if prob.n_var else np.zeros(0)
            F, G, _ = prob.objectives(x[None, :])
            cv = float(np.sum(np.maximum(G, 0)))
            return OptResult(
                x=x,
                f=F[0],
                cv=cv,
                front_f=F,
                front_cv=np.array([cv]),
                population_f=F,
                population_cv=np.array([cv]),
                evaluations=prob.n_evaluations,
                generations=0,
                feasible=cv <= 0,
            )
        else:
            X = pop_x
        # re-evaluate without penalty (MOEA/D) so that F and CV are the true objectives
        F, G, _ = prob.objectives(X)
        if self._enum is None:
            prob.n_evaluations -= len(X)  # bookkeeping: not an optimization evaluation
            prob.n_calls -= 1
        cv = np.sum(np.maximum(G, 0.0), axis=1)
        feas = cv <= 1e-12
        front = _front(F, cv)
        best = front[compromise(F[front], self.compromise_rule, self.weights)]
        out = OptResult(
            x=prob.clip(X[best])[0],
            f=F[best],
            cv=float(cv[best]),
            front_f=F[front],
            front_cv=cv[front],
            population_f=F,
            population_cv=cv,
            evaluations=prob.n_evaluations,
            generations=self._gen,
            feasible=bool(feas.any()),
        )
        if self._enum is not None:
            self._enum_fcv = (F, cv, int(best))
            self._enum_result = out
        return out


def _front(F: np.ndarray, cv: np.ndarray) -> np.ndarray:
    """Indices of the front a compromise is chosen from: rank 1 of the feasible candidates, or
    of the least violating ones when none is feasible."""
    feas = cv <= 1e-12
    idx = np.flatnonzero(feas) if feas.any() else np.flatnonzero(cv <= cv.min() + 1e-12)
    return idx[_rank1(F[idx])]


def choose(F: np.ndarray, G: np.ndarray, rule: str = "fuzzy", weights: Any = (1, 1, 1)) -> int:
    """Index of the candidate a controller decides for among objectives ``F`` and constraints
    ``G`` (rows = candidates): the ``rule`` compromise of :func:`_front` (as
    :meth:`Optimizer.result` chooses)."""
    cv = np.sum(np.maximum(G, 0.0), axis=1)
    front = _front(F, cv)
    return int(front[compromise(F[front], rule, weights)])


def _rank1(F: np.ndarray) -> np.ndarray:

    if len(F) <= 1:
        return np.arange(len(F))
    return np.asarray(NonDominatedSorting().do(F, only_non_dominated_front=True))


def compromise(F: np.ndarray, rule: str = "fuzzy", weights: Any = (1, 1, 1)) -> int:
    """Index of the compromise solution of a front ``F`` (rows = solutions, minimized).

    ``rule``: ``fuzzy`` (the fuzzy decision of [NSGA3PART]), ``knee`` (largest crowding distance
    [NSGA2] in rank 1, as in [CVC]) or ``weighted`` (module docstring).
    """
    F = np.asarray(F, dtype=float)
    if len(F) <= 1:
        return 0
    lo, hi = F.min(axis=0), F.max(axis=0)
    span = np.where(hi - lo > 1e-12, hi - lo, 1.0)
    if rule == "fuzzy":
        mu = np.where(hi - lo > 1e-12, (hi - F) / span, 1.0)
        score = mu.sum(axis=1) / mu.sum()
        return int(np.argmax(score))
    if rule == "weighted":
        w = np.asarray(weights, dtype=float)
        return int(np.argmin(((F - lo) / span) @ w))
    if rule == "knee":
        cd = np.asarray(calc_crowding_distance(F), dtype=float)
        finite = np.isfinite(cd)
        if not finite.any():
            return compromise(F, "fuzzy")
        cd[~finite] = -np.inf
        return int(np.argmax(cd))
    raise ScenarioError(f"unknown compromise rule {rule!r}", key="control.compromise")
