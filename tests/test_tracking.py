"""tasks.track.tracking: MLflow runs on a local SQLite backend, batched metrics, run status."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from tasks.config import FitConfig, RunConfig
from tasks.model.inference import FitResult
from tasks.pipeline import FitReport
from tasks.track import tracking


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite database for the module: creating one runs MLflow's migrations (seconds)."""
    home = tmp_path_factory.mktemp("bhm_home")
    with pytest.MonkeyPatch.context() as patch:  # never a tracking server named by the environment
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        return tracking.tracking_uri(home)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("BHM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def run_config(tmp_path: Path) -> RunConfig:
    return RunConfig(
        train=tmp_path / "train.csv",
        stores=tmp_path / "store.csv",
        future=tmp_path / "test.csv",
        out=tmp_path / "forecast.parquet",
        seed=3,
        fit=FitConfig(max_steps=2000, subsample_size=16),
    )


def test_tracking_uri_defaults_to_sqlite_under_bhm_home(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert tracking.tracking_uri() == f"sqlite:///{env.resolve() / 'mlflow.db'}"
    assert env.is_dir()
    assert tracking.artifact_location("Nightly Forecast") == (env.resolve() / "mlartifacts" / "nightly-forecast").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert tracking.tracking_uri() == "http://mlflow.internal:5000"


def test_tracking_uri_default_home_is_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("BHM_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve() / '.bhm' / 'mlflow.db'}"


def test_flatten_config_joins_nested_keys(tmp_path: Path) -> None:
    flat = tracking.flatten_config(run_config(tmp_path))
    assert flat["seed"] == "3"
    assert flat["fit.max_steps"] == "2000"
    assert flat["fit.subsample_size"] == "16"
    assert flat["state_dir"] == "None"
    assert flat["out"] == str(tmp_path / "forecast.parquet")
    assert flat["forecast.quantiles"].startswith("[0.05")
    assert all(isinstance(v, str) for v in flat.values())
    assert not any(isinstance(v, dict) for v in flat.values())


def test_run_logs_config_trace_figure_and_finishes(uri: str, tmp_path: Path) -> None:
    config = run_config(tmp_path)
    losses = 10.0 + np.exp(-np.arange(2500) / 300.0)
    with tracking.tracked_run("test-run", "nightly", {"flow": "main"}, uri=uri) as (client, run_id):
        logged = tracking.log_config(client, run_id, config)
        calls: list[int] = []
        log_batch = client.log_batch

        def counting(*args, **kwargs):
            calls.append(len(kwargs.get("metrics", ())))
            return log_batch(*args, **kwargs)

        client.log_batch = counting  # type: ignore[method-assign]
        n_calls = tracking.log_loss_trace(client, run_id, "elbo_global", losses)
        client.log_batch = log_batch  # type: ignore[method-assign]
        fig = Figure()
        fig.add_subplot().plot(losses)
        artifact = tracking.log_figure(client, run_id, fig, "elbo_global")
        tracking.log_metrics(client, run_id, {"rmspe": 0.15, "coverage_90": 0.91})

    assert n_calls == 3 and calls == [1000, 1000, 500]
    reader = MlflowClient(tracking_uri=uri)
    run = reader.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "nightly" and run.data.tags["flow"] == "main"
    assert run.data.params == logged == tracking.flatten_config(config)
    history = reader.get_metric_history(run_id, "elbo_global")
    assert len(history) == 2500
    history.sort(key=lambda m: m.step)
    assert [m.step for m in history] == list(range(1, 2501))
    np.testing.assert_allclose([m.value for m in history], losses)
    assert run.data.metrics["rmspe"] == pytest.approx(0.15)
    assert artifact == "plots/elbo_global.png"
    assert [f.path for f in reader.list_artifacts(run_id, "plots")] == [artifact]
    experiment = reader.get_experiment(run.info.experiment_id)
    assert experiment.artifact_location.startswith("file://") and experiment.artifact_location.endswith("mlartifacts/test-run")


def test_step_offset_continues_a_trace(uri: str) -> None:
    with tracking.tracked_run("test-offset", "resume", {}, uri=uri) as (client, run_id):
        tracking.log_loss_trace(client, run_id, "elbo", np.array([3.0, 2.0]))
        tracking.log_loss_trace(client, run_id, "elbo", np.array([1.5]), step_offset=2)
    steps = sorted((m.step, m.value) for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, "elbo"))
    assert steps == [(1, 3.0), (2, 2.0), (3, 1.5)]


def test_failing_block_leaves_run_failed(uri: str) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.tracked_run("test-failure", "broken", {"flow": "main"}, uri=uri) as (_, run_id):
            raise RuntimeError("boom")
    assert MlflowClient(tracking_uri=uri).get_run(run_id).info.status == "FAILED"
    # the experiment exists now: a second run reuses it
    with tracking.tracked_run("test-failure", "again", {}, uri=uri) as (client, second):
        pass
    assert client.get_run(second).info.experiment_id == client.get_run(run_id).info.experiment_id


def _fit(losses: np.ndarray, converged: bool) -> FitResult:
    return FitResult(params={}, losses=losses, n_steps=len(losses), converged=converged, compile_seconds=1.5, run_seconds=4.0)


def test_log_fit_report_logs_times_steps_convergence_and_traces(uri: str) -> None:
    report = FitReport(
        global_fit=_fit(np.linspace(9.0, 8.0, 300), True),
        local_fit=_fit(np.linspace(7.0, 6.0, 120), False),
        n_global_stores=8,
        n_local_stores=1,
        n_prior_only_stores=0,
        seconds=6.5,
    )
    with tracking.tracked_run("test-fit", "fit", {}, uri=uri) as (client, run_id):
        tracking.log_fit_report(client, run_id, report)
    reader = MlflowClient(tracking_uri=uri)
    metrics = reader.get_run(run_id).data.metrics
    assert metrics["fit_seconds"] == 6.5 and metrics["global_steps"] == 300 and metrics["local_steps"] == 120
    assert metrics["global_converged"] == 1.0 and metrics["local_converged"] == 0.0
    assert metrics["global_final_loss"] == pytest.approx(np.linspace(9.0, 8.0, 300)[-100:].mean())
    assert len(reader.get_metric_history(run_id, "elbo_global")) == 300
    assert len(reader.get_metric_history(run_id, "elbo_local")) == 120
