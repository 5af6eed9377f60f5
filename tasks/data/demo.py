"""A built-in demo data set in Kaggle Rossmann format, drawn from known parameters.

The generator builds a calendar (closed Sundays, state holidays, two-week
promo cycles, school holidays), a stores table, encodes them with the same
feature code the pipeline uses, and draws sales from the model's own
likelihood with fixed true parameters. Tests can therefore check parameter
recovery and interval calibration against the truth it returns.

Everything is deterministic given the seed; randomness comes from one
explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from tasks import names as n
from tasks.data import encode
from tasks.data import features as fx
from tasks.model.store_day import ModelStructure, time_blocks

DEFAULT_START = dt.date(2023, 1, 2)
BLOCK_DAYS = 28

# State holidays (month, day, type) observed by every store; "b" Easter-like
# days move a little with the year, which the demo ignores.
HOLIDAYS = ((1, 1, "a"), (4, 7, "b"), (4, 10, "b"), (5, 1, "a"), (10, 3, "a"), (12, 25, "c"), (12, 26, "c"))
# School holidays (start month, day, length in days) for the two school-holiday regions.
SCHOOL_BREAKS = (((3, 27), 14), ((7, 10), 42), ((10, 16), 12), ((12, 21), 12))

TRUE_WEEKDAY = {"weekday_2": -0.06, "weekday_3": -0.09, "weekday_4": -0.08, "weekday_5": -0.02, "weekday_6": -0.18, "weekday_7": 0.0}
TRUE_POOLED = {
    "intercept": 0.0,
    **TRUE_WEEKDAY,
    fx.PROMO_FEATURE: 0.30,
    fx.SCHOOL_HOLIDAY_FEATURE: 0.04,
    fx.PROMO2_ACTIVE_FEATURE: -0.04,
    fx.STATE_HOLIDAY_FEATURE: 0.10,
}
TRUE_POOLED_SCALE = {"intercept": 0.35, fx.PROMO_FEATURE: 0.08, fx.SCHOOL_HOLIDAY_FEATURE: 0.02, fx.PROMO2_ACTIVE_FEATURE: 0.02}
DEFAULT_POOLED_SCALE = 0.03  # weekday effects vary a little by store
TRUE_GLOBAL = {
    "year_sin_1": 0.04,
    "year_cos_1": -0.05,
    "year_sin_2": 0.02,
    "year_cos_2": 0.03,
    "month_sin_1": -0.02,
    "month_cos_1": 0.05,
    fx.CHRISTMAS_RUSH_FEATURE: 0.25,
    fx.BEFORE_CLOSURE_FEATURE: 0.15,
    fx.AFTER_CLOSURE_FEATURE: 0.08,
    fx.COMPETITION_ACTIVE_FEATURE: -0.08,
}
TRUE_STORE_SHIFT = {"store_type_b": 0.5, "assortment_c": 0.1, fx.LOG_COMPETITION_DISTANCE_FEATURE: 0.05}
TRUE_LEVEL_SCALE = 0.03
TRUE_DAY_SCALE = 0.04
TRUE_LOG_DISPERSION_MEAN = np.log(40.0)
TRUE_LOG_DISPERSION_SCALE = 0.3
LOG_OFFSET = np.log(5000.0)


@dataclass(frozen=True)
class DemoTruth:
    """The parameters the demo sales were drawn from, in the model's coordinates."""

    structure: ModelStructure
    pooled_mean: np.ndarray  # [P]
    pooled_scale: np.ndarray  # [P]
    store_shift: np.ndarray  # [Z, P]
    global_coef: np.ndarray  # [G]
    store_coef: np.ndarray  # [S, P] for stores 1..S in order
    store_level: np.ndarray  # [S, T_all] level over history and horizon
    day_effect: np.ndarray  # [T_all] shock shared by all stores
    dispersion: np.ndarray  # [S]
    log_mean: np.ndarray  # [S, T_all] true log mean sales on every day


@dataclass(frozen=True)
class DemoData:
    train: pl.DataFrame  # Kaggle train.csv columns
    stores: pl.DataFrame  # Kaggle store.csv columns
    future: pl.DataFrame  # Kaggle test.csv columns
    future_sales: pl.DataFrame  # Store, Date, Sales, Open: what the horizon really sold
    new_stores: tuple[int, ...]
    gapped_stores: tuple[int, ...]
    truth: DemoTruth

    def write(self, directory: str | Path) -> dict[str, Path]:
        """Write train.csv, store.csv and test.csv (Kaggle names) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {"train": directory / "train.csv", "stores": directory / "store.csv", "future": directory / "test.csv"}
        for key, frame in (("train", self.train), ("stores", self.stores), ("future", self.future)):
            tmp = paths[key].with_suffix(".csv.tmp")
            frame.write_csv(tmp)
            tmp.replace(paths[key])
        return paths


def _stores_table(rng: np.random.Generator, n_stores: int) -> pl.DataFrame:
    store_ids = np.arange(1, n_stores + 1, dtype=np.int32)
    distance = np.round(np.exp(rng.normal(7.5, 1.2, n_stores)), -1)
    has_since = rng.random(n_stores) < 0.6
    promo2 = rng.random(n_stores) < 0.5
    intervals = np.array(n.PROMO_INTERVAL_LEVELS[1:])[rng.integers(0, 3, n_stores)]
    def where(mask: np.ndarray, values: np.ndarray) -> pl.Series:
        return pl.Series([int(v) if m else None for v, m in zip(values, mask, strict=True)], dtype=pl.Int32)

    frame = pl.DataFrame(
        {
            n.STORE: store_ids,
            n.STORE_TYPE: np.array(n.STORE_TYPE_LEVELS)[rng.choice(4, n_stores, p=[0.5, 0.1, 0.15, 0.25])],
            n.ASSORTMENT: np.array(n.ASSORTMENT_LEVELS)[rng.choice(3, n_stores, p=[0.5, 0.1, 0.4])],
            n.COMPETITION_DISTANCE: distance,
            n.COMPETITION_OPEN_SINCE_MONTH: where(has_since, rng.integers(1, 13, n_stores)),
            n.COMPETITION_OPEN_SINCE_YEAR: where(has_since, rng.integers(2015, 2025, n_stores)),
            n.PROMO2: promo2.astype(np.int8),
            n.PROMO2_SINCE_WEEK: where(promo2, rng.integers(1, 53, n_stores)),
            n.PROMO2_SINCE_YEAR: where(promo2, rng.integers(2020, 2024, n_stores)),
            n.PROMO_INTERVAL: np.where(promo2, intervals, ""),
        }
    )
    # One store with no known competitor, as three Rossmann stores have.
    return frame.with_columns(
        pl.when(pl.col(n.STORE) == n_stores).then(None).otherwise(pl.col(n.COMPETITION_DISTANCE)).alias(n.COMPETITION_DISTANCE)
    )


def _calendar(store_ids: np.ndarray, dates: np.ndarray) -> pl.DataFrame:
    """Every (store, day) with Open, Promo, StateHoliday and SchoolHoliday."""
    calendar = pl.DataFrame({n.DATE: dates.astype("datetime64[D]")}).with_columns(
        pl.col(n.DATE).dt.weekday().cast(pl.Int8).alias(n.DAY_OF_WEEK)
    )
    holiday = pl.lit("0")
    for month, day, kind in HOLIDAYS:
        holiday = pl.when((pl.col(n.DATE).dt.month() == month) & (pl.col(n.DATE).dt.day() == day)).then(pl.lit(kind)).otherwise(holiday)
    # Promo runs Monday to Friday every other week, as in Rossmann.
    week = (pl.col(n.DATE).cast(pl.Int32) + 3) // 7
    promo = ((week % 2 == 0) & (pl.col(n.DAY_OF_WEEK) <= 5)).cast(pl.Int8)
    calendar = calendar.with_columns(holiday.alias(n.STATE_HOLIDAY), promo.alias(n.PROMO))
    rows = pl.DataFrame({n.STORE: store_ids}).join(calendar, how="cross")
    region_shift = (pl.col(n.STORE) % 2) * 7  # two regions, breaks a week apart
    doy = pl.col(n.DATE).dt.ordinal_day() - region_shift
    school = pl.lit(False)
    for (month, day), length in SCHOOL_BREAKS:
        start = dt.date(2023, month, day).timetuple().tm_yday
        school = school | doy.is_between(start, start + length - 1)
    open_ = ((pl.col(n.DAY_OF_WEEK) != 7) & (pl.col(n.STATE_HOLIDAY) == "0")).cast(pl.Int8)
    return rows.with_columns(
        (school | (pl.col(n.STATE_HOLIDAY) != "0")).cast(pl.Int8).alias(n.SCHOOL_HOLIDAY),
        open_.alias(n.OPEN),
    ).with_columns((pl.col(n.PROMO) * pl.col(n.OPEN)).alias(n.PROMO))


def _vector(names: tuple[str, ...], values: dict[str, float], default: float = 0.0) -> np.ndarray:
    unknown = set(values) - set(names)
    if unknown:
        raise ValueError(f"true parameters for unknown features: {sorted(unknown)}")
    return np.array([values.get(name, default) for name in names], dtype=np.float64)


def generate_demo(
    seed: int = 0,
    n_stores: int = 40,
    n_history_days: int = 730,
    horizon: int = 48,
    n_new_stores: int = 2,
    new_store_days: int = 7,
    n_gapped_stores: int = 3,
    start: dt.date = DEFAULT_START,
) -> DemoData:
    """Draw a demo data set; the same arguments always give the same data."""
    if n_stores < n_new_stores + n_gapped_stores + 2:
        raise ValueError(f"n_stores={n_stores} is too small for {n_new_stores} new and {n_gapped_stores} gapped stores")
    if n_history_days < 2 * BLOCK_DAYS or horizon < 1 or new_store_days < 1:
        raise ValueError(f"need n_history_days >= {2 * BLOCK_DAYS}, horizon >= 1, new_store_days >= 1")
    rng = np.random.default_rng(seed)
    stores = _stores_table(rng, n_stores)
    store_ids = stores[n.STORE].to_numpy()
    first = np.datetime64(start, "D")
    dates = first + np.arange(n_history_days + horizon)
    anchor = dates[n_history_days - 1]
    calendar = _calendar(store_ids, dates).with_columns(pl.lit(1, dtype=pl.Int32).alias(n.SALES))

    spec = encode.build_spec(stores, yearly_fourier_order=4, monthly_fourier_order=2)
    rows = encode.store_day_features(encode.calendar_rows(calendar.lazy()), stores.lazy()).collect()
    panel = encode.to_panel(rows, encode.store_features(stores.lazy(), spec).collect(), spec, store_ids, dates[0], dates[-1])
    structure = ModelStructure.from_features(spec.features, n_history_days, BLOCK_DAYS, float(LOG_OFFSET))
    n_past = structure.n_past_blocks

    pooled_mean = _vector(structure.pooled_names, TRUE_POOLED)
    pooled_scale = _vector(structure.pooled_names, TRUE_POOLED_SCALE, DEFAULT_POOLED_SCALE)
    global_coef = _vector(structure.global_names, TRUE_GLOBAL)
    store_shift = np.zeros((structure.n_store_features, structure.n_pooled))
    store_shift[:, 0] = _vector(structure.store_feature_names, TRUE_STORE_SHIFT)
    store_coef = pooled_mean + panel.store_z @ store_shift + pooled_scale * rng.normal(size=(n_stores, structure.n_pooled))

    offsets = (dates - anchor).astype(np.int64)
    blocks = time_blocks(offsets, BLOCK_DAYS)
    n_future = int(blocks.max())
    steps = TRUE_LEVEL_SCALE * rng.normal(size=(n_stores, n_past + n_future))
    path = np.concatenate(
        [-np.cumsum(steps[:, :n_past][:, ::-1], axis=1)[:, ::-1], np.zeros((n_stores, 1)), np.cumsum(steps[:, n_past:], axis=1)],
        axis=1,
    )
    level = path[:, blocks + n_past]
    day_effect = TRUE_DAY_SCALE * rng.normal(size=len(dates))

    x_date = panel.date_x
    x_sd = panel.store_day_x
    dp, sp = np.array(structure.date_pooled, int), np.array(structure.store_day_pooled, int)
    dg, sg = np.array(structure.date_global, int), np.array(structure.store_day_global, int)
    log_mean = (
        LOG_OFFSET
        + level
        + day_effect[None, :]
        + store_coef[:, :1]
        + store_coef[:, 1 : 1 + len(dp)] @ x_date[:, dp].T
        + np.einsum("stf,sf->st", x_sd[..., sp], store_coef[:, 1 + len(dp) :])
        + (x_date[:, dg] @ global_coef[: len(dg)])[None, :]
        + x_sd[..., sg] @ global_coef[len(dg) :]
    )
    dispersion = np.exp(TRUE_LOG_DISPERSION_MEAN + TRUE_LOG_DISPERSION_SCALE * rng.normal(size=n_stores))
    mu = np.exp(log_mean)
    sales = rng.poisson(rng.gamma(dispersion[:, None], mu / dispersion[:, None]))
    sales = np.where(panel.open, sales, 0)

    day_index = {d: i for i, d in enumerate(dates.astype("datetime64[D]").astype(dt.date))}
    full = calendar.with_columns(
        pl.Series(n.SALES, sales[(calendar[n.STORE].to_numpy() - 1), [day_index[d] for d in calendar[n.DATE].to_list()]]).cast(pl.Int32),
    ).with_columns((pl.col(n.SALES) * 0.11 + 0.5).cast(pl.Int32).alias(n.CUSTOMERS))

    new_stores = tuple(int(s) for s in store_ids[-n_new_stores - 1 : -1]) if n_new_stores else ()
    gapped = tuple(int(s) for s in store_ids[1 : 1 + n_gapped_stores])
    anchor_date = anchor.astype(dt.date)
    gap_start = anchor_date - dt.timedelta(days=n_history_days // 2)
    history = full.filter(pl.col(n.DATE) <= anchor_date).filter(
        ~(pl.col(n.STORE).is_in(new_stores) & (pl.col(n.DATE) <= anchor_date - dt.timedelta(days=new_store_days)))
        & ~(pl.col(n.STORE).is_in(gapped) & pl.col(n.DATE).is_between(gap_start, gap_start + dt.timedelta(days=59)))
    )
    horizon_rows = full.filter(pl.col(n.DATE) > anchor_date)
    train = history.select(n.TRAIN_COLUMNS).sort([n.DATE, n.STORE], descending=[True, False])
    future = (
        horizon_rows.sort([n.DATE, n.STORE])
        .with_row_index(n.ID, offset=1)
        .with_columns(pl.col(n.ID).cast(pl.Int64))
        .select(n.FUTURE_COLUMNS)
    )
    truth = DemoTruth(
        structure=structure,
        pooled_mean=pooled_mean,
        pooled_scale=pooled_scale,
        store_shift=store_shift,
        global_coef=global_coef,
        store_coef=store_coef,
        store_level=level,
        day_effect=day_effect,
        dispersion=dispersion,
        log_mean=log_mean,
    )
    return DemoData(
        train=train,
        stores=stores,
        future=future,
        future_sales=horizon_rows.select(n.STORE, n.DATE, n.SALES, n.OPEN).sort([n.STORE, n.DATE]),
        new_stores=new_stores,
        gapped_stores=gapped,
        truth=truth,
    )
