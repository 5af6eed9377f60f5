"""How far a panel forecast falls behind demand that grows: the simulated panel with a steady chain-wide growth.

    python bench/trend_bias.py                      # growth 0, 5% and 15% a year; the spec's walks (none), store walks, a chain walk
    python bench/trend_bias.py --growth 0.05 --walks store

The panel demo (``generate_panel_demo``: 12 stores x 8 products, 104 weeks of history, 13 ahead) with every
series' log mean rising by ``--growth`` a year; one fit per growth and walk setting (seed 0), and the forecast
total of the 13 weeks over the generator's true mean total. A level that walks without drift (the model's) is
expected to lag by about half a block plus half the horizon's growth: 1.2% at 5% a year, 3.7% at 15%; what it
loses beyond that, the level failed to follow the growth in the history.
"""

from __future__ import annotations

import argparse
import math
import time

import common
import jax

from tasks import panel_pipeline as pp
from tasks.config import ForecastConfig, PanelFitConfig
from tasks.data.panel_demo import generate_panel_demo
from tasks.data.panel_encode import encode_panel

BLOCK_WEEKS, HORIZON = 13, 13


def expected_lag(growth: float) -> float:
    """The forecast over truth of a level fixed at the anchor block's mean: half a block behind the history's
    end, and flat over a horizon the truth keeps growing through."""
    weeks_behind, weeks_ahead = (BLOCK_WEEKS - 1) / 2, (HORIZON + 1) / 2
    return math.exp(-growth * (weeks_behind + weeks_ahead) / 52)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--growth", type=float, nargs="+", default=[0.0, 0.05, 0.15], help="log growth per year")
    p.add_argument("--walks", nargs="+", default=["spec", "store", "chain"], help="'spec' (the demo spec's: none) or shared walks, e.g. store or chain,store")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-draws", type=int, default=300)
    args = p.parse_args()
    machine = common.machine_info()
    common.print_machine(machine)
    rows = []
    key_fit, key_forecast = jax.random.split(jax.random.key(args.seed))
    for growth in args.growth:
        demo = generate_panel_demo(seed=args.seed, n_stores=12, n_departments=2, products_per_department=4, chain_growth=growth)
        tables = demo.tables()
        encoded = encode_panel(tables)
        truth = float(demo.truth.future_mean.sum())
        for walks in args.walks:
            config = PanelFitConfig() if walks == "spec" else PanelFitConfig(level_walks=tuple(walks.split(",")))
            t = time.perf_counter()
            fitted, fit = pp.fit_encoded(encoded, tables.spec, config, key_fit, on_progress=lambda _: None)
            forecast = pp.forecast_encoded(fitted, encoded, (), ForecastConfig(num_draws=args.num_draws), key_forecast)
            ratio = float(forecast.mean.sum()) / truth
            rows.append({"growth": growth, "walks": walks, "forecast_over_truth": ratio, "expected_lag": expected_lag(growth), "steps": fit.n_steps})
            print(
                f"growth {growth:.2f}/year, walks {walks:<6}: forecast total / true mean total {ratio:.4f} "
                f"(a level without drift: {expected_lag(growth):.4f}); {fit.n_steps} steps, {time.perf_counter() - t:.0f} s",
                flush=True,
            )
    common.result("trend_bias", args, machine, rows=rows)


if __name__ == "__main__":
    main()
