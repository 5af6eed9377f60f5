"""Shared fixtures: a tiny demo data set, drawn and written once per test session; a Prefect test server.
One JAX persistent compilation cache for the session (pytest_configure)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.data.demo import DemoData, generate_demo
from tasks.ops import compile_cache

_SESSION_CACHE: dict[str, str] = {}
SESSION_CACHE_ENV = "BHM_TEST_SESSION_JAX_CACHE"


def pytest_configure(config: pytest.Config) -> None:
    """Every program compiled in the session, in process or in the flow processes that tests start
    (they inherit the variables), goes to one new cache folder, whatever the developer's own cache:
    a test compiles what an earlier one did not. The xdist workers inherit the controller's folder
    (they start after it is configured), so a program one worker compiled the other loads; JAX locks
    the folder. All programs are kept, not only those that take a second to compile: a run's many
    small ones add up."""
    import jax

    folder = os.environ.get(SESSION_CACHE_ENV) if os.environ.get("PYTEST_XDIST_WORKER") else None
    if folder is None:
        folder = tempfile.mkdtemp(prefix="bhm-test-jax-cache-")
        _SESSION_CACHE["folder"] = folder  # removed by the process that made it
        os.environ[SESSION_CACHE_ENV] = folder
    os.environ[compile_cache.JAX_CACHE_DIR_ENV] = folder
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    compile_cache.enable(os.environ)


def pytest_unconfigure(config: pytest.Config) -> None:
    if "folder" in _SESSION_CACHE:
        shutil.rmtree(_SESSION_CACHE.pop("folder"), ignore_errors=True)
        os.environ.pop(SESSION_CACHE_ENV, None)


# Small enough that a whole run (validate, fit, forecast) takes seconds on 2 cores.
TINY_DEMO = {"seed": 0, "n_stores": 8, "n_history_days": 120, "horizon": 14, "n_new_stores": 1, "n_gapped_stores": 1}


@pytest.fixture(scope="session")
def tiny_demo() -> DemoData:
    return generate_demo(**TINY_DEMO)


@pytest.fixture(scope="session")
def tiny_demo_files(tiny_demo: DemoData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """train.csv, store.csv, test.csv of the tiny demo; read-only by convention: copy before changing."""
    return tiny_demo.write(tmp_path_factory.mktemp("tiny_demo"))


# The environment a flow process gets from flows.environment.configure(), set once for the test
# session so that no test leaves it changed; BHM_HOME itself is set per test where it matters.
FLOW_ENVIRONMENT = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "tasks",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One Prefect test server (a new database each time it starts) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    saved = {key: os.environ.get(key) for key in [*FLOW_ENVIRONMENT, "PREFECT_HOME"]}
    os.environ.update(FLOW_ENVIRONMENT)
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    try:
        with prefect_test_harness(server_startup_timeout=180):
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """What a test of `bhm` commands run in process needs: its own BHM_HOME (MLflow's database, the run
    locks), the session's flow environment left as it is (conftest.prefect_server), and the root logger
    that `bhm` configures put back as it was for the other tests."""
    import logging

    from flows import cli, environment

    home = tmp_path / "bhm_home"
    monkeypatch.setenv(cli.BHM_HOME_ENV, str(home))
    monkeypatch.setattr(environment, "configure", lambda *args, **kwargs: {})
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in cli.QUIET_LOGGERS}
    yield home
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in quiet.items():
        logging.getLogger(name).setLevel(value)
