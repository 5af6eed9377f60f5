"""Censored demand: on simulated panels with ~20% of periods stocked out, how close the censored and the
uncensored panel models come to the true mean demand, and how well the censored model's intervals cover
the true demand of held-out periods.

The simulation (``tasks.data.panel_demo`` with ``stockout_share=0.2``): NB demand (concentration 5)
with store, product, season, price and promotion effects; each period's stock a random quantile of its
series' demand law, sales min(demand, stock), a flag where the stock ran out. Both models see the same
sales; only the censored one is told which periods stocked out. Mean demand: the posterior mean of
E[demand] over the history's observed cells, against the true mean of those cells; coverage: the
horizon's true (uncensored) demand inside the 90% and 50% intervals.

    python bench/censoring.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import common
import jax
import numpy as np
import polars as pl

from tasks import names as n
from tasks import panel_pipeline as pp
from tasks.config import ForecastConfig, PanelFitConfig
from tasks.data.panel_demo import generate_panel_demo
from tasks.data.panel_encode import encode_panel
from tasks.data.panel_ingest import CENSORED
from tasks.model.panel_inference import posterior_mean_demand


def uncensored(tables):
    spec = tables.spec.model_copy(update={"sales": tables.spec.sales.model_copy(update={"stockout": None})})
    return replace(tables, spec=spec, sales=tables.sales.drop(CENSORED))


def run_seed(seed: int, args: argparse.Namespace) -> dict:
    demo = generate_panel_demo(
        seed=seed, n_stores=args.stores, n_departments=2, products_per_department=args.products_per_department,
        n_weeks=args.weeks, horizon=args.horizon, stockout_share=args.share, concentration=args.concentration,
    )  # fmt: skip
    tables = demo.tables()
    truth = demo.truth_future.select("store_id", "item_id", "week", pl.col("units").alias("demand"))
    out: dict = {"seed": seed, "stocked_out": float(tables.sales[CENSORED].mean()), "true_future_mean": float(demo.truth.future_mean.mean())}
    config = PanelFitConfig(max_steps=args.steps, chunk_steps=100)
    for name, these in (("censored", tables), ("uncensored", uncensored(tables))):
        t = time.perf_counter()
        encoded = encode_panel(these)
        fitted, _ = pp.fit_encoded(encoded, these.spec, config, jax.random.key(seed), on_progress=lambda p: None)
        history = pp.model_inputs(encoded, encoded.history, fitted.structure, fitted.shock_basis, with_target=True)
        estimate = posterior_mean_demand(fitted.params, fitted.structure, history, jax.random.key(seed + 200))
        observed = encoded.history.observed
        s_store, s_product = np.asarray(encoded.encoding.series).T
        out["true_mean"] = float(demo.truth.history_mean[s_store, s_product][observed].mean())
        out["sales_mean"] = float(encoded.history.y[observed].mean())
        aggregates = pp.aggregate_levels(these, encoded)
        arrays = pp.forecast_encoded(fitted, encoded, aggregates, ForecastConfig(num_draws=400), jax.random.key(seed + 100))
        frame = pp.forecast_frame(these, encoded, arrays, aggregates, "bench").filter(pl.col(n.LEVEL) == n.SERIES_LEVEL)
        joined = frame.join(truth, on=["store_id", "item_id", "week"], how="inner")
        demand = joined["demand"].to_numpy()
        out[name] = {
            "mean": float(estimate[observed].mean()),
            "future_mean": float(joined[n.MEAN].mean()),
            "coverage90": float(((demand >= joined["q05"].to_numpy()) & (demand <= joined["q95"].to_numpy())).mean()),
            "coverage50": float(((demand >= joined["q25"].to_numpy()) & (demand <= joined["q75"].to_numpy())).mean()),
            "seconds": time.perf_counter() - t,
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--stores", type=int, default=8)
    p.add_argument("--products-per-department", type=int, default=4)
    p.add_argument("--weeks", type=int, default=80)
    p.add_argument("--horizon", type=int, default=13)
    p.add_argument("--share", type=float, default=0.2, help="share of periods stocked out (about)")
    p.add_argument("--concentration", type=float, default=5.0)
    p.add_argument("--steps", type=int, default=1500)
    args = p.parse_args()
    common.print_machine(common.machine_info())
    start = time.perf_counter()
    n_series = args.stores * 2 * args.products_per_department
    print(
        f"panel: {n_series} series x {args.weeks} weeks, horizon {args.horizon}, concentration {args.concentration}, "
        f"{args.steps} SVI steps; seeds {args.seeds}"
    )
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        r = run_seed(seed, args)
        rows.append(r)
        c, u = r["censored"], r["uncensored"]
        print(
            f"seed {seed}: stocked out {100 * r['stocked_out']:.1f}% | true mean demand {r['true_mean']:.2f} (sales {r['sales_mean']:.2f}) | "
            f"censored {c['mean']:.2f} ({100 * (c['mean'] / r['true_mean'] - 1):+.1f}%) | "
            f"uncensored {u['mean']:.2f} ({100 * (u['mean'] / r['true_mean'] - 1):+.1f}%) | "
            f"horizon: true {r['true_future_mean']:.2f}, censored {c['future_mean']:.2f}, uncensored {u['future_mean']:.2f} | "
            f"coverage 90/50: censored {100 * c['coverage90']:.1f}/{100 * c['coverage50']:.1f}, "
            f"uncensored {100 * u['coverage90']:.1f}/{100 * u['coverage50']:.1f} | {c['seconds']:.0f}s + {u['seconds']:.0f}s"
        )
    err = {k: np.array([100 * (r[k]["mean"] / r["true_mean"] - 1) for r in rows]) for k in ("censored", "uncensored")}
    cov = {(k, lv): np.mean([100 * r[k][f"coverage{lv}"] for r in rows]) for k in ("censored", "uncensored") for lv in (90, 50)}
    print(
        f"mean over seeds: true mean demand {np.mean([r['true_mean'] for r in rows]):.2f}; "
        f"censored error {err['censored'].mean():+.1f}% (worst {err['censored'][np.argmax(np.abs(err['censored']))]:+.1f}%); "
        f"uncensored error {err['uncensored'].mean():+.1f}% (worst {err['uncensored'][np.argmax(np.abs(err['uncensored']))]:+.1f}%)"
    )
    print(
        f"coverage of the true demand: censored 90% -> {cov[('censored', 90)]:.1f}, 50% -> {cov[('censored', 50)]:.1f}; "
        f"uncensored 90% -> {cov[('uncensored', 90)]:.1f}, 50% -> {cov[('uncensored', 50)]:.1f}"
    )
    print(f"run time {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
