"""flows.environment and tasks.track.report: defaults that never override the user's settings; the run summary text."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flows import environment
from tasks.model.inference import FitResult
from tasks.track.report import run_markdown


def test_configure_fills_in_defaults_under_bhm_home(tmp_path: Path) -> None:
    env = {"BHM_HOME": str(tmp_path / "home")}
    applied = environment.configure(env)
    assert env["PREFECT_HOME"] == str(tmp_path / "home" / "prefect") and Path(env["PREFECT_HOME"]).is_dir()
    assert int(env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]) > 20
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert set(applied) <= set(env) and "BHM_HOME" not in applied


def test_configure_never_overrides_what_is_set(tmp_path: Path) -> None:
    env = {
        "BHM_HOME": str(tmp_path),
        "PREFECT_HOME": str(tmp_path / "mine"),
        "PREFECT_API_URL": "http://prefect.example:4200/api",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "mylib",
    }
    applied = environment.configure(env)
    assert env["PREFECT_HOME"] == str(tmp_path / "mine") and env["PREFECT_LOGGING_EXTRA_LOGGERS"] == "mylib"
    assert env["PREFECT_API_URL"] == "http://prefect.example:4200/api"
    assert "PREFECT_HOME" not in applied and "PREFECT_API_URL" not in applied


def test_run_markdown_reports_fit_backtest_and_link() -> None:
    fit = FitResult(
        params={}, losses=np.linspace(10.0, 8.0, 400), n_steps=400, converged=True, compile_seconds=2.0, run_seconds=3.0
    )
    text = run_markdown(
        "Nightly",
        fits={"global": (fit, 12)},
        backtest={"rmspe": 0.1234, "wql": 0.0321, "coverage_50": 0.5, "coverage_90": 0.9},
        backtest_origin="2015-06-14",
        outputs={"forecast": Path("/x/forecast.parquet")},
        registration="bhm-forecast version 3, now @champion",
        mlflow_link="run abc",
    )
    assert text.startswith("# Nightly")
    assert "12 stores, 400 steps, converged" in text and "5.0 (2.0 compiling)" in text
    assert "RMSPE 0.1234" in text and "90% 90.0%" in text and "from 2015-06-14" in text
    assert "`/x/forecast.parquet`" in text and "@champion" in text and "run abc" in text
