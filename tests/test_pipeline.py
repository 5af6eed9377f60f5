"""tasks.pipeline.run end to end on a small demo: the forecast file keeps its contract, runs are
reproducible, and bad input stops the run before anything is written."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tasks import names as n
from tasks.config import FitConfig, ForecastConfig, RunConfig
from tasks.data.demo import DemoData, generate_demo
from tasks.data.validate import InputValidationError
from tasks.model import state
from tasks.pipeline import RunResult, run

QUANTILES = ("q05", "q25", "q50", "q75", "q95")
CONTRACT_COLUMNS = {n.ID, n.STORE, n.DATE, n.OPEN_WAS_MISSING, n.MEAN, *QUANTILES, n.WAS_OPEN, n.MODEL_VERSION}
FIT = FitConfig(max_steps=600, local_max_steps=300)
FORECAST = ForecastConfig(num_draws=200)
BRAND_NEW_STORE = 13  # in the stores file and the calendar, with no history at all


@dataclass(frozen=True)
class Runs:
    demo: DemoData
    future: pl.DataFrame  # the calendar as written, brand-new store included
    folder: Path
    first: RunResult
    second: RunResult  # same inputs and seed, other output paths


def with_brand_new_store(demo: DemoData) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Stores file and calendar with one more store, a copy of store 1 that has no history."""
    as_new = pl.lit(BRAND_NEW_STORE, pl.Int32).alias(n.STORE)
    stores = pl.concat([demo.stores, demo.stores.filter(pl.col(n.STORE) == 1).with_columns(as_new)])
    extra = demo.future.filter(pl.col(n.STORE) == 1).with_columns(as_new)
    future = (
        pl.concat([demo.future, extra])
        .sort(n.DATE, n.STORE)
        .drop(n.ID)
        .with_row_index(n.ID, offset=1)
        .with_columns(pl.col(n.ID).cast(pl.Int64))
        .select(n.FUTURE_COLUMNS)
    )
    return stores, future


def config(paths: dict[str, Path], out: Path) -> RunConfig:
    return RunConfig(
        train=paths["train"], stores=paths["stores"], future=paths["future"], out=out, seed=3, fit=FIT, forecast=FORECAST
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    demo = generate_demo(seed=1, n_stores=12, n_history_days=365, horizon=21)
    stores, future = with_brand_new_store(demo)
    folder = tmp_path_factory.mktemp("pipeline")
    paths = {"train": folder / "train.csv", "stores": folder / "store.csv", "future": folder / "test.csv"}
    demo.train.write_csv(paths["train"])
    stores.write_csv(paths["stores"])
    future.write_csv(paths["future"])
    first = run(config(paths, folder / "forecast.parquet"))
    second = run(config(paths, folder / "again" / "forecast.parquet"))
    return Runs(demo, future, folder, first, second)


@pytest.fixture(scope="module")
def forecast(runs: Runs) -> pl.DataFrame:
    return pl.read_parquet(runs.first.forecast_path)


@pytest.mark.slow
def test_one_forecast_row_per_calendar_row(runs: Runs, forecast: pl.DataFrame) -> None:
    assert runs.first.n_forecast_rows == forecast.height == runs.future.height
    assert forecast.select(n.STORE, n.DATE).is_duplicated().sum() == 0
    calendar = runs.future.select(n.ID, n.STORE, n.DATE).sort(n.ID)
    assert forecast.select(n.ID, n.STORE, n.DATE).sort(n.ID).equals(calendar)


@pytest.mark.slow
def test_forecast_file_keeps_its_contract(forecast: pl.DataFrame) -> None:
    assert set(forecast.columns) == CONTRACT_COLUMNS
    for column in (n.MEAN, *QUANTILES):
        assert forecast.schema[column].is_float(), column
    assert forecast.schema[n.STORE] == pl.Int32
    assert forecast.schema[n.DATE] == pl.Date
    assert forecast.schema[n.WAS_OPEN] == pl.Boolean
    values = forecast.select(n.MEAN, *QUANTILES).to_numpy()
    assert np.isfinite(values).all()
    assert (forecast[n.MEAN] > 0).all()
    for lower, upper in zip(QUANTILES, QUANTILES[1:], strict=False):
        assert (forecast[lower] <= forecast[upper]).all(), f"{lower} > {upper}"


@pytest.mark.slow
def test_closed_days_are_flagged_and_still_forecast(runs: Runs, forecast: pl.DataFrame) -> None:
    expected = runs.future.select(n.STORE, n.DATE, (pl.col(n.OPEN) == 1).alias("expected_open"))
    joined = forecast.join(expected, on=[n.STORE, n.DATE])
    assert joined[n.WAS_OPEN].equals(joined["expected_open"], check_names=False)
    closed = forecast.filter(~pl.col(n.WAS_OPEN))
    assert closed.height > 0 and (closed[n.MEAN] > 0).all()  # "had it been open" demand


@pytest.mark.slow
def test_new_and_short_history_stores_are_forecast(runs: Runs, forecast: pl.DataFrame) -> None:
    stores = set(forecast[n.STORE].to_list())
    assert set(runs.demo.new_stores) <= stores
    assert BRAND_NEW_STORE in stores
    assert runs.first.fit.n_local_stores >= len(runs.demo.new_stores)
    assert runs.first.fit.n_prior_only_stores == 1


@pytest.mark.slow
def test_model_version_is_set_and_matches_the_fitted_model(runs: Runs, forecast: pl.DataFrame) -> None:
    versions = forecast[n.MODEL_VERSION].unique().to_list()
    fitted = state.load(runs.first.fitted_dir)
    assert versions == [fitted.model_version]
    assert fitted.model_version != "unversioned"
    assert set(fitted.store_ids.tolist()) >= set(forecast[n.STORE].to_list())


@pytest.mark.slow
def test_no_temporary_files_left_beside_the_outputs(runs: Runs) -> None:
    names = sorted(p.name for p in runs.folder.iterdir())
    assert names == sorted(["again", "forecast.model", "forecast.parquet", "store.csv", "test.csv", "train.csv"])
    assert runs.first.fitted_dir == runs.folder / "forecast.model"
    assert sorted(p.name for p in (runs.folder / "again").iterdir()) == ["forecast.model", "forecast.parquet"]


@pytest.mark.slow
def test_same_seed_and_data_give_identical_files(runs: Runs) -> None:
    first, second = runs.first, runs.second
    assert pl.read_parquet(first.forecast_path).equals(pl.read_parquet(second.forecast_path))
    assert Path(first.forecast_path).read_bytes() == Path(second.forecast_path).read_bytes()
    a, b = state.load(first.fitted_dir), state.load(second.fitted_dir)
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key], err_msg=key)


def test_bad_input_stops_the_run_and_writes_nothing(tiny_demo_files: dict[str, Path], tmp_path: Path) -> None:
    train = pl.read_csv(tiny_demo_files["train"], infer_schema=False)
    fifth_row = pl.int_range(pl.len()) == 4
    planted = train.with_columns(pl.when(fifth_row).then(pl.lit("-7")).otherwise(pl.col(n.SALES)).alias(n.SALES))
    bad_train = tmp_path / "train.csv"
    planted.write_csv(bad_train)
    out = tmp_path / "out" / "forecast.parquet"
    cfg = RunConfig(train=bad_train, stores=tiny_demo_files["stores"], future=tiny_demo_files["future"], out=out, fit=FIT)
    with pytest.raises(InputValidationError) as caught:
        run(cfg)
    failing = [f for f in caught.value.report.failures if f.column == n.SALES]
    assert failing and failing[0].rows == (5,)  # the planted value, as a 1-based data row
    assert not out.exists()
    assert not cfg.fitted_dir.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_calendar_must_follow_history(tiny_demo_files: dict[str, Path], tmp_path: Path) -> None:
    future = pl.read_csv(tiny_demo_files["future"], try_parse_dates=True)
    early = future.with_columns(pl.col(n.DATE) - dt.timedelta(days=30))
    path = tmp_path / "test.csv"
    early.with_columns(pl.col(n.DATE).dt.weekday().alias(n.DAY_OF_WEEK)).write_csv(path)
    out = tmp_path / "forecast.parquet"
    with pytest.raises(InputValidationError, match="after the store's last train Date"):
        run(RunConfig(train=tiny_demo_files["train"], stores=tiny_demo_files["stores"], future=path, out=out, fit=FIT))
    assert not out.exists()
