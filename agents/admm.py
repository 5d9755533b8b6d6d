"""Consensus ADMM on the ties of the tree of clusters ([ADMM] §7.1, [ADMMOPF]).

Each tie ``e`` between a parent cluster ``p`` and a child cluster ``c`` has three coupling
quantities — the voltage of the tie's bus and the active and reactive power the child draws
through the tie — and each side keeps its own copy of each ([ADMMOPF] couples voltages and
flows of the shared branch the same way):

- the parent: ``y_p`` = the voltage its decision holds at the tie bus, and the draw its decision
  assumes there, a decision of its own
  (:func:`~clustersim.agents.problem.tie_draw_lever`, a load at the tie bus in its power flow);
- the child: ``y_c`` = the upstream boundary voltage its decision assumes, a decision of its own
  (:func:`~clustersim.agents.problem.boundary_lever`), and the draw its power flow predicts.

Both sides run round ``k = 0, 1, …`` of the scaled form ([ADMM] §3.1.1, §7.1), per quantity:

1. *local step*: each optimizes its volt/var problem with ``(ρ/2)(y_i − z̄ᵏ + u_iᵏ)²`` per tie
   and quantity added to its objectives (:class:`~clustersim.agents.problem.Coupling`), giving
   ``y_iᵏ⁺¹``;
2. *exchange*: each sends the other its three copies;
3. *consensus*: ``z̄ᵏ⁺¹ = (y_pᵏ⁺¹ + y_cᵏ⁺¹) / 2`` — both sides compute it from the same two
   numbers;
4. *dual step*: ``u_iᵏ⁺¹ = u_iᵏ + y_iᵏ⁺¹ − z̄ᵏ⁺¹``;
5. *residuals* ([ADMM] §3.3): primal ``r = |y_p − y_c|``, dual ``s = ρ·|z̄ᵏ⁺¹ − z̄ᵏ|``;
   *residual balancing* ([ADMM] §3.4.1, eq. 3.13, μ = 10, τ = 2): ``ρ ← 2ρ`` if ``r > 10 s``,
   ``ρ ← ρ/2`` if ``s > 10 r``, the scaled dual rescaled ``u ← u·ρ_old/ρ_new``.

Rounds stop re-optimizing once every residual of the agent's ties is within the tolerance.

Choices: a draw copy enters as the voltage it moves at the tie bus, ``r·P`` and ``x·Q`` with
``r``, ``x`` the series impedance of the path from the substation (the linearized DistFlow drop
of [DISTFLOW], :attr:`~clustersim.agents.node.Tie.scales`), so that the three quantities are in
one unit and one initial ρ and one tolerance serve them all, on any network's base power. A side whose copy from the other did not arrive
(lost, late) uses the last one it has. The multipliers ``u`` and the penalties ``ρ`` carry from
one control interval to the next (warm start); ``z̄`` restarts from this side's estimate of the
operating point — the measured tie voltage, and the tie's flow as the parent measures it or the
child's model predicts it at the setpoints in force (a child does not measure its upstream
tie) — so the first round's targets of the two sides may differ by the child's model error. The
parent's draw copies range over ``±DRAW_BAND`` of the tie's apparent power (of at least
``DRAW_FLOOR_MVA``) around that estimate. The penalty is added to each of the three objectives, so
that it weighs the same whatever compromise rule the controller applies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["ADMM_QUANTITIES", "DRAW_BAND", "DRAW_FLOOR_MVA", "MU", "TAU", "TieState"]

MU = 10.0
"""residual balancing: the ratio of primal to dual residual that changes ρ ([ADMM] eq. 3.13)"""
TAU = 2.0
"""residual balancing: the factor ρ changes by"""
ADMM_QUANTITIES: tuple[Literal["vm", "p", "q"], ...] = ("vm", "p", "q")
"""the coupling quantities of a tie: boundary voltage, active and reactive draw"""
DRAW_BAND = 0.5
"""half-width of a parent's draw copies' range, as a fraction of the tie's apparent power"""
DRAW_FLOOR_MVA = 0.1
"""the apparent power the draw copies' range is at least a fraction of"""


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
