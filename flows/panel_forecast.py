"""The panel forecast flow: a saved panel model forecasts a future table (every series and aggregate) from
the end of the history it was fitted on. The future table, the dimension tables and the calendar are read
and validated as in a run; the sales history is not read, since the model holds all the forecast needs of it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow

from flows import engines
from flows.panel import panel_spec
from flows.runtime import prefect_tags, rename_flow_run
from tasks import panel_stages
from tasks.config import PanelForecastConfig
from tasks.ops.atomic import temp_path
from tasks.pipeline import RunKeys
from tasks.track import panel_recording
from tasks.track.recording import open_run, record_config


@dataclass(frozen=True)
class PanelForecastResult:
    forecast_path: Path
    model_version: str
    n_forecast_rows: int
    n_aggregate_rows: int
    mlflow_run: str | None


@flow(name="panel-forecast", flow_run_name="panel-forecast", validate_parameters=True)
def panel_forecast(config: PanelForecastConfig) -> PanelForecastResult:
    spec = panel_spec(config.spec)
    fitted = panel_stages.load_model(config.model_dir, spec)
    keys = RunKeys.from_seed(config.seed)
    tables, encoded = panel_stages.read_and_encode(spec, config.data, config.future, fitted)
    rename_flow_run(f"panel-forecast {spec.name} {tables.future['period'].min()}")
    tags = {**prefect_tags("panel-forecast"), "dataset": spec.name, "model_version": fitted.model_version}
    with open_run(config.tracking, f"panel-forecast {spec.name}", tags) as tracker:
        frame, _ = engines.forecast(fitted, tables, encoded, config.forecast, config.fan_out, keys.forecast, temp_path(config.out))
        out = panel_stages.export(frame, config.out)
        if tracker is not None:
            record_config(tracker, config, {"model_version": fitted.model_version})
            panel_recording.record_panel_files(tracker, out, None)
    n_series_rows = int((frame["level"] == "series").sum())
    return PanelForecastResult(out, fitted.model_version, n_series_rows, frame.height - n_series_rows, tracker.link if tracker else None)
