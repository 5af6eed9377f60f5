"""Operations, fast: fault points, crash-safe writes (SIGKILL mid-write, a full disk), run locks,
dead MLflow runs marked FAILED, credentials masked, nothing unpickled."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tasks.ops import atomic, faults, lock, servers
from tasks.ops.process import ProcessId
from tasks.track import tracking

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _frame(rows: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({"Store": np.arange(rows, dtype=np.int32), "mean": rng.random(rows, dtype=np.float32)})


# --- fault points -------------------------------------------------------------


def test_an_unknown_fault_point_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(faults.FAULT_ENV, "nowhere")
    with pytest.raises(ValueError, match="not a fault point"):
        faults.reached(faults.READ)
    monkeypatch.delenv(faults.FAULT_ENV)
    faults.reached(faults.READ)  # unset: nothing happens


def test_a_fault_point_kills_its_process_with_sigkill_only_at_that_point() -> None:
    code = "from tasks.ops import faults; faults.reached('fit'); print('passed fit'); faults.reached('export'); print('not here')"
    done = _python(code, {faults.FAULT_ENV: "export"})
    assert done.returncode == -signal.SIGKILL
    assert "passed fit" in done.stdout and "not here" not in done.stdout


# --- atomic writes ----------------------------------------------------------------


def test_write_file_killed_mid_write_leaves_the_old_file_and_the_next_write_sweeps_the_debris(tmp_path: Path) -> None:
    target = tmp_path / "forecast.parquet"
    _frame(10).write_parquet(target)
    code = f"""
        import os, signal, polars as pl
        from tasks.ops import atomic
        def write(tmp):
            pl.DataFrame({{"Store": list(range(1000))}}).write_parquet(tmp)
            os.kill(os.getpid(), signal.SIGKILL)
        atomic.write_file({str(target)!r}, write)
    """
    assert _python(code).returncode == -signal.SIGKILL
    assert pl.read_parquet(target).equals(_frame(10))
    debris = [p.name for p in tmp_path.iterdir() if p.name != target.name]
    assert len(debris) == 1 and re.match(r"^\.forecast\.parquet\.\d+\.[0-9a-f]+\.tmp$", debris[0])

    atomic.write_file(target, _frame(20).write_parquet)
    assert pl.read_parquet(target).equals(_frame(20))
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_write_folder_swaps_the_whole_folder_and_a_kill_leaves_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "forecast.model"
    atomic.write_folder(target, lambda tmp: (tmp / "a.txt").write_text("old"))
    code = f"""
        import os, signal
        from tasks.ops import atomic
        def write(tmp):
            (tmp / "a.txt").write_text("new")
            os.kill(os.getpid(), signal.SIGKILL)
        atomic.write_folder({str(target)!r}, write)
    """
    assert _python(code).returncode == -signal.SIGKILL
    assert (target / "a.txt").read_text() == "old"
    atomic.write_folder(target, lambda tmp: (tmp / "b.txt").write_text("new"))
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_writer_that_raises_enospc_leaves_the_previous_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "forecast.parquet"
    _frame(10).write_parquet(target)

    def half_written(tmp: Path) -> None:
        tmp.write_bytes(b"PAR1 half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as raised:
        atomic.write_file(target, half_written)
    assert raised.value.errno == errno.ENOSPC
    assert pl.read_parquet(target).equals(_frame(10))
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A 2 MB tmpfs (root on Linux); skipped where mounting is not permitted."""
    mount = tmp_path / "small"
    mount.mkdir()
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root on Linux; the ENOSPC case is covered by a simulated error")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the ENOSPC case is covered by a simulated error")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_while_exporting_leaves_the_previous_forecast_intact(small_tmpfs: Path) -> None:
    from tasks.pipeline import write_parquet_atomic

    target = small_tmpfs / "forecast.parquet"
    previous = _frame(1_000)
    write_parquet_atomic(previous, target)
    too_big = pl.DataFrame({"x": np.random.default_rng(1).random(2_000_000)})  # 16 MB, incompressible
    with pytest.raises(Exception, match="No space left on device"):  # polars raises a ComputeError, not an OSError
        write_parquet_atomic(too_big, target)
    assert pl.read_parquet(target).equals(previous)
    assert [p.name for p in small_tmpfs.iterdir()] == [target.name]  # the partial temporary file is gone


def test_a_full_disk_while_saving_the_model_folder_leaves_the_previous_folder(small_tmpfs: Path) -> None:
    target = small_tmpfs / "forecast.model"
    atomic.write_folder(target, lambda tmp: (tmp / "params.npz").write_bytes(b"old"))
    with pytest.raises(OSError):
        atomic.write_folder(target, lambda tmp: np.savez(tmp / "params.npz", x=np.random.default_rng(0).random(1_000_000)))
    assert (target / "params.npz").read_bytes() == b"old"
    assert [p.name for p in small_tmpfs.iterdir()] == [target.name]


# --- locks --------------------------------------------------------------------------


HOLD = """
    import sys, time
    from tasks.ops import lock
    with lock.held({path!r}, "a test holder"):
        print("held", flush=True)
        time.sleep(120)
"""


def _start_holder(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLD.format(path=str(path)))], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    path = tmp_path / ".forecast.parquet.lock"
    holder = _start_holder(path)
    try:
        with pytest.raises(lock.RunLockedError) as refused:
            with lock.held(path, "the nightly flow"):
                pass
        message = str(refused.value)
        assert f"pid {holder.pid}" in message and "a test holder" in message and lock.WAIT_ENV in message
        assert refused.value.holder["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    path = tmp_path / ".forecast.parquet.lock"
    holder = _start_holder(path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with lock.held(path, "the next run") as record:
        assert record["pid"] == os.getpid()
        assert json.loads(path.read_text())["purpose"] == "the next run"
    assert path.read_text() == ""  # released: the holder record is cleared


def test_a_waiting_run_gets_the_lock_when_the_holder_ends(tmp_path: Path) -> None:
    path = tmp_path / ".forecast.parquet.lock"
    holder = _start_holder(path)
    killer = subprocess.Popen([sys.executable, "-c", f"import os, time; time.sleep(1.5); os.kill({holder.pid}, 9)"])
    started = time.monotonic()
    with lock.held(path, "a patient run", wait_seconds=30):
        waited = time.monotonic() - started
    killer.wait()
    holder.wait()
    assert 1.0 <= waited < 30


def test_outputs_held_locks_each_output_and_reads_the_wait_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, model = tmp_path / "forecast.parquet", tmp_path / "forecast.model"
    with lock.outputs_held([out, model], "first") as files:
        assert files == sorted([tmp_path / ".forecast.parquet.lock", tmp_path / ".forecast.model.lock"])
        monkeypatch.setenv(lock.WAIT_ENV, "0.6")
        code = f"from tasks.ops import lock\nwith lock.outputs_held([{str(out)!r}], 'second'): pass"
        done = _python(code, {lock.WAIT_ENV: "0.6"})
        assert done.returncode == 1 and "RunLockedError" in done.stderr and "waited 0.6 s" in done.stderr
    monkeypatch.setenv(lock.WAIT_ENV, "soon")
    with pytest.raises(ValueError, match=lock.WAIT_ENV):
        lock.wait_seconds_from_env()


# --- processes and dead MLflow runs ------------------------------------------------------


def test_process_id_tells_a_dead_process_from_a_live_one() -> None:
    me = ProcessId.current()
    assert me.is_gone() is False
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert ProcessId(me.host, child.pid, me.start).is_gone() is True
    assert ProcessId(me.host, me.pid, "1").is_gone() is True  # same pid, another start time: reused
    assert ProcessId("another-host", me.pid, me.start).is_gone() is None
    assert ProcessId.from_tags(me.tags()) == me and ProcessId.from_tags({}) is None


def test_a_run_left_running_by_a_dead_process_is_marked_failed_by_the_next_run(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    me = ProcessId.current()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("ops", artifact_location=(tmp_path / "artifacts").as_uri())
    dead = client.create_run(experiment_id, tags=ProcessId(me.host, child.pid, me.start).tags()).info.run_id
    elsewhere = client.create_run(experiment_id, tags=ProcessId("another-host", 1, "1").tags()).info.run_id
    with tracking.tracked_run("ops", "next", uri=uri) as (_, run_id):
        assert client.get_run(run_id).data.tags["bhm.pid"] == str(os.getpid())
    assert client.get_run(dead).info.status == "FAILED"
    assert "ended without closing the run" in client.get_run(dead).data.tags["bhm.failed_reason"]
    assert client.get_run(elsewhere).info.status == "RUNNING"  # another host's run: not ours to judge
    assert client.get_run(run_id).info.status == "FINISHED"


# --- credentials ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("http://alice:s3cret@mlflow.example:5000", "http://***:***@mlflow.example:5000"),
        ("postgresql+asyncpg://bhm:p%40ss:word@127.0.0.1:5432/prefect", "postgresql+asyncpg://***:***@127.0.0.1:5432/prefect"),
        ("https://token@host/api and s3://KEY:SECRET@bucket/x", "https://***:***@host/api and s3://***:***@bucket/x"),
        ("sqlite:////home/u/.bhm/mlflow.db", "sqlite:////home/u/.bhm/mlflow.db"),
        ("http://127.0.0.1:5000/#/experiments/1/runs/abc", "http://127.0.0.1:5000/#/experiments/1/runs/abc"),
        ("mailto-like user@example.com stays", "mailto-like user@example.com stays"),
    ],
)
def test_mask_credentials(text: str, masked: str) -> None:
    assert tracking.mask_credentials(text) == masked


def test_params_tags_and_links_never_carry_a_password(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient
    from pydantic import BaseModel

    from tasks.track.recording import Tracker, record_config

    class Config(BaseModel):
        source: str = "postgresql://bhm:hunter2@db:5432/sales"
        nested: dict = {"uri": "http://bob:hunter2@mlflow:5000"}

    assert not any("hunter2" in value for value in tracking.flatten_config(Config()).values())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    with tracking.tracked_run("masking", "r", {"source": "http://eve:hunter2@x/y"}, uri=uri) as (_, run_id):
        tracker = Tracker(client, run_id, client.get_run(run_id).info.experiment_id, "http://eve:hunter2@mlflow:5000")
        record_config(tracker, Config(), {"where": "https://eve:hunter2@mlflow:5000"})
        assert "hunter2" not in tracker.link and tracker.link.startswith("http://***:***@mlflow:5000/#/experiments/")
    run = client.get_run(run_id)
    assert not any("hunter2" in v for v in [*run.data.params.values(), *run.data.tags.values()])


# --- nothing unpickled --------------------------------------------------------------------------

UNPICKLING = re.compile(
    r"\b(pickle|cPickle|cloudpickle|dill|joblib|shelve|marshal)\b|allow_pickle\s*=\s*True|torch\.load|pd\.read_pickle|\.read_pickle\("
)


def test_no_source_file_unpickles_and_every_np_load_refuses_pickles() -> None:
    offenders = []
    for folder in ("flows", "tasks", "schemas", "bench"):
        for path in (REPO / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if UNPICKLING.search(code) and '"""' not in line and not code.strip().startswith(("from __future__",)):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
                if "np.load(" in code and "allow_pickle=False" not in code:
                    offenders.append(f"{path.relative_to(REPO)}:{number}: np.load without allow_pickle=False")
    assert not offenders, "\n".join(offenders)


def test_a_saved_model_folder_loads_without_pickle_and_the_mlflow_model_is_code(tiny_demo, tmp_path: Path) -> None:
    import mlflow
    import yaml
    from test_state import fitted_model

    from tasks.model import state
    from tasks.track import mlflow_model, registry

    folder = state.save(fitted_model(tiny_demo, seed=1), tmp_path / "forecast.model")
    with np.load(folder / state.PARAMS_FILE, allow_pickle=False) as arrays:
        assert all(arrays[key].dtype != object for key in arrays.files)
    stores = tmp_path / "store.csv"
    stores.write_text("Store\n1\n")
    model_dir = tmp_path / "model"
    mlflow.pyfunc.save_model(
        path=str(model_dir),
        python_model=mlflow_model.__file__,
        artifacts={mlflow_model.FITTED_ARTIFACT: str(folder), mlflow_model.STORES_ARTIFACT: str(stores)},
        signature=registry.SIGNATURE,
        pip_requirements=["numpy"],
    )
    pyfunc = yaml.safe_load((model_dir / "MLmodel").read_text())["flavors"]["python_function"]
    # Models from code: loading runs the copied mlflow_model.py; there is no python_model.pkl to unpickle.
    assert pyfunc["loader_module"] == "mlflow.pyfunc.loaders.code_model" and (model_dir / "mlflow_model.py").is_file()
    pickled = [p.name for p in model_dir.rglob("*") if p.suffix in (".pkl", ".pickle", ".cloudpickle", ".joblib")]
    assert not pickled
    loaded = mlflow.pyfunc.load_model(str(model_dir)).unwrap_python_model()
    assert np.array_equal(loaded.fitted.store_ids, state.load(folder).store_ids)



# --- servers bind to loopback by default -----------------------------------------------------------


def test_servers_bind_to_loopback_by_default() -> None:
    import click
    from mlflow.cli import server as mlflow_server_command
    from prefect.settings import get_current_settings

    from tasks.ops import servers

    assert get_current_settings().server.api.host == "127.0.0.1"  # `prefect server start` without --host
    host = next(p for p in mlflow_server_command.params if isinstance(p, click.Option) and "--host" in p.opts)
    assert host.default in ("127.0.0.1", "localhost")  # `mlflow server` without --host
    assert servers.LOOPBACK == "127.0.0.1"
    prefect_yaml = (REPO / "prefect.yaml").read_text()
    assert "0.0.0.0" not in prefect_yaml


def test_bhm_run_exits_4_when_the_outputs_are_locked(
    tiny_demo_files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import flows.nightly
    from flows import cli, environment

    monkeypatch.setenv("BHM_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(environment, "configure", lambda *args, **kwargs: {})

    def locked(config):
        raise lock.RunLockedError("the nightly flow refused: another run holds the lock x: pid 7 on h", tmp_path, {"pid": 7})

    monkeypatch.setattr(flows.nightly, "nightly", locked)
    files = ["--train", str(tiny_demo_files["train"]), "--stores", str(tiny_demo_files["stores"])]
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level  # main() configures the root logger: restore it
    quiet = {name: logging.getLogger(name).level for name in cli.QUIET_LOGGERS}
    try:
        code = cli.main(["run", *files, "--future", str(tiny_demo_files["future"]), "--out", str(tmp_path / "f.parquet")])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, value in quiet.items():
            logging.getLogger(name).setLevel(value)
    assert code == cli.EXIT_LOCKED == 4
    assert "pid 7 on h" in capsys.readouterr().err


def test_postgres_as_root_finds_runuser_outside_a_cron_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A root job whose PATH lacks the sbin folders (cron's /usr/bin:/bin) still starts PostgreSQL as its user;
    without runuser anywhere, the error says where it looked."""
    sbin, empty = tmp_path / "sbin", tmp_path / "bin"
    sbin.mkdir(), empty.mkdir()
    runuser = sbin / "runuser"
    runuser.write_text("#!/bin/sh\n")
    runuser.chmod(0o755)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(servers, "SYSTEM_BIN_DIRS", (str(sbin),))
    assert servers._as_postgres_user(["initdb", "-D", "x"]) == [str(runuser), "-u", "postgres", "--", "initdb", "-D", "x"]
    monkeypatch.setattr(servers, "SYSTEM_BIN_DIRS", ())
    with pytest.raises(servers.ServerUnavailable, match=f"runuser is missing \\(searched {re.escape(str(empty))}\\)"):
        servers._as_postgres_user(["initdb"])
