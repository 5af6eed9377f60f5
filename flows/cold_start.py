"""The cold_start flow: local fits of new stores against a fitted model's fixed globals (by default the
registered champion), then their forecasts. The model with the new stores is saved and tracked, not registered."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow

from flows.runtime import prefect_tags, rename_flow_run
from tasks import stages
from tasks.config import ColdStartConfig
from tasks.pipeline import RunKeys, calendar_for_stores
from tasks.track import report
from tasks.track.recording import open_run

SUMMARY_ARTIFACT_KEY = "cold-start-summary"


@dataclass(frozen=True)
class ColdStartResult:
    forecast_path: Path
    fitted_dir: Path
    store_ids: tuple[int, ...]
    n_forecast_rows: int
    mlflow_run: str | None


@flow(name="cold_start", flow_run_name="cold-start", validate_parameters=True)
def cold_start(config: ColdStartConfig) -> ColdStartResult:
    keys = RunKeys.from_seed(config.seed)
    fitted = stages.load_model(config.model)
    inputs, summary = stages.read_inputs(config.train, config.stores, config.future)
    with open_run(config.tracking, f"cold start {summary.last_date}", prefect_tags("cold_start")) as tracker:
        fitted, local_fit, store_ids = stages.cold_start(fitted, inputs, config.store_ids, config.fit, keys.fit)
        rename_flow_run(f"cold-start {len(store_ids)} stores to {fitted.anchor}")
        fitted_dir = stages.save_state(fitted, config.fitted_dir)
        future = calendar_for_stores(inputs.future, store_ids)
        frame = stages.forecast_calendar(fitted, inputs.stores, future, config.forecast, keys.forecast)
        out = stages.export(frame, config.out)
        if tracker is not None:
            stages.track_config(tracker, config, {"model_source": config.model.describe(), "stores": str(len(store_ids))})
            if local_fit is not None:
                stages.track_local_fit(tracker, local_fit, len(store_ids))
            stages.track_files(tracker, out, fitted_dir)
        stages.publish_summary(
            SUMMARY_ARTIFACT_KEY,
            report.run_markdown(
                f"Cold start of {len(store_ids)} stores",
                fits={"local": (local_fit, len(store_ids))} if local_fit else None,
                outputs={"model used": config.model.describe(), "forecast": out, "fitted model": fitted_dir},
                mlflow_link=tracker.link if tracker else None,
            ),
            f"cold start: {len(store_ids)} stores, {frame.height:,} forecast rows",
        )
    return ColdStartResult(out, fitted_dir, tuple(int(s) for s in store_ids), frame.height, tracker.link if tracker else None)
