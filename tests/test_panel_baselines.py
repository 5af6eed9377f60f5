"""Panel baselines and metrics (tasks.evaluate.panel_baselines, tasks.evaluate.panel_metrics) on small simulated
panels with planted structure, and the metrics against hand-computed values."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest

from tasks.evaluate import panel_baselines as pb
from tasks.evaluate import panel_metrics as pm

LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)
HORIZON = 12
ELASTICITY = -2.0


def simulated_panel(
    seed: int = 0, n_series: int = 20, n_periods: int = 120, horizon: int = HORIZON, missing: float = 0.05, cycle: float = 0.5
):
    """Weekly store x product panel: a series level, a yearly cycle, a price effect of ELASTICITY on log sales
    (amplitude ``cycle`` in log units) and lognormal noise (sd 0.1 in log units); ``missing`` of the history periods dropped at random. Returns the history and the
    full [S, T + H] truth."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_periods + horizon)
    log_price = np.log(rng.uniform(1.0, 2.0, (n_series, n_periods + horizon)))
    level = 4.0 + rng.normal(0.0, 1.0, (n_series, 1))
    yearly = cycle * np.sin(2 * np.pi * t / 52)[None, :]
    y = np.exp(level + yearly + ELASTICITY * log_price + rng.normal(0.0, 0.1, (n_series, n_periods + horizon)))
    history_y = y[:, :n_periods].copy()
    history_y[rng.random(history_y.shape) < missing] = np.nan
    history = pb.PanelHistory(
        y=history_y,
        periods=np.datetime64("2015-01-02") + 7 * np.arange(n_periods),
        season_length=52,
        covariates={"log_price": log_price},
        store=np.arange(n_series) % 5,
        product=np.arange(n_series) // 5,
    )
    return history, y


def check_forecast(fc: pb.BaselineForecast, n_series: int, horizon: int, levels: tuple[float, ...]) -> None:
    assert fc.mean.shape == (n_series, horizon)
    assert fc.quantiles.shape == (len(levels), n_series, horizon)
    assert fc.levels == levels
    assert np.isfinite(fc.mean).all() and np.isfinite(fc.quantiles).all()
    assert (np.diff(fc.quantiles, axis=0) >= 0).all()


def series_wql(fc: pb.BaselineForecast, truth: np.ndarray) -> float:
    return pm.wql(truth.ravel(), fc.quantiles.reshape(len(fc.levels), -1), fc.levels)


# --- shapes, quantile order, finiteness -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["seasonal_naive", "lightgbm_quantile", "loglog_price_regression", "ets"])
def test_every_baseline_returns_finite_ordered_quantiles_of_the_right_shape(name: str) -> None:
    history, _ = simulated_panel(seed=1, n_series=8)
    levels = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)  # callers may ask for more levels
    fc = pb.PANEL_BASELINES[name](history, HORIZON, levels)
    check_forecast(fc, 8, HORIZON, levels)


@pytest.mark.parametrize("name", ["seasonal_naive", "lightgbm_quantile", "loglog_price_regression", "ets"])
def test_short_gappy_and_negative_series_fall_back_to_finite_forecasts(name: str) -> None:
    history, _ = simulated_panel(seed=2, n_series=6)
    y = history.y.copy()
    y[0, :-3] = np.nan  # three observations
    y[1, :] = np.nan
    y[1, 50] = 40.0  # a single observation
    y[2, 60:90] = np.nan  # a long gap
    y[3, ::7] = -5.0  # returns exceeding sales
    y[4, 10:] = 0.0  # a series that stopped selling
    gappy = pb.PanelHistory(y, history.periods, 52, history.covariates, history.store, history.product)
    fc = pb.PANEL_BASELINES[name](gappy, HORIZON, LEVELS)
    check_forecast(fc, 6, HORIZON, LEVELS)


def test_a_series_without_observations_gets_nan_from_every_baseline() -> None:
    history, _ = simulated_panel(seed=3, n_series=4, n_periods=60, horizon=4)
    y = history.y.copy()
    y[2] = np.nan
    empty = pb.PanelHistory(y, history.periods, 52, history.covariates, history.store, history.product)
    for name, baseline in pb.PANEL_BASELINES.items():
        fc = baseline(empty, 4, LEVELS)
        assert np.isnan(fc.mean[2]).all() and np.isnan(fc.quantiles[:, 2]).all(), name
        assert np.isfinite(fc.mean[[0, 1, 3]]).all(), name


# --- seasonal naive ---------------------------------------------------------------------------------------------


def test_seasonal_naive_reproduces_the_value_one_season_earlier() -> None:
    history, _ = simulated_panel(seed=4, missing=0.0)
    fc = pb.seasonal_naive(history, HORIZON, LEVELS)
    t = history.n_periods + np.arange(HORIZON)
    np.testing.assert_array_equal(fc.mean, history.y[:, t - 52])
    # The median is the point forecast plus the median of the series' own seasonal-difference errors.
    errors = history.y[:, 52:] - history.y[:, :-52]
    np.testing.assert_allclose(fc.quantiles[2], fc.mean + np.median(errors, axis=1)[:, None])


def test_seasonal_naive_falls_back_to_the_last_observed_value_and_goes_back_k_seasons() -> None:
    history, _ = simulated_panel(seed=5, n_periods=110, horizon=60, missing=0.0)
    y = history.y.copy()
    t0 = history.n_periods - 52  # the source of the first horizon period
    y[0, t0] = np.nan
    gappy = pb.PanelHistory(y, history.periods, 52, history.covariates, history.store, history.product)
    fc = pb.seasonal_naive(gappy, 60, LEVELS)
    assert fc.mean[0, 0] == y[0, -1]
    # Horizon step 53 (index 52) is two seasons after its source.
    assert fc.mean[1, 52] == y[1, history.n_periods + 52 - 104]
    width_1, width_53 = np.ptp(fc.quantiles[:, 1, 0]), np.ptp(fc.quantiles[:, 1, 52])
    assert width_53 == pytest.approx(np.sqrt(2) * width_1)


def test_seasonal_naive_borrows_pooled_scaled_errors_for_a_series_with_few() -> None:
    history, _ = simulated_panel(seed=6, n_periods=70, horizon=4, missing=0.0)
    y = history.y.copy()
    y[0, :60] = np.nan  # no seasonal differences of its own
    y[0] = np.where(np.isnan(y[0]), np.nan, 10 * y[0])
    short = pb.PanelHistory(y, history.periods, 52, history.covariates, history.store, history.product)
    fc = pb.seasonal_naive(short, 4, LEVELS)
    scale = np.nanmean(np.abs(y), axis=1)
    errors = (y[1:, 52:] - y[1:, :-52]) / scale[1:, None]
    expected = scale[0] * np.quantile(errors.ravel(), LEVELS)
    np.testing.assert_allclose(fc.quantiles[:, 0, 0] - fc.mean[0, 0], expected)


# --- log-log regression -----------------------------------------------------------------------------------------


def test_loglog_regression_recovers_the_planted_elasticity() -> None:
    history, truth = simulated_panel(seed=7, missing=0.1)
    fc = pb.loglog_price_regression(history, HORIZON, LEVELS)
    coef = fc.extras["coef_log_price"]
    # The yearly cycle is left in the residuals (sd ~0.36 with the noise): each series' estimate is within ~0.3.
    assert np.median(coef) == pytest.approx(ELASTICITY, abs=0.1)
    assert np.abs(coef - ELASTICITY).max() < 0.5
    # The forecasts respond to the horizon's prices with that elasticity.
    log_price = history.covariates["log_price"][:, history.n_periods :]
    slope = np.polyfit((log_price - log_price.mean(1, keepdims=True)).ravel(), np.log(fc.quantiles[2]).ravel(), 1)[0]
    assert slope == pytest.approx(ELASTICITY, abs=0.2)


def test_loglog_regression_intervals_cover_at_their_nominal_rate_when_the_model_is_right() -> None:
    history, truth = simulated_panel(seed=18, n_series=40, cycle=0.0)
    fc = pb.loglog_price_regression(history, HORIZON, LEVELS)
    future = truth[:, history.n_periods :].ravel()
    assert 0.85 <= pm.coverage(future, *pm.interval(fc.quantiles.reshape(5, -1), LEVELS, 0.9)) <= 0.95
    assert 0.43 <= pm.coverage(future, *pm.interval(fc.quantiles.reshape(5, -1), LEVELS, 0.5)) <= 0.57
    assert np.median(fc.extras["sigma"]) == pytest.approx(0.1, rel=0.15)


def test_loglog_regression_leaves_the_specs_dated_events_out() -> None:
    history, _ = simulated_panel(seed=9, n_series=6, missing=0.0)
    plain = pb.loglog_price_regression(history, HORIZON, LEVELS)
    # An event on one row of each series' history: fitted alone, its coefficient would be anything at all.
    spike = np.zeros((history.n_series, history.n_periods + HORIZON))
    spike[:, [history.n_periods - 3, history.n_periods + 2]] = [1 / 7, 6 / 7]
    with_event = replace(history, covariates={**history.covariates, "easter": spike}, events=("easter",))
    fc = pb.loglog_price_regression(with_event, HORIZON, LEVELS)
    assert "coef_easter" not in fc.extras
    np.testing.assert_allclose(fc.quantiles, plain.quantiles)
    assert "coef_easter" in pb.loglog_price_regression(replace(with_event, events=()), HORIZON, LEVELS).extras
    with pytest.raises(ValueError, match=r"events \['promo'\] are not covariates"):
        replace(history, events=("promo",))


def test_loglog_regression_clips_non_positive_values_instead_of_taking_their_log() -> None:
    history, _ = simulated_panel(seed=8, n_series=3, missing=0.0)
    y = history.y.copy()
    y[0, ::5] = -3.0
    y[1, ::5] = 0.0
    clipped = pb.PanelHistory(y, history.periods, 52, history.covariates, history.store, history.product)
    with np.errstate(all="raise"):  # a log of a non-positive value would raise here
        fc = pb.loglog_price_regression(clipped, HORIZON, LEVELS)
    assert np.isfinite(fc.mean).all() and (fc.quantiles > 0).all()


# --- LightGBM ---------------------------------------------------------------------------------------------------


def test_lightgbm_beats_a_constant_forecast_on_wql() -> None:
    history, truth = simulated_panel(seed=9)
    future = truth[:, history.n_periods :]
    fc = pb.lightgbm_quantile(history, HORIZON, LEVELS, seed=0)
    # The constant forecast: each series' historical quantiles for every horizon period.
    constant = np.nanquantile(history.y, LEVELS, axis=1)[:, :, None].repeat(HORIZON, axis=2)
    constant_fc = pb.BaselineForecast("constant", np.nanmean(history.y, 1)[:, None].repeat(HORIZON, 1), constant, LEVELS)
    assert series_wql(fc, future) < 0.7 * series_wql(constant_fc, future)


def test_lightgbm_is_reproducible_from_its_seed() -> None:
    history, _ = simulated_panel(seed=10, n_series=6, n_periods=80, horizon=4)
    a = pb.lightgbm_quantile(history, 4, LEVELS, seed=3)
    b = pb.lightgbm_quantile(history, 4, LEVELS, seed=3)
    np.testing.assert_array_equal(a.quantiles, b.quantiles)


def test_lightgbm_features_are_known_at_the_origin() -> None:
    """Changing the history after an origin must not change a training row built for that origin."""
    history, _ = simulated_panel(seed=11, n_series=3, n_periods=80, missing=0.0)
    position = pb._season_position(np.asarray(history.periods), 52, 7)
    series, target, steps = np.array([0, 1]), np.array([70, 75]), np.array([5, 12])
    known = pb._OriginFeatures(history.y, pb._rolling_windows(52))
    x, scale, _ = pb._lightgbm_design(history, known, series, target, steps, position)
    later = history.y.copy()
    later[0, 66:] += 1000.0  # origin of the first row is 70 - 5 + 1 = 66
    later[1, 64:] += 1000.0  # origin of the second is 64
    known_later = pb._OriginFeatures(later, pb._rolling_windows(52))
    x_later, scale_later, _ = pb._lightgbm_design(history, known_later, series, target, steps, position)
    np.testing.assert_array_equal(x, x_later)
    np.testing.assert_array_equal(scale, scale_later)


# --- ETS --------------------------------------------------------------------------------------------------------


def test_ets_90_percent_interval_covers_a_gaussian_noise_series_at_about_90_percent() -> None:
    rng = np.random.default_rng(12)
    n_series, n_periods, horizon = 40, 80, 8
    y = 100.0 + rng.normal(0.0, 5.0, (n_series, n_periods + horizon))
    history = pb.PanelHistory(
        y[:, :n_periods], np.datetime64("2015-01-02") + 7 * np.arange(n_periods), 52, {}, np.zeros(n_series, int), np.arange(n_series)
    )
    fc = pb.ets(history, horizon, LEVELS)
    assert set(fc.extras["model"]) == {"ets"}  # shorter than two seasons: non-seasonal AutoETS
    truth = y[:, n_periods:].ravel()
    lower, upper = pm.interval(fc.quantiles.reshape(5, -1), LEVELS, 0.9)
    assert 0.82 <= pm.coverage(truth, lower, upper) <= 0.97
    lower, upper = pm.interval(fc.quantiles.reshape(5, -1), LEVELS, 0.5)
    assert 0.4 <= pm.coverage(truth, lower, upper) <= 0.62


def test_ets_uses_mstl_for_a_long_season_and_follows_the_cycle() -> None:
    history, truth = simulated_panel(seed=13, n_series=4, n_periods=110, missing=0.05)
    fc = pb.ets(history, HORIZON, LEVELS)
    assert set(fc.extras["model"]) == {"mstl"}
    future = truth[:, history.n_periods :]
    naive = pb.seasonal_naive(history, HORIZON, LEVELS)
    assert series_wql(fc, future) < 1.5 * series_wql(naive, future)


def test_ets_falls_back_to_mean_and_spread_for_a_very_short_series() -> None:
    rng = np.random.default_rng(14)
    y = np.full((2, 30), np.nan)
    y[0] = 50 + rng.normal(0, 2, 30)
    y[1, -4:] = [10.0, 12.0, 11.0, 13.0]
    history = pb.PanelHistory(y, np.datetime64("2020-01-06") + np.arange(30), 7, {}, np.zeros(2, int), np.arange(2))
    fc = pb.ets(history, 3, LEVELS)
    assert fc.extras["model"][1] == "fallback"
    np.testing.assert_allclose(fc.mean[1], 11.5)
    np.testing.assert_allclose(fc.quantiles[2, 1], 11.5)
    np.testing.assert_allclose(fc.quantiles[4, 1] - 11.5, 1.6448536 * np.std([10, 12, 11, 13], ddof=1), rtol=1e-6)


@pytest.mark.slow
def test_ets_in_spawned_processes_matches_ets_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pb, "ETS_MIN_PARALLEL", 2)
    history, _ = simulated_panel(seed=19, n_series=6, n_periods=110)
    serial, parallel = pb.ets(history, HORIZON, LEVELS), pb.ets(history, HORIZON, LEVELS, n_jobs=2)
    np.testing.assert_allclose(parallel.quantiles, serial.quantiles)
    np.testing.assert_array_equal(parallel.extras["model"], serial.extras["model"])


def test_ets_replaces_a_fit_with_exploding_intervals_by_an_additive_error_model(monkeypatch: pytest.MonkeyPatch) -> None:
    class Exploding:
        def forecast(self, y, h, level):
            out = {"mean": np.full(h, y.mean())}
            for lv in level:
                out[f"lo-{lv}"], out[f"hi-{lv}"] = np.full(h, -1e14), np.full(h, 1e14)
            return out

    monkeypatch.setattr(pb, "_ets_model", lambda n, season_length: ("exploding", Exploding()))
    rng = np.random.default_rng(17)
    y = 100.0 + rng.normal(0.0, 5.0, (2, 40))
    history = pb.PanelHistory(y, np.datetime64("2015-01-02") + 7 * np.arange(40), 52, {}, np.zeros(2, int), np.arange(2))
    fc = pb.ets(history, 4, LEVELS)
    assert set(fc.extras["model"]) == {"ets_additive"}
    assert np.abs(fc.quantiles).max() < 10 * np.abs(y).max()


# --- interface checks -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "baseline"), [("statsforecast", "ets"), ("lightgbm", "lightgbm_quantile")]
)
def test_a_missing_optional_dependency_says_which_extra_to_install(module: str, baseline: str, monkeypatch: pytest.MonkeyPatch) -> None:
    history, _ = simulated_panel(seed=15, n_series=2, n_periods=30, horizon=4)
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'bhm-forecast\[eval\]'"):
        pb.PANEL_BASELINES[baseline](history, 4, LEVELS)


def test_bad_inputs_are_refused_with_the_bad_value_named() -> None:
    history, _ = simulated_panel(seed=16, n_series=2, n_periods=30, horizon=4)
    with pytest.raises(ValueError, match="expected T \\+ horizon = 35"):
        pb.seasonal_naive(history, 5, LEVELS)  # covariates cover 4 horizon periods
    with pytest.raises(ValueError, match="strictly increasing"):
        pb.seasonal_naive(history, 4, (0.5, 0.25))
    with pytest.raises(ValueError, match="between 0 and 1"):
        pb.seasonal_naive(history, 4, (0.0, 0.5))
    with pytest.raises(ValueError, match="store must be int"):
        pb.PanelHistory(history.y, history.periods, 52, {}, np.zeros(3, int), np.zeros(2, int))
    with pytest.raises(ValueError, match="regular increasing grid"):
        pb.PanelHistory(history.y, history.periods + (np.arange(30) >= 10) * np.timedelta64(1, 'D'), 52, {}, history.store, history.product)


# --- metrics, by hand -------------------------------------------------------------------------------------------


def test_wql_against_hand_computed_values() -> None:
    y = np.array([10.0, 20.0])
    # One level: pinball 0.5 * 2 + 0.5 * 5 = 3.5; 2 * 3.5 / (1 * 30).
    assert pm.wql(y, np.array([[12.0, 15.0]]), (0.5,)) == pytest.approx(7 / 30)
    # Two levels: 0.1 -> 0.1 * 2 + 0.9 * 5 = 4.7; 0.9 -> 0.1 * 2 + 0.9 * 2 = 2.0; 2 * 6.7 / (2 * 30).
    q = np.array([[8.0, 25.0], [12.0, 18.0]])
    assert pm.wql(y, q, (0.1, 0.9)) == pytest.approx(6.7 / 30)
    # Weights 1 and 3: (0.2 + 13.5) + (0.2 + 5.4) = 19.3; 2 * 19.3 / (2 * (10 + 60)).
    assert pm.wql(y, q, (0.1, 0.9), weights=np.array([1.0, 3.0])) == pytest.approx(19.3 / 70)
    # Negative actuals count by their absolute value in the denominator.
    assert pm.wql(np.array([-10.0]), np.array([[-8.0]]), (0.5,)) == pytest.approx(2 * 0.5 * 2 / 10)


def test_coverage_wmae_mape_rmse_log_against_hand_computed_values() -> None:
    assert pm.coverage(np.array([1.0, 2, 3, 4]), np.array([0.0, 2.5, 3, 5]), np.array([1.0, 3, 4, 6])) == 0.5
    weights = pm.holiday_weights(np.array([False, True, False]))
    np.testing.assert_array_equal(weights, [1.0, 5.0, 1.0])
    assert pm.wmae(np.array([10.0, 20, 30]), np.array([12.0, 18, 30]), weights) == pytest.approx(12 / 7)
    assert pm.wmae(np.array([10.0, 20, 30]), np.array([12.0, 18, 30])) == pytest.approx(4 / 3)
    assert pm.mape(np.array([10.0, 0, -5, 20]), np.array([12.0, 3, 1, 15])) == pytest.approx(0.225)
    y, mean = np.exp([1.0, 2.0, 0.0]) * np.array([1, 1, 0]), np.array([np.exp(1.5), np.exp(1.0), 5.0])
    assert pm.rmse_log(y, mean) == pytest.approx(np.sqrt(0.625))


def test_aggregate_sums_groups_with_either_nan_policy() -> None:
    values = np.array([[1.0, 2.0], [3.0, np.nan], [5.0, 6.0], [np.nan, np.nan]])
    codes = np.array([0, 0, 1, 2])
    np.testing.assert_array_equal(pm.aggregate(values, codes), [[4.0, np.nan], [5.0, 6.0], [np.nan, np.nan]])
    np.testing.assert_array_equal(pm.aggregate(values, codes, nan_policy="omit"), [[4.0, 2.0], [5.0, 6.0], [np.nan, np.nan]])
    # Extra trailing axes (e.g. [S, H, Q]) are summed alike; an empty group is 0.
    stacked = np.stack([values, 2 * values], axis=2)
    out = pm.aggregate(stacked, codes, n_groups=4, nan_policy="omit")
    assert out.shape == (4, 2, 2)
    np.testing.assert_array_equal(out[1, :, 1], [10.0, 12.0])
    np.testing.assert_array_equal(out[3], 0.0)
    with pytest.raises(ValueError, match="nan_policy"):
        pm.aggregate(values, codes, nan_policy="drop")
    with pytest.raises(ValueError, match="group_codes has shape"):
        pm.aggregate(values, codes[:3])


def test_scores_collects_every_metric_and_refuses_unknown_levels() -> None:
    y = np.array([10.0, 20.0, 30.0, 40.0])
    mean = np.array([11.0, 19.0, 33.0, 40.0])
    q = np.stack([mean - 10, mean - 2, mean, mean + 2, mean + 10])
    out = pm.scores(y, mean, q, LEVELS)
    assert set(out) == {"n", "wql", "coverage_50", "coverage_90", "wmae", "mape", "rmse_log"}
    assert out["coverage_90"] == 1.0 and out["coverage_50"] == 0.75  # 33 +- 2 misses 30
    assert out["wmae"] == pytest.approx(5 / 4)
    assert out["wql"] == pytest.approx(pm.wql(y, q, LEVELS))
    with pytest.raises(ValueError, match="quantile level 0.025 is not among"):
        pm.scores(y, mean, q, LEVELS, intervals=(0.95,))
    with pytest.raises(ValueError, match="non-finite"):
        pm.wql(np.array([1.0, np.nan]), np.ones((1, 2)), (0.5,))
    with pytest.raises(ValueError, match="quantiles has shape"):
        pm.wql(y, q[:, :3], LEVELS)
