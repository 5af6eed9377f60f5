"""Prefect tasks of the panel flow: thin wrappers around ``tasks.panel_pipeline`` (see ``tasks.stages``
for the retry and cache policies they share)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path

import jax
import polars as pl

from tasks import panel_blocks_pipeline, panel_pipeline
from tasks.config import ForecastConfig, PanelBacktestConfig, PanelFitConfig, SeriesBlocksConfig
from tasks.data.panel_blocks import PanelBlocks
from tasks.data.panel_encode import Dimensions, EncodedPanelData
from tasks.data.panel_ingest import PanelTables, read_panel
from tasks.data.spec import PanelSpec
from tasks.evaluate.panel_backtest import PanelBacktest, origin_key, run_panel_backtest
from tasks.forecast import panel_job
from tasks.forecast.panel_draws import AggregateLevel, ChunkPlan, PanelForecastArrays, combine_blocks
from tasks.model import panel_state
from tasks.model.inference import FitResult
from tasks.model.panel_effects import EffectDraws, price_elasticities
from tasks.model.panel_state import FittedPanel
from tasks.pipeline import write_parquet_atomic
from tasks.stages import compute_task, io_task, publishing_validation_failure


@dataclass(frozen=True)
class OriginScores:
    """One backtest origin run elsewhere: its scores in a file, its fit without the fitted parameters."""

    origin: dt.date
    horizon: int
    scores_file: Path
    fit: FitResult
    seconds: dict[str, float]

    def backtest(self) -> PanelBacktest:
        return PanelBacktest(self.origin, self.horizon, pl.read_parquet(self.scores_file), self.fit, self.seconds)


@io_task("read and validate")
def read_tables(spec: PanelSpec, data: Path, future: Path | None) -> PanelTables:
    with publishing_validation_failure():
        return read_panel(spec, data, future)


@compute_task("fit")
def fit(encoded: EncodedPanelData, spec: PanelSpec, config: PanelFitConfig, key: jax.Array, info: dict) -> tuple[FittedPanel, FitResult]:
    return panel_pipeline.fit_encoded(encoded, spec, config, key, info=info)


@compute_task("encode into series blocks and fit")
def train_from_blocks(
    spec: PanelSpec, data: Path, config: PanelFitConfig, blocks: SeriesBlocksConfig, key: jax.Array, info: dict, future: Path | None = None
) -> tuple[PanelBlocks, FittedPanel, FitResult]:
    with publishing_validation_failure():
        return panel_blocks_pipeline.train_from_blocks(spec, data, config, blocks, key, info=info, future=future)


@compute_task("forecast")
def forecast(
    fitted: FittedPanel, tables: PanelTables, encoded: EncodedPanelData, config: ForecastConfig, key: jax.Array,
    series_per_partition: int | None = None,
) -> tuple[pl.DataFrame, PanelForecastArrays]:
    aggregates = panel_pipeline.aggregate_levels(tables, encoded)
    arrays = panel_pipeline.forecast_encoded(fitted, encoded, aggregates, config, key, series_per_partition=series_per_partition)
    return panel_pipeline.forecast_frame(tables, encoded, arrays, aggregates, fitted.model_version), arrays


@compute_task("write the forecast job")
def write_forecast_job(
    folder: Path, fitted: FittedPanel, encoded: EncodedPanelData, aggregates: tuple[AggregateLevel, ...], config: ForecastConfig,
    key: jax.Array, series_per_partition: int,
) -> ChunkPlan:
    return panel_pipeline.write_forecast_job(folder, fitted, encoded, aggregates, config, key, series_per_partition)


@compute_task("forecast a partition")
def forecast_partition(job: Path, partition: int) -> Path:
    return panel_job.run_partition(job, partition)


@compute_task("combine the partitions")
def combine_partitions(
    parts: list[Path], fitted: FittedPanel, tables: PanelTables, encoded: EncodedPanelData, aggregates: tuple[AggregateLevel, ...],
    config: ForecastConfig,
) -> tuple[pl.DataFrame, PanelForecastArrays]:
    arrays = combine_blocks(panel_job.read_blocks(parts), encoded.encoding.n_series, config.quantiles)
    return panel_pipeline.forecast_frame(tables, encoded, arrays, aggregates, fitted.model_version), arrays


@compute_task("backtest at an origin")
def backtest_at(tables: PanelTables, origin: dt.date, horizon: int, config: PanelBacktestConfig, index: int) -> PanelBacktest:
    key = origin_key(config.seed, index)
    return run_panel_backtest(tables, origin, horizon, config.fit, config.forecast, key, config.baselines)


@compute_task("backtest an origin into a file")
def backtest_to_file(spec: PanelSpec, origin: dt.date, horizon: int, config: PanelBacktestConfig, index: int, out: Path) -> OriginScores:
    """``backtest_at`` where an engine's worker runs it: it reads the spec's files itself (the spec and paths
    travel, not frames), writes the scores to ``out`` whole or not at all, and returns the rest without the
    fitted parameters."""
    result = backtest_at.fn(read_panel(spec, config.data, None), origin, horizon, config, index)
    write_parquet_atomic(result.scores, out)
    return OriginScores(result.origin, result.horizon, out, replace(result.fit, params={}), result.seconds)


@compute_task("price elasticities")
def elasticities(fitted: FittedPanel, dims: Dimensions, spec: PanelSpec, key: jax.Array) -> list[EffectDraws]:
    return price_elasticities(fitted, dims, panel_pipeline.price_names(spec), key)


@io_task("save the fitted model")
def save_model(fitted: FittedPanel, directory: Path) -> Path:
    return panel_state.save(fitted, directory)


@io_task("load the fitted model")
def load_model(directory: Path, spec: PanelSpec) -> FittedPanel:
    return panel_pipeline.load_for(directory, spec)


@io_task("read, validate and encode")
def read_and_encode(
    spec: PanelSpec, data: Path, future: Path | None, fitted: FittedPanel | None = None
) -> tuple[PanelTables, EncodedPanelData]:
    """The tables and their arrays; with ``fitted``, the future alone in the saved model's encoding (the sales
    file is not read: a forecast from a saved model needs none of the history). The tables come back without
    their sales rows, which nothing reads once they are encoded: in one task, as Prefect holds every task's
    result until the flow ends (M5's sales rows: 2.9 GB of a 7.1 GB peak)."""
    with publishing_validation_failure():
        tables = read_panel(spec, data, future, history_end=None if fitted is None else fitted.encoding.anchor_date)
    encoded = panel_pipeline.encode_tables(tables) if fitted is None else panel_pipeline.encode_for(tables, fitted)
    return replace(tables, sales=tables.sales.clear()), encoded


@io_task("export")
def export(frame: pl.DataFrame, out: Path) -> Path:
    from tasks.pipeline import write_parquet_atomic

    return write_parquet_atomic(frame, out)
