"""A fitted panel model on disk: ``params.npz`` (plain arrays, loaded with ``allow_pickle=False``) and
``model.json`` (structure, encoding, the spec it was fitted under, fit summary). Written to a temporary
folder and renamed into place when complete, replacing any previous folder whole."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data.panel_encode import PanelEncoding
from tasks.data.spec import PanelSpec
from tasks.model.inference import Params
from tasks.model.panel import PanelStructure
from tasks.ops.atomic import write_folder

PANEL_STATE_VERSION = 2  # 2: shock bases [1 + n_products or 1, T, K]
PARAMS_FILE = "params.npz"
META_FILE = "model.json"
SHOCK_BASIS = "shock_basis"


@dataclass(frozen=True)
class FittedPanel:
    params: Params
    structure: PanelStructure
    encoding: PanelEncoding
    spec: PanelSpec
    shock_basis: np.ndarray  # [1 + n_products or 1, n_history, K] (model.panel.shock_basis)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def model_version(self) -> str:
        return str(self.info.get("model_version", "unversioned"))


def save(model: FittedPanel, directory: str | Path) -> Path:
    def fill(tmp: Path) -> None:
        np.savez(tmp / PARAMS_FILE, **{SHOCK_BASIS: model.shock_basis}, **model.params)
        meta = {
            "panel_state_version": PANEL_STATE_VERSION,
            "structure": asdict(model.structure),
            "encoding": json.loads(model.encoding.to_json()),
            "spec": model.spec.model_dump(mode="json"),
            "info": model.info,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))

    return write_folder(directory, fill)


def structure_from_json(values: dict) -> PanelStructure:
    """A ``PanelStructure`` from its ``asdict`` form read back from JSON (lists back to tuples)."""
    return PanelStructure(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def load(directory: str | Path) -> FittedPanel:
    directory = Path(directory)
    meta_path, params_path = directory / META_FILE, directory / PARAMS_FILE
    if not meta_path.is_file() or not params_path.is_file():
        raise FileNotFoundError(f"{directory} is not a fitted panel model folder (needs {META_FILE} and {PARAMS_FILE})")
    meta = json.loads(meta_path.read_text())
    if meta.get("panel_state_version") != PANEL_STATE_VERSION:
        raise ValueError(f"{directory}: panel state version {meta.get('panel_state_version')!r} is not supported")
    with np.load(params_path, allow_pickle=False) as arrays:
        params = {k: arrays[k] for k in arrays.files if k != SHOCK_BASIS}
        basis = arrays[SHOCK_BASIS]
    return FittedPanel(
        params=params,
        structure=structure_from_json(meta["structure"]),
        encoding=PanelEncoding.from_json(json.dumps(meta["encoding"])),
        spec=PanelSpec.model_validate(meta["spec"]),
        shock_basis=basis,
        info=meta["info"],
    )
