"""Time series that drive the plant: load, PV, wind, EV charging and energy price.

A :class:`Profiles` holds two frames of the same shape, ``actual`` (what the plant applies) and
``forecast`` (what the controllers are told), indexed by ``time_s`` (integer seconds from the start
of the run: 0, step_s, 2·step_s, ...), one column per profile. Native data is at 15 min
(``step_s = 900``, 96 points a day); :meth:`Profiles.at_step` interpolates to the plant step
(default 60 s). Every value is a per-unit *factor*; the plant turns it into a set point by
multiplying it onto a rating of the device the profile is assigned to.

Column conventions (how the plant must apply each column)
----------------------------------------------------------
Generic columns (present in every :class:`Profiles`, synthetic or SimBench):

``load_p``
    ``load.p_mw = load_p × p_mw_base`` for every load, where ``p_mw_base`` is the load's
    base-case ``p_mw`` in the case file. The base case is the peak: ``max(load_p) = 1.0`` over
    the horizon (synthetic; SimBench with ``load_scale="window"``). Residential shape with a
    morning and an evening peak, daily mean ≈ 0.6–0.7 of the peak (synthetic).
``load_q``
    ``load.q_mvar = load_q × q_mvar_base`` (the base-case ``q_mvar``). Synthetic: equal to
    ``load_p`` (the base-case power factor is kept). SimBench: the chosen profile's ``_qload``
    series scaled by the same divisor as ``load_p``; it may be negative or exceed 1 (SimBench's
    reactive profiles do), unless ``constant_pf=True``.
``pv``
    ``sgen.p_mw = pv × rated_mw`` of each PV unit (its ``sn_mva``/installed power), 0..1. Zero at
    night, bell-shaped around solar noon (12:00), seeded cloud variability.
``wind``
    ``p_mw = wind × rated_mw`` of each wind unit, 0..1.
``ev``
    ``p_mw = ev × peak_mw`` of each EV charging / exchange station (its peak charging power),
    0..1, with a morning and an evening charging peak.
``price_per_mwh``
    time-of-use energy price, currency per MWh (not a factor); a step function: hold the value
    over each 15 min interval, never interpolate it (``at_step`` and ``value`` do this).

SimBench columns (only from :func:`from_simbench`): one column per column of ``net.profiles``
(tables ``load``, ``renewables``, ``powerplants``, ``storage``), named exactly as there. They are
SimBench's relative values, unchanged, and are applied as ``simbench.get_absolute_values`` does
(``get_absolute_profiles_from_relative_profiles``: factor × the element's ``p_mw``/``q_mvar``
column, *not* ``sn_mva``):

- ``<profile>_pload``: ``load.p_mw = f × load.p_mw_base`` for each load with
  ``load.profile == <profile>``;
- ``<profile>_qload``: ``load.q_mvar = f × load.q_mvar_base`` (may be negative);
- ``<profile>`` (renewables/powerplants): ``sgen.p_mw = f × sgen.p_mw_base`` (and ``gen.p_mw``)
  for each unit with that profile; SimBench sgens have ``p_mw == sn_mva``, so this is the factor
  of rated power;
- ``<profile>`` (storage): ``storage.p_mw = f × storage.p_mw_base``.

Forecast errors (seeded, independent per 15 min point, applied to the native series)
-------------------------------------------------------------------------------------
Following the source-load prediction error model of [CVC] §3.2.1 ("Cluster Voltage Control of
Active Distribution Networks Considering Power Deficit and Resource Allocation", Electronics 14(13)
2639, 2025, doi:10.3390/electronics14132639): load errors are normal, DG (PV, wind) errors are
Beta distributed. The paper gives the distributions; the parameters here are ours:

- load (``load_p``/``load_q``, SimBench ``_pload``/``_qload``, ``ev``):
  ``forecast = actual × (1 + ε)``, ``ε ~ N(0, load_sigma)``, default ``load_sigma = 0.05``; one ε
  per load profile and time shared by its p and q columns; p (and ``ev``) clipped to ≥ 0
  (``ev`` also ≤ 1); q is not clipped (it may be negative).
- DG (``pv``, ``wind``, SimBench ``renewables``): ``forecast = clip(actual × (1 + ε), 0, 1)``,
  ``ε = w·(2X − 1)``, ``X ~ Beta(α, β)``; defaults ``(α, β) = (3, 3)`` and ``w = dg_error_max =
  0.3``, i.e. a symmetric, bounded error of at most ±30 % with standard deviation ≈ 11.3 % of the
  actual value (``w·2·sqrt(αβ/((α+β)²(α+β+1)))``). Asymmetric ``(α, β)`` bias the forecast by
  ``w·(α − β)/(α + β)`` on purpose. Multiplicative, so the PV forecast is zero at night.
- SimBench ``powerplants``/``storage`` columns and ``price_per_mwh``: dispatchable or known in
  advance, forecast = actual.

Synthetic tariff (``price_per_mwh``, currency/MWh, three-level time of use): valley 40 from 23:00 to
07:00, peak 130 from 08:00 to 11:00 and from 18:00 to 22:00, flat 80 otherwise (07–08, 11–18,
22–23).

Seeding: every function takes ``seed`` and derives its child generators from
``numpy.random.SeedSequence(seed).spawn(n)``; global random state is never touched; the same
arguments give identical frames.
"""

from __future__ import annotations

import functools
import math
import operator
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import simbench as sb
from scipy.special import log_ndtr, ndtr

from clustersim.errors import ScenarioError

__all__ = [
    "DEFAULT_DG_BETA",
    "DEFAULT_DG_ERROR_MAX",
    "DEFAULT_LOAD_SIGMA",
    "GENERIC_COLUMNS",
    "HOLD_COLUMNS",
    "NATIVE_STEP_S",
    "POINTS_PER_DAY",
    "SIMBENCH_DAYS",
    "TOU_TARIFF_PER_MWH",
    "Profiles",
    "from_simbench",
    "synthetic",
    "tou_price_per_mwh",
]

NATIVE_STEP_S = 900
"""Resolution of the native series (15 min)."""
POINTS_PER_DAY = 86_400 // NATIVE_STEP_S
SIMBENCH_DAYS = 366
"""SimBench's profile year is 2016, a leap year: days 0..365."""

GENERIC_COLUMNS = ("load_p", "load_q", "pv", "wind", "ev", "price_per_mwh")
HOLD_COLUMNS = frozenset({"price_per_mwh"})
"""Columns that are step functions: held over each native interval, never interpolated."""

DEFAULT_LOAD_SIGMA = 0.05
DEFAULT_DG_BETA = (3.0, 3.0)
DEFAULT_DG_ERROR_MAX = 0.3

TOU_TARIFF_PER_MWH = {"valley": 40.0, "flat": 80.0, "peak": 130.0}
"""Three-level time-of-use tariff, currency per MWh."""
_TOU_PERIODS_H = (
    ("valley", 0.0, 7.0),
    ("flat", 7.0, 8.0),
    ("peak", 8.0, 11.0),
    ("flat", 11.0, 18.0),
    ("peak", 18.0, 22.0),
    ("flat", 22.0, 23.0),
    ("valley", 23.0, 24.0),
)

# Defaults of the SimBench profiles that feed the generic columns (any name of the SimBench
# profile library works; taken from the code's own profiles when present, else from the library).
DEFAULT_SIMBENCH_LOAD = "lv_rural1"  # aggregate of an LV rural grid: morning + evening peak
DEFAULT_SIMBENCH_PV = "PV3"  # peaks at 12:00 on average
DEFAULT_SIMBENCH_WIND = "WP4"

_SIMBENCH_TABLES = ("load", "renewables", "powerplants", "storage")


# --------------------------------------------------------------------------------------------
# The container
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Profiles:
    """Actual and forecast per-unit profiles on a regular time grid.

    ``actual`` and ``forecast`` share index (``time_s``: 0, step_s, ..., duration_s − step_s) and
    columns. Treat the frames as read-only. ``meta`` records how the series were made (seed,
    parameters, SimBench profile names, ...), for the results folder.
    """

    step_s: int
    actual: pd.DataFrame
    forecast: pd.DataFrame
    source: str
    start_day: int = 0
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.step_s, int | np.integer) or self.step_s <= 0:
            raise ScenarioError(f"profile step must be a positive integer, got {self.step_s!r}")
        n = len(self.actual)
        if n == 0:
            raise ScenarioError("profiles must hold at least one point")
        expected = np.arange(n, dtype=np.int64) * int(self.step_s)
        for name, frame in (("actual", self.actual), ("forecast", self.forecast)):
            if not np.array_equal(frame.index.to_numpy(), expected):
                raise ScenarioError(
                    f"{name} profiles must be indexed by time_s = 0, {self.step_s}, 2·{self.step_s}, ..."
                )
        if not self.actual.columns.equals(self.forecast.columns):
            raise ScenarioError("actual and forecast profiles must have the same columns")

    @property
    def duration_s(self) -> int:
        """Length of the horizon: number of points × step_s (the last point covers one step)."""
        return len(self.actual) * int(self.step_s)

    @property
    def columns(self) -> list[str]:
        """Names of the profile columns (actual and forecast share them)."""
        return [str(c) for c in self.actual.columns]

    @functools.cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        cols = {str(c): i for i, c in enumerate(self.actual.columns)}
        return (
            self.actual.to_numpy(dtype=float),
            self.forecast.to_numpy(dtype=float),
            cols,
        )

    def at_step(self, step_s: int) -> Profiles:
        """The same profiles at a finer step (e.g. the 60 s plant step), covering [0, duration_s).

        Linear interpolation between the points of this series, exact at them; after the last
        point the last value is held. Columns in :data:`HOLD_COLUMNS` (the price) are held over
        each interval instead. ``step_s`` must divide this series' step.
        """
        try:
            new = operator.index(step_s)
        except TypeError:
            raise ScenarioError(
                f"plant step must be an integer of seconds, got {step_s!r}"
            ) from None
        if new <= 0 or self.step_s % new:
            raise ScenarioError(
                f"plant step {step_s} s does not divide the profile step {self.step_s} s"
            )
        if new == self.step_s:
            return self
        act, fc, cols = self._arrays
        t = np.arange(0, self.duration_s, new, dtype=np.int64)
        hold = [cols[c] for c in HOLD_COLUMNS if c in cols]
        frames = [
            pd.DataFrame(
                _interp_rows(values, self.step_s, t, hold),
                index=pd.Index(t, name="time_s"),
                columns=self.actual.columns.copy(),
            )
            for values in (act, fc)
        ]
        return Profiles(
            step_s=new,
            actual=frames[0],
            forecast=frames[1],
            source=self.source,
            start_day=self.start_day,
            meta=dict(self.meta),
        )

    def value(self, column: str, time_s: float, *, forecast: bool = False) -> float:
        """One profile's value at ``time_s`` (seconds from the start, 0 ≤ time_s < duration_s),
        interpolated as :meth:`at_step` does."""
        act, fc, cols = self._arrays
        if column not in cols:
            raise ScenarioError(f"unknown profile column {column!r}")
        t = float(time_s)
        if not (0.0 <= t < self.duration_s):
            raise ScenarioError(
                f"time {time_s} s is outside the profile horizon [0, {self.duration_s}) s"
            )
        values = (fc if forecast else act)[:, cols[column]]
        k = int(t // self.step_s)
        if column in HOLD_COLUMNS or k + 1 >= len(values):
            return float(values[k])
        frac = (t - k * self.step_s) / self.step_s
        return float(values[k] + frac * (values[k + 1] - values[k]))


def _interp_rows(values: np.ndarray, step_s: int, t: np.ndarray, hold: Sequence[int]) -> np.ndarray:
    """Linear interpolation of the rows of ``values`` (sampled every ``step_s``) at times ``t``."""
    n = len(values)
    k = t // step_s
    frac = ((t - k * step_s) / step_s)[:, None]
    k_next = np.minimum(k + 1, n - 1)
    lo = values[k]
    out = lo + frac * (values[k_next] - lo)
    if hold:
        out[:, hold] = lo[:, hold]
    return out


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool):
        raise ScenarioError(f"seed must be a non-negative integer, got {seed!r}")
    try:
        s = operator.index(seed)
    except TypeError:
        raise ScenarioError(f"seed must be a non-negative integer, got {seed!r}") from None
    if s < 0:
        raise ScenarioError(f"seed must be a non-negative integer, got {seed!r}")
    return s


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise ScenarioError(f"{name} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ScenarioError(f"{name} must be {rng}, got {value!r}")
    return v


def _check_errors(
    load_sigma: float, dg_beta: tuple[float, float], dg_error_max: float
) -> tuple[float, tuple[float, float], float]:
    try:
        sigma = float(load_sigma)
        a, b = (float(x) for x in dg_beta)
        w = float(dg_error_max)
    except (TypeError, ValueError):
        raise ScenarioError(
            "forecast error parameters must be numbers (dg_beta a pair of numbers)"
        ) from None
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ScenarioError(f"load_sigma must be >= 0, got {load_sigma!r}")
    if not (math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0):
        raise ScenarioError(f"dg_beta shape parameters must be > 0, got {dg_beta!r}")
    if not (math.isfinite(w) and 0 <= w <= 1):
        raise ScenarioError(f"dg_error_max must be in [0, 1], got {dg_error_max!r}")
    return sigma, (a, b), w


def _rngs(seed: int, n: int) -> list[np.random.Generator]:
    return [np.random.default_rng(c) for c in np.random.SeedSequence(seed).spawn(n)]


# --------------------------------------------------------------------------------------------
# Synthetic shapes (15 min, ``days`` × 96 points)
# --------------------------------------------------------------------------------------------


def _hours(days: int) -> tuple[np.ndarray, np.ndarray]:
    k = np.arange(days * POINTS_PER_DAY)
    return k // POINTS_PER_DAY, (k % POINTS_PER_DAY) * (NATIVE_STEP_S / 3600.0)


def _bump(hour: np.ndarray, centre_h: np.ndarray | float, width_h: float) -> np.ndarray:
    """Gaussian bump on the 24 h circle."""
    d = (hour - centre_h + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (d / width_h) ** 2)


def _load_shape(days: int, rng: np.random.Generator) -> np.ndarray:
    """Residential load factor: night base, morning peak ~08:00, midday shoulder, evening peak
    ~19:30. Day-to-day: peak times shift N(0, 0.25 h), peak heights ×U(0.9, 1.1), daily level
    ×U(0.92, 1.0); 1 % multiplicative noise per point. Normalized so the horizon's peak is 1.0;
    daily mean ≈ 0.62–0.65 of the peak; night minimum ≈ 0.47."""
    day, hour = _hours(days)
    shift = rng.normal(0.0, 0.25, days)
    amp_m, amp_e = rng.uniform(0.9, 1.1, (2, days))  # morning, evening peak
    level = rng.uniform(0.92, 1.0, days)
    noise = rng.normal(0.0, 0.01, day.size)
    h = hour - shift[day]
    raw = (
        0.55
        + 0.32 * amp_m[day] * _bump(h, 8.0, 1.3)
        + 0.22 * _bump(h, 13.0, 2.5)
        + 0.62 * amp_e[day] * _bump(h, 19.5, 1.8)
    )
    raw = raw * level[day] * (1.0 + noise)
    return raw / raw.max()


def _season(day_of_year: np.ndarray) -> np.ndarray:
    """+1 at the June solstice, −1 at the December solstice."""
    return np.sin(2.0 * np.pi * (day_of_year - 80.0) / 365.0)


def _pv_shape(days: int, start_day: int, rng: np.random.Generator) -> np.ndarray:
    """PV factor of rated power. Clear sky: ``A·sin(π(h − sunrise)/L)^1.5`` between sunrise and
    sunset around solar noon 12:00, day length ``L = 12 + 2.5·s`` h and peak ``A = 0.80 + 0.08·s``
    with ``s`` the season of the day of year (``start_day`` + day). Clouds: a daily cloudiness
    ``c ~ Beta(1.2, 3)`` times an intraday AR(1) cloud index (φ = 0.8 per 15 min, uniform
    marginal), i.e. ``pv = clear × (1 − c·u_t)``."""
    day, hour = _hours(days)
    s = _season((start_day + np.arange(days)) % 365)
    length = 12.0 + 2.5 * s
    amp = 0.80 + 0.08 * s
    sunrise = 12.0 - length / 2.0
    x = (hour - sunrise[day]) / length[day]
    clear = np.where((x > 0) & (x < 1), amp[day] * np.sin(np.pi * np.clip(x, 0, 1)) ** 1.5, 0.0)
    cloudiness = rng.beta(1.2, 3.0, days)
    u = ndtr(_ar1(day.size, 0.8, rng))
    return np.clip(clear * (1.0 - cloudiness[day] * u), 0.0, 1.0)


def _ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    """Stationary standard-normal AR(1) series."""
    e = rng.standard_normal(n)
    z = np.empty(n)
    z[0] = e[0]
    c = math.sqrt(1.0 - phi * phi)
    for i in range(1, n):
        z[i] = phi * z[i - 1] + c * e[i]
    return z


def _wind_shape(days: int, rng: np.random.Generator) -> np.ndarray:
    """Wind factor of rated power: a standard-normal AR(1) (φ = 0.97 per 15 min, correlation time
    ≈ 8 h) mapped to a Weibull wind speed (k = 2, c = 7.5 m/s) and through a power curve
    (cut-in 3, rated 12, cut-out 25 m/s; cubic between cut-in and rated)."""
    z = _ar1(days * POINTS_PER_DAY, 0.97, rng)
    # Weibull inverse CDF of Φ(z): v = c·(−ln(1 − Φ(z)))^(1/k), with −ln(1 − Φ(z)) = −log Φ(−z).
    v = 7.5 * np.sqrt(-log_ndtr(-z))
    p = np.where(v < 3.0, 0.0, (v**3 - 27.0) / (12.0**3 - 27.0))
    p = np.where(v >= 12.0, 1.0, p)
    p = np.where(v >= 25.0, 0.0, p)
    return np.clip(p, 0.0, 1.0)


def _ev_shape(days: int, rng: np.random.Generator) -> np.ndarray:
    """EV charging / battery-exchange station factor of its peak: a morning peak ~08:30 (height
    ≈ 0.75) and an evening peak ~19:30 (1.0) over a night/midday base of ≈ 0.05. Day-to-day: peak
    times shift N(0, 0.25 h), heights ×U(0.85, 1.0); 3 % multiplicative noise per point."""
    day, hour = _hours(days)
    shift_m, shift_e = rng.normal(0.0, 0.25, (2, days))  # morning, evening peak
    amp_m, amp_e = rng.uniform(0.85, 1.0, (2, days))
    noise = rng.normal(0.0, 0.03, day.size)
    peak = 1.0 + 0.05  # value of the base shape at the evening peak, to scale it to 1.0
    raw = (
        0.05
        + 0.75 * amp_m[day] * _bump(hour, 8.5 + shift_m[day], 1.1)
        + 1.0 * amp_e[day] * _bump(hour, 19.5 + shift_e[day], 1.6)
    )
    return np.clip(raw / peak * (1.0 + noise), 0.0, 1.0)


def tou_price_per_mwh(hour: np.ndarray | float) -> np.ndarray:
    """Time-of-use price (currency/MWh) at hour of day ``hour`` (0 ≤ hour < 24)."""
    h = np.asarray(hour, dtype=float) % 24.0
    out = np.full(h.shape, np.nan)
    for level, lo, hi in _TOU_PERIODS_H:
        out[(h >= lo) & (h < hi)] = TOU_TARIFF_PER_MWH[level]
    return out


def _price(days: int) -> np.ndarray:
    return tou_price_per_mwh(_hours(days)[1])


# --------------------------------------------------------------------------------------------
# Forecast errors
# --------------------------------------------------------------------------------------------


def _load_error(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative load error factor ``1 + ε``, ``ε ~ N(0, sigma)`` ([CVC] §3.2.1)."""
    return 1.0 + rng.normal(0.0, 1.0, shape) * sigma


def _dg_error(
    shape: tuple[int, ...], beta: tuple[float, float], w: float, rng: np.random.Generator
) -> np.ndarray:
    """Multiplicative DG error factor ``1 + w·(2X − 1)``, ``X ~ Beta(α, β)`` ([CVC] §3.2.1)."""
    return 1.0 + w * (2.0 * rng.beta(beta[0], beta[1], shape) - 1.0)


def _dg_ev_forecast(
    actual: dict[str, np.ndarray],
    errors: tuple[float, tuple[float, float], float],
    rngs: tuple[np.random.Generator, np.random.Generator, np.random.Generator],
) -> dict[str, np.ndarray]:
    """Forecasts of the generic ``pv``, ``wind``, ``ev`` and ``price_per_mwh`` columns: DG and EV
    errors of the module docstring (``errors`` = load sigma, DG beta, DG error max; one generator
    each for pv, wind, ev), the price known exactly."""
    sigma, beta, w = errors
    f_pv, f_wind, f_ev = rngs
    n = len(actual["pv"])
    return {
        "pv": np.clip(actual["pv"] * _dg_error((n,), beta, w, f_pv), 0.0, 1.0),
        "wind": np.clip(actual["wind"] * _dg_error((n,), beta, w, f_wind), 0.0, 1.0),
        "ev": np.clip(actual["ev"] * _load_error((n,), sigma, f_ev), 0.0, 1.0),
        "price_per_mwh": actual["price_per_mwh"].copy(),
    }


def _profiles(
    actual: dict[str, np.ndarray],
    forecast: dict[str, np.ndarray],
    *,
    source: str,
    start_day: int,
    meta: dict[str, Any],
) -> Profiles:
    """Native-step :class:`Profiles` of the columns of ``actual`` and their forecasts."""
    n = len(next(iter(actual.values())))
    index = pd.Index(np.arange(n, dtype=np.int64) * NATIVE_STEP_S, name="time_s")
    cols = list(actual)
    return Profiles(
        step_s=NATIVE_STEP_S,
        actual=pd.DataFrame({c: np.asarray(actual[c], dtype=float) for c in cols}, index=index),
        forecast=pd.DataFrame({c: np.asarray(forecast[c], dtype=float) for c in cols}, index=index),
        source=source,
        start_day=start_day,
        meta=meta,
    )


# --------------------------------------------------------------------------------------------
# Synthetic profiles
# --------------------------------------------------------------------------------------------


def synthetic(
    days: int = 1,
    *,
    seed: int,
    load_sigma: float = DEFAULT_LOAD_SIGMA,
    dg_beta: tuple[float, float] = DEFAULT_DG_BETA,
    dg_error_max: float = DEFAULT_DG_ERROR_MAX,
    start_day: int = 0,
) -> Profiles:
    """Synthetic 15 min profiles (:data:`GENERIC_COLUMNS`) for ``days`` days.

    ``start_day`` is the day of the year (0 = 1 January) of the first day; it sets the PV season
    (day length and clear-sky peak). Day-to-day variation in every shape when ``days > 1``.
    Forecast = actual with the seeded errors of the module docstring (``load_sigma``, ``dg_beta``,
    ``dg_error_max``).
    """
    days = _check_int("days", days, 1)
    start_day = _check_int("start_day", start_day, 0)
    seed = _check_seed(seed)
    sigma, beta, w = _check_errors(load_sigma, dg_beta, dg_error_max)
    r_load, r_pv, r_wind, r_ev, f_load, f_pv, f_wind, f_ev = _rngs(seed, 8)
    n = days * POINTS_PER_DAY

    load = _load_shape(days, r_load)
    pv = _pv_shape(days, start_day, r_pv)
    wind = _wind_shape(days, r_wind)
    ev = _ev_shape(days, r_ev)
    price = _price(days)
    load_fc = np.maximum(load * _load_error((n,), sigma, f_load), 0.0)
    actual = {
        "load_p": load,
        "load_q": load.copy(),
        "pv": pv,
        "wind": wind,
        "ev": ev,
        "price_per_mwh": price,
    }
    forecast = {
        "load_p": load_fc,
        "load_q": load_fc.copy(),
        **_dg_ev_forecast(actual, (sigma, beta, w), (f_pv, f_wind, f_ev)),
    }
    return _profiles(
        actual,
        forecast,
        source="synthetic",
        start_day=start_day,
        meta={
            "seed": seed,
            "days": days,
            "start_day": start_day,
            "load_sigma": sigma,
            "dg_beta": list(beta),
            "dg_error_max": w,
            "tariff_per_mwh": dict(TOU_TARIFF_PER_MWH),
        },
    )


# --------------------------------------------------------------------------------------------
# SimBench profiles
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SimbenchData:
    """``net.profiles`` of one code as one float frame (RangeIndex: 96 points a day, 2016)."""

    values: pd.DataFrame
    time: pd.Series
    kinds: dict[str, str]  # column -> SimBench table it came from


def _get_simbench_net(code: str) -> Any:

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sb.get_simbench_net(code)


def _check_code(code: Any) -> str:

    if not isinstance(code, str) or code not in set(sb.collect_all_simbench_codes()):
        raise ScenarioError(
            f"unknown SimBench code {code!r} (e.g. '1-MV-rural--0-sw'; see "
            "simbench.collect_all_simbench_codes())"
        )
    return code


def _profiles_from_net(net: Any, code: str) -> _SimbenchData:
    profiles = getattr(net, "profiles", None)
    if not isinstance(profiles, Mapping):
        raise ScenarioError(f"SimBench net for {code} has no profiles")
    columns: dict[str, pd.Series] = {}
    kinds: dict[str, str] = {}
    time: pd.Series | None = None
    for table in _SIMBENCH_TABLES:
        frame = profiles.get(table)
        if frame is None or len(frame) == 0:
            continue
        if time is None:
            time = frame["time"].reset_index(drop=True)
        elif len(frame) != len(time):
            raise ScenarioError(f"SimBench profiles of {code} have tables of different lengths")
        for col in frame.columns:
            if col == "time":
                continue
            if col in columns or col in GENERIC_COLUMNS:
                raise ScenarioError(f"SimBench profile name {col!r} of {code} is not unique")
            columns[col] = frame[col].reset_index(drop=True).astype(float)
            kinds[col] = table
    if time is None:
        raise ScenarioError(f"SimBench net for {code} has no profiles")
    if len(time) != SIMBENCH_DAYS * POINTS_PER_DAY:
        raise ScenarioError(
            f"SimBench profiles of {code} have {len(time)} points, expected "
            f"{SIMBENCH_DAYS * POINTS_PER_DAY} (one year at 15 min)"
        )
    values = pd.DataFrame(columns) if columns else pd.DataFrame(index=time.index)
    return _SimbenchData(values=values, time=time, kinds=kinds)


@functools.lru_cache(maxsize=8)
def _load_simbench(code: str) -> _SimbenchData:
    """The profiles of one SimBench code, loaded once per process (``get_simbench_net`` ≈ 6–10 s)."""
    return _profiles_from_net(_get_simbench_net(code), code)


def _library_dir(code: str) -> Path:

    scenario = sb.get_simbench_code_and_parameters(code)[1][5]
    return Path(sb.complete_data_path(scenario))


@functools.lru_cache(maxsize=32)
def _library_columns(code: str, filename: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """Columns of the complete SimBench profile library (same scenario as ``code``)."""
    path = _library_dir(code) / filename
    header = pd.read_csv(path, sep=";", nrows=0).columns
    missing = [c for c in columns if c not in header]
    if missing:
        raise ScenarioError(f"SimBench has no profile {missing[0]!r} in {filename}")
    frame = pd.read_csv(path, sep=";", usecols=list(columns))
    if len(frame) != SIMBENCH_DAYS * POINTS_PER_DAY:
        raise ScenarioError(f"SimBench {filename} has {len(frame)} points, expected one year")
    return frame.astype(float)


def _source_columns(
    data: _SimbenchData, code: str, filename: str, columns: tuple[str, ...], rows: slice
) -> list[np.ndarray]:
    """The named profiles (from the code's own profiles when it has them, else the library)."""
    if all(c in data.values.columns for c in columns):
        return [data.values[c].to_numpy()[rows] for c in columns]
    frame = _library_columns(code, filename, columns)
    return [frame[c].to_numpy()[rows] for c in columns]


# length: one pass over SimBench's profile tables (load, sgen, storage), kept in source order
def from_simbench(
    code: str,
    *,
    day: int,
    days: int = 1,
    seed: int,
    load_sigma: float = DEFAULT_LOAD_SIGMA,
    dg_beta: tuple[float, float] = DEFAULT_DG_BETA,
    dg_error_max: float = DEFAULT_DG_ERROR_MAX,
    load_profile: str = DEFAULT_SIMBENCH_LOAD,
    pv_profile: str = DEFAULT_SIMBENCH_PV,
    wind_profile: str = DEFAULT_SIMBENCH_WIND,
    load_scale: Literal["window", "year"] = "window",
    constant_pf: bool = False,
    net: Any = None,
) -> Profiles:
    """Real SimBench profiles (15 min) of ``days`` days from day ``day`` (0 = 1 January 2016;
    SimBench's year has 366 days, so ``day + days <= 366``). Day ``d`` is rows ``96·d ..
    96·d + 95`` of ``net.profiles``: the series is equidistant, but SimBench labels it in local
    time with daylight saving, so from 27 March to 30 October a day starts at 01:00 by the label
    (00:00 standard time); ``meta["start_time"]`` records the label of the first point.

    Columns: every column of ``net.profiles`` (SimBench's relative values, unchanged), plus the
    generic columns so the set can drive an IEEE case: ``load_p``/``load_q`` from
    ``load_profile`` (its ``_pload``/``_qload`` series; ``load_scale="window"`` divides both by the
    window's peak of ``_pload`` so that ``max(load_p) = 1`` = the base case, ``"year"`` keeps
    SimBench's annual normalization; ``constant_pf=True`` sets ``load_q = load_p``), ``pv`` from
    ``pv_profile``, ``wind`` from ``wind_profile`` (both as SimBench gives them: factors of rated
    power), ``ev`` and ``price_per_mwh`` synthetic. The generic sources may name any profile of the
    SimBench library; they are taken from the code's profiles, else from the library.

    ``net``: an already loaded SimBench net of ``code`` (e.g. the plant's) to take the profiles
    from; without it the net is loaded once per code and cached.
    """
    code = _check_code(code)
    days = _check_int("days", days, 1, SIMBENCH_DAYS)
    day = _check_int("day", day, 0, SIMBENCH_DAYS - days)
    seed = _check_seed(seed)
    sigma, beta, w = _check_errors(load_sigma, dg_beta, dg_error_max)
    if load_scale not in ("window", "year"):
        raise ScenarioError(f"load_scale must be 'window' or 'year', got {load_scale!r}")
    for name, value in (
        ("load_profile", load_profile),
        ("pv_profile", pv_profile),
        ("wind_profile", wind_profile),
    ):
        if not isinstance(value, str) or not value:
            raise ScenarioError(f"{name} must be a SimBench profile name, got {value!r}")

    data = _profiles_from_net(net, code) if net is not None else _load_simbench(code)
    n = days * POINTS_PER_DAY
    rows = slice(day * POINTS_PER_DAY, day * POINTS_PER_DAY + n)
    r_ev, f_sb_load, f_sb_res, f_load, f_pv, f_wind, f_ev = _rngs(seed, 7)

    # --- SimBench's own columns, unchanged, and their forecasts
    raw = data.values.iloc[rows]
    actual: dict[str, np.ndarray] = {c: raw[c].to_numpy(copy=True) for c in raw.columns}
    forecast: dict[str, np.ndarray] = {}
    load_bases = sorted(
        {
            c.removesuffix("_pload").removesuffix("_qload")
            for c, k in data.kinds.items()
            if k == "load"
        }
    )
    load_err = _load_error((n, len(load_bases)), sigma, f_sb_load)
    res_cols = [c for c, k in data.kinds.items() if k == "renewables"]
    res_err = _dg_error((n, len(res_cols)), beta, w, f_sb_res)
    res_idx = {c: i for i, c in enumerate(res_cols)}
    base_idx = {b: i for i, b in enumerate(load_bases)}
    for col, kind in data.kinds.items():
        a = actual[col]
        if kind == "load":
            base = col.removesuffix("_pload").removesuffix("_qload")
            f = a * load_err[:, base_idx[base]]
            forecast[col] = np.maximum(f, 0.0) if col.endswith("_pload") else f
        elif kind == "renewables":
            forecast[col] = np.clip(a * res_err[:, res_idx[col]], 0.0, 1.0)
        else:  # powerplants, storage: dispatchable / scheduled
            forecast[col] = a.copy()

    # --- generic columns
    p_raw, q_raw = _source_columns(
        data, code, "LoadProfile.csv", (f"{load_profile}_pload", f"{load_profile}_qload"), rows
    )
    divisor = 1.0
    if load_scale == "window":
        peak = float(np.max(p_raw))
        divisor = peak if peak > 0 else 1.0
    load_p = p_raw / divisor
    load_q = load_p.copy() if constant_pf else q_raw / divisor
    (pv,) = _source_columns(data, code, "RESProfile.csv", (pv_profile,), rows)
    (wind,) = _source_columns(data, code, "RESProfile.csv", (wind_profile,), rows)
    ev = _ev_shape(days, r_ev)
    price = _price(days)
    e_load = _load_error((n,), sigma, f_load)
    actual |= {
        "load_p": load_p,
        "load_q": load_q,
        "pv": pv.copy(),
        "wind": wind.copy(),
        "ev": ev,
        "price_per_mwh": price,
    }
    forecast |= {
        "load_p": np.maximum(load_p * e_load, 0.0),
        "load_q": load_q * e_load,
        **_dg_ev_forecast(actual, (sigma, beta, w), (f_pv, f_wind, f_ev)),
    }
    return _profiles(
        actual,
        forecast,
        source=f"simbench:{code}",
        start_day=day,
        meta={
            "seed": seed,
            "code": code,
            "day": day,
            "days": days,
            "start_time": str(data.time.iloc[rows.start]),
            "load_profile": load_profile,
            "pv_profile": pv_profile,
            "wind_profile": wind_profile,
            "load_scale": load_scale,
            "load_divisor": divisor,
            "constant_pf": bool(constant_pf),
            "load_sigma": sigma,
            "dg_beta": list(beta),
            "dg_error_max": w,
            "tariff_per_mwh": dict(TOU_TARIFF_PER_MWH),
            "simbench_tables": dict(data.kinds),
        },
    )
