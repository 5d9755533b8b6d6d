"""Tests of clustersim.sim.profiles: synthetic and SimBench profiles, forecasts, interpolation."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustersim.errors import ScenarioError
from clustersim.sim import profiles as P

CODE = "1-MV-rural--0-sw"
PPD = P.POINTS_PER_DAY


def _by_day(series: pd.Series) -> np.ndarray:
    return series.to_numpy().reshape(-1, PPD)


def _hours_slice(lo_h: float, hi_h: float) -> slice:
    return slice(int(lo_h * 4), int(hi_h * 4))


@pytest.fixture(scope="module")
def mv_net():
    import simbench as sb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sb.get_simbench_net(CODE)


# --------------------------------------------------------------------------------------------
# synthetic
# --------------------------------------------------------------------------------------------


def test_synthetic_same_seed_identical_frames():
    a = P.synthetic(2, seed=11)
    b = P.synthetic(2, seed=11)
    pd.testing.assert_frame_equal(a.actual, b.actual)
    pd.testing.assert_frame_equal(a.forecast, b.forecast)


def test_synthetic_different_seeds_differ():
    a = P.synthetic(2, seed=11)
    b = P.synthetic(2, seed=12)
    for col in ("load_p", "pv", "wind", "ev"):
        assert not np.array_equal(a.actual[col], b.actual[col]), col
        assert not np.array_equal(a.forecast[col], b.forecast[col]), col
    # the tariff is not random
    np.testing.assert_array_equal(a.actual["price_per_mwh"], b.actual["price_per_mwh"])


def test_synthetic_does_not_touch_global_random_state():
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    P.synthetic(1, seed=3)
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002


def test_synthetic_shape_columns_index():
    p = P.synthetic(1, seed=1)
    assert p.step_s == 900
    assert p.source == "synthetic"
    assert list(p.actual.columns) == list(P.GENERIC_COLUMNS)
    assert list(p.forecast.columns) == list(P.GENERIC_COLUMNS)
    assert p.actual.index.name == "time_s"
    np.testing.assert_array_equal(p.actual.index, np.arange(96) * 900)
    np.testing.assert_array_equal(p.forecast.index, p.actual.index)
    assert p.duration_s == 86_400
    assert p.actual.notna().all().all() and p.forecast.notna().all().all()


def test_synthetic_multi_day_length_and_day_to_day_variation():
    p = P.synthetic(3, seed=2)
    assert len(p.actual) == 3 * PPD
    assert p.duration_s == 3 * 86_400
    np.testing.assert_array_equal(p.actual.index, np.arange(3 * PPD) * 900)
    load = _by_day(p.actual["load_p"])
    assert not np.allclose(load[0], load[1])
    assert not np.allclose(_by_day(p.actual["ev"])[0], _by_day(p.actual["ev"])[2])


def test_synthetic_load_convention():
    for seed in range(5):
        load = P.synthetic(1, seed=seed).actual["load_p"].to_numpy()
        assert load.max() == pytest.approx(1.0)
        assert 0.6 <= load.mean() <= 0.7
        morning = load[_hours_slice(6, 10)].max()
        midday = load[_hours_slice(11, 15)].min()
        evening = load[_hours_slice(17, 22)].max()
        night = load[_hours_slice(2, 5)].max()
        assert morning > midday and morning > night
        assert evening > midday and evening == pytest.approx(1.0)


def test_synthetic_pv_zero_at_night_peak_near_noon():
    for start_day in (0, 172):
        p = P.synthetic(10, seed=4, start_day=start_day)
        pv = _by_day(p.actual["pv"])
        assert (pv[:, _hours_slice(0, 4.5)] == 0).all()
        assert (pv[:, _hours_slice(19.75, 24)] == 0).all()
        assert (_by_day(p.forecast["pv"])[pv == 0] == 0).all()
        mean = pv.mean(axis=0)
        assert 11.0 <= mean.argmax() / 4 <= 13.0
        hours = np.arange(PPD) / 4
        assert (hours * mean).sum() / mean.sum() == pytest.approx(12.0, abs=0.5)
    winter = P.synthetic(10, seed=4, start_day=0).actual["pv"].sum()
    summer = P.synthetic(10, seed=4, start_day=172).actual["pv"].sum()
    assert summer > winter


def test_synthetic_ev_has_morning_and_evening_peaks():
    for seed in range(5):
        ev = P.synthetic(1, seed=seed).actual["ev"].to_numpy()
        morning = ev[_hours_slice(6, 11)].max()
        evening = ev[_hours_slice(17, 22)].max()
        midday = ev[_hours_slice(12, 15)].min()
        night = ev[_hours_slice(1, 5)].max()
        assert morning > 0.5 and evening > 0.7
        assert midday < 0.3 * min(morning, evening)
        assert night < 0.2


def test_synthetic_wind_autocorrelated():
    wind = P.synthetic(7, seed=5).actual["wind"].to_numpy()
    assert 0 < wind.mean() < 1
    assert np.corrcoef(wind[:-1], wind[1:])[0, 1] > 0.8


def test_synthetic_price_is_three_level_tou():
    price = P.synthetic(1, seed=0).actual["price_per_mwh"].to_numpy()
    assert set(np.unique(price)) == set(P.TOU_TARIFF_PER_MWH.values())
    assert price[_hours_slice(2, 3)][0] == P.TOU_TARIFF_PER_MWH["valley"]
    assert price[_hours_slice(9, 10)][0] == P.TOU_TARIFF_PER_MWH["peak"]
    assert price[_hours_slice(19, 20)][0] == P.TOU_TARIFF_PER_MWH["peak"]
    assert price[_hours_slice(14, 15)][0] == P.TOU_TARIFF_PER_MWH["flat"]


def test_synthetic_forecast_differs_but_close():
    sigma, (a_, b_), w = 0.05, (3.0, 3.0), 0.3
    p = P.synthetic(3, seed=8, load_sigma=sigma, dg_beta=(a_, b_), dg_error_max=w)
    act, fc = p.actual, p.forecast
    ratio = fc["load_p"] / act["load_p"]
    assert not np.allclose(ratio, 1.0)
    assert np.abs(ratio - 1).max() < 6 * sigma
    assert 0.5 * sigma < ratio.std() < 1.5 * sigma
    np.testing.assert_array_equal(fc["load_q"], fc["load_p"])
    for col in ("pv", "wind"):
        a, f = act[col].to_numpy(), fc[col].to_numpy()
        on = a > 0.01
        assert not np.allclose(a[on], f[on])
        assert (np.abs(f - a) <= w * a + 1e-12).all()
        assert ((f >= 0) & (f <= 1)).all()
    np.testing.assert_array_equal(fc["price_per_mwh"], act["price_per_mwh"])


def test_synthetic_zero_errors_give_forecast_equal_actual():
    p = P.synthetic(1, seed=8, load_sigma=0.0, dg_error_max=0.0)
    pd.testing.assert_frame_equal(p.actual, p.forecast)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**63),
    days=st.integers(min_value=1, max_value=3),
    start_day=st.integers(min_value=0, max_value=400),
)
def test_factors_stay_in_physical_ranges(seed, days, start_day):
    p = P.synthetic(days, seed=seed, start_day=start_day)
    for frame in (p.actual, p.forecast):
        for col in ("pv", "wind", "ev"):
            v = frame[col].to_numpy()
            assert ((v >= 0) & (v <= 1)).all(), col
        assert (frame["load_p"] >= 0).all()
    assert p.actual["load_p"].max() == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# interpolation
# --------------------------------------------------------------------------------------------


def test_at_step_exact_at_native_points_and_linear_between():
    p = P.synthetic(2, seed=9)
    q = p.at_step(60)
    assert q.step_s == 60 and q.source == p.source
    assert len(q.actual) == 2 * 86_400 // 60
    np.testing.assert_array_equal(q.actual.index, np.arange(0, p.duration_s, 60))
    assert q.duration_s == p.duration_s
    for native, fine in ((p.actual, q.actual), (p.forecast, q.forecast)):
        pd.testing.assert_frame_equal(fine.loc[native.index], native, check_freq=False)
        a = native["load_p"].to_numpy()
        for offset in (60, 300, 840):
            got = fine["load_p"].to_numpy()[offset // 60 :: 15][:-1]
            want = a[:-1] + offset / 900 * (a[1:] - a[:-1])
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        # after the last native point the last value is held
        np.testing.assert_array_equal(fine["pv"].to_numpy()[-15:], native["pv"].to_numpy()[-1])


def test_at_step_holds_the_price():
    p = P.synthetic(1, seed=9)
    q = p.at_step(60)
    price = q.actual["price_per_mwh"].to_numpy().reshape(-1, 15)
    assert (price == price[:, :1]).all()
    np.testing.assert_array_equal(price[:, 0], p.actual["price_per_mwh"])


def test_value_matches_at_step():
    p = P.synthetic(1, seed=10)
    q = p.at_step(60)
    for t in (0, 60, 840, 900, 4500 + 180, 86_340):
        for col in ("load_p", "pv", "ev", "price_per_mwh"):
            assert p.value(col, t) == pytest.approx(q.actual.at[t, col], abs=1e-12)
            assert p.value(col, t, forecast=True) == pytest.approx(q.forecast.at[t, col], abs=1e-12)
    assert p.value("load_p", 450) == pytest.approx(
        0.5 * (p.actual["load_p"].iloc[0] + p.actual["load_p"].iloc[1])
    )
    with pytest.raises(ScenarioError):
        p.value("load_p", p.duration_s)
    with pytest.raises(ScenarioError):
        p.value("load_p", -1)
    with pytest.raises(ScenarioError):
        p.value("nope", 0)


def test_at_step_same_step_and_bad_steps():
    p = P.synthetic(1, seed=1)
    assert p.at_step(900) is p
    # interpolating twice lands on the same piecewise-linear series (to rounding)
    pd.testing.assert_frame_equal(
        p.at_step(300).at_step(60).actual, p.at_step(60).actual, rtol=1e-12, atol=1e-12
    )
    for bad in (7, 0, -60, 1800, 60.5, "60"):
        with pytest.raises(ScenarioError):
            p.at_step(bad)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"days": 0, "seed": 1},
        {"days": -2, "seed": 1},
        {"days": 1.5, "seed": 1},
        {"seed": -1},
        {"seed": "x"},
        {"seed": 1, "start_day": -1},
        {"seed": 1, "load_sigma": -0.1},
        {"seed": 1, "dg_beta": (0.0, 2.0)},
        {"seed": 1, "dg_beta": (1.0,)},
        {"seed": 1, "dg_error_max": 1.5},
    ],
)
def test_synthetic_bad_input_raises_scenario_error(kwargs):
    with pytest.raises(ScenarioError) as err:
        P.synthetic(**kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"code": "1-MV-nowhere--0-sw", "day": 0},
        {"code": 42, "day": 0},
        {"code": CODE, "day": 366},
        {"code": CODE, "day": -1},
        {"code": CODE, "day": 365, "days": 2},
        {"code": CODE, "day": 0, "days": 0},
        {"code": CODE, "day": 0, "load_scale": "month"},
        {"code": CODE, "day": 0, "seed": -3},
    ],
)
def test_simbench_bad_input_raises_before_loading(kwargs, monkeypatch):
    def no_load(code):
        raise AssertionError("must not load a net for bad input")

    monkeypatch.setattr(P, "_get_simbench_net", no_load)
    kwargs.setdefault("seed", 1)
    with pytest.raises(ScenarioError) as err:
        P.from_simbench(**kwargs)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------
# SimBench
# --------------------------------------------------------------------------------------------


def test_simbench_day_selection_is_the_raw_slice(mv_net):
    day, days = 100, 2
    p = P.from_simbench(CODE, day=day, days=days, seed=1, net=mv_net)
    assert p.source == f"simbench:{CODE}"
    assert p.step_s == 900 and p.start_day == day
    assert len(p.actual) == days * PPD
    np.testing.assert_array_equal(p.actual.index, np.arange(days * PPD) * 900)
    rows = slice(day * PPD, (day + days) * PPD)
    n_cols = 0
    for table, frame in mv_net.profiles.items():
        for col in frame.columns:
            if col == "time":
                continue
            n_cols += 1
            np.testing.assert_array_equal(
                p.actual[col].to_numpy(), frame[col].iloc[rows].to_numpy(), err_msg=col
            )
            assert p.meta["simbench_tables"][col] == table
    assert n_cols > 0
    assert list(p.actual.columns) == list(p.forecast.columns)
    assert set(P.GENERIC_COLUMNS) <= set(p.actual.columns)
    assert p.meta["start_time"] == mv_net.profiles["load"]["time"].iloc[day * PPD]
    # every profile the net's elements use is a column, with SimBench's suffixes
    for prof in mv_net.load["profile"].dropna().unique():
        assert f"{prof}_pload" in p.actual and f"{prof}_qload" in p.actual
    for prof in mv_net.sgen["profile"].dropna().unique():
        assert prof in p.actual


def test_simbench_generic_columns(mv_net):
    day = 180
    rows = slice(day * PPD, (day + 1) * PPD)
    raw_load = mv_net.profiles["load"].iloc[rows]
    raw_res = mv_net.profiles["renewables"].iloc[rows]
    p = P.from_simbench(CODE, day=day, seed=2, net=mv_net)
    a = p.actual
    peak = raw_load["lv_rural1_pload"].max()
    np.testing.assert_allclose(a["load_p"], raw_load["lv_rural1_pload"] / peak, rtol=1e-15)
    np.testing.assert_allclose(a["load_q"], raw_load["lv_rural1_qload"] / peak, rtol=1e-15)
    assert a["load_p"].max() == pytest.approx(1.0)
    np.testing.assert_array_equal(a["pv"], raw_res["PV3"])
    np.testing.assert_array_equal(a["wind"], raw_res["WP4"])
    for col in ("ev",):
        assert ((a[col] >= 0) & (a[col] <= 1)).all()
    assert set(np.unique(a["price_per_mwh"])) == set(P.TOU_TARIFF_PER_MWH.values())

    year = P.from_simbench(
        CODE, day=day, seed=2, net=mv_net, load_scale="year", pv_profile="PV7", wind_profile="WP7"
    )
    np.testing.assert_array_equal(year.actual["load_p"], raw_load["lv_rural1_pload"])
    np.testing.assert_array_equal(year.actual["pv"], raw_res["PV7"])
    np.testing.assert_array_equal(year.actual["wind"], raw_res["WP7"])
    pf = P.from_simbench(CODE, day=day, seed=2, net=mv_net, constant_pf=True)
    np.testing.assert_array_equal(pf.actual["load_q"], pf.actual["load_p"])


def test_simbench_generic_load_from_library(mv_net):
    import simbench as sb

    assert "H0-A_pload" not in mv_net.profiles["load"]
    p = P.from_simbench(CODE, day=3, seed=1, net=mv_net, load_profile="H0-A")
    lib = pd.read_csv(
        f"{sb.complete_data_path(0)}/LoadProfile.csv", sep=";", usecols=["H0-A_pload"]
    )
    raw = lib["H0-A_pload"].to_numpy()[3 * PPD : 4 * PPD]
    np.testing.assert_allclose(p.actual["load_p"], raw / raw.max(), rtol=1e-15)
    with pytest.raises(ScenarioError):
        P.from_simbench(CODE, day=3, seed=1, net=mv_net, pv_profile="PV99")


def test_simbench_seeding_and_forecast(mv_net):
    a = P.from_simbench(CODE, day=150, seed=5, net=mv_net)
    b = P.from_simbench(CODE, day=150, seed=5, net=mv_net)
    c = P.from_simbench(CODE, day=150, seed=6, net=mv_net)
    pd.testing.assert_frame_equal(a.actual, b.actual)
    pd.testing.assert_frame_equal(a.forecast, b.forecast)
    sb_cols = list(a.meta["simbench_tables"])
    pd.testing.assert_frame_equal(a.actual[sb_cols], c.actual[sb_cols])
    assert not a.forecast.equals(c.forecast)
    w = P.DEFAULT_DG_ERROR_MAX
    for col, table in a.meta["simbench_tables"].items():
        act, fc = a.actual[col].to_numpy(), a.forecast[col].to_numpy()
        if table == "renewables":
            assert ((fc >= 0) & (fc <= 1)).all()
            assert (np.abs(fc - np.clip(act, 0, None)) <= w * np.abs(act) + 1e-9).all()
        elif table == "load":
            assert not np.array_equal(fc, act)
            assert np.abs(fc - act).max() <= 6 * P.DEFAULT_LOAD_SIGMA * np.abs(act).max()
    # p and q of one load profile share the error
    ratio_p = a.forecast["G0-A_pload"] / a.actual["G0-A_pload"]
    ratio_q = a.forecast["G0-A_qload"] / a.actual["G0-A_qload"]
    np.testing.assert_allclose(ratio_p, ratio_q, rtol=1e-12)
    q = a.at_step(60)
    assert len(q.actual) == 1440 and q.actual.columns.equals(a.actual.columns)


def test_simbench_profiles_loaded_once_per_code(mv_net, monkeypatch):
    calls = []

    def fake_get(code):
        calls.append(code)
        return mv_net

    monkeypatch.setattr(P, "_get_simbench_net", fake_get)
    P._load_simbench.cache_clear()
    try:
        first = P.from_simbench(CODE, day=10, seed=1)
        second = P.from_simbench(CODE, day=20, days=2, seed=1)
        assert calls == [CODE]
        assert len(second.actual) == 2 * PPD
        np.testing.assert_array_equal(
            first.actual["PV3"], mv_net.profiles["renewables"]["PV3"].iloc[960:1056]
        )
    finally:
        P._load_simbench.cache_clear()
