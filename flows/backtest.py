"""The backtest flow: for each origin, fit on the history before it, forecast the horizon after it, and score
the model and the baselines on the same rows; every method's scores, plots and per-row scores in one MLflow run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow

from flows.runtime import prefect_tags, rename_flow_run
from tasks import stages
from tasks.config import BacktestRunConfig
from tasks.evaluate.backtest import BacktestSuite
from tasks.evaluate.coldstart_curve import ColdStartCurve
from tasks.pipeline import RunKeys
from tasks.track import report
from tasks.track.recording import open_run

SUMMARY_ARTIFACT_KEY = "backtest-summary"


@dataclass(frozen=True)
class BacktestFlowResult:
    suite: BacktestSuite
    curve: ColdStartCurve | None
    out_dir: Path | None
    mlflow_run: str | None


@flow(name="backtest", flow_run_name="backtest", validate_parameters=True)
def backtest(config: BacktestRunConfig) -> BacktestFlowResult:
    keys = RunKeys.from_seed(config.seed)
    inputs, summary = stages.read_inputs(config.train, config.stores, None)
    rename_flow_run(f"backtest {summary.last_date} {len(config.origins) or 1} origins {config.horizon_days} days")
    with open_run(config.tracking, f"backtest {summary.last_date}", prefect_tags("backtest")) as tracker:
        suite = stages.run_backtests(inputs, config, keys.backtest)
        curve = stages.run_cold_start_curve(inputs, config, keys.fit) if config.cold_start_stores else None
        out_dir = stages.write_scores(suite, curve, config.out_dir) if config.out_dir is not None else None
        if tracker is not None:
            stages.track_config(tracker, config, {})
            stages.track_backtests(tracker, suite)
            if curve is not None:
                stages.track_cold_start_curve(tracker, curve)
        origins = ", ".join(str(r.origin) for r in suite.results)
        stages.publish_summary(
            SUMMARY_ARTIFACT_KEY,
            f"# Backtest from {origins}, {config.horizon_days} days\n\n"
            + report.methods_table(suite.overall)
            + (report.cold_start_table(curve) if curve is not None else "")
            + (f"\nMLflow: {tracker.link}\n" if tracker else ""),
            f"backtest: {len(suite.results)} origins",
        )
    return BacktestFlowResult(suite, curve, out_dir, tracker.link if tracker else None)
