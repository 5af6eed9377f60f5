"""The MLflow model registry: log a fitted model as a models-from-code pyfunc, register it, move aliases, load.

With ``tasks.track.tracking`` and ``tasks.track.mlflow_model``, the only modules that
import MLflow. Calls go through an explicit ``MlflowClient``; loading by
``models:/`` URI needs MLflow's global registry URI, set here per call.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ParamSchema, ParamSpec

from tasks.config import ForecastConfig, ModelSource
from tasks.model import state
from tasks.track import mlflow_model
from tasks.track.tracking import mask_credentials

log = logging.getLogger(__name__)

MODEL_ARTIFACT_PATH = "model"
# What the model needs at load time: this package and the libraries it was fitted with.
SIGNATURE = ModelSignature(
    inputs=None,
    outputs=None,
    params=ParamSchema([ParamSpec("seed", "long", 0), ParamSpec("num_draws", "long", ForecastConfig().num_draws)]),
)
REQUIREMENTS = ("jax", "numpyro", "polars", "pyarrow", "pandera", "numpy", "pydantic", "pandas")


def _requirements() -> list[str]:
    versions = state.package_versions()
    pinned = [f"{name}=={versions[name]}" for name in REQUIREMENTS if versions.get(name, "not installed") != "not installed"]
    return [*pinned, f"bhm-forecast=={versions['bhm-forecast']}"]


def log_forecast_model(client: MlflowClient, run_id: str, fitted_dir: Path, stores_path: Path) -> str:
    """Save the fitted model as a pyfunc (code file + artifacts) and log it under the run; returns its runs:/ URI.

    The signature declares the predict params only: the input is a calendar
    file's columns, checked by the project's own validation (with the file,
    column and rows of each broken rule) rather than by MLflow's schema.
    """
    with tempfile.TemporaryDirectory(prefix="bhm-model-") as tmp, warnings.catch_warnings():
        # MLflow asks for an input example; the calendar's validation is ours (see above).
        warnings.filterwarnings("ignore", message=".*An input example was not provided")
        folder = Path(tmp) / MODEL_ARTIFACT_PATH
        mlflow.pyfunc.save_model(
            path=str(folder),
            python_model=mlflow_model.__file__,
            artifacts={mlflow_model.FITTED_ARTIFACT: str(fitted_dir), mlflow_model.STORES_ARTIFACT: str(stores_path)},
            signature=SIGNATURE,
            pip_requirements=_requirements(),
        )
        client.log_artifacts(run_id, str(folder), artifact_path=MODEL_ARTIFACT_PATH)
    return f"runs:/{run_id}/{MODEL_ARTIFACT_PATH}"


def register_version(client: MlflowClient, name: str, run_id: str, tags: dict[str, str] | None = None) -> ModelVersion:
    """A new version of registered model ``name`` (created if missing) from the run's logged model."""
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Daily sales forecasts per store (bhm-forecast)")
    return client.create_model_version(
        name, source=f"runs:/{run_id}/{MODEL_ARTIFACT_PATH}", run_id=run_id, tags=tags or {}, await_creation_for=60
    )


def version_is_complete(client: MlflowClient, name: str, version: str) -> bool:
    """Whether version ``version`` of ``name`` is READY and its run holds the model's files (MLmodel,
    the code, the fitted parameters and metadata): the alias moves only to such a version."""
    found = client.get_model_version(name, version)
    if found.status != "READY" or not found.run_id:
        return False
    present: set[str] = set()
    pending = [MODEL_ARTIFACT_PATH]
    while pending:
        for item in client.list_artifacts(found.run_id, pending.pop()):
            if item.is_dir:
                pending.append(item.path)
            else:
                present.add(item.path)
    # MLflow keeps each artifact under model/artifacts/<the source's base name>/.
    needed = {
        "MLmodel": f"{MODEL_ARTIFACT_PATH}/MLmodel" in present,
        state.PARAMS_FILE: any(p.startswith(f"{MODEL_ARTIFACT_PATH}/artifacts/") and p.endswith(f"/{state.PARAMS_FILE}") for p in present),
        state.META_FILE: any(p.startswith(f"{MODEL_ARTIFACT_PATH}/artifacts/") and p.endswith(f"/{state.META_FILE}") for p in present),
    }
    missing = [name for name, found in needed.items() if not found]
    if missing:
        log.warning("%s version %s lacks %s", name, version, ", ".join(missing))
    return not missing


def set_alias(client: MlflowClient, name: str, alias: str, version: str) -> None:
    client.set_registered_model_alias(name, alias, version)


def load_fitted(source: ModelSource, tracking_uri: str) -> state.FittedModel:
    """The fitted model of a folder, or of a registered version (by number or alias).

    Through an explicit client: ``mlflow.set_tracking_uri`` would also write
    ``MLFLOW_TRACKING_URI`` into the process environment, where it outlives the call.
    """
    if source.path is not None:
        return state.load(source.path)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        if source.version is not None:
            version = client.get_model_version(source.registered_model, str(source.version))
        else:
            version = client.get_model_version_by_alias(source.registered_model, source.alias)
        with tempfile.TemporaryDirectory(prefix="bhm-registered-") as tmp:
            folder = client.download_artifacts(version.run_id, MODEL_ARTIFACT_PATH, tmp)
            loaded = mlflow.pyfunc.load_model(folder)
            fitted = loaded.unwrap_python_model().fitted
    except MlflowException as err:
        where = mask_credentials(tracking_uri)
        raise ValueError(f"cannot load the registered model {source.uri} from {where}: {mask_credentials(err.message)}") from err
    log.info("loaded %s (version %s)", source.uri, version.version)
    return fitted
