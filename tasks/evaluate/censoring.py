"""The censoring experiment: one simulated panel with stock-outs, fitted with and without being told which
periods stocked out; how close each comes to the true mean demand, and how well its intervals cover the
horizon's true (uncensored) demand. Shared by ``tests/test_censored.py`` and ``bench/censoring.py``.

Mean demand: the posterior mean of E[demand] over the history's observed cells, against the true mean of
those cells; coverage: the horizon's true demand inside the 90% and 50% intervals. Pure: no Prefect, no MLflow.
"""

from __future__ import annotations

import time
from dataclasses import replace

import jax
import numpy as np
import polars as pl

from tasks import names as n
from tasks import panel_pipeline as pp
from tasks.config import ForecastConfig, PanelFitConfig
from tasks.data.panel_demo import PanelDemo
from tasks.data.panel_encode import encode_panel
from tasks.data.panel_ingest import PanelTables
from tasks.model.panel_inference import posterior_mean_demand

FORECAST_DRAWS = 400


def without_censoring(tables: PanelTables) -> PanelTables:
    """The same sales with the stock-out flags dropped: a model that reads sales as demand."""
    spec = tables.spec.model_copy(update={"sales": tables.spec.sales.model_copy(update={"stockout": None})})
    return replace(tables, spec=spec, sales=tables.sales.drop(n.CENSORED))


def censoring_experiment(demo: PanelDemo, steps: int, seed: int) -> dict:
    """``true_mean``, ``sales_mean``, ``stocked_out``, ``true_future_mean``, and per model (``censored``,
    ``uncensored``): ``mean`` (its estimate of the true mean), ``future_mean``, ``coverage90``, ``coverage50``,
    ``seconds`` and ``fitted``."""
    tables = demo.tables()
    truth = demo.truth_future.select("store_id", "item_id", "week", pl.col("units").alias("demand"))
    out: dict = {"stocked_out": float(tables.sales[n.CENSORED].mean()), "true_future_mean": float(demo.truth.future_mean.mean())}
    config = PanelFitConfig(max_steps=steps, chunk_steps=100)
    for name, these in (("censored", tables), ("uncensored", without_censoring(tables))):
        start = time.perf_counter()
        encoded = encode_panel(these)
        fitted, _ = pp.fit_encoded(encoded, these.spec, config, jax.random.key(seed), on_progress=lambda p: None)
        history = pp.model_inputs(encoded, encoded.history, fitted.structure, fitted.shock_basis, with_target=True)
        estimate = posterior_mean_demand(fitted.params, fitted.structure, history, jax.random.key(seed + 200))
        observed = encoded.history.observed
        s_store, s_product = np.asarray(encoded.encoding.series).T  # codes: the demo's store and product order
        out["true_mean"] = float(demo.truth.history_mean[s_store, s_product][observed].mean())
        out["sales_mean"] = float(encoded.history.y[observed].mean())
        aggregates = pp.aggregate_levels(these, encoded)
        arrays = pp.forecast_encoded(fitted, encoded, aggregates, ForecastConfig(num_draws=FORECAST_DRAWS), jax.random.key(seed + 100))
        frame = pp.forecast_frame(these, encoded, arrays, aggregates, "experiment").filter(pl.col(n.LEVEL) == n.SERIES_LEVEL)
        joined = frame.join(truth, on=["store_id", "item_id", "week"], how="inner")
        demand = joined["demand"].to_numpy()
        out[name] = {
            "mean": float(estimate[observed].mean()),
            "future_mean": float(joined[n.MEAN].mean()),
            "coverage90": float(((demand >= joined["q05"].to_numpy()) & (demand <= joined["q95"].to_numpy())).mean()),
            "coverage50": float(((demand >= joined["q25"].to_numpy()) & (demand <= joined["q75"].to_numpy())).mean()),
            "seconds": time.perf_counter() - start,
            "fitted": fitted,
        }
    return out
