"""The forecast flow: forecast a future calendar with an already fitted model (by default the registered
champion), no refit. Stores the model does not know are forecast from the population of stores like them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow

from flows.runtime import prefect_tags, rename_flow_run
from tasks import stages
from tasks.config import ForecastRunConfig
from tasks.pipeline import RunKeys, calendar_span
from tasks.track import report
from tasks.track.recording import open_run

SUMMARY_ARTIFACT_KEY = "forecast-summary"


@dataclass(frozen=True)
class ForecastResult:
    forecast_path: Path
    n_forecast_rows: int
    model_version: str
    mlflow_run: str | None


@flow(name="forecast", flow_run_name="forecast", validate_parameters=True)
def forecast(config: ForecastRunConfig) -> ForecastResult:
    keys = RunKeys.from_seed(config.seed)
    fitted = stages.load_model(config.model)
    stores, future = stages.read_calendar(config.stores, config.future)
    first, last, n_stores = calendar_span(future)
    rename_flow_run(f"forecast {first} to {last} {n_stores} stores")
    with open_run(config.tracking, f"forecast {first} to {last}", prefect_tags("forecast")) as tracker:
        frame = stages.forecast_calendar(fitted, stores, future, config.forecast, keys.forecast)
        out = stages.export(frame, config.out)
        if tracker is not None:
            stages.track_config(tracker, config, {"model_source": config.model.describe(), "model_version": fitted.model_version})
            stages.track_files(tracker, out, None)
        stages.publish_summary(
            SUMMARY_ARTIFACT_KEY,
            report.run_markdown(
                f"Forecast {first} to {last}",
                outputs={"model used": config.model.describe(), "model version": fitted.model_version, "forecast": out},
                mlflow_link=tracker.link if tracker else None,
            ),
            f"forecast: {frame.height:,} rows",
        )
    return ForecastResult(out, frame.height, fitted.model_version, tracker.link if tracker else None)
