"""What a flow run records in MLflow: config, fit, backtest, plots, files, the registered model.

Composes the isolated helpers of ``tasks.track.tracking`` (runs, metrics,
artifacts), ``tasks.track.registry`` (model versions, aliases) and ``tasks.track.plots``
(figures). No Prefect here: the flows pass in the ids they want as tags.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from tasks import names as n
from tasks.config import ChampionGates, TrackingConfig
from tasks.data.encode import EncodedPanel
from tasks.evaluate import plots as evaluation_plots
from tasks.evaluate.backtest import BacktestResult, BacktestSuite
from tasks.evaluate.coldstart_curve import ColdStartCurve
from tasks.forecast.draws import select_store_params
from tasks.model.inference import FitResult, store_coefficients
from tasks.model.state import FittedModel
from tasks.ops import faults
from tasks.pipeline import FitReport
from tasks.track import plots, registry, tracking
from tasks.track.report import methods_table

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Tracker:
    """An open MLflow run: the client, its ids, and where it lives."""

    client: MlflowClient
    run_id: str
    experiment_id: str
    uri: str

    @property
    def link(self) -> str:
        """A browser link to the run on a tracking server; for a local database, how to open it."""
        uri = tracking.mask_credentials(self.uri)
        if uri.startswith(("http://", "https://")):
            return f"{uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
        return f"run {self.run_id} (browse with: mlflow ui --backend-store-uri {uri})"


@dataclass(frozen=True)
class Registration:
    """A registered model version and whether the champion alias moved to it (and why not)."""

    model: str
    version: str
    alias: str
    alias_moved: bool
    reasons: tuple[str, ...]

    def describe(self) -> str:
        text = f"{self.model} version {self.version}"
        if self.alias_moved:
            return f"{text}, now @{self.alias}"
        return f"{text}; @{self.alias} not moved: {'; '.join(self.reasons)}"


def git_commit() -> str:
    """The commit of the checkout the code runs from (the package's folder, then the working directory)."""
    for folder in (PACKAGE_DIR, Path.cwd()):
        try:
            out = subprocess.run(
                ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
            )
        except (OSError, subprocess.SubprocessError):
            continue
        return out.stdout.strip()
    return "unknown"


@contextmanager
def open_run(config: TrackingConfig, run_name: str, tags: dict[str, str]) -> Iterator[Tracker | None]:
    """The flow's MLflow run (None when tracking is off); FINISHED when the block completes, FAILED when it raises."""
    if not config.enabled:
        yield None
        return
    uri = tracking.tracking_uri()
    with tracking.tracked_run(config.experiment, run_name, {"git_commit": git_commit(), **tags}, uri) as (client, run_id):
        tracker = Tracker(client, run_id, client.get_run(run_id).info.experiment_id, uri)
        log.info("MLflow: %s", tracker.link)
        yield tracker


def record_config(tracker: Tracker, config: BaseModel, extra_tags: dict[str, str] | None = None) -> None:
    tracking.log_config(tracker.client, tracker.run_id, config)
    for key, value in (extra_tags or {}).items():
        tracker.client.set_tag(tracker.run_id, key, tracking.mask_credentials(str(value)))


def record_fit(tracker: Tracker, report: FitReport) -> dict[str, float]:
    """Fit times, steps, final ELBO and the ELBO traces per step (batched)."""
    return tracking.log_fit_report(tracker.client, tracker.run_id, report)


def record_local_fit(tracker: Tracker, fit: FitResult, n_stores: int) -> None:
    tracking.log_metrics(
        tracker.client,
        tracker.run_id,
        {"local_steps": fit.n_steps, "local_run_seconds": fit.run_seconds, "n_local_stores": n_stores},
    )
    tracking.log_loss_trace(tracker.client, tracker.run_id, "elbo_local", fit.losses)


def _prefixed(prefix: str, scores: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{name}": value for name, value in scores.items()}


def record_backtest(tracker: Tracker, result: BacktestResult) -> None:
    """Backtest scores as ``backtest_*`` metrics and the scored rows as a Parquet artifact."""
    tracking.log_metrics(tracker.client, tracker.run_id, _prefixed("backtest", result.metrics))
    tracker.client.set_tag(tracker.run_id, "backtest_origin", result.origin.isoformat())
    tracking.log_frame(tracker.client, tracker.run_id, result.scored, "backtest_rows.parquet", "backtest")


def _plot_stores(forecast: pl.DataFrame, count: int) -> list[int]:
    """``count`` stores spread over the forecast's store ids (deterministic, so that runs compare)."""
    stores = np.sort(forecast[n.STORE].unique().to_numpy())
    if not count or not stores.size:
        return []
    return [int(s) for s in stores[np.linspace(0, stores.size - 1, min(count, stores.size)).round().astype(int)]]


def record_figures(
    tracker: Tracker,
    fitted: FittedModel,
    history: EncodedPanel,
    train: pl.DataFrame,
    forecast: pl.DataFrame | None,
    losses: np.ndarray,
    plot_stores: int,
) -> list[str]:
    """The ELBO curve, the forecast of a few stores over their recent sales, and the spread of store effects."""
    figures = {"elbo": plots.elbo_curve(losses, "global fit")}
    if forecast is not None:
        stores = _plot_stores(forecast, plot_stores)
        if stores:
            figures["store_forecasts"] = plots.store_forecasts(train, forecast, stores)
    in_history = np.flatnonzero(np.isin(fitted.store_ids, history.stores))
    if in_history.size:
        params = select_store_params(fitted.params, in_history)
        order = history.store_positions(fitted.store_ids[in_history])
        coef = store_coefficients(params, history.store_z[order])
        names = fitted.structure.pooled_names
        figures["weekday_effects"] = plots.weekday_effects(coef, names)
        figures["promo_effects"] = plots.promo_effects(coef, names)
    return [tracking.log_figure(tracker.client, tracker.run_id, fig, name) for name, fig in figures.items()]


def record_files(tracker: Tracker, forecast_path: Path | None, fitted_dir: Path | None) -> None:
    """The forecast file, the fitted-model folder and its encoding spec."""
    if forecast_path is not None:
        tracking.log_artifact(tracker.client, tracker.run_id, forecast_path, "forecast")
    if fitted_dir is not None:
        tracking.log_artifact(tracker.client, tracker.run_id, fitted_dir, "fitted_model")
        tracker.client.log_text(tracker.run_id, fitted_dir.joinpath("model.json").read_text(), "encoding/model.json")


def register(
    tracker: Tracker,
    config: TrackingConfig,
    gates: ChampionGates | None,
    fitted_dir: Path,
    stores_path: Path,
    backtest_scores: dict[str, float] | None,
) -> Registration:
    """Log the model (models-from-code), register a version, and move the alias if the backtest passes the gates."""
    registry.log_forecast_model(tracker.client, tracker.run_id, fitted_dir, stores_path)
    version = registry.register_version(tracker.client, config.registered_model, tracker.run_id).version
    alias = (gates or ChampionGates()).alias
    if gates is None:
        reasons: tuple[str, ...] = ("this flow does not backtest",)
    elif backtest_scores is None:
        reasons = ("no backtest ran (backtest_days=0)",)
    else:
        reasons = tuple(gates.failures(backtest_scores))
    faults.reached(faults.REGISTER)  # a version registered, the alias not yet moved
    if not reasons and not registry.version_is_complete(tracker.client, config.registered_model, version):
        reasons = (f"version {version} is not READY with its model files",)
    moved = not reasons
    if moved:
        registry.set_alias(tracker.client, config.registered_model, alias, version)
        log.info("%s version %s is now @%s", config.registered_model, version, alias)
    else:
        log.warning("%s version %s registered; @%s not moved: %s", config.registered_model, version, alias, "; ".join(reasons))
    tracker.client.set_tag(tracker.run_id, "registered_version", version)
    tracker.client.set_tag(tracker.run_id, f"alias_{alias}_moved", str(moved).lower())
    return Registration(config.registered_model, version, alias, moved, reasons)


def record_backtest_suite(tracker: Tracker, suite: BacktestSuite) -> None:
    """Every method's overall scores as ``<method>_<metric>`` (each origin's at its step), the origins,
    the per-row scores as Parquet, a metrics table and the evaluation plots."""
    client, run_id = tracker.client, tracker.run_id
    for method, scores in suite.overall.items():
        tracking.log_metrics(client, run_id, _prefixed(method, scores))
    for step, result in enumerate(suite.results):
        for method, scores in result.methods.items():
            tracking.log_metrics(client, run_id, _prefixed(f"origin_{method}", scores), step=step)
    client.set_tag(run_id, "backtest_origins", ",".join(r.origin.isoformat() for r in suite.results))
    tracking.log_frame(client, run_id, suite.rows, "backtest_rows.parquet", "backtest")
    client.log_text(run_id, methods_table(suite.overall), "backtest/metrics.md")
    figures = {
        "coverage_vs_nominal": evaluation_plots.coverage_vs_nominal(suite.overall),
        "pit_histograms": evaluation_plots.pit_histograms(suite.rows),
        "store_errors": evaluation_plots.store_errors(suite.rows),
    }
    for name, fig in figures.items():
        tracking.log_figure(client, run_id, fig, name)


def record_cold_start_curve(tracker: Tracker, curve: ColdStartCurve) -> None:
    """Each method's scores at N days of history as ``cold_<method>_<metric>`` at step N, the held-out
    stores' on their whole history as ``cold_full_history_<metric>``, the established stores' as
    ``cold_established_<metric>``, the scored rows, and the curve's plot."""
    client, run_id = tracker.client, tracker.run_id
    tracking.log_metrics(client, run_id, _prefixed("cold_established", curve.established))
    tracking.log_metrics(client, run_id, _prefixed("cold_full_history", curve.full_history))
    for point in curve.points:
        scores = {k: v for k, v in point.items() if k not in ("method", "days")}
        tracking.log_metrics(
            client, run_id, _prefixed(f"cold_{point['method']}", scores), step=int(point["days"])
        )
    client.set_tag(run_id, "cold_start_stores", ",".join(map(str, curve.held_out)))
    tracking.log_frame(client, run_id, curve.rows, "cold_start_rows.parquet", "backtest")
    tracking.log_figure(
        client,
        run_id,
        evaluation_plots.cold_start_curve(list(curve.points), curve.established, curve.full_history),
        "cold_start_curve",
    )
