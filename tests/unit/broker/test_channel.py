"""The channel model (clustersim.broker.channel): settings, determinism, statistics."""

from __future__ import annotations

import math
import random
import zlib
from typing import Any, Literal

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clustersim.broker.channel import (
    Channel,
    ChannelSettings,
    GilbertElliott,
    LatencyConfig,
    LossConfig,
    link_id,
    sample_latency_ms,
)

N = 20_000


def burst_lengths(flags: np.ndarray) -> np.ndarray:
    d = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return np.flatnonzero(d == -1) - np.flatnonzero(d == 1)


# ---------------------------------------------------------------- settings


def test_scenario_comm_keys_are_accepted():
    comm = {
        "latency": {"dist": "lognormal", "mean_ms": 50, "sigma": 0.5},
        "loss": {"model": "bernoulli", "p": 0.01},
        "links": [
            {"src": "C1", "dst": "*", "latency": {"dist": "constant", "mean_ms": 10}},
            {"src": "*", "dst": "plant", "loss": {"model": "gilbert", "p": 0.05}},
        ],
    }
    s = ChannelSettings.model_validate(comm)
    assert s.latency.jitter_ms == 0 and s.loss.p_gb is None and s.outages == []
    # a fully resolved dump (every key written out) validates again to the same settings
    assert ChannelSettings.model_validate(s.model_dump()) == s
    Channel(comm, seed=1).deliver("C1", "plant", 0, 0.0)


class _OldLatency(BaseModel):  # the scenario's [comm] schema before this module
    model_config = ConfigDict(extra="forbid")
    dist: Literal["constant", "lognormal", "normal", "uniform"] = "lognormal"
    mean_ms: float = 50.0
    sigma: float = 0.5


class _OldLoss(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Literal["bernoulli", "gilbert"] = "bernoulli"
    p: float = 0.01


class _OldLink(BaseModel):
    model_config = ConfigDict(extra="forbid")
    src: str = "*"
    dst: str = "*"
    latency: _OldLatency | None = None
    loss: _OldLoss | None = None


class _OldComm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transport: str = "mqtt"
    broker: str = ""
    clock: str = "virtual"
    latency: _OldLatency = Field(default_factory=_OldLatency)
    loss: _OldLoss = Field(default_factory=_OldLoss)
    links: list[_OldLink] = Field(default_factory=list)


def test_a_comm_model_with_other_keys_is_accepted():
    old = _OldComm(links=[_OldLink(src="C1", loss=_OldLoss(model="gilbert", p=0.1))])
    ch = Channel(old, seed=3)
    assert ch.settings.latency == LatencyConfig()
    link = ch.link("C1", "C2")
    assert link.loss.model == "gilbert" and link.loss.loss_rate == pytest.approx(0.1)
    with pytest.raises(ValidationError):  # a plain mapping is checked strictly
        Channel({"transport": "mqtt"})


@pytest.mark.parametrize(
    "latency",
    [
        {"dist": "normal", "mean_ms": 50, "sigma": 10},  # sigma is lognormal's
        {"dist": "uniform", "mean_ms": 50},
        {"dist": "uniform", "mean_ms": 10, "jitter_ms": 11},
        {"dist": "pareto", "mean_ms": 30, "alpha": 3, "jitter_ms": 21},
        {"dist": "pareto", "alpha": 1.0},
        {"dist": "gamma"},
        {"mean_ms": -1},
        {"mean_ms": float("nan")},
        {"mean_ms": float("inf")},
        {"sigma": 50},
        {"mean": 50},
    ],
)
def test_invalid_latency(latency):
    with pytest.raises(ValidationError):
        LatencyConfig.model_validate(latency)


@pytest.mark.parametrize(
    "loss",
    [
        {"p": 1.5},
        {"p": float("nan")},
        {"model": "gilbert", "p": 1.0},  # would need to stay bad forever
        {"model": "gilbert", "p": 0.9, "p_bg": 0.25},  # needs p_gb > 1
        {"model": "gilbert", "p": 0.1, "p_bg": 0},
        {"model": "gilbert", "p": 0.01, "loss_good": 0.05},
        {"model": "gilbert", "loss_good": 0.5, "loss_bad": 0.5},
        {"model": "gilbert-elliott"},
        {"model": "bernoulli", "rate": 0.1},
    ],
)
def test_invalid_loss(loss):
    with pytest.raises(ValidationError):
        LossConfig.model_validate(loss)


@pytest.mark.parametrize("outage", [{"start_s": 10, "end_s": 10}, {"start_s": 10, "end_s": 5}])
def test_invalid_outage(outage):
    with pytest.raises(ValidationError):
        ChannelSettings.model_validate({"outages": [outage]})


def test_gilbert_parameters():
    derived = LossConfig(model="gilbert", p=0.05, p_bg=0.25)
    assert derived.p_good_to_bad == pytest.approx(0.25 * 0.05 / 0.95)
    assert derived.loss_rate == pytest.approx(0.05)
    given = LossConfig(model="gilbert", p_gb=0.1, p_bg=0.4, loss_good=0.02, loss_bad=0.6)
    assert given.bad_share == pytest.approx(0.2)
    assert given.loss_rate == pytest.approx(0.8 * 0.02 + 0.2 * 0.6)


def test_bad_arguments():
    with pytest.raises(ValueError):
        Channel(seed=-1)
    ch = Channel(seed=1)
    for seq in (-1, 2**31, 1.5, True):
        with pytest.raises(ValueError):
            ch.deliver("a", "b", seq, 0.0)
    with pytest.raises(ValueError):
        ch.deliver("a", "b", 0, math.nan)


# ---------------------------------------------------------------- link overrides

RULES: dict[str, Any] = {
    "latency": {"dist": "constant", "mean_ms": 1},
    "loss": {"p": 0.0},
    "outages": [{"start_s": 100, "end_s": 200}],
    "links": [
        {"src": "*", "dst": "plant", "latency": {"dist": "constant", "mean_ms": 5}},
        {"src": "C*", "dst": "*", "loss": {"p": 0.5}, "outages": [{"start_s": 300, "end_s": 400}]},
        {"src": "C1", "dst": "plant", "latency": {"dist": "constant", "mean_ms": 7}},
        {"src": "*", "dst": "plant", "loss": {"p": 0.25}},
    ],
}


def test_last_matching_rule_wins_field_by_field():
    ch = Channel(RULES, seed=1)
    c1 = ch.link("C1", "plant")
    assert c1.rules == (0, 1, 2, 3)
    assert c1.latency.mean_ms == 7  # rule 2 is the last with a latency
    assert c1.loss.p == 0.25  # rule 3 is the last with a loss
    assert [(o.start_s, o.end_s) for o in c1.outages] == [(100, 200), (300, 400)]
    c2 = ch.link("C2", "plant")
    assert c2.rules == (0, 1, 3) and c2.latency.mean_ms == 5 and c2.loss.p == 0.25
    c2c3 = ch.link("C2", "C3")
    assert c2c3.rules == (1,) and c2c3.latency.mean_ms == 1 and c2c3.loss.p == 0.5
    # links are directed, patterns case-sensitive
    back = ch.link("plant", "C1")
    assert back.rules == () and back.latency.mean_ms == 1 and back.loss.p == 0.0
    assert ch.link("c1", "x").rules == ()
    assert ch.deliver("C1", "plant", 0, 0.0).latency_ms == 7
    assert ch.deliver("plant", "C1", 0, 0.0).latency_ms == 1


def test_a_rule_replaces_a_whole_table():
    ch = Channel(
        {
            "latency": {"dist": "uniform", "mean_ms": 80, "jitter_ms": 20},
            "links": [{"src": "a", "latency": {"dist": "lognormal"}}],
        }
    )
    lat = ch.link("a", "b").latency
    assert lat.dist == "lognormal" and lat.mean_ms == 50 and lat.jitter_ms == 0


# ---------------------------------------------------------------- determinism


def test_link_id_is_crc32():
    assert link_id("C1", "C2") == zlib.crc32(b"C1->C2") == 3412179560
    assert link_id("C1", "C2") != link_id("C2", "C1")


SETTINGS: dict[str, Any] = {
    "latency": {"dist": "pareto", "mean_ms": 40, "alpha": 2.2, "jitter_ms": 5},
    "loss": {"model": "bernoulli", "p": 0.1},
    "links": [{"src": "C2", "loss": {"model": "gilbert", "p": 0.2, "p_bg": 0.3}}],
}


def test_same_seed_link_seq_same_outcome_in_any_order():
    messages = [(s, d, q, q * 1.5) for s, d in (("C1", "C2"), ("C2", "C1")) for q in range(600)]
    first = {m: Channel(SETTINGS, seed=11).deliver(*m) for m in messages[:5]}
    a = Channel(SETTINGS, seed=11)
    out_a = {m: a.deliver(*m) for m in messages}
    b = Channel(SETTINGS, seed=11)
    shuffled = messages[::-1]
    random.Random(5).shuffle(shuffled)
    out_b = {m: b.deliver(*m) for m in shuffled}
    assert out_a == out_b
    assert all(out_a[m] == first[m] for m in first)  # one message alone, in a fresh channel
    # both loss models are at work, and another seed gives other outcomes
    assert 0 < sum(d.lost for d in out_a.values()) < len(messages)
    c = Channel(SETTINGS, seed=12)
    assert sum(out_a[m] != c.deliver(*m) for m in messages) > len(messages) // 2


def test_golden_outcomes():
    """Pins the streams: SeedSequence([seed, crc32(link), seq]) and the latency transforms."""
    ch = Channel({"latency": {"dist": "lognormal", "mean_ms": 50, "sigma": 0.5}}, seed=1)
    got = [ch.deliver("C1", "C2", s, 10.0).latency_ms for s in range(5)]
    want = [
        41.28361395305046,
        35.82644401671738,
        51.55974490742985,
        31.86391977037797,
        21.1924622842227,
    ]
    assert got == pytest.approx(want, rel=1e-12)


def test_delivery_fields():
    ch = Channel({"latency": {"dist": "constant", "mean_ms": 250}, "loss": {"p": 0.5}}, seed=2)
    outcomes = [ch.deliver("a", "b", s, 10.0) for s in range(200)]
    for d in outcomes:
        if d.lost:
            assert d.reason == "loss" and d.t_deliver_s == math.inf == d.latency_ms
        else:
            assert d.reason == "delivered" and d.t_deliver_s == 10.25 and d.latency_ms == 250
    assert {d.reason for d in outcomes} == {"loss", "delivered"}


# ---------------------------------------------------------------- statistics


def test_bernoulli_loss_and_lognormal_latency_over_20k_messages():
    ch = Channel(
        {
            "latency": {"dist": "lognormal", "mean_ms": 50, "sigma": 0.5},
            "loss": {"model": "bernoulli", "p": 0.05},
        },
        seed=4,
    )
    out = [ch.deliver("C1", "plant", s, 900.0) for s in range(N)]
    lost = np.array([d.lost for d in out])
    assert abs(lost.mean() - 0.05) < 4 * math.sqrt(0.05 * 0.95 / N)
    lat = np.array([d.latency_ms for d in out if not d.lost])
    sd = 50 * math.sqrt(math.exp(0.25) - 1)
    assert abs(lat.mean() - 50) < 4 * sd / math.sqrt(lat.size)
    assert np.median(lat) == pytest.approx(50 * math.exp(-0.125), rel=0.03)
    # independent losses: bursts are short, mean length 1/(1 − p)
    assert burst_lengths(lost).mean() == pytest.approx(1 / 0.95, rel=0.05)


@pytest.mark.parametrize(
    "latency",
    [
        {"dist": "constant", "mean_ms": 20},
        {"dist": "uniform", "mean_ms": 50, "jitter_ms": 30},
        {"dist": "normal", "mean_ms": 40, "jitter_ms": 10},
        {"dist": "normal", "mean_ms": 10, "jitter_ms": 10},  # truncation shifts the mean up
        {"dist": "lognormal", "mean_ms": 120, "sigma": 1.0},
        {"dist": "lognormal", "mean_ms": 50, "sigma": 0.0},
        {"dist": "pareto", "mean_ms": 50, "alpha": 3.0, "jitter_ms": 10},
        {"dist": "pareto", "mean_ms": 0.0},
    ],
)
def test_latency_distributions(latency):
    cfg = LatencyConfig.model_validate(latency)
    rng = np.random.default_rng(0)
    u = rng.random((N, 2)) * (1 - 2**-52) + 2**-53  # open interval, like the channel's
    lat = np.array([sample_latency_ms(cfg, a, b) for a, b in u])
    assert np.isfinite(lat).all() and (lat >= 0).all()
    assert lat.mean() == pytest.approx(cfg.expected_ms, rel=0.03, abs=1e-12)
    if cfg.dist == "normal" and cfg.mean_ms == 10:
        assert cfg.expected_ms > 11 and lat.min() < 0.5
    if cfg.dist == "uniform":
        assert lat.min() >= 20 and lat.max() <= 80
        assert np.std(lat) == pytest.approx(30 / math.sqrt(3), rel=0.03)
    if cfg.dist == "pareto" and cfg.mean_ms > 0:
        x_m = cfg.pareto_scale_ms
        assert lat.min() >= x_m - 10
        # heavy tail: P(L > 4·x_m) = 4^−alpha (jitter is small against 4·x_m)
        assert (lat > 4 * x_m).mean() == pytest.approx(4.0**-3, rel=0.25)


def test_every_distribution_through_the_channel():
    for latency in (
        {"dist": "constant", "mean_ms": 3},
        {"dist": "uniform", "mean_ms": 50, "jitter_ms": 50},
        {"dist": "normal", "mean_ms": 5, "jitter_ms": 20},
        {"dist": "pareto", "mean_ms": 30, "alpha": 1.5},
    ):
        ch = Channel({"latency": latency, "loss": {"p": 0}}, seed=9)
        out = [ch.deliver("x", "y", s, 1.0) for s in range(300)]
        assert not any(d.lost for d in out)
        assert all(d.latency_ms >= 0 and d.t_deliver_s == 1.0 + d.latency_ms / 1000 for d in out)


# ---------------------------------------------------------------- Gilbert–Elliott


def test_gilbert_elliott_bursts():
    p, p_bg = 0.05, 0.25
    ch = Channel({"loss": {"model": "gilbert", "p": p, "p_bg": p_bg}}, seed=21)
    lost = np.array([ch.deliver("C3", "C4", s, 0.0).lost for s in range(N)])
    # the channel's losses are exactly the chain's bad states (loss_bad = 1, loss_good = 0)
    assert (lost == ch.chain("C3", "C4").states(0, N)).all()
    lam = 1 - p_bg - ch.link("C3", "C4").loss.p_good_to_bad
    sd = math.sqrt(p * (1 - p) / N * (1 + lam) / (1 - lam))  # correlated samples
    assert abs(lost.mean() - p) < 4 * sd
    bursts = burst_lengths(lost)
    assert bursts.mean() == pytest.approx(1 / p_bg, rel=0.15)
    assert bursts.max() >= 12  # a Bernoulli 5 % loss would hardly ever lose 12 in a row


def test_gilbert_elliott_long_run_statistics():
    chain = GilbertElliott(0.02, 0.1, [3, link_id("a", "b")])
    bad = chain.states(0, 200_000)
    assert bad.mean() == pytest.approx(0.02 / 0.12, rel=0.1)
    assert burst_lengths(bad).mean() == pytest.approx(10, rel=0.1)
    assert burst_lengths(~bad).mean() == pytest.approx(50, rel=0.1)


def test_gilbert_elliott_lossy_good_state():
    cfg = {"model": "gilbert", "p_gb": 0.1, "p_bg": 0.4, "loss_good": 0.1, "loss_bad": 0.5}
    ch = Channel({"loss": cfg}, seed=5)
    lost = np.array([ch.deliver("a", "b", s, 0.0).lost for s in range(N)])
    bad = ch.chain("a", "b").states(0, N)
    assert lost[bad].mean() == pytest.approx(0.5, abs=0.04)
    assert lost[~bad].mean() == pytest.approx(0.1, abs=0.015)


@pytest.mark.parametrize("p_gb,p_bg", [(0.1, 0.3), (0.7, 0.8), (0.03, 0.2)])
def test_gilbert_elliott_is_exact_across_blocks(p_gb, p_bg):
    """Transitions into and out of block boundaries follow the chain like any other."""
    block, n = 16, 60_000
    chain = GilbertElliott(p_gb, p_bg, [8, 1], block=block, cache_blocks=10**6)
    s = chain.states(0, n)
    x, y = s[:-1], s[1:]
    at_boundary = (np.arange(1, n) % block) == 0
    for where in (at_boundary, ~at_boundary):
        good, bad = where & ~x, where & x
        n_good, n_bad = good.sum(), bad.sum()
        assert abs(y[good].mean() - p_gb) < 4.5 * math.sqrt(p_gb * (1 - p_gb) / n_good)
        assert abs((~y[bad]).mean() - p_bg) < 4.5 * math.sqrt(p_bg * (1 - p_bg) / n_bad)
    assert s.mean() == pytest.approx(p_gb / (p_gb + p_bg), rel=0.1)


def test_gilbert_elliott_is_order_independent_and_bounded():
    entropy = [2, link_id("C1", "C5")]
    ref = GilbertElliott(0.05, 0.2, entropy, block=64).states(0, 5_000)
    other = GilbertElliott(0.05, 0.2, entropy, block=64, cache_blocks=2)
    seqs = list(range(5_000))
    random.Random(1).shuffle(seqs)
    assert all(other.bad(q) == ref[q] for q in seqs)
    far = GilbertElliott(0.05, 0.2, entropy)
    assert isinstance(far.bad(3_000_000), bool)  # only the block boundaries up to it are iterated
    assert far.bad(3_000_000) == GilbertElliott(0.05, 0.2, entropy).states(3_000_000, 3_000_001)[0]


def test_gilbert_elliott_degenerate_chains():
    assert not GilbertElliott(0.0, 0.0, [1, 2]).states(0, 3000).any()  # never moves: good
    assert GilbertElliott(0.3, 0.0, [1, 2]).states(0, 3000).all()  # absorbing bad state
    alt = GilbertElliott(1.0, 1.0, [1, 2], block=8).states(0, 64)
    assert (alt[1:] != alt[:-1]).all()  # deterministic alternation, across blocks too


# ---------------------------------------------------------------- outages


def test_outages_drop_everything_sent_inside():
    settings = {
        "latency": {"dist": "constant", "mean_ms": 30},
        "loss": {"p": 0.0},
        "outages": [{"start_s": 3600, "end_s": 5400}],
        "links": [{"src": "C2", "outages": [{"start_s": 7200, "end_s": math.inf}]}],
    }
    ch = Channel(settings, seed=1)
    times = np.arange(0, 10_000, 7.0)
    for src in ("C1", "C2"):
        for seq, t in enumerate(times):
            d = ch.deliver(src, "plant", seq, float(t))
            inside = 3600 <= t < 5400 or (src == "C2" and t >= 7200)
            assert d.lost == inside
            assert d.reason == ("outage" if inside else "delivered")
    # the window is [start, end): a message sent at end_s gets through
    assert not ch.deliver("C1", "plant", 1, 5400.0).lost
    assert ch.deliver("C1", "plant", 1, 3600.0).reason == "outage"
    # a message in flight when the outage starts is not affected (send time counts)
    assert ch.deliver("C1", "plant", 2, 3599.99).t_deliver_s == pytest.approx(3600.02)
