"""An M5-shaped simulated panel (Walmart's M5 competition: stores x items, daily, intermittent) with its truth.

The default shape is M5's: 10 stores in 3 states (CA 4, TX 3, WI 3), 3,049 items in 7 departments of 3
categories, 1,941 days of history and a 28-day future. ``n_series`` scales it: fewer series keep the 10
stores and fewer items; more add stores of the same kinds, spread over the states. Demand per store,
item and day is negative binomial around a small mean (most items sell 0-3 units a day; more than half
the days are zeros), with an item and a store level, a department's weekly and yearly profile, a price
elasticity on weekly prices that change now and then and drop on temporary discounts, chain-wide event
days and the state's SNAP days (a lift for FOODS). A fifth of the items launch during the history: they
have no rows before their first day.

Written as the generic contract's files with their spec (``spec.yaml``): ``sales.parquet``,
``stores.csv``, ``items.csv``, ``calendar.csv`` (by state), ``future.parquet``, the horizon's true
demand and mean (``truth.parquet``) and the true parameters (``truth_params.npz``, plain arrays).
Each store's rows are drawn from one ``numpy.random.Generator`` seeded from (seed, store), so that the
data do not depend on how they are written, and memory holds one store at a time.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from tasks.ops.atomic import fsync_path, temp_path, write_file

M5_SERIES = 30_490
M5_STORES = 10
M5_DAYS = 1_941
M5_HORIZON = 28
M5_START = dt.date(2011, 1, 29)  # M5's first day, a Saturday
STATES = ("CA", "TX", "WI")
STATE_OF_FIRST_STORES = ("CA", "CA", "CA", "CA", "TX", "TX", "TX", "WI", "WI", "WI")
DEPARTMENTS = {  # department -> (category, share of the items)
    "FOODS_1": ("FOODS", 0.07),
    "FOODS_2": ("FOODS", 0.13),
    "FOODS_3": ("FOODS", 0.27),
    "HOBBIES_1": ("HOBBIES", 0.14),
    "HOBBIES_2": ("HOBBIES", 0.05),
    "HOUSEHOLD_1": ("HOUSEHOLD", 0.17),
    "HOUSEHOLD_2": ("HOUSEHOLD", 0.17),
}
SNAP_DAYS = {"CA": range(1, 11), "TX": (1, 3, 5, 6, 7, 9, 11, 12, 13, 15), "WI": (2, 3, 5, 6, 8, 9, 11, 12, 14, 15)}
EVENT_SHARE = 0.03
LAUNCH_SHARE = 0.2
CONCENTRATION = 2.0

M5_SPEC = """\
# An M5-shaped simulated panel (bhm demo --shape m5): stores x items, daily units.
name: m5_demo
layout: panel
frequency: day
target_kind: units
key_type: str
sales:
  file: sales.parquet
  period: date
  store: store_id
  product: item_id
  target: sales
  covariates:
    - {name: price, column: sell_price, kind: price}
stores:
  file: stores.csv
  key: store_id
  hierarchy: [state_id]
products:
  file: items.csv
  key: item_id
  hierarchy: [dept_id, cat_id]
calendar:
  file: calendar.csv
  period: date
  by: state_id
  covariates:
    - {name: snap, column: snap, kind: flag}
    - {name: event, column: event, kind: flag}
aggregates: [state_id, store_id, cat_id, dept_id, item_id, total]
pooling:
  level: [store, product]
  season: [product]
  weekday: [store, product]
  price: [product]
  snap: [product]
  event: [product]
yearly_fourier_order: 4
# bhm replenish: orders every 7 days arrive 2 days later; foods come in packs of 6; a lost sale costs
# the margin (price - unit cost), a unit left over unit_cost x 0.25.
inventory:
  file: inventory.parquet
  on_hand: on_hand
  lead_time: 2
  review_period: 7
  pack_size: pack_size
  price: price
  unit_cost: unit_cost
  holding_rate: 0.25
"""
FOODS_PACK = 6
UNIT_COST_SHARE = 0.6  # of the shelf price
STOCK_DAYS = 3.0  # mean days of demand on the shelf at the origin


@dataclass(frozen=True)
class M5Shape:
    n_stores: int
    n_items: int
    n_days: int
    horizon: int

    @classmethod
    def for_series(cls, n_series: int = M5_SERIES, n_days: int = M5_DAYS, horizon: int = M5_HORIZON) -> M5Shape:
        if n_series < M5_STORES:
            raise ValueError(f"n_series must be >= {M5_STORES} (one item in each of M5's stores), got {n_series}")
        if n_days < 56 or horizon < 1:
            raise ValueError(f"n_days must be >= 56 and horizon >= 1, got {n_days} and {horizon}")
        n_items_m5 = M5_SERIES // M5_STORES
        n_stores = M5_STORES if n_series <= M5_SERIES else math.ceil(n_series / n_items_m5)
        return cls(n_stores=n_stores, n_items=math.ceil(n_series / n_stores), n_days=n_days, horizon=horizon)

    @property
    def n_series(self) -> int:
        return self.n_stores * self.n_items


def _items(rng: np.random.Generator, n_items: int) -> pl.DataFrame:
    names = list(DEPARTMENTS)
    shares = np.array([DEPARTMENTS[d][1] for d in names])
    counts = np.maximum(1, np.floor(shares / shares.sum() * n_items).astype(int)) if n_items >= len(names) else np.zeros(len(names), int)
    if n_items < len(names):
        counts[:n_items] = 1
    counts[int(np.argmax(shares))] += n_items - counts.sum()
    departments = np.repeat(names, counts)
    numbers = np.concatenate([np.arange(1, c + 1) for c in counts])
    return pl.DataFrame(
        {
            "item_id": [f"{d}_{k:03d}" for d, k in zip(departments, numbers, strict=True)],
            "dept_id": departments,
            "cat_id": [DEPARTMENTS[d][0] for d in departments],
        }
    )


def _stores(n_stores: int) -> pl.DataFrame:
    states = [STATE_OF_FIRST_STORES[i % len(STATE_OF_FIRST_STORES)] for i in range(n_stores)]
    numbers: dict[str, int] = {}
    ids = []
    for state in states:
        numbers[state] = numbers.get(state, 0) + 1
        ids.append(f"{state}_{numbers[state]}")
    return pl.DataFrame({"store_id": ids, "state_id": states})


def _calendar(rng: np.random.Generator, days: np.ndarray) -> tuple[pl.DataFrame, np.ndarray, dict[str, np.ndarray]]:
    event = rng.random(days.size) < EVENT_SHARE
    day_of_month = (days - days.astype("datetime64[M]")).astype(int) + 1
    snap = {state: np.isin(day_of_month, list(SNAP_DAYS[state])) for state in STATES}
    frame = pl.concat(
        pl.DataFrame({"date": days, "state_id": state, "snap": snap[state].astype(np.int8), "event": event.astype(np.int8)})
        for state in STATES
    )
    return frame, event, snap


@dataclass(frozen=True)
class ItemTruth:
    level: np.ndarray  # [I] log mean units of the item in an average store
    elasticity: np.ndarray  # [I]
    base_price: np.ndarray  # [I]
    launch: np.ndarray  # [I] day index of the item's first row
    weekday: np.ndarray  # [D_dept, 7] log weekday profile of each department
    season_amplitude: np.ndarray  # [D_dept]
    season_phase: np.ndarray  # [D_dept]
    snap_lift: np.ndarray  # [D_dept]
    event_lift: np.ndarray  # [D_dept]


def _item_truth(rng: np.random.Generator, items: pl.DataFrame, n_days: int) -> tuple[ItemTruth, np.ndarray]:
    departments = list(DEPARTMENTS)
    dept = np.array([departments.index(d) for d in items["dept_id"]])
    n_items = items.height
    launch = np.where(rng.random(n_items) < LAUNCH_SHARE, rng.integers(n_days // 10, n_days * 3 // 4, n_items), 0)
    foods = np.array([DEPARTMENTS[d][0] == "FOODS" for d in departments])
    truth = ItemTruth(
        level=rng.normal(-1.2, 0.9, n_items) + np.where(foods[dept], 0.4, 0.0),
        elasticity=rng.normal(-1.8, 0.5, n_items),
        base_price=np.exp(rng.normal(1.3, 0.8, n_items)).round(2) + 0.49,
        launch=launch,
        weekday=np.concatenate([np.zeros((len(departments), 5)), rng.uniform(0.15, 0.4, (len(departments), 2))], axis=1),
        season_amplitude=rng.uniform(0.05, 0.25, len(departments)),
        season_phase=rng.uniform(0, 2 * np.pi, len(departments)),
        snap_lift=np.where(foods, rng.uniform(0.1, 0.3, len(departments)), 0.0),
        event_lift=rng.uniform(-0.1, 0.25, len(departments)),
    )
    return truth, dept


def _weekly_prices(rng: np.random.Generator, truth: ItemTruth, n_weeks: int) -> np.ndarray:
    """[I, W] one store's weekly prices: the base price with a change every 20-40 weeks and 10-30% discounts."""
    n_items = truth.base_price.size
    change = rng.random((n_items, n_weeks)) < 1 / 30
    steps = np.where(change, rng.normal(0.0, 0.08, (n_items, n_weeks)), 0.0)
    discount = np.where(rng.random((n_items, n_weeks)) < 0.06, rng.uniform(0.1, 0.3, (n_items, n_weeks)), 0.0)
    return (truth.base_price[:, None] * np.exp(np.cumsum(steps, axis=1)) * (1.0 - discount)).round(2)


def write_m5_demo(folder: str | Path, n_series: int = M5_SERIES, seed: int = 0, n_days: int = M5_DAYS, horizon: int = M5_HORIZON) -> dict[str, Path]:
    """Write the M5-shaped panel's files and spec to ``folder``; returns them by role."""
    shape = M5Shape.for_series(n_series, n_days, horizon)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 0])
    items, stores = _items(rng, shape.n_items), _stores(shape.n_stores)
    n_total = shape.n_days + shape.horizon
    days = np.datetime64(M5_START, "D") + np.arange(n_total)
    calendar, event, snap = _calendar(rng, days)
    truth, dept = _item_truth(rng, items, shape.n_days)
    store_level = rng.normal(0.0, 0.3, shape.n_stores)
    day_of_year = (days - days.astype("datetime64[Y]")).astype(np.float64)
    season = truth.season_amplitude[:, None] * np.sin(2 * np.pi * day_of_year / 365.25 + truth.season_phase[:, None])  # [D, T]
    weekday = truth.weekday[:, (days.astype("datetime64[D]").astype(np.int64) + 3) % 7]  # [D, T], Monday = 0
    n_weeks = -(-n_total // 7)
    paths = {
        "sales": folder / "sales.parquet",
        "stores": folder / "stores.csv",
        "products": folder / "items.csv",
        "calendar": folder / "calendar.csv",
        "future": folder / "future.parquet",
        "truth": folder / "truth.parquet",
        "truth_params": folder / "truth_params.npz",
        "inventory": folder / "inventory.parquet",
        "spec": folder / "spec.yaml",
    }
    stock = []
    with _ParquetParts(paths["sales"]) as sales, _ParquetParts(paths["future"]) as future, _ParquetParts(paths["truth"]) as true:
        for s, (store_id, state) in enumerate(stores.select("store_id", "state_id").iter_rows()):
            store_rng = np.random.default_rng([seed, 1, s])
            price = np.repeat(_weekly_prices(store_rng, truth, n_weeks), 7, axis=1)[:, :n_total]  # [I, T]
            log_mu = (
                truth.level[:, None] + store_level[s] + season[dept] + weekday[dept]
                + truth.elasticity[:, None] * (np.log(price) - np.log(truth.base_price)[:, None])
                + truth.snap_lift[dept][:, None] * snap[state][None, :] + truth.event_lift[dept][:, None] * event[None, :]
            )  # fmt: skip
            mu = np.exp(log_mu)
            units = store_rng.negative_binomial(CONCENTRATION, CONCENTRATION / (CONCENTRATION + mu))
            i_grid, t_grid = np.meshgrid(np.arange(shape.n_items), np.arange(n_total), indexing="ij")
            frame = pl.DataFrame(
                {
                    "store_id": store_id,
                    "item_id": items["item_id"].gather(i_grid.ravel()),
                    "date": days[t_grid.ravel()],
                    "sales": units.ravel().astype(np.int32),
                    "sell_price": price.ravel(),
                    "_t": t_grid.ravel(),
                    "true_mean": mu.ravel(),
                }
            ).filter(pl.col("_t") >= pl.Series(truth.launch[i_grid.ravel()]))
            sales.write(frame.filter(pl.col("_t") < shape.n_days).drop("_t", "true_mean"))
            ahead = frame.filter(pl.col("_t") >= shape.n_days).drop("_t")
            future.write(ahead.drop("sales", "true_mean"))
            true.write(ahead)
            stock.append(_inventory(store_rng, store_id, items, truth.launch < n_total, mu[:, shape.n_days - 1], price[:, shape.n_days - 1]))
    write_file(paths["inventory"], pl.concat(stock).write_parquet)
    write_file(paths["stores"], stores.write_csv)
    write_file(paths["products"], items.write_csv)
    write_file(paths["calendar"], calendar.write_csv)
    params = {name: getattr(truth, name) for name in ItemTruth.__dataclass_fields__} | {"store_level": store_level}
    write_file(paths["truth_params"], lambda tmp: np.savez(tmp.open("wb"), **params))
    write_file(paths["spec"], lambda tmp: tmp.write_text(M5_SPEC))
    return paths


def _inventory(rng: np.random.Generator, store_id: str, items: pl.DataFrame, listed: np.ndarray, mu: np.ndarray, price: np.ndarray) -> pl.DataFrame:
    """A store's shelf at the origin: about STOCK_DAYS days of demand, packs, shelf price and unit cost."""
    return pl.DataFrame(
        {
            "store_id": store_id,
            "item_id": items["item_id"],
            "on_hand": rng.poisson(STOCK_DAYS * mu).astype(np.float64),
            "pack_size": np.where(items["cat_id"].to_numpy() == "FOODS", FOODS_PACK, 1).astype(np.float64),
            "price": np.round(price, 2),
            "unit_cost": np.round(UNIT_COST_SHARE * price, 2),
        }
    ).filter(pl.Series(listed))


class _ParquetParts:
    """One Parquet file written a row group at a time under a temporary name, renamed into place on a
    clean exit and removed on an error."""

    def __init__(self, path: Path) -> None:
        self.path, self.tmp, self.writer = path, temp_path(path), None

    def __enter__(self) -> _ParquetParts:
        return self

    def write(self, frame: pl.DataFrame) -> None:
        table = frame.to_arrow()
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, table.schema)
        self.writer.write_table(table)

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if self.writer is not None:
                self.writer.close()
            if kind is None:
                fsync_path(self.tmp)
                os.replace(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)
