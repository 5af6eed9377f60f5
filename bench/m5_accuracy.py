"""Accuracy on an M5-shaped panel: M5's weighted scaled pinball loss over its 12 levels, and 50%/90% coverage at
every level, for the model and for seasonal naive and statsforecast's AutoETS on the same series.

The data is a folder of ``bhm demo --shape m5`` (its ``truth.parquet`` holds the 28 days' true demand) and the
model one fitted on its whole history (``bhm train --spec DIR/spec.yaml --data DIR --state-dir MODEL``). The
model's quantiles of every level come from the sums of its joint draws (the forecast's own aggregates, and the
cross levels, such as item x state, summed here from the same draws); each baseline forecasts every series of
every level (42,840 for M5) from that series' own history, as M5's benchmarks did. ETS sees the last
``--ets-days`` of each history (statsforecast's AutoETS takes 0.28 s on a 1,941-day series on this VM, 0.05 s on
365 days: all 42,840 series would take an hour and a half). Metric: ``tasks/evaluate/m5.py``.

The 28 days drawn are one draw of the future: the total's coverage counts 28 cells that move together. Beside it,
the model is checked against the generator's own law of those days (each cell negative binomial around its true
mean, ``truth.parquet``'s ``true_mean``, concentration ``m5_demo.CONCENTRATION``; independent cells): per level,
the model's mean error in the truth's standard deviations, and the model's spread ((q95 - q05) / 3.29) over the
truth's standard deviation, which a model that knew the true means would put at 1.

    python bench/m5_accuracy.py --data m5 --model-dir m5/model    # issue 11: coverage within 3 points, WSPL below both baselines
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

COVERAGE_TOLERANCE = 0.03  # issue 11: within 3 points at the series level and every aggregate level
GOAL_LEVELS = ("item x store", "item", "department", "category", "store", "state", "total")
# the M5 demo's hierarchy columns, by the name tasks/evaluate/m5.py gives them
M5_COLUMNS = {"state": "state_id", "store": "store_id", "category": "cat_id", "department": "dept_id", "item": "item_id"}
HORIZON = 28
BOTTOM = "item x store"


def model_forecast(encoded, fitted, codes: dict[str, np.ndarray], truth: np.ndarray, levels: tuple[float, ...], num_draws: int, seed: int):
    """level -> quantiles [Q, G, H] of the model, every level from the sums of the same joint draws; level -> each
    cell's P(Y < y) and P(Y <= y) at the actual y (for the randomized coverage of counts); and level -> means [G, H]."""
    import jax

    from tasks import panel_pipeline
    from tasks.config import ForecastConfig
    from tasks.evaluate.panel_metrics import aggregate
    from tasks.forecast.draws import quantiles_of_draws
    from tasks.forecast.panel_draws import _sums_by_group

    n_periods = encoded.future.n_periods
    summed_levels = {name: c for name, c in codes.items() if name != BOTTOM}
    sums = {name: np.zeros((int(c.max()) + 1, n_periods, num_draws), np.float32) for name, c in summed_levels.items()}
    bottom_cdf = np.zeros((2, *truth.shape))

    def add(keep: np.ndarray, draws: np.ndarray) -> None:
        values = np.moveaxis(draws, 0, -1)  # [s, T, D]
        actual = truth[keep][..., None]
        bottom_cdf[0, keep], bottom_cdf[1, keep] = (values < actual).mean(axis=-1), (values <= actual).mean(axis=-1)
        for name, c in summed_levels.items():
            present, summed = _sums_by_group(c[keep], values)
            sums[name][present] += summed

    config = ForecastConfig(num_draws=num_draws, quantiles=levels)
    arrays = panel_pipeline.forecast_encoded(fitted, encoded, (), config, jax.random.key(seed), on_draws=add)
    quantiles, cdf, means = {BOTTOM: arrays.quantiles}, {BOTTOM: bottom_cdf}, {BOTTOM: arrays.mean}
    for name, values in sums.items():
        actual = aggregate(truth, codes[name])[..., None]
        cdf[name] = np.stack([(values < actual).mean(axis=-1), (values <= actual).mean(axis=-1)])
        means[name] = values.mean(axis=-1)
        quantiles[name] = quantiles_of_draws(values, levels, overwrite=True)
    return quantiles, cdf, means


def against_the_law(true_mean: np.ndarray, codes: dict[str, np.ndarray], quantiles: dict, means: dict, levels: tuple[float, ...]) -> dict:
    """level -> (the model's mean error in the truth's sds, the model's spread over the truth's sd, the root mean
    square of the mean error in the truth's sds), averaged over the level's cells; the truth's law: independent NB
    cells of mean ``true_mean`` [S, H], M5 demo's concentration. A forecast whose mean misses the true mean by e
    sds is calibrated with a spread of sqrt(1 + e^2) times the truth's."""
    from tasks.data.m5_demo import CONCENTRATION
    from tasks.evaluate.panel_metrics import aggregate

    variance = true_mean + true_mean**2 / CONCENTRATION
    out = {}
    for name, c in codes.items():
        mu, level_variance = (values if name == BOTTOM else aggregate(values, c) for values in (true_mean, variance))
        sd = np.sqrt(level_variance)
        spread = (quantiles[name][levels.index(0.95)] - quantiles[name][levels.index(0.05)]) / 3.29
        error = (means[name] - mu) / sd
        out[name] = (float(np.mean(error)), float(np.mean(spread / sd)), float(np.sqrt(np.mean(error**2))))
    return out


def baseline_forecasts(history: dict[str, np.ndarray], periods: np.ndarray, levels: tuple[float, ...], methods: list[str], ets_days: int) -> dict:
    """method -> level -> quantiles [Q, G, H], each series forecast from its own history."""
    from tasks.evaluate import panel_baselines as pb

    def panel(y: np.ndarray, days: int | None) -> pb.PanelHistory:
        y = y[:, -days:] if days else y
        zeros = np.zeros(y.shape[0], np.int64)
        return pb.PanelHistory(y=y.astype(np.float64), periods=periods[-y.shape[1] :], season_length=7, covariates={}, store=zeros, product=zeros)

    out: dict[str, dict[str, np.ndarray]] = {}
    for method in methods:
        t = time.perf_counter()
        if method == "seasonal_naive":
            out[method] = {name: pb.seasonal_naive(panel(y, None), HORIZON, levels).quantiles for name, y in history.items()}
        elif method == "ets":
            out[method] = {name: pb.ets(panel(y, ets_days), HORIZON, levels, n_jobs=2).quantiles for name, y in history.items()}
        else:
            raise ValueError(f"unknown baseline {method!r}: seasonal_naive or ets")
        print(f"{method}: {sum(y.shape[0] for y in history.values()):,} series in {time.perf_counter() - t:.0f} s", flush=True)
    return out


def without_period_shocks(fitted):
    """``fitted`` with the scales of its period shocks and level walk at 1e-5 (their guide's median, nearly fixed):
    how much of an aggregate's interval they make, as a diagnostic."""
    import dataclasses

    from tasks.model.panel import SHOCK_SCALES_AHEAD, SHOCK_SITES, PanelSite, layouts

    positive = layouts(fitted.structure)[1]
    loc, scale = (np.array(fitted.params[f"{PanelSite.SCALES}.{part}"]) for part in ("loc", "scale"))
    walks = {scale_site for _, scale_site in SHOCK_SITES.values()} | {PanelSite.LEVEL_SCALE}
    for name in (name for name, _, _ in positive.entries if name in walks):
        start, stop, _ = positive.slice(name)
        loc[start:stop], scale[start:stop] = np.log(1e-5), 1e-3
    params = {**fitted.params, f"{PanelSite.SCALES}.loc": loc, f"{PanelSite.SCALES}.scale": scale}
    if SHOCK_SCALES_AHEAD in params:
        params[SHOCK_SCALES_AHEAD] = np.full_like(params[SHOCK_SCALES_AHEAD], 1e-5)
    return dataclasses.replace(fitted, params=params)


def with_fitted_shock_scales(fitted):
    """``fitted`` whose forecast draws the shocks ahead at the fit's own scales, not the moment estimates made
    after the fit (``PanelFitConfig.shock_scales_ahead='fit'``, without fitting again)."""
    import dataclasses

    from tasks.model.panel import SHOCK_SCALES_AHEAD

    return dataclasses.replace(fitted, params={k: v for k, v in fitted.params.items() if k != SHOCK_SCALES_AHEAD})


def with_fixed_globals(fitted):
    """``fitted`` with every global variable (the chain's coefficients, the group effects, the shocks, the scales) at
    its guide's centre, nearly fixed (guide scale 1e-6): how much of an aggregate's interval their uncertainty makes,
    as a diagnostic."""
    import dataclasses

    from tasks.model.panel import PanelSite

    params = dict(fitted.params)
    for site in (PanelSite.GLOBALS, PanelSite.SCALES):
        params[f"{site}.scale"] = np.full_like(np.asarray(params[f"{site}.scale"]), 1e-6)
    return dataclasses.replace(fitted, params=params)


def truth_and_dollars(args: argparse.Namespace, tables, encoded) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The true demand [S, H] of the future periods and its true mean [S, H], and each series' dollar sales over
    the history's last ``WEIGHT_PERIODS`` days (M5's weights)."""
    import polars as pl

    from tasks.evaluate.m5 import WEIGHT_PERIODS

    spec, encoding = tables.spec, encoded.encoding
    store, product, period = spec.sales.store, spec.sales.product, spec.sales.period
    price = next(c.column for c in spec.sales.covariates if c.kind == "price")
    index = {pair: i for i, pair in enumerate(encoding.series)}
    store_code = {k: i for i, k in enumerate(encoding.store_keys)}
    product_code = {k: i for i, k in enumerate(encoding.product_keys)}

    def rows(frame: pl.DataFrame) -> np.ndarray:
        """Each row's series (-1: a series the model does not know)."""
        keys = zip(frame[store].to_list(), frame[product].to_list(), strict=True)
        return np.array([index.get((store_code.get(s, -1), product_code.get(p, -1)), -1) for s, p in keys], np.int64)

    truth = pl.read_parquet(args.data / "truth.parquet", columns=[store, product, period, spec.sales.target, "true_mean"])
    y = np.full((encoding.n_series, encoded.future.n_periods), np.nan)
    true_mean = np.full_like(y, np.nan)
    series = rows(truth)
    days = (truth[period].to_numpy().astype("datetime64[D]") - encoded.future.periods[0]).astype(np.int64)
    known = (series >= 0) & (days >= 0) & (days < y.shape[1])
    y[series[known], days[known]] = truth[spec.sales.target].to_numpy()[known]
    true_mean[series[known], days[known]] = truth["true_mean"].to_numpy()[known]
    if np.isnan(y).any():
        raise ValueError(f"truth.parquet lacks {int(np.isnan(y).sum())} of the forecast's cells")

    first = encoded.history.periods[max(0, encoded.history.n_periods - WEIGHT_PERIODS)].astype("datetime64[D]").item()
    recent = (
        pl.scan_parquet(args.data / spec.sales.file)
        .filter(pl.col(period) >= first)
        .group_by(store, product)
        .agg((pl.col(spec.sales.target) * pl.col(price)).sum().alias("dollars"))
        .collect()
    )
    dollars = np.zeros(encoding.n_series)
    series = rows(recent)
    dollars[series[series >= 0]] = recent["dollars"].to_numpy()[series >= 0]
    return y, true_mean, dollars


def main() -> None:
    p = common.parser(__doc__.split("\n\n")[0], repeats=None, fit=False, panel_data=True)
    p.add_argument("--model-dir", type=Path, required=True, help="panel model fitted on the folder's whole history")
    p.add_argument("--num-draws", type=int, default=1000, help="forecast draws")
    p.add_argument("--seed", type=int, default=0, help="seed of the forecast's key")
    p.add_argument("--baselines", default="seasonal_naive,ets", help="comma-separated: seasonal_naive, ets (empty: none)")
    p.add_argument("--ets-days", type=int, default=365, help="history days each ETS fit sees")
    p.add_argument("--without-shocks", action="store_true", help="diagnostic: the model's period shocks and level walk scaled to ~0")
    p.add_argument("--fixed-globals", action="store_true", help="diagnostic: every global variable at its guide's centre")
    p.add_argument("--fitted-shock-scales", action="store_true", help="the shocks ahead at the fit's own scales, not the moment estimates")
    args = p.parse_args()
    common.setup(args)
    machine = common.machine_info()
    common.print_machine(machine)

    from tasks import panel_pipeline
    from tasks.data.panel_encode import encode_panel
    from tasks.data.panel_ingest import read_panel
    from tasks.data.spec import load_spec
    from tasks.evaluate.m5 import M5_QUANTILES, level_codes, level_score, randomized_coverage
    from tasks.evaluate.panel_metrics import aggregate, calibrated_coverage_sd
    from tasks.model import panel_state

    t0 = time.perf_counter()
    spec = load_spec(args.data / "spec.yaml")
    tables = read_panel(spec, args.data, args.data / "future.parquet")
    fitted = panel_state.load(args.model_dir)
    if args.without_shocks:
        fitted = without_period_shocks(fitted)
    if args.fixed_globals:
        fitted = with_fixed_globals(fitted)
    if args.fitted_shock_scales:
        fitted = with_fitted_shock_scales(fitted)
    print("period shocks' scales ahead: " + json.dumps(fitted.info.get("shock_scales_ahead") if not args.fitted_shock_scales else "the fit's"))
    panel_pipeline.encode_for(tables, fitted)  # the checks of a forecast from a saved model
    encoded = encode_panel(tables, fitted.encoding)  # with the history: the baselines and M5's weights read it
    if encoded.future.n_periods != HORIZON:
        raise ValueError(f"the future table spans {encoded.future.n_periods} periods; M5's horizon is {HORIZON}")
    per_series = {a.name: a.codes for a in panel_pipeline.aggregate_levels(tables, encoded)}
    codes = level_codes({ours: per_series[column] for ours, column in M5_COLUMNS.items()})
    truth, true_mean, dollars = truth_and_dollars(args, tables, encoded)
    history_y = encoded.history.y
    print(f"read and encode: {time.perf_counter() - t0:.0f} s; {encoded.encoding.n_series:,} series", flush=True)

    levels = tuple(sorted({*M5_QUANTILES, 0.05, 0.95}))
    t = time.perf_counter()
    model_quantiles, model_cdf, model_means = model_forecast(encoded, fitted, codes, truth, levels, args.num_draws, args.seed)
    forecasts = {"model": model_quantiles}
    print(f"model: every level's quantiles in {time.perf_counter() - t:.0f} s", flush=True)
    history = {name: history_y if name == BOTTOM else aggregate(history_y, c) for name, c in codes.items()}
    methods = [m.strip() for m in args.baselines.split(",") if m.strip()]
    forecasts |= baseline_forecasts(history, encoded.history.periods, levels, methods, args.ets_days)

    scores = {method: {} for method in forecasts}
    for name, c in codes.items():
        level_truth = truth if name == BOTTOM else aggregate(truth, c)
        level_dollars = dollars if name == BOTTOM else aggregate(dollars[:, None], c)[:, 0]
        for method, by_level in forecasts.items():
            scores[method][name] = level_score(level_truth, by_level[name], levels, history[name], level_dollars)

    print(f"\n{'level':20s} {'series':>7s} " + " ".join(f"{m[:14]:>14s}" for m in forecasts) + "   (WSPL; cover 50%/90%)")
    for name in codes:
        cells = [f"{scores[m][name].wspl:6.3f} {scores[m][name].coverage_50 * 100:3.0f}/{scores[m][name].coverage_90 * 100:3.0f}" for m in forecasts]
        print(f"{name:20s} {scores['model'][name].n_series:7,d} " + " ".join(f"{c:>14s}" for c in cells))
    randomized = {name: {c: randomized_coverage(*model_cdf[name], c) for c in (0.5, 0.9)} for name in codes}
    print(
        "\nmodel, randomized coverage of counts (uniform PIT between P(Y < y) and P(Y <= y); nominal for a calibrated forecast,"
        " within 2 sds of it by chance alone at 95%: the generator's cells are independent, so the sd is binomial's at most):"
    )
    n_cells = {name: np.asarray(model_cdf[name][0]).size for name in codes}
    by_chance = {name: [2.0 * calibrated_coverage_sd(n_cells[name], c) for c in (0.5, 0.9)] for name in codes}  # 2 sds
    for name in codes:
        chance = by_chance[name]
        print(
            f"{name:20s} {randomized[name][0.5] * 100:5.1f} / {randomized[name][0.9] * 100:5.1f}"
            f"   (chance: 50 +- {chance[0] * 100:4.1f} / 90 +- {chance[1] * 100:3.1f}; {n_cells[name]:,} cells)"
        )
    law = against_the_law(true_mean, codes, model_quantiles, model_means, levels)
    print(
        "\nmodel against the generator's own law of the 28 days (mean error in the truth's sds; spread over the truth's sd;"
        " the spread a calibrated forecast with this mean needs, sqrt(1 + rms error^2)):"
    )
    for name in codes:
        print(f"{name:20s} {law[name][0]:+6.2f}  {law[name][1]:5.2f}  {np.sqrt(1.0 + law[name][2] ** 2):5.2f}")
    wspl = {m: float(np.mean([s.wspl for s in by_level.values()])) for m, by_level in scores.items()}
    print("WSPL (mean of the 12 levels): " + ", ".join(f"{m} {v:.4f}" for m, v in wspl.items()))

    goals = []
    for name in GOAL_LEVELS:
        c50, c90 = randomized[name][0.5], randomized[name][0.9]
        gap = max(abs(c50 - 0.5), abs(c90 - 0.9))
        chance = "/".join(f"{sds:.3f}" for sds in by_chance[name])
        label = f"randomized coverage gap, {name} (50%/90%: {c50:.3f}/{c90:.3f}; 2 sds by chance {chance})"
        goals.append(common.goal(label, gap, gap <= COVERAGE_TOLERANCE, "<= 0.03"))
    for method in methods:
        ratio = wspl["model"] / wspl[method]
        goals.append(common.goal(f"WSPL, model / {method}", ratio, ratio < 1.0, "< 1"))
    common.result("m5_accuracy.py", args, machine, wspl=wspl, randomized_coverage=randomized, against_the_law=law, scores={m: {k: vars(v) for k, v in s.items()} for m, s in scores.items()}, goals=goals)


if __name__ == "__main__":
    main()
