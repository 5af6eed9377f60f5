"""Censored demand (stock-outs): the survival functions against scipy and finite differences, the spec's
stock-out columns through validation and encoding, the model's censored likelihood, and (slow) recovery
of mean demand from a panel with a fifth of its periods stocked out."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl
import pytest
from numpyro import handlers
from numpyro.infer.util import log_density
from scipy import stats

from tasks import names as n
from tasks import panel_pipeline as pp
from tasks.config import PanelFitConfig
from tasks.data import panel_rules as r
from tasks.data.panel_demo import generate_panel_demo
from tasks.data.panel_encode import encode_panel
from tasks.data.panel_ingest import CENSORED, read_panel
from tasks.data.spec import SpecError, parse_spec
from tasks.data.validate import InputValidationError
from tasks.evaluate.censoring import censoring_experiment, without_censoring
from tasks.model import panel_state
from tasks.model.censored import (
    MAX_CENSORED_UNITS,
    lognormal_mixture_log_survival,
    nb_mixture_log_survival,
    survival_terms,
)
from tasks.model.censored import nb_log_survival as _nb_log_survival
from tasks.model.panel import PanelSite, censored_periods, layouts, likelihood, log_mean, log_survival, model

# compiled once per dtype and shape: eager dispatch of the grid's ops dominates these tests otherwise
nb_log_survival = jax.jit(_nb_log_survival, static_argnums=3)
from tasks.names import FileRole

# (value, mean, concentration): the body, both tails, tiny and huge concentrations, the grid's end
CASES = [
    (0, 5.0, 2.0), (1, 5.0, 2.0), (3, 20.0, 15.0), (30, 20.0, 15.0), (45, 20.0, 15.0), (60, 20.0, 15.0),
    (100, 20.0, 0.5), (7, 0.3, 0.2), (16, 100.0, 20.0), (200, 100.0, 20.0), (250, 300.0, 3.0), (256, 40.0, 400.0),
]  # fmt: skip
N_TERMS = 256


def _scipy_logsf(value, mean, concentration):
    return stats.nbinom.logsf(value - 1, concentration, concentration / (concentration + mean))


# --- the survival functions ------------------------------------------------------------------------


def test_nb_survival_matches_scipy_in_float64() -> None:
    with jax.enable_x64(True):
        for value, mean, concentration in CASES:
            got = float(nb_log_survival(jnp.float64(value), jnp.log(mean), jnp.log(concentration), N_TERMS))
            assert got == pytest.approx(_scipy_logsf(value, mean, concentration), rel=1e-10, abs=1e-12), (value, mean, concentration)


def test_nb_survival_in_float32_is_close_in_the_body_and_the_far_tail() -> None:
    values = jnp.array([v for v, _, _ in CASES], jnp.float32)
    means = jnp.array([m for _, m, _ in CASES], jnp.float32)
    concentrations = jnp.array([c for _, _, c in CASES], jnp.float32)
    got = np.asarray(nb_log_survival(values, jnp.log(means), jnp.log(concentrations), N_TERMS))
    expected = np.array([_scipy_logsf(*case) for case in CASES])
    # float32 log-gammas of arguments in the hundreds carry ~1e-5 relative error each
    assert got == pytest.approx(expected, rel=2e-4, abs=2e-4)


def test_nb_survival_in_float32_stays_close_on_the_largest_grid() -> None:
    """Values in the thousands: the pmf's concentration part summed over 4,096 grid points in float32 (a plain
    running sum of log(r + j) less log-gammas missed by 1.9e-3 here; the log-gammas themselves by 6.2e-4)."""
    cases = [(1000, 800.0, 5.0), (2000, 1500.0, 5.0), (1900, 1500.0, 400.0), (1200, 1500.0, 400.0), (2048, 2000.0, 50.0), (500, 1800.0, 2.0)]
    values, means, concentrations = (jnp.array(column, jnp.float32) for column in zip(*cases, strict=True))
    got = np.asarray(nb_log_survival(values, jnp.log(means), jnp.log(concentrations), MAX_CENSORED_UNITS))
    assert got == pytest.approx(np.array([_scipy_logsf(*case) for case in cases]), rel=5e-4, abs=5e-4)


@pytest.mark.parametrize("case", [(3, 20.0, 15.0), (30, 20.0, 15.0), (60, 20.0, 15.0), (100, 20.0, 0.5), (7, 0.3, 0.2)])
def test_nb_survival_gradient_matches_central_differences(case) -> None:
    """Both arguments: the log mean and the log concentration (the one betainc has no gradient in)."""
    value, mean, concentration = case
    with jax.enable_x64(True):
        point = jnp.array([np.log(mean), np.log(concentration)])

        @jax.jit
        def f(x):
            return nb_log_survival(jnp.float64(value), x[0], x[1], 128)

        grad = np.asarray(jax.jit(jax.grad(f))(point))
        h = 1e-5
        fd = [(float(f(point + h * e)) - float(f(point - h * e))) / (2 * h) for e in np.eye(2)]
        assert grad == pytest.approx(fd, rel=1e-6, abs=1e-9)
        # and the analytic check of d/dlog_mean: P(Y >= y) = I_p(y, r), p = mu / (r + mu)
        assert np.all(np.isfinite(grad))


def test_nb_survival_beyond_its_grid_is_nan_and_the_grid_is_sized_and_capped() -> None:
    out = np.asarray(nb_log_survival(jnp.array([0.0, 16.0, 17.0]), jnp.log(5.0), jnp.log(2.0), 16))
    assert out[0] == 0.0 and np.isfinite(out[1]) and np.isnan(out[2])
    assert survival_terms(0) == 16 and survival_terms(17) == 32 and survival_terms(256) == 256 and survival_terms(257) == 512
    assert survival_terms(10 * MAX_CENSORED_UNITS) == MAX_CENSORED_UNITS
    with pytest.raises(ValueError, match="finite count"):
        survival_terms(-1.0)


def test_nb_survival_value_zero_has_a_zero_gradient() -> None:
    grad = jax.grad(lambda x: nb_log_survival(0.0, x[0], x[1], 16))(jnp.array([1.0, 0.5]))
    assert np.array_equal(np.asarray(grad), [0.0, 0.0])


def test_mixture_survivals_match_weighted_scipy_and_their_gradients_differences() -> None:
    offsets, logits = np.array([0.0, -1.0, -2.5]), np.array([0.0, -1.0, -2.0])
    weights = np.exp(logits) / np.exp(logits).sum()
    with jax.enable_x64(True):
        for value, mean, concentration in [(12, 10.0, 8.0), (40, 10.0, 8.0), (3, 10.0, 8.0)]:
            expected = np.log(sum(w * np.exp(_scipy_logsf(value, mean, concentration * np.exp(o))) for w, o in zip(weights, offsets, strict=True)))
            got = nb_mixture_log_survival(jnp.float64(value), jnp.log(mean), jnp.log(concentration), jnp.array(offsets), jnp.array(logits), 64)
            assert float(got) == pytest.approx(expected, rel=1e-10)
        log_sd = np.log(0.4)
        for value, mean in [(30.0, 50.0), (120.0, 50.0)]:
            sds = np.exp(log_sd + offsets[::-1] * -1)  # widening components, as the log-normal's offsets are
            expected = np.log(sum(w * stats.lognorm(s=sd, scale=mean * np.exp(-0.5 * sd**2)).sf(value) for w, sd in zip(weights, sds, strict=True)))
            got = lognormal_mixture_log_survival(jnp.float64(value), jnp.log(mean), log_sd, jnp.array(-offsets[::-1]), jnp.array(logits))
            assert float(got) == pytest.approx(expected, rel=1e-10)

        @jax.jit
        def nb(x):
            return nb_mixture_log_survival(jnp.float64(25.0), x[0], x[1], jnp.array([0.0, x[2]]), jnp.array([0.0, x[3]]), 64)

        @jax.jit
        def lognormal(x):
            return lognormal_mixture_log_survival(jnp.float64(80.0), x[0], x[1], jnp.array([0.0, x[2]]), jnp.array([0.0, x[3]]))

        for f, point in ((nb, [np.log(15.0), np.log(6.0), -1.0, -1.5]), (lognormal, [np.log(50.0), np.log(0.4), 0.8, -1.5])):
            point = jnp.array(point)
            grad = np.asarray(jax.jit(jax.grad(f))(point))
            h = 1e-5
            fd = [(float(f(point + h * e)) - float(f(point - h * e))) / (2 * h) for e in np.eye(4)]
            assert grad == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_censored_periods_list_each_series_periods_padded() -> None:
    mask = np.array([[0, 1, 0, 1], [0, 0, 0, 0], [1, 1, 1, 0]], bool)
    assert censored_periods(mask).tolist() == [[1, 3, -1, -1], [-1, -1, -1, -1], [0, 1, 2, -1]]
    assert censored_periods(mask, width=3).tolist() == [[1, 3, -1], [-1, -1, -1], [0, 1, 2]]
    with pytest.raises(ValueError, match="3 censored periods, more than the width 2"):
        censored_periods(mask, width=2)
    assert censored_periods(np.zeros((2, 3), bool)).shape == (2, 0)


# --- the model ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def censored_demo():
    return generate_panel_demo(seed=1, n_stores=2, n_departments=2, products_per_department=2, n_weeks=30, horizon=4, stockout_share=0.2)


def _inputs(tables):
    encoded = encode_panel(tables)
    structure = pp.structure_for(encoded, tables.spec, PanelFitConfig(dispersion_covariates=("promo",)))
    basis = np.zeros((1, encoded.history.n_periods, 1), np.float32)
    return encoded, structure, pp.model_inputs(encoded, encoded.history, structure, basis, with_target=True)


def test_the_demo_without_stockouts_is_unchanged_and_with_them_censors_a_fifth() -> None:
    plain = generate_panel_demo(seed=1, n_stores=3, n_departments=2, products_per_department=2, n_weeks=40, horizon=4)
    censored = generate_panel_demo(
        seed=1, n_stores=3, n_departments=2, products_per_department=2, n_weeks=40, horizon=4, stockout_share=0.2
    )
    assert "stockout" not in plain.sales.columns and plain.spec.sales.stockout is None
    assert censored.truth_future.equals(plain.truth_future)  # the horizon keeps its demand
    sold, demand = censored.sales["units"].to_numpy(), plain.sales["units"].to_numpy()
    flagged = censored.sales["stockout"].to_numpy() == 1
    assert 0.15 < flagged.mean() < 0.27
    assert np.all(sold <= demand) and np.array_equal(sold[~flagged], demand[~flagged])


@pytest.mark.slow  # three compiled model densities: ~20 s on 2 cores
def test_censored_cells_contribute_their_survival_and_the_rest_is_unchanged(censored_demo) -> None:
    tables = censored_demo.tables()
    encoded, structure, inputs = _inputs(tables)
    mask = encoded.history.censored
    assert mask is not None and mask.sum() == int(tables.sales[CENSORED].sum()) and not (mask & ~encoded.history.observed).any()
    assert structure.censor_terms == survival_terms(float(encoded.history.y[mask].max()))
    _, plain_structure, plain = _inputs(without_censoring(tables))
    assert plain.censored is None and plain.censored_periods is None and plain_structure.censor_terms == 0

    trace = handlers.trace(handlers.seed(model, jax.random.key(0))).get_trace(plain, plain_structure)
    params = {site: trace[site]["value"] for site in (PanelSite.GLOBALS, PanelSite.SCALES, PanelSite.SERIES)}
    assert PanelSite.Y_CENSORED not in trace
    with_censoring = jax.jit(lambda p: log_density(model, (inputs, structure), {}, p)[0])(params)
    without = jax.jit(lambda p: log_density(model, (plain, plain_structure), {}, p)[0])(params)

    # by hand: the censored cells' pmf out, their survival in
    real, positive = (trace[s]["value"] for s in (PanelSite.GLOBALS, PanelSite.SCALES))
    real_layout, positive_layout, series_layout = layouts(structure)
    latent = {**real_layout.unpack(real), **positive_layout.unpack(positive)}
    series = series_layout.unpack(params[PanelSite.SERIES][:, 0, :])
    dispersion = latent[PanelSite.DISPERSION_MEAN] + latent[PanelSite.DISPERSION_SCALE] * series.pop(PanelSite.DISPERSION_RAW)[:, None]
    assert structure.has_dispersion_coef  # each cell's dispersion moves with its covariates
    promo = encoded.encoding.series_names(tables.spec).index("promo")
    dispersion = dispersion + jnp.asarray(inputs.x_series)[..., promo] * latent[PanelSite.DISPERSION_COEF][0]
    idx = jnp.arange(mask.shape[0])
    log_mu = log_mean({**latent, **series}, inputs, structure, idx)
    tails = (latent[PanelSite.TAIL_LOGIT], latent[PanelSite.TAIL_GAP])
    y = jnp.asarray(encoded.history.y)
    pmf = np.asarray(likelihood(structure, log_mu, dispersion, *tails).log_prob(y))
    survival = np.asarray(log_survival(structure, y, log_mu, dispersion, *tails))
    assert np.all(survival[mask] <= 1e-6) and np.all(survival[mask] >= pmf[mask] - 1e-4)
    change = survival[mask].sum() - pmf[mask].sum()
    assert float(with_censoring - without) == pytest.approx(change, rel=1e-4, abs=1e-2)

    grads = jax.jit(jax.grad(lambda p: log_density(model, (inputs, structure), {}, p)[0]))(params)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads.values())


# --- spec, validation, encoding --------------------------------------------------------------------

SPEC = """\
name: shelf
frequency: week
target_kind: units
sales:
  file: sales.csv
  period: week
  store: shop
  product: sku
  target: qty
  stockout: sold_out
  stock_on_hand: on_hand
"""
WEEKS = [(dt.date(2024, 1, 5) + dt.timedelta(weeks=i)).isoformat() for i in range(6)]


def _sales_rows() -> list[dict[str, str]]:
    """2 shops x 1 sku x 6 weeks; week 2 of shop 1 flagged, week 4 of shop 2 ends with no stock."""
    rows = []
    for shop in (1, 2):
        for i, week in enumerate(WEEKS):
            flag = "true" if (shop, i) == (1, 2) else "0"
            on_hand = "0" if (shop, i) == (2, 4) else "3.5"
            rows.append({"shop": str(shop), "sku": "7", "week": week, "qty": str(5 + i), "sold_out": flag, "on_hand": on_hand})
    return rows


def _write(folder: Path, rows: list[dict[str, str]], future: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_csv(folder / "sales.csv")
    if future:
        pl.DataFrame({"shop": ["1", "2"], "sku": ["7", "7"], "week": [(dt.date(2024, 2, 16)).isoformat()] * 2}).write_csv(folder / "future.csv")
    return folder


def test_stockout_flag_and_stock_on_hand_mark_censored_periods(tmp_path: Path) -> None:
    folder = _write(tmp_path, _sales_rows(), future=True)
    tables = read_panel(parse_spec(SPEC, "shelf.yaml"), folder, folder / "future.csv")  # the future has neither column
    flagged = tables.sales.filter(pl.col(CENSORED)).select(n.SERIES_STORE, n.PERIOD).rows()
    assert flagged == [(1, dt.date.fromisoformat(WEEKS[2])), (2, dt.date.fromisoformat(WEEKS[4]))]
    assert CENSORED not in tables.future.columns
    encoded = encode_panel(tables)
    assert encoded.history.censored.sum() == 2 and encoded.future.censored is None
    assert encoded.history.censored[0, 2] and encoded.history.censored[1, 4]


def test_a_spec_whose_stockout_column_is_another_role_is_an_error() -> None:
    with pytest.raises(SpecError, match="stockout 'qty' is also the target"):
        parse_spec(SPEC.replace("stockout: sold_out", "stockout: qty"), "shelf.yaml")


PLANTED = {
    "flag not 0/1": ("sold_out", 3, "2", r.RULE_PARSE_FLAG),
    "flag blank": ("sold_out", 5, "", r.RULE_NOT_BLANK),
    "negative stock": ("on_hand", 8, "-1", r.RULE_STOCK_NOT_NEGATIVE),
    "stock blank": ("on_hand", 11, "", r.RULE_NOT_BLANK),
}


@pytest.mark.parametrize("fault", list(PLANTED.values()), ids=list(PLANTED))
def test_a_planted_stock_fault_is_reported_by_file_column_rule_and_row(tmp_path: Path, fault) -> None:
    column, row, value, rule = fault
    rows = _sales_rows()
    rows[row - 1][column] = value
    folder = _write(tmp_path, rows)
    with pytest.raises(InputValidationError) as caught:
        read_panel(parse_spec(SPEC, "shelf.yaml"), folder)
    failures = caught.value.report.failures
    assert [(f.role, f.column, f.rule, f.rows) for f in failures] == [(FileRole.SALES, column, rule, (row,))]
    assert failures[0].file == str(folder / "sales.csv")


# --- recovery (slow) -------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_censored_model_recovers_mean_demand_the_uncensored_one_underestimates(tmp_path: Path) -> None:
    demo = generate_panel_demo(
        seed=0, n_stores=6, n_departments=2, products_per_department=3, n_weeks=80, horizon=13, stockout_share=0.2, concentration=5.0
    )
    result = censoring_experiment(demo, steps=1000, seed=0)
    true_mean, censored, uncensored = result["true_mean"], result["censored"], result["uncensored"]
    assert 0.15 < result["stocked_out"] < 0.27
    assert censored["mean"] == pytest.approx(true_mean, rel=0.03)
    assert uncensored["mean"] < true_mean * 0.96 and uncensored["mean"] < censored["mean"] * 0.96
    assert abs(censored["coverage90"] - 0.90) <= 0.03
    # the censored fit's state round-trips (its structure carries the survival grid)
    fitted = censored["fitted"]
    loaded = panel_state.load(panel_state.save(fitted, tmp_path / "model"))
    assert loaded.structure == fitted.structure and loaded.structure.censor_terms > 0
    assert loaded.spec.sales.stockout == "stockout"
