"""Volt/var control core: the levers' physics against pandapower, the cluster boundary model,
constraint handling, the optimizers and compromise rules, and the in-process control loop."""

from __future__ import annotations

import copy
import dataclasses
import warnings

import numpy as np
import pandapower as pp
import pytest

from clustersim.agents.control import ControlSettings, GridModel, build_controllers
from clustersim.agents.network import ClusterNetwork, assign_buses
from clustersim.agents.optimizer import compromise
from clustersim.agents.problem import apply_levers
from clustersim.errors import ScenarioError
from clustersim.sim import cases, profiles
from clustersim.sim.plant import Plant
from clustersim.sim.powerflow import BatchedPowerFlow
from clustersim.sim.resources import load_preset, write_setpoints

FAST = ControlSettings(pop_size=16, generations=6, patience=0)


def _plant(preset="ieee33-ev", n_steps=96, step_s=300, seed=3):
    rs = load_preset(preset)
    return Plant(
        cases.load_case(rs.case),
        rs,
        profiles.synthetic(1, seed=seed),
        plant_step_s=step_s,
        n_steps=n_steps,
    )


@pytest.fixture(scope="module")
def plant33():
    p = _plant()
    p.run(60)  # 05:00, PV rising, storage mid-SOC
    return p


def _pp_vm_with(plant, setpoints):
    """pandapower's voltages of the plant net with the given setpoints written in."""
    net = copy.deepcopy(plant.net)
    net.controller = net.controller.iloc[0:0]
    write_setpoints(net, plant.where, plant.devices, setpoints)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, numba=False, lightsim2grid=False)
    return net.res_bus.vm_pu.to_numpy()


@pytest.mark.parametrize("preset", ["ieee33-ev", "ieee123-ev"])
def test_levers_move_the_network_as_pandapower_says(preset):
    """Every lever (inverter and SVC q, storage p, capacitor step, OLTC/regulator tap) maps onto
    the batched power flow with pandapower's sign and size: the central problem's predicted
    voltages equal pandapower's for random decisions, to 1e-6 p.u."""
    plant = _plant(preset, n_steps=4, step_s=900)
    plant.run(1)
    ctl = build_controllers(plant, "centralized", FAST, seed=0)[0]
    meas = plant.measure()
    prep = ctl.prepare(1, meas)
    prob = prep.problem
    rng = np.random.default_rng(0)
    X = prob.clip(rng.uniform(prob.xl, prob.xu, size=(3, prob.n_var)))
    # the model's operating point = the plant's inputs of step 1 (forecast = actual here)
    grid = ctl.grid
    full = grid.full_pf.base_injections(_zeroed(plant, grid))
    base = ctl.cluster.injections(full, meas)
    fixed = [(lv, ctl._value(meas, lv)) for lv in ctl.fixed]
    if fixed:
        base = apply_levers(base, [lv for lv, _ in fixed], np.array([[v for _, v in fixed]]))
    pred = ctl.cluster.pf.solve(apply_levers(base, prob.active, X))
    for i in range(len(X)):
        sp = prob.decode(X[i])
        for name, v in meas.setpoints.items():  # devices without an active lever: in force
            sp.setdefault(name, dict(v))
        vm = _pp_vm_with(plant, sp)
        np.testing.assert_allclose(pred.vm_pu[i], vm, atol=1e-6)


def _zeroed(plant, grid):
    """The plant's present inputs with every controllable device zeroed (as the model does)."""
    net = copy.deepcopy(grid.net)
    for t in ("load", "sgen"):
        net[t]["p_mw"] = plant.net[t]["p_mw"]
        net[t]["q_mvar"] = plant.net[t]["q_mvar"]
    rows = grid._controlled_sgen
    net.sgen.loc[rows, "q_mvar"] = 0.0
    net.sgen.loc[[r for r in rows if net.sgen.at[r, "type"] == "DG"], "p_mw"] = 0.0
    net.storage["p_mw"] = 0.0
    net.shunt.loc[grid._cap_rows, "step"] = 0
    return net


def test_cluster_boundary_model_reproduces_the_network(plant33, clusters33):
    """With the plant's own inputs and the measured boundary values, every cluster's
    sub-network gives the measured voltages of its buses (the boundary model is exact at the
    measured point)."""
    meas = plant33.measure()
    grid = GridModel(plant33)
    full_pf = BatchedPowerFlow(plant33.net)
    full = full_pf.base_injections(plant33.net)
    for name, buses in assign_buses(grid.net, clusters33).items():
        cl = ClusterNetwork.build(grid.net, name, buses, tree=grid.tree)
        res = cl.pf.solve(cl.injections(full, meas))
        assert res.converged.all()
        got = res.vm_pu[0, cl.objective_cols]
        want = meas.vm_pu[cl.full_cols[cl.objective_cols]]
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=name)
        assert (cl.upstream_bus is None) == (name == "C1")


def test_cluster_must_be_connected(plant33):
    grid = GridModel(plant33)
    with pytest.raises(ScenarioError, match="not connected"):
        ClusterNetwork.build(grid.net, "bad", [5, 6, 25, 26, 12, 13], tree=grid.tree)


def test_decisions_respect_device_limits_and_switching_budgets(plant33, clusters33):
    """No decision leaves a device's range, the SOC window or the switching budget left today;
    a spent budget freezes the device."""
    meas = plant33.measure()
    budget_spent = dict(meas.switching_today)
    budget_spent.update({"OLTC": 8, "CB1": 8, "CB2": 8})
    tight = dataclasses.replace(meas, switching_today=budget_spent)
    settings = ControlSettings(pop_size=20, generations=8, patience=0)
    for mode in ("centralized", "clustered"):
        ctls = build_controllers(plant33, mode, settings, clusters=clusters33, seed=5)
        for c in ctls:
            for m, interval in ((meas, 61), (tight, 62)):
                d = c.decide(interval, m)
                dt_h = 900 / 3600
                for dev, sp in d.setpoints.items():
                    plant33.set_setpoint(dev, **sp)  # raises MessageError if out of range
                    base = plant33.devices[dev.split(":")[0]]
                    if "p_mw" in sp and base.kind in ("ess", "exchange"):
                        e = m.storage_energy_mwh[dev]
                        p = sp["p_mw"]
                        e_next = e + (p * base.efficiency if p > 0 else p / base.efficiency) * dt_h
                        assert base.soc_min * base.e_mwh - 1e-9 <= e_next
                        assert e_next <= base.soc_max * base.e_mwh + 1e-9
                    if dev in ("OLTC", "CB1", "CB2") and m is tight:
                        q = "tap_pos" if dev == "OLTC" else "step"
                        assert sp[q] == m.setpoints[dev][q], (mode, dev)
                    if "tap_pos" in sp:
                        left = 8 - m.switching_today.get(dev, 0)
                        assert abs(sp["tap_pos"] - m.setpoints[dev]["tap_pos"]) <= left
                    if base.kind in ("pv", "wind"):
                        assert abs(sp["q_mvar"]) <= base.s_rated_mva + 1e-12
    plant33._pending = {}  # leave the shared plant as it was


def test_optimizer_steps_with_ask_tell_and_warm_starts(plant33):
    meas = plant33.measure()
    ctl = build_controllers(plant33, "centralized", ControlSettings(pop_size=20), seed=1)[0]
    prep = ctl.prepare(61, meas)
    opt = prep.optimizer
    assert opt.generation == 0 and not opt.done
    assert opt.step() and opt.generation == 1
    evals = prep.problem.n_evaluations
    while opt.step():
        pass
    assert opt.generation == 40 and prep.problem.n_evaluations > evals
    r = opt.result()
    assert r.front_f.shape[1] == 3 and len(r.front_f) >= 1
    # integers stay integers, bounds hold
    x = r.x
    assert np.all(x[prep.problem.integer_mask] == np.rint(x[prep.problem.integer_mask]))
    assert np.all(x >= prep.problem.xl - 1e-12) and np.all(x <= prep.problem.xu + 1e-12)
    # the setpoints in force seed the first population: the result is never worse in CV
    _, G_now, _ = prep.problem.objectives(prep.problem.x_now[None, :])
    assert r.cv <= np.maximum(G_now, 0).sum() + 1e-12


@pytest.mark.parametrize("algorithm", ["nsga2", "pymoo-nsga2", "nsga3", "moead"])
def test_every_optimizer_runs_and_is_seeded(plant33, algorithm):
    meas = plant33.measure()
    settings = ControlSettings(optimizer=algorithm, pop_size=16, generations=5, patience=0)
    out = []
    for _ in range(2):
        ctl = build_controllers(plant33, "centralized", settings, seed=7)[0]
        out.append(ctl.decide(61, meas))
    assert out[0].setpoints == out[1].setpoints
    assert out[0].result.evaluations == out[1].result.evaluations > 0


def test_compromise_rules():
    F = np.array([[0.0, 1.0, 1.0], [0.5, 0.5, 0.5], [1.0, 0.0, 0.9], [0.9, 0.9, 0.0]])
    assert compromise(F, "fuzzy") == 1  # the balanced one
    assert compromise(F, "weighted", (1, 0, 0)) == 0
    assert compromise(F, "weighted", (0, 0, 1)) == 3
    k = compromise(F, "knee")
    assert 0 <= k < 4
    assert compromise(F[:1], "fuzzy") == 0
    with pytest.raises(ScenarioError):
        compromise(F, "nope")


def test_unknown_optimizer_is_a_scenario_error(plant33):
    ctl = build_controllers(plant33, "centralized", ControlSettings(optimizer="sa"), seed=1)[0]
    with pytest.raises(ScenarioError, match="unknown optimizer"):
        ctl.prepare(61, plant33.measure())


def test_patience_stops_early(plant33, clusters33):
    meas = plant33.measure()
    s = ControlSettings(pop_size=16, generations=200, patience=3)
    ctl = build_controllers(plant33, "clustered", s, clusters=clusters33, seed=1)[-1]
    d = ctl.decide(61, meas)
    assert d.result.generations < 200


def test_evaluations_per_variable_caps_generations_by_problem_size(plant33, clusters33):
    """With ``evaluations_per_variable = E`` a problem of n variables runs at most
    ceil(E·n / pop_size) generations (and never more than ``generations``): the central problem
    more than a cluster's."""
    meas = plant33.measure()
    s = ControlSettings(pop_size=10, generations=50, patience=0, evaluations_per_variable=20)
    central = build_controllers(plant33, "centralized", s, seed=1)[0]
    prep = central.prepare(61, meas)
    n = prep.problem.n_var
    assert prep.optimizer.generations == min(50, -(-20 * n // 10))
    for ctl in build_controllers(plant33, "clustered", s, clusters=clusters33, seed=1):
        p = ctl.prepare(61, meas)
        assert p.optimizer.generations == min(50, max(1, -(-20 * p.problem.n_var // 10)))
        assert p.optimizer.generations <= prep.optimizer.generations
    off = dataclasses.replace(s, evaluations_per_variable=0)
    assert (
        build_controllers(plant33, "centralized", off, seed=1)[0]
        .prepare(61, meas)
        .optimizer.generations
        == 50
    )


def test_adaptive_correction_uses_measured_bias(plant33, clusters33):
    meas = plant33.measure()
    s = ControlSettings(pop_size=16, generations=3, patience=0, correction_gain=1.0)
    ctl = build_controllers(plant33, "clustered", s, clusters=clusters33, seed=1)[1]
    prep = ctl.prepare(61, meas)
    bias = prep.problem.vm_bias
    assert np.isfinite(bias).all() and np.abs(bias).max() > 0  # forecast ≠ actual
    assert np.abs(bias).max() < 0.02


def test_grid_model_of_a_late_start_sees_the_same_forecast_and_day():
    """A plant that starts at 17:00 (``start_step``) gives its controllers the forecast, price
    and day of the profiles from 17:00: interval 0 of the late plant is interval 68 of a plant
    from midnight, and the switching budget restarts at midnight of the profiles' clock."""
    rs = load_preset("ieee33-ev")
    prof = profiles.synthetic(2, seed=3)

    def plant(start: int) -> Plant:
        return Plant(cases.load_case(rs.case), rs, prof, plant_step_s=900, start_step=start)

    early, late = GridModel(plant(0)), GridModel(plant(68))
    assert late.n_steps == 192 - 68
    np.testing.assert_array_equal(late.price_per_mwh, early.price_per_mwh[68:])
    assert late.price_ref(0) == early.price_ref(68)
    assert late.price_ref(96 - 68) == early.price_ref(96)  # the second day's mean price
    a, b = early.zero_injections(68, 69), late.zero_injections(0, 1)
    np.testing.assert_array_equal(a.p_mw, b.p_mw)
    np.testing.assert_array_equal(a.q_mvar, b.q_mvar)
    assert plant(68).record.time_s[0] == 68 * 900
