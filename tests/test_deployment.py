"""The deployments as an operator runs them: a real `prefect server`, a process work pool, `prefect deploy --all`,
a nightly run triggered through the API the UI uses, picked up by a worker; an invalid parameter refused."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient
from prefect_api import prefect_request

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
POOL = "bhm-process"
SERVER_START_SECONDS = 180
RUN_SECONDS = 420


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _prefect(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "prefect", *args]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def operator_env(tmp_path_factory: pytest.TempPathFactory, tiny_demo_files: dict[str, Path]) -> Iterator[dict[str, str]]:
    """A real Prefect server on 127.0.0.1 with its own database, and the environment an operator's shell has."""
    root = tmp_path_factory.mktemp("operator")
    data = root / "data"
    data.mkdir()
    for role, name in (("train", "train.csv"), ("stores", "store.csv"), ("future", "test.csv")):
        shutil.copy(tiny_demo_files[role], data / name)
    port = _free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "MLFLOW_")) and key not in ("BHM_HOME",)
    }
    env |= {
        "PREFECT_HOME": str(root / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "BHM_HOME": str(root / "bhm"),
        "BHM_DATA_DIR": str(data),
    }
    log = (root / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            try:
                if httpx.get(f"{env['PREFECT_API_URL']}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prefect server did not start:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
        _prefect(env, "work-pool", "create", POOL, "--type", "process")
        _prefect(env, "--no-prompt", "deploy", "--all", timeout=300)
        yield env
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _api(env: dict[str, str], method: str, path: str, **kwargs) -> httpx.Response:
    return prefect_request(method, f"{env['PREFECT_API_URL']}{path}", **kwargs)


def _deployment(env: dict[str, str], flow: str, name: str) -> dict:
    response = _api(env, "GET", f"/deployments/name/{flow}/{name}")
    assert response.status_code == 200, response.text
    return response.json()


def _config(env: dict[str, str], **overrides) -> dict:
    data = Path(env["BHM_DATA_DIR"])
    return {
        "train": str(data / "train.csv"),
        "stores": str(data / "store.csv"),
        "future": str(data / "test.csv"),
        "out": str(data / "forecasts" / "forecast.parquet"),
        "fit": {"max_steps": 300, "local_max_steps": 200},
        "forecast": {"num_draws": 100},
        "backtest_days": 14,
        **overrides,
    }


def test_deploy_creates_the_deployments_with_schedule_and_limits(operator_env: dict[str, str]) -> None:
    nightly = _deployment(operator_env, "nightly", "nightly")
    (schedule,) = nightly["schedules"]
    assert schedule["schedule"]["cron"] == "0 2 * * *" and schedule["schedule"]["timezone"] == "Europe/Berlin"
    assert nightly["enforce_parameter_schema"] is True
    assert nightly["global_concurrency_limit"]["limit"] == 1
    assert nightly["work_pool_name"] == POOL
    assert nightly["parameters"]["config"]["train"] == str(Path(operator_env["BHM_DATA_DIR"]) / "train.csv")
    for flow, name in (("cold_start", "cold-start"), ("forecast", "forecast"), ("train", "train"), ("replenish", "replenish")):
        assert _deployment(operator_env, flow, name)["work_pool_name"] == POOL
    replenish = _deployment(operator_env, "replenish", "replenish")
    assert replenish["parameters"]["config"]["out"] == str(Path(operator_env["BHM_DATA_DIR"]) / "orders" / "orders.parquet")


def test_an_invalid_parameter_is_refused_before_a_run(operator_env: dict[str, str]) -> None:
    nightly = _deployment(operator_env, "nightly", "nightly")
    bad = {"parameters": {"config": _config(operator_env, seed=-1)}}
    response = _api(operator_env, "POST", f"/deployments/{nightly['id']}/create_flow_run", json=bad)
    assert response.status_code == 409 and "seed" in response.text


def test_a_triggered_nightly_run_is_picked_up_by_a_worker_and_completes(operator_env: dict[str, str]) -> None:
    nightly = _deployment(operator_env, "nightly", "nightly")
    created = _api(
        operator_env, "POST", f"/deployments/{nightly['id']}/create_flow_run", json={"parameters": {"config": _config(operator_env)}}
    )
    assert created.status_code == 201, created.text
    flow_run_id = created.json()["id"]

    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--run-once"],
        env=operator_env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = worker.communicate(timeout=RUN_SECONDS)
    except subprocess.TimeoutExpired:
        worker.kill()
        output, _ = worker.communicate()
        pytest.fail(f"the worker did not finish the run in {RUN_SECONDS} s:\n{output[-4000:]}")
    state = _api(operator_env, "GET", f"/flow_runs/{flow_run_id}").json()["state"]
    assert state["type"] == "COMPLETED", f"{state}\n{output[-4000:]}"

    assert (Path(operator_env["BHM_DATA_DIR"]) / "forecasts" / "forecast.parquet").is_file()
    client = MlflowClient(f"sqlite:///{Path(operator_env['BHM_HOME']) / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("bhm-forecast").experiment_id], filter_string=f"tags.`prefect.flow_run_id` = '{flow_run_id}'"
    )
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["prefect.deployment"] == "nightly"
