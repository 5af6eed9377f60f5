"""Error analysis of the Rossmann model against LightGBM across the year (issue 13): where each one errs.

    python bench/error_analysis.py --parquet rows.parquet          # fit both at the 8 origins, save the rows, analyse
    python bench/error_analysis.py --from rows.parquet             # analyse saved rows, no refit
    python bench/error_analysis.py --origins 2014-10-08 2014-11-22 --max-steps 200 --num-draws 100   # smoke

Runs the model and the LightGBM baseline (tasks.evaluate.backtest.run_backtest, seed 0, the key that
``bhm backtest`` derives, each origin's key as ``run_backtests`` folds it) and breaks the errors of the scored
rows (open days with sales > 0, the same rows for both methods) down by weekday, month, promotion, holidays and
the days around them, week of the horizon, store type and assortment, and store; lists the store-days and
stores that make most of the squared percentage error; refits LightGBM's point model on one origin's history
for its gain importances; scores a 50/50 blend of the two point forecasts (a diagnostic only).
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from pathlib import Path

import common
import numpy as np
import polars as pl

from tasks import names as n
from tasks.config import ForecastConfig
from tasks.data import features as fx
from tasks.data.encode import build_spec, encode
from tasks.data.validate import read_validated
from tasks.evaluate import baselines as bl
from tasks.evaluate.backtest import run_backtest, split_at
from tasks.pipeline import RunKeys

ORIGINS = ("2014-05-26", "2014-07-10", "2014-08-24", "2014-10-08", "2014-11-22", "2015-01-06", "2015-02-20", "2015-04-27")
METHODS = ("model", "lightgbm")
SHORT = {"model": "model", "lightgbm": "LGBM"}
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _holiday_label(k: int) -> str:
    if k == 99:
        return "none within 3 days"
    if k == 0:
        return "state holiday"
    return f"{abs(k)} day(s) {'before' if k < 0 else 'after'}"


LABELS = {"weekday": lambda v: WEEKDAYS[v - 1], "state_holiday": _holiday_label}


# --- running -------------------------------------------------------------------


def run(args, inputs) -> pl.DataFrame:
    """Model and LightGBM (one thread) at each origin; every origin's scored rows, saved as they come."""
    bl.BASELINES["lightgbm"] = functools.partial(bl.lightgbm_global, threads=args.threads)
    fit, forecast = common.fit_config(args.max_steps), ForecastConfig(num_draws=args.num_draws)
    key = RunKeys.from_seed(args.seed).backtest
    import jax

    origins = sorted(args.origins)
    parts = []
    for i, origin in enumerate(origins):
        t = time.perf_counter()
        result = run_backtest(
            inputs.train, inputs.stores, fit, forecast, jax.random.fold_in(key, i), args.horizon_days, origin,
            common.progress(args), ("lightgbm",),
        )
        parts.append(result.scored.with_columns(pl.lit(origin).alias("origin")))
        m, g = result.methods["model"], result.methods["lightgbm"]
        print(
            f"origin {origin}: {time.perf_counter() - t:.0f} s; model RMSPE {m['rmspe']:.4f} wQL {m['wql']:.4f} "
            f"cover {m['coverage_50']:.1%}/{m['coverage_90']:.1%}; LightGBM RMSPE {g['rmspe']:.4f} wQL {g['wql']:.4f}",
            flush=True,
        )
        rows = pl.concat(parts, how="vertical_relaxed")
        if args.parquet:
            rows.write_parquet(args.parquet)
    if args.json:
        args.json.write_text(rows.write_json())
    return rows


def load(path: Path) -> pl.DataFrame:
    if path.suffix == ".json":
        return pl.read_json(path).with_columns(pl.col(n.DATE).cast(pl.Date), pl.col("origin").cast(pl.Date))
    return pl.read_parquet(path)


# --- the rows' context -----------------------------------------------------------------


def context(rows: pl.DataFrame, train: pl.DataFrame, stores: pl.DataFrame) -> pl.DataFrame:
    """Scored rows with the day's calendar (promo, holidays and the days around them), the store's attributes,
    the week of the horizon, and what the store did around the day (closed the day before / after, days
    since a reopening after 3+ days closed, days before such a closure)."""
    day = train.select(n.STORE, n.DATE, n.OPEN, n.PROMO, n.STATE_HOLIDAY, n.SCHOOL_HOLIDAY).sort(n.STORE, n.DATE)
    day = day.with_columns(
        (pl.col(n.STATE_HOLIDAY).cast(pl.String) != "0").alias("_sh"),
        pl.col(n.SCHOOL_HOLIDAY).cast(pl.Int8).alias("_school"),
    )
    # Days to the nearest state holiday of the store's own calendar (its state's), within 3 days each side.
    dated = day.select(n.STORE, n.DATE, "_sh")
    near = None
    for k in range(-3, 4):
        if k == 0:
            continue
        shifted = dated.filter(pl.col("_sh")).select(n.STORE, (pl.col(n.DATE) - dt.timedelta(days=k)).alias(n.DATE)).with_columns(
            pl.lit(k).alias("_k")
        )
        near = shifted if near is None else pl.concat([near, shifted])
    assert near is not None
    nearest = near.with_columns(pl.col("_k").abs().alias("_a")).sort("_a").group_by(n.STORE, n.DATE).first().select(n.STORE, n.DATE, "_k")
    day = day.join(nearest, on=[n.STORE, n.DATE], how="left")
    day = day.with_columns(
        pl.col(n.OPEN).shift(1).over(n.STORE).alias("_open_before"),
        pl.col(n.OPEN).shift(-1).over(n.STORE).alias("_open_after"),
        (pl.col(n.DATE) - pl.col(n.DATE).shift(1).over(n.STORE)).dt.total_days().alias("_gap_before"),
        (pl.col(n.DATE).shift(-1).over(n.STORE) - pl.col(n.DATE)).dt.total_days().alias("_row_gap_after"),
    )
    # Reopening after a closure: an open day whose previous open day is 4+ days earlier (3+ days closed or without
    # rows: a refurbishment, say); each day's days since the store's latest reopening.
    opened = (
        day.filter(pl.col(n.OPEN) == 1)
        .select(n.STORE, n.DATE, "_row_gap_after")
        .with_columns((pl.col(n.DATE) - pl.col(n.DATE).shift(1).over(n.STORE)).dt.total_days().alias("_gap_open"))
        .with_columns(pl.when(pl.col("_gap_open") >= 4).then(pl.col(n.DATE)).alias("_reopened"))
        .with_columns(pl.col("_reopened").forward_fill().over(n.STORE))
        # ... and the days before a closure: the last open day before 3+ days closed (or without rows).
        .with_columns((pl.col(n.DATE).shift(-1).over(n.STORE) - pl.col(n.DATE)).dt.total_days().alias("_gap_next"))
        .with_columns(
            pl.when(pl.col("_gap_next") >= 4).then(pl.col(n.DATE)).alias("_closes"),
            # The closure is rows missing from the data (180 stores lack 2014-07-01 to 2014-12-31), not Open = 0 rows.
            pl.when(pl.col("_gap_next") >= 4).then(pl.col("_row_gap_after").fill_null(1) > 1).alias("_closes_missing"),
        )
        .with_columns(pl.col("_closes").backward_fill().over(n.STORE), pl.col("_closes_missing").backward_fill().over(n.STORE))
        .select(n.STORE, n.DATE, "_gap_open", "_reopened", "_closes", "_closes_missing")
    )
    day = day.join(opened, on=[n.STORE, n.DATE], how="left")
    store = stores.select(n.STORE, pl.col("StoreType").cast(pl.String), pl.col("Assortment").cast(pl.String))
    out = rows.join(day, on=[n.STORE, n.DATE], how="left").join(store, on=n.STORE, how="left")
    out = out.with_columns(
        pl.col(n.DATE).dt.weekday().alias("weekday"),
        pl.col(n.DATE).dt.month().alias("month"),
        ((pl.col(n.DATE) - pl.col("origin")).dt.total_days() // 7 + 1).clip(1, 7).alias("week"),
        pl.col(n.PROMO).cast(pl.Int8).alias("promo"),
        # Days from the nearest state holiday: -3..-1 before it, 0 on it, 1..3 after it, 99 none within 3 days.
        pl.when(pl.col("_sh")).then(0).otherwise(-pl.col("_k")).fill_null(99).alias("state_holiday"),
        pl.col("_school").alias("school_holiday"),
        (pl.col("_open_before").fill_null(1) == 0).alias("closed_before"),
        (pl.col("_open_after").fill_null(1) == 0).alias("closed_after"),
        (pl.col("StoreType") + "/" + pl.col("Assortment")).alias("type_assortment"),
        (pl.col(n.DATE) - pl.col("_reopened")).dt.total_days().alias("days_since_reopening"),
    )
    out = out.with_columns(
        pl.when(pl.col("days_since_reopening").is_null() | (pl.col("days_since_reopening") > 59))
        .then(pl.lit("c: none in the last 60 days"))
        .when(pl.col("days_since_reopening") < 7)
        .then(pl.lit("a: 0-6 days"))
        .otherwise(pl.lit("b: 7-59 days"))
        .alias("after_closure"),
        pl.when(((pl.col("_closes") - pl.col(n.DATE)).dt.total_days() < 7) & pl.col("_closes_missing"))
        .then(pl.lit("a: last 7 days before rows go missing"))
        .when((pl.col("_closes") - pl.col(n.DATE)).dt.total_days() < 7)
        .then(pl.lit("a: last 7 days open before a closure"))
        .when((pl.col("_closes") - pl.col(n.DATE)).dt.total_days() < 28)
        .then(pl.lit("b: 7-27 days before"))
        .otherwise(pl.lit("c: no closure within 28 days"))
        .alias("before_closure"),
    )
    return out


# --- scores per bucket ----------------------------------------------------------------


def bucket_scores(rows: pl.DataFrame, by: str | list[str]) -> pl.DataFrame:
    """Per bucket and method: days, RMSPE of the mean, MAPE of the median, wQL, 50/90 coverage, share of SPE."""
    by = [by] if isinstance(by, str) else by
    levels = (0.05, 0.25, 0.5, 0.75, 0.95)
    pinball = sum(
        pl.max_horizontal(q * (pl.col(n.SALES) - pl.col(n.quantile_column(q))), (q - 1) * (pl.col(n.SALES) - pl.col(n.quantile_column(q))))
        for q in levels
    ) / len(levels)
    rows = rows.with_columns(pl.col(n.SALES).cast(pl.Float64))  # Int32 sums of sales overflow
    r = rows.with_columns(
        (((pl.col(n.SALES) - pl.col(n.MEAN)) / pl.col(n.SALES)) ** 2).alias("spe"),
        ((pl.col(n.SALES) - pl.col(n.quantile_column(0.5))).abs() / pl.col(n.SALES)).alias("ape"),
        pinball.alias("pinball"),
        pl.col(n.SALES).is_between(pl.col("q25"), pl.col("q75")).alias("in50"),
        pl.col(n.SALES).is_between(pl.col("q05"), pl.col("q95")).alias("in90"),
        (pl.col(n.MEAN) / pl.col(n.SALES)).log().alias("logratio"),
    )
    total = r.group_by("method").agg(pl.col("spe").sum().alias("_spe_total"))
    return (
        r.group_by([*by, "method"])
        .agg(
            pl.len().alias("days"),
            pl.col("spe").mean().sqrt().alias("rmspe"),
            pl.col("ape").mean().alias("mape"),
            (pl.col("pinball").sum() / pl.col(n.SALES).sum()).alias("wql"),
            pl.col("in50").mean().alias("cov50"),
            pl.col("in90").mean().alias("cov90"),
            pl.col("logratio").mean().alias("bias"),
            pl.col("spe").sum().alias("_spe"),
        )
        .join(total, on="method")
        .with_columns((pl.col("_spe") / pl.col("_spe_total")).alias("spe_share"))
        .drop("_spe", "_spe_total")
        .sort([*by, "method"])
    )


def wide(scores: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """One row per bucket: the two methods' scores side by side."""
    m = scores.filter(pl.col("method") == "model").drop("method")
    g = scores.filter(pl.col("method") == "lightgbm").drop("method", "days")
    return m.join(g, on=by, how="left", suffix="_lgbm").sort(by)


def table(scores: pl.DataFrame, by: list[str], title: str) -> str:
    w = wide(scores, by)
    head = (
        "| " + " | ".join(by) + " | days | model RMSPE | LGBM RMSPE | model MAPE | LGBM MAPE | model wQL | LGBM wQL | "
        "model cover 50/90 | LGBM cover 50/90 | model bias | LGBM bias | model SPE share |"
    )
    lines = [f"### {title}", "", head, "|" + "---|" * len(by) + "---:|" * 12]
    for r in w.iter_rows(named=True):
        lines.append(
            "| " + " | ".join(LABELS.get(b, str)(r[b]) for b in by)
            + f" | {r['days']:,} | {r['rmspe']:.4f} | {r['rmspe_lgbm']:.4f} | {r['mape']:.4f} | {r['mape_lgbm']:.4f} | "
            f"{r['wql']:.4f} | {r['wql_lgbm']:.4f} | {r['cov50']:.1%} / {r['cov90']:.1%} | "
            f"{r['cov50_lgbm']:.1%} / {r['cov90_lgbm']:.1%} | {r['bias']:+.3f} | {r['bias_lgbm']:+.3f} | {r['spe_share']:.1%} |"
        )
    return "\n".join(lines) + "\n"


# --- concentration, store-days, stores --------------------------------------------------


def concentration(rows: pl.DataFrame, fraction: float = 0.001) -> str:
    """RMSPE per origin with all store-days, and without each method's worst ``fraction`` of its store-days
    (over all origins) and without the union of both methods' worst: how concentrated the error is."""
    spe = rows.with_columns((((pl.col(n.SALES) - pl.col(n.MEAN)) / pl.col(n.SALES)) ** 2).alias("spe"))
    worst = {}
    for m in METHODS:
        part = spe.filter(pl.col("method") == m)
        k = max(1, int(round(fraction * part.height)))
        worst[m] = part.sort("spe", descending=True).head(k).select("origin", n.STORE, n.DATE)
    union = pl.concat(list(worst.values())).unique().with_columns(pl.lit(True).alias("_worst"))
    spe = spe.join(union, on=["origin", n.STORE, n.DATE], how="left").with_columns(pl.col("_worst").fill_null(False))
    own = {m: worst[m].with_columns(pl.lit(True).alias("_own")) for m in METHODS}
    lines = [
        f"### RMSPE with the worst {fraction:.1%} of store-days left out",
        "",
        f"(each method's own worst {fraction:.1%} of its store-days over all origins: model "
        f"{worst['model'].height}, LightGBM {worst['lightgbm'].height}; 'both' leaves out the union, "
        f"{union.height} store-days, from both methods)",
        "",
        "| origin | days | model RMSPE | LGBM RMSPE | model, own worst out | LGBM, own worst out | model, both out | "
        "LGBM, both out | worst days in window | model, window's 1 worst day out | LGBM, window's 1 worst day out |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    groups = [*sorted(spe["origin"].unique().to_list()), None]
    for origin in groups:
        part = spe if origin is None else spe.filter(pl.col("origin") == origin)
        vals = {}
        for m in METHODS:
            pm = part.filter(pl.col("method") == m).join(own[m], on=["origin", n.STORE, n.DATE], how="left")
            top1 = pm.sort("spe", descending=True)["spe"].to_numpy()[1:] if origin is not None else np.array([np.nan])
            vals[m] = (
                float(np.sqrt(pm["spe"].mean())),
                float(np.sqrt(pm.filter(pl.col("_own").is_null())["spe"].mean())),
                float(np.sqrt(pm.filter(~pl.col("_worst"))["spe"].mean())),
                float(np.sqrt(top1.mean())),
            )
        days = part.filter(pl.col("method") == "model").height
        nworst = part.filter((pl.col("method") == "model") & pl.col("_worst")).height
        label = "all origins" if origin is None else str(origin)
        lines.append(
            f"| {label} | {days:,} | {vals['model'][0]:.4f} | {vals['lightgbm'][0]:.4f} | {vals['model'][1]:.4f} | "
            f"{vals['lightgbm'][1]:.4f} | {vals['model'][2]:.4f} | {vals['lightgbm'][2]:.4f} | {nworst} | "
            f"{vals['model'][3]:.4f} | {vals['lightgbm'][3]:.4f} |"
        )
    mean_line = []
    for m in METHODS:
        per = []
        for origin in groups[:-1]:
            pm = spe.filter((pl.col("method") == m) & (pl.col("origin") == origin)).join(own[m], on=["origin", n.STORE, n.DATE], how="left")
            per.append((np.sqrt(pm["spe"].mean()), np.sqrt(pm.filter(pl.col("_own").is_null())["spe"].mean())))
        per = np.array(per)
        mean_line.append(f"{SHORT[m]} {per[:, 0].mean():.4f} -> {per[:, 1].mean():.4f}")
    lines += ["", "Mean of the per-origin RMSPEs, all store-days -> own worst left out: " + "; ".join(mean_line), ""]
    return "\n".join(lines)


def worst_store_days(rows: pl.DataFrame, top: int = 10) -> str:
    """The model's ``top`` store-days by squared percentage error, with LightGBM's forecast and what happened around them."""
    m = rows.filter(pl.col("method") == "model").with_columns((((pl.col(n.SALES) - pl.col(n.MEAN)) / pl.col(n.SALES)) ** 2).alias("spe"))
    g = rows.filter(pl.col("method") == "lightgbm").select("origin", n.STORE, n.DATE, pl.col(n.MEAN).alias("lgbm"))
    total = m["spe"].sum()
    worst = m.sort("spe", descending=True).head(top).join(g, on=["origin", n.STORE, n.DATE], how="left")
    lines = [
        f"### The model's {top} worst store-days (squared percentage error of the mean)",
        "",
        "| origin | store | date | weekday | sales | model mean | model q05 | LGBM mean | SPE | share of all model SPE | "
        "promo | state hol. | closed day before / after | days since a 3+ day closure | days to a 3+ day closure | "
        "store's median open-day sales (window) |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|---:|",
    ]
    med = m.group_by("origin", n.STORE).agg(pl.col(n.SALES).median().alias("store_median"))
    worst = worst.join(med, on=["origin", n.STORE], how="left")
    for r in worst.iter_rows(named=True):
        lines.append(
            f"| {r['origin']} | {r[n.STORE]} | {r[n.DATE]} | {WEEKDAYS[r['weekday'] - 1]} | {r[n.SALES]:,} | {r[n.MEAN]:,.0f} | "
            f"{r['q05']:,.0f} | {r['lgbm']:,.0f} | {r['spe']:,.1f} | {r['spe'] / total:.1%} | {r['promo']} | {_holiday_label(r['state_holiday'])} | "
            f"{'yes' if r['closed_before'] else 'no'} / {'yes' if r['closed_after'] else 'no'} | {r['days_since_reopening'] if r['days_since_reopening'] is not None and r['days_since_reopening'] < 60 else '-'} | "
            f"{(r['_closes'] - r[n.DATE]).days if r['_closes'] is not None else '-'} | {r['store_median']:,.0f} |"
        )
    share = m.sort("spe", descending=True).head(top)["spe"].sum() / total
    lines += ["", f"These {top} store-days (of {m.height:,}) carry {share:.1%} of the model's summed squared percentage error.", ""]
    return "\n".join(lines)


def worst_stores(rows: pl.DataFrame, top: int = 10) -> str:
    spe = rows.with_columns((((pl.col(n.SALES) - pl.col(n.MEAN)) / pl.col(n.SALES)) ** 2).alias("spe"))
    per = spe.group_by("method", "origin", n.STORE).agg(
        pl.len().alias("days"),
        pl.col("spe").sum().alias("spe_sum"),
        pl.col("spe").max().alias("spe_max"),
        pl.col("spe").mean().sqrt().alias("rmspe"),
        pl.col("spe").arg_max().alias("_i"),
        pl.col(n.DATE).sort_by("spe", descending=True).first().alias("worst_day"),
        pl.col(n.SALES).sort_by("spe", descending=True).first().alias("worst_sales"),
        pl.col(n.MEAN).sort_by("spe", descending=True).first().alias("worst_mean"),
        pl.col(n.SALES).median().alias("median_sales"),
    )
    totals = per.group_by("method").agg(pl.col("spe_sum").sum().alias("_t"))
    per = per.join(totals, on="method").with_columns((pl.col("spe_sum") / pl.col("_t")).alias("share"))
    m = per.filter(pl.col("method") == "model").sort("spe_sum", descending=True).head(top)
    g = per.filter(pl.col("method") == "lightgbm").select("origin", n.STORE, pl.col("share").alias("lgbm_share"), pl.col("rmspe").alias("lgbm_rmspe"))
    m = m.join(g, on=["origin", n.STORE], how="left")
    lines = [
        f"### The {top} store-windows (store x origin) with the most model squared percentage error",
        "",
        "| origin | store | days | model RMSPE | LGBM RMSPE | model SPE share | LGBM SPE share | share from its worst day | "
        "worst day | sales that day | model mean | store's median sales |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in m.iter_rows(named=True):
        lines.append(
            f"| {r['origin']} | {r[n.STORE]} | {r['days']} | {r['rmspe']:.3f} | {r['lgbm_rmspe']:.3f} | {r['share']:.1%} | "
            f"{r['lgbm_share']:.1%} | {r['spe_max'] / r['spe_sum']:.0%} | {r['worst_day']} | {r['worst_sales']:,} | "
            f"{r['worst_mean']:,.0f} | {r['median_sales']:,.0f} |"
        )
    share = m["share"].sum()
    lines += ["", f"These {top} store-windows carry {share:.1%} of the model's summed squared percentage error.", ""]
    return "\n".join(lines)


def low_days(rows: pl.DataFrame) -> str:
    """Store-days whose sales are far below both forecasts (sales < 1/3 of the model's mean): how many, where."""
    m = rows.filter(pl.col("method") == "model")
    g = rows.filter(pl.col("method") == "lightgbm").select("origin", n.STORE, n.DATE, pl.col(n.MEAN).alias("lgbm"))
    j = m.join(g, on=["origin", n.STORE, n.DATE]).with_columns(
        (((pl.col(n.SALES) - pl.col(n.MEAN)) / pl.col(n.SALES)) ** 2).alias("spe"),
        (pl.col(n.SALES) < pl.col(n.MEAN) / 3).alias("low"),
        (pl.col(n.SALES) < pl.col("lgbm") / 3).alias("low_lgbm"),
    )
    total = j["spe"].sum()
    lines = [
        "### Days with sales below a third of the forecast",
        "",
        "| origin | days | below 1/3 of model mean | below 1/3 of LGBM mean | their share of model SPE | of those: closed the day before | closed the day after | within 7 days of reopening after 3+ days closed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for origin in [*sorted(j["origin"].unique().to_list()), None]:
        p = j if origin is None else j.filter(pl.col("origin") == origin)
        low = p.filter(pl.col("low"))
        lines.append(
            f"| {'all' if origin is None else origin} | {p.height:,} | {low.height} | {p['low_lgbm'].sum()} | "
            f"{low['spe'].sum() / (total if origin is None else p['spe'].sum()):.1%} | {low['closed_before'].sum()} | "
            f"{low['closed_after'].sum()} | {(low['days_since_reopening'].fill_null(999) < 7).sum()} |"
        )
    return "\n".join(lines) + "\n"


# --- what LightGBM captures ------------------------------------------------------------


def lgbm_importances(inputs, origin: dt.date, horizon_days: int, threads: int, seed: int, top: int = 20) -> str:
    """Gain importances of LightGBM's point model (the baseline's design and parameters) fitted on ``origin``'s history."""
    import lightgbm as lgb

    fit = common.fit_config(None)
    split = split_at(inputs.train, origin, horizon_days)
    spec = build_spec(inputs.stores, fit.yearly_fourier_order, fit.monthly_fourier_order)
    encoded = encode(split.history, inputs.stores, split.calendar, spec)
    history = encoded.history
    cells = np.nonzero(history.observed)
    x = bl._global_rows(history, cells)
    y = np.log1p(history.sales[cells])
    names = [*spec.feature_names(fx.Scope.DATE), *spec.feature_names(fx.Scope.STORE_DAY), *spec.feature_names(fx.Scope.STORE), "store_id"]
    assert len(names) == x.shape[1], (len(names), x.shape)
    params = {
        "learning_rate": 0.05, "num_leaves": 63, "min_data_in_leaf": 50, "verbose": -1, "seed": seed,
        "num_threads": threads, "force_col_wise": True, "objective": "regression",
    }
    t = time.perf_counter()
    data = lgb.Dataset(x, y, categorical_feature=[x.shape[1] - 1], feature_name=[_safe(c) for c in names], free_raw_data=False)
    booster = lgb.train(params, data, num_boost_round=400)
    gain = booster.feature_importance("gain")
    splits = booster.feature_importance("split")
    order = np.argsort(gain)[::-1]
    lines = [
        f"### LightGBM gain importances (its point model refitted on the history before {origin}, {y.size:,} rows, "
        f"{x.shape[1]} features, {time.perf_counter() - t:.0f} s)",
        "",
        "| rank | feature | share of gain | splits |",
        "|---:|---|---:|---:|",
    ]
    for rank, i in enumerate(order[:top], 1):
        lines.append(f"| {rank} | {names[i]} | {gain[i] / gain.sum():.1%} | {splits[i]:,} |")
    groups = {"store id": ["store_id"]}
    rest = {c for c in names if c != "store_id"}
    groups["store attributes (store scope)"] = list(spec.feature_names(fx.Scope.STORE))
    groups["store-day (promo, holidays, ...)"] = list(spec.feature_names(fx.Scope.STORE_DAY))
    groups["calendar (date scope)"] = list(spec.feature_names(fx.Scope.DATE))
    assert rest.issubset(set(sum(groups.values(), [])))
    lines += ["", "| feature group | share of gain |", "|---|---:|"]
    for gname, cols in groups.items():
        share = sum(gain[names.index(c)] for c in cols) / gain.sum()
        lines.append(f"| {gname} | {share:.1%} |")
    return "\n".join(lines) + "\n"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def lgbm_better(tables: dict[str, pl.DataFrame], min_days: int = 50, margin: float = 0.9) -> str:
    """Buckets where LightGBM's MAPE (of the median) or wQL is below ``margin`` x the model's."""
    lines = [
        f"### Buckets where LightGBM is clearly better (its MAPE or wQL below {margin:.2f} x the model's; at least {min_days} days)",
        "",
        "| breakdown | bucket | days | model MAPE | LGBM MAPE | model wQL | LGBM wQL | model bias | LGBM bias |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    found = 0
    for name, scores in tables.items():
        by = [c for c in scores.columns if c not in {"method", "days", "rmspe", "mape", "wql", "cov50", "cov90", "bias", "spe_share"}]
        w = wide(scores, by).filter(pl.col("days") >= min_days)
        w = w.filter((pl.col("mape_lgbm") < margin * pl.col("mape")) | (pl.col("wql_lgbm") < margin * pl.col("wql")))
        for r in w.iter_rows(named=True):
            found += 1
            lines.append(
                f"| {name} | {', '.join(LABELS.get(b, str)(r[b]) for b in by)} | {r['days']:,} | {r['mape']:.4f} | {r['mape_lgbm']:.4f} | "
                f"{r['wql']:.4f} | {r['wql_lgbm']:.4f} | {r['bias']:+.3f} | {r['bias_lgbm']:+.3f} |"
            )
    if not found:
        lines.append("| (none) | | | | | | | | |")
    return "\n".join(lines) + "\n"


def blend(rows: pl.DataFrame) -> str:
    """RMSPE and MAPE of a 50/50 blend of the two point forecasts (means; and of the medians), per origin."""
    m = rows.filter(pl.col("method") == "model").select("origin", n.STORE, n.DATE, n.SALES, pl.col(n.MEAN).alias("m"), pl.col("q50").alias("m50"))
    g = rows.filter(pl.col("method") == "lightgbm").select("origin", n.STORE, n.DATE, pl.col(n.MEAN).alias("g"), pl.col("q50").alias("g50"))
    j = m.join(g, on=["origin", n.STORE, n.DATE]).with_columns(((pl.col("m") + pl.col("g")) / 2).alias("b"), ((pl.col("m50") + pl.col("g50")) / 2).alias("b50"))

    def rmspe(col):
        return (((pl.col(n.SALES) - pl.col(col)) / pl.col(n.SALES)) ** 2).mean().sqrt()

    def mape(col):
        return ((pl.col(n.SALES) - pl.col(col)).abs() / pl.col(n.SALES)).mean()

    agg = [rmspe("m").alias("rm"), rmspe("g").alias("rg"), rmspe("b").alias("rb"), mape("m50").alias("am"), mape("g50").alias("ag"), mape("b50").alias("ab")]
    per = j.group_by("origin").agg(pl.len().alias("days"), *agg).sort("origin")
    lines = [
        "### A 50/50 blend of the two point forecasts (diagnostic only)",
        "",
        "| origin | days | model RMSPE | LGBM RMSPE | blend RMSPE | model MAPE (median) | LGBM MAPE | blend MAPE (medians) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in per.iter_rows(named=True):
        lines.append(
            f"| {r['origin']} | {r['days']:,} | {r['rm']:.4f} | {r['rg']:.4f} | {r['rb']:.4f} | {r['am']:.4f} | {r['ag']:.4f} | {r['ab']:.4f} |"
        )
    means = per.select(pl.exclude("origin", "days").mean()).row(0, named=True)
    lines.append(
        f"| mean of {per.height} | | {means['rm']:.4f} | {means['rg']:.4f} | {means['rb']:.4f} | {means['am']:.4f} | {means['ag']:.4f} | {means['ab']:.4f} |"
    )
    corr = np.corrcoef(np.log(j["m"].to_numpy() / j[n.SALES].to_numpy()), np.log(j["g"].to_numpy() / j[n.SALES].to_numpy()))[0, 1]
    lines += ["", f"Correlation of the two methods' log errors (log mean - log sales) over all store-days: {corr:.3f}.", ""]
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------


def analyse(rows: pl.DataFrame, inputs, args) -> None:
    rows = rows.filter(pl.col("scored") & pl.col("method").is_in(METHODS)).with_columns(pl.col(n.SALES).cast(pl.Float64))
    rows = context(rows, inputs.train, inputs.stores)
    origins = sorted(rows["origin"].unique().to_list())
    print(f"\nscored rows: {rows.filter(pl.col('method') == 'model').height:,} store-days per method, origins {', '.join(map(str, origins))}\n")
    print(
        "Columns: RMSPE of the mean; MAPE of the median; wQL (mean pinball loss over q05..q95 / sales); 50%/90% "
        "interval coverage; bias = mean log(mean / sales) (negative: under-forecast); SPE share = the bucket's share "
        "of the model's summed squared percentage error.\n"
    )
    breakdowns = {
        "origin": ["origin"],
        "weekday": ["weekday"],
        "month": ["month"],
        "promo": ["promo"],
        "state holiday": ["state_holiday"],
        "school holiday": ["school_holiday"],
        "closed the day before": ["closed_before"],
        "closed the day after": ["closed_after"],
        "week of the horizon": ["week"],
        "days since reopening after 3+ days closed": ["after_closure"],
        "days before a 3+ day closure (from the actual calendar)": ["before_closure"],
        "store type / assortment": ["type_assortment"],
        "weekday x promo": ["weekday", "promo"],
    }
    tables = {}
    for name, by in breakdowns.items():
        scores = bucket_scores(rows, by)
        tables[name] = scores
        print(table(scores, by, f"By {name}"))
    # The Christmas window and the two bad windows, by week of the horizon.
    for origin in origins:
        if str(origin) in ("2014-10-08", "2014-11-22"):
            part = rows.filter(pl.col("origin") == origin)
            print(table(bucket_scores(part, ["week"]), ["week"], f"{origin}: by week of the horizon"))
            print(table(bucket_scores(part, ["weekday"]), ["weekday"], f"{origin}: by weekday"))
    # The days around Christmas and the new year, one by one.
    christmas = rows.filter(
        ((pl.col(n.DATE).dt.month() == 12) & (pl.col(n.DATE).dt.day() >= 15)) | ((pl.col(n.DATE).dt.month() == 1) & (pl.col(n.DATE).dt.day() <= 5))
    )
    if christmas.height:
        print(table(bucket_scores(christmas, [n.DATE, "weekday"]), [n.DATE, "weekday"], "Christmas and the new year, day by day"))
    # Not printed, only searched for buckets where LightGBM does better.
    for name, by in {"origin x week": ["origin", "week"], "origin x weekday": ["origin", "weekday"], "origin x promo": ["origin", "promo"]}.items():
        tables[name] = bucket_scores(rows, by)
    print(concentration(rows, args.top_fraction))
    print(worst_store_days(rows, args.top))
    print(worst_stores(rows, args.top))
    print(low_days(rows))
    print(lgbm_better(tables))
    print(blend(rows))
    if args.importance_origin is not None:
        print(lgbm_importances(inputs, args.importance_origin, args.horizon_days, args.threads, args.seed))


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], repeats=None, fit=True)
    p.add_argument("--origins", nargs="+", type=dt.date.fromisoformat, default=[dt.date.fromisoformat(o) for o in ORIGINS])
    p.add_argument("--horizon-days", type=int, default=common.HORIZON_DAYS)
    p.add_argument("--threads", type=int, default=1, help="LightGBM's threads (1 on a shared machine)")
    p.add_argument("--parquet", type=Path, help="save the scored rows here (after each origin)")
    p.add_argument("--json", type=Path, help="save the scored rows here as JSON (at the end)")
    p.add_argument("--from", dest="from_file", type=Path, help="analyse saved rows (.parquet or .json) without refitting")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--top-fraction", type=float, default=0.001)
    p.add_argument(
        "--importance-origin", type=lambda s: None if s == "none" else dt.date.fromisoformat(s), default=dt.date(2014, 11, 22),
        help="origin whose history LightGBM is refitted on for gain importances ('none': skip)",
    )
    args = p.parse_args()
    common.setup(args)
    machine = common.machine_info()
    common.print_machine(machine)
    t0 = time.perf_counter()
    train_path, stores_path = common.rossmann_files(args.data)
    inputs = read_validated(train_path, stores_path)
    rows = load(args.from_file) if args.from_file else run(args, inputs)
    if args.from_file:
        print(f"rows from {args.from_file}")
    analyse(rows, inputs, args)
    elapsed = time.perf_counter() - t0
    print(f"run time: {elapsed:.0f} s ({elapsed / 60:.1f} min)")
    common.result("error_analysis", args, machine, seconds=elapsed, origins=sorted({str(o) for o in rows["origin"].to_list()}))


if __name__ == "__main__":
    main()
