"""The panel backtest flow: for each origin, fit on the history before it, forecast the horizon after it,
and score the model and the baselines on the same rows at the series level and every aggregate level;
one MLflow run with the scores and, for a spec with a price, the model's price elasticities."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from prefect import flow

from flows import engines
from flows.runtime import prefect_tags
from tasks import panel_stages
from tasks.config import PanelBacktestConfig
from tasks.data.spec import PanelSpec, load_spec
from tasks.evaluate.panel_backtest import PanelBacktest, default_horizon, default_origins, summary_table
from tasks.ops.atomic import temp_path
from tasks.pipeline import write_parquet_atomic, write_text_atomic
from tasks.stages import publish_summary
from tasks.track import panel_recording
from tasks.track.recording import open_run, record_config

SUMMARY_ARTIFACT_KEY = "panel-backtest-summary"


@dataclass(frozen=True)
class PanelBacktestResult:
    backtests: tuple[PanelBacktest, ...]
    scores: pl.DataFrame
    out_dir: Path | None
    mlflow_run: str | None


@flow(name="panel-backtest", flow_run_name="panel-backtest", validate_parameters=True)
def panel_backtest(config: PanelBacktestConfig) -> PanelBacktestResult:
    spec = load_spec(config.spec)
    if not isinstance(spec, PanelSpec):
        raise ValueError(f"{config.spec}: layout {spec.layout!r} is backtested by the backtest flow, not the panel backtest")
    tables = panel_stages.read_tables(spec, config.data, None)
    horizon = config.horizon or default_horizon(spec)
    origins = list(config.origins) or default_origins(tables, horizon, config.n_origins)
    with open_run(config.tracking, f"panel backtest {spec.name}", {**prefect_tags("panel-backtest"), "dataset": spec.name}) as tracker:
        backtests = engines.backtest(tables, origins, horizon, config, _workdir(config))
        scores = pl.concat([b.scores for b in backtests], how="vertical")
        table = summary_table(scores)
        if config.out_dir is not None:
            write_parquet_atomic(scores, config.out_dir / "panel_scores.parquet")
            write_text_atomic(table + "\n", config.out_dir / "panel_scores.md")
        if tracker is not None:
            record_config(tracker, config)
            panel_recording.record_panel_scores(tracker, scores)
        publish_summary(SUMMARY_ARTIFACT_KEY, f"# Panel backtest: {spec.name}\n\n{table}\n", f"panel backtest of {spec.name}")
    return PanelBacktestResult(backtests, scores, config.out_dir, tracker.link if tracker else None)


def _workdir(config: PanelBacktestConfig) -> Path:
    """Where a fan-out's origins write their scores: a new temporary name inside the output folder (a remote
    cluster's workers must see it), else in the system's temporary folder (a LocalCluster's workers share it)."""
    return temp_path(Path(config.out_dir or tempfile.gettempdir()) / "bhm-backtest-origins")
