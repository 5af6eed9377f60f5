"""The forecast's draws-last formula of the log means is the model's own, draw by draw."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasks.forecast.panel_draws import draw_globals, forecast_panel
from tasks.model.panel import (
    SHOCK_KINDS,
    WALK_SITES,
    Layout,
    PanelInputs,
    PanelSite,
    PanelStructure,
    layouts,
    log_mean,
    log_mean_ahead,
    shock_shapes,
)

N_DRAWS, N_SERIES, N_STORES, N_PRODUCTS, N_FUTURE = 5, 9, 3, 4, 10


def _structure(shocks: tuple[str, ...], level_walks: tuple[str, ...] = ()) -> PanelStructure:
    names = ("intercept", "t1", "t2", "t3", "price", "promo")
    return PanelStructure(
        coef_names=names,
        n_time=3,
        store_pooled=(True, True, False, False, True, False),
        product_pooled=(True, False, True, True, True, True),
        varies=(True, True, True, False, True, True),
        store_level_sizes=(N_STORES, 2),
        product_level_sizes=(N_PRODUCTS, 2),
        n_store_attributes=2,
        n_product_attributes=1,
        n_history=40,
        block_periods=4,
        likelihood="nb",
        log_offset=0.3,
        shocks=shocks,
        level_walks=level_walks,
        n_future_blocks=3,
        n_future=N_FUTURE,
    )


def _inputs(structure: PanelStructure, rng: np.random.Generator) -> PanelInputs:
    offsets = np.arange(1, N_FUTURE + 1)
    return PanelInputs(
        x_time=jnp.asarray(rng.normal(size=(N_FUTURE, structure.n_time)), jnp.float32),
        x_series=jnp.asarray(rng.normal(size=(N_SERIES, N_FUTURE, 2)), jnp.float32),
        observed=jnp.ones((N_SERIES, N_FUTURE), bool),
        y=None,
        series_store=jnp.asarray(rng.integers(0, N_STORES, N_SERIES), jnp.int32),
        series_product=jnp.asarray(rng.integers(0, N_PRODUCTS, N_SERIES), jnp.int32),
        store_groups=jnp.asarray([np.arange(N_STORES), [0, 1, 1]], jnp.int32),
        product_groups=jnp.asarray([np.arange(N_PRODUCTS), [0, 0, 1, 1]], jnp.int32),
        store_attributes=jnp.asarray(rng.normal(size=(N_STORES, 2)), jnp.float32),
        product_attributes=jnp.asarray(rng.normal(size=(N_PRODUCTS, 1)), jnp.float32),
        block=jnp.asarray((offsets - 1) // structure.block_periods + 1, jnp.int32),
        history_index=jnp.full(N_FUTURE, -1, jnp.int32),
        shock_basis=jnp.zeros((1, structure.n_history, 1), jnp.float32),
        log_offset=jnp.float32(structure.log_offset),
    )


def _latent(structure: PanelStructure, idx: np.ndarray, rng: np.random.Generator) -> tuple[dict, tuple]:
    """Random draws of every variable the log means read, draws first, and the future shocks."""
    real, positive, series = layouts(structure)
    latent = real.unpack(rng.normal(size=(N_DRAWS, real.size)).astype(np.float32))
    latent |= positive.unpack(rng.uniform(0.2, 1.0, (N_DRAWS, positive.size)).astype(np.float32))
    latent |= series.unpack(rng.normal(size=(N_DRAWS, idx.size, series.size)).astype(np.float32))
    latent[PanelSite.LEVEL_STEPS_FUTURE] = rng.normal(size=(N_DRAWS, idx.size, structure.n_future_blocks)).astype(np.float32)
    for side in structure.level_walks:
        shape = (N_DRAWS, structure.n_groups(side), structure.n_future_blocks)
        latent[PanelSite.future(WALK_SITES[side][0])] = rng.normal(size=shape).astype(np.float32)
    shapes = shock_shapes(structure, N_FUTURE)
    shocks = tuple(
        rng.normal(size=(N_DRAWS, *shapes[kind])).astype(np.float32) if kind in shapes else np.zeros(N_DRAWS, np.float32)
        for kind in SHOCK_KINDS
    )
    return latent, shocks


def _params(structure: PanelStructure) -> dict[str, np.ndarray]:
    """Guide parameters: standard normals, positive scales around 1."""
    real, positive, series = layouts(structure)
    return {
        f"{PanelSite.GLOBALS}.loc": np.zeros(real.size, np.float32),
        f"{PanelSite.GLOBALS}.scale": np.ones(real.size, np.float32),
        f"{PanelSite.SCALES}.loc": np.zeros(positive.size, np.float32),
        f"{PanelSite.SCALES}.scale": np.full(positive.size, 0.1, np.float32),
        f"{PanelSite.SERIES}.loc": np.zeros((N_SERIES, series.size), np.float32),
        f"{PanelSite.SERIES}.scale": np.ones((N_SERIES, series.size), np.float32),
    }


@pytest.mark.parametrize(
    ("shocks", "level_walks"), [(("chain", "store", "product"), ()), (("chain",), ()), ((), ()), (("chain",), ("store", "product")), ((), ("chain",)), (("chain", "store"), ("chain", "store", "product"))]
)
def test_log_mean_ahead_is_log_mean_draw_by_draw(shocks: tuple[str, ...], level_walks: tuple[str, ...]) -> None:
    rng = np.random.default_rng(len(shocks) + len(level_walks))
    structure = _structure(shocks, level_walks)
    inputs = _inputs(structure, rng)
    idx = jnp.asarray([0, 2, 3, 5, 8])
    latent, future_shocks = _latent(structure, np.asarray(idx), rng)
    # the general formula, given the history's level steps and shocks as well (they cannot reach these periods)
    by_draw = jax.vmap(lambda lat, sh: log_mean(lat, inputs, structure, idx, future_shocks=sh))(latent, future_shocks)
    history_only = {PanelSite.LEVEL_STEPS, PanelSite.SHOCK_RAW, PanelSite.STORE_SHOCK_RAW, PanelSite.PRODUCT_SHOCK_RAW}
    history_only |= {steps for steps, _ in WALK_SITES.values()}
    last = {name: jnp.moveaxis(jnp.asarray(value), 0, -1) for name, value in latent.items() if name not in history_only}
    ahead = log_mean_ahead(last, inputs, structure, idx, tuple(jnp.moveaxis(jnp.asarray(s), 0, -1) for s in future_shocks))
    assert ahead.shape == (idx.size, N_FUTURE, N_DRAWS)
    np.testing.assert_allclose(np.asarray(ahead), np.moveaxis(np.asarray(by_draw), 0, -1), rtol=1e-5, atol=1e-5)
    # the level walk and the shocks reach the periods ahead: the draws differ
    assert np.asarray(ahead).std(axis=-1).min() > 0.01


def test_draw_globals_draws_last_are_the_same_draws_moved() -> None:
    structure = _structure(("chain", "store"))
    params = _params(structure)
    first = draw_globals(params, structure, jax.random.key(3), N_DRAWS, N_FUTURE)
    last = draw_globals(params, structure, jax.random.key(3), N_DRAWS, N_FUTURE, draws_last=True)
    assert set(first) == set(last)
    for name in first:
        for a, b in zip(jax.tree.leaves(first[name]), jax.tree.leaves(last[name]), strict=True):
            np.testing.assert_array_equal(np.moveaxis(np.asarray(a), 0, -1), np.asarray(b))


def test_layout_unpacks_along_any_axis() -> None:
    layout = Layout.of({"a": (2,), "b": (), "c": (2, 3)})
    flat = np.arange(4 * layout.size * 5, dtype=np.float32).reshape(4, layout.size, 5)
    middle = layout.unpack(flat, axis=1)  # [4, *shape, 5]
    last = layout.unpack(np.moveaxis(flat, 1, -1))  # [4, 5, *shape]
    assert middle["c"].shape == (4, 2, 3, 5) and middle["b"].shape == (4, 5)
    for name in ("a", "b", "c"):
        np.testing.assert_array_equal(middle[name], np.moveaxis(last[name], 1, -1))


def test_a_forecast_refuses_history_periods() -> None:
    structure = _structure(("chain",))
    inputs = _inputs(structure, np.random.default_rng(0))
    inputs = inputs._replace(history_index=inputs.history_index.at[:2].set(jnp.asarray([38, 39], jnp.int32)))
    params = _params(structure)
    with pytest.raises(ValueError, match=r"periods after the anchor only: periods \[0, 1\]"):
        forecast_panel(params, structure, inputs, jax.random.key(0), num_draws=10)
