"""The panel's global fit streamed from series blocks on disk (``tasks.data.series_blocks``).

Memory holds the arrays every series shares (the time design, the hierarchies, the shock bases), the
per-series variational parameters of all series with their Adam moments, and two pools of blocks: the one
a compiled chunk of steps is fitting and the next, which a reader thread loads meanwhile. Pools come in
epochs: a new random order of the blocks each epoch, cut into pools of ``blocks_per_pool`` blocks, so
that every series is fitted once per epoch (and no fit stops before its first epoch ends). Each step
subsamples ``subsample_size`` series of the pool; their terms weigh the panel's series per pool series
(``pool_scale``), so that a chunk's loss estimates the whole panel's ELBO, as the in-memory fit's
subsample does. The blocks should be random cross-sections of the panel (``tasks.data.panel_blocks``
writes them so): a pool of one store's series would drag the chain-level effects towards that store.

Updates are lazy where a pool does not reach: a pool's series' parameters and moments are gathered into
the chunk and scattered back after it, and the rows of the global effects of stores, products and
groups with no series in the pool (their effects, shocks and walks) stay as they are for that chunk,
instead of being pulled to their prior by a chunk that holds none of their data. A pool is padded, when
its blocks are smaller, with rows at the prior that are never written back.

Pure: no Prefect, no MLflow. Randomness: the order of the blocks comes from a generator seeded from the
fit's JAX key; the steps from the key itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.distributions import biject_to, constraints

from tasks.data.series_blocks import SeriesBlock, SeriesBlocks
from tasks.model.inference import FitProgress, FitResult, FitSettings, Params, SiteOrderedELBO, drive_svi, log_progress
from tasks.model.panel import (
    PRODUCT_SIDE,
    SHOCK_SITES,
    STORE_SIDE,
    WALK_SITES,
    PanelInputs,
    PanelSite,
    PanelStructure,
    PeriodSums,
    add_period_sums,
    censored_periods,
    censored_width,
    layouts,
    model,
    period_sums,
)
from tasks.model.panel_inference import clipped_per_cell, guide, series_log_levels, warm_start_from, with_unreached_at_prior

log = logging.getLogger(__name__)

ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8  # NumPyro's ClippedAdam (jax.example_libraries' adam)
MAX_WINDOW_CHUNKS = 20
POLISH_STEP_SIZE_AT = 2  # half-lives into the step-size schedule: the polish steps at a quarter of the first step size
SERIES_PARAMS = (f"{PanelSite.SERIES}.loc", f"{PanelSite.SERIES}.scale")
REAL_GLOBAL_PARAMS = (f"{PanelSite.GLOBALS}.loc", f"{PanelSite.GLOBALS}.scale")  # the flat vector with a row per group


class BlockScan(NamedTuple):
    """What one pass over every block gives a streamed fit before its first step."""

    level: np.ndarray  # float [N]: each series' log mean level (``series_log_levels``)
    counts: np.ndarray  # int [N]: its observed cells
    store: np.ndarray  # int32 [N]
    product: np.ndarray  # int32 [N]
    sums: PeriodSums  # the covariates' period sums (the shock bases)


def scan_blocks(blocks: SeriesBlocks, likelihood: str, n_products: int | None = None) -> BlockScan:
    """Read every block once. ``n_products``: also sum the covariates per product (product shocks)."""
    n = blocks.meta.n_series
    level, counts = np.zeros(n), np.zeros(n, np.int64)
    store, product = np.zeros(n, np.int32), np.zeros(n, np.int32)
    sums: PeriodSums | None = None
    for block in blocks:
        rows = block.series
        level[rows], counts[rows] = series_log_levels(block.y, block.observed, likelihood)
        store[rows], product[rows] = block.store, block.product
        part = period_sums(block.x_series, block.observed, block.product if n_products else None, n_products or 0)
        sums = part if sums is None else add_period_sums(sums, part)
    return BlockScan(level, counts, store, product, sums)


class Pool(NamedTuple):
    rows: np.ndarray  # int32 [P]: each pool row's series, -1 for padding
    block: SeriesBlock  # the pool's arrays, padded to P rows
    n_blocks: int


class PoolReader:
    """Pools of blocks in epochs: each epoch a new random order of the blocks, cut into pools of (nearly)
    equal numbers of blocks, so that every series is fitted once per epoch. Reads the next pool on a
    thread while the caller fits this one."""

    def __init__(self, blocks: SeriesBlocks, blocks_per_pool: int, seed: int, n_periods: int | None = None) -> None:
        """``n_periods``: pools padded at their start to this many periods (``tasks.model.panel.pad_history``), on
        the reader's thread; None: the blocks' own."""
        if blocks_per_pool < 1:
            raise ValueError(f"blocks_per_pool must be >= 1, got {blocks_per_pool}")
        n_blocks = blocks.meta.n_blocks
        self._blocks = blocks
        self._n_pad = 0 if n_periods is None else n_periods - blocks.meta.n_periods
        if self._n_pad < 0:
            raise ValueError(f"cannot pad blocks of {blocks.meta.n_periods} periods to {n_periods}")
        self.pools_per_epoch = -(-n_blocks // min(blocks_per_pool, n_blocks))
        self.blocks_per_pool = -(-n_blocks // self.pools_per_epoch)  # the largest pool's
        self.pool_rows = self.blocks_per_pool * blocks.meta.block_size
        self._rng = np.random.default_rng(seed)
        self._order: list[np.ndarray] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="series-blocks")
        self._next: Future[Pool] | None = None
        self._whole: Pool | None = None  # one pool holds every block: read once
        self.blocks_read = 0

    @property
    def every_block(self) -> bool:
        return self.pools_per_epoch == 1

    def _read(self, chosen: np.ndarray) -> Pool:
        parts = [self._blocks.read(int(i)) for i in chosen]

        def stack(field: str, fill: float | bool, over_periods: bool = False) -> np.ndarray:
            """The blocks' rows, then padding rows; a field over periods also gets the empty periods before its own."""
            arrays = [getattr(p, field) for p in parts]
            shape = list(arrays[0].shape)
            shape[0] = self.pool_rows
            n_pad = self._n_pad if over_periods else 0
            if over_periods:
                shape[1] += n_pad
            out = np.full(shape, fill, arrays[0].dtype)
            start = 0
            for array in arrays:
                rows = slice(start, start + array.shape[0])
                out[(rows, slice(n_pad, None)) if over_periods else rows] = array
                start += array.shape[0]
            return out

        block = SeriesBlock(
            series=stack("series", -1),
            store=stack("store", 0),
            product=stack("product", 0),
            y=stack("y", 0.0, over_periods=True),
            observed=stack("observed", False, over_periods=True),
            x_series=stack("x_series", 0.0, over_periods=True),
            censored=stack("censored", False, over_periods=True) if self._blocks.has_censored else None,
        )
        return Pool(block.series, block, len(parts))

    def _choose(self) -> np.ndarray:
        if not self._order:
            order = self._rng.permutation(self._blocks.meta.n_blocks)
            self._order = [np.sort(pool) for pool in np.array_split(order, self.pools_per_epoch)]
        return self._order.pop(0)

    def peek(self) -> Pool:
        """The pool ``next`` returns next (waits for its read)."""
        if self.every_block:
            if self._whole is None:
                self._whole = self._read(np.arange(self._blocks.meta.n_blocks))
                self.blocks_read += self._blocks.meta.n_blocks
            return self._whole
        if self._next is None:
            self._next = self._executor.submit(self._read, self._choose())
        return self._next.result()

    def next(self) -> Pool:
        pool = self.peek()
        if not self.every_block:
            self.blocks_read += pool.n_blocks
            self._next = self._executor.submit(self._read, self._choose())
        return pool

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def block_inputs(shared: PanelInputs, b: SeriesBlock, max_censored: int) -> PanelInputs:
    """``shared`` (the arrays every series shares) with a block's (or a pool's) series arrays; its stock-outs
    when the panel has any (``max_censored`` > 0: the most censored cells of a series). A padded ``shared``
    (``pad_history``) gets the block's arrays padded to its periods the same way."""
    n_pad = shared.x_time.shape[0] - b.x_series.shape[1]
    if n_pad < 0:
        raise ValueError(f"a block of {b.x_series.shape[1]} periods does not fit shared inputs of {shared.x_time.shape[0]}")

    def before(array: np.ndarray, fill) -> jnp.ndarray:
        widths = [(0, 0)] * array.ndim
        widths[1] = (n_pad, 0)
        return jnp.asarray(np.pad(array, widths, constant_values=fill) if n_pad else array)

    censoring = {}
    if b.censored is not None and max_censored > 0:
        periods = censored_periods(b.censored, censored_width(max_censored))
        censoring = {"censored": before(b.censored, False), "censored_periods": jnp.asarray(np.where(periods >= 0, periods + n_pad, -1))}
    return shared._replace(
        x_series=before(b.x_series, 0.0),
        observed=before(b.observed, False),
        y=before(b.y, 0.0),
        series_store=jnp.asarray(b.store),
        series_product=jnp.asarray(b.product),
        **censoring,
    )


@dataclass
class StreamState:
    """The fit between chunks. The per-series arrays (unconstrained, [N, ...]) are updated in place."""

    free: dict[str, jnp.ndarray]  # global parameters, unconstrained
    moments: tuple[dict[str, jnp.ndarray], dict[str, jnp.ndarray]]  # Adam's m and v of ``free``
    series: dict[str, np.ndarray]  # series parameters and their moments: "<param>", "m:<param>", "v:<param>"
    step: int
    key: jax.Array


def _chunk_program(structure: PanelStructure, settings: FitSettings, subsample: int | None, transforms: dict):
    """The jitted chunk: ``chunk_steps`` steps of NumPyro's ClippedAdam (its formulas, on the fit's step
    count) on one pool, whose series-level terms weigh ``pool_scale``; the globals' elements that
    ``update`` marks False stay as they are (the rows of groups without a series in the pool; every
    global while the series are polished)."""
    model_fn = partial(model, structure=structure, subsample_size=subsample)
    guide_fn = partial(guide, structure=structure, subsample_size=subsample)
    elbo = SiteOrderedELBO(num_particles=settings.num_particles)

    def loss(free, key, inputs, pool_scale):
        params = {k: transforms[k](v) for k, v in free.items()}
        return elbo.loss(key, params, model_fn, guide_fn, inputs, pool_scale=pool_scale)

    def adam(x, m, v, g, step, update):
        size = settings.learning_rate * 0.5 ** (step / settings.learning_rate_half_life)
        g = jnp.clip(g, -settings.clip_norm, settings.clip_norm)
        m_new = (1 - ADAM_B1) * g + ADAM_B1 * m
        v_new = (1 - ADAM_B2) * jnp.square(g) + ADAM_B2 * v
        t = step + 1.0
        x_new = x - size * (m_new / (1 - ADAM_B1**t)) / (jnp.sqrt(v_new / (1 - ADAM_B2**t)) + ADAM_EPS)
        if update is None:
            return x_new, m_new, v_new
        return jnp.where(update, x_new, x), jnp.where(update, m_new, m), jnp.where(update, v_new, v)

    # ``update``: per global parameter, which of its elements a chunk moves (see ``StreamedChunks._update``)

    @jax.jit
    def run(free, m, v, step, key, inputs, pool_scale, update, scale):
        def body(carry, step_key):
            free, m, v, step = carry
            value, grads = jax.value_and_grad(loss)(free, step_key, inputs, pool_scale)
            new = {
                name: adam(free[name], m[name], v[name], grads[name], step, None if name in SERIES_PARAMS else update[name])
                for name in free
            }
            free, m, v = ({name: parts[i] for name, parts in new.items()} for i in range(3))
            return (free, m, v, step + 1.0), value * scale

        (free, m, v, _), losses = jax.lax.scan(body, (free, m, v, step), jax.random.split(key, settings.chunk_steps))
        return free, m, v, losses

    return run


def group_rows(structure: PanelStructure, store_groups: np.ndarray, product_groups: np.ndarray) -> list[tuple[str, int, int, int, np.ndarray]]:
    """(side, offset, rows, row width, each store's or product's row) of every real global site with a row
    per group: group effects (at each hierarchy level), store and product shocks, store and product walks."""
    real = layouts(structure)[0]
    groups = {STORE_SIDE: store_groups, PRODUCT_SIDE: product_groups}
    sites = [(PanelSite.group_raw(side, level), side, level) for side, level, _, _ in structure.group_sites()]
    sites += [(SHOCK_SITES[side][0], side, 0) for side in (STORE_SIDE, PRODUCT_SIDE) if side in structure.shocks]
    sites += [(WALK_SITES[side][0], side, 0) for side in structure.level_walks if side in groups]  # the chain's walk is one row
    out = []
    for site, side, level in sites:
        start, stop, shape = real.slice(site)
        out.append((side, start, shape[0], (stop - start) // shape[0], groups[side][level]))
    return out


class StreamedChunks:
    """``drive_svi``'s program for a fit over series blocks: each chunk fits one pool."""

    def __init__(self, reader: PoolReader, shared: PanelInputs, structure: PanelStructure, settings: FitSettings, n_series: int, max_censored: int) -> None:
        self._reader = reader
        self._n_series = n_series
        self._shared = shared
        self._max_censored = max_censored
        subsample = settings.subsample_size if settings.subsample_size and settings.subsample_size < reader.pool_rows else None
        self.series_per_step = subsample or reader.pool_rows
        example = block_inputs(shared, reader.peek().block, max_censored)
        guide_fn = partial(guide, structure=structure, subsample_size=subsample)
        trace = handlers.trace(handlers.seed(guide_fn, 0)).get_trace(example)
        self._transforms = {
            name: biject_to(site["kwargs"].get("constraint", constraints.real)) for name, site in trace.items() if site["type"] == "param"
        }
        self._run = _chunk_program(structure, settings, subsample, self._transforms)
        self._n_real = layouts(structure)[0].size
        self._global_names = tuple(name for name in self._transforms if name not in SERIES_PARAMS)
        self._group_rows = group_rows(structure, np.asarray(shared.store_groups), np.asarray(shared.product_groups))

    def _update(self, pool: Pool, globals_too: bool = True) -> dict[str, jnp.ndarray]:
        """Which elements of each global parameter a chunk on this pool may move: none while the series are
        polished (``globals_too`` False); else all but the rows of groups (stores, products, their
        hierarchy's groups) none of whose series is in the pool. Such a row's likelihood is absent from
        the chunk while its prior is not: left free, the prior would pull it back every chunk its group
        sits out (a lazy update, as the series' own parameters get)."""
        real = np.full(self._n_real, globals_too)
        in_pool = pool.rows >= 0
        members = {STORE_SIDE: pool.block.store[in_pool], PRODUCT_SIDE: pool.block.product[in_pool]}
        for side, start, n_rows, width, groups in self._group_rows:
            present = np.zeros(n_rows, bool)
            present[groups[members[side]]] = True
            real[start : start + n_rows * width].reshape(n_rows, width)[~present] = False
        mask = jnp.asarray(real)
        return {name: mask if name in REAL_GLOBAL_PARAMS else jnp.asarray(globals_too) for name in self._global_names}

    def _pool_scale(self, pool: Pool) -> jnp.ndarray:
        """The weight of a pool's series-level terms: the panel's series per series in the pool, so that a
        chunk's loss estimates the whole panel's (padding rows, at their prior, add nothing)."""
        return jnp.float32(self._n_series / max(int((pool.rows >= 0).sum()), 1))

    def start(self, key: jax.Array, init: Params) -> StreamState:
        free = {k: self._transforms[k].inv(jnp.asarray(v)) for k, v in init.items() if k not in SERIES_PARAMS}
        zeros = {k: jnp.zeros_like(v) for k, v in free.items()}
        series = {}
        for name in SERIES_PARAMS:
            series[name] = np.array(self._transforms[name].inv(jnp.asarray(init[name])), np.float32)
            series[f"m:{name}"] = np.zeros_like(series[name])
            series[f"v:{name}"] = np.zeros_like(series[name])
        return StreamState(free, (zeros, dict(zeros)), series, 0, key)

    def _gather(self, state: StreamState, rows: np.ndarray) -> tuple[dict, dict, dict]:
        valid = rows >= 0
        at = np.where(valid, rows, 0)

        def take(array: np.ndarray) -> jnp.ndarray:
            # padding rows start at the prior (loc 0, scale 1: 0 unconstrained) with no moments
            return jnp.asarray(np.where(valid[:, None], array[at], 0.0))

        free = {**state.free, **{n: take(state.series[n]) for n in SERIES_PARAMS}}
        m = {**state.moments[0], **{n: take(state.series[f"m:{n}"]) for n in SERIES_PARAMS}}
        v = {**state.moments[1], **{n: take(state.series[f"v:{n}"]) for n in SERIES_PARAMS}}
        return free, m, v

    def compile(self, state: StreamState, scale: jnp.ndarray) -> None:
        pool = self._reader.peek()
        free, m, v = self._gather(state, pool.rows)
        inputs = block_inputs(self._shared, pool.block, self._max_censored)
        self._run.lower(free, m, v, jnp.float32(state.step), state.key, inputs, self._pool_scale(pool), self._update(pool), scale).compile()

    def run(self, state: StreamState, scale: jnp.ndarray) -> tuple[StreamState, jnp.ndarray]:
        return self._run_pool(state, scale, self._reader.next(), globals_too=True)

    def _run_pool(self, state: StreamState, scale: jnp.ndarray, pool: Pool, globals_too: bool) -> tuple[StreamState, jnp.ndarray]:
        free, m, v = self._gather(state, pool.rows)
        key, chunk_key = jax.random.split(state.key)
        inputs = block_inputs(self._shared, pool.block, self._max_censored)
        update = self._update(pool, globals_too)
        free, m, v, losses = self._run(free, m, v, jnp.float32(state.step), chunk_key, inputs, self._pool_scale(pool), update, scale)
        valid = pool.rows >= 0
        rows = pool.rows[valid]
        for name in SERIES_PARAMS:
            for prefix, source in (("", free), ("m:", m), ("v:", v)):
                state.series[prefix + name][rows] = np.asarray(source[name])[valid]
        moments = ({k: m[k] for k in self._global_names}, {k: v[k] for k in self._global_names})
        steps = int(losses.shape[0])
        return StreamState({k: free[k] for k in self._global_names}, moments, state.series, state.step + steps, key), losses

    def polish(self, params: Params, key: jax.Array, scale: jnp.ndarray, step_size_at: int) -> tuple[Params, np.ndarray]:
        """One epoch over the pools with every global held at ``params``': each series' parameters fitted
        again, a chunk each, to the final globals (the fit's own last visit to a series may be an epoch
        old, made against globals that have moved since). Adam starts afresh, its step size that of the
        fit's step ``step_size_at``. Returns the parameters and the epoch's losses."""
        state = self.start(key, params)
        losses = []
        for _ in range(self._reader.pools_per_epoch):
            state, chunk_losses = self._run_pool(replace(state, step=step_size_at), scale, self._reader.next(), globals_too=False)
            losses.append(np.asarray(chunk_losses))
        return self.params(state), np.concatenate(losses)

    def params(self, state: StreamState) -> Params:
        out = {k: np.asarray(self._transforms[k](v)) for k, v in state.free.items()}
        for name in SERIES_PARAMS:
            out[name] = np.asarray(self._transforms[name](jnp.asarray(state.series[name])))
        return out

    def blocks_read(self) -> int | None:
        return self._reader.blocks_read


def fit_panel_streamed(
    blocks: SeriesBlocks,
    shared: PanelInputs,
    scan: BlockScan,
    structure: PanelStructure,
    settings: FitSettings,
    key: jax.Array,
    blocks_per_pool: int = 8,
    on_progress: Callable[[FitProgress], None] = log_progress,
    polish: bool = True,
) -> FitResult:
    """``tasks.model.panel_inference.fit_panel`` over series read block by block from ``blocks``; then, with
    ``polish`` and more than one pool per epoch, each series' parameters fitted once more to the final
    globals (``StreamedChunks.polish``).

    ``shared``: the model's inputs that every series shares (its series fields are replaced by each pool's);
    ``scan``: ``scan_blocks`` of the same folder. The result has the same parameters, shapes and names as
    the in-memory fit's.
    """
    meta = blocks.meta
    if scan.level.shape[0] != meta.n_series:
        raise ValueError(f"the block scan has {scan.level.shape[0]} series, the blocks {meta.n_series}")
    if meta.n_observed == 0:
        raise ValueError(f"{blocks.directory}: no observed cell: nothing to fit")
    settings = clipped_per_cell(settings, meta.n_observed)
    key_blocks, key_fit = jax.random.split(key)
    reader = PoolReader(blocks, blocks_per_pool, int(jax.random.randint(key_blocks, (), 0, 2**31 - 1)), n_periods=shared.x_time.shape[0])
    try:
        program = StreamedChunks(reader, shared, structure, settings, meta.n_series, meta.max_censored)
        init = warm_start_from(scan.level, scan.counts, scan.store, scan.product, structure, settings.init_scale)
        init = with_unreached_at_prior(init, shared, structure, empty_series=scan.counts == 0)
        # a fit that stops before every pool of an epoch has had its chunk leaves series at their warm start
        epoch_steps = reader.pools_per_epoch * settings.chunk_steps
        # Each chunk's loss is its own pool's: the pools' differences are noise to the loss trend, which a
        # window of the in-memory fit's few chunks mistakes for convergence (on the M5 shape: stopped at 1,300
        # steps, aggregates' WSPL up to 1.5 times the in-memory fit's; at 2,000 steps the same as it). The
        # trend is taken over two epochs' chunks (at most MAX_WINDOW_CHUNKS).
        window = max(settings.window_chunks, min(2 * reader.pools_per_epoch, MAX_WINDOW_CHUNKS))
        settings = replace(settings, window_chunks=window)
        if epoch_steps > settings.max_steps:
            log.warning(
                "the step cap (%d) is shorter than one pass over the %d series blocks (%d steps): some series will keep their start values",
                settings.max_steps, meta.n_blocks, epoch_steps,
            )  # fmt: skip
        result = drive_svi(
            program, init, meta.n_observed, settings, key_fit, on_progress, series_per_step=program.series_per_step, min_steps=epoch_steps
        )
        if not polish or reader.every_block:
            return result
        t0 = time.perf_counter()
        scale = jnp.float32(1.0 / meta.n_observed)
        params, losses = program.polish(result.params, jax.random.fold_in(key_fit, 1), scale, POLISH_STEP_SIZE_AT * settings.learning_rate_half_life)
        seconds = time.perf_counter() - t0
        log.info("series polished against the final globals: %d pools x %d steps, loss/obs %.5f, %.1fs", reader.pools_per_epoch, settings.chunk_steps, float(losses[-settings.chunk_steps :].mean()), seconds)
        return replace(result, params=params, run_seconds=result.run_seconds + seconds)
    finally:
        reader.close()
