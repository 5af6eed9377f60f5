"""`bhm` on a dataset spec: `bhm spec NAME`, --spec/--data on every command, the panel run end to end, and
Rossmann through its spec giving the same forecast as through its file options."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml
from mlflow import MlflowClient

import flows.nightly
import flows.panel
import flows.panel_backtest
from flows import cli
from tasks import names as n
from tasks.config import NightlyConfig, PanelBacktestConfig, PanelRunConfig
from tasks.data.panel_demo import generate_panel_demo
from tasks.data.spec import BUILTIN_SPECS, parse_spec
from tasks.model.inference import FitDivergedError


@pytest.fixture(autouse=True)
def bhm_home(cli_home: Path) -> Path:
    return cli_home


@pytest.fixture(scope="module")
def panel_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    demo = generate_panel_demo(seed=1, n_stores=4, n_departments=2, products_per_department=2, n_weeks=60, horizon=4)
    return demo.write(tmp_path_factory.mktemp("panel"))


@pytest.mark.parametrize("name", sorted(BUILTIN_SPECS))
def test_spec_prints_each_builtin_spec(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["spec", name]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["name"] == name


def test_spec_unknown_name_exits_2_naming_the_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["spec", "m6"]) == 2
    assert "walmart" in capsys.readouterr().err


def test_validate_a_panel_spec(panel_files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["validate", "--spec", str(panel_files["spec"]), "--data", str(panel_files["spec"].parent), "--future", str(panel_files["future"])]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "Input validation passed" in out and "series" in out and "future: 64 rows" in out


def test_validate_a_broken_panel_file_exits_1_with_the_report(panel_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    for role in ("sales", "stores", "products", "spec"):
        (folder / panel_files[role].name).write_bytes(panel_files[role].read_bytes())
    sales = pl.read_csv(panel_files["sales"], infer_schema=False)
    sales.with_columns(pl.when(pl.int_range(pl.len()) == 4).then(pl.lit("0")).otherwise(pl.col("price")).alias("price")).write_csv(
        folder / "sales.csv"
    )
    assert cli.main(["validate", "--spec", str(folder / "spec.yaml"), "--data", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "Input validation failed" in out and "price" in out and "sales.csv" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["validate", "--spec", "SPEC"], "--spec needs --data"),
        (["validate", "--data", "DATA"], "--data goes with --spec"),
        (["validate", "--spec", "SPEC", "--data", "DATA", "--train", "t.csv"], "--train does not go with --spec"),
        (["cold-start", "--spec", "SPEC", "--data", "DATA", "--future", "f.csv", "--out", "o.parquet"], "runs on Rossmann-layout specs only"),
        (["forecast", "--spec", "SPEC", "--data", "DATA", "--future", "f.csv", "--out", "o.parquet"], "needs --model-dir"),
        (["run", "--spec", "SPEC", "--data", "DATA"], "needs --future"),
        (["validate", "--spec", "MISSING", "--data", "DATA"], "spec file not found"),
        (["validate"], "give --train, --stores (or --spec and --data)"),
        (["backtest", "--spec", "SPEC", "--data", "DATA", "--horizon-days", "84"], "--horizon-days is for the Rossmann layout, not a panel spec ('panel_demo'); a panel spec counts periods: --horizon N"),
        (["backtest", "--spec", "SPEC", "--data", "DATA", "--cold-start-stores", "5"], "--cold-start-stores is for the Rossmann layout"),
        (["backtest", "--train", "t.csv", "--stores", "s.csv", "--horizon", "12"], "--horizon goes with a panel spec"),
        (["run", "--engine", "dask"], "--engine fan out a panel spec's forecast"),
        (["run", "--block-size", "64"], "--block-size: series blocks are for a panel spec (--spec), not the Rossmann layout"),
        (["forecast", "--dask-address", "tcp://h:8786", "--future", "f.csv", "--out", "o.parquet"], "--dask-address fan out"),
        (["run", "--spec", "SPEC", "--data", "DATA", "--future", "F", "--out", "o.parquet", "--dask-workers", "0"], "dask_workers"),
        (["backtest", "--train", "t.csv", "--stores", "s.csv", "--engine", "dask"], "--engine fan out a panel spec's forecast or backtest"),
        (["backtest", "--spec", "SPEC", "--data", "DATA", "--dask-workers", "0"], "dask_workers"),
        (["backtest", "--spec", "SPEC", "--data", "DATA", "--series-per-partition", "9"], "unrecognized arguments: --series-per-partition"),
    ],
)
def test_spec_usage_errors_exit_2(argv: list[str], message: str, panel_files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    replace = {"SPEC": str(panel_files["spec"]), "DATA": str(panel_files["spec"].parent), "MISSING": "nope.yaml", "F": str(panel_files["future"])}
    assert cli.main([replace.get(a, a) for a in argv]) == 2
    assert message in capsys.readouterr().err


def test_rossmann_spec_fills_the_file_options(tiny_demo_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[NightlyConfig] = []

    def fake_run(config: NightlyConfig) -> None:
        seen.append(config)
        raise FitDivergedError("stopped by the test")

    monkeypatch.setattr(flows.nightly, "nightly", fake_run)
    spec = tmp_path / "r.yaml"
    spec.write_text(BUILTIN_SPECS["rossmann"])
    data = tiny_demo_files["train"].parent
    argv = ["run", "--spec", str(spec), "--data", str(data), "--future", str(tiny_demo_files["future"]), "--out", str(tmp_path / "f.parquet")]
    assert cli.main(argv) == 3
    (config,) = seen
    assert config.train == data / "train.csv" and config.stores == data / "store.csv"


def test_panel_run_passes_the_options_through(panel_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[PanelRunConfig] = []

    def fake_panel(config: PanelRunConfig) -> None:
        seen.append(config)
        raise FitDivergedError("stopped by the test")

    monkeypatch.setattr(flows.panel, "panel", fake_panel)
    argv = ["run", "--spec", str(panel_files["spec"]), "--data", str(panel_files["spec"].parent), "--future", str(panel_files["future"])]
    argv += ["--out", str(tmp_path / "f.parquet"), "--seed", "4", "--max-steps", "200", "--num-draws", "60", "--no-tracking"]
    assert cli.main(argv) == 3
    (config,) = seen
    assert (config.seed, config.fit.max_steps, config.forecast.num_draws, config.tracking.enabled) == (4, 200, 60, False)
    assert config.fan_out.engine == "in-process"

    assert config.series_blocks is None

    seen.clear()
    assert cli.main([*argv, "--series-blocks", "--blocks-per-pool", "4"]) == 3
    (config,) = seen
    assert config.series_blocks is not None and (config.series_blocks.blocks_per_pool, config.series_blocks.block_size) == (4, 256)

    seen.clear()
    assert cli.main([*argv, "--dask-address", "tcp://10.0.0.5:8786", "--series-per-partition", "100"]) == 3
    (config,) = seen
    assert (config.fan_out.engine, config.fan_out.dask_address, config.fan_out.series_per_partition) == ("dask", "tcp://10.0.0.5:8786", 100)


def test_panel_backtest_passes_the_fan_out_options_through(panel_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[PanelBacktestConfig] = []

    def fake_backtest(config: PanelBacktestConfig) -> None:
        seen.append(config)
        raise FitDivergedError("stopped by the test")

    monkeypatch.setattr(flows.panel_backtest, "panel_backtest", fake_backtest)
    argv = ["backtest", "--spec", str(panel_files["spec"]), "--data", str(panel_files["spec"].parent), "--no-tracking"]
    assert cli.main(argv) == 3
    assert seen.pop().fan_out.engine == "in-process"
    assert cli.main([*argv, "--engine", "dask", "--dask-workers", "3"]) == 3
    assert (seen[0].fan_out.engine, seen[0].fan_out.dask_workers, seen[0].fan_out.dask_address) == ("dask", 3, None)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_panel_run_end_to_end(panel_files: dict[str, Path], bhm_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "forecast.parquet"
    argv = ["run", "--spec", str(panel_files["spec"]), "--data", str(panel_files["spec"].parent), "--future", str(panel_files["future"])]
    assert cli.main([*argv, "--out", str(out), "--max-steps", "300", "--num-draws", "200"]) == 0
    captured = capsys.readouterr()
    assert "series rows" in captured.out and "aggregate rows" in captured.out and "Traceback" not in captured.err
    forecast = pl.read_parquet(out)
    future = pl.read_csv(panel_files["future"])
    series = forecast.filter(pl.col(n.LEVEL) == n.SERIES_LEVEL)
    assert series.height == future.height
    assert {"store_id", "item_id", "week", "mean", "q05", "q25", "q50", "q75", "q95", n.GROUP, n.MODEL_VERSION} <= set(forecast.columns)
    assert set(forecast[n.LEVEL].unique()) == {n.SERIES_LEVEL, "store_id", "item_id", "department", "region", "total"}
    total = forecast.filter(pl.col(n.LEVEL) == "total")["mean"].sum()
    assert total == pytest.approx(series["mean"].sum(), rel=1e-4)
    assert (tmp_path / "forecast.model" / "params.npz").is_file()
    client = MlflowClient(f"sqlite:///{bhm_home / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()], "attributes.run_name LIKE 'panel%'")
    assert {"effect_price_product.png"} <= {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    # the demo's units: the shocks ahead at their moment estimates, one metric per shock the model has
    shocks = {k.removeprefix("panel_shock_scale_ahead_") for k in run.data.metrics if k.startswith("panel_shock_scale_ahead_")}
    assert shocks == set(parse_spec(panel_files["spec"].read_text(), "spec").shocks)
    local = client.download_artifacts(run.info.run_id, "effects/effect_price_product.parquet", str(tmp_path))
    elasticities = pl.read_parquet(local)
    assert elasticities.height == pl.read_csv(panel_files["spec"].parent / "products.csv").height
    assert (elasticities["q05"] < elasticities["mean"]).all() and (elasticities["mean"] < elasticities["q95"]).all()
    assert (elasticities["mean"] < 0).all()  # the demo's elasticities are all negative


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_panel_train_then_forecast_gives_the_runs_forecast(panel_files: dict[str, Path], tmp_path: Path) -> None:
    data = ["--spec", str(panel_files["spec"]), "--data", str(panel_files["spec"].parent)]
    common = ["--seed", "2", "--max-steps", "200", "--no-tracking"]
    future = ["--future", str(panel_files["future"]), "--num-draws", "100"]
    ran = tmp_path / "run.parquet"
    assert cli.main(["run", *data, *common, *future, "--out", str(ran)]) == 0
    model = tmp_path / "trained.model"
    assert cli.main(["train", *data, *common, "--state-dir", str(model)]) == 0
    # the forecast reads no history: a sales file broken after the fit changes nothing
    later = tmp_path / "later"
    shutil.copytree(panel_files["spec"].parent, later)
    (later / "sales.csv").write_text("store_id,item_id,week,units\n1,2,not a week,x\n")
    forecast = tmp_path / "forecast.parquet"
    data_later = ["--spec", str(panel_files["spec"]), "--data", str(later)]
    assert cli.main(["forecast", *data_later, "--seed", "2", "--no-tracking", *future, "--model-dir", str(model), "--out", str(forecast)]) == 0
    # the same seed fits the same model and draws the same forecast; only the version (a data fingerprint) differs
    assert pl.read_parquet(forecast).drop(n.MODEL_VERSION).equals(pl.read_parquet(ran).drop(n.MODEL_VERSION))


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_panel_forecast_refuses_series_the_model_does_not_know(panel_files: dict[str, Path], tmp_path: Path, capsys) -> None:
    folder = panel_files["spec"].parent
    fewer = tmp_path / "fewer"
    shutil.copytree(folder, fewer)
    sales = pl.read_csv(folder / "sales.csv")
    first = sales.row(0, named=True)
    sales.filter((pl.col("store_id") != first["store_id"]) | (pl.col("item_id") != first["item_id"])).write_csv(fewer / "sales.csv")
    model = tmp_path / "trained.model"
    spec = ["--spec", str(panel_files["spec"])]
    assert cli.main(["train", *spec, "--data", str(fewer), "--max-steps", "100", "--no-tracking", "--state-dir", str(model)]) == 0
    out = tmp_path / "forecast.parquet"
    argv = ["forecast", *spec, "--data", str(folder), "--no-tracking", "--future", str(panel_files["future"]), "--model-dir", str(model)]
    assert cli.main([*argv, "--out", str(out)]) == 1
    assert f"1 series of the future table are not in the model (({first['store_id']}, {first['item_id']}))" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_rossmann_through_its_spec_gives_the_same_forecast(tiny_demo_files: dict[str, Path], tmp_path: Path) -> None:
    spec = tmp_path / "r.yaml"
    spec.write_text(BUILTIN_SPECS["rossmann"])
    common = ["--future", str(tiny_demo_files["future"]), "--max-steps", "200", "--local-max-steps", "100", "--num-draws", "50"]
    common += ["--backtest-days", "0", "--no-tracking", "--seed", "3"]
    by_options = tmp_path / "options.parquet"
    by_spec = tmp_path / "spec.parquet"
    files = ["--train", str(tiny_demo_files["train"]), "--stores", str(tiny_demo_files["stores"])]
    assert cli.main(["run", *files, *common, "--out", str(by_options)]) == 0
    assert cli.main(["run", "--spec", str(spec), "--data", str(tiny_demo_files["train"].parent), *common, "--out", str(by_spec)]) == 0
    assert pl.read_parquet(by_options).equals(pl.read_parquet(by_spec))
