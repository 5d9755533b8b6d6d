"""Consensus ADMM on a tie's boundary voltage (clustersim.agents.admm): the state's update rules,
and the residual on a designed two-cluster chain whose problems are solved by enumerating their
grids, so that no optimizer noise can hide the trend."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clustersim.agents.admm import MU, TAU, TieState


def test_consensus_dual_and_residuals_follow_the_scaled_form():
    a, b = TieState(rho=4.0), TieState(rho=4.0)
    a.start(1.0)
    b.start(1.0)
    a.update(1.02, 0.98)
    b.update(0.98, 1.02)
    assert a.z == b.z == pytest.approx(1.0)  # both sides compute the same consensus
    assert a.r == pytest.approx(0.04) and a.s == pytest.approx(0.0)
    # u = 0 + (copy − z̄) = ±0.02, then r > MU·s: the penalty doubles, the scaled dual halves
    assert a.rho == b.rho == 4.0 * TAU
    assert a.u == pytest.approx(0.01) and b.u == pytest.approx(-0.01)
    assert a.target() == pytest.approx(1.0 - 0.01)
    c = TieState(rho=4.0, z=1.0)
    c.update(1.0005, 1.0004)  # consensus moved far more than the copies disagree
    assert c.s > MU * c.r and c.rho == 4.0 / TAU


def test_a_new_interval_keeps_the_multiplier_and_the_penalty():
    a = TieState(rho=3.0, u=0.2, z=0.97, r=0.1, s=0.2)
    a.start(1.01)
    assert (a.rho, a.u, a.z) == (3.0, 0.2, 1.01) and math.isnan(a.r) and math.isnan(a.s)


def test_admm_residual_shrinks_and_reaches_the_optimum_on_an_enumerated_chain(chain):
    """Two clusters, each problem enumerated (parent: OLTC taps × CB1 steps; child: CB2 steps ×
    65 values of its boundary voltage copy): the primal residual |y_parent − y_child| ends well
    below where it started, and the joint decision reaches the enumerated centralized optimum
    (which deciding on the measured boundary misses, see test_value_table)."""
    meas, tie = chain.meas, chain.tie
    c1, c2 = chain.ctls["C1"], chain.ctls["C2"]
    v0 = float(meas.vm_pu[c1.grid.bus_labels.index(tie.bus_label)])
    parent, child = TieState(rho=10.0), TieState(rho=10.0)
    parent.start(v0)
    child.start(v0)
    draw: dict = {}
    residuals = []
    for _ in range(10):
        p2 = c2.prepare(
            80,
            meas,
            couplings=[(tie.bus, child.target(), child.rho)],
            boundary_band_pu=(v0 - 0.05, v0 + 0.05),
        )
        assert len(p2.optimizer.candidates()) == 4 * 65  # enumerated
        p2.optimizer.run()
        d2 = c2.finish(p2)
        p1 = c1.prepare(
            80, meas, couplings=[(tie.bus, parent.target(), parent.rho)], boundary_pq=draw or None
        )
        p1.optimizer.run()
        d1 = c1.finish(p1)
        y_parent = float(d1.vm_subnet_pu[c1.cluster.col_of_bus(tie.bus)])
        y_child = float(d2.vm_boundary_pu)
        draw = {(tie.table, tie.row): (d2.p_in_mw, d2.q_in_mvar)}
        parent.update(y_parent, y_child)
        child.update(y_child, y_parent)
        assert parent.z == child.z and parent.rho == child.rho
        residuals.append(parent.r)
    assert max(residuals[-2:]) < 0.5 * residuals[0]
    best, _ = chain.optimum()
    f, g = chain.joint({**d1.setpoints, **d2.setpoints})
    assert np.all(g <= 0) and f[0] == pytest.approx(best, rel=1e-9)
