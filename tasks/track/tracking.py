"""MLflow tracking of a run, isolated: the only module of the project that imports mlflow.

Flows open a run with ``tracked_run`` and log through the small functions here;
every call goes through an explicit ``MlflowClient`` and run id, never through
MLflow's global "active run" state, so that concurrent flows cannot mix runs.

Where runs go: ``MLFLOW_TRACKING_URI`` when set (a team's ``mlflow server``),
else a SQLite database ``$BHM_HOME/mlflow.db`` (``BHM_HOME`` defaults to
``~/.bhm``), with artifacts under ``$BHM_HOME/mlartifacts``. MLflow's own
default, ``sqlite:///mlflow.db`` relative to the working directory, would
scatter databases wherever a flow happens to start.

ELBO traces are logged with ``MlflowClient.log_batch`` in chunks of at most
``MAX_METRICS_PER_BATCH`` (1000 in MLflow 3) points per call: one
``log_metric`` per step costs a database round trip each (275 s for 20,000
points on SQLite, against 4.3 s batched).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from tasks.ops.atomic import sweep_stale, temp_path
from tasks.ops.home import bhm_home
from tasks.ops.process import ProcessId

try:
    from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAM_VAL_LENGTH
except ImportError:  # pragma: no cover - the constants moved; keep MLflow 3's documented limits
    MAX_METRICS_PER_BATCH, MAX_PARAM_VAL_LENGTH = 1000, 6000

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from tasks.pipeline import FitReport

log = logging.getLogger(__name__)

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
SUPPRESS_URL_PRINTING_ENV = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
PLOTS_DIR = "plots"


# --- where -------------------------------------------------------------------


def home_dir(path: Path | str | None = None) -> Path:
    """The project's home folder: ``path``, else ``$BHM_HOME``, else ``~/.bhm``; absolute, created if missing."""
    home = Path(path).expanduser().resolve() if path is not None else bhm_home()
    home.mkdir(parents=True, exist_ok=True)
    return home


def tracking_uri(bhm_home: Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<abs BHM_HOME>/mlflow.db``, created whole the
    first time (``create_database``)."""
    from_env = os.environ.get(TRACKING_URI_ENV, "").strip()
    if from_env:
        return from_env
    path = home_dir(bhm_home) / DB_FILE
    if not path.exists():
        create_database(path)
    return f"sqlite:///{path.as_posix()}"


def create_database(path: Path) -> None:
    """An empty MLflow SQLite database at ``path``, built under a temporary name and linked into place.

    MLflow creates its schema in some hundred migration steps: a first run stopped during them (a
    scheduler's SIGTERM, an out-of-memory kill) would leave a database that every later run rejects as
    out of date. Linking (not renaming) makes two first runs at once safe: one database wins, the other
    run uses it.
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    sweep_stale(path)
    tmp = temp_path(path)
    try:
        store = SqlAlchemyStore(f"sqlite:///{tmp.as_posix()}", artifact_location(bhm_home=path.parent))
        store.engine.dispose()
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another run created it first
    finally:
        tmp.unlink(missing_ok=True)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "experiment"


def artifact_location(experiment: str | None = None, bhm_home: Path | None = None) -> str:
    """File URI of the artifact folder: ``<BHM_HOME>/mlartifacts[/<experiment slug>]``, created if missing."""
    folder = home_dir(bhm_home) / ARTIFACTS_DIR
    if experiment is not None:
        folder = folder / _slug(experiment)
    folder.mkdir(parents=True, exist_ok=True)
    return folder.as_uri()


_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^/@\s:]*)(?::[^/@\s]*)?@")


def mask_credentials(text: str) -> str:
    """``text`` with the user and password of every URI in it masked: ``scheme://***:***@host/...``.

    Applied to everything this project logs, prints, or records as a param or tag that may hold
    a URI (tracking URIs, database URLs, run links), so that a password given in
    ``MLFLOW_TRACKING_URI`` or a database URL never reaches a log or the tracking server.
    """
    return _CREDENTIALS.sub(lambda m: f"{m.group('scheme')}***:***@", text)


def _is_local(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


# --- runs ----------------------------------------------------------------------


@contextmanager
def tracked_run(
    experiment: str, run_name: str, tags: Mapping[str, str] | None = None, uri: str | None = None
) -> Iterator[tuple[MlflowClient, str]]:
    """Open a run in ``experiment`` (created if missing) and yield ``(client, run_id)``.

    The run ends FINISHED when the block completes, FAILED when it raises (the
    exception propagates), KILLED on KeyboardInterrupt and the like. With a
    local backend (SQLite, file) a new experiment stores its artifacts under
    BHM_HOME; with a tracking server, the server's artifact store decides.
    """
    uri = uri or tracking_uri()
    if mask_credentials(uri) != uri:
        # MLflow prints "View run ... at: <tracking URI>/#/..." to stdout when a run ends: with the password.
        os.environ[SUPPRESS_URL_PRINTING_ENV] = "true"
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        location = artifact_location(experiment) if _is_local(uri) else None
        experiment_id = client.create_experiment(experiment, artifact_location=location)
    else:
        experiment_id = found.experiment_id
    mark_dead_runs(client, experiment_id)
    process = ProcessId.current()
    run_tags = {key: mask_credentials(str(value)) for key, value in {**(tags or {}), **process.tags()}.items()}
    run = client.create_run(experiment_id, run_name=run_name, tags=run_tags)
    run_id = run.info.run_id
    status = RunStatus.to_string(RunStatus.FINISHED)
    try:
        yield client, run_id
    except Exception:
        status = RunStatus.to_string(RunStatus.FAILED)
        raise
    except BaseException:
        status = RunStatus.to_string(RunStatus.KILLED)
        raise
    finally:
        client.set_terminated(run_id, status=status)


def mark_dead_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """End as FAILED the RUNNING runs of the experiment whose process (named by their ``bhm.host``,
    ``bhm.pid`` and ``bhm.process_start`` tags) is gone from this host: a run killed with SIGKILL
    (out of memory, a drained node) cannot end its own run. Runs of other hosts are left alone.
    Returns the ids of the runs it ended."""
    ended = []
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000)
    for run in running:
        process = ProcessId.from_tags(run.data.tags)
        if process is None or not process.is_gone():
            continue
        reason = f"its process ({process.describe()}) ended without closing the run; marked FAILED by pid {os.getpid()}"
        client.set_tag(run.info.run_id, "bhm.failed_reason", reason)
        client.set_terminated(run.info.run_id, status=RunStatus.to_string(RunStatus.FAILED))
        log.warning("MLflow run %s: %s", run.info.run_id, reason)
        ended.append(run.info.run_id)
    return ended


# --- parameters ------------------------------------------------------------------


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, list | dict) else str(value)
    text = mask_credentials(text)
    return text if len(text) <= MAX_PARAM_VAL_LENGTH else text[: MAX_PARAM_VAL_LENGTH - 3] + "..."


def flatten_config(config: BaseModel) -> dict[str, str]:
    """The config as flat MLflow params: nested keys joined with ".", values as strings (lists as JSON)."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            flat[prefix] = _param_value(value)

    walk("", config.model_dump(mode="json"))
    return flat


def log_config(client: MlflowClient, run_id: str, config: BaseModel) -> dict[str, str]:
    """Log the whole config as params (batched) and return what was logged."""
    params = flatten_config(config)
    client.log_batch(run_id, params=[Param(key, value) for key, value in params.items()])
    return params


# --- metrics -----------------------------------------------------------------------


def _now_ms() -> int:
    return int(time.time() * 1000)


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """Log scalar metrics in one batched call (MLflow splits by its own limits)."""
    if not metrics:
        return
    timestamp = _now_ms()
    client.log_batch(run_id, metrics=[Metric(key, float(value), timestamp, step) for key, value in metrics.items()])


def log_loss_trace(
    client: MlflowClient, run_id: str, key: str, losses: np.ndarray, step_offset: int = 0, chunk: int = MAX_METRICS_PER_BATCH
) -> int:
    """Log a per-step loss trace under ``key`` (steps ``step_offset + 1 ...``) with ``log_batch`` calls of
    at most ``chunk`` points each; returns the number of calls. Non-finite values are logged as they are."""
    if not 1 <= chunk <= MAX_METRICS_PER_BATCH:
        raise ValueError(f"chunk must be in 1..{MAX_METRICS_PER_BATCH}, got {chunk}")
    values = np.asarray(losses, dtype=float).ravel()
    timestamp = _now_ms()
    calls = 0
    for start in range(0, values.size, chunk):
        batch = [
            Metric(key, float(v), timestamp, step_offset + start + i + 1) for i, v in enumerate(values[start : start + chunk])
        ]
        client.log_batch(run_id, metrics=batch)
        calls += 1
    return calls


def _final_loss(losses: np.ndarray, tail: int = 100) -> float:
    """Mean loss over the last ``tail`` steps (single steps are noisy under SVI); NaN if there are none."""
    values = np.asarray(losses, dtype=float).ravel()[-tail:]
    return float(values.mean()) if values.size else math.nan


def fit_metrics(report: FitReport) -> dict[str, float]:
    """The scalar summary of a fit report: times, steps, convergence (0/1), final loss, store counts."""
    metrics: dict[str, float] = {
        "fit_seconds": report.seconds,
        "n_global_stores": report.n_global_stores,
        "n_local_stores": report.n_local_stores,
        "n_prior_only_stores": report.n_prior_only_stores,
    }
    for prefix, fit in (("global", report.global_fit), ("local", report.local_fit)):
        if fit is None:
            continue
        metrics |= {
            f"{prefix}_steps": fit.n_steps,
            f"{prefix}_converged": 1.0 if fit.converged else 0.0,
            f"{prefix}_compile_seconds": fit.compile_seconds,
            f"{prefix}_run_seconds": fit.run_seconds,
            f"{prefix}_final_loss": _final_loss(fit.losses),
        }
    return {key: float(value) for key, value in metrics.items()}


def log_fit_report(client: MlflowClient, run_id: str, report: FitReport, traces: bool = True) -> dict[str, float]:
    """Log ``fit_metrics(report)``; with ``traces``, also the per-step losses as ``elbo_global`` / ``elbo_local``."""
    metrics = fit_metrics(report)
    log_metrics(client, run_id, metrics)
    if traces:
        log_loss_trace(client, run_id, "elbo_global", report.global_fit.losses)
        if report.local_fit is not None:
            log_loss_trace(client, run_id, "elbo_local", report.local_fit.losses)
    return metrics


# --- artifacts ------------------------------------------------------------------------


def log_figure(client: MlflowClient, run_id: str, fig: Figure, name: str) -> str:
    """Log ``fig`` as ``plots/<name>.png``; returns the artifact path."""
    file_name = name if name.endswith((".png", ".svg", ".pdf")) else f"{name}.png"
    artifact = f"{PLOTS_DIR}/{file_name}"
    client.log_figure(run_id, fig, artifact)
    return artifact


def log_frame(client: MlflowClient, run_id: str, frame: pl.DataFrame, file_name: str, artifact_path: str) -> None:
    """Log ``frame`` as the Parquet file ``<artifact_path>/<file_name>``."""
    with tempfile.TemporaryDirectory(prefix="bhm-frame-") as tmp:
        path = Path(tmp) / file_name
        frame.write_parquet(path)
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)


def log_artifact(client: MlflowClient, run_id: str, path: Path | str, artifact_path: str | None = None) -> None:
    """Log a file, or a folder (e.g. the fitted state) with everything in it."""
    path = Path(path)
    if path.is_dir():
        client.log_artifacts(run_id, str(path), artifact_path=artifact_path or path.name)
    else:
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)
