"""Consensus ADMM on the boundary voltages of the tree of clusters ([ADMM] §7.1, [ADMMOPF]).

Each tie ``e`` between a parent cluster ``p`` and a child cluster ``c`` has one coupling
quantity, the voltage of the tie's bus, and each side keeps its own copy of it: ``y_p``, the
voltage the parent's decision holds there, and ``y_c``, the upstream boundary voltage the child's
decision assumes — a decision of the child's own (:func:`~clustersim.agents.problem.boundary_lever`).
Both sides run round ``k = 0, 1, …`` of the scaled form ([ADMM] §3.1.1, §7.1):

1. *local step*: each optimizes its volt/var problem with ``(ρ/2)(y_i − z̄ᵏ + u_iᵏ)²`` per tie
   added to its objectives (:class:`~clustersim.agents.problem.Coupling`), giving ``y_iᵏ⁺¹``;
2. *exchange*: each sends the other its copy (the child also the P/Q its decision draws, which the
   parent takes as its operating point's draw, as in boundary rounds);
3. *consensus*: ``z̄ᵏ⁺¹ = (y_pᵏ⁺¹ + y_cᵏ⁺¹) / 2`` — both sides compute it from the same two
   numbers;
4. *dual step*: ``u_iᵏ⁺¹ = u_iᵏ + y_iᵏ⁺¹ − z̄ᵏ⁺¹``;
5. *residuals* ([ADMM] §3.3): primal ``r = |y_p − y_c|``, dual ``s = ρ·|z̄ᵏ⁺¹ − z̄ᵏ|``;
   *residual balancing* ([ADMM] §3.4.1, eq. 3.13, μ = 10, τ = 2): ``ρ ← 2ρ`` if ``r > 10 s``,
   ``ρ ← ρ/2`` if ``s > 10 r``, the scaled dual rescaled ``u ← u·ρ_old/ρ_new``.

A side whose copy from the other did not arrive (lost, late) uses the last one it has. The
multipliers ``u`` and the penalty ``ρ`` carry from one control interval to the next (warm
start); ``z̄`` restarts from the measured tie voltage. Choices: only the voltage is bargained
over — the parent has no copy of the draw of its own to optimize (its draw is an input of its
power flow, not a decision), so the draw is passed up as the child predicts it; the penalty is
added to each of the three objectives, so that it weighs the same whatever compromise rule the
controller applies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["MU", "TAU", "TieState"]

MU = 10.0
"""residual balancing: the ratio of primal to dual residual that changes ρ ([ADMM] eq. 3.13)"""
TAU = 2.0
"""residual balancing: the factor ρ changes by"""


@dataclass
class TieState:
    """One side's ADMM state on one tie: penalty ``rho``, scaled dual ``u``, consensus value
    ``z`` (p.u.; NaN until the first round), and the last round's residuals ``r`` and ``s``."""

    rho: float
    u: float = 0.0
    z: float = math.nan
    r: float = math.nan
    s: float = math.nan

    def start(self, vm_pu: float) -> None:
        """A new control interval: the consensus value restarts from ``vm_pu`` (the measured tie
        voltage), ``u`` and ``rho`` stay."""
        self.z = float(vm_pu)
        self.r = self.s = math.nan

    def target(self) -> float:
        """``z̄ − u``, the value this side's copy is pulled towards."""
        return self.z - self.u

    def update(self, mine: float, theirs: float) -> None:
        """Steps 3–5 for this side's copy ``mine`` and the other side's ``theirs``."""
        z_old = self.z
        self.z = 0.5 * (mine + theirs)
        self.u += mine - self.z
        self.r = abs(mine - theirs)
        self.s = self.rho * abs(self.z - z_old) if math.isfinite(z_old) else math.inf
        rho = self.rho
        if self.r > MU * self.s:
            rho = self.rho * TAU
        elif self.s > MU * self.r:
            rho = self.rho / TAU
        self.u *= self.rho / rho
        self.rho = rho
