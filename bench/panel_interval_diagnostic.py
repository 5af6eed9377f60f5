"""Where a panel model's intervals fall short: the backtest with chosen parts of each fitted posterior widened.

For each origin of the panel backtest (model only), the fitted guide's scales of the named series-level
variables (``series_raw``: the series' coefficient deviations, ``level_steps``, ``dispersion_raw``) are
multiplied by --factor before the forecast; prints wQL and coverage per level. A diagnostic for
EVALUATION.md, not a calibration method: the project's forecasts never widen their posterior.

    python bench/panel_interval_diagnostic.py --dataset dominicks_oj --horizon 12 --widen series_raw --factor 3
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import common
import jax
import numpy as np
import polars as pl

import tasks.evaluate.panel_backtest as pb
from tasks.config import ForecastConfig, PanelFitConfig
from tasks.data.panel_ingest import read_panel
from tasks.data.spec import builtin_spec
from tasks.model.panel import PanelSite, layouts

SHARED = common.REPO.parent / "shared" / "data"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="dominicks_oj")
    p.add_argument("--data", type=Path, default=SHARED)
    p.add_argument("--horizon", type=int, default=12)
    p.add_argument("--widen", default="series_raw", help="comma-separated series-level variables")
    p.add_argument("--factor", type=float, default=3.0)
    p.add_argument("--columns", default="", help="series_raw only: comma-separated coefficient name prefixes (default: all)")
    p.add_argument("--num-draws", type=int, default=500)
    args = p.parse_args()
    common.print_machine(common.machine_info())
    names = [name.strip() for name in args.widen.split(",") if name.strip()]
    columns = {name.strip() for name in args.columns.split(",") if name.strip()}
    forecast = pb.forecast_encoded

    def widened(fitted, *rest, **options):
        params = dict(fitted.params)
        scale = np.array(params[f"{PanelSite.SERIES}.scale"])
        series = layouts(fitted.structure)[2]
        for name in names:
            start, stop, _ = series.slice(name)
            if name == PanelSite.SERIES_RAW and columns:
                chosen = [i for i, coef in enumerate(fitted.structure.coef_names) if any(coef.startswith(c) for c in columns)]
                scale[:, start + np.array(chosen, dtype=int)] *= args.factor
            else:
                scale[:, start:stop] *= args.factor
        params[f"{PanelSite.SERIES}.scale"] = scale
        return forecast(replace(fitted, params=params), *rest, **options)

    pb.forecast_encoded = widened
    tables = read_panel(builtin_spec(args.dataset), args.data / args.dataset)
    scores = []
    for number, origin in enumerate(pb.default_origins(tables, args.horizon)):
        key = jax.random.fold_in(jax.random.key(0), number)
        done = pb.run_panel_backtest(
            tables, origin, args.horizon, PanelFitConfig(), ForecastConfig(num_draws=args.num_draws), key, baselines=(), on_progress=lambda _: None
        )
        scores.append(done.scores)
    table = pl.concat(scores).group_by("level").agg(pl.col("wql").mean(), pl.col("coverage_50").mean(), pl.col("coverage_90").mean())
    print(f"{args.dataset}: {', '.join(names)} ({', '.join(sorted(columns)) or 'all columns'}) x {args.factor:g}, means over {len(scores)} origins")
    for row in table.sort("level").iter_rows(named=True):
        print(f"  {row['level']:<14} wQL {row['wql']:.4f}  coverage {row['coverage_50']:.3f} / {row['coverage_90']:.3f}")


if __name__ == "__main__":
    main()
