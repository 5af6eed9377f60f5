"""tasks.track.plots: pure functions that return matplotlib Figures and render headless."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from matplotlib.figure import Figure

from tasks.data.demo import DemoData
from tasks.data.encode import build_spec
from tasks.model.inference import Params
from tasks.model.state import FittedModel
from tasks.model.store_day import ModelStructure, Site
from tasks.pipeline import prior_store_params
from tasks.track import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAMES = ("intercept", "weekday_2", "weekday_3", "weekday_4", "weekday_5", "weekday_6", "weekday_7", "promo", "school_holiday")


def assert_renders(fig: Figure) -> None:
    png = plots.figure_png(fig, dpi=40)
    assert png.startswith(PNG_MAGIC) and len(png) > 1000


def test_elbo_curve_draws_one_line_log_scaled_when_it_spans_decades() -> None:
    losses = 50.0 * np.exp(-np.arange(300) / 40.0) + 2.0
    fig = plots.elbo_curve(losses, "global fit")
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 1
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), losses)
    assert ax.get_yscale() == "log" and ax.get_title() == "global fit"
    assert plots.elbo_curve(np.linspace(9.0, 8.0, 50), "flat").axes[0].get_yscale() == "linear"
    assert_renders(fig)


def test_elbo_curve_tolerates_nan_and_empty_traces() -> None:
    assert_renders(plots.elbo_curve(np.array([5.0, np.nan, 4.0]), "with nan"))
    assert_renders(plots.elbo_curve(np.array([]), "empty"))


def _frames(stores: list[int], n_history: int = 90, horizon: int = 14) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(0)
    start = dt.date(2015, 3, 1)
    history_days = [start + dt.timedelta(days=i) for i in range(n_history)]
    future_days = [start + dt.timedelta(days=n_history + i) for i in range(horizon)]
    history, forecast = [], []
    for store in stores:
        for d in history_days:
            is_open = d.isoweekday() != 7
            history.append(
                {
                    "Store": store,
                    "Date": d,
                    "Sales": int(rng.poisson(5000)) if is_open else 0,
                    "Open": int(is_open),
                    "Promo": int(d.day % 14 < 5),
                }
            )
        for d in future_days:
            mean = 5000.0 + 100 * rng.normal()
            forecast.append(
                {
                    "Store": store,
                    "Date": d,
                    "mean": mean,
                    "q05": 0.6 * mean,
                    "q25": 0.85 * mean,
                    "q50": mean,
                    "q75": 1.15 * mean,
                    "q95": 1.5 * mean,
                    "open": d.isoweekday() != 7,
                }
            )
    return pl.DataFrame(history), pl.DataFrame(forecast)


def test_store_forecasts_one_panel_per_store_with_bands_and_shading() -> None:
    history, forecast = _frames([1, 2, 3])
    fig = plots.store_forecasts(history, forecast, [1, 3], days_back=28)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        actual, mean, start = ax.get_lines()
        assert len(actual.get_xdata()) == 28  # the last 28 history days only
        assert np.isnan(actual.get_ydata()).sum() == 4  # 4 closed Sundays are not drawn as zero sales
        assert len(mean.get_xdata()) == 14
        assert len(ax.collections) == 2  # 90% and 50% bands
        assert len(ax.patches) > 0  # closed and promo days shaded
    assert fig.axes[1].get_title(loc="left") == "Store 3"
    assert_renders(fig)


def test_store_forecasts_marks_a_store_without_data() -> None:
    history, forecast = _frames([1], n_history=20, horizon=7)
    fig = plots.store_forecasts(history, forecast, [1, 99])
    assert len(fig.axes) == 2
    assert fig.axes[1].get_title(loc="left") == "Store 99 (no data)"
    assert_renders(fig)
    with pytest.raises(ValueError, match="no stores"):
        plots.store_forecasts(history, forecast, [])


def _store_coef(n_stores: int = 30) -> np.ndarray:
    rng = np.random.default_rng(1)
    coef = rng.normal(0.0, 0.1, size=(n_stores, len(NAMES)))
    coef[:, NAMES.index("promo")] += 0.25
    return coef


def test_weekday_effects_one_density_per_weekday() -> None:
    fig = plots.weekday_effects(_store_coef(), NAMES)
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    for line in lines:  # densities integrate to about one over the grid
        x, y = line.get_xdata(), line.get_ydata()
        assert np.all(y >= 0) and abs(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)) - 1.0) < 0.02
    assert_renders(fig)
    assert_renders(plots.weekday_effects(_store_coef(1), NAMES))  # one store: no spread, still a figure
    with pytest.raises(ValueError, match="weekday"):
        plots.weekday_effects(np.zeros((3, 2)), ("intercept", "promo"))


def test_promo_effects_histogram_with_median_marked_in_percent() -> None:
    coef = _store_coef()
    fig = plots.promo_effects(coef, NAMES)
    (ax,) = fig.axes
    (median_line,) = ax.get_lines()
    expected = 100.0 * np.median(np.expm1(coef[:, NAMES.index("promo")]))
    assert median_line.get_xdata()[0] == pytest.approx(expected)
    assert sum(p.get_height() for p in ax.patches) == coef.shape[0]
    assert_renders(fig)
    with pytest.raises(ValueError, match="shape"):
        plots.promo_effects(coef[:, :3], NAMES)


def test_store_coefficients_combine_population_attributes_and_store_deviation(tiny_demo: DemoData) -> None:
    rng = np.random.default_rng(2)
    spec = build_spec(tiny_demo.stores, yearly_fourier_order=2, monthly_fourier_order=1)
    structure = ModelStructure.from_features(spec.features, 120, 28, 8.5)
    store_ids = tiny_demo.stores["Store"].to_numpy().astype(np.int32)
    n_stores, n_pooled, n_z = len(store_ids), structure.n_pooled, structure.n_store_features
    params: Params = dict(prior_store_params(n_stores, structure))
    params[f"{Site.POOLED_RAW}.loc"] = rng.normal(size=(n_stores, 1, n_pooled)).astype(np.float32)
    params[f"{Site.POOLED_MEAN}.loc"] = rng.normal(size=n_pooled).astype(np.float32)
    params[f"{Site.POOLED_SCALE}.loc"] = rng.normal(size=n_pooled).astype(np.float32)  # log scale
    params[f"{Site.STORE_SHIFT}.loc"] = rng.normal(size=(n_z, n_pooled)).astype(np.float32)
    fitted = FittedModel(params, store_ids, structure, spec, dt.date(2015, 6, 30), np.zeros((120, 1), np.float32))
    z = rng.normal(size=(n_stores, n_z))

    coef = plots.store_coefficients(fitted, z)

    expected = (
        params[f"{Site.POOLED_MEAN}.loc"]
        + z @ params[f"{Site.STORE_SHIFT}.loc"]
        + np.exp(params[f"{Site.POOLED_SCALE}.loc"]) * params[f"{Site.POOLED_RAW}.loc"][:, 0, :]
    )
    assert coef.shape == (n_stores, len(structure.pooled_names))
    np.testing.assert_allclose(coef, expected, rtol=1e-5, atol=1e-5)
    assert_renders(plots.weekday_effects(coef, structure.pooled_names))
    assert_renders(plots.promo_effects(coef, structure.pooled_names))
    with pytest.raises(ValueError, match="store_z"):
        plots.store_coefficients(fitted, z[:, :-1])
