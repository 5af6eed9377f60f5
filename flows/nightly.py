"""The nightly flow: ingest -> validate -> encode -> global fit -> local fits -> forecast -> export ->
backtest -> track (MLflow run, registered model version, champion alias when the backtest passes the gates)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from prefect import flow

from flows.runtime import prefect_tags, rename_flow_run
from tasks import stages
from tasks.config import NightlyConfig
from tasks.ops import lock
from tasks.pipeline import RunKeys, RunResult
from tasks.track import report
from tasks.track.recording import Registration, open_run

SUMMARY_ARTIFACT_KEY = "nightly-summary"


@dataclass(frozen=True)
class NightlyResult:
    run: RunResult
    backtest: dict[str, float] | None
    registration: Registration | None
    mlflow_run: str | None


@flow(name="nightly", flow_run_name="nightly", validate_parameters=True)
def nightly(config: NightlyConfig) -> NightlyResult:
    # One run at a time on these outputs: a second one waits (BHM_LOCK_WAIT_SECONDS) or is refused.
    purpose = f"the nightly flow (flow run {prefect_tags('nightly')['prefect.flow_run_id'] or 'none'})"
    with lock.outputs_held([config.out, config.fitted_dir], purpose):
        return _nightly(config)


def _nightly(config: NightlyConfig) -> NightlyResult:
    keys = RunKeys.from_seed(config.seed)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    inputs, summary = stages.read_inputs(config.train, config.stores, config.future)
    rename_flow_run(f"nightly {summary.last_date} {summary.n_stores_with_history} stores")
    encoded = stages.encode_inputs(inputs, config.fit)
    info = stages.run_info(config.train, config.stores, config.fit, config.seed)
    timings["read_encode"] = time.perf_counter() - started

    tags = {**prefect_tags("nightly"), "data_fingerprint": info["data_fingerprint"], "data_last_date": str(summary.last_date)}
    with open_run(config.tracking, f"nightly {summary.last_date}", tags) as tracker:
        fitted, fit_report = stages.fit_history(encoded, config.fit, keys.fit, encoded.future.stores, info)
        timings["fit"] = fit_report.seconds

        t = time.perf_counter()
        frame = stages.forecast(fitted, encoded.future, inputs.future, config.forecast, keys.forecast)
        # The forecast and the model folder are published together, each replaced whole (tasks.ops.atomic).
        out = stages.export(frame, config.out)
        fitted_dir = stages.save_state(fitted, config.fitted_dir)
        timings["forecast"] = time.perf_counter() - t

        scores = None
        if config.backtest_days:
            t = time.perf_counter()
            backtest = stages.run_backtest(inputs, config.fit, config.forecast, keys.backtest, config.backtest_days)
            scores = backtest.metrics
            timings["backtest"] = time.perf_counter() - t

        registration = None
        if tracker is not None:
            t = time.perf_counter()
            stages.track_config(tracker, config, {"model_version": fitted.model_version})
            stages.track_fit(tracker, fit_report, fitted, encoded.history, inputs.train, frame, config.tracking.plot_stores)
            if config.backtest_days:
                stages.track_backtest(tracker, backtest)
            stages.track_files(tracker, out, fitted_dir)
            registration = stages.register_model(tracker, config.tracking, config.champion, fitted_dir, config.stores, scores)
            timings["track"] = time.perf_counter() - t

        result = RunResult(out, fitted_dir, summary, fit_report, frame.height, timings)
        stages.publish_summary(
            SUMMARY_ARTIFACT_KEY,
            report.run_markdown(
                f"Nightly forecast, data to {summary.last_date}",
                summary=summary,
                fits={"global": (fit_report.global_fit, fit_report.n_global_stores)}
                | ({"local": (fit_report.local_fit, fit_report.n_local_stores)} if fit_report.local_fit else {}),
                backtest=scores,
                backtest_origin=str(backtest.origin) if scores else None,
                outputs={"forecast": out, "fitted model": fitted_dir},
                registration=registration.describe() if registration else None,
                mlflow_link=tracker.link if tracker else None,
                seconds=timings,
            ),
            f"nightly forecast: {frame.height:,} rows",
        )
    return NightlyResult(result, scores, registration, tracker.link if tracker else None)

