"""A panel spec's main job on a shared data set: read+validate, encode, fit, forecast series and aggregates.

The last --horizon periods of the shared sales file are the future table (their targets dropped); the rest
is the history. One fresh process per repeat. Goal (issue 10): validate, fit and forecast in 60 s or less
on this 2-core machine, for walmart and for dominicks_oj.
"""

from __future__ import annotations

import time
from pathlib import Path

import common
import jax

from tasks.config import ForecastConfig, PanelFitConfig
from tasks.data.panel_ingest import read_panel
from tasks.data.spec import builtin_spec
from tasks.evaluate.panel_backtest import default_horizon, split
from tasks.panel_pipeline import aggregate_levels, encode_tables, fit_encoded, forecast_encoded, forecast_frame

SHARED = common.REPO.parent / "shared" / "data"
ISSUE_HORIZON = {"walmart": 13, "dominicks_oj": 12}  # issue 10's forecast horizons, as in EVALUATION.md
FIELDS = [
    ("read_validate_s", "read+validate", ".2f"),
    ("encode_s", "encode", ".2f"),
    ("fit_compile_s", "fit compile s", ".1f"),
    ("fit_run_s", "fit run s", ".1f"),
    ("after_fit_s", "after fit s", ".1f"),
    ("fit_steps", "steps", ".0f"),
    ("converged", "converged", ""),
    ("forecast_s", "forecast s", ".1f"),
    ("total_s", "total s", ".1f"),
    ("peak_rss_gb", "peak RSS GB", ".2f"),
]


def child(args) -> dict:
    spec = builtin_spec(args.dataset)
    t0 = time.perf_counter()
    tables = read_panel(spec, args.data / args.dataset)
    read_s = time.perf_counter() - t0
    origin = sorted(tables.sales["period"].unique())[-args.horizon - args.periods_earlier]
    as_of, _ = split(tables, origin, args.horizon)
    t = time.perf_counter()
    encoded = encode_tables(as_of)
    encode_s = time.perf_counter() - t
    key_fit, key_forecast = jax.random.split(jax.random.key(args.seed))
    fit_config = PanelFitConfig(walk_scale_ahead=args.walk_scale, **({} if args.max_steps is None else {"max_steps": args.max_steps}))
    t = time.perf_counter()
    fitted, fit = fit_encoded(encoded, spec, fit_config, key_fit, on_progress=common.progress(args))
    fit_wall_s = time.perf_counter() - t
    t = time.perf_counter()
    aggregates = aggregate_levels(as_of, encoded)
    arrays = forecast_encoded(fitted, encoded, aggregates, ForecastConfig(num_draws=args.num_draws), key_forecast)
    frame = forecast_frame(as_of, encoded, arrays, aggregates, "bench")
    forecast_s = time.perf_counter() - t
    return {
        "read_validate_s": read_s,
        "encode_s": encode_s,
        "fit_compile_s": fit.compile_seconds,
        "fit_run_s": fit.run_seconds,
        "after_fit_s": fit_wall_s - fit.compile_seconds - fit.run_seconds,  # the scales ahead estimated after the fit, the structure's set-up
        "fit_steps": fit.n_steps,
        "converged": fit.converged,
        "forecast_s": forecast_s,
        "total_s": time.perf_counter() - t0,
        "peak_rss_gb": common.peak_rss_gb(),
        "n_series": encoded.encoding.n_series,
        "n_rows": frame.height,
    }


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], repeats=3, seed=True, draws=True)
    p.set_defaults(data=SHARED)
    p.add_argument("--dataset", choices=("walmart", "dominicks_oj"), default="walmart")
    p.add_argument("--walk-scale", choices=("auto", "moments", "fit"), default="auto", help="the series' walk scale ahead (PanelFitConfig)")
    p.add_argument("--horizon", type=int, default=None, help="periods of the future table (default: the issue's, 13 weeks walmart, 12 OJ)")
    p.add_argument("--periods-earlier", type=int, default=0, help="end the history this many periods before the last horizon's start")
    args = p.parse_args()
    args.data = Path(args.data)
    args.horizon = args.horizon or ISSUE_HORIZON.get(args.dataset) or default_horizon(builtin_spec(args.dataset))
    parent = common.repeated(__file__, args, child, FIELDS)
    if parent is None:
        return
    machine, runs, med = parent
    print(f"data: {args.dataset}, {runs[0]['n_series']:,} series, a future of {args.horizon} periods, {args.num_draws} draws; "
          f"{runs[0]['n_rows']:,} forecast rows with the aggregates")
    common.show(f"median of {len(runs)}", med, FIELDS)
    goals = [common.goal("validate + fit + forecast s", med["total_s"], med["total_s"] <= 60, "<= 60 s")]
    common.result("panel_run", args, machine, repeats=runs, median=med, goals=goals)


if __name__ == "__main__":
    main()
