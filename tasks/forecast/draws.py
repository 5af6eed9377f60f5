"""Posterior predictive forecasts from a fitted guide, in bounded memory.

Draws run through the model itself (``Predictive`` with the fitted guide), so
fitting and forecasting share one model function. Stores are processed in
fixed-size chunks (the last one padded), so one compiled program serves every
chunk and memory stays at chunk x draws x days, whatever the store count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import Predictive

from tasks.model.inference import Params, guide
from tasks.model.negbin import draw_counts, mixture_concentration
from tasks.model.store_day import ModelInputs, ModelStructure, Site, model

DEFAULT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def quantiles_of_draws(draws: np.ndarray, levels: tuple[float, ...], overwrite: bool = False) -> np.ndarray:
    """``np.quantile(draws, levels, axis=-1)`` (its default, linear method, to the last bit), by a sort:
    numpy's vectorised sort of each cell's draws is about ten times faster than the selection that
    np.quantile runs for several levels at once (and than a sort in XLA on a CPU). ``overwrite``: sort
    ``draws`` in place (each cell's draws reordered) instead of a copy."""
    ordered = draws if overwrite and draws.flags.writeable else np.array(draws)
    ordered.sort(axis=-1)
    n = ordered.shape[-1]
    position = (n - 1) * np.asarray(levels, np.float64)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, n - 1)
    out = np.empty((len(levels), *ordered.shape[:-1]), np.result_type(ordered.dtype, np.float64))
    for i, (low, high, t) in enumerate(zip(below, above, position - below, strict=True)):
        a, b = ordered[..., low], ordered[..., high]
        # numpy's lerp: the difference in the draws' type, then from the nearer end in float64
        difference = (b - a).astype(out.dtype)
        out[i] = a + difference * t if t < 0.5 else b - difference * (1.0 - t)
    return out


@dataclass(frozen=True)
class ChunkPlan:
    """How the series are cut: equal compiled chunks of at most ``chunk_series`` (the last one padded), and
    partitions of whole consecutive chunks. A chunk's draws depend on its number only, so a series' forecast is
    the same whichever partition computes it; partitions are what an engine fans out."""

    n_series: int
    chunk: int  # series per chunk
    n_chunks: int
    chunks_per_partition: int

    @classmethod
    def make(cls, n_series: int, chunk_series: int, series_per_partition: int | None = None) -> ChunkPlan:
        if n_series < 1:
            raise ValueError(f"there must be at least one series to forecast, got {n_series}")
        n_chunks = -(-n_series // max(1, chunk_series))
        chunk = -(-n_series // n_chunks)
        per_partition = n_chunks if series_per_partition is None else max(1, series_per_partition // chunk)
        return cls(n_series, chunk, n_chunks, per_partition)

    @property
    def n_partitions(self) -> int:
        return -(-self.n_chunks // self.chunks_per_partition)

    def chunks(self, partition: int) -> range:
        if not 0 <= partition < self.n_partitions:
            raise ValueError(f"partition {partition} is not among the plan's {self.n_partitions}")
        first = partition * self.chunks_per_partition
        return range(first, min(first + self.chunks_per_partition, self.n_chunks))

    def rows(self, number: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunk ``number``'s series positions, the last chunk padded with the last series (one compiled shape),
        and which of them are real."""
        rows = np.arange(number * self.chunk, (number + 1) * self.chunk)
        valid = rows < self.n_series
        return np.where(valid, rows, self.n_series - 1), valid

    def series(self, partition: int) -> range:
        chunks = self.chunks(partition)
        return range(chunks.start * self.chunk, min(chunks.stop * self.chunk, self.n_series))


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


@partial(jax.jit, static_argnames=("structure", "num_draws"))
def _posterior_draws(params: Params, inputs: ModelInputs, key: jax.Array, structure: ModelStructure, num_draws: int):
    """Expected sales [D, s, T] (with their mean and log) and each draw's concentration [D, s, T]."""
    key_model, key_component = jax.random.split(key)
    predictive = Predictive(
        partial(model, structure=structure),
        guide=partial(guide, structure=structure),
        params=params,
        num_samples=num_draws,
        return_sites=[Site.EXPECTED_SALES, Site.CONCENTRATION, Site.COMPONENT_LOG_WEIGHTS, Site.COMPONENT_OFFSETS],
    )
    draws = predictive(key_model, inputs)
    expected = draws[Site.EXPECTED_SALES]
    concentration = mixture_concentration(
        key_component, draws[Site.CONCENTRATION], draws[Site.COMPONENT_LOG_WEIGHTS], draws[Site.COMPONENT_OFFSETS], expected.shape
    )
    return expected.mean(axis=0), jnp.log(expected), concentration


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
    chunk_stores: int = 256,
    on_draws: Callable[[np.ndarray, np.ndarray], None] | None = None,
) -> ForecastArrays:
    """Predictive mean and quantiles of sales for every store and day of ``inputs``.

    ``params`` holds store-level parameters for exactly the stores of
    ``inputs``, in the same order. The mean is the average of the expected
    sales over posterior draws (the exact predictive mean for those draws);
    quantiles come from draws of the negative binomial itself. ``on_draws``,
    when given, sees each chunk's sales draws ``[draws, stores, days]`` with
    the store positions they belong to (scores that need every draw, e.g. CRPS).
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
    plan = ChunkPlan.make(n_stores, chunk_stores)

    mean = np.empty((n_stores, n_days), np.float32)
    quants = np.empty((len(quantiles), n_stores, n_days), np.float32)
    for number in range(plan.n_chunks):
        rows, valid = plan.rows(number)
        chunk_params = select_store_params(params, rows)
        key, key_posterior, key_sales = jax.random.split(key, 3)
        expected, log_expected, concentration = _posterior_draws(
            chunk_params, _chunk_inputs(inputs, rows), key_posterior, future_structure, num_draws
        )
        # Sales are drawn outside the vmapped model, so that the sampler picks
        # its fast path once per chunk instead of evaluating every path per draw.
        sales = draw_counts(key_sales, log_expected, concentration)
        keep = rows[valid]
        mean[keep] = np.asarray(expected)[valid]
        quants[:, keep] = quantiles_of_draws(np.moveaxis(sales, 0, -1)[valid], quantiles)
        if on_draws is not None:
            on_draws(keep, np.asarray(sales)[:, valid])
    return ForecastArrays(mean=mean, quantiles=quants, levels=tuple(quantiles))
