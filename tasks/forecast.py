"""Posterior predictive forecasts from a fitted guide, in bounded memory.

Draws run through the model itself (``Predictive`` with the fitted guide), so
fitting and forecasting share one model function. Stores are processed in
fixed-size chunks (the last one padded), so one compiled program serves every
chunk and memory stays at chunk x draws x days, whatever the store count.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import Predictive

from tasks.inference import Params, guide
from tasks.model import ModelInputs, ModelStructure, Site, model

DEFAULT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True)
class ForecastArrays:
    """Predictive summaries per [store, day]: mean and quantiles of daily sales."""

    mean: np.ndarray  # [S, T]
    quantiles: np.ndarray  # [Q, S, T]
    levels: tuple[float, ...]


def select_store_params(params: Params, positions: np.ndarray) -> Params:
    """Guide parameters restricted to the stores at ``positions`` (globals kept)."""
    store_keys = {f"{s}.{part}" for s in Site.STORE for part in ("loc", "scale")}
    return {k: (v[positions] if k in store_keys else v) for k, v in params.items()}


def _chunk_inputs(inputs: ModelInputs, rows: np.ndarray) -> ModelInputs:
    return inputs._replace(
        store_day_x=inputs.store_day_x[rows],
        store_z=inputs.store_z[rows],
        observed=inputs.observed[rows],
        sales=None,
    )


def forecast(
    params: Params,
    structure: ModelStructure,
    inputs: ModelInputs,
    key: jax.Array,
    num_draws: int = 1000,
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES,
    chunk_stores: int = 128,
) -> ForecastArrays:
    """Predictive mean and quantiles of sales for every store and day of ``inputs``.

    ``params`` holds store-level parameters for exactly the stores of
    ``inputs``, in the same order. The mean is the average of the expected
    sales over posterior draws (the exact predictive mean for those draws);
    quantiles come from draws of the negative binomial itself.
    """
    if num_draws < 1:
        raise ValueError(f"num_draws must be >= 1, got {num_draws}")
    if not all(0.0 < q < 1.0 for q in quantiles):
        raise ValueError(f"quantiles must lie strictly between 0 and 1, got {quantiles}")
    n_stores, n_days = inputs.observed.shape
    n_store_params = params[f"{Site.POOLED_RAW}.loc"].shape[0]
    if n_store_params != n_stores:
        raise ValueError(f"params hold {n_store_params} stores but inputs have {n_stores}")
    n_future = int(np.max(np.asarray(inputs.block), initial=0))
    if int(np.min(np.asarray(inputs.block))) < -structure.n_past_blocks:
        raise ValueError("inputs reach further back than the fitted level path")
    future_structure = replace(structure, n_future_blocks=n_future)
    chunk = max(1, min(chunk_stores, n_stores))
    levels = jnp.asarray(quantiles, jnp.float32)

    @jax.jit
    def summarise(chunk_params: Params, chunk_inputs: ModelInputs, key: jax.Array):
        predictive = Predictive(
            partial(model, structure=future_structure),
            guide=partial(guide, structure=future_structure),
            params=chunk_params,
            num_samples=num_draws,
            return_sites=[Site.SALES, Site.EXPECTED_SALES],
        )
        draws = predictive(key, chunk_inputs)
        expected = draws[Site.EXPECTED_SALES].mean(axis=0)
        return expected, jnp.quantile(draws[Site.SALES], levels, axis=0)

    mean = np.empty((n_stores, n_days), np.float32)
    quants = np.empty((len(quantiles), n_stores, n_days), np.float32)
    for start in range(0, n_stores, chunk):
        rows = np.arange(start, start + chunk)
        valid = rows < n_stores
        rows = np.where(valid, rows, n_stores - 1)  # pad the last chunk: same shape, one compile
        chunk_params = select_store_params(params, rows)
        key, sub = jax.random.split(key)
        expected, q = summarise(chunk_params, _chunk_inputs(inputs, rows), sub)
        keep = rows[valid]
        mean[keep] = np.asarray(expected)[valid]
        quants[:, keep] = np.asarray(q)[:, valid]
    return ForecastArrays(mean=mean, quantiles=quants, levels=tuple(quantiles))
