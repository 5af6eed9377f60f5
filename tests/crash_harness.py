"""Kill the nightly flow at a fault point and check what it left: shared by tests/test_crash_safety.py
and bench/kill_safety.py.

Run as a script, it is the flow process: ``python tests/crash_harness.py CONFIG.json`` runs the
nightly flow in process on a NightlyConfig read from JSON, as a deployment's worker does with
its parameters (exit 0; 4 when another run holds the outputs' lock). ``BHM_FAULT_POINT`` in its
environment makes it SIGKILL itself at that point (tasks/ops/faults.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Small and quick: 6 stores, 90 days, no short-history store (no local fit to compile).
OPS_DEMO = {"seed": 0, "n_stores": 6, "n_history_days": 90, "horizon": 7, "n_new_stores": 0, "n_gapped_stores": 0}
QUICK = {
    "fit": {"max_steps": 200, "local_max_steps": 100},
    "forecast": {"num_draws": 50},
    "backtest_days": 7,
    "champion": {"max_rmspe": None, "max_coverage_error": None},  # the alias moves on every complete run
}
MODEL = "bhm-forecast"
ALIAS = "champion"
EXIT_LOCKED = 4


def write_demo(folder: Path) -> dict[str, Path]:
    from tasks.data.demo import generate_demo

    return generate_demo(**OPS_DEMO).write(folder)


def nightly_config(files: dict[str, Path], out: Path, **overrides) -> dict:
    return {**{k: str(v) for k, v in files.items()}, "out": str(out), **QUICK, **overrides}


def run_nightly(config: dict, env: dict[str, str], fault: str | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """The nightly flow in a new process (its own session); with ``fault``, killed there."""
    folder = Path(config["out"]).parent
    folder.mkdir(parents=True, exist_ok=True)
    path = folder.parent / f"config-{uuid.uuid4().hex[:12]}.json"
    path.write_text(json.dumps(config))
    child_env = {k: v for k, v in env.items() if k != "BHM_FAULT_POINT"} | ({"BHM_FAULT_POINT": fault} if fault else {})
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), str(path)],
        env=child_env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    finally:
        try:  # whatever the killed process started (nothing, with a Prefect server given)
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        path.unlink(missing_ok=True)
    return subprocess.CompletedProcess(process.args, process.returncode, output, "")


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Snapshot:
    """What a reader sees: the forecast's and the model folder's bytes, the champion version, all versions."""

    forecast: str | None
    model: str | None
    champion: str | None
    versions: tuple[str, ...]


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri, registry_uri=tracking_uri)


def snapshot(out: Path, model_dir: Path, tracking_uri: str) -> Snapshot:
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        champion = str(client.get_model_version_by_alias(MODEL, ALIAS).version)
    except MlflowException:
        champion = None
    try:
        versions = tuple(sorted((str(v.version) for v in client.search_model_versions(f"name='{MODEL}'")), key=int))
    except MlflowException:
        versions = ()
    return Snapshot(
        _sha(out) if out.exists() else None, _sha(model_dir) if model_dir.exists() else None, champion, versions
    )


def torn(out: Path, model_dir: Path, tracking_uri: str) -> list[str]:
    """Every visible output that a reader cannot use whole: an unreadable forecast, a model folder
    that does not load, a champion version whose files are incomplete, a version not READY."""
    import polars as pl

    from tasks.model import state
    from tasks.track import registry

    problems = []
    if out.exists():
        try:
            frame = pl.read_parquet(out)
            if not {"Store", "Date", "mean", "q05", "q95"} <= set(frame.columns) or not frame.height:
                problems.append(f"{out}: columns or rows missing")
        except Exception as err:  # noqa: BLE001 - any failure to read is a torn file
            problems.append(f"{out}: unreadable ({err})")
    if model_dir.exists():
        try:
            state.load(model_dir)
        except Exception as err:  # noqa: BLE001
            problems.append(f"{model_dir}: does not load ({err})")
    client = _client(tracking_uri)
    for version in client.search_model_versions(f"name='{MODEL}'"):
        if version.status != "READY":
            problems.append(f"version {version.version}: {version.status}")
    try:
        champion = str(client.get_model_version_by_alias(MODEL, ALIAS).version)
    except Exception:  # noqa: BLE001 - no champion yet
        champion = None
    if champion is not None and not registry.version_is_complete(client, MODEL, champion):
        problems.append(f"@{ALIAS} -> version {champion}: its model files are incomplete")
    return problems


def pair_mismatch(out: Path, model_dir: Path) -> bool:
    """Whether the forecast's model_version differs from the model folder's (a forecast and a model of different fits)."""
    import polars as pl

    from tasks.model import state

    return pl.read_parquet(out)["model_version"].unique().to_list() != [state.load(model_dir).model_version]


def debris(out: Path) -> list[str]:
    """Temporary files and folders beside the outputs (hidden; the next write of that output removes them)."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.endswith((".tmp", ".old")))


def visible(out: Path) -> list[str]:
    """What a reader listing the folder sees: everything but hidden entries."""
    return sorted(p.name for p in out.parent.iterdir() if not p.name.startswith("."))


def run_status(tracking_uri: str, pid: int) -> list[str]:
    """Statuses of the MLflow runs that process ``pid`` opened (tag bhm.pid)."""
    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name("bhm-forecast")
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`bhm.pid` = '{pid}'")
    return [run.info.status for run in runs]


def main(argv: list[str]) -> int:
    from flows import environment

    environment.configure()
    from flows.nightly import nightly
    from tasks.config import NightlyConfig
    from tasks.ops.lock import RunLockedError

    config = NightlyConfig.model_validate_json(Path(argv[1]).read_text())
    try:
        result = nightly(config)
    except RunLockedError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_LOCKED
    print(f"registered: {result.registration.describe() if result.registration else None}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
