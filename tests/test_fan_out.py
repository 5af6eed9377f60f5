"""The panel forecast fanned out over partitions of series: on Dask (a LocalCluster of 2 worker processes)
it equals the in-process forecast exactly, and partitions do not change a series' numbers; the panel
backtest's origins on Dask score exactly as in process."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from flows.panel_backtest import PanelBacktestResult, panel_backtest
from flows.panel_forecast import panel_forecast
from tasks import panel_pipeline
from tasks.config import FanOutConfig, ForecastConfig, PanelBacktestConfig, PanelFitConfig, PanelForecastConfig, TrackingConfig
from tasks.data.panel_demo import generate_panel_demo
from tasks.data.panel_ingest import read_panel
from tasks.data.spec import load_spec
from tasks.forecast import panel_job
from tasks.forecast.panel_draws import ChunkPlan, combine_blocks, forecast_series_block
from tasks.model import panel_state

# 5 stores x 4 products = 20 series in chunks of 3: 7 chunks (the last one padded), 4 partitions of 2 chunks
FORECAST = ForecastConfig(num_draws=200, chunk_stores=3)
SERIES_PER_PARTITION = 6


@pytest.fixture(scope="module")
def fitted_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fan_out")
    files = generate_panel_demo(seed=3, n_stores=5, n_departments=2, products_per_department=2, n_weeks=60, horizon=4).write(folder)
    spec = load_spec(files["spec"])
    tables = read_panel(spec, folder, files["future"])
    encoded = panel_pipeline.encode_tables(tables)
    config = PanelFitConfig(max_steps=200, chunk_steps=100)
    fitted, _ = panel_pipeline.fit_encoded(encoded, spec, config, jax.random.key(0), on_progress=lambda p: None)
    panel_state.save(fitted, folder / "model")
    return {**files, "data": folder, "model": folder / "model"}


def _forecast(files: dict[str, Path], out: Path, fan_out: FanOutConfig) -> pl.DataFrame:
    config = PanelForecastConfig(
        spec=files["spec"], data=files["data"], future=files["future"], out=out, model_dir=files["model"], seed=5,
        forecast=FORECAST, fan_out=fan_out, tracking=TrackingConfig(enabled=False),
    )  # fmt: skip
    result = panel_forecast(config)
    assert result.forecast_path == out
    return pl.read_parquet(out)


@pytest.mark.usefixtures("prefect_server")
def test_a_local_dask_cluster_of_two_workers_gives_the_in_process_forecast_exactly(fitted_model: dict[str, Path], tmp_path: Path) -> None:
    here = _forecast(fitted_model, tmp_path / "here.parquet", FanOutConfig(series_per_partition=SERIES_PER_PARTITION))
    fanned = FanOutConfig(engine="dask", dask_workers=2, series_per_partition=SERIES_PER_PARTITION)
    on_dask = _forecast(fitted_model, tmp_path / "dask.parquet", fanned)
    assert here["level"].n_unique() > 1  # aggregates are compared too
    assert_frame_equal(on_dask, here, check_exact=True)
    # the job's files are gone: only the two forecasts are left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dask.parquet", "here.parquet"]


@pytest.mark.usefixtures("prefect_server")
def test_a_backtest_on_a_local_dask_cluster_scores_as_in_process(fitted_model: dict[str, Path], tmp_path: Path) -> None:
    """Each origin a task on its own worker (it reads the files itself): the same fits, forecasts and scores."""

    def backtest(out_dir: Path, fan_out: FanOutConfig) -> PanelBacktestResult:
        config = PanelBacktestConfig(
            spec=fitted_model["spec"], data=fitted_model["data"], n_origins=2, horizon=4, baselines=("seasonal_naive",),
            out_dir=out_dir, seed=2, fit=PanelFitConfig(max_steps=200, chunk_steps=100), forecast=FORECAST,
            fan_out=fan_out, tracking=TrackingConfig(enabled=False),
        )  # fmt: skip
        return panel_backtest(config)

    here = backtest(tmp_path / "here", FanOutConfig())
    on_dask = backtest(tmp_path / "dask", FanOutConfig(engine="dask", dask_workers=2))
    assert [b.origin for b in on_dask.backtests] == [b.origin for b in here.backtests] and len(here.backtests) == 2
    assert [b.fit.n_steps for b in on_dask.backtests] == [b.fit.n_steps for b in here.backtests]
    assert here.scores["method"].n_unique() == 2 and here.scores["level"].n_unique() > 1
    assert_frame_equal(on_dask.scores, here.scores, check_exact=True)
    assert_frame_equal(pl.read_parquet(tmp_path / "dask" / "panel_scores.parquet"), here.scores, check_exact=True)
    # the origins' files are gone: only the scores and their table are left
    assert sorted(p.name for p in (tmp_path / "dask").iterdir()) == ["panel_scores.md", "panel_scores.parquet"]


def test_partitions_do_not_change_the_numbers(fitted_model: dict[str, Path], tmp_path: Path) -> None:
    """A series' draws depend on its chunk only; the aggregates' sums of counts are exact in any order."""
    fitted = panel_state.load(fitted_model["model"])
    spec = load_spec(fitted_model["spec"])
    tables = read_panel(spec, fitted_model["data"], fitted_model["future"])
    encoded = panel_pipeline.encode_for(tables, fitted)
    aggregates = panel_pipeline.aggregate_levels(tables, encoded)
    key = jax.random.key(7)
    whole = panel_pipeline.forecast_encoded(fitted, encoded, aggregates, FORECAST, key)
    cut = panel_pipeline.forecast_encoded(fitted, encoded, aggregates, FORECAST, key, series_per_partition=SERIES_PER_PARTITION)
    np.testing.assert_array_equal(cut.mean, whole.mean)
    np.testing.assert_array_equal(cut.quantiles, whole.quantiles)
    assert cut.aggregates.keys() == whole.aggregates.keys()
    for name in whole.aggregates:
        np.testing.assert_array_equal(cut.aggregates[name][1], whole.aggregates[name][1])
        np.testing.assert_allclose(cut.aggregates[name][0], whole.aggregates[name][0], rtol=1e-6)

    # the same through the job's files, one partition at a time, as an engine runs them
    plan = panel_pipeline.write_forecast_job(tmp_path / "job", fitted, encoded, aggregates, FORECAST, key, SERIES_PER_PARTITION)
    assert plan.n_partitions == 4
    parts = [panel_job.run_partition(tmp_path / "job", p) for p in reversed(range(plan.n_partitions))][::-1]
    from_files = combine_blocks(panel_job.read_blocks(parts), plan.n_series, FORECAST.quantiles)
    np.testing.assert_array_equal(from_files.quantiles, cut.quantiles)
    for name in whole.aggregates:
        np.testing.assert_array_equal(from_files.aggregates[name][0], cut.aggregates[name][0])


def test_the_chunk_plan_cuts_whole_chunks() -> None:
    plan = ChunkPlan.make(20, 3, 6)
    assert (plan.chunk, plan.n_chunks, plan.n_partitions) == (3, 7, 4)
    assert [plan.series(p) for p in range(4)] == [range(0, 6), range(6, 12), range(12, 18), range(18, 20)]
    assert ChunkPlan.make(20, 3).n_partitions == 1
    assert ChunkPlan.make(20, 3, 1).n_partitions == 7  # never less than a chunk
    with pytest.raises(ValueError, match="partition 4"):
        plan.series(4)
    with pytest.raises(ValueError, match="at least one series"):
        ChunkPlan.make(0, 3)


def test_blocks_must_come_whole_and_in_order(fitted_model: dict[str, Path]) -> None:
    fitted = panel_state.load(fitted_model["model"])
    spec = load_spec(fitted_model["spec"])
    tables = read_panel(spec, fitted_model["data"], fitted_model["future"])
    encoded = panel_pipeline.encode_for(tables, fitted)
    structure, inputs = panel_pipeline.future_model_inputs(fitted, encoded)
    plan = ChunkPlan.make(encoded.encoding.n_series, 3, SERIES_PER_PARTITION)
    quantiles = (0.1, 0.5, 0.9)
    blocks = [
        forecast_series_block(fitted.params, structure, inputs, jax.random.key(1), plan, p, num_draws=20, quantiles=quantiles) for p in range(2)
    ]
    with pytest.raises(ValueError, match="expected one starting at series 0"):
        combine_blocks(blocks[::-1], plan.n_series, quantiles)
    with pytest.raises(ValueError, match="cover 12 of 20"):
        combine_blocks(blocks, plan.n_series, quantiles)
    with pytest.raises(ValueError, match="3 quantiles, not the 1"):
        combine_blocks(blocks, plan.n_series, (0.5,))


def test_an_address_needs_the_dask_engine() -> None:
    with pytest.raises(ValueError, match="set engine to 'dask'"):
        FanOutConfig(dask_address="tcp://127.0.0.1:8786")
