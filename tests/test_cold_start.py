"""tasks.pipeline: cold start of new stores against fixed globals, a calendar forecast without history, and
tasks.data.encode.encode_future (the future encoded without its history)."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import polars as pl
import pytest

from tasks import names as n
from tasks.config import FitConfig, ForecastConfig
from tasks.data import features as fx
from tasks.data.encode import build_spec, encode, encode_future
from tasks.data.validate import read_validated
from tasks.model.store_day import Site
from tasks.pipeline import cold_start, encode_inputs, fit_history, forecast_calendar, with_stores

FIT = FitConfig(max_steps=300, local_max_steps=200)
CLOSURE_FEATURES = {
    fx.BEFORE_CLOSURE_FEATURE,
    fx.AFTER_CLOSURE_FEATURE,
    fx.TWO_BEFORE_CLOSURE_FEATURE,
    fx.TWO_AFTER_CLOSURE_FEATURE,
}


@pytest.fixture(scope="module")
def inputs(tiny_demo_files: dict[str, Path]):
    return read_validated(tiny_demo_files["train"], tiny_demo_files["stores"], tiny_demo_files["future"])


@pytest.fixture(scope="module")
def fitted_without_newest(inputs):
    """A fit on every store but the one with the shortest history, which is then the new store."""
    counts = inputs.train.group_by(n.STORE).len().sort("len")
    new_store = int(counts[n.STORE][0])
    rest = inputs.train.filter(pl.col(n.STORE) != new_store)
    spec = build_spec(inputs.stores)
    encoded = encode(rest, inputs.stores, None, spec)
    fitted, _ = fit_history(encoded, FIT, jax.random.key(0))
    return fitted, new_store


def test_encode_future_matches_encode_except_closures_at_the_start(inputs) -> None:
    spec = build_spec(inputs.stores)
    with_history = encode(inputs.train, inputs.stores, inputs.future, spec).future
    alone = encode_future(inputs.stores, inputs.future, spec)
    np.testing.assert_array_equal(alone.stores, with_history.stores)
    np.testing.assert_array_equal(alone.dates, with_history.dates)
    np.testing.assert_array_equal(alone.date_x, with_history.date_x)
    np.testing.assert_array_equal(alone.store_z, with_history.store_z)
    np.testing.assert_array_equal(alone.present, with_history.present)
    names = spec.feature_names(fx.Scope.STORE_DAY)
    differs = {names[k] for k in np.flatnonzero((alone.store_day_x != with_history.store_day_x).any(axis=(0, 1)))}
    assert differs <= CLOSURE_FEATURES
    # Beyond the first two days the history cannot matter.
    np.testing.assert_array_equal(alone.store_day_x[:, 2:], with_history.store_day_x[:, 2:])


def test_cold_start_fits_the_new_store_against_fixed_globals(inputs, fitted_without_newest) -> None:
    fitted, new_store = fitted_without_newest
    assert new_store not in fitted.store_ids
    extended, local_fit, ids = cold_start(fitted, inputs, (), FIT, jax.random.key(1))
    assert ids.tolist() == [new_store] and local_fit is not None
    assert sorted(extended.store_ids.tolist()) == sorted([*fitted.store_ids.tolist(), new_store])
    for site in Site.GLOBAL:
        for part in ("loc", "scale"):
            key = f"{site}.{part}"
            if key in fitted.params:
                np.testing.assert_array_equal(extended.params[key], fitted.params[key])
    # The known stores keep their parameters.
    old = extended.positions(fitted.store_ids)
    np.testing.assert_array_equal(extended.params[f"{Site.POOLED_RAW}.loc"][old], fitted.params[f"{Site.POOLED_RAW}.loc"])


def test_cold_start_refuses_unknown_stores_and_nothing_to_do(inputs, fitted_without_newest) -> None:
    fitted, new_store = fitted_without_newest
    with pytest.raises(ValueError, match="not in"):
        cold_start(fitted, inputs, (999,), FIT, jax.random.key(1))
    everything, _, _ = cold_start(fitted, inputs, (), FIT, jax.random.key(1))
    with pytest.raises(ValueError, match="no store to fit"):
        cold_start(everything, inputs, (), FIT, jax.random.key(1))


def test_with_stores_replaces_a_store_it_already_has(fitted_without_newest) -> None:
    fitted, _ = fitted_without_newest
    store = fitted.store_ids[:1]
    params = {k: v[:1] + 1.0 for k, v in fitted.params.items() if k.split(".")[0] in Site.STORE}
    replaced = with_stores(fitted, store, params)
    assert len(replaced.store_ids) == len(fitted.store_ids)
    (pos,) = replaced.positions(store)
    key = f"{Site.POOLED_RAW}.loc"
    np.testing.assert_allclose(replaced.params[key][pos], fitted.params[key][0] + 1.0)


def test_forecast_calendar_needs_no_history_and_rejects_the_past(inputs, fitted_without_newest) -> None:
    fitted, _ = fitted_without_newest
    frame = forecast_calendar(fitted, inputs.stores, inputs.future, ForecastConfig(num_draws=50), jax.random.key(2))
    assert frame.height == inputs.future.height  # the store missing from the fit is forecast from the prior
    past = inputs.train.select(inputs.future.drop(n.ID, n.OPEN_WAS_MISSING, strict=False).columns).tail(10)
    with pytest.raises(ValueError, match="not after the model's last history day"):
        forecast_calendar(fitted, inputs.stores, past, ForecastConfig(num_draws=50), jax.random.key(2))


def test_encode_inputs_requires_a_calendar_only_when_asked(tiny_demo_files: dict[str, Path]) -> None:
    history_only = read_validated(tiny_demo_files["train"], tiny_demo_files["stores"])
    assert encode_inputs(history_only, FIT, require_future=False).future is None
    with pytest.raises(ValueError, match="no rows"):
        encode_inputs(history_only, FIT)
