"""A history is fitted padded to a bucket of days: the padding changes no part of the model the sales touch,
and histories a few days apart (consecutive nightly runs) trace to one program, which the persistent
compilation cache then serves."""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers
from numpyro.infer.util import log_density

from tasks.config import FitConfig
from tasks.data.demo import generate_demo
from tasks.data.encode import EncodedData, build_spec, encode
from tasks.model.inference import FitSettings, _svi_program
from tasks.model.store_day import Site, model
from tasks.model.warm_start import warm_start
from tasks.pipeline import bucketed_days, global_fit_setup

SMALL = {"seed": 0, "n_stores": 6, "horizon": 7, "n_new_stores": 0, "n_gapped_stores": 1}


def _encoded(n_history_days: int) -> EncodedData:
    demo = generate_demo(n_history_days=n_history_days, **SMALL)
    return encode(demo.train, demo.stores, demo.future, build_spec(demo.stores))


def test_days_round_up_to_the_bucket() -> None:
    assert [bucketed_days(n, 56) for n in (1, 55, 56, 57, 942)] == [56, 56, 56, 112, 952]
    assert bucketed_days(120, 1) == 120
    with pytest.raises(ValueError, match="bucket_days must be >= 1"):
        bucketed_days(120, 0)


def test_a_padded_panel_prepends_empty_days_and_keeps_the_rest() -> None:
    history = _encoded(60).history
    padded = history.padded_to(84)
    assert padded.n_days == 84 and padded.dates[-1] == history.dates[-1]
    assert np.all(np.diff(padded.dates).astype(int) == 1)
    assert not padded.observed[:, :24].any() and not padded.present[:, :24].any() and not padded.sales[:, :24].any()
    np.testing.assert_array_equal(padded.sales[:, 24:], history.sales)
    np.testing.assert_array_equal(padded.store_day_x[:, 24:], history.store_day_x)
    with pytest.raises(ValueError, match="cannot pad a panel of 60 days to 59"):
        history.padded_to(59)


def test_the_padded_model_is_the_history_model_times_the_priors_of_the_padding() -> None:
    """log p(sales, latents) of the padded fit = that of the unpadded fit + the N(0, 1) log density of the
    padding's day shocks and level steps, at any values of the latents: the padding touches no sales."""
    encoded = _encoded(120)
    exact = global_fit_setup(encoded, FitConfig(history_bucket_days=1))
    padded = global_fit_setup(encoded, FitConfig(history_bucket_days=56))
    assert (exact.structure.n_history_days, padded.structure.n_history_days) == (120, 168)
    extra_days = 168 - 120
    extra_blocks = padded.structure.n_past_blocks - exact.structure.n_past_blocks
    assert extra_blocks == 1

    inputs = exact.global_inputs()
    def draw(key: jax.Array) -> dict:
        values = handlers.trace(handlers.seed(model, key)).get_trace(inputs._replace(sales=None), exact.structure)
        return {name: site["value"] for name, site in values.items() if site["type"] == "sample" and not site["is_observed"]}

    latents = jax.jit(draw)(jax.random.key(3))  # one program: op by op, the model takes seconds
    latents.pop(Site.SALES)
    key_days, key_blocks = jax.random.split(jax.random.key(4))
    pad_days = jax.random.normal(key_days, (extra_days,))
    pad_blocks = jax.random.normal(key_blocks, (*latents[Site.LEVEL_STEPS_PAST].shape[:-1], extra_blocks))
    padded_latents = dict(latents)
    padded_latents[Site.DAY_RAW] = jnp.concatenate([pad_days, latents[Site.DAY_RAW]])
    padded_latents[Site.LEVEL_STEPS_PAST] = jnp.concatenate([pad_blocks, latents[Site.LEVEL_STEPS_PAST]], axis=-1)

    log_exact = jax.jit(lambda v: log_density(model, (inputs, exact.structure), {}, v)[0])(latents)
    log_padded = jax.jit(lambda v: log_density(model, (padded.global_inputs(), padded.structure), {}, v)[0])(padded_latents)
    prior_of_padding = jax.scipy.stats.norm.logpdf(pad_days).sum() + jax.scipy.stats.norm.logpdf(pad_blocks).sum()
    assert float(log_padded) == pytest.approx(float(log_exact + prior_of_padding), rel=1e-6)


def test_the_warm_start_of_a_padded_history_is_the_histories_and_the_padding_starts_at_its_prior() -> None:
    encoded = _encoded(120)
    exact = global_fit_setup(encoded, FitConfig(history_bucket_days=1))
    padded = global_fit_setup(encoded, FitConfig(history_bucket_days=56))
    start = warm_start(exact.global_inputs(), exact.structure, 0.1)
    start_padded = warm_start(padded.global_inputs(), padded.structure, 0.1)
    extra_days, extra_blocks = 48, 1
    for name, value in start.items():
        site = name.split(".")[0]
        cut = {Site.DAY_RAW: (slice(extra_days, None),), Site.LEVEL_STEPS_PAST: (..., slice(extra_blocks, None))}.get(site, ...)
        np.testing.assert_allclose(start_padded[name][cut], value, rtol=1e-4, atol=1e-5, err_msg=name)
    for site, head in ((Site.DAY_RAW, (slice(0, extra_days),)), (Site.LEVEL_STEPS_PAST, (..., slice(0, extra_blocks)))):
        assert np.all(start_padded[f"{site}.loc"][head] == 0.0) and np.all(start_padded[f"{site}.scale"][head] == 1.0), site


def _program_hash(encoded: EncodedData, config: FitConfig) -> str:
    """The global fit's chunk of steps as the pipeline builds it, lowered (not compiled)."""
    setup = global_fit_setup(encoded, config)
    inputs = setup.global_inputs()
    settings = FitSettings(max_steps=20, chunk_steps=10)
    _, init_state, run_chunk = _svi_program(setup.structure, settings, None, False)
    state = jax.eval_shape(init_state, jax.random.key(0), warm_start(inputs, setup.structure, settings.init_scale), (inputs,))
    text = run_chunk.lower(state, (inputs,), jnp.float32(1.0)).as_text(debug_info=False)
    return hashlib.sha256(text.encode()).hexdigest()


def test_histories_a_few_days_apart_trace_to_one_program() -> None:
    """Tonight's and tomorrow night's fits (a day more history, another mean and so another log offset)
    are one program when their lengths share a bucket: the compilation cache serves the second. Without
    buckets they are two."""
    tonight, tomorrow = _encoded(100), _encoded(101)
    config = FitConfig(history_bucket_days=56)
    assert global_fit_setup(tonight, config).structure.log_offset != global_fit_setup(tomorrow, config).structure.log_offset
    assert _program_hash(tonight, config) == _program_hash(tomorrow, config)
    unbucketed = FitConfig(history_bucket_days=1)
    assert _program_hash(tonight, unbucketed) != _program_hash(tomorrow, unbucketed)
