"""Consensus ADMM on a tie's boundary voltage (clustersim.agents.admm): the state's update rules,
and the residual on a designed two-cluster chain whose problems are solved by enumerating their
grids, so that no optimizer noise can hide the trend."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clustersim.agents.admm import MU, TAU, TieState
from clustersim.agents.problem import tie_draw_lever


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
            couplings=[("vm", tie.label, tie.bus, child.target(), child.rho, 1.0)],
            boundary_band_pu=(v0 - 0.05, v0 + 0.05),
        )
        assert len(p2.optimizer.candidates()) == 4 * 65  # enumerated
        p2.optimizer.run()
        d2 = c2.finish(p2)
        p1 = c1.prepare(
            80,
            meas,
            couplings=[("vm", tie.label, tie.bus, parent.target(), parent.rho, 1.0)],
            boundary_pq=draw or None,
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


def _draw_copies(tie, col, p, q):
    """A parent's P and Q copies of ``tie``'s draw, in force at ``p``, ``q``."""
    return [
        (tie_draw_lever(tie.label, col, "p", p - 0.5, p + 0.5), p),
        (tie_draw_lever(tie.label, col, "q", q - 0.5, q + 0.5), q),
    ]


def test_a_parents_draw_copy_is_the_childs_load_in_its_power_flow(chain):
    """The parent's copy of the tie's P/Q, a decision, loads the tie bus exactly as the child's
    announced draw does; its decision reports the copy (Decision.tie_draws)."""
    meas, tie = chain.meas, chain.tie
    c1 = chain.ctls["C1"]
    key, p, q = (tie.table, tie.row), 0.31, 0.12
    as_load = c1.prepare(80, meas, boundary_pq={key: (p, q)})
    as_copy = c1.prepare(
        80,
        meas,
        boundary_pq={key: (0.0, 0.0)},
        draw_copies=_draw_copies(tie, c1.cluster.col_of_bus(tie.bus), p, q),
    )
    x = as_load.problem.x_now
    assert as_copy.problem.n_var == len(x) + 2
    F1, G1, r1 = as_load.problem.objectives(x[None, :])
    F2, G2, r2 = as_copy.problem.objectives(np.append(x, [p, q])[None, :])
    np.testing.assert_allclose(r2.vm_pu, r1.vm_pu, rtol=0, atol=1e-12)
    np.testing.assert_allclose(F2, F1, rtol=1e-12)
    np.testing.assert_allclose(G2, G1, rtol=1e-12)
    # a lighter draw copy raises the parent's voltage at the tie bus
    _, _, light = as_copy.problem.objectives(np.append(x, [0.0, 0.0])[None, :])
    col = c1.cluster.col_of_bus(tie.bus)
    assert light.vm_pu[0, col] > r1.vm_pu[0, col]
    as_copy.optimizer.run()
    dec = c1.finish(as_copy)
    assert set(dec.tie_draws) == {tie.label} and tie.label not in dec.setpoints
    assert dec.tie_draws[tie.label] == pytest.approx(tuple(dec.result.x[-2:]))


def test_draw_couplings_penalize_each_sides_copy_in_voltage_units(chain):
    """The augmented-Lagrangian term of a P (Q) copy is (ρ/2)(k·y − target)², k the tie's
    voltage per MW (Mvar): on the parent's draw decision, and on the child's predicted draw at
    its slack."""
    meas, tie = chain.meas, chain.tie
    c1, c2 = chain.ctls["C1"], chain.ctls["C2"]
    _, kp, kq = tie.scales
    copies = _draw_copies(tie, c1.cluster.col_of_bus(tie.bus), 0.31, 0.12)
    pq = {(tie.table, tie.row): (0.0, 0.0)}
    plain = c1.prepare(80, meas, boundary_pq=pq, draw_copies=copies).problem
    terms = [("p", tie.label, tie.bus, 0.2 * kp, 8.0, kp), ("q", tie.label, tie.bus, 0.0, 2.0, kq)]
    coupled = c1.prepare(80, meas, boundary_pq=pq, draw_copies=copies, couplings=terms).problem
    x = plain.x_now[:-2]
    X = np.array([np.append(x, [0.25, 0.1]), np.append(x, [0.4, 0.0])])
    extra = coupled.objectives(X)[0] - plain.objectives(X)[0]
    want = 4.0 * (kp * (X[:, -2] - 0.2)) ** 2 + 1.0 * (kq * X[:, -1]) ** 2
    assert want.min() > 0
    np.testing.assert_allclose(extra, np.repeat(want[:, None], 3, axis=1), rtol=1e-6, atol=1e-12)
    child = c2.prepare(80, meas).problem
    term = [("p", tie.label, tie.bus, 0.1 * kp, 6.0, kp)]
    child_coupled = c2.prepare(80, meas, couplings=term).problem
    F, _, res = child.objectives(child.x_now[None, :])
    Fc, _, _ = child_coupled.objectives(child.x_now[None, :])
    want = 3.0 * (kp * (res.p_slack_mw[0] - 0.1)) ** 2
    np.testing.assert_allclose(Fc - F, np.full((1, 3), want), rtol=1e-6, atol=1e-12)


def test_a_ties_scales_are_the_linearized_drop_along_its_path(chain):
    """r·P + x·Q with the path impedance from the slack (LinDistFlow) predicts how the tie bus's
    voltage moves when the child's draw does, to first order, in the parent's power flow."""
    meas, tie = chain.meas, chain.tie
    c1 = chain.ctls["C1"]
    _, kp, kq = tie.scales
    assert kp > 0 and kq > 0
    prep = c1.prepare(
        80,
        meas,
        boundary_pq={(tie.table, tie.row): (0.0, 0.0)},
        draw_copies=_draw_copies(tie, c1.cluster.col_of_bus(tie.bus), 0.3, 0.1),
    )
    x = prep.problem.x_now[:-2]
    X = np.array([np.append(x, [0.3, 0.1]), np.append(x, [0.35, 0.1]), np.append(x, [0.3, 0.15])])
    vm = prep.problem.objectives(X)[2].vm_pu[:, c1.cluster.col_of_bus(tie.bus)]
    assert vm[0] - vm[1] == pytest.approx(kp * 0.05, rel=0.25)
    assert vm[0] - vm[2] == pytest.approx(kq * 0.05, rel=0.25)
