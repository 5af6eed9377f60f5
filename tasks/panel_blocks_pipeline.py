"""The panel's global fit from series blocks on disk, as plain functions: the path of a panel larger than
memory (``tasks.data.panel_blocks`` writes the blocks, ``tasks.model.panel_stream`` fits from them).

It gives the same ``FittedPanel`` as ``tasks.panel_pipeline.fit_encoded``, which a later ``bhm forecast``
loads the same way. No Prefect, no MLflow.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from tasks.config import PanelFitConfig, SeriesBlocksConfig
from tasks.data.panel_blocks import PanelBlocks, encode_to_blocks
from tasks.data.series_blocks import SeriesBlocks
from tasks.data.spec import PRODUCT_SIDE, PanelSpec
from tasks.model.inference import FitProgress, FitResult, log_progress
from tasks.model.panel import (
    PanelInputs,
    PanelStructure,
    pad_history,
    padded_basis,
    recency_weights,
    shock_basis_from_sums,
    time_blocks,
)
from tasks.model.panel_state import FittedPanel
from tasks.model.panel_stream import block_inputs, fit_panel_streamed, scan_blocks
from tasks.model.shock_scales import SeriesBatch
from tasks.panel_pipeline import fitted_panel, structure_of, with_moment_shock_scales, with_moment_walk_scale

log = logging.getLogger(__name__)


def structure_for_blocks(blocks: PanelBlocks, config: PanelFitConfig) -> PanelStructure:
    totals = blocks.totals
    if not totals.n_observed:
        raise ValueError("the history has no observed target: nothing to fit")
    if blocks.spec.target_kind == "units":
        log_offset = float(np.log(max(totals.target_sum / totals.n_observed, 1e-3)))
    else:
        log_offset = totals.log_target_sum / totals.n_observed
    largest_censored = totals.censored_max if totals.n_censored else None
    return structure_of(blocks.encoding, blocks.dims, blocks.spec, config, len(blocks.periods), log_offset, largest_censored)


def shared_inputs(blocks: PanelBlocks, structure: PanelStructure, basis: np.ndarray) -> PanelInputs:
    """The model's inputs every series shares, padded to the structure's history (``pad_history``); its series
    fields are empty (each pool brings its own, which ``block_inputs`` pads alike)."""
    n_periods, n_features = blocks.meta.n_periods, blocks.meta.n_features
    offsets = np.arange(n_periods) - (n_periods - 1)  # the history ends at the anchor
    dims = blocks.dims
    inputs = PanelInputs(
        x_time=jnp.asarray(blocks.x_time),
        x_series=jnp.zeros((0, n_periods, n_features), jnp.float32),
        observed=jnp.zeros((0, n_periods), bool),
        y=jnp.zeros((0, n_periods), jnp.float32),
        series_store=jnp.zeros(0, jnp.int32),
        series_product=jnp.zeros(0, jnp.int32),
        store_groups=jnp.asarray(dims.store_groups),
        product_groups=jnp.asarray(dims.product_groups),
        store_attributes=jnp.asarray(dims.store_attributes),
        product_attributes=jnp.asarray(dims.product_attributes),
        block=jnp.asarray(time_blocks(offsets, structure.block_periods)),
        history_index=jnp.asarray(structure.n_history - 1 + offsets, jnp.int32),
        shock_basis=jnp.asarray(padded_basis(basis, structure.n_history)),
        log_offset=jnp.float32(structure.log_offset),
    )
    return pad_history(inputs, structure.n_history)


def block_batches(series_blocks: SeriesBlocks, shared: PanelInputs) -> Iterator[SeriesBatch]:
    """Each block of series read from disk in turn, as the model's inputs (``shared`` with the block's arrays)."""
    for block in series_blocks:
        inputs = block_inputs(shared, block, series_blocks.meta.max_censored)
        yield SeriesBatch(inputs, np.arange(block.size), np.asarray(block.series))


def fit_blocks(
    blocks: PanelBlocks,
    config: PanelFitConfig,
    blocks_per_pool: int,
    key: jax.Array,
    on_progress: Callable[[FitProgress], None] = log_progress,
    info: dict | None = None,
) -> tuple[FittedPanel, FitResult]:
    """The global fit over every series of ``blocks``; series and groups without data get their prior."""
    structure = structure_for_blocks(blocks, config)
    series_blocks = SeriesBlocks(blocks.directory)
    by_product = PRODUCT_SIDE in structure.shocks
    scan = scan_blocks(series_blocks, structure.likelihood, structure.n_products if by_product else None)
    basis = padded_basis(shock_basis_from_sums(blocks.x_time, scan.sums, structure.block_periods), structure.n_history)
    log.info(
        "panel fit from %d series blocks on disk: %d series (%d with data), %d periods, %d observed cells, %d coefficients",
        blocks.meta.n_blocks, blocks.meta.n_series, int((scan.counts > 0).sum()), blocks.meta.n_periods, blocks.meta.n_observed, structure.n_coef,
    )  # fmt: skip
    shared = shared_inputs(blocks, structure, basis)
    result = fit_panel_streamed(series_blocks, shared, scan, structure, config.settings(), key, blocks_per_pool, on_progress)
    if config.moment_shock_scales(blocks.spec.target_kind):
        result = with_moment_shock_scales(result, structure, block_batches(series_blocks, shared), recency_weights(shared, structure))
    if config.moment_walk_scale(blocks.spec.target_kind):
        result = with_moment_walk_scale(result, structure, block_batches(series_blocks, shared))
    return fitted_panel(
        result, structure, blocks.encoding, blocks.dims, blocks.spec, basis, scan.counts > 0, info,
        config.group_walk_scales(blocks.spec.target_kind),
    )  # fmt: skip


def train_from_blocks(
    spec: PanelSpec,
    data: Path,
    fit_config: PanelFitConfig,
    blocks_config: SeriesBlocksConfig,
    key: jax.Array,
    on_progress: Callable[[FitProgress], None] = log_progress,
    info: dict | None = None,
    future: Path | None = None,
) -> tuple[PanelBlocks, FittedPanel, FitResult]:
    """Encode ``spec``'s history into series blocks (``blocks_config.directory``, or a temporary folder
    removed afterwards) and fit from them; ``future``: a future table validated with the history's parts,
    before the fit (a run's forecast reads it after)."""

    def run(directory: Path) -> tuple[PanelBlocks, FittedPanel, FitResult]:
        blocks = encode_to_blocks(spec, data, directory, blocks_config.block_size, blocks_config.stores_per_part, future=future)
        return (blocks, *fit_blocks(blocks, fit_config, blocks_config.blocks_per_pool, key, on_progress, info))

    if blocks_config.directory is not None:
        return run(blocks_config.directory)
    with tempfile.TemporaryDirectory(prefix="bhm-series-blocks-") as tmp:
        return run(Path(tmp) / "blocks")
