"""Prefect tasks: thin wrappers around the pure stages, for the flows in ``flows/``.

Every task has ``cache_policy=NO_CACHE``: Prefect's default policy hashes a
task's inputs, and these inputs are frames and arrays of up to a million rows.
Retries only where I/O can fail transiently (a network file system, a
tracking server), and never on an error that a retry cannot fix: a missing
file, a broken rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
import polars as pl
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks import pipeline
from tasks.config import BacktestRunConfig, ChampionGates, FitConfig, ForecastConfig, ModelSource, TrackingConfig
from tasks.data.encode import EncodedData, EncodedPanel
from tasks.data.summary import DataSummary
from tasks.data.validate import InputValidationError, ValidatedInputs, read_validated_calendar
from tasks.evaluate import backtest
from tasks.evaluate.coldstart_curve import ColdStartCurve, cold_start_curve
from tasks.model import state
from tasks.model.inference import FitResult, log_progress
from tasks.ops import atomic, faults
from tasks.track import recording, registry, report
from tasks.track.recording import Tracker
from tasks.track.tracking import tracking_uri

VALIDATION_ARTIFACT_KEY = "validation-report"
IO_RETRIES = 2
IO_RETRY_DELAY_SECONDS = 5


def transient_io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry on an OSError that may pass (network, locks), not on a missing file or a refused permission."""
    error = state.data if isinstance(state.data, BaseException) else None
    permanent = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
    return isinstance(error, OSError) and not isinstance(error, permanent)


def io_task(name: str):
    return task(
        name=name,
        cache_policy=NO_CACHE,
        retries=IO_RETRIES,
        retry_delay_seconds=IO_RETRY_DELAY_SECONDS,
        retry_condition_fn=transient_io_error,
    )


def compute_task(name: str):
    return task(name=name, cache_policy=NO_CACHE)


def publish_validation_failure(err: InputValidationError) -> None:
    create_table_artifact(
        table=err.report.to_records(),
        key=VALIDATION_ARTIFACT_KEY,
        description=f"Input validation failed: {len(err.report.failures)} broken rules. Nothing was fitted or written.",
    )


@contextmanager
def publishing_validation_failure() -> Iterator[None]:
    """A failed validation's report becomes a table artifact of the flow run, then the error goes on."""
    try:
        yield
    except InputValidationError as err:
        publish_validation_failure(err)
        raise


@io_task("read and validate")
def read_inputs(train: Path, stores: Path, future: Path | None) -> tuple[ValidatedInputs, DataSummary]:
    with publishing_validation_failure():
        read = pipeline.read_inputs(train, stores, future)
    faults.reached(faults.READ)
    return read


@io_task("read and validate the calendar")
def read_calendar(stores: Path, future: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    with publishing_validation_failure():
        return read_validated_calendar(stores, future)


@compute_task("encode")
def encode_inputs(inputs: ValidatedInputs, config: FitConfig, require_future: bool = True) -> EncodedData:
    return pipeline.encode_inputs(inputs, config, require_future)


@io_task("fingerprint")
def run_info(train: Path, stores: Path, config: FitConfig, seed: int) -> dict:
    return pipeline.run_info(train, stores, config, seed)


@compute_task("fit")
def fit_history(
    encoded: EncodedData, config: FitConfig, key: jax.Array, forecast_stores: Any, info: dict
) -> tuple[state.FittedModel, pipeline.FitReport]:
    on_progress = faults.on_call(faults.FIT, log_progress)
    return pipeline.fit_history(encoded, config, key, forecast_stores, on_progress=on_progress, info=info)


@compute_task("cold-start fit")
def cold_start(
    fitted: state.FittedModel, inputs: ValidatedInputs, store_ids: tuple[int, ...], config: FitConfig, key: jax.Array
) -> tuple[state.FittedModel, FitResult | None, Any]:
    return pipeline.cold_start(fitted, inputs, store_ids, config, key)


@compute_task("backtest")
def run_backtest(
    inputs: ValidatedInputs, fit: FitConfig, forecast: ForecastConfig, key: jax.Array, horizon_days: int
) -> backtest.BacktestResult:
    return backtest.run_backtest(inputs.train, inputs.stores, fit, forecast, key, horizon_days)


@compute_task("backtests")
def run_backtests(inputs: ValidatedInputs, config: BacktestRunConfig, key: jax.Array) -> backtest.BacktestSuite:
    return backtest.run_backtests(
        inputs.train, inputs.stores, config.fit, config.forecast, key, config.origins, config.horizon_days, config.baselines
    )


@compute_task("cold-start curve")
def run_cold_start_curve(inputs: ValidatedInputs, config: BacktestRunConfig, key: jax.Array) -> ColdStartCurve:
    return cold_start_curve(
        inputs.train,
        inputs.stores,
        config.fit,
        config.forecast,
        key,
        config.cold_start_stores,
        config.cold_start_days,
        config.horizon_days,
        config.baselines,
        config.seed,
    )


@compute_task("track the cold-start curve")
def track_cold_start_curve(tracker: Tracker, curve: ColdStartCurve) -> None:
    recording.record_cold_start_curve(tracker, curve)


@io_task("write the scores")
def write_scores(suite: backtest.BacktestSuite, curve: ColdStartCurve | None, out_dir: Path) -> Path:
    pipeline.write_parquet_atomic(suite.rows, out_dir / "backtest_rows.parquet")
    if curve is not None:
        pipeline.write_parquet_atomic(curve.rows, out_dir / "cold_start_rows.parquet")
    text = report.methods_table(suite.overall) + (report.cold_start_table(curve) if curve is not None else "")
    pipeline.write_text_atomic(text, out_dir / "metrics.md")
    return out_dir


@compute_task("forecast")
def forecast(
    fitted: state.FittedModel, panel: EncodedPanel, future: pl.DataFrame, config: ForecastConfig, key: jax.Array
) -> pl.DataFrame:
    return pipeline.forecast_frame(fitted, panel, future, config, key)


@compute_task("forecast the calendar")
def forecast_calendar(
    fitted: state.FittedModel, stores: pl.DataFrame, future: pl.DataFrame, config: ForecastConfig, key: jax.Array
) -> pl.DataFrame:
    return pipeline.forecast_calendar(fitted, stores, future, config, key)


@io_task("save the fitted model")
def save_state(fitted: state.FittedModel, directory: Path) -> Path:
    return state.save(fitted, directory)


@io_task("export")
def export(frame: pl.DataFrame, out: Path) -> Path:
    def write(tmp: Path) -> None:
        frame.write_parquet(tmp)
        faults.reached(faults.EXPORT)  # written under the temporary name, not yet in place

    return atomic.write_file(out, write)


@compute_task("publish the summary")
def publish_summary(key: str, markdown: str, description: str) -> None:
    create_markdown_artifact(markdown=markdown, key=key, description=description)


# --- MLflow ----------------------------------------------------------------------


@compute_task("track the config")
def track_config(tracker: Tracker, config: BaseModel, tags: dict[str, str]) -> None:
    recording.record_config(tracker, config, tags)


@compute_task("track the fit")
def track_fit(
    tracker: Tracker,
    report: pipeline.FitReport,
    fitted: state.FittedModel,
    history: EncodedPanel,
    train: pl.DataFrame,
    forecast_rows: pl.DataFrame | None,
    plot_stores: int,
) -> None:
    recording.record_fit(tracker, report)
    recording.record_figures(tracker, fitted, history, train, forecast_rows, report.global_fit.losses, plot_stores)


@compute_task("track the local fit")
def track_local_fit(tracker: Tracker, fit: FitResult, n_stores: int) -> None:
    recording.record_local_fit(tracker, fit, n_stores)


@compute_task("track the backtest")
def track_backtest(tracker: Tracker, result: backtest.BacktestResult) -> None:
    recording.record_backtest(tracker, result)


@compute_task("track the backtests")
def track_backtests(tracker: Tracker, suite: backtest.BacktestSuite) -> None:
    recording.record_backtest_suite(tracker, suite)


@compute_task("track the files")
def track_files(tracker: Tracker, forecast_path: Path | None, fitted_dir: Path | None) -> None:
    recording.record_files(tracker, forecast_path, None)
    faults.reached(faults.TRACK)  # the run has part of its artifacts
    recording.record_files(tracker, None, fitted_dir)


@compute_task("register the model")
def register_model(
    tracker: Tracker,
    config: TrackingConfig,
    gates: ChampionGates | None,
    fitted_dir: Path,
    stores_path: Path,
    scores: dict[str, float] | None,
) -> recording.Registration:
    return recording.register(tracker, config, gates, fitted_dir, stores_path, scores)


@io_task("load the fitted model")
def load_model(source: ModelSource) -> state.FittedModel:
    return registry.load_fitted(source, tracking_uri())
