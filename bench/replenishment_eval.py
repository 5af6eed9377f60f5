"""Replenishment by simulation (issue 12, item 5): replay each backtest horizon with the realised sales as demand.

    python bench/replenishment_eval.py                                  # every data set, 2 origins each
    python bench/replenishment_eval.py --datasets oj m5 --origins 1 --num-draws 200 --max-steps 500   # a smoke run

Per data set and backtest origin: fit the model on the history before the origin and keep its joint draws of
the horizon; fit LightGBM's quantiles (at the critical ratios 0.5, 0.75, 0.9) and the seasonal naive forecast
on the same history; then replay the horizon (``tasks.inventory.simulate.replay``) with each policy of
``tasks.inventory.policies`` for lost-sale-to-left-over cost ratios 1:1, 3:1, 9:1 and pack sizes 1 and 10,
and print, summed over the origins: total cost, cost relative to the point forecast plus safety stock (with
the model's predictive sd, and with the textbook's sigma: the sd of the point forecast's errors over the last
cycle, from a warm-up fit at the backtest origin before the first), fill rate, cycle service level against the
critical ratio. The data sets have no stock records: each series
starts at its policy's own order-up-to level for the first lead time (see ``tasks.inventory.simulate``).

- rossmann: daily, lead 2 days, review 7 days, 48-day horizons tiling back from the end of the shared data
  (2015-04-27, 2015-03-10, ...). Closed days (known in advance from the calendar) have demand 0 for every
  policy. Demand is in euros of sales: a pack of 10 is 10 euros.
- walmart and oj (Dominick's): weekly, lead 1 week, review 2 weeks; horizons of 13 and 12 weeks; origins
  the last ``--origins`` of the 4 that tile the last year (``panel_backtest.default_origins``).
- m5: the M5-shaped simulated panel (``bhm demo --shape m5``, ``--m5-series`` series, ``--m5-days`` days),
  daily, lead 2, review 7, 28-day horizons, origins as for the weekly sets.

A series is replayed when every period of its horizon has a known, non-negative sale (a walmart week
missing from the file, or negative and so masked by the spec, drops its series) and every policy has a
finite forecast for it. Pure functions only:
no Prefect, no MLflow. Ends with a line ``RESULT {json}``.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import common
import jax
import numpy as np
import polars as pl

from tasks import names as n
from tasks.config import ForecastConfig, PanelFitConfig
from tasks.data.encode import build_spec, encode
from tasks.data.panel_encode import encode_panel
from tasks.data.panel_ingest import read_panel
from tasks.data.spec import builtin_spec, load_spec
from tasks.data.validate import read_validated
from tasks.evaluate import panel_backtest as pbt
from tasks.evaluate import panel_baselines as pb
from tasks.evaluate.backtest import default_origin, split_at
from tasks.evaluate.baselines import lightgbm_global
from tasks.inventory import policies as pol
from tasks.inventory.orders import InventoryPolicy
from tasks.inventory.simulate import replay
from tasks.panel_pipeline import fit_encoded, forecast_encoded
from tasks.pipeline import fit_history, forecast_frame

SHARED = common.REPO.parent / "shared" / "data"
COST_RATIOS = (1, 3, 9)  # lost sale : left-over
CRITICAL = {c: c / (c + 1) for c in COST_RATIOS}  # 0.5, 0.75, 0.9
LEVELS = tuple(CRITICAL.values())
PACKS = (1, 10)
POLICIES = ("model", "point_safety_stock", "point_error_safety_stock", "point_oracle_safety_stock", "lightgbm_quantiles", "seasonal_naive_safety_stock")
REFERENCE_POLICY = "point_safety_stock"  # the ratios' column vs_point_ss; the goals are printed against both point+SS
TEXTBOOK_POLICY = "point_error_safety_stock"
ORACLE_POLICY = "point_oracle_safety_stock"  # --oracle: a bound, not a policy anyone can run
WARMUP_FOLD = 1_000  # the warm-up origin's key: the replayed origins keep theirs (0, 1, ...) from before it existed
RULES = {  # data set -> (lead time, review period, horizon, season length), in periods
    "rossmann": (2, 7, 48, 7),
    "walmart": (1, 2, 13, 52),
    "oj": (1, 2, 12, 52),
    "m5": (2, 7, 28, 7),
}


@dataclass
class Forecasts:
    """One origin's inputs to the replay, for the series kept: realised demand and every policy's forecast."""

    origin: dt.date
    demand: np.ndarray  # [S, H]
    draws: np.ndarray  # [D, S, H] the model's joint draws
    lgb_quantiles: np.ndarray  # [3, S, H] at LEVELS
    naive: np.ndarray  # [S, H] seasonal naive point forecast
    naive_sd: np.ndarray  # [S] sd of the series' historical seasonal-difference errors
    keys: list  # [S] each series' key (Rossmann: the store; panels: (store, product)), to find it at another origin
    open: np.ndarray  # [S, H] bool: periods that can sell (Rossmann: open days; panels: every period)
    n_series: int  # before dropping incomplete series
    seconds: dict

    @cached_property
    def point(self) -> np.ndarray:
        """The model's point forecast [S, H]: the mean of its draws."""
        return self.draws.mean(axis=0, dtype=np.float64)

    @cached_property
    def predictive_sd(self) -> np.ndarray:
        """The model's per-period predictive sd [S, H]."""
        return pol.predictive_sd(self.draws)

    @cached_property
    def point_errors(self) -> np.ndarray:
        """Realised demand minus the point forecast [S, H]; NaN on closed periods."""
        return np.where(self.open, self.demand - self.point, np.nan)


class DrawCollector:
    """``on_draws`` callback: keeps every chunk's joint draws in one [D, S, H] float32 array."""

    def __init__(self, n_draws: int, n_series: int, n_periods: int):
        self.draws = np.zeros((n_draws, n_series, n_periods), np.float32)

    def __call__(self, rows: np.ndarray, draws: np.ndarray) -> None:
        self.draws[:, rows] = np.asarray(draws, np.float32)[:, :, : self.draws.shape[2]]


def _keep(demand: np.ndarray, *forecasts: np.ndarray) -> np.ndarray:
    keep = np.isfinite(demand).all(axis=1) & (np.nan_to_num(demand, nan=-1) >= 0).all(axis=1)
    for f in forecasts:
        axes = tuple(i for i in range(f.ndim) if i != f.ndim - 2)
        keep &= np.isfinite(f).all(axis=axes)
    return keep


def _finish(origin, demand, draws, lgb_q, naive, naive_sd, keys, open_periods, seconds) -> Forecasts:
    keep = _keep(demand, draws, lgb_q, naive)
    return Forecasts(
        origin=origin,
        demand=demand[keep],
        draws=draws[:, keep],
        lgb_quantiles=lgb_q[:, keep],
        naive=naive[keep],
        naive_sd=naive_sd[keep],
        keys=[k for k, kept in zip(keys, keep, strict=True) if kept],
        open=np.broadcast_to(open_periods, demand.shape)[keep],
        n_series=int(demand.shape[0]),
        seconds=seconds,
    )


def last_cycle_error_sd(current: Forecasts, previous: Forecasts) -> np.ndarray:
    """The textbook's sigma per series of ``current`` [S]: the sd of the model's point forecast errors over the
    previous origin's horizon (the last cycle's errors, known at this origin), open periods only.

    A series without that cycle (new, or not replayed then) borrows the pooled errors scaled by its point
    forecast's mean (``policies.forecast_error_sd``); the scale of every series is its current point forecast's
    mean over open periods.
    """
    row = {k: i for i, k in enumerate(previous.keys)}
    pos = np.array([row.get(k, -1) for k in current.keys], np.int64)
    errors = np.full((current.demand.shape[0], previous.point_errors.shape[1]), np.nan)
    errors[pos >= 0] = previous.point_errors[pos[pos >= 0]]
    scale = np.where(current.open, current.point, 0.0).sum(axis=1) / np.maximum(current.open.sum(axis=1), 1)
    return pol.forecast_error_sd(errors, scale)


# --- rossmann ----------------------------------------------------------------------------------------


def rossmann_origins(train: pl.DataFrame, horizon: int, count: int) -> list[dt.date]:
    last = default_origin(train, horizon)
    return sorted(last - dt.timedelta(days=horizon * k) for k in range(count))


def rossmann_forecasts(args, train: pl.DataFrame, stores: pl.DataFrame, origin: dt.date, key: jax.Array) -> Forecasts:
    _, _, horizon, season = RULES["rossmann"]
    seconds = {}
    t = time.perf_counter()
    split = split_at(train, origin, horizon)
    config = common.fit_config(args.max_steps)
    spec = build_spec(stores, config.yearly_fourier_order, config.monthly_fourier_order)
    encoded = encode(split.history, stores, split.calendar, spec)
    future, history = encoded.future, encoded.history
    key_fit, key_forecast = jax.random.split(key)
    fitted, _ = fit_history(encoded, config, key_fit, future.stores, common.progress(args))
    collector = DrawCollector(args.num_draws, future.n_stores, future.n_days)
    forecast_frame(fitted, future, split.calendar, ForecastConfig(num_draws=args.num_draws), key_forecast, collector)
    seconds["model"] = time.perf_counter() - t

    # The opening calendar is known in advance: a closed day's demand is 0 for every policy.
    open_days = future.open.astype(np.float32)
    draws = collector.draws * open_days[None]
    demand = np.full((future.n_stores, future.n_days), np.nan)
    s_idx = future.store_positions(split.actual[n.STORE].to_numpy())
    t_idx = (split.actual[n.DATE].to_numpy().astype("datetime64[D]") - future.dates[0]).astype(np.int64)
    demand[s_idx, t_idx] = split.actual[n.SALES].to_numpy().astype(float)

    t = time.perf_counter()
    lgb = lightgbm_global(history, future, LEVELS, seed=args.seed, threads=args.lgb_threads)
    lgb_q = np.quantile(lgb.ensemble, LEVELS, axis=-1, method="hazen") * open_days[None]  # the fitted quantiles back
    seconds["lightgbm"] = time.perf_counter() - t

    t = time.perf_counter()
    y = np.where(history.present, history.sales, np.nan).astype(np.float64)  # closed days sell 0; no row: unknown
    lookup = {int(s): i for i, s in enumerate(history.stores)}
    pos = np.array([lookup.get(int(s), -1) for s in future.stores])
    y_future_order = np.where(pos[:, None] >= 0, y[np.maximum(pos, 0)], np.nan)
    panel = pb.PanelHistory(
        y=y_future_order, periods=history.dates, season_length=season, covariates={},
        store=np.arange(future.n_stores, dtype=np.int64), product=np.zeros(future.n_stores, np.int64),
    )  # fmt: skip
    naive = pb.seasonal_naive(panel, future.n_days, LEVELS).mean * open_days
    naive_sd = pol.seasonal_difference_sd(y_future_order[:, -364:], season)
    seconds["seasonal_naive"] = time.perf_counter() - t
    keys = [int(s) for s in future.stores]
    return _finish(origin, demand, draws, lgb_q, naive, naive_sd, keys, future.open.astype(bool), seconds)


# --- panels ------------------------------------------------------------------------------------------


def panel_forecasts(args, tables, spec, name: str, origin: dt.date, key: jax.Array) -> Forecasts:
    _, _, horizon, season = RULES[name]
    seconds = {}
    t = time.perf_counter()
    as_of, actual = pbt.split(tables, origin, horizon)
    encoded = encode_panel(as_of)
    key_fit, key_forecast = jax.random.split(key)
    config = PanelFitConfig() if args.max_steps is None else PanelFitConfig(max_steps=args.max_steps)
    fitted, _ = fit_encoded(encoded, tables.spec, config, key_fit, common.progress(args))
    n_series, n_periods = encoded.encoding.n_series, encoded.future.n_periods
    collector = DrawCollector(args.num_draws, n_series, n_periods)
    forecast_encoded(fitted, encoded, (), ForecastConfig(num_draws=args.num_draws), key_forecast, collector)
    seconds["model"] = time.perf_counter() - t

    s, tt = pbt.future_cells(encoded, actual)
    demand = np.full((n_series, n_periods), np.nan)
    demand[s, tt] = actual[n.TARGET].cast(pl.Float64).fill_null(np.nan).to_numpy()

    history = pbt.series_history(encoded, tables.spec)
    t = time.perf_counter()
    lgb = pb.lightgbm_quantile(history, n_periods, LEVELS, seed=args.seed, num_threads=args.lgb_threads)
    seconds["lightgbm"] = time.perf_counter() - t
    t = time.perf_counter()
    naive = pb.seasonal_naive(history, n_periods, LEVELS).mean
    y = history.y if season == 52 else history.y[:, -364:]
    naive_sd = pol.seasonal_difference_sd(y, season)
    seconds["seasonal_naive"] = time.perf_counter() - t
    encoding = encoded.encoding
    keys = [(encoding.store_keys[a], encoding.product_keys[b]) for a, b in encoding.series]
    return _finish(origin, demand, collector.draws, lgb.quantiles, naive, naive_sd, keys, np.ones((1, n_periods), bool), seconds)


# --- the replay -------------------------------------------------------------------------------------


def rules_for(name: str, n_series: int, ratio: int, pack: int, horizon: int, on_hand: np.ndarray | None = None) -> InventoryPolicy:
    lead, review, _, _ = RULES[name]
    full = lambda v: np.full(n_series, float(v))  # noqa: E731
    return InventoryPolicy(
        on_hand=full(0) if on_hand is None else on_hand,
        lead_time=full(lead),
        review_period=full(review),
        pack_size=full(pack),
        min_order=full(0),  # a positive order is at least one pack anyway
        lost_sale_cost=full(ratio),
        leftover_cost=full(1),
        open_orders=np.zeros((n_series, horizon)),
    )


def horizon_error_sd(f: Forecasts) -> np.ndarray:
    """Per series [S]: the sd of the point forecast's errors over the horizon being replayed (open periods)."""
    return np.nan_to_num(np.nanstd(f.point_errors, axis=1, ddof=1))


def build_policies(f: Forecasts, rules: InventoryPolicy, ratio: int, error_sd: np.ndarray, oracle_sd: np.ndarray | None) -> dict[str, pol.Policy]:
    q = f.lgb_quantiles[LEVELS.index(CRITICAL[ratio])]
    # With --oracle: the same formula with the sd of the very errors it will meet, which no planner knows in advance:
    # what a better spread alone, around the same mean, could save at most.
    oracle_policy = {} if oracle_sd is None else {ORACLE_POLICY: pol.point_safety_stock(rules, f.point, oracle_sd[:, None] * f.open, ORACLE_POLICY)}
    return {
        "model": pol.model(rules, f.draws),
        # The textbook formula around the model's predictive mean, with the model's per-period predictive sd.
        "point_safety_stock": pol.point_safety_stock(rules, f.point, f.predictive_sd),
        # The textbook policy proper: sigma from the point forecast's errors over the last cycle (closed days: 0).
        TEXTBOOK_POLICY: pol.point_safety_stock(rules, f.point, error_sd[:, None] * f.open, TEXTBOOK_POLICY),
        "lightgbm_quantiles": pol.lightgbm_quantiles(rules, q),
        "seasonal_naive_safety_stock": pol.seasonal_naive_safety_stock(rules, f.naive, f.naive_sd),
    } | oracle_policy


def replay_origin(name: str, f: Forecasts, error_sd: np.ndarray, oracle: bool = False) -> list[dict]:
    rows = []
    n_series, horizon = f.demand.shape
    oracle_sd = horizon_error_sd(f) if oracle else None
    for ratio in COST_RATIOS:
        for pack in PACKS:
            base = rules_for(name, n_series, ratio, pack, horizon)
            for policy_name, policy in build_policies(f, base, ratio, error_sd, oracle_sd).items():
                t = time.perf_counter()
                start = policy.start_stock()
                result = replay(f.demand, rules_for(name, n_series, ratio, pack, horizon, start), policy)
                cycles = result.cycle_stockout[np.isfinite(result.cycle_stockout)]
                rows.append({
                    "dataset": name, "origin": str(f.origin), "cost_ratio": ratio, "pack": pack, "policy": policy_name,
                    "critical_ratio": CRITICAL[ratio], "cost": result.total_cost, "lost": float(result.lost.sum()),
                    "leftover": float(result.leftover.sum()), "demand": float(result.demand.sum()),
                    "served": float(result.served.sum()), "cycles": int(cycles.size), "stockout_cycles": int(cycles.sum()),
                    "warmup_lost": float(result.warmup_lost.sum()), "series": n_series, "seconds": time.perf_counter() - t,
                })  # fmt: skip
    return rows


def summarise(rows: list[dict]) -> pl.DataFrame:
    frame = pl.DataFrame(rows)
    summed = frame.group_by(["dataset", "cost_ratio", "pack", "policy"], maintain_order=True).agg(
        pl.col("critical_ratio").first(),
        *[pl.col(c).sum() for c in ("cost", "lost", "leftover", "demand", "served", "cycles", "stockout_cycles")],
        pl.len().alias("origins"),
    )
    reference = summed.filter(pl.col("policy") == REFERENCE_POLICY).select("dataset", "cost_ratio", "pack", pl.col("cost").alias("ref_cost"))
    if TEXTBOOK_POLICY in summed["policy"]:  # rows saved before the textbook policy existed have none
        textbook = summed.filter(pl.col("policy") == TEXTBOOK_POLICY).select("dataset", "cost_ratio", "pack", pl.col("cost").alias("textbook_cost"))
        reference = reference.join(textbook, on=["dataset", "cost_ratio", "pack"])
    else:
        reference = reference.with_columns(pl.lit(None, pl.Float64).alias("textbook_cost"))
    rank = pl.col("policy").replace_strict({name: i for i, name in enumerate(POLICIES)}, default=len(POLICIES))
    summed = summed.with_columns(rank.alias("_rank")).sort(["cost_ratio", "pack", "_rank"], maintain_order=True).drop("_rank")
    return summed.join(reference, on=["dataset", "cost_ratio", "pack"], maintain_order="left").with_columns(
        (pl.col("cost") / pl.col("ref_cost")).alias("vs_point_ss"),
        (pl.col("cost") / pl.col("textbook_cost")).alias("vs_textbook"),
        (pl.col("served") / pl.col("demand")).alias("fill_rate"),
        (1 - pl.col("stockout_cycles") / pl.col("cycles")).alias("cycle_service"),
        (pl.col("lost") / pl.col("demand")).alias("lost_share"),
        (pl.col("leftover") / pl.col("demand")).alias("leftover_share"),
    )


def table(summary: pl.DataFrame, dataset: str) -> str:
    lines = [
        "| cost ratio | pack | policy | total cost | vs point+SS | vs textbook | fill rate | cycle service | critical ratio | lost / demand | left-over / demand |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary.filter(pl.col("dataset") == dataset).iter_rows(named=True):
        textbook = "" if r["vs_textbook"] is None else f"{r['vs_textbook']:.3f}"
        lines.append(
            f"| {r['cost_ratio']}:1 | {r['pack']} | {r['policy']} | {r['cost']:,.0f} | {r['vs_point_ss']:.3f} | {textbook} | {r['fill_rate']:.3f} | "
            f"{r['cycle_service']:.3f} | {r['critical_ratio']:.2f} | {r['lost_share']:.4f} | {r['leftover_share']:.4f} |"
        )
    return "\n".join(lines)


def per_origin(rows: list[dict], dataset: str) -> str:
    """The model's cost relative to point+SS at 3:1, pack 1 and 10, origin by origin."""
    frame = pl.DataFrame(rows).filter((pl.col("dataset") == dataset) & (pl.col("cost_ratio") == 3))
    out = []
    for (origin, pack), part in frame.group_by(["origin", "pack"], maintain_order=True):
        cost = dict(zip(part["policy"], part["cost"], strict=True))
        fill = dict(zip(part["policy"], (part["served"] / part["demand"]).to_list(), strict=True))
        textbook = f", model / textbook {cost['model'] / cost[TEXTBOOK_POLICY]:.3f}" if TEXTBOOK_POLICY in cost else ""
        out.append(f"  origin {origin}, pack {pack}: model / point+SS {cost['model'] / cost[REFERENCE_POLICY]:.3f}{textbook}, "
                   f"model fill {fill['model']:.3f}; " + ", ".join(f"{k} {v:,.0f}" for k, v in cost.items()))
    return "\n".join(out)


def goals(summary: pl.DataFrame) -> list[dict]:
    out = []
    at3 = summary.filter((pl.col("cost_ratio") == 3) & (pl.col("policy") == "model"))
    for r in at3.iter_rows(named=True):
        label = f"{r['dataset']} pack {r['pack']}"
        out.append(common.goal(f"{label}: model cost / point+SS (model's sd) at 3:1", r["vs_point_ss"], r["vs_point_ss"] <= 0.90, "<= 0.90"))
        if r["vs_textbook"] is not None:
            out.append(common.goal(f"{label}: model cost / point+SS (last cycle's errors) at 3:1", r["vs_textbook"], r["vs_textbook"] <= 0.90, "<= 0.90"))
        out.append(common.goal(f"{label}: model fill rate at 3:1", r["fill_rate"], abs(r["fill_rate"] - 0.75) <= 0.02, "0.75 +- 0.02"))
        print(f"      (cycle service level {r['cycle_service']:.3f} against the critical ratio 0.75)")
    return out


def report(rows: list[dict]) -> list[dict]:
    """Print every data set's table (summed over its origins), the model's 3:1 ratio by origin, and the goals."""
    summary = summarise(rows)
    for name in summary["dataset"].unique(maintain_order=True).to_list():
        origins = sorted({r["origin"] for r in rows if r["dataset"] == name})
        print(f"\n### {name} (summed over {len(origins)} origins: {', '.join(origins)})\n")
        print(table(summary, name))
        print(per_origin(rows, name))
    print()
    return goals(summary)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], repeats=None, fit=False)
    p.set_defaults(data=SHARED)
    p.add_argument("--datasets", nargs="+", choices=list(RULES), default=list(RULES))
    p.add_argument("--origins", type=int, default=2, help="backtest origins per data set (the latest ones)")
    p.add_argument("--num-draws", type=int, default=500, help="the model's joint draws per series and period")
    p.add_argument("--max-steps", type=int, default=None, help="cap the fits' steps (smoke runs); default: the configs'")
    p.add_argument("--m5-series", type=int, default=300)
    p.add_argument("--m5-days", type=int, default=800)
    p.add_argument("--lgb-threads", type=int, default=1, help="LightGBM threads (panels: the module's default is 1 too; Rossmann's baseline would take 2)")
    p.add_argument("--rossmann-origins", type=dt.date.fromisoformat, nargs="+", default=None, help="Rossmann origins (default: --origins of them, 48 days apart, the last ending at the end of the data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write every replay's row here (as it goes)")
    p.add_argument("--oracle", action="store_true", help="also replay point + SS with the sd of the horizon's own errors (a bound)")
    p.add_argument("--report", type=Path, nargs="+", default=None, help="print the tables from rows saved with --json (runs combined); fit nothing")
    args = p.parse_args()
    if args.report:
        report(sum((json.loads(path.read_text()) for path in args.report), []))
        return
    args.data = Path(args.data)
    common.setup(args)
    machine = common.machine_info()
    common.print_machine(machine)
    started = time.perf_counter()
    rows: list[dict] = []
    notes: dict[str, str] = {}
    key = jax.random.key(args.seed)
    for d, name in enumerate(args.datasets):
        t0 = time.perf_counter()
        lead, review, horizon, _ = RULES[name]
        with tempfile.TemporaryDirectory(prefix="bhm-m5-") as tmp:
            if name == "rossmann":
                train_path, stores_path = common.rossmann_files(args.data / "rossmann")
                inputs = read_validated(train_path, stores_path)
                if args.rossmann_origins:
                    origins = sorted(args.rossmann_origins)
                    origins = [origins[0] - dt.timedelta(days=horizon), *origins]
                else:
                    origins = rossmann_origins(inputs.train, horizon, args.origins + 1)
                make = lambda o, k, inputs=inputs: rossmann_forecasts(args, inputs.train, inputs.stores, o, k)  # noqa: E731
            else:
                if name == "m5":
                    from tasks.data.m5_demo import write_m5_demo

                    paths = write_m5_demo(tmp, n_series=args.m5_series, seed=args.seed, n_days=args.m5_days)
                    spec, folder = load_spec(paths["spec"]), Path(tmp)
                else:
                    spec_name = {"oj": "dominicks_oj"}.get(name, name)
                    spec, folder = builtin_spec(spec_name), args.data / spec_name
                tables = read_panel(spec, folder)
                origins = pbt.default_origins(tables, horizon, max(4, args.origins + 1))[-args.origins - 1 :]
                make = lambda o, k, tables=tables, spec=spec, name=name: panel_forecasts(args, tables, spec, name, o, k)  # noqa: E731
            # The first origin is a warm-up: its forecast errors are the textbook's sigma at the next one.
            warmup, origins = origins[0], origins[1:]
            print(f"\n== {name}: lead {lead}, review {review}, horizon {horizon} periods; origins {', '.join(map(str, origins))} "
                  f"(and {warmup} for the last cycle's errors)", flush=True)  # fmt: skip
            previous = make(warmup, jax.random.fold_in(jax.random.fold_in(key, d), WARMUP_FOLD))
            for i, origin in enumerate(origins):
                f = make(origin, jax.random.fold_in(jax.random.fold_in(key, d), i))
                t = time.perf_counter()
                origin_rows = replay_origin(name, f, last_cycle_error_sd(f, previous), args.oracle)
                previous = f
                rows += origin_rows
                if args.json:  # as it goes, so that a later failure keeps what was measured
                    args.json.write_text(json.dumps(rows))
                print(
                    f"  origin {origin}: {f.demand.shape[0]:,} of {f.n_series:,} series replayed; "
                    + ", ".join(f"{k} {v:.0f} s" for k, v in f.seconds.items())
                    + f", replays {time.perf_counter() - t:.0f} s",
                    flush=True,
                )
        notes[name] = f"{time.perf_counter() - t0:.0f} s"
    print("\nseconds per data set: " + ", ".join(f"{k} {v}" for k, v in notes.items()))
    met = report(rows)
    summary = summarise(rows)
    total = time.perf_counter() - started
    print(f"\ntotal {total:.0f} s ({total / 60:.1f} min); load at the end {common.machine_info()['load_avg_1m']}")
    common.result("replenishment_eval", args, machine, goals=met, summary=summary.to_dicts(), seconds=total)


if __name__ == "__main__":
    main()
