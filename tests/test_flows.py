"""The flows end to end at demo size on one Prefect test server: files, MLflow runs, registry, Prefect artifacts."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest
import yaml
from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.exceptions import ParameterTypeError

from flows.backtest import backtest
from flows.cold_start import cold_start
from flows.forecast import forecast
from flows.nightly import SUMMARY_ARTIFACT_KEY, nightly
from flows.train import train
from tasks import names as n
from tasks.config import (
    BASELINE_NAMES,
    BacktestRunConfig,
    ColdStartConfig,
    ForecastRunConfig,
    NightlyConfig,
    TrainConfig,
)
from tasks.data.validate import InputValidationError
from tasks.stages import VALIDATION_ARTIFACT_KEY
from tasks.track import tracking

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

REPO = Path(__file__).resolve().parents[1]
QUICK_FIT = {"max_steps": 300, "local_max_steps": 200}
NO_GATES = {"max_rmspe": None, "max_coverage_error": None}


@pytest.fixture(scope="module")
def bhm_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One BHM_HOME (MLflow database, artifacts) for the module's flows, so that later flows find the champion."""
    home = tmp_path_factory.mktemp("bhm_home")
    saved = {key: os.environ.pop(key, None) for key in ("BHM_HOME", tracking.TRACKING_URI_ENV)}
    os.environ["BHM_HOME"] = str(home)
    yield home
    os.environ.pop("BHM_HOME", None)
    for key, value in saved.items():
        if value is not None:
            os.environ[key] = value


@pytest.fixture(scope="module")
def client(bhm_home: Path) -> MlflowClient:
    return MlflowClient(tracking.tracking_uri())


@pytest.fixture(scope="module")
def nightly_run(tiny_demo_files: dict[str, Path], bhm_home: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("nightly") / "forecast.parquet"
    config = NightlyConfig(
        **tiny_demo_files, out=out, fit=QUICK_FIT, forecast={"num_draws": 100}, backtest_days=14, champion=NO_GATES
    )
    return config, nightly(config)


def _flow_run_id(client: MlflowClient, run_id: str) -> str:
    return client.get_run(run_id).data.tags["prefect.flow_run_id"]


def _artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def _run_id(link: str) -> str:
    return link.split()[1]


def test_nightly_writes_the_forecast_file(nightly_run, tiny_demo_files: dict[str, Path]) -> None:
    config, result = nightly_run
    frame = pl.read_parquet(config.out)
    future = pl.read_csv(tiny_demo_files["future"])
    assert frame.height == future.height == result.run.n_forecast_rows
    assert {n.STORE, n.DATE, n.MEAN, "q05", "q25", "q50", "q75", "q95", n.MODEL_VERSION} <= set(frame.columns)
    assert (frame["q05"] <= frame["q95"]).all()
    assert (config.fitted_dir / "model.json").is_file()


def test_nightly_records_an_mlflow_run(nightly_run, client: MlflowClient) -> None:
    config, result = nightly_run
    run = client.get_run(_run_id(result.mlflow_run))
    assert run.info.status == "FINISHED"
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert params["fit.max_steps"] == "300" and params["backtest_days"] == "14" and params["train"] == str(config.train)
    assert tags["bhm.flow"] == "nightly" and tags["prefect.deployment"] == "none" and tags["prefect.flow_run_id"]
    assert len(tags["data_fingerprint"]) == 64 and tags["git_commit"]

    history = client.get_metric_history(run.info.run_id, "elbo_global")
    assert len(history) == result.run.fit.global_fit.n_steps == metrics["global_steps"]
    assert [m.step for m in history[:3]] == [1, 2, 3]
    assert np.isclose(history[-1].value, result.run.fit.global_fit.losses[-1], rtol=1e-6)
    assert metrics["backtest_rmspe"] == pytest.approx(result.backtest["rmspe"])
    assert 0.0 <= metrics["backtest_coverage_90"] <= 1.0

    artifacts = _artifact_paths(client, run.info.run_id)
    expected = {
        "plots/elbo.png",
        "plots/store_forecasts.png",
        "plots/weekday_effects.png",
        "plots/promo_effects.png",
        "forecast/forecast.parquet",
        "fitted_model/params.npz",
        "fitted_model/model.json",
        "encoding/model.json",
        "backtest/backtest_rows.parquet",
        "model/MLmodel",
    }
    assert expected <= artifacts, expected - artifacts


def test_nightly_registers_a_version_and_moves_the_champion_alias(nightly_run, client: MlflowClient) -> None:
    _, result = nightly_run
    registration = result.registration
    assert registration.alias_moved and registration.reasons == ()
    assert client.get_model_version_by_alias("bhm-forecast", "champion").version == registration.version


def test_the_champion_forecasts_a_calendar_through_mlflow(
    nightly_run, tiny_demo_files: dict[str, Path], client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI into os.environ: let monkeypatch restore it.
    monkeypatch.setenv(tracking.TRACKING_URI_ENV, tracking.tracking_uri())
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", tracking.tracking_uri())
    mlflow.set_tracking_uri(tracking.tracking_uri())
    model = mlflow.pyfunc.load_model("models:/bhm-forecast@champion")
    calendar = pl.read_csv(tiny_demo_files["future"]).to_pandas()
    predicted = model.predict(calendar, params={"seed": 3, "num_draws": 50})
    assert len(predicted) == len(calendar)
    assert {"Store", "Date", "mean", "q05", "q95"} <= set(predicted.columns)
    assert (predicted["q05"] <= predicted["q95"]).all()


def test_nightly_publishes_a_summary_artifact(nightly_run, client: MlflowClient) -> None:
    _, result = nightly_run
    flow_run_id = _flow_run_id(client, _run_id(result.mlflow_run))
    with get_client(sync_client=True) as prefect:
        (artifact,) = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[SUMMARY_ARTIFACT_KEY]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
            )
        )
    text = artifact.data
    assert "RMSPE" in text and "train rows" in text and _run_id(result.mlflow_run) in text


def test_nightly_names_its_flow_run_after_the_data(nightly_run, client: MlflowClient) -> None:
    _, result = nightly_run
    flow_run_id = _flow_run_id(client, _run_id(result.mlflow_run))
    with get_client(sync_client=True) as prefect:
        (flow_run,) = prefect.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    assert flow_run.name == f"nightly {result.run.summary.last_date} {result.run.summary.n_stores_with_history} stores"


def test_nightly_with_bad_input_publishes_the_report_and_fails(
    tiny_demo_files: dict[str, Path], bhm_home: Path, tmp_path: Path
) -> None:
    train = pl.read_csv(tiny_demo_files["train"], infer_schema=False)
    bad = tmp_path / "train.csv"
    train.with_columns(
        pl.when(pl.int_range(pl.len()) == 4).then(pl.lit("-1")).otherwise(pl.col(n.SALES)).alias(n.SALES)
    ).write_csv(bad)
    out = tmp_path / "forecast.parquet"
    with pytest.raises(InputValidationError):
        nightly(NightlyConfig(**{**tiny_demo_files, "train": bad}, out=out, fit=QUICK_FIT))
    assert not out.exists()
    with get_client(sync_client=True) as prefect:
        (artifact, *_) = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[VALIDATION_ARTIFACT_KEY])), sort="CREATED_DESC"
        )
    rows = artifact.data if isinstance(artifact.data, list) else yaml.safe_load(artifact.data)
    assert any(row["column"] == n.SALES and row["file"] == str(bad) for row in rows)


def test_flow_parameters_are_validated_before_a_run(tiny_demo_files: dict[str, Path], tmp_path: Path) -> None:
    good = {**{k: str(v) for k, v in tiny_demo_files.items()}, "out": str(tmp_path / "f.parquet")}
    assert nightly.validate_parameters({"config": good})["config"].out == tmp_path / "f.parquet"
    with pytest.raises(ParameterTypeError):
        nightly.validate_parameters({"config": {**good, "seed": -1}})
    with pytest.raises(ParameterTypeError):
        nightly.validate_parameters({"config": {**good, "out": str(tmp_path / "f.csv")}})


def test_train_cold_start_and_forecast_flows(
    nightly_run, tiny_demo_files: dict[str, Path], tiny_demo, client: MlflowClient, tmp_path: Path
) -> None:
    trained = train(
        TrainConfig(train=tiny_demo_files["train"], stores=tiny_demo_files["stores"], state_dir=tmp_path / "m", fit=QUICK_FIT)
    )
    assert (trained.fitted_dir / "params.npz").is_file()
    assert not trained.registration.alias_moved  # no backtest: the champion stays
    assert client.get_model_version_by_alias("bhm-forecast", "champion").version == nightly_run[1].registration.version

    new_store = int(pl.read_csv(tiny_demo_files["train"]).group_by(n.STORE).len().sort("len")[n.STORE][0])
    cold = cold_start(
        ColdStartConfig(
            **tiny_demo_files, out=tmp_path / "cold.parquet", store_ids=(new_store,), fit=QUICK_FIT, forecast={"num_draws": 100}
        )
    )
    frame = pl.read_parquet(cold.forecast_path)
    assert cold.store_ids == (new_store,) and frame[n.STORE].unique().to_list() == [new_store]
    assert client.get_run(_run_id(cold.mlflow_run)).data.params["model.alias"] == "champion"

    only = forecast(
        ForecastRunConfig(
            stores=tiny_demo_files["stores"],
            future=tiny_demo_files["future"],
            out=tmp_path / "f.parquet",
            model={"path": cold.fitted_dir},
        )
    )
    assert pl.read_parquet(only.forecast_path).height == pl.read_csv(tiny_demo_files["future"]).height


def test_every_prefect_yaml_entrypoint_loads_and_its_parameters_validate(tmp_path: Path, monkeypatch) -> None:
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    names = {d["name"] for d in spec["deployments"]}
    assert {"nightly", "cold-start", "forecast"} <= names
    nightly_spec = next(d for d in spec["deployments"] if d["name"] == "nightly")
    assert nightly_spec["schedules"][0] == {"cron": "0 2 * * *", "timezone": "Europe/Berlin", "active": True}
    assert nightly_spec["concurrency_limit"] == 1
    for deployment in spec["deployments"]:
        assert deployment["enforce_parameter_schema"] is True
        monkeypatch.chdir(REPO)
        flow = load_flow_from_entrypoint(deployment["entrypoint"])
        text = yaml.safe_dump(deployment["parameters"]).replace("{{ $BHM_DATA_DIR }}", str(tmp_path))
        validated = flow.validate_parameters(yaml.safe_load(text))
        assert set(validated) == {"config"}


def test_backtest_flow_scores_every_method_and_records_them(
    tiny_demo_files: dict[str, Path], bhm_home: Path, client: MlflowClient, tmp_path: Path
) -> None:
    last = pl.read_csv(tiny_demo_files["train"], try_parse_dates=True)[n.DATE].max()
    # 99 and 106 days of history: one bucket of history_bucket_days, so both origins' fits share their programs.
    origins = (last - dt.timedelta(days=20), last - dt.timedelta(days=13))
    config = BacktestRunConfig(
        train=tiny_demo_files["train"],
        stores=tiny_demo_files["stores"],
        origins=origins,
        horizon_days=7,
        fit=QUICK_FIT,
        forecast={"num_draws": 100},
        out_dir=tmp_path / "scores",
        cold_start_stores=2,
        cold_start_days=(3, 7),
    )
    result = backtest(config)
    assert [r.origin for r in result.suite.results] == list(origins)
    assert set(result.suite.overall) == {"model", *BASELINE_NAMES}
    rows = pl.read_parquet(tmp_path / "scores" / "backtest_rows.parquet")
    curve_rows = pl.read_parquet(tmp_path / "scores" / "cold_start_rows.parquet")
    assert set(curve_rows["days"].unique().to_list()) == {None, 3, 7}
    assert set(rows["method"].unique()) == {"model", *BASELINE_NAMES} and set(rows["origin"].unique()) == set(origins)
    table = (tmp_path / "scores" / "metrics.md").read_text()
    assert "| lightgbm |" in table and "Cold start: 2 held-out stores" in table
    # Every baseline, the pooling variants included, is given the same days as the model.
    assert {(p["method"], p["days"]) for p in result.curve.points} == {(m, d) for m in ("model", *BASELINE_NAMES) for d in (3, 7)}
    assert {p["n_scored"] for p in result.curve.points} == {result.curve.full_history["n_scored"]}
    assert result.suite.overall["pooled"]["rmspe"] > result.suite.overall["model"]["rmspe"]

    run = client.get_run(_run_id(result.mlflow_run))
    metrics = run.data.metrics
    for method in ("model", *BASELINE_NAMES):
        assert metrics[f"{method}_rmspe"] == pytest.approx(result.suite.overall[method]["rmspe"])
        assert f"{method}_crps_scaled" in metrics and f"{method}_coverage_90" in metrics
    assert [m.step for m in client.get_metric_history(run.info.run_id, "origin_model_rmspe")] == [0, 1]
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "cold_model_rmspe")) == [3, 7]
    assert "cold_established_rmspe" in metrics and "cold_full_history_rmspe" in metrics
    artifacts = _artifact_paths(client, run.info.run_id)
    expected = {
        "backtest/backtest_rows.parquet",
        "backtest/cold_start_rows.parquet",
        "backtest/metrics.md",
        "plots/coverage_vs_nominal.png",
        "plots/pit_histograms.png",
        "plots/store_errors.png",
        "plots/cold_start_curve.png",
    }
    assert expected <= artifacts, expected - artifacts
