"""A panel fit's history is padded to a bucket of periods: the padding changes no part of the model a target
touches, and histories a period apart (consecutive nightly runs) trace to one program, which the persistent
compilation cache then serves (the panel's counterpart of ``test_history_buckets``)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl
import pytest
from numpyro import handlers
from numpyro.infer.util import log_density

from tasks import names as n
from tasks import panel_pipeline as pp
from tasks.config import PanelFitConfig
from tasks.data.panel_demo import generate_panel_demo
from tasks.data.panel_encode import encode_panel
from tasks.data.series_blocks import SeriesBlock, SeriesBlocks, write_series_blocks
from tasks.model.panel import (
    SHOCK_SITES,
    WALK_SITES,
    PanelSite,
    history_periods,
    layouts,
    model,
    pad_history,
    recency_weights,
    series_rows,
    shock_basis,
)
from tasks.model.panel_inference import _program, clipped_per_cell, warm_start
from tasks.model.panel_stream import PoolReader, block_inputs
from tasks.model.shock_scales import in_memory_batches, shock_scales_ahead
from tasks.model.walk_scales import series_block_residuals

SHOCKS_AND_WALKS = {"shocks": ("chain", "store", "product"), "level_walks": ("chain", "store"), "recency_half_life": 26}
EXACT = PanelFitConfig(history_bucket_days=1, **SHOCKS_AND_WALKS)
YEAR = PanelFitConfig(history_bucket_days=364, **SHOCKS_AND_WALKS)  # 60 weeks -> 104: three more level blocks


def _encoded(n_weeks: int = 60, stockout_share: float = 0.0, n_stores: int = 4, products_per_department: int = 2, drop_series: int = 0):
    """A small weekly demo panel; ``drop_series``: without the last that many series (a panel before their first sale)."""
    demo = generate_panel_demo(
        seed=3, n_stores=n_stores, n_departments=2, products_per_department=products_per_department, n_weeks=n_weeks, horizon=6,
        stockout_share=stockout_share,
    )  # fmt: skip
    tables = demo.tables()
    if drop_series:
        keys = tables.sales.select(n.SERIES_STORE, n.SERIES_PRODUCT).unique().sort(pl.all()).tail(drop_series)
        on = [n.SERIES_STORE, n.SERIES_PRODUCT]
        tables = replace(tables, sales=tables.sales.join(keys, on=on, how="anti"), future=tables.future.join(keys, on=on, how="anti"))
    return encode_panel(tables), tables.spec


def _setup(encoded, spec, config: PanelFitConfig):
    """The structure and the fit's (padded) inputs, as ``fit_encoded`` makes them."""
    structure = pp.structure_for(encoded, spec, config)
    h, by_product = encoded.history, "product" in structure.shocks
    basis = shock_basis(h.x_time, h.x_series, h.observed, encoded.dims.series_product if by_product else None, structure.n_products if by_product else 0, structure.block_periods)
    n_series = encoded.encoding.n_series
    rows = series_rows(n_series) if config.history_bucket_days > 1 else n_series
    inputs = pad_history(pp.model_inputs(encoded, h, structure, basis, with_target=True), structure.n_history, rows)
    return structure, inputs


def test_periods_and_series_round_up_to_their_buckets_and_the_config_sets_the_periods_in_days() -> None:
    assert [history_periods(n, 8) for n in (1, 8, 9, 143)] == [8, 8, 16, 144]
    with pytest.raises(ValueError, match="bucket_periods must be >= 1"):
        history_periods(10, 0)
    assert [series_rows(n) for n in (1, 16, 63, 64, 65, 913, 3313, 30490, 304900)] == [1, 16, 63, 64, 66, 928, 3328, 30720, 311296]
    for n_series in range(1, 5000, 7):
        assert 0 <= series_rows(n_series) - n_series <= max(0.032 * n_series, 0)
    with pytest.raises(ValueError, match="n_series must be >= 1"):
        series_rows(0)
    encoded, spec = _encoded()
    assert pp.structure_for(encoded, spec, PanelFitConfig()).n_history == 64  # 56 days: 8 weeks
    assert pp.structure_for(encoded, spec, EXACT).n_history == 60


def test_a_padded_fit_puts_empty_periods_before_the_history_outside_it() -> None:
    encoded, spec = _encoded(stockout_share=0.2)
    structure, inputs = _setup(encoded, spec, PanelFitConfig())
    h, pad = encoded.history, 4
    assert inputs.observed.shape == (h.y.shape[0], 64) and inputs.x_time.shape[0] == 64
    assert not np.asarray(inputs.observed[:, :pad]).any() and not np.asarray(inputs.censored[:, :pad]).any()
    np.testing.assert_array_equal(np.asarray(inputs.y[:, pad:]), h.y)
    np.testing.assert_array_equal(np.asarray(inputs.history_index), [-1] * pad + list(range(pad, 64)))
    assert not np.asarray(inputs.shock_basis[:, :pad]).any()
    # the censored periods follow their cells
    periods = np.asarray(inputs.censored_periods)
    rows, slots = np.nonzero(periods >= 0)
    assert rows.size == int(h.censored.sum()) and np.asarray(inputs.censored)[rows, periods[rows, slots]].all()
    assert periods.shape[1] in (1, 2, 4, 8, 16, 32)  # a power of two
    with pytest.raises(ValueError, match="cannot pad inputs of 16 series x 64 periods to 16 x 60"):
        pad_history(inputs, 60)


def _trace_latents(inputs, structure) -> dict:
    def draw(key: jax.Array) -> dict:
        traced = handlers.trace(handlers.seed(model, key)).get_trace(inputs._replace(y=None), structure)
        return {name: traced[name]["value"] for name in (PanelSite.GLOBALS, PanelSite.SCALES, PanelSite.SERIES)}

    return jax.jit(draw)(jax.random.key(3))  # one program: op by op, the model takes seconds


def test_the_padded_model_is_the_history_model_times_the_priors_of_the_padding() -> None:
    """log p(targets, latents) of the padded fit = that of the unpadded fit + the N(0, 1) log density of the
    padding's shocks and level steps (the series' own walks, the chain's and the stores'), at any latents."""
    encoded, spec = _encoded()
    exact, exact_inputs = _setup(encoded, spec, EXACT)
    padded, padded_inputs = _setup(encoded, spec, YEAR)
    extra_periods, extra_blocks = padded.n_history - exact.n_history, padded.n_past_blocks - exact.n_past_blocks
    assert (extra_periods, extra_blocks) == (44, 3)
    latents = _trace_latents(exact_inputs, exact)
    real_exact, positive, series_exact = layouts(exact)
    real_padded, _, series_padded = layouts(padded)
    rng = np.random.default_rng(0)
    prior_of_padding = 0.0

    def prepend(value: np.ndarray, extra: int) -> np.ndarray:
        nonlocal prior_of_padding
        head = rng.normal(size=(*value.shape[:-1], extra)).astype(np.float32)
        prior_of_padding += float(jax.scipy.stats.norm.logpdf(head).sum())
        return np.concatenate([head, value], axis=-1)

    real = real_exact.unpack(np.asarray(latents[PanelSite.GLOBALS]))
    for kind in padded.shocks:
        real[SHOCK_SITES[kind][0]] = prepend(real[SHOCK_SITES[kind][0]], extra_periods)
    for side in padded.level_walks:
        real[WALK_SITES[side][0]] = prepend(real[WALK_SITES[side][0]], extra_blocks)
    series = series_exact.unpack(np.asarray(latents[PanelSite.SERIES]))
    series[PanelSite.LEVEL_STEPS] = prepend(series[PanelSite.LEVEL_STEPS], extra_blocks)
    n_series = exact_inputs.observed.shape[0]
    padded_latents = {
        PanelSite.GLOBALS: real_padded.pack(real),
        PanelSite.SCALES: latents[PanelSite.SCALES],
        PanelSite.SERIES: series_padded.pack(series, (n_series, 1)),
    }
    assert positive.size == layouts(padded)[1].size
    log_exact = jax.jit(lambda v: log_density(model, (exact_inputs, exact), {}, v)[0])(latents)
    log_padded = jax.jit(lambda v: log_density(model, (padded_inputs, padded), {}, v)[0])(padded_latents)
    assert float(log_padded) == pytest.approx(float(log_exact) + prior_of_padding, rel=1e-6)


def test_the_warm_start_of_a_padded_history_is_the_histories_and_the_padding_starts_at_its_prior() -> None:
    encoded, spec = _encoded()
    exact, exact_inputs = _setup(encoded, spec, EXACT)
    padded, padded_inputs = _setup(encoded, spec, YEAR)
    start, start_padded = warm_start(exact_inputs, exact, 0.1), warm_start(padded_inputs, padded, 0.1)
    extras = {"periods": 44, "blocks": 3}
    for site, layout_index in ((PanelSite.GLOBALS, 0), (PanelSite.SERIES, 2)):
        layout, layout_padded = layouts(exact)[layout_index], layouts(padded)[layout_index]
        for suffix, prior in (("loc", 0.0), ("scale", 1.0)):
            value = layout.unpack(start[f"{site}.{suffix}"])
            value_padded = layout_padded.unpack(start_padded[f"{site}.{suffix}"])
            for name, array in value.items():
                extra = 0
                if name in (SHOCK_SITES[k][0] for k in padded.shocks):
                    extra = extras["periods"]
                elif name == PanelSite.LEVEL_STEPS or name in (WALK_SITES[s][0] for s in padded.level_walks):
                    extra = extras["blocks"]
                if not extra:
                    np.testing.assert_array_equal(value_padded[name], array, err_msg=name)
                    continue
                np.testing.assert_array_equal(value_padded[name][..., extra:], array, err_msg=name)
                assert np.all(value_padded[name][..., :extra] == prior), name


def test_the_moment_estimates_leave_the_padding_out() -> None:
    """The scales ahead of a padded fit are those of the same parameters on the unpadded history."""
    encoded, spec = _encoded()
    structure, padded_inputs = _setup(encoded, spec, YEAR)
    unpadded_inputs = pp.model_inputs(encoded, encoded.history, structure, padded_inputs.shock_basis, with_target=True)
    params = {k: np.asarray(v) for k, v in warm_start(padded_inputs, structure, 0.1).items()}
    rng = np.random.default_rng(1)
    params[f"{PanelSite.SERIES}.loc"] = params[f"{PanelSite.SERIES}.loc"] + 0.1 * rng.normal(size=params[f"{PanelSite.SERIES}.loc"].shape)

    def scales(inputs):
        shocks = shock_scales_ahead(params, structure, in_memory_batches(inputs), recency_weights(inputs, structure))
        residuals, _ = series_block_residuals(params, structure, in_memory_batches(inputs))
        return shocks, residuals

    (shocks, residuals), (shocks_padded, residuals_padded) = scales(unpadded_inputs), scales(padded_inputs)
    assert shocks_padded == pytest.approx(shocks, rel=1e-5)
    np.testing.assert_allclose(residuals_padded, residuals, rtol=1e-5, atol=1e-7)
    # 60 weeks: the anchor's block and three before it are full, the fifth (8 weeks) is not, the padding's are empty
    np.testing.assert_array_equal(np.isfinite(residuals).any(axis=0), [True] * 4 + [False] * 4)


def test_a_block_of_series_and_a_pool_of_blocks_are_padded_as_the_shared_inputs_are(tmp_path) -> None:
    """A streamed fit's series arrays, from a block (the scales' pass) or from the reader's pools (the fit's
    chunks, padded on the reader's thread), equal the in-memory fit's padded inputs."""
    encoded, spec = _encoded(stockout_share=0.2)
    structure, padded_inputs = _setup(encoded, spec, PanelFitConfig())
    h, d = encoded.history, encoded.dims
    max_censored = int(h.censored.sum(axis=1).max())
    block = SeriesBlock(np.arange(h.y.shape[0], dtype=np.int32), d.series_store, d.series_product, h.y, h.observed, h.x_series, h.censored)
    write_series_blocks(tmp_path / "blocks", [block])
    reader = PoolReader(SeriesBlocks(tmp_path / "blocks"), blocks_per_pool=1, seed=0, n_periods=structure.n_history)
    try:
        pool = reader.peek().block
    finally:
        reader.close()
    from_pool = block_inputs(padded_inputs, pool, max_censored)
    for from_block in (block_inputs(padded_inputs, block, max_censored), from_pool):
        for field in ("x_series", "observed", "y", "censored", "censored_periods"):
            np.testing.assert_array_equal(np.asarray(getattr(from_block, field)), np.asarray(getattr(padded_inputs, field)), err_msg=field)
    with pytest.raises(ValueError, match="cannot pad blocks of 60 periods to 59"):
        PoolReader(SeriesBlocks(tmp_path / "blocks"), blocks_per_pool=1, seed=0, n_periods=59)


def _program_hash(encoded, spec, config: PanelFitConfig) -> str:
    """The global fit's chunk of steps as ``fit_panel`` builds it, lowered (not compiled)."""
    structure, inputs = _setup(encoded, spec, config)
    settings = clipped_per_cell(config.settings(), int(np.asarray(inputs.observed).sum()))
    subsample = settings.subsample_size if settings.subsample_size < inputs.observed.shape[0] else None
    _, init_state, run_chunk = _program(structure, settings, subsample)
    state = jax.eval_shape(init_state, jax.random.key(0), warm_start(inputs, structure, settings.init_scale), (inputs,))
    text = run_chunk.lower(state, (inputs,), jnp.float32(1.0)).as_text(debug_info=False)
    return hashlib.sha256(text.encode()).hexdigest()


def test_histories_a_period_apart_trace_to_one_program() -> None:
    """Tonight's and next week's fits (a week more history, another mean and so another log offset, a few
    more observed cells) are one program when their lengths share a bucket; without buckets they are two."""
    tonight, spec = _encoded(60)
    next_week, _ = _encoded(61)
    config = PanelFitConfig(max_steps=100, chunk_steps=10)
    assert pp.structure_for(tonight, spec, config).log_offset != pp.structure_for(next_week, spec, config).log_offset
    assert _program_hash(tonight, spec, config) == _program_hash(next_week, spec, config)
    unbucketed = config.model_copy(update={"history_bucket_days": 7})
    assert _program_hash(tonight, spec, unbucketed) != _program_hash(next_week, spec, unbucketed)


def test_a_panel_with_a_new_series_traces_to_the_same_program() -> None:
    """72 series (padded to a multiple of 2) and the same panel before its last series' first sale (71): one
    program; without the padding, two."""
    config = PanelFitConfig(max_steps=100, chunk_steps=10)
    whole, spec = _encoded(n_stores=6, products_per_department=6)
    before, _ = _encoded(n_stores=6, products_per_department=6, drop_series=1)
    assert (whole.encoding.n_series, before.encoding.n_series) == (72, 71)
    assert _program_hash(whole, spec, config) == _program_hash(before, spec, config)
    unpadded = config.model_copy(update={"history_bucket_days": 1})
    assert _program_hash(whole, spec, unpadded) != _program_hash(before, spec, unpadded)


def test_a_fit_over_padded_series_returns_the_panels_own_series_and_starts_empty_ones_at_their_prior() -> None:
    encoded, spec = _encoded(n_stores=6, products_per_department=6, drop_series=1)
    structure, inputs = _setup(encoded, spec, PanelFitConfig())
    assert inputs.observed.shape[0] == 72 and not np.asarray(inputs.observed[71]).any()
    start = warm_start(inputs, structure, 0.1)
    assert np.all(start[f"{PanelSite.SERIES}.loc"][71] == 0.0) and np.all(start[f"{PanelSite.SERIES}.scale"][71] == 1.0)
    assert np.all(start[f"{PanelSite.SERIES}.scale"][:71] == 0.1)
    fitted, fit = pp.fit_encoded(encoded, spec, PanelFitConfig(max_steps=100, chunk_steps=50), jax.random.key(0), on_progress=lambda p: None)
    assert fitted.params[f"{PanelSite.SERIES}.loc"].shape[0] == 71 and fit.params[f"{PanelSite.SERIES}.scale"].shape[0] == 71
