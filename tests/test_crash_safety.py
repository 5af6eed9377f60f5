"""Crash safety and concurrency of the nightly flow, with real processes: kill -9 at each of the five
fault points (reading, fitting, writing the forecast, MLflow logging, registering), then check that
no torn forecast or model folder is visible, that the previous forecast, model folder and @champion
are intact; then two reruns at once on the same outputs: the second waits for the first (the lock),
both complete, the killed runs are marked FAILED, the registry's versions and alias are consistent.
A second nightly on locked outputs is refused with exit code 4, naming the holder (`bhm run`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import crash_harness as harness
import polars as pl
import pytest

from tasks.model import state
from tasks.ops import faults, lock, servers

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real Prefect server (SQLite) for the module: killed flow processes leave no temporary server behind."""
    with servers.prefect_server(None, tmp_path_factory.mktemp("prefect_server")) as api:
        yield api


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> dict:
    """The outputs after one complete nightly run: the state every kill must leave as it was."""
    root = tmp_path_factory.mktemp("ops")
    files = harness.write_demo(root / "data")
    out = root / "forecasts" / "forecast.parquet"
    home = root / "bhm"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "BHM_"))}
    env |= {"BHM_HOME": str(home), "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(root / "prefect_home")}
    config = harness.nightly_config(files, out)
    done = harness.run_nightly(config, env)
    assert done.returncode == 0, done.stdout[-4000:]
    uri = f"sqlite:///{home / 'mlflow.db'}"
    model_dir = out.with_suffix(".model")
    before = harness.snapshot(out, model_dir, uri)
    assert before.champion == "1" and before.forecast and before.model
    return {"env": env, "config": config, "out": out, "model_dir": model_dir, "uri": uri, "before": before, "killed": []}


@pytest.mark.parametrize("point", faults.POINTS)
def test_a_kill_at_each_point_leaves_the_previous_outputs_and_champion_intact(ops: dict, point: str) -> None:
    out, model_dir, uri = ops["out"], ops["model_dir"], ops["uri"]
    done = harness.run_nightly(ops["config"], ops["env"], fault=point)
    assert done.returncode == -signal.SIGKILL, done.stdout[-4000:]
    assert f"BHM_FAULT_POINT={point}: killing process" in done.stdout

    after = harness.snapshot(out, model_dir, uri)
    before = ops["before"]
    assert harness.torn(out, model_dir, uri) == []
    assert harness.visible(out) == ["forecast.model", "forecast.parquet"]  # nothing partial under a real name
    assert after.champion == before.champion
    if point in (faults.READ, faults.FIT, faults.EXPORT):  # killed before the outputs were published: the previous ones
        assert (after.forecast, after.model) == (before.forecast, before.model)
    else:  # killed after: the new forecast and model folder, whole and of one fit
        model_version = state.load(model_dir).model_version
        assert pl.read_parquet(out)["model_version"].unique().to_list() == [model_version]
    if point == faults.REGISTER:  # a complete version was registered; the alias did not move to it
        assert len(after.versions) == len(before.versions) + 1
    else:
        assert after.versions == before.versions
    pid = int(done.stdout.split("killing process ")[1].split()[0])
    statuses = harness.run_status(uri, pid)
    assert statuses == ([] if point == faults.READ else ["RUNNING"])  # left open: the kill gave it no chance
    ops["killed"].append(pid)


def test_two_reruns_at_once_wait_for_each_other_and_both_complete(ops: dict) -> None:
    out, model_dir, uri = ops["out"], ops["model_dir"], ops["uri"]
    env = {**ops["env"], lock.WAIT_ENV: "900"}
    results: dict[int, subprocess.CompletedProcess] = {}

    def rerun(i: int) -> None:
        results[i] = harness.run_nightly(ops["config"], env)

    threads = [threading.Thread(target=rerun, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, done in results.items():
        assert done.returncode == 0, f"run {i}:\n{done.stdout[-4000:]}"
    assert any("waiting up to 900 s" in done.stdout for done in results.values())  # one waited for the other

    after = harness.snapshot(out, model_dir, uri)
    assert harness.torn(out, model_dir, uri) == []
    assert harness.debris(out) == []  # the killed runs' temporaries were swept
    assert harness.visible(out) == ["forecast.model", "forecast.parquet"]
    n_versions = len(after.versions)
    assert after.versions == tuple(str(v) for v in range(1, n_versions + 1))  # no gap, no duplicate
    assert after.champion == after.versions[-1]  # the alias moved last, to the last complete version
    assert pl.read_parquet(out)["model_version"].n_unique() == 1
    for pid in ops["killed"]:
        assert set(harness.run_status(uri, pid)) <= {"FAILED"}, pid


def test_bhm_run_on_locked_outputs_is_refused_with_exit_code_4_naming_the_holder(ops: dict, tmp_path: Path) -> None:
    out = tmp_path / "forecast.parquet"
    files = {k: ops["config"][k] for k in ("train", "stores", "future")}
    command = [sys.executable, "-m", "flows.cli", "run", "--train", files["train"], "--stores", files["stores"]]
    command += ["--future", files["future"], "--out", str(out), "--no-tracking", "--max-steps", "100"]
    with lock.outputs_held([out], "a nightly run held by the test"):
        done = subprocess.run(command, env=ops["env"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 4, done.stderr[-3000:]
    assert f"pid {os.getpid()}" in done.stderr and "a nightly run held by the test" in done.stderr
    assert lock.WAIT_ENV in done.stderr
    assert not out.exists()
