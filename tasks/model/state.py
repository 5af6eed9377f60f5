"""Fitted state on disk: plain arrays in ``.npz`` plus JSON metadata, never pickle.

A fitted model is a folder with ``params.npz`` (the variational parameters)
and ``model.json`` (model structure, encoding spec, store ids, anchor date,
versions, data fingerprint, fit summary). It is written to a temporary
folder and swapped into place only when complete (``tasks.ops.atomic``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data.encode import EncodingSpec
from tasks.model.inference import Params
from tasks.model.store_day import ModelStructure, Site
from tasks.ops import atomic

STATE_VERSION = 2  # 2: scale mixture over the dispersion, shock-scale covariates
PARAMS_FILE = "params.npz"
META_FILE = "model.json"
PACKAGES = ("bhm-forecast", "jax", "numpyro", "polars", "pandera")


@dataclass(frozen=True)
class FittedModel:
    """Everything a forecast needs: parameters for each store, and how to encode."""

    params: Params
    store_ids: np.ndarray  # int32 [S]; store-level params follow this order
    structure: ModelStructure
    spec: EncodingSpec
    anchor: dt.date  # last history day: level block 0 ends here
    day_basis: np.ndarray  # [n_history_days, K]: calendar span the day shocks are kept off (local fits need it)
    info: dict[str, Any] = field(default_factory=dict)
    history_shock_x: np.ndarray | None = None  # [n_history_days, C]: shock-scale covariates of the history (local fits need them)

    def __post_init__(self) -> None:
        n_stores = len(self.store_ids)
        for site in Site.STORE:
            for part in ("loc", "scale"):
                shape = self.params[f"{site}.{part}"].shape
                if shape[0] != n_stores:
                    raise ValueError(f"{site}.{part} has {shape[0]} stores, store_ids has {n_stores}")

    @property
    def model_version(self) -> str:
        return str(self.info.get("model_version", "unversioned"))

    def positions(self, store_ids: np.ndarray) -> np.ndarray:
        lookup = {int(s): i for i, s in enumerate(self.store_ids)}
        missing = [int(s) for s in store_ids if int(s) not in lookup]
        if missing:
            raise ValueError(f"the fitted model has no parameters for stores {missing[:10]}")
        return np.array([lookup[int(s)] for s in store_ids], dtype=np.int64)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def file_fingerprint(*paths: str | Path) -> str:
    """sha256 over the bytes of the given files, in order."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def save(model: FittedModel, directory: str | Path) -> Path:
    """Write the model folder atomically (``tasks.ops.atomic.write_folder``); an existing folder is replaced whole."""
    extra = {} if model.history_shock_x is None else {"history_shock_x": model.history_shock_x}
    meta = {
        "state_version": STATE_VERSION,
        "structure": asdict(model.structure),
        "spec": json.loads(model.spec.to_json()),
        "anchor": model.anchor.isoformat(),
        "info": model.info,
    }

    def write(tmp: Path) -> None:
        np.savez(tmp / PARAMS_FILE, store_ids=model.store_ids, day_basis=model.day_basis, **extra, **model.params)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))

    return atomic.write_folder(directory, write)


def load(directory: str | Path) -> FittedModel:
    directory = Path(directory)
    meta_path, params_path = directory / META_FILE, directory / PARAMS_FILE
    if not meta_path.is_file() or not params_path.is_file():
        raise FileNotFoundError(f"{directory} is not a fitted model folder (needs {META_FILE} and {PARAMS_FILE})")
    meta = json.loads(meta_path.read_text())
    if meta.get("state_version") != STATE_VERSION:
        raise ValueError(f"{directory}: state version {meta.get('state_version')!r} is not supported ({STATE_VERSION})")
    structure_fields = meta["structure"]
    for key, value in structure_fields.items():
        if isinstance(value, list):
            structure_fields[key] = tuple(value)
    with np.load(params_path, allow_pickle=False) as arrays:
        params = {k: arrays[k] for k in arrays.files if k not in ("store_ids", "day_basis", "history_shock_x")}
        history_shock_x = arrays["history_shock_x"] if "history_shock_x" in arrays.files else None
        store_ids = arrays["store_ids"]
        day_basis = arrays["day_basis"]
    return FittedModel(
        params=params,
        store_ids=store_ids,
        structure=ModelStructure(**structure_fields),
        spec=EncodingSpec.from_json(json.dumps(meta["spec"])),
        anchor=dt.date.fromisoformat(meta["anchor"]),
        day_basis=day_basis,
        history_shock_x=history_shock_x,
        info=meta["info"],
    )
