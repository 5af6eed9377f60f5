"""The train flow: global fit (and local fits of short-history stores) on the history, saved, tracked and
registered as a new model version. No forecast and no backtest, so the champion alias does not move."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow

from flows.runtime import prefect_tags, rename_flow_run
from tasks import stages
from tasks.config import TrainConfig
from tasks.pipeline import FitReport, RunKeys
from tasks.track import report
from tasks.track.recording import Registration, open_run

SUMMARY_ARTIFACT_KEY = "train-summary"


@dataclass(frozen=True)
class TrainResult:
    fitted_dir: Path
    fit: FitReport
    registration: Registration | None
    mlflow_run: str | None


@flow(name="train", flow_run_name="train", validate_parameters=True)
def train(config: TrainConfig) -> TrainResult:
    keys = RunKeys.from_seed(config.seed)
    inputs, summary = stages.read_inputs(config.train, config.stores, None)
    rename_flow_run(f"train {summary.last_date} {summary.n_stores_with_history} stores")
    encoded = stages.encode_inputs(inputs, config.fit, require_future=False)
    info = stages.run_info(config.train, config.stores, config.fit, config.seed)

    tags = {**prefect_tags("train"), "data_fingerprint": info["data_fingerprint"], "data_last_date": str(summary.last_date)}
    with open_run(config.tracking, f"train {summary.last_date}", tags) as tracker:
        fitted, fit_report = stages.fit_history(encoded, config.fit, keys.fit, None, info)
        fitted_dir = stages.save_state(fitted, config.state_dir)
        registration = None
        if tracker is not None:
            stages.track_config(tracker, config, {"model_version": fitted.model_version})
            stages.track_fit(tracker, fit_report, fitted, encoded.history, inputs.train, None, 0)
            stages.track_files(tracker, None, fitted_dir)
            registration = stages.register_model(tracker, config.tracking, None, fitted_dir, config.stores, None)
        stages.publish_summary(
            SUMMARY_ARTIFACT_KEY,
            report.run_markdown(
                f"Training, data to {summary.last_date}",
                summary=summary,
                fits={"global": (fit_report.global_fit, fit_report.n_global_stores)},
                outputs={"fitted model": fitted_dir},
                registration=registration.describe() if registration else None,
                mlflow_link=tracker.link if tracker else None,
            ),
            f"training: {fit_report.n_global_stores:,} stores",
        )
    return TrainResult(fitted_dir, fit_report, registration, tracker.link if tracker else None)
