"""Value tables of cluster agents: a cluster's table over its upstream boundary voltage, and a
parent's objectives with a child's table folded in (:class:`~clustersim.agents.problem.ValueTable`,
:meth:`~clustersim.agents.control.Controller.value_table`)."""

from __future__ import annotations

import numpy as np
import pytest

from clustersim.agents.control import ControlSettings, build_controllers
from clustersim.agents.node import find_ties
from clustersim.agents.optimizer import choose
from clustersim.agents.problem import ValueTable
from clustersim.sim import cases, profiles
from clustersim.sim.plant import Plant
from clustersim.sim.resources import load_preset

SETTINGS = ControlSettings(pop_size=16, generations=5, patience=0)
GRID = (0.93, 0.95, 0.97, 0.99, 1.01, 1.03, 1.05)


@pytest.fixture(scope="module")
def evening(clusters33):
    """ieee33-ev at 17:00 (plant step 900 s, interval 68), no control before: the evening
    peak, when the far end of the feeder sits below 0.95 p.u."""
    rs = load_preset("ieee33-ev")
    plant = Plant(cases.load_case(rs.case), rs, profiles.synthetic(1, seed=3), plant_step_s=900)
    plant.run(68)
    ctls = {
        c.name: c
        for c in build_controllers(plant, "clustered", SETTINGS, clusters=clusters33, seed=5)
    }
    return plant, plant.measure(), ctls


def test_a_table_is_the_cluster_choosing_at_each_boundary_voltage(evening):
    """Each row of C4's table equals a brute-force evaluation: the problem rebuilt with that
    upstream voltage, the same final candidates evaluated one voltage at a time, and the
    controller's choice among them."""
    _, meas, ctls = evening
    c4 = ctls["C4"]
    prep = c4.prepare(68, meas)
    prep.optimizer.run()
    X = prep.optimizer.candidates(limit=SETTINGS.pop_size)
    table, chosen = c4.value_table(prep, GRID)
    assert len(X) > 1 and chosen.shape == (len(GRID), prep.problem.n_var)
    for k, v in enumerate(GRID):
        alone = c4.prepare(68, meas, vm_upstream_pu=v).problem
        F, G, res = alone.objectives(X)
        i = choose(F, G, SETTINGS.compromise, SETTINGS.weights)
        np.testing.assert_allclose(
            [table.deviation_pu[k], table.losses_mw[k], table.cost[k], table.violation_pu[k]],
            [F[i, 0], F[i, 1], F[i, 2], G[i, 0]],
            rtol=1e-7,
            atol=1e-10,
        )
        np.testing.assert_allclose(
            [table.p_mw[k], table.q_mvar[k]], [res.p_slack_mw[i], res.q_slack_mvar[i]], rtol=1e-7
        )
        np.testing.assert_array_equal(chosen[k], alone.clip(X[i])[0])
    # at the evening peak a higher upstream voltage lifts the far end: less violation
    assert table.violation_pu[0] > table.violation_pu[-1]


def test_a_child_table_is_folded_into_the_parent_objectives(evening, clusters33):
    """C3 with C4's table behind the tie: per candidate, losses and cost grow by the table at
    the candidate's predicted tie voltage, the deviation and the voltage constraint become the
    larger of its own and the child's."""
    plant, meas, ctls = evening
    c3 = ctls["C3"]
    (tie,) = [t for t in find_ties(plant.net, clusters33) if t.child == "C4"]
    assert tie.parent == "C3"
    table = ValueTable(
        vm_pu=np.array([0.90, 1.00, 1.10]),
        violation_pu=np.array([0.05, -0.01, -0.02]),
        deviation_pu=np.array([0.20, 0.10, 0.00]),
        losses_mw=np.array([0.30, 0.20, 0.10]),
        cost=np.array([3.0, 2.0, 1.0]),
        p_mw=np.zeros(3),
        q_mvar=np.zeros(3),
    )
    plain = c3.prepare(68, meas).problem
    folded = c3.prepare(68, meas, children=[(tie.bus, table)]).problem
    rng = np.random.default_rng(0)
    X = plain.clip(plain.xl + rng.random((12, plain.n_var)) * (plain.xu - plain.xl))
    F0, G0, res = plain.objectives(X)
    F1, G1, _ = folded.objectives(X)
    vb = res.vm_pu[:, c3.cluster.col_of_bus(tie.bus)]
    np.testing.assert_allclose(F1[:, 1], F0[:, 1] + np.interp(vb, table.vm_pu, table.losses_mw))
    np.testing.assert_allclose(F1[:, 2], F0[:, 2] + np.interp(vb, table.vm_pu, table.cost))
    np.testing.assert_allclose(
        F1[:, 0], np.maximum(F0[:, 0], np.interp(vb, table.vm_pu, table.deviation_pu))
    )
    np.testing.assert_allclose(
        G1[:, 0], np.maximum(G0[:, 0], np.interp(vb, table.vm_pu, table.violation_pu))
    )
    np.testing.assert_array_equal(G1[:, 1], G0[:, 1])


def test_the_slack_cluster_has_no_table(evening):
    _, meas, ctls = evening
    prep = ctls["C1"].prepare(68, meas)
    with pytest.raises(ValueError, match="no upstream boundary"):
        ctls["C1"].value_table(prep, GRID)


def test_value_tables_on_a_chain_reach_the_centralized_optimum(chain):
    """Up-sweep (the child's table at 17 voltages), the root's decision with the table folded
    in, down-sweep (the child decides for the voltage the root announces): the joint decision is
    the enumerated optimum of the whole network. Deciding each cluster on its own measured
    boundary misses it (the OLTC one tap too low)."""
    meas, tie = chain.meas, chain.tie
    best, enumerated = chain.optimum()
    assert enumerated == 176  # the whole grid, not a sample
    c1, c2 = chain.ctls["C1"], chain.ctls["C2"]
    assert [lv.device for lv in c2.active] == ["CB2"]
    p2 = c2.prepare(80, meas)
    p2.optimizer.run()
    table, _ = c2.value_table(p2, 0.90 + 0.01 * np.arange(17))
    v_tie = float(meas.vm_pu[c1.grid.bus_labels.index(tie.bus_label)])
    draw = {
        (tie.table, tie.row): (float(table.at(v_tie, "p_mw")), float(table.at(v_tie, "q_mvar")))
    }
    p1 = c1.prepare(80, meas, children=[(tie.bus, table)], boundary_pq=draw)
    p1.optimizer.run()
    d1 = c1.finish(p1)
    d2 = c2.finish(p2, float(d1.vm_subnet_pu[c1.cluster.col_of_bus(tie.bus)]))
    f, g = chain.joint({**d1.setpoints, **d2.setpoints})
    assert np.all(g <= 0)
    assert f[0] == pytest.approx(best, rel=1e-9)

    alone = c1.prepare(80, meas)
    alone.optimizer.run()
    f0, _ = chain.joint({**c1.finish(alone).setpoints, **c2.finish(p2).setpoints})
    assert f0[0] > best * 1.05
