"""Prefect tasks of the replenish flow: thin wrappers around ``tasks.inventory`` (see ``tasks.stages`` for
the retry and cache policies they share)."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from tasks.config import ForecastConfig
from tasks.data.panel_encode import EncodedPanelData
from tasks.data.spec import PanelSpec
from tasks.inventory import replenish
from tasks.inventory.ingest import InventoryInputs, read_inventory
from tasks.model.panel_state import FittedPanel
from tasks.stages import compute_task, io_task, publishing_validation_failure


@io_task("read and validate the inventory")
def inventory(spec: PanelSpec, data: Path, keys: list[tuple], periods: np.ndarray) -> InventoryInputs:
    with publishing_validation_failure():
        return read_inventory(spec, data, keys, periods)


@compute_task("orders")
def orders(
    fitted: FittedPanel, encoded: EncodedPanelData, positions: np.ndarray, inputs: InventoryInputs, config: ForecastConfig, key: jax.Array
) -> dict[str, np.ndarray]:
    return replenish.replenish_encoded(fitted, encoded, positions, inputs.policy, config, key)
