"""Where a panel model's intervals fall short: the backtest (model only), its series-level coverage split by
covariates, optionally with chosen parts of each fitted posterior widened or the dispersion's covariates changed.

For each origin of the panel backtest (the seed's keys, as `bhm backtest`), prints wQL and 50%/90% coverage per
level (means over the origins), wQL per origin, each aggregate level's mean log error per origin (actual over
the forecast mean: a level that is off), and the series-level coverage (with the shares below the 5% and
above the 95% quantile) by origin, by horizon step, by each --by column (a value above 0.5 counts as 1) and by
quintile of size (each series' mean forecast over its origin's horizon), where beside the coverage the median of the
predicted log-scale sd ((log q95 - log q05) / 3.29) is set against the spread of the log errors (actual over the
90% interval's geometric centre; the median absolute error over 0.6745, a normal's sd; actuals above 0).
--widen multiplies the fitted guide's scales of the named series-level variables (``series_raw``: the series'
coefficient deviations, ``level_steps``, ``dispersion_raw``; --columns: only these coefficients of
``series_raw``) by --factor before the forecast: a diagnostic for EVALUATION.md, not a calibration method (the
project's forecasts never widen their posterior). --dispersion-covariates overrides the spec's.

Coverage against chance: beside each level's coverage, 2 sds of a calibrated forecast's coverage of that many
independent cells (binomial), and, with --chance K (default 200), the 95% range of the mean coverage over the
origins when each of K of the model's own draws is taken as the truth: what a forecast whose law is the truth's
reaches by chance, with the model's own correlation between the periods of an origin and the groups of a level.
A coverage outside that range is a miss that chance does not explain; inside it, the origins cannot tell.

    python bench/panel_interval_diagnostic.py --dataset dominicks_oj --horizon 12 --by deal,feat
    python bench/panel_interval_diagnostic.py --dataset dominicks_oj --horizon 12 --by deal,feat --dispersion-covariates none
    python bench/panel_interval_diagnostic.py --dataset dominicks_oj --horizon 12 --widen series_raw --factor 3
    python bench/panel_interval_diagnostic.py --spec w10.yaml --data ../shared/data/walmart --horizon 13
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import common
import numpy as np
import polars as pl

import tasks.evaluate.panel_backtest as pb
from tasks import names as n
from tasks.config import ForecastConfig, PanelFitConfig
from tasks.data.panel_ingest import read_panel
from tasks.data.spec import builtin_spec, load_spec
from tasks.evaluate import panel_metrics
from tasks.evaluate.panel_metrics import calibrated_coverage_sd
from tasks.model.panel import PanelSite, layouts

SHARED = common.REPO.parent / "shared" / "data"


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def widen(forecast, names: list[str], columns: list[str], factor: float):
    """``forecast_encoded`` with the named series-level guide scales multiplied by ``factor``."""

    def widened(fitted, *rest, **options):
        params = dict(fitted.params)
        scale = np.array(params[f"{PanelSite.SERIES}.scale"])
        series = layouts(fitted.structure)[2]
        for name in names:
            start, stop, _ = series.slice(name)
            if name == PanelSite.SERIES_RAW and columns:
                chosen = [i for i, coef in enumerate(fitted.structure.coef_names) if any(coef.startswith(c) for c in columns)]
                scale[:, start + np.array(chosen, dtype=int)] *= factor
            else:
                scale[:, start:stop] *= factor
        params[f"{PanelSite.SERIES}.scale"] = scale
        return forecast(replace(fitted, params=params), *rest, **options)

    return widened


def bands(y: np.ndarray, quantiles: np.ndarray, levels: tuple[float, ...], cells: tuple) -> dict[str, np.ndarray]:
    """Whether each actual fell inside the 50% and 90% intervals of ``quantiles`` [Q, ...] read at ``cells``,
    below the 5% or above the 95% quantile, and the 90% interval's bounds."""
    low50, high50 = (bound[cells] for bound in panel_metrics.interval(quantiles, levels, 0.5))
    low90, high90 = (bound[cells] for bound in panel_metrics.interval(quantiles, levels, 0.9))
    return {
        "in50": (y >= low50) & (y <= high50), "in90": (y >= low90) & (y <= high90),
        "below5": y < low90, "above95": y > high90, "q05": low90, "q95": high90,
    }  # fmt: skip


def series_cells(encoded, actual: pl.DataFrame, model, number: int) -> pl.DataFrame:
    """The scored rows of ``actual`` with whether each fell inside the model's 50% and 90% intervals."""
    s, t = pb.future_cells(encoded, actual)
    y = actual[n.TARGET].cast(pl.Float64).fill_null(np.nan).to_numpy()
    inside = bands(y, model.quantiles, model.levels, (s, t))
    with np.errstate(divide="ignore", invalid="ignore"):
        error = np.log(y / np.sqrt(inside["q05"] * inside["q95"]))  # against the 90% interval's geometric centre
    return actual.with_columns(
        *(pl.Series(name, inside[name]) for name in ("in50", "in90", "below5", "above95")),
        pl.Series("log_error", error),
        pl.Series("predicted_sd", predicted_sd(inside)),
        pl.Series("forecast_mean", np.asarray(model.mean)[s, t]),
        pl.Series("series", s),
        pl.Series("step", t),
        pl.lit(number).alias("origin_number"),
    ).filter(pl.col(n.TARGET).is_not_null())


def predicted_sd(inside: dict[str, np.ndarray]) -> np.ndarray:
    """The spread ``bands``' 90% bounds say: (log q95 - log q05) / 3.29, a normal's sd on the log scale."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(inside["q95"] / inside["q05"]) / 3.29


FINITE = pl.col("log_error").is_finite() & pl.col("predicted_sd").is_finite()
# The log errors' spread as a normal's sd, robust to the few cells far out: their median absolute value over 0.6745.
ROBUST_ERROR_SD = pl.col("log_error").filter(FINITE).abs().median() / 0.6745


def aggregate_bands(level, s: np.ndarray, t: np.ndarray, y: np.ndarray, n_periods: int, model) -> tuple:
    """The group-periods (g, t) of ``level`` that the cells (s, t) reach, their sums of ``y``, and ``bands`` of those
    sums in the model's aggregate quantiles."""
    total, seen = pb.aggregate_actuals(level, s, t, y, n_periods)
    g, tt = np.nonzero(seen)
    value = total[g, tt]
    return g, tt, value, bands(value, model.aggregates[level.name][1], model.levels, (g, tt))


def aggregate_cells(encoded, actual: pl.DataFrame, aggregates, model, number: int) -> pl.DataFrame:
    """Each aggregate's (group, period) cells: inside the 50% and 90% intervals, the log error of the mean, the
    spread the model predicted for it ((log q95 - log q05) / 3.29, a normal's sd on the log scale) and its forecast mean."""
    s, t = pb.future_cells(encoded, actual)
    y = actual[n.TARGET].cast(pl.Float64).fill_null(np.nan).to_numpy()
    frames = []
    for level in aggregates:
        g, tt, value, inside = aggregate_bands(level, s, t, y, encoded.future.n_periods, model)
        with np.errstate(divide="ignore", invalid="ignore"):
            error, spread = np.log(value / model.aggregates[level.name][0][g, tt]), predicted_sd(inside)
        frames.append(
            pl.DataFrame({
                "level": level.name, "group": g, "step": tt, "origin_number": number, "in50": inside["in50"],
                "in90": inside["in90"], "log_error": error, "predicted_sd": spread, "forecast_mean": model.aggregates[level.name][0][g, tt],
            })  # fmt: skip
        )
    return pl.concat(frames)


def keeping_draws(forecast, kept: dict, picks: np.ndarray):
    """``forecast_encoded`` that also keeps the joint draws ``picks`` of every series (``kept["draws"]``, [K, S,
    T]): the same numbers, since the draws only pass through ``on_draws`` on their way to the quantiles."""

    def forecasting(fitted, encoded, aggregates, config, key, **options):
        draws = np.zeros((len(picks), encoded.encoding.n_series, encoded.future.n_periods), np.float32)

        def keep(rows, values):
            draws[:, rows] = values[picks]

        arrays = forecast(fitted, encoded, aggregates, config, key, on_draws=keep, **options)
        kept["draws"] = draws
        return arrays

    return forecasting


def chance_coverage(encoded, actual: pl.DataFrame, aggregates, model, draws: np.ndarray) -> dict[str, np.ndarray]:
    """level -> [K, 2]: the 50% and 90% coverage of the model's intervals over the scored cells of ``actual`` when
    the truth is each of the model's own K ``draws``: how the coverage of a forecast whose law is the truth's
    varies by chance, with the model's own correlation between series, groups and periods."""
    s, t = pb.future_cells(encoded, actual)
    scored = actual[n.TARGET].is_not_null().to_numpy()
    s, t = s[scored], t[scored]
    out: dict[str, list] = {"series": []} | {level.name: [] for level in aggregates}
    for draw in draws:
        truth = draw[s, t].astype(np.float64)
        inside = bands(truth, model.quantiles, model.levels, (s, t))
        out["series"].append((inside["in50"].mean(), inside["in90"].mean()))
        for level in aggregates:
            inside = aggregate_bands(level, s, t, truth, encoded.future.n_periods, model)[3]
            out[level.name].append((inside["in50"].mean(), inside["in90"].mean()))
    return {name: np.array(values) for name, values in out.items()}


def print_chance(table: pl.DataFrame, chance: list[dict[str, np.ndarray]]) -> None:
    """Each level's coverage against the range (2.5% to 97.5%) of the mean over the origins that a forecast whose
    law is the truth's would reach by chance (``chance_coverage``), and the share of those below the actual."""
    print("coverage against chance: the model's own draws as the truth (95% range of the mean over the origins; share below)")
    for row in table.sort("level").iter_rows(named=True):
        means = np.mean([by_origin[row["level"]] for by_origin in chance], axis=0)  # [K, 2]
        cells = []
        for column, (name, nominal) in enumerate((("coverage_50", 0.5), ("coverage_90", 0.9))):
            low, high = np.quantile(means[:, column], [0.025, 0.975])
            below = float((means[:, column] < row[name]).mean())
            cells.append(f"{nominal:.0%} {row[name]:.3f} in [{low:.3f}, {high:.3f}] ({below:.2f})")
        print(f"  {row['level']:<14} " + "   ".join(cells))


def print_aggregates(cells: pl.DataFrame) -> None:
    print("aggregates: coverage in the first and last period of the horizon; sd of the log errors against the predicted")
    for level in cells["level"].unique(maintain_order=True):
        rows = cells.filter(pl.col("level") == level)
        first, last = (rows.filter(pl.col("step") == step) for step in (rows["step"].min(), rows["step"].max()))
        spread = rows.filter(FINITE).select(pl.col("log_error").std(), pl.col("predicted_sd").mean()).row(0)
        print(
            f"  {level:<14} first {first['in50'].mean():.3f} / {first['in90'].mean():.3f}  last {last['in50'].mean():.3f} / "
            f"{last['in90'].mean():.3f}  log error sd {spread[0]:.4f}, predicted {spread[1]:.4f}"
        )
    print("aggregates by size: the smaller and the larger half of each level's groups (mean forecast over an origin's horizon)")
    size = pl.col("forecast_mean").mean().over("level", "group", "origin_number")
    halves = cells.with_columns(size.alias("size")).with_columns(
        (pl.col("size") > pl.col("size").median().over("level")).alias("larger")
    )
    table = halves.group_by("level", "larger").agg(
        pl.col("in50").mean(), pl.col("in90").mean(), pl.col("predicted_sd").filter(FINITE).median(), ROBUST_ERROR_SD.alias("error_sd")
    )
    for level in cells["level"].unique(maintain_order=True):
        rows = {r["larger"]: r for r in table.filter(pl.col("level") == level).iter_rows(named=True)}
        print(f"  {level:<14}", "  ".join(
            f"{name} {r['in50']:.3f} / {r['in90']:.3f} sd {r['predicted_sd']:.3f} / {r['error_sd']:.3f}"
            for name, r in (("smaller", rows.get(False)), ("larger", rows.get(True))) if r is not None
        ))  # fmt: skip
    bias = cells.filter(pl.col("log_error").is_finite()).group_by("level", "origin_number").agg(pl.col("log_error").mean())
    print("mean log error (actual over the forecast mean) by level and origin:")
    for level in cells["level"].unique(maintain_order=True):
        values = bias.filter(pl.col("level") == level).sort("origin_number")["log_error"]
        print(f"  {level:<14}", " ".join(f"{v:+.4f}" for v in values))


def print_coverage(cells: pl.DataFrame, by: str) -> None:
    table = cells.group_by(by).agg(
        pl.len().alias("rows"), pl.col("in50").mean(), pl.col("in90").mean(), pl.col("below5").mean(), pl.col("above95").mean()
    )
    print(f"series coverage by {by}:")
    for row in table.sort(by).iter_rows(named=True):
        print(
            f"  {row[by]!s:<6} rows {row['rows']:>7,}  50% {row['in50']:.3f}  90% {row['in90']:.3f}"
            f"  below q05 {row['below5']:.3f}  above q95 {row['above95']:.3f}"
        )


def print_by_size(cells: pl.DataFrame, n_bins: int = 5) -> None:
    """Series coverage by quintile of each series' mean forecast over its origin's horizon (the forecast's own size,
    not the outcome's), and the predicted log-scale spread against the log errors' (cells whose actual and 5% quantile
    are above 0)."""
    size = pl.col("forecast_mean").mean().over("series", "origin_number")
    cells = cells.with_columns(size.alias("size")).with_columns(
        (pl.col("size").rank("ordinal") * n_bins / pl.len()).ceil().clip(1, n_bins).cast(pl.Int8).alias("size_bin")
    )
    table = cells.group_by("size_bin").agg(
        pl.len().alias("rows"), pl.col("size").min().alias("from"), pl.col("in50").mean(), pl.col("in90").mean(),
        pl.col("below5").mean(), pl.col("above95").mean(), pl.col("predicted_sd").filter(FINITE).median(),
        ROBUST_ERROR_SD.alias("error_sd"),
    )  # fmt: skip
    print(f"series coverage by size ({n_bins} bins of the series' mean forecast; log-scale sd predicted and realised):")
    for row in table.sort("size_bin").iter_rows(named=True):
        print(
            f"  {row['size_bin']}  from {row['from']:>10,.1f}  rows {row['rows']:>7,}  50% {row['in50']:.3f}  90% {row['in90']:.3f}"
            f"  below q05 {row['below5']:.3f}  above q95 {row['above95']:.3f}  sd {row['predicted_sd']:.3f} / {row['error_sd']:.3f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="dominicks_oj")
    p.add_argument("--data", type=Path, default=SHARED, help="the shared data folder; with --spec, the spec's data folder")
    p.add_argument("--spec", type=Path, help="a dataset spec file instead of --dataset's built-in spec")
    p.add_argument("--horizon", type=int, default=12)
    p.add_argument("--widen", default="", help="comma-separated series-level variables (default: none)")
    p.add_argument("--columns", default="", help="series_raw only: comma-separated coefficient name prefixes (default: all)")
    p.add_argument("--factor", type=float, default=3.0)
    p.add_argument("--by", default="", help="comma-separated covariate columns to split the series coverage by")
    p.add_argument("--dispersion-covariates", default="spec", help="'spec' (default), 'none', or comma-separated covariates")
    p.add_argument("--block-periods", type=int, default=None, help="periods per level-walk step (default: the fit config's)")
    p.add_argument("--recency-half-life", type=int, default=None, help="periods; 0: off (default: the spec's)")
    p.add_argument("--shock-scales", choices=("auto", "moments", "fit"), default="auto", help="the period shocks' scales ahead (PanelFitConfig)")
    p.add_argument("--walk-scale", choices=("auto", "moments", "fit"), default="auto", help="the series' walk scale ahead (PanelFitConfig)")
    p.add_argument(
        "--group-walk-scales", choices=("auto", "groups", "shared"), default="auto",
        help="the store and product walks' scales ahead (PanelFitConfig.group_walk_scales_ahead)",
    )  # fmt: skip
    p.add_argument("--num-draws", type=int, default=500)
    p.add_argument("--chance", type=int, default=200, help="draws of the model's own taken as the truth for the coverage by chance (0: none)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    common.print_machine(common.machine_info())
    names, columns = _names(args.widen), _names(args.columns)
    if names:
        pb.forecast_encoded = widen(pb.forecast_encoded, names, columns, args.factor)
    cells: list[pl.DataFrame] = []
    aggregates_cells: list[pl.DataFrame] = []
    score = pb.score_methods

    kept: dict = {}
    chance: list[dict[str, np.ndarray]] = []
    if args.chance:
        picks = np.random.default_rng(args.seed).choice(args.num_draws, size=min(args.chance, args.num_draws), replace=False)
        pb.forecast_encoded = keeping_draws(pb.forecast_encoded, kept, picks)

    def scored(encoded, actual, aggregates, model, baselines, weight_flag):
        if args.chance:
            chance.append(chance_coverage(encoded, actual, aggregates, model, kept.pop("draws")))
        aggregates_cells.append(aggregate_cells(encoded, actual, aggregates, model, len(cells)))
        cells.append(series_cells(encoded, actual, model, len(cells)))
        return score(encoded, actual, aggregates, model, baselines, weight_flag)

    pb.score_methods = scored
    chosen = args.dispersion_covariates
    config = PanelFitConfig(
        dispersion_covariates=None if chosen == "spec" else () if chosen == "none" else tuple(_names(chosen)),
        block_periods=args.block_periods,
        recency_half_life=args.recency_half_life,
        shock_scales_ahead=args.shock_scales,
        walk_scale_ahead=args.walk_scale,
        group_walk_scales_ahead=args.group_walk_scales,
    )
    if args.spec is not None:
        tables = read_panel(load_spec(args.spec), args.data)
    else:
        tables = read_panel(builtin_spec(args.dataset), args.data / args.dataset)
    scores = []
    for number, origin in enumerate(pb.default_origins(tables, args.horizon)):
        done = pb.run_panel_backtest(
            tables, origin, args.horizon, config, ForecastConfig(num_draws=args.num_draws), pb.origin_key(args.seed, number),
            baselines=(), on_progress=lambda _: None,
        )  # fmt: skip
        scores.append(done.scores)
    frame = pl.concat(scores)
    widened = f"{', '.join(names)} ({', '.join(columns) or 'all columns'}) x {args.factor:g}" if names else "nothing widened"
    print(f"{tables.spec.name}: {widened}, dispersion covariates: {chosen}; means over {len(scores)} origins")
    table = frame.group_by("level").agg(pl.col("wql").mean(), pl.col("coverage_50").mean(), pl.col("coverage_90").mean())
    series = pl.concat(cells, how="diagonal_relaxed")
    aggregated = pl.concat(aggregates_cells)
    counts = dict(aggregated.group_by("level").len().iter_rows()) | {"series": series.height}
    print("  (chance: 2 sds of a calibrated forecast's coverage of that many independent cells; cells that share a shock vary more)")
    for row in table.sort("level").iter_rows(named=True):
        n_cells = counts.get(row["level"], 0)
        band = " ".join(f"{2 * calibrated_coverage_sd(n_cells, c):.3f}" for c in (0.5, 0.9)) if n_cells else "-"
        print(
            f"  {row['level']:<14} wQL {row['wql']:.4f}  coverage {row['coverage_50']:.3f} / {row['coverage_90']:.3f}"
            f"  (chance +- {band}; {n_cells:,} cells)"
        )
    if chance:
        print_chance(table, chance)
    print("wQL by origin:")
    print(frame.select("origin", "level", "wql").pivot(on="level", index="origin", values="wql"))
    for by in ["origin_number", "step", *_names(args.by)]:
        print_coverage(series.with_columns((pl.col(by).cast(pl.Float64) > 0.5).cast(pl.Int8)) if by in _names(args.by) else series, by)
    print_by_size(series)
    print_aggregates(aggregated)


if __name__ == "__main__":
    main()
