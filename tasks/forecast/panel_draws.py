"""Posterior predictive draws of the panel model, per series and per aggregate, in bounded memory.

Joint draws: every global latent variable and every shock of the periods ahead (chain-wide and per
store) is drawn once per draw for all series, then the series are processed in chunks, each drawing
its own series-level variables. So the draws of two series in different chunks share their draw's
globals and shocks, and the sum of the series' draws within a draw is a draw of the aggregate's
demand: aggregate means and quantiles come from those sums, never from adding quantiles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from tasks.forecast.draws import DEFAULT_QUANTILES, ChunkPlan, quantiles_of_draws
from tasks.model.inference import Params
from tasks.model.negbin import draw_counts, mixture_concentration, mixture_concentration_and_uniform
from tasks.model.panel import (
    LEVEL_SCALE_AHEAD,
    SHOCK_KINDS,
    SHOCK_SCALES_AHEAD,
    SHOCK_SITES,
    WALK_MULTIPLIERS_AHEAD,
    WALK_SITES,
    Layout,
    PanelInputs,
    PanelSite,
    PanelStructure,
    layouts,
    log_dispersion,
    log_mean_ahead,
    mixture_parameters,
    shock_shapes,
)


@dataclass(frozen=True)
class AggregateLevel:
    """A grouping of series: each series' group code (-1: in no group of the level)."""

    name: str
    labels: tuple  # the groups' values, in code order
    codes: np.ndarray  # int [S]


@dataclass(frozen=True)
class PanelForecastArrays:
    mean: np.ndarray  # [S, T] predictive mean per series and period
    quantiles: np.ndarray  # [Q, S, T]
    levels: tuple[float, ...]
    aggregates: dict[str, tuple[np.ndarray, np.ndarray]]  # level -> (mean [G, T], quantiles [Q, G, T])


def draw_globals(
    params: Params, structure: PanelStructure, key: jax.Array, num_draws: int, n_periods: int, draws_last: bool = False
) -> dict:
    """Every global latent of ``num_draws`` draws (by name, [D, ...], or [..., D] with ``draws_last``: the
    forecast's chunks read them so), and the shocks of the ``n_periods`` periods ahead (``"future_shocks"``:
    one array per shock kind, a placeholder for the kinds the model lacks)."""
    return _draw_globals(
        {k: jnp.asarray(v) for k, v in params.items() if not k.startswith(PanelSite.SERIES)}, key, structure, num_draws, n_periods, draws_last
    )


@partial(jax.jit, static_argnames=("structure", "num_draws", "n_periods", "draws_last"))
def _draw_globals(params: Params, key: jax.Array, structure: PanelStructure, num_draws: int, n_periods: int, draws_last: bool) -> dict:
    real, positive, _ = layouts(structure)
    key_real, key_positive, key_shocks = jax.random.split(key, 3)
    values = params[f"{PanelSite.GLOBALS}.loc"] + params[f"{PanelSite.GLOBALS}.scale"] * jax.random.normal(key_real, (num_draws, real.size))
    scales = jnp.exp(
        params[f"{PanelSite.SCALES}.loc"] + params[f"{PanelSite.SCALES}.scale"] * jax.random.normal(key_positive, (num_draws, positive.size))
    )
    latent = {**real.unpack(values), **positive.unpack(scales)}
    if LEVEL_SCALE_AHEAD in params:  # the history's level steps never reach the periods ahead: only theirs take it
        latent[PanelSite.LEVEL_SCALE] = jnp.broadcast_to(params[LEVEL_SCALE_AHEAD], (num_draws,))
    shapes = shock_shapes(structure, n_periods)
    shocks = []
    for i, (k, kind) in enumerate(zip(jax.random.split(key_shocks, len(SHOCK_KINDS)), SHOCK_KINDS, strict=True)):
        if kind not in shapes:
            shocks.append(jnp.zeros((num_draws,)))
            continue
        if SHOCK_SCALES_AHEAD in params:
            scale = jnp.broadcast_to(params[SHOCK_SCALES_AHEAD][i], (num_draws,) + (1,) * len(shapes[kind]))
        else:
            scale = latent[SHOCK_SITES[kind][1]].reshape((num_draws,) + (1,) * len(shapes[kind]))
        shocks.append(scale * jax.random.normal(k, (num_draws, *shapes[kind])))
    latent["future_shocks"] = tuple(shocks)
    for i, side in enumerate(structure.level_walks):
        # Keys folded in from the shocks' key: the draws of a model without walks stay what they were.
        steps_site = WALK_SITES[side][0]
        shape = (num_draws, structure.n_groups(side), structure.n_future_blocks)
        steps = jax.random.normal(jax.random.fold_in(key_shocks, 1 + i), shape)
        multipliers = WALK_MULTIPLIERS_AHEAD.get(side)  # the chain's walk has none
        if multipliers in params:
            steps = steps * params[multipliers][None, :, None]
        latent[PanelSite.future(steps_site)] = steps
    return jax.tree.map(lambda values: jnp.moveaxis(values, 0, -1), latent) if draws_last else latent


# A series' variables that reach the periods after the anchor: its history's level steps do not
FUTURE_SERIES_SITES = (PanelSite.SERIES_RAW, PanelSite.DISPERSION_RAW)


def _future_series_columns(structure: PanelStructure) -> tuple[np.ndarray, Layout]:
    """The columns of a series' flat variables that a forecast draws, and their layout."""
    spans = [layouts(structure)[2].slice(site) for site in FUTURE_SERIES_SITES]
    columns = np.concatenate([np.arange(start, stop) for start, stop, _ in spans])
    return columns, Layout.of({site: shape for site, (_, _, shape) in zip(FUTURE_SERIES_SITES, spans, strict=True)})


@partial(jax.jit, static_argnames=("structure", "num_draws"))
def _chunk_draws(globals_: dict, params: Params, inputs: PanelInputs, idx: jnp.ndarray, key: jax.Array, structure: PanelStructure, num_draws: int):
    """log mu [s, T, D] of the series at ``idx`` (``log_mean_ahead``), and each cell's spread under the scale
    mixture [s, T, D]: the NB concentration, or the log-normal's sd; for counts, the uniforms that invert
    their CDF (None for amounts). ``globals_``: ``draw_globals(draws_last=True)``. The draws last throughout:
    a cell's draws are contiguous for its quantiles and the aggregates' sums."""
    columns, drawn_layout = _future_series_columns(structure)
    key_series, key_level, key_component = jax.random.split(key, 3)
    loc = params[f"{PanelSite.SERIES}.loc"][idx[:, None], columns[None, :]]
    scale = params[f"{PanelSite.SERIES}.scale"][idx[:, None], columns[None, :]]
    flat = loc[..., None] + scale[..., None] * jax.random.normal(key_series, (*loc.shape, num_draws))  # [s, C, D]
    latent = {k: v for k, v in globals_.items() if k != "future_shocks"} | drawn_layout.unpack(flat, axis=1)
    if structure.n_future_blocks:
        latent[PanelSite.LEVEL_STEPS_FUTURE] = jax.random.normal(key_level, (idx.shape[0], structure.n_future_blocks, num_draws))
    log_mu = log_mean_ahead(latent, inputs, structure, idx, globals_["future_shocks"])
    cell_dispersion = log_dispersion(latent, inputs.x_series[idx], structure)  # [s, 1 or T, D]
    draws_first = (jnp.moveaxis(globals_[site], -1, 0) for site in (PanelSite.TAIL_LOGIT, PanelSite.TAIL_GAP))
    logits, offsets = mixture_parameters(*draws_first, structure.likelihood)  # [D, K]
    core, log_weights = jnp.exp(cell_dispersion), jax.nn.log_softmax(logits, axis=-1)
    if structure.likelihood == "nb":
        spread, uniform = mixture_concentration_and_uniform(key_component, core, log_weights, offsets, log_mu.shape, draws_last=True)
    else:
        spread, uniform = mixture_concentration(key_component, core, log_weights, offsets, log_mu.shape, draws_last=True), None
    return log_mu, spread, uniform


def _check_after_anchor(inputs: PanelInputs) -> None:
    if (history := np.flatnonzero(np.asarray(inputs.history_index) >= 0)).size:
        raise ValueError(f"a forecast covers periods after the anchor only: periods {history.tolist()} of the inputs are history")


def _forecast_keys(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A forecast's key for its globals, and the one its chunks' keys fold in from: whoever draws the globals
    (each partition, or a caller once for all) must derive them alike."""
    key_globals, key_chunks = jax.random.split(key)
    return key_globals, key_chunks


def _bit_generator_key(key: jax.Array) -> jax.Array:
    """A key of JAX's ``rbg`` implementation (XLA's RngBitGenerator) seeded from ``key``'s bits: a chunk's 12M
    normals and uniforms take a quarter less time than with threefry on a CPU (M5, 256 series x 28 days x 1,000
    draws: 0.37-0.40 s -> 0.29-0.31 s). The exact gamma and Poisson samplers of large means need threefry keys:
    only a chunk's continuous draws use this one. Its numbers are the XLA backend's: a GPU's may differ."""
    return jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl="rbg")


@jax.jit
def _mean_of_draws(log_mu: jnp.ndarray) -> jnp.ndarray:
    return jnp.exp(log_mu).mean(axis=-1)


@jax.jit
def _lognormal_draws(key: jax.Array, log_mu: jnp.ndarray, sd: jnp.ndarray) -> jnp.ndarray:
    return jnp.exp(log_mu - 0.5 * sd**2 + sd * jax.random.normal(key, log_mu.shape))


def _draw_target(key: jax.Array, structure: PanelStructure, log_mu: jnp.ndarray, spread: jnp.ndarray, uniform: jnp.ndarray | None) -> np.ndarray:
    """Draws of the target given each cell's log mean and spread (any shape), and for counts the uniforms
    their inversion may use."""
    if structure.likelihood == "nb":
        return draw_counts(key, log_mu, spread, uniform)
    return np.asarray(_lognormal_draws(key, log_mu, spread))


def _sums_exact_in_float32(draws: np.ndarray, structure: PanelStructure) -> bool:
    """Whether every sum of ``draws`` [s, T, D] over series is exact in float32: counts, whose total is below
    2^24 (float32's consecutive integers)."""
    return structure.likelihood == "nb" and float(draws.max(initial=0.0)) * draws.shape[0] < 2**24


ONE_HOT_MAX_GROUPS = 32  # above, a sort and np.add.reduceat beat the one-hot product


def _sums_by_group(codes: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The groups present among the rows (codes -1: no group) and the sum of ``values``' rows per group
    ([g, ...], in the values' type): over the groups present only, as a one-hot over every group (3,049
    products for M5) cost groups x rows per value, most of the forecast's time."""
    inside = np.flatnonzero(codes >= 0)
    if not inside.size:
        return inside, values[:0]
    rows = values if inside.size == codes.size else values[inside]
    present, position = np.unique(codes[inside], return_inverse=True)
    if present.size == inside.size:  # a row per group (a chunk of one store's products, by product)
        return codes[inside], rows
    flat = rows.reshape(rows.shape[0], -1)
    if present.size <= ONE_HOT_MAX_GROUPS:
        summed = (position[None, :] == np.arange(present.size)[:, None]).astype(flat.dtype) @ flat
    else:
        order = np.argsort(position, kind="stable")
        summed = np.add.reduceat(flat[order], np.flatnonzero(np.r_[True, np.diff(position[order]) != 0]), axis=0)
    return present, summed.reshape(present.size, *rows.shape[1:])


def _add_by_group(sums: np.ndarray, codes: np.ndarray, values: np.ndarray) -> None:
    """sums[g] += the sum of values[i] over the rows i of group g (codes -1: no group), in the values' type."""
    present, summed = _sums_by_group(codes, values)
    _add_into(sums, present, summed)


def _add_into(sums: np.ndarray, groups: np.ndarray, summed: np.ndarray) -> None:
    """sums[groups] += summed, in place through a slice where the groups run consecutively (a chunk of a store's
    products): a fancy index gathers, adds and scatters copies of the rows."""
    if groups.size and groups[-1] - groups[0] == groups.size - 1 and np.all(np.diff(groups) == 1):
        sums[groups[0] : groups[-1] + 1] += summed
    else:
        sums[groups] += summed


def _add_exactly(
    sums: np.ndarray, bounds: dict[str, float], name: str, groups: np.ndarray | None, summed: np.ndarray
) -> np.ndarray:
    """``_add_into`` (every group when ``groups`` is None), keeping a float32 accumulator of counts only while it
    stays exact: ``bounds[name]`` adds up each addition's largest sum, and past 2^24 (or given float64 sums) the
    accumulator turns float64, exactly, as every value in it is an integer below 2^24. Returns the accumulator."""
    if sums.dtype == np.float32:
        bounds[name] += float(summed.max(initial=0.0))
        if bounds[name] >= 2**24 or summed.dtype != np.float32:
            sums = sums.astype(np.float64)
    if groups is None:
        sums += summed
    else:
        _add_into(sums, groups, summed)
    return sums


def _coarsening(fine: AggregateLevel, coarse: AggregateLevel) -> np.ndarray | None:
    """The map from ``fine``'s groups to ``coarse``'s (-1: into none), when each of ``coarse``'s groups is a
    union of ``fine``'s (the department of a product); else None."""
    if np.any((coarse.codes >= 0) & (fine.codes < 0)):
        return None
    inside = fine.codes >= 0
    mapping = np.full(len(fine.labels), -1, np.int64)
    mapping[fine.codes[inside]] = coarse.codes[inside]
    return mapping if np.array_equal(mapping[fine.codes[inside]], coarse.codes[inside]) else None


def aggregate_sources(aggregates: tuple[AggregateLevel, ...]) -> tuple[tuple[int, np.ndarray] | None, ...]:
    """Per level: None when its sums are taken from the series' draws, or (the level whose sums it adds up,
    the map of that level's groups to its own): the finest level it coarsens with fewer groups than any
    other, so that a chunk's draws are read by the finest levels only (M5's state, store, category and
    total come from a few store or department sums, not from 7M draws each)."""
    sources = []
    for level in aggregates:
        candidates = []
        for number, other in enumerate(aggregates):
            if len(other.labels) > len(level.labels) and (mapping := _coarsening(other, level)) is not None:
                candidates.append((len(other.labels), number, mapping))
        sources.append(min(candidates, key=lambda c: c[:2])[1:] if candidates else None)
    return tuple(sources)


def _zeroed(spare: dict[str, np.ndarray], name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Zeros of ``shape`` and ``dtype``: ``spare[name]`` overwritten when it has them, else a new array.

    Reusing memory is the point: where freed pages go back to the host (a virtual machine's free page
    reporting, as on this project's 2-core VM), each page of a new array faults on its first touch: 9 s
    per GB measured there, against 0.2 s to overwrite memory the process holds."""
    array = spare.get(name)
    if array is None or array.shape != shape or array.dtype != dtype:
        return np.zeros(shape, dtype)
    array.fill(0)
    return array


@dataclass(frozen=True)
class SeriesBlockForecast:
    """One partition's forecast: its series' means and quantiles, and its share of every aggregate's draws."""

    first: int  # the block holds series first .. first + len(mean) - 1
    mean: np.ndarray  # [s, T]
    quantiles: np.ndarray  # [Q, s, T]
    aggregate_sums: dict[str, np.ndarray]  # level -> the block's series' draws summed per group [G, T, D] (counts: float32 while exact)
    aggregate_mean_sums: dict[str, np.ndarray]  # level -> [G, T]


def forecast_series_block(
    params: Params,
    structure: PanelStructure,
    inputs: PanelInputs,
    key: jax.Array,
    plan: ChunkPlan,
    partition: int,
    num_draws: int = 1000,
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES,
    aggregates: tuple[AggregateLevel, ...] = (),
    wanted: np.ndarray | None = None,
    on_draws: Callable[[np.ndarray, np.ndarray], None] | None = None,
    globals_: dict | None = None,
    spare_sums: dict[str, np.ndarray] | None = None,
) -> SeriesBlockForecast:
    """The forecast of one partition of ``plan`` (see ``forecast_panel``, which combines them all).
    ``globals_``: ``draw_globals(draws_last=True)`` of the forecast's key, when the caller has them (every
    partition's are the same; drawing them is a few seconds at M5's size). ``spare_sums``: a finished block's
    ``aggregate_sums`` that nothing reads any more, zeroed and reused where their shape and type are those of
    fresh ones."""
    if num_draws < 1:
        raise ValueError(f"num_draws must be >= 1, got {num_draws}")
    if not all(0.0 < q < 1.0 for q in quantiles):
        raise ValueError(f"quantiles must lie strictly between 0 and 1, got {quantiles}")
    n_series, n_periods = inputs.observed.shape
    n_params = params[f"{PanelSite.SERIES}.loc"].shape[0]
    if n_params != n_series or plan.n_series != n_series:
        raise ValueError(f"params hold {n_params} series, inputs {n_series}, the plan {plan.n_series}")
    wanted = np.ones((n_series, n_periods), bool) if wanted is None else np.asarray(wanted, bool)
    key_globals, key_chunks = _forecast_keys(key)
    _check_after_anchor(inputs)
    if globals_ is None:
        globals_ = draw_globals(params, structure, key_globals, num_draws, n_periods, draws_last=True)
    jparams = {k: jnp.asarray(v) for k, v in params.items()}

    sources = aggregate_sources(aggregates)
    order = sorted(range(len(aggregates)), key=lambda i: -len(aggregates[i].labels))  # a level after its source

    block = plan.series(partition)
    mean = np.empty((len(block), n_periods), np.float32)
    quants = np.empty((len(quantiles), len(block), n_periods), np.float32)
    # Sums of counts accumulate in float32 while exact (each level's total below 2^24, bounded as the chunks come):
    # half the memory and traffic of float64 (M5's product level: 0.34 GB instead of 0.68 per partition).
    sums_type = np.float32 if structure.likelihood == "nb" else np.float64
    sums = {a.name: _zeroed(spare_sums or {}, a.name, (len(a.labels), n_periods, num_draws), sums_type) for a in aggregates}
    bounds = dict.fromkeys(sums, 0.0)
    mean_sums = {a.name: np.zeros((len(a.labels), n_periods)) for a in aggregates}
    for number in plan.chunks(partition):
        rows, valid = plan.rows(number)
        key_mu, key_y = jax.random.split(jax.random.fold_in(key_chunks, number))
        log_mu, spread, uniform = _chunk_draws(globals_, jparams, inputs, jnp.asarray(rows), _bit_generator_key(key_mu), structure, num_draws)
        draws = _draw_target(key_y, structure, log_mu, spread, uniform)  # [s, T, D]
        if not valid.all():  # the last chunk's padding (a boolean index copies even when it keeps every row)
            draws = draws[valid]
        keep = rows[valid]
        series_mean = np.asarray(_mean_of_draws(log_mu))[valid]
        mean[keep - block.start] = series_mean
        cells = wanted[keep]  # [s, T]
        if aggregates:
            # the draws themselves when every cell is asked for (the usual future table): no masked copy
            wanted_draws = draws if cells.all() else draws * cells[..., None]
            if not _sums_exact_in_float32(wanted_draws, structure):
                wanted_draws = wanted_draws.astype(np.float64)
            wanted_mean = (series_mean * cells).astype(np.float64)
        chunk_sums: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for index in order:
            level, source = aggregates[index], sources[index]
            if source is None:
                present, summed = _sums_by_group(level.codes[keep], wanted_draws)
            else:
                source_groups, source_sums = chunk_sums[source[0]]
                present, summed = _sums_by_group(source[1][source_groups], source_sums)
            chunk_sums[index] = present, summed
            sums[level.name] = _add_exactly(sums[level.name], bounds, level.name, present, summed)
            _add_by_group(mean_sums[level.name], level.codes[keep], wanted_mean)
        if on_draws is not None:
            on_draws(keep, np.moveaxis(draws, -1, 0))
        # in place (each cell's draws reordered) unless on_draws was handed them and may still hold them
        quants[:, keep - block.start] = quantiles_of_draws(draws, quantiles, overwrite=on_draws is None)
    return SeriesBlockForecast(block.start, mean, quants, sums, mean_sums)


def combine_blocks(blocks: Iterable[SeriesBlockForecast], n_series: int, quantiles: tuple[float, ...]) -> PanelForecastArrays:
    """The whole forecast from its partitions' blocks, taken in partition order (the aggregates' sums are added
    in that order, so that the result does not depend on where or when each block was computed). The first
    block's sums are added into in place (M5's product level alone is 0.34 GB); any other block is not used
    once the next one is drawn from ``blocks``."""
    mean = quants = None
    sums: dict[str, np.ndarray] = {}
    mean_sums: dict[str, np.ndarray] = {}
    covered = 0
    for block in blocks:
        if block.first != covered:
            raise ValueError(f"blocks out of order: expected one starting at series {covered}, got {block.first}")
        if block.quantiles.shape[0] != len(quantiles):
            raise ValueError(f"a block holds {block.quantiles.shape[0]} quantiles, not the {len(quantiles)} asked for")
        if mean is None:
            mean = np.empty((n_series, block.mean.shape[1]), np.float32)
            quants = np.empty((len(quantiles), n_series, block.mean.shape[1]), np.float32)
            # float32 sums of counts stay float32 while the total stays exact (``_add_exactly``)
            sums = dict(block.aggregate_sums)
            bounds = {name: float(value.max(initial=0.0)) if value.dtype == np.float32 else 0.0 for name, value in sums.items()}
            mean_sums = {name: np.asarray(value, np.float64) for name, value in block.aggregate_mean_sums.items()}
        else:
            for name in sums:
                sums[name] = _add_exactly(sums[name], bounds, name, None, block.aggregate_sums[name])
                mean_sums[name] += block.aggregate_mean_sums[name]
        stop = block.first + block.mean.shape[0]
        mean[block.first : stop] = block.mean
        quants[:, block.first : stop] = block.quantiles
        covered = stop
    if mean is None or covered != n_series:
        raise ValueError(f"the blocks cover {covered} of {n_series} series")
    aggregate_arrays = {
        name: (mean_sums[name].astype(np.float32), quantiles_of_draws(sums[name], quantiles, overwrite=True).astype(np.float32))
        for name in sums
    }
    return PanelForecastArrays(mean=mean, quantiles=quants, levels=tuple(quantiles), aggregates=aggregate_arrays)


def forecast_panel(
    params: Params,
    structure: PanelStructure,
    inputs: PanelInputs,
    key: jax.Array,
    num_draws: int = 1000,
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES,
    chunk_series: int = 256,
    aggregates: tuple[AggregateLevel, ...] = (),
    wanted: np.ndarray | None = None,
    on_draws: Callable[[np.ndarray, np.ndarray], None] | None = None,
    series_per_partition: int | None = None,
) -> PanelForecastArrays:
    """Predictive mean and quantiles per series and period of ``inputs`` (the periods after the anchor),
    and per group of each aggregate level, in this process.

    ``wanted`` [S, T] marks the cells the forecast is asked for (the future table's rows): aggregates
    sum those only (default: every cell). ``on_draws(series positions, draws [D, s, T])`` sees each
    chunk's draws (scores that need every draw). ``series_per_partition`` cuts the series as an engine
    that fans the partitions out would (``ChunkPlan``), so that both give the same numbers.
    """
    plan = ChunkPlan.make(inputs.observed.shape[0], chunk_series, series_per_partition)
    _check_after_anchor(inputs)
    globals_ = draw_globals(params, structure, _forecast_keys(key)[0], num_draws, inputs.observed.shape[1], draws_last=True)

    def blocks():
        spare = None
        for p in range(plan.n_partitions):
            block = forecast_series_block(
                params, structure, inputs, key, plan, p, num_draws, quantiles, aggregates, wanted, on_draws, globals_, spare
            )
            yield block
            # combine_blocks is done with a block when it asks for the next, but keeps the first's sums as its totals
            spare = block.aggregate_sums if p else None

    return combine_blocks(blocks(), plan.n_series, quantiles)
