"""The panel baselines on the two real weekly data sets: walmart (store x department, last 13 weeks held out) and
Dominick's orange juice (store x brand, last 12 weeks held out).

    python bench/panel_baselines.py                       # both data sets, every baseline
    python bench/panel_baselines.py --datasets oj --ets-jobs 1

Per data set and baseline: seconds, and at the series level and at the store-total, product-total and
chain-total levels wQL, 50%/90% coverage, WMAE (walmart: holiday weeks weighted 5), MAPE, RMSE of logs. An
aggregate level's baselines are fitted to the summed series (a group-period's history is the total of the
members observed then; its covariates are the members' means), since summed quantiles are not quantiles of
the sum. Rows scored: held-out periods whose actual is known and that every baseline forecast (finite).
Builds the [S, T] grids itself from the CSVs with polars; ends with a line `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tasks.evaluate import panel_baselines as pb  # noqa: E402
from tasks.evaluate import panel_metrics as pm  # noqa: E402

DATA = Path(os.environ.get("BHM_SHARED_DATA", REPO.parent / "shared" / "data"))
LEVELS = pb.DEFAULT_LEVELS
HOLDOUT = {"walmart": 13, "oj": 12}


@dataclass(frozen=True)
class Panel:
    """A full grid (history and holdout) before the split."""

    name: str
    y: np.ndarray  # [S, T]
    periods: np.ndarray  # datetime64[D] [T]
    covariates: dict[str, np.ndarray]  # [S, T]
    store: np.ndarray
    product: np.ndarray
    holiday: np.ndarray | None  # bool [T] (walmart's WMAE weights)


def _grid(frame: pl.DataFrame, store: str, product: str, period: str, columns: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """[S, T] arrays of ``columns`` keyed by (store, product) over a regular weekly grid of ``period``; NaN where
    a row is absent. Also the periods [T] and the store and product codes [S] (0-based, in sorted order)."""
    keys = frame.select(store, product).unique().sort(store, product)
    keys = keys.with_row_index("series")
    start, end = frame[period].min(), frame[period].max()
    periods = np.arange(np.datetime64(start, "D"), np.datetime64(end, "D") + 1, 7)
    joined = frame.join(keys, on=[store, product])
    s = joined["series"].to_numpy()
    t = ((joined[period].to_numpy().astype("datetime64[D]") - periods[0]).astype(np.int64)) // 7
    out = {}
    for c in columns:
        grid = np.full((keys.height, periods.size), np.nan)
        grid[s, t] = joined[c].cast(pl.Float64).to_numpy()
        out[c] = grid
    store_codes = np.unique(keys[store].to_numpy(), return_inverse=True)[1]
    product_codes = np.unique(keys[product].to_numpy(), return_inverse=True)[1]
    return out, periods, store_codes.astype(np.int64), product_codes.astype(np.int64)


def load_walmart(root: Path) -> Panel:
    frame = pl.read_csv(root / "walmart" / "train.csv", try_parse_dates=True)
    frame = frame.with_columns(pl.col("IsHoliday").cast(pl.Utf8).str.to_uppercase().eq("TRUE").cast(pl.Float64).alias("holiday"))
    grids, periods, store, product = _grid(frame, "Store", "Dept", "Date", ["Weekly_Sales"])
    by_date = frame.group_by("Date").agg(pl.col("holiday").max()).sort("Date")
    holiday = np.zeros(periods.size, bool)
    holiday[((by_date["Date"].to_numpy().astype("datetime64[D]") - periods[0]).astype(np.int64)) // 7] = by_date["holiday"].to_numpy() > 0
    covariates = {"holiday": np.broadcast_to(holiday.astype(float), grids["Weekly_Sales"].shape).copy()}
    return Panel("walmart", grids["Weekly_Sales"], periods, covariates, store, product, holiday)


def load_oj(root: Path) -> Panel:
    frame = pl.read_csv(root / "dominicks_oj" / "oj.csv", try_parse_dates=True)
    own = pl.coalesce([pl.when(pl.col("brand") == b).then(pl.col(f"price{b}")) for b in range(1, 12)])
    frame = frame.with_columns(own.log().alias("log_price"))
    grids, periods, store, product = _grid(frame, "store", "brand", "week_start", ["units", "log_price", "deal", "feat"])
    covariates = {c: grids[c] for c in ("log_price", "deal", "feat")}
    return Panel("oj", grids["units"], periods, covariates, store, product, None)


def aggregate_panel(panel: Panel, codes: np.ndarray, label: str) -> Panel:
    """The panel summed into groups: targets summed over the observed members (NaN where none is observed),
    covariates averaged over the members that have them."""
    n_groups = int(codes.max()) + 1
    y = pm.aggregate(panel.y, codes, n_groups, nan_policy="omit")
    covariates = {}
    for name, values in panel.covariates.items():
        total = pm.aggregate(values, codes, n_groups, nan_policy="omit")
        count = pm.aggregate(np.isfinite(values).astype(float), codes, n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            covariates[name] = np.where(count > 0, total / count, np.nan)
    groups = np.arange(n_groups)
    store = groups if label == "store" else np.zeros(n_groups, np.int64)
    product = groups if label == "product" else np.zeros(n_groups, np.int64)
    return Panel(f"{panel.name}/{label}", y, panel.periods, covariates, store, product, panel.holiday)


def split(panel: Panel, holdout: int) -> tuple[pb.PanelHistory, np.ndarray]:
    cut = panel.y.shape[1] - holdout
    history = pb.PanelHistory(panel.y[:, :cut], panel.periods[:cut], 52, panel.covariates, panel.store, panel.product)
    return history, panel.y[:, cut:]


def run_level(panel: Panel, holdout: int, args: argparse.Namespace) -> dict:
    history, truth = split(panel, holdout)
    forecasts, seconds = {}, {}
    options = {"ets": {"n_jobs": args.ets_jobs}, "lightgbm_quantile": {"seed": args.seed, "num_threads": args.lgb_threads}}
    for name in args.methods:
        baseline, kwargs = pb.PANEL_BASELINES[name], options.get(name, {})
        start = time.perf_counter()
        forecasts[name] = baseline(history, holdout, LEVELS, **kwargs)
        seconds[name] = time.perf_counter() - start
    rows = np.isfinite(truth)
    for fc in forecasts.values():
        rows &= np.isfinite(fc.mean) & np.isfinite(fc.quantiles).all(axis=0)
    weights = None
    if panel.holiday is not None:
        weights = pm.holiday_weights(np.broadcast_to(panel.holiday[-holdout:], truth.shape)[rows])
    out = {"series": int(truth.shape[0]), "rows": int(rows.sum()), "rows_known": int(np.isfinite(truth).sum()), "methods": {}}
    for name, fc in forecasts.items():
        scores = pm.scores(truth[rows], fc.mean[rows], fc.quantiles[:, rows], LEVELS)
        if weights is not None:
            scores["wmae_holiday5"] = pm.wmae(truth[rows], fc.mean[rows], weights)
        scores["seconds"] = seconds[name]
        if "model" in fc.extras:
            models, counts = np.unique(fc.extras["model"], return_counts=True)
            scores["models"] = dict(zip(models.tolist(), counts.tolist(), strict=True))
        out["methods"][name] = scores
    return out


def machine() -> dict:
    import lightgbm
    import statsforecast

    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "")
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "polars": pl.__version__,
        "lightgbm": lightgbm.__version__,
        "statsforecast": statsforecast.__version__,
    }


def show(title: str, result: dict) -> None:
    print(f"\n{title}: {result['series']} series, {result['rows']} rows scored (of {result['rows_known']} known)")
    wmae = "wmae_holiday5" if any("wmae_holiday5" in m for m in result["methods"].values()) else "wmae"
    print(f"  {'method':<25}{'seconds':>9}{'wQL':>8}{'cov50':>7}{'cov90':>7}{wmae:>16}{'MAPE':>10}{'RMSE log':>10}")
    for name, m in result["methods"].items():
        print(
            f"  {name:<25}{m['seconds']:>9.2f}{m['wql']:>8.3f}{m['coverage_50']:>7.2f}{m['coverage_90']:>7.2f}"
            f"{m[wmae]:>16,.1f}{m['mape']:>10.3f}{m['rmse_log']:>10.3f}" + (f"   {m['models']}" if "models" in m else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding walmart/ and dominicks_oj/")
    parser.add_argument("--datasets", nargs="+", choices=sorted(HOLDOUT), default=["walmart", "oj"])
    parser.add_argument("--levels", nargs="+", choices=["series", "store", "product", "chain"], default=["series", "store", "product", "chain"])
    parser.add_argument("--ets-jobs", type=int, default=2, help="processes for ETS (spawned; each imports statsforecast)")
    parser.add_argument("--lgb-threads", type=int, default=None, help="LightGBM threads (default: the module's, 1)")
    parser.add_argument("--methods", nargs="+", choices=list(pb.PANEL_BASELINES), default=list(pb.PANEL_BASELINES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    info = machine()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    loaders = {"walmart": load_walmart, "oj": load_oj}
    results: dict = {}
    for name in args.datasets:
        start = time.perf_counter()
        panel = loaders[name](args.data)
        print(f"\n== {name}: {panel.y.shape[0]} series x {panel.y.shape[1]} weeks ({panel.periods[0]} .. {panel.periods[-1]}), "
              f"{np.isnan(panel.y).mean():.1%} missing, {(panel.y < 0).sum()} negative, grid built in {time.perf_counter() - start:.1f} s; "
              f"holding out the last {HOLDOUT[name]} weeks")
        levels = {
            "series": panel,
            "store": aggregate_panel(panel, panel.store, "store"),
            "product": aggregate_panel(panel, panel.product, "product"),
            "chain": aggregate_panel(panel, np.zeros(panel.y.shape[0], np.int64), "chain"),
        }
        for level in args.levels:
            results[f"{name}/{level}"] = result = run_level(levels[level], HOLDOUT[name], args)
            show(f"{name}, {level} level", result)
    info["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    print(f"\nload at the end: {info['load_avg_1m_end']}")
    print("RESULT " + json.dumps({"machine": info, "levels": LEVELS, "holdout": HOLDOUT, "results": results}))


if __name__ == "__main__":
    main()
