"""The panel guide's low-rank part over the global site (a spec's ``guide_rank``): its draws, its fit, its state."""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasks import panel_pipeline as pp
from tasks.config import ForecastConfig, PanelFitConfig
from tasks.data.panel_demo import generate_panel_demo
from tasks.data.panel_encode import encode_panel
from tasks.data.spec import SpecError, parse_spec
from tasks.model import panel_state
from tasks.model.panel import PanelSite, layouts
from tasks.model.panel_inference import GLOBALS_FACTOR, global_values, prior_params

LOC, SCALE = f"{PanelSite.GLOBALS}.loc", f"{PanelSite.GLOBALS}.scale"


def test_mean_field_draws_are_the_scaled_normals_of_the_key() -> None:
    params = {LOC: jnp.array([1.0, -2.0, 0.5]), SCALE: jnp.array([0.1, 0.2, 0.3])}
    key = jax.random.key(4)
    expected = params[LOC] + params[SCALE] * jax.random.normal(key, (5, 3))
    assert np.array_equal(np.asarray(global_values(params, key, 5)), np.asarray(expected))


def test_low_rank_draws_have_the_guides_covariance() -> None:
    scale = jnp.array([0.1, 0.2, 0.3, 0.4])
    factor = jnp.array([[1.0, 0.0], [-1.0, 0.5], [0.0, 2.0], [0.5, -0.5]])
    params = {LOC: jnp.zeros(4), SCALE: scale, GLOBALS_FACTOR: factor}
    draws = np.asarray(global_values(params, jax.random.key(0), 200_000))
    expected = np.diag(scale) @ (np.eye(4) + factor @ factor.T) @ np.diag(scale)
    assert np.allclose(np.cov(draws, rowvar=False), expected, atol=0.004)
    # the first two move against each other: the sum of their draws is narrower than independent ones'
    assert (draws[:, 0] + draws[:, 1]).var() < draws[:, 0].var() + draws[:, 1].var() - 0.01


@pytest.mark.parametrize("rank", [-1, 65])
def test_spec_refuses_a_rank_out_of_range(rank: int) -> None:
    demo = generate_panel_demo(seed=0, n_stores=2, n_departments=1, products_per_department=2, n_weeks=20, horizon=2)
    text = demo.spec.model_dump_json()
    with pytest.raises(SpecError, match="guide_rank"):
        parse_spec(text.replace('"guide_rank":0', f'"guide_rank":{rank}'))


@pytest.fixture(scope="module")
def low_rank_fit():
    demo = generate_panel_demo(seed=3, n_stores=4, n_departments=2, products_per_department=2, n_weeks=60, horizon=6)
    tables = demo.tables()
    tables = replace(tables, spec=tables.spec.model_copy(update={"guide_rank": 3}))
    encoded = encode_panel(tables)
    config = PanelFitConfig(max_steps=300, chunk_steps=50)
    fitted, fit = pp.fit_encoded(encoded, tables.spec, config, jax.random.key(0), on_progress=lambda p: None)
    return tables, encoded, fitted, fit


def test_a_low_rank_fit_learns_its_factor_and_keeps_it_in_its_state(low_rank_fit, tmp_path) -> None:
    tables, encoded, fitted, fit = low_rank_fit
    real = layouts(fitted.structure)[0]
    assert fitted.structure.guide_rank == 3 and np.all(np.isfinite(fit.losses))
    factor = fitted.params[GLOBALS_FACTOR]
    assert factor.shape == (real.size, 3) and np.all(np.isfinite(factor)) and np.abs(factor).max() > 0.05
    loaded = panel_state.load(panel_state.save(fitted, tmp_path / "model"))
    assert loaded.structure == fitted.structure and np.array_equal(loaded.params[GLOBALS_FACTOR], factor)
    aggregates = pp.aggregate_levels(tables, encoded)
    arrays = pp.forecast_encoded(loaded, encoded, aggregates, ForecastConfig(num_draws=200), jax.random.key(1))
    total_mean, _ = arrays.aggregates["total"]
    assert np.all(np.isfinite(arrays.quantiles))
    assert total_mean.sum() == pytest.approx(float(arrays.mean[encoded.future.present].sum()), rel=1e-4)


def test_a_group_set_to_its_prior_loses_its_factor_rows(low_rank_fit) -> None:
    _, _, fitted, _ = low_rank_fit
    structure = fitted.structure
    real = layouts(structure)[0]
    site = PanelSite.group_raw(*structure.group_sites()[0][:2])
    start, _, shape = real.slice(site)
    width = int(np.prod(shape[1:]))
    params = prior_params(fitted.params, structure, np.array([], int), {site: np.array([1])})
    rows = slice(start + width, start + 2 * width)
    assert np.all(params[GLOBALS_FACTOR][rows] == 0.0) and np.all(params[SCALE][rows] == 1.0)
    assert np.array_equal(params[GLOBALS_FACTOR][:start], fitted.params[GLOBALS_FACTOR][:start])
