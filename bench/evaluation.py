"""Regenerate EVALUATION.md: the backtest of the last 48 days of the shared Rossmann history (the model and the
baselines on the same rows) and the cold-start curve, with the command, machine and versions that produced them.

    python bench/evaluation.py                      # writes EVALUATION.md at the repository root
    python bench/evaluation.py --write /tmp/e.md    # elsewhere

Runs the same pure functions as the backtest flow (``bhm backtest --cold-start-stores 100``), without Prefect
and MLflow, so that the file depends only on the data, the code and the seed.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import common
import numpy as np
import polars as pl

from tasks import names as n
from tasks.config import BASELINE_NAMES, COLD_START_DAYS, ForecastConfig
from tasks.data.validate import read_validated
from tasks.evaluate.backtest import rmspe_ratio_interval, run_backtests, squared_percentage_error
from tasks.evaluate.coldstart_curve import cold_start_curve
from tasks.ops.atomic import write_file
from tasks.pipeline import RunKeys
from tasks.track import report

GOALS_HEADING = "## Goals (issue 5)"  # the last section this script writes
COLD_START_PROTOCOL = (
    "A seeded random set of stores is held out of the global fit. Each held-out store opens N days before the "
    "origin: it is given only those N days, fitted locally against the globals fitted without it, and its "
    "horizon is forecast. The baselines are given the same N days (LightGBM also every other store's history); the "
    "pooled and unpooled variants are fitted without the held-out stores and then locally, as the model is. At each "
    "N every method is scored on the rows that all of them forecast: N = 1 is the Sunday before the origin, when "
    "most stores are closed and the per-store baselines have nothing to go on, so N = 1 is scored on the stores "
    "open that day. The references are the same stores fitted locally on their whole history, and the other stores."
)


def _largest_errors(curve, days: int = 7, top: int = 5) -> list[str]:
    """The stores that contribute most to the model's squared percentage error at ``days`` days of history."""
    rows = curve.rows.filter(pl.col("method") == "model", pl.col("scored"))
    shares = []
    for label, part in (("new", rows.filter(pl.col("days") == days)), ("whole", rows.filter(pl.col("days").is_null()))):
        pe2 = part.with_columns(squared_percentage_error().alias("pe2"))
        shares.append(pe2.group_by(n.STORE).agg((pl.col("pe2").sum() / pe2["pe2"].sum()).alias(label)))
    table = shares[0].join(shares[1], on=n.STORE, how="left").sort("new", descending=True).head(top)
    lines = [
        f"The stores that contribute most to the model's squared percentage error at {days} days of history "
        "(share of the sum over all held-out stores), and the same stores' share on their whole history:",
        "",
        f"| store | share at {days} days | share on the whole history |",
        "|---:|---:|---:|",
    ]
    lines += [f"| {r[n.STORE]} | {r['new']:.1%} | {r['whole']:.1%} |" for r in table.iter_rows(named=True)]
    return [*lines, ""]


def _error_parts(curve) -> list[str]:
    """The model's log errors (log sales - log median) split into a part per store, a part per store and weekday
    on top of it, and the rest, at each N and on the whole history: which part a short history costs."""
    rows = curve.rows.filter(pl.col("method") == "model", pl.col("scored")).with_columns(
        (pl.col(n.SALES).log() - pl.col(n.quantile_column(0.5)).log()).alias("e"), pl.col(n.DATE).dt.weekday().alias("wd")
    )
    lines = [
        "Where the model's error on the held-out stores comes from: the root mean square of its log error (log sales - "
        "log median), and of three additive parts of it: each store's mean error (its level), each store and weekday's "
        "mean error on top of that (its weekly profile), and the rest (promotions, holidays, days).",
        "",
        "| days of history | log error | store level | store weekday profile | rest |",
        "|---|---:|---:|---:|---:|",
    ]
    for days in [*sorted({p["days"] for p in curve.points}), None]:
        part = rows.filter(pl.col("days").is_null() if days is None else pl.col("days") == days)
        part = part.with_columns(pl.col("e").mean().over(n.STORE).alias("store"))
        part = part.with_columns((pl.col("e") - pl.col("store")).mean().over(n.STORE, "wd").alias("weekday"))
        part = part.with_columns((pl.col("e") - pl.col("store") - pl.col("weekday")).alias("rest"))
        rms = {c: float(np.sqrt((part[c].to_numpy().astype(float) ** 2).mean())) for c in ("e", "store", "weekday", "rest")}
        label = "whole history" if days is None else str(days)
        lines.append(f"| {label} | {rms['e']:.4f} | {rms['store']:.4f} | {rms['weekday']:.4f} | {rms['rest']:.4f} |")
    return [*lines, ""]


def _seven_day_and_reference_rows(curve) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The model's scored rows at 7 days, and the whole-history reference on exactly those rows."""
    seven = curve.rows.filter(pl.col("method") == "model", pl.col("days") == 7)
    keys = seven.filter(pl.col("scored")).select(n.STORE, n.DATE).with_columns(pl.lit(True).alias("_in"))
    reference = curve.rows.filter(pl.col("days").is_null()).join(keys, on=[n.STORE, n.DATE], how="left")
    return seven, reference.with_columns(pl.col("scored") & pl.col("_in").fill_null(False)).drop("_in")


def _goals(overall: dict, curve) -> list[str]:
    model = overall["model"]
    baselines = {k: v for k, v in overall.items() if k != "model"}
    lines = []

    def line(name: str, met: bool, detail: str) -> None:
        lines.append(f"| {name} | {'met' if met else '**not met**'} | {detail} |")

    beats = all(model["wql"] < b["wql"] and model["crps_scaled"] < b["crps_scaled"] for b in baselines.values())
    line(
        "beats every baseline on wQL and CRPS",
        beats,
        ", ".join(f"{k}: wQL {v['wql']:.4f}, CRPS {v['crps_scaled']:.4f}" for k, v in overall.items()),
    )
    if "median_by_weekday" in overall:
        ratio = model["rmspe"] / overall["median_by_weekday"]["rmspe"]
        line("RMSPE well below median by weekday", ratio < 0.8, f"ratio {ratio:.2f}")
    if "lightgbm" in overall:
        ratio = model["rmspe"] / overall["lightgbm"]["rmspe"]
        line("RMSPE within 10% of LightGBM's or better", ratio <= 1.10, f"ratio {ratio:.2f}")
    for key, nominal in (("coverage_50", 0.5), ("coverage_90", 0.9)):
        line(f"{key} within 3 points (all stores)", abs(model[key] - nominal) <= 0.03, f"{model[key]:.1%}")
    if curve is not None:
        seven = {p["method"]: p for p in curve.points if p["days"] == 7}
        if "model" in seven:
            new = seven["model"]
            low, high = rmspe_ratio_interval(*_seven_day_and_reference_rows(curve))
            ratio = new["rmspe"] / curve.full_history["rmspe"]
            line(
                "new stores (7 days): RMSPE within 15% of the same stores on their whole history",
                ratio <= 1.15,
                f"{new['rmspe']:.4f} vs {curve.full_history['rmspe']:.4f} (ratio {ratio:.2f}; 90% interval over "
                f"resampled stores {low:.2f} to {high:.2f})",
            )
            ratio = new["rmspe"] / curve.established["rmspe"]
            line(
                "new stores (7 days): RMSPE within 15% of the other (established) stores",
                ratio <= 1.15,
                f"{new['rmspe']:.4f} vs {curve.established['rmspe']:.4f} (ratio {ratio:.2f})",
            )
            for key, nominal in (("coverage_50", 0.5), ("coverage_90", 0.9)):
                line(
                    f"new stores (7 days): {key} within 3 points",
                    abs(new[key] - nominal) <= 0.03,
                    f"{new[key]:.1%} ± {new[key + '_se'] * 100:.1f} (standard error over resampled stores)",
                )
            others = {k: v for k, v in seven.items() if k != "model"}
            line(
                "new stores (7 days): better RMSPE than every baseline",
                all(new["rmspe"] < v["rmspe"] for v in others.values()),
                ", ".join(f"{k} {v['rmspe']:.4f}" for k, v in others.items()),
            )
    return ["| goal | status | measured |", "|---|---|---|", *lines]


def _kept_sections(path: Path) -> str:
    """What a regeneration of ``path`` keeps after its generated part; exits when the file has content but not
    the generated part's last heading, whose measured sections it would otherwise overwrite."""
    existing = path.read_text() if path.exists() else ""
    kept = report.measured_sections(existing, GOALS_HEADING)
    if kept is None and existing.strip():
        raise SystemExit(
            f"{path} has no line {GOALS_HEADING!r}, so its measured sections cannot be told from the generated part: "
            f"refusing to overwrite its {len(existing.splitlines()):,} lines (restore the heading, or move the file aside)"
        )
    return kept or ""


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], repeats=None, fit=False)
    p.add_argument("--write", type=Path, default=common.REPO / "EVALUATION.md", help="file to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--horizon-days", type=int, default=common.HORIZON_DAYS)
    p.add_argument("--cold-start-stores", type=int, default=100)
    p.add_argument("--max-steps", type=int, default=None, help="cap the fits (smoke runs only)")
    args = p.parse_args()
    _kept_sections(args.write)  # before hours of backtests: a file this script cannot regenerate stops it now
    common.setup(args)
    machine = common.machine_info()
    common.print_machine(machine)
    train_path, stores_path = common.rossmann_files(args.data)
    fit = common.fit_config(args.max_steps)
    forecast = ForecastConfig()
    keys = RunKeys.from_seed(args.seed)
    inputs = read_validated(train_path, stores_path)

    t = time.perf_counter()
    suite = run_backtests(
        inputs.train, inputs.stores, fit, forecast, keys.backtest, (), args.horizon_days, BASELINE_NAMES, common.progress(args)
    )
    backtest_s = time.perf_counter() - t
    print(report.methods_table(suite.overall))
    t = time.perf_counter()
    curve = None
    if args.cold_start_stores:
        curve = cold_start_curve(
            inputs.train,
            inputs.stores,
            fit,
            forecast,
            keys.fit,
            args.cold_start_stores,
            COLD_START_DAYS,
            args.horizon_days,
            BASELINE_NAMES,
            args.seed,
        )
        print(report.cold_start_table(curve))
    curve_s = time.perf_counter() - t

    origin = suite.results[0].origin
    end = origin + dt.timedelta(days=args.horizon_days - 1)
    command = "python bench/evaluation.py" + (f" --max-steps {args.max_steps}" if args.max_steps else "")
    text = "\n".join(
        [
            "# Evaluation",
            "",
            "The Rossmann backtest below, up to and including its goals, is generated by `bench/evaluation.py`; do not edit",
            "that part by hand (the sections after it are measured by the commands each one names, and the script keeps",
            "them as they are). To reproduce, with the shared Rossmann files in",
            "`../shared/data/rossmann` (or `--data DIR`, or `BHM_ROSSMANN_DIR`) and the `eval` extra installed:",
            "",
            "```bash",
            "pip install '.[eval]'",
            command,
            "```",
            "",
            f"The same evaluation runs as a flow, recorded in MLflow: `bhm backtest --train train.csv --stores store.csv "
            f"--cold-start-stores {args.cold_start_stores}`.",
            "",
            f"Data: `{train_path.name}` ({inputs.train.height:,} rows, {inputs.train['Store'].n_unique():,} stores). Fit on the history "
            f"before {origin}; forecast and score {origin} to {end} ({args.horizon_days} days) on open days with sales > 0, "
            "as Kaggle scored Rossmann. Every method is scored on the same rows. Seed "
            f"{args.seed}; {forecast.num_draws} predictive draws. Machine: {machine['cpu_count']} CPUs ({machine['cpu']}), "
            f"Python {machine['python']}, jax {machine['jax']}, numpyro {machine['numpyro']}, polars {machine['polars']}; "
            f"generated {dt.date.today()} in {backtest_s + curve_s:.0f} s.",
            "",
            "Metrics: RMSPE of the mean (and of the median); MAPE of the median; wQL, the mean pinball loss over the "
            "quantiles 0.05, 0.25, 0.5, 0.75, 0.95 divided by mean sales; CRPS from the predictive draws "
            "(scoringrules; for LightGBM from a sample of its interpolated quantiles) divided by mean sales; "
            "coverage of the 50% and 90% central intervals.",
            "",
            "## Backtest: the model against the baselines",
            "",
            report.methods_table(suite.overall),
            "Baselines: `median_by_weekday` (each store's median on the same weekday over its last 12 weeks, the",
            "Kaggle benchmark), `poisson_per_store` (a Poisson regression per store on the model's day features,",
            "scikit-learn), `lightgbm` (one gradient-boosted model over all stores on calendar, store-day and store",
            "features with the store id as a category; squared error on log sales for the point forecast, a",
            "quantile objective per level), and the model itself with other pooling: `pooled` (no store-level",
            "variation: a store is its attributes) and `unpooled` (each store's coefficients on their own wide prior,",
            "nothing learnt from other stores).",
            "",
        ]
        + (["## Cold start", "", COLD_START_PROTOCOL, report.cold_start_table(curve), *_largest_errors(curve), *_error_parts(curve)] if curve is not None else [])
        + [GOALS_HEADING, "", *_goals(suite.overall, curve), ""]
    )
    kept = _kept_sections(args.write)  # read again: the file may have changed while the backtests ran
    write_file(args.write, lambda tmp: tmp.write_text(text + ("\n" + kept if kept else "")))
    print(f"wrote {args.write}" + (f" (kept its {len(kept.splitlines()):,} lines of measured sections)" if kept else ""))


if __name__ == "__main__":
    main()
