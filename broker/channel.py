"""The channel model: per-link latency, loss and outages, applied at the receiver.

Every message really crosses the broker; the *receiver* then decides, from ``(seed, link, seq)``
alone, whether the message was lost and, if not, when it arrived in simulated time
(``t_deliver_s = t_send_s + latency``). The outcome never depends on the machine's speed, on the
broker's real timing or on the order in which messages are judged.

Settings
--------
:class:`ChannelSettings` holds the defaults (``latency``, ``loss``, ``outages``) and a list of
``links`` that override them for the links whose ``src`` and ``dst`` match their glob patterns
(``fnmatch`` syntax, case-sensitive: ``"*"``, ``"C*"``, ``"C[12]"``). Links are directed: a rule
for ``src="C1", dst="C2"`` does not touch ``C2 → C1``. The keys are those of the scenario's
``[comm]`` table (``latency = {dist, mean_ms, sigma}``, ``loss = {model, p}``, ``[[comm.links]]``
with ``src``, ``dst``, ``latency``, ``loss``) plus new ones, all with defaults.

**Override precedence: the last matching rule wins, field by field.** The defaults come first;
then every rule of ``links`` whose patterns match the link is applied in file order, and each
replaces the ``latency`` and/or ``loss`` table it gives (a whole table: keys it leaves out take
their defaults, not the values of an earlier rule). So write general rules first and specific
ones after them. ``outages`` are events, not settings: they add up (the default windows plus
those of every matching rule).

Latency (``latency``, in milliseconds; never negative)
------------------------------------------------------
``mean_ms`` is the mean latency for every distribution (for ``normal``: the mean before the
truncation at 0, see below).

- ``constant``: ``mean_ms``.
- ``uniform``: uniform on ``[mean_ms − jitter_ms, mean_ms + jitter_ms]`` (needs
  ``0 < jitter_ms ≤ mean_ms``).
- ``normal``: normal with mean ``mean_ms`` and standard deviation ``jitter_ms`` (> 0),
  truncated at 0 (drawn by inverse CDF on ``[0, ∞)``, so no atom at 0; its mean is
  :attr:`LatencyConfig.expected_ms`, above ``mean_ms`` when ``jitter_ms`` is not small).
- ``lognormal``: ``exp(μ + sigma·Z)``, ``sigma`` the standard deviation of the log latency and
  ``μ = ln(mean_ms) − sigma²/2`` so that the mean is ``mean_ms``.
- ``pareto``: Pareto type I with shape ``alpha`` (> 1) and scale
  ``x_m = mean_ms·(alpha − 1)/alpha`` (so its mean is ``mean_ms``), plus a jitter uniform on
  ``[−jitter_ms, +jitter_ms]`` (zero mean; needs ``jitter_ms ≤ x_m`` so that the latency is never
  negative). The tail is heavy: ``P(L > x) = (x_m/x)^alpha``; ``alpha ≤ 2`` has infinite
  variance.

``sigma`` applies to ``lognormal`` only, ``jitter_ms`` to ``uniform``, ``normal`` and ``pareto``,
``alpha`` to ``pareto``; other distributions ignore them (so a fully resolved scenario, which
lists every key, stays valid).

Loss (``loss``)
---------------
- ``bernoulli``: each message is lost with probability ``p``, independently.
- ``gilbert`` (Gilbert–Elliott [GILBERT], [ELLIOTT]): a two-state Markov chain over the link's
  message ``seq``: from the good state it turns bad with probability ``p_gb`` per seq, from the bad
  state back good with ``p_bg``; a message is lost with probability ``loss_good`` (default 0) in the
  good state and ``loss_bad`` (default 1) in the bad one. Bad states come in runs of mean length
  ``1/p_bg`` (the bursts); the long-run loss rate is :attr:`LossConfig.loss_rate`. When ``p_gb`` is
  not given it is derived so that the long-run loss rate equals ``p``, the key that
  ``loss = {model = "gilbert", p = ...}`` sets; when it is given, ``p`` is ignored.

Outages (``outages = [{start_s, end_s}, ...]``): every message *sent* in ``[start_s, end_s)``
(simulated seconds) is lost, whatever the loss model says.

Determinism
-----------
A link's id is ``zlib.crc32("src->dst")`` (never Python's ``hash``, which is salted per process).
Each message draws its uniforms from ``numpy.random.SeedSequence([seed, link_id, seq])`` (the
first decides loss, the next two latency and jitter; they are always drawn, so the latency of a
message does not depend on the loss model), turned into floats and transformed by the formulas
above in plain Python: no ``numpy.random.Generator`` method, whose streams numpy does not promise
to keep across versions, and no global random state.

The Gilbert–Elliott state sequence of a link is a function of ``(seed, link)`` and the seq only
(:class:`GilbertElliott`): the chain starts from its stationary distribution at seq 0; its states
at seqs ``0, B, 2B, ...`` (``B`` = 1024) are iterated with the exact ``B``-step transition matrix
from per-link seeded streams, and the states in between are drawn as a Markov bridge between the
two block ends, from a per-(link, block) stream. The result is distributed exactly as the chain
iterated seq by seq, is the same whatever order messages are judged in, costs ``O(seq/B + B)`` for
the first look at a block and is cached.
"""

from __future__ import annotations

import math
import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from clustersim.broker.envelope import MAX_SEQ

__all__ = [
    "Channel",
    "ChannelSettings",
    "Delivery",
    "GilbertElliott",
    "LatencyConfig",
    "LinkConfig",
    "LinkSettings",
    "LossConfig",
    "OutageConfig",
    "link_id",
    "sample_latency_ms",
]

_CHAIN_BOUNDARY_KEY = 1  # spawn keys separating the chain's streams from the per-message ones
_CHAIN_BRIDGE_KEY = 2
_BOUNDARY_CHUNK = 1024  # boundary uniforms drawn per SeedSequence
_STD_NORMAL = NormalDist()


MAX_LATENCY_MS = 3_600_000.0
"""largest mean latency or jitter a link may be given (one hour)"""


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LatencyConfig(_Table):
    """One-way latency of a link; see the module docstring for each distribution."""

    dist: Literal["constant", "uniform", "normal", "lognormal", "pareto"] = "lognormal"
    mean_ms: float = Field(
        default=50.0, ge=0, le=MAX_LATENCY_MS, allow_inf_nan=False, description="mean latency"
    )
    sigma: float = Field(
        default=0.5, ge=0, le=5, allow_inf_nan=False, description="lognormal: std of ln(latency)"
    )
    jitter_ms: float = Field(
        default=0.0,
        ge=0,
        le=MAX_LATENCY_MS,
        allow_inf_nan=False,
        description="uniform: half-width; normal: standard deviation; pareto: ± uniform jitter",
    )
    alpha: float = Field(
        default=2.5, gt=1, le=100, allow_inf_nan=False, description="pareto: shape (tail index)"
    )

    @property
    def pareto_scale_ms(self) -> float:
        """``x_m`` of the Pareto distribution, the smallest latency before jitter."""
        return self.mean_ms * (self.alpha - 1.0) / self.alpha

    @property
    def expected_ms(self) -> float:
        """The mean latency: ``mean_ms``, except for a normal truncated at 0."""
        if self.dist != "normal":
            return self.mean_ms
        mu, sd = self.mean_ms, self.jitter_ms
        a = -mu / sd
        return mu + sd * _STD_NORMAL.pdf(a) / (1.0 - _STD_NORMAL.cdf(a))

    @model_validator(mode="after")
    def _check(self) -> LatencyConfig:
        if self.dist in ("normal", "uniform") and self.jitter_ms <= 0:
            what = "standard deviation" if self.dist == "normal" else "half-width"
            raise ValueError(
                f"dist {self.dist!r} needs jitter_ms > 0 (its {what} in ms); "
                "sigma applies to lognormal only"
            )
        if self.dist == "uniform" and self.jitter_ms > self.mean_ms:
            raise ValueError("dist 'uniform' needs jitter_ms <= mean_ms (no negative latency)")
        if self.dist == "pareto" and self.jitter_ms > self.pareto_scale_ms * (1 + 1e-12):
            raise ValueError(
                "dist 'pareto' needs jitter_ms <= mean_ms*(alpha-1)/alpha = "
                f"{self.pareto_scale_ms:g} (no negative latency)"
            )
        return self


def _probability(default: float | None, description: str) -> Any:
    """A finite probability field, in [0, 1]."""
    return Field(default=default, ge=0, le=1, allow_inf_nan=False, description=description)


class LossConfig(_Table):
    """Message loss of a link: Bernoulli or Gilbert–Elliott (module docstring)."""

    model: Literal["bernoulli", "gilbert"] = "bernoulli"
    p: float = _probability(
        0.01, "bernoulli: loss probability; gilbert: long-run loss rate (unless p_gb given)"
    )
    p_gb: float | None = _probability(
        None, "gilbert: good → bad probability per seq; default: derived from p"
    )
    p_bg: float = _probability(0.25, "gilbert: bad → good probability per seq (mean burst 1/p_bg)")
    loss_good: float = _probability(0.0, "gilbert: loss in good state")
    loss_bad: float = _probability(1.0, "gilbert: loss in bad state")

    @property
    def p_good_to_bad(self) -> float:
        """``p_gb``, or the value that makes the long-run loss rate equal ``p``."""
        if self.p_gb is not None:
            return self.p_gb
        pi_bad = (self.p - self.loss_good) / (self.loss_bad - self.loss_good)
        return self.p_bg * pi_bad / (1.0 - pi_bad)

    @property
    def bad_share(self) -> float:
        """Long-run share of seqs in the bad state (0 when the chain never moves)."""
        a, b = self.p_good_to_bad, self.p_bg
        return a / (a + b) if a + b > 0 else 0.0

    @property
    def loss_rate(self) -> float:
        """Long-run loss probability per message."""
        if self.model == "bernoulli":
            return self.p
        pi = self.bad_share
        return (1.0 - pi) * self.loss_good + pi * self.loss_bad

    @model_validator(mode="after")
    def _check(self) -> LossConfig:
        if self.model != "gilbert" or self.p_gb is not None:
            return self
        lg, lb = self.loss_good, self.loss_bad
        if lb <= lg:
            raise ValueError("gilbert: give p_gb, or loss_bad > loss_good to derive it from p")
        if not lg <= self.p < lb:
            raise ValueError(
                f"gilbert: p = {self.p:g} must lie in [loss_good, loss_bad) = [{lg:g}, {lb:g})"
            )
        if self.p > lg and self.p_bg == 0:
            raise ValueError("gilbert: p_bg must be > 0 to derive p_gb from p")
        if self.p_good_to_bad > 1:
            raise ValueError(
                f"gilbert: p = {self.p:g} needs p_gb = {self.p_good_to_bad:.3g} > 1 at "
                f"p_bg = {self.p_bg:g}; raise p_bg or give p_gb"
            )
        return self


class OutageConfig(_Table):
    """A window of simulated time ``[start_s, end_s)`` in which every message sent is lost."""

    start_s: float = Field(allow_inf_nan=False)
    end_s: float = Field(description="may be inf: the link never comes back")

    @model_validator(mode="after")
    def _check(self) -> OutageConfig:
        if math.isnan(self.end_s) or not self.end_s > self.start_s:
            raise ValueError(f"outage end_s = {self.end_s} must be after start_s = {self.start_s}")
        return self


class LinkConfig(_Table):
    """An override for the links whose ``src`` and ``dst`` match these glob patterns."""

    src: str = Field(default="*", min_length=1)
    dst: str = Field(default="*", min_length=1)
    latency: LatencyConfig | None = None
    loss: LossConfig | None = None
    outages: list[OutageConfig] = Field(default_factory=list)


class ChannelSettings(_Table):
    """Defaults and per-link overrides (last matching rule wins, field by field)."""

    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    outages: list[OutageConfig] = Field(default_factory=list)
    links: list[LinkConfig] = Field(default_factory=list)


_SETTINGS_KEYS = tuple(ChannelSettings.model_fields)


@dataclass(frozen=True)
class LinkSettings:
    """The settings in force on one directed link; ``rules`` are the matching ``links`` indices."""

    src: str
    dst: str
    latency: LatencyConfig
    loss: LossConfig
    outages: tuple[OutageConfig, ...]
    rules: tuple[int, ...]

    def in_outage(self, t_s: float) -> bool:
        """Whether simulated second ``t_s`` lies in an outage ``[start_s, end_s)`` of the link."""
        return any(o.start_s <= t_s < o.end_s for o in self.outages)


@dataclass(frozen=True)
class Delivery:
    """The channel's verdict on one message.

    ``reason`` is ``"delivered"``, ``"loss"`` (the loss model) or ``"outage"``. A lost message has
    ``t_deliver_s = latency_ms = inf``, so "arrived before the deadline" is false for it even
    where ``lost`` is not looked at.
    """

    lost: bool
    t_deliver_s: float
    latency_ms: float
    reason: Literal["delivered", "loss", "outage"]


def link_id(src: str, dst: str) -> int:
    """Stable id of the directed link: CRC-32 of ``"src->dst"`` (UTF-8)."""
    return zlib.crc32(f"{src}->{dst}".encode())


def _unit_floats(words: np.ndarray) -> list[float]:
    """Uniforms in the open interval (0, 1) from 64-bit words: 52 bits, half a step off 0."""
    return [((int(w) >> 12) + 0.5) * 2.0**-52 for w in words]


def _uniforms(entropy: Sequence[int], n: int, spawn_key: Sequence[int] = ()) -> list[float]:
    ss = np.random.SeedSequence(list(entropy), spawn_key=tuple(spawn_key))
    return _unit_floats(ss.generate_state(n, np.uint64))


def sample_latency_ms(cfg: LatencyConfig, u: float, v: float) -> float:
    """Latency (ms) from two uniforms in (0, 1): ``u`` drives the distribution, ``v`` jitter."""
    mean = cfg.mean_ms
    if cfg.dist == "constant" or (mean == 0.0 and cfg.dist != "normal"):
        return mean
    if cfg.dist == "uniform":
        return mean + cfg.jitter_ms * (2.0 * u - 1.0)
    if cfg.dist == "normal":
        dist = NormalDist(mean, cfg.jitter_ms)
        c0 = dist.cdf(0.0)
        q = min(c0 + (1.0 - c0) * u, 1.0 - 2.0**-53)
        return max(0.0, dist.inv_cdf(q)) if q > 0.0 else 0.0
    if cfg.dist == "lognormal":
        s = cfg.sigma
        return math.exp(math.log(mean) - 0.5 * s * s + s * _STD_NORMAL.inv_cdf(u))
    # pareto: inverse CDF of x_m·U^(−1/α), plus zero-mean uniform jitter
    x = cfg.pareto_scale_ms * u ** (-1.0 / cfg.alpha)
    return max(0.0, x + cfg.jitter_ms * (2.0 * v - 1.0))


class GilbertElliott:
    """The Gilbert–Elliott state of one link as a deterministic function of seq.

    ``p_gb``/``p_bg``: transition probabilities good → bad / bad → good per seq. ``entropy``
    (``[seed, link_id]``) seeds the streams. The chain starts from its stationary distribution
    (in the good state when it never moves); see the module docstring for the block / bridge
    construction, exact in distribution and independent of the order of queries.
    """

    def __init__(
        self,
        p_gb: float,
        p_bg: float,
        entropy: Sequence[int],
        *,
        block: int = 1024,
        cache_blocks: int = 64,
    ):
        if not (0 <= p_gb <= 1 and 0 <= p_bg <= 1):
            raise ValueError("p_gb and p_bg must lie in [0, 1]")
        if block < 2:
            raise ValueError("block must be at least 2")
        self.p_gb, self.p_bg = float(p_gb), float(p_bg)
        self.block = int(block)
        self._entropy = [int(e) for e in entropy]
        self._cache_blocks = int(cache_blocks)
        a, b = self.p_gb, self.p_bg
        s = a + b
        self.bad_share = a / s if s > 0 else 0.0
        one = ((1.0 - a, a), (b, 1.0 - b))  # one[x][y] = P(x → y)
        m = np.arange(block + 1, dtype=float)
        if s == 0:
            c = m
        elif s < 1:
            c = -np.expm1(m * math.log1p(-s)) / s  # (1 − λ^m)/s with λ = 1 − s, no cancellation
        else:
            c = (1.0 - (1.0 - s) ** m) / s
        # m-step transition probabilities pk[x][y][m] = P^m(x → y)
        g_to_b = np.clip(a * c, 0.0, 1.0)
        b_to_g = np.clip(b * c, 0.0, 1.0)
        pk = ((1.0 - g_to_b, g_to_b), (b_to_g, 1.0 - b_to_g))
        self._k_to_bad = (float(pk[0][1][block]), float(pk[1][1][block]))
        # bridge[t][x][m]: P(next state bad | state x, target t reached m steps after the next)
        self._bridge: list[list[list[float]]] = []
        for t in (0, 1):
            rows = []
            for x in (0, 1):
                nb = one[x][1] * pk[1][t]
                ng = one[x][0] * pk[0][t]
                den = nb + ng
                with np.errstate(invalid="ignore", divide="ignore"):
                    prob = np.where(den > 0, nb / np.where(den > 0, den, 1.0), one[x][1])
                rows.append([float(p) for p in prob])
            self._bridge.append(rows)
        self._starts = bytearray()  # state at seq k·block, k = 0, 1, ...
        self._chunk: list[float] = []  # boundary uniforms of chunk _chunk_no
        self._chunk_no = -1
        self._blocks: OrderedDict[int, bytes] = OrderedDict()

    def _start(self, k: int) -> int:
        """The state at seq ``k·block``, iterating the block-boundary chain as far as needed."""
        starts = self._starts
        while len(starts) <= k:
            i = len(starts)
            chunk_no, j = divmod(i, _BOUNDARY_CHUNK)
            if chunk_no != self._chunk_no:
                self._chunk = _uniforms(
                    [*self._entropy, chunk_no], _BOUNDARY_CHUNK, (_CHAIN_BOUNDARY_KEY,)
                )
                self._chunk_no = chunk_no
            u = self._chunk[j]
            if i == 0:
                starts.append(1 if u < self.bad_share else 0)
            else:
                starts.append(1 if u < self._k_to_bad[starts[i - 1]] else 0)
        return starts[k]

    def _block(self, k: int) -> bytes:
        """States of seqs ``k·block … (k+1)·block − 1`` (a bridge between the block's ends)."""
        hit = self._blocks.get(k)
        if hit is not None:
            self._blocks.move_to_end(k)
            return hit
        x = self._start(k)
        target = self._start(k + 1)
        n = self.block
        u = _uniforms([*self._entropy, k], n, (_CHAIN_BRIDGE_KEY,))
        probs = self._bridge[target]
        out = bytearray(n)
        out[0] = x
        for i in range(1, n):
            x = 1 if u[i] < probs[x][n - i] else 0
            out[i] = x
        states = bytes(out)
        self._blocks[k] = states
        if len(self._blocks) > self._cache_blocks:
            self._blocks.popitem(last=False)
        return states

    def bad(self, seq: int) -> bool:
        """Whether the link is in the bad state at ``seq``."""
        if not 0 <= seq <= MAX_SEQ:
            raise ValueError(f"seq {seq} outside [0, {MAX_SEQ}]")
        k, i = divmod(int(seq), self.block)
        return bool(self._block(k)[i])

    def states(self, start: int, stop: int) -> np.ndarray:
        """Bad-state flags of seqs ``start … stop − 1`` as a boolean array."""
        out = np.zeros(max(0, stop - start), dtype=bool)
        seq = start
        while seq < stop:
            k, i = divmod(seq, self.block)
            blk = self._block(k)
            n = min(self.block - i, stop - seq)
            out[seq - start : seq - start + n] = np.frombuffer(blk, dtype=np.uint8)[i : i + n]
            seq += n
        return out


class Channel:
    """The channel of one run: ``deliver(src, dst, seq, t_send_s)`` → :class:`Delivery`.

    ``settings``: a :class:`ChannelSettings`, a mapping of its keys, or any pydantic model with
    them (the scenario's ``[comm]`` table; its other keys are ignored). ``seed``: a non-negative
    integer (the run's seed). Two channels with the same settings and seed give the same
    verdict on every message, whatever the order of the calls.
    """

    def __init__(
        self, settings: ChannelSettings | Mapping[str, Any] | BaseModel | None = None, seed: int = 0
    ):
        self.settings = _as_settings(settings)
        if isinstance(seed, bool) or int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        self._links: dict[tuple[str, str], LinkSettings] = {}
        self._chains: dict[tuple[str, str], GilbertElliott] = {}

    def link(self, src: str, dst: str) -> LinkSettings:
        """The settings in force on ``src → dst`` (cached)."""
        key = (src, dst)
        hit = self._links.get(key)
        if hit is not None:
            return hit
        s = self.settings
        latency, loss, outages, rules = s.latency, s.loss, list(s.outages), []
        for i, rule in enumerate(s.links):
            if fnmatchcase(src, rule.src) and fnmatchcase(dst, rule.dst):
                latency = rule.latency or latency
                loss = rule.loss or loss
                outages.extend(rule.outages)
                rules.append(i)
        out = LinkSettings(src, dst, latency, loss, tuple(outages), tuple(rules))
        self._links[key] = out
        return out

    def chain(self, src: str, dst: str) -> GilbertElliott:
        """The Gilbert–Elliott chain of ``src → dst`` (its loss model must be ``gilbert``)."""
        key = (src, dst)
        hit = self._chains.get(key)
        if hit is None:
            loss = self.link(src, dst).loss
            if loss.model != "gilbert":
                raise ValueError(f"link {src}->{dst} has loss model {loss.model!r}")
            hit = GilbertElliott(loss.p_good_to_bad, loss.p_bg, [self.seed, link_id(src, dst)])
            self._chains[key] = hit
        return hit

    def deliver(self, src: str, dst: str, seq: int, t_send_s: float) -> Delivery:
        """Whether message ``seq`` of ``src → dst``, sent at ``t_send_s``, is lost, and when it
        arrives (simulated seconds)."""
        if isinstance(seq, bool) or int(seq) != seq or not 0 <= seq <= MAX_SEQ:
            raise ValueError(f"seq must be an integer in [0, {MAX_SEQ}], got {seq!r}")
        if not math.isfinite(t_send_s):
            raise ValueError(f"t_send_s must be finite, got {t_send_s!r}")
        seq = int(seq)
        link = self.link(src, dst)
        u_loss, u_lat, u_jit = _uniforms([self.seed, link_id(src, dst), seq], 3)
        if link.in_outage(t_send_s):
            return Delivery(True, math.inf, math.inf, "outage")
        loss = link.loss
        if loss.model == "bernoulli":
            p = loss.p
        else:
            p = loss.loss_bad if self.chain(src, dst).bad(seq) else loss.loss_good
        if u_loss < p:
            return Delivery(True, math.inf, math.inf, "loss")
        latency_ms = sample_latency_ms(link.latency, u_lat, u_jit)
        return Delivery(False, t_send_s + latency_ms / 1000.0, latency_ms, "delivered")


def _as_settings(
    settings: ChannelSettings | Mapping[str, Any] | BaseModel | None,
) -> ChannelSettings:
    if settings is None:
        return ChannelSettings()
    if isinstance(settings, ChannelSettings):
        return settings
    if isinstance(settings, BaseModel):  # validated by its own schema: keep the channel's keys
        data = settings.model_dump(exclude_none=True)
        return ChannelSettings.model_validate(
            {k: v for k, v in data.items() if k in _SETTINGS_KEYS}
        )
    if isinstance(settings, Mapping):
        return ChannelSettings.model_validate(settings)
    raise TypeError(f"channel settings: expected ChannelSettings, got {type(settings).__name__}")
