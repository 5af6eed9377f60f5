"""flows.cli: options, exit codes and messages of `bhm validate`, `bhm run` and the other flow commands."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

import flows.nightly
from flows import cli, environment
from tasks import names as n
from tasks.config import FitConfig, ForecastConfig, NightlyConfig
from tasks.model.inference import FitDivergedError


@pytest.fixture(autouse=True)
def bhm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "bhm_home"
    monkeypatch.setenv(cli.BHM_HOME_ENV, str(home))
    return home


@pytest.fixture(autouse=True)
def session_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flow environment is the session's (conftest.prefect_server): no test changes os.environ for good."""
    monkeypatch.setattr(environment, "configure", lambda *args, **kwargs: {})


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """main() configures the root logger; leave it as it was for the other tests."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in cli.QUIET_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in quiet.items():
        logging.getLogger(name).setLevel(value)


def data_args(files: dict[str, Path]) -> list[str]:
    return ["--train", str(files["train"]), "--stores", str(files["stores"]), "--future", str(files["future"])]


def with_negative_sales(files: dict[str, Path], folder: Path) -> dict[str, Path]:
    """A copy of the inputs whose train file has Sales -5 on its third data row."""
    train = pl.read_csv(files["train"], infer_schema=False)
    third = pl.int_range(pl.len()) == 2
    bad = folder / "train.csv"
    train.with_columns(pl.when(third).then(pl.lit("-5")).otherwise(pl.col(n.SALES)).alias(n.SALES)).write_csv(bad)
    return {**files, "train": bad}


class StopBeforeFit(Exception):
    pass


# --------------------------------------------------------------------------
# help


@pytest.mark.parametrize("argv", [["--help"], ["validate", "--help"], ["run", "--help"]])
def test_help_exits_zero(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 0
    assert "usage: bhm" in capsys.readouterr().out


def test_run_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for option in ("--train", "--stores", "--future", "--out", "--seed", "--state-dir", "--max-steps", "--num-draws"):
        assert option in out
    defaults = (FitConfig.model_fields["max_steps"].default, ForecastConfig.model_fields["num_draws"].default, 0)
    for value in defaults:
        assert f"(default: {value})" in out


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: bhm" in capsys.readouterr().err


def test_console_script_runs(tiny_demo_files: dict[str, Path]) -> None:
    """One real process: the installed `bhm` script (or the module, where no script is installed)."""
    script = Path(sys.executable).with_name("bhm")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]
    done = subprocess.run(
        [*command, "validate", "--train", str(tiny_demo_files["train"]), "--stores", str(tiny_demo_files["stores"])],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Input validation passed" in done.stdout
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------
# validate


def test_validate_passes_with_report_and_summary(tiny_demo_files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", *data_args(tiny_demo_files)]) == 0
    out = capsys.readouterr().out
    assert "Input validation passed" in out
    assert "train: " in out and "future: " in out  # the data summary


def test_validate_fails_with_exit_1_and_the_report_on_stdout(
    tiny_demo_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = with_negative_sales(tiny_demo_files, tmp_path)
    assert cli.main(["validate", *data_args(files)]) == 1
    out = capsys.readouterr().out
    assert "Input validation failed" in out
    assert "Sales" in out and "'-5'" in out and "at rows:  3" in out


def test_validate_missing_file_exits_2_without_traceback(
    tiny_demo_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.csv"
    assert cli.main(["validate", "--train", str(missing), "--stores", str(tiny_demo_files["stores"])]) == 2
    captured = capsys.readouterr()
    assert "not found" in captured.err and str(missing) in captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_validate_unsupported_suffix_exits_2(tiny_demo_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    odd = tmp_path / "train.xlsx"
    odd.write_text("x")
    assert cli.main(["validate", "--train", str(odd), "--stores", str(tiny_demo_files["stores"])]) == 2
    assert ".xlsx" in capsys.readouterr().err


# --------------------------------------------------------------------------
# run: options and configuration


def test_run_with_some_data_options_names_the_missing_ones(
    tiny_demo_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--train", str(tiny_demo_files["train"]), "--out", str(tmp_path / "f.parquet")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--stores" in err and "--future" in err and "Traceback" not in err


def test_run_out_must_be_parquet(bhm_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--out", "x.csv"]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and ".parquet" in err and "Traceback" not in err
    assert not bhm_home.exists()  # an invalid configuration writes nothing, not even the demo


def test_run_invalid_settings_one_line_per_problem(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--seed", "-1", "--max-steps", "5", "--num-draws", "2"]) == 2
    lines = [line.strip() for line in capsys.readouterr().err.splitlines()]
    for option in ("--seed", "--max-steps", "--num-draws"):
        assert sum(line.startswith(option) for line in lines) == 1, lines


def test_run_with_data_needs_out(tiny_demo_files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", *data_args(tiny_demo_files)]) == 2
    assert "--out" in capsys.readouterr().err


def test_run_without_data_uses_the_demo_in_bhm_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(cli.BHM_HOME_ENV, "relative_home")  # resolved to an absolute path
    seen: list[NightlyConfig] = []

    def fake_run(config: NightlyConfig) -> None:
        seen.append(config)
        raise FitDivergedError("stopped by the test")

    monkeypatch.setattr(flows.nightly, "nightly", fake_run)
    assert cli.main(["run", "--seed", "4"]) == 3
    (config,) = seen
    demo = tmp_path / "relative_home" / "demo"
    assert config.out == demo / "forecast.parquet"
    assert (config.train, config.stores, config.future) == (demo / "train.csv", demo / "store.csv", demo / "test.csv")
    assert all(p.is_file() for p in (config.train, config.stores, config.future))
    assert config.seed == 4 and config.fitted_dir == demo / "forecast.model"


def test_run_passes_the_options_through(tiny_demo_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[NightlyConfig] = []

    def fake_run(config: NightlyConfig) -> None:
        seen.append(config)
        raise FitDivergedError("stopped by the test")

    monkeypatch.setattr(flows.nightly, "nightly", fake_run)
    argv = ["run", *data_args(tiny_demo_files), "--out", str(tmp_path / "f.parquet"), "--state-dir", str(tmp_path / "m")]
    argv += ["--seed", "9", "--max-steps", "200", "--local-max-steps", "100", "--num-draws", "50"]
    assert cli.main(argv) == 3
    (config,) = seen
    assert config.train == tiny_demo_files["train"] and config.out == tmp_path / "f.parquet"
    assert config.fitted_dir == tmp_path / "m"
    assert (config.seed, config.fit.max_steps, config.fit.local_max_steps, config.forecast.num_draws) == (9, 200, 100, 50)


# --------------------------------------------------------------------------
# run: outcomes


@pytest.mark.usefixtures("prefect_server")
def test_run_bad_input_exits_1_with_report_on_stderr_and_writes_nothing(
    tiny_demo_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = with_negative_sales(tiny_demo_files, tmp_path)
    out = tmp_path / "out" / "forecast.parquet"
    assert cli.main(["run", *data_args(files), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "Input validation failed" in captured.err and "Sales" in captured.err
    assert captured.out == ""
    assert not out.exists() and not (tmp_path / "out" / "forecast.model").exists()


def test_run_diverged_fit_exits_3(
    tiny_demo_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def diverging(config: NightlyConfig) -> None:
        raise FitDivergedError("the ELBO became non-finite at step 7; refusing to use this fit")

    monkeypatch.setattr(flows.nightly, "nightly", diverging)
    assert cli.main(["run", *data_args(tiny_demo_files), "--out", str(tmp_path / "f.parquet")]) == 3
    err = capsys.readouterr().err
    assert "non-finite at step 7" in err and "Traceback" not in err


def test_run_data_that_cannot_be_modelled_exits_1(
    tiny_demo_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def unfit(config: NightlyConfig) -> None:
        raise ValueError("no store has 28 or more observed days")

    monkeypatch.setattr(flows.nightly, "nightly", unfit)
    assert cli.main(["run", *data_args(tiny_demo_files), "--out", str(tmp_path / "f.parquet")]) == 1
    err = capsys.readouterr().err
    assert "no store has 28" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_run_end_to_end_on_a_tiny_demo(tiny_demo_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "forecast.parquet"
    argv = ["run", *data_args(tiny_demo_files), "--out", str(out), "--max-steps", "300", "--local-max-steps", "200"]
    assert cli.main([*argv, "--num-draws", "100", "--backtest-days", "14"]) == 0
    captured = capsys.readouterr()
    assert out.is_file() and (tmp_path / "forecast.model").is_dir()
    forecast = pl.read_parquet(out)
    assert forecast.height == pl.read_csv(tiny_demo_files["future"]).height
    assert f"rows written to {out}" in captured.out and "fitted model:" in captured.out and "seconds:" in captured.out
    assert "backtest (14 days): RMSPE" in captured.out and "registry: bhm-forecast version 1" in captured.out
    assert "MLflow: run " in captured.out
    assert "step 100/300" in captured.err  # fit progress reaches the terminal at INFO
    assert "Unable to initialize backend" not in captured.err


# --------------------------------------------------------------------------
# the other flow commands


def test_demo_writes_the_three_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--out", str(tmp_path / "data")]) == 0
    for name in ("train.csv", "store.csv", "test.csv"):
        assert (tmp_path / "data" / name).is_file()
    assert str(tmp_path / "data" / "test.csv") in capsys.readouterr().out


def test_cold_start_passes_the_options_through(tiny_demo_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.cold_start

    seen = []

    def fake(config) -> None:
        seen.append(config)
        raise FitDivergedError("stopped by the test")

    monkeypatch.setattr(flows.cold_start, "cold_start", fake)
    argv = ["cold-start", *data_args(tiny_demo_files), "--out", str(tmp_path / "c.parquet"), "--store-ids", "3, 7"]
    assert cli.main([*argv, "--version", "4", "--no-tracking"]) == 3
    (config,) = seen
    assert config.store_ids == (3, 7) and config.model.version == 4 and config.model.uri == "models:/bhm-forecast/4"
    assert not config.tracking.enabled


def test_cold_start_bad_store_ids_exit_2(tiny_demo_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["cold-start", *data_args(tiny_demo_files), "--out", str(tmp_path / "c.parquet"), "--store-ids", "3,x"]
    assert cli.main(argv) == 2
    assert "--store-ids" in capsys.readouterr().err


def test_forecast_model_dir_must_exist(tiny_demo_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["forecast", "--stores", str(tiny_demo_files["stores"]), "--future", str(tiny_demo_files["future"])]
    assert cli.main([*argv, "--out", str(tmp_path / "f.parquet"), "--model-dir", str(tmp_path / "nope")]) == 2
    assert "--model-dir: not a folder" in capsys.readouterr().err


def test_forecast_invalid_alias_names_the_option(tiny_demo_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["forecast", "--stores", str(tiny_demo_files["stores"]), "--future", str(tiny_demo_files["future"])]
    assert cli.main([*argv, "--out", str(tmp_path / "f.parquet"), "--alias", "not ok!"]) == 2
    assert "--alias" in capsys.readouterr().err


def test_train_passes_the_options_through(tiny_demo_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.train

    seen = []

    def fake(config) -> None:
        seen.append(config)
        raise ValueError("stopped by the test")

    monkeypatch.setattr(flows.train, "train", fake)
    argv = ["train", "--train", str(tiny_demo_files["train"]), "--stores", str(tiny_demo_files["stores"])]
    assert cli.main([*argv, "--state-dir", str(tmp_path / "m"), "--max-steps", "150", "--seed", "2"]) == 1
    (config,) = seen
    assert config.state_dir == tmp_path / "m" and config.fit.max_steps == 150 and config.seed == 2


def test_backtest_passes_the_options_through(tiny_demo_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.backtest

    seen = []

    def fake(config) -> None:
        seen.append(config)
        raise FitDivergedError("stopped by the test")

    monkeypatch.setattr(flows.backtest, "backtest", fake)
    argv = ["backtest", "--train", str(tiny_demo_files["train"]), "--stores", str(tiny_demo_files["stores"])]
    argv += ["--origin", "2023-04-01", "--origin", "2023-03-01", "--horizon-days", "7", "--baselines", "lightgbm"]
    assert cli.main([*argv, "--cold-start-stores", "3", "--cold-start-days", "2, 9", "--out-dir", str(tmp_path)]) == 3
    (config,) = seen
    assert config.origins == (dt.date(2023, 4, 1), dt.date(2023, 3, 1)) and config.horizon_days == 7
    assert config.baselines == ("lightgbm",) and config.cold_start_stores == 3 and config.out_dir == tmp_path
    assert config.cold_start_days == (2, 9)


def test_backtest_cold_start_days_beyond_the_window_names_the_option(
    tiny_demo_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["backtest", "--train", str(tiny_demo_files["train"]), "--stores", str(tiny_demo_files["stores"])]
    assert cli.main([*argv, "--cold-start-days", "7,29"]) == 2
    assert "--cold-start-days" in capsys.readouterr().err


def test_backtest_unknown_baseline_names_the_option(tiny_demo_files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["backtest", "--train", str(tiny_demo_files["train"]), "--stores", str(tiny_demo_files["stores"])]
    assert cli.main([*argv, "--baselines", "prophet"]) == 2
    assert "--baselines" in capsys.readouterr().err
