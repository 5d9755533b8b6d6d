"""Scenario files: validation with one-line errors naming file and key, overrides, built-ins."""

from __future__ import annotations

import pytest

from clustersim.errors import ScenarioError
from clustersim.scenario import (
    DEFAULT_SCENARIO,
    apply_overrides,
    builtin_scenarios,
    load_scenario,
)


def test_builtins_exist_and_validate():
    names = builtin_scenarios()
    assert {f"ieee33-ev-{m}" for m in ("none", "local", "centralized", "clustered")} | {
        f"ieee51-ga-{m}" for m in ("none", "centralized", "active", "reactive", "clustered")
    } | {f"ieee123-ev-{m}" for m in ("none", "centralized", "clustered")} | {
        f"case1197-pv-{m}" for m in ("none", "local", "centralized", "clustered")
    } == set(names)
    assert DEFAULT_SCENARIO == "ieee33-ev-clustered"
    for name in names:
        sc = load_scenario(name)
        assert sc.name == name


def test_defaults_filled_in():
    sc = load_scenario("ieee33-ev-none")
    assert sc.control.mode == "none"
    assert sc.run.plant_step_s == 60 and sc.run.duration_h == 24
    assert sc.comm.latency.mean_ms == 50 and sc.comm.loss.p == 0.01
    assert sc.partition.min_size == 3


def test_overrides_and_seed():
    sc = load_scenario(
        "ieee33-ev-none",
        overrides=[
            "comm.loss.p=0.1",
            "run.duration_h=2",
            'case.name="ieee69"',
            "comm.latency={dist='constant', mean_ms=10}",
        ],
        seed=7,
    )
    assert sc.comm.loss.p == 0.1
    assert sc.run.duration_h == 2
    assert sc.case.name == "ieee69"
    assert sc.comm.latency.dist == "constant" and sc.comm.latency.mean_ms == 10
    assert sc.run.seed == 7
    # bare words are strings
    assert apply_overrides({}, ["case.name=ieee51"]) == {"case": {"name": "ieee51"}}


def _write(tmp_path, text):
    p = tmp_path / "s.toml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(
    ("text", "key", "what"),
    [
        ("[run]\nduraton_h = 3\n", "run.duraton_h", "unknown key"),
        ("[run]\nduration_h = 'long'\n", "run.duration_h", "number"),
        ("[control]\nmode = 'smart'\n", "control.mode", "smart"),
        ("[cotrol]\nmode = 'none'\n", "cotrol", "unknown key"),
        ("[run]\nplant_step_s = 70\n", "run", "divide 900"),
        ("[partition]\nmin_size = 5\nmax_size = 3\n", "partition", "min_size"),
        ("[case]\nname = 'nosuch.json'\n", "case.name", "unknown case 'nosuch.json'"),
        ("[resources]\npreset = 'nope'\n", "resources.preset", "unknown resource preset"),
        (
            "[resources]\npreset = 'ieee33-ev'\n[[resources.svc]]\nbus = '5'\n",
            ": resources.svc.0.name:",
            "Field required",
        ),
        (
            "[[resources.capacitor]]\nname = 'CX'\nbus = '5'\nsteps = 2\nq_step_mvar = 'big'\n",
            "resources.capacitor.CX.q_step_mvar",
            "number",
        ),
    ],
)
def test_invalid_file_names_file_and_key(tmp_path, text, key, what):
    path = _write(tmp_path, text)
    with pytest.raises(ScenarioError) as exc:
        load_scenario(path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert path in msg and key in msg and what in msg


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(_write(tmp_path, "[run\n"))
    with pytest.raises(ScenarioError, match="no such scenario"):
        load_scenario(str(tmp_path / "absent.toml"))


def test_bad_override_is_named():
    with pytest.raises(ScenarioError, match="--set"):
        load_scenario("ieee33-ev-none", overrides=["run.duration_h"])
    with pytest.raises(ScenarioError, match=r"run\.seed"):
        load_scenario("ieee33-ev-none", overrides=["run.seed=-1"])


def test_comm_table_is_the_channel_model():
    """``[comm]`` takes the channel model's keys (broker.channel) and builds a Channel whose
    outcomes depend only on (seed, link, seq)."""
    from clustersim.broker.channel import Channel

    sc = load_scenario(
        "ieee33-ev-none",
        overrides=[
            'comm.latency={dist="pareto", mean_ms=40, alpha=2.5}',
            'comm.loss={model="gilbert", p=0.05}',
            'comm.links=[{src="C1", dst="*", loss={model="bernoulli", p=1.0}}]',
            "comm.outages=[{start_s=100, end_s=200}]",
        ],
    )
    assert sc.comm.latency.dist == "pareto" and sc.comm.loss.model == "gilbert"
    a, b = Channel(sc.comm, seed=3), Channel(sc.comm, seed=3)
    outs = [a.deliver("C2", "plant", seq, 10.0 * seq) for seq in range(40)]
    assert outs == [b.deliver("C2", "plant", seq, 10.0 * seq) for seq in range(40)]
    assert all(d.lost for d in outs[10:20])  # the outage window [100, 200) s
    assert a.deliver("C1", "plant", 1, 0.0).lost  # the link rule: C1 loses everything
    with pytest.raises(ScenarioError, match=r"comm\.latency\.dist"):
        load_scenario("ieee33-ev-none", overrides=['comm.latency.dist="cauchy"'])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("control.compute_fixed_s=inf", "control.compute_fixed_s"),
        ("control.compute_per_evaluation_s=1e308", "control.compute_per_evaluation_s"),
        ("comm.latency.mean_ms=1e308", "comm.latency.mean_ms"),
        ("comm.watchdog_s=inf", "comm.watchdog_s"),
        ("control.pop_size=100000000", "control.pop_size"),
        ("run.vm_max_pu=inf", "run.vm_max_pu"),
        ("control.weights=[1.0, nan, 1.0]", "control.weights"),
        ("comm.agent_timeout_s=1e12", "comm.agent_timeout_s"),
    ],
)
def test_absurd_numbers_are_refused_in_one_line(override, key):
    """Infinite, NaN and physically absurd settings end in one ScenarioError naming the key."""
    with pytest.raises(ScenarioError) as exc:
        load_scenario("ieee33-ev-clustered", overrides=[override])
    line = str(exc.value)
    assert key in line and "\n" not in line, line
