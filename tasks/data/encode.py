"""Encode validated rows into compact arrays for the model.

Small LazyFrame -> LazyFrame functions build the features in long format (one
row per store and day); ``to_panel`` scatters them into arrays indexed by
store position and calendar day. Days are aligned by calendar date, so a
store with a gap has unobserved days in the middle of its row rather than a
history shifted in time.

The encoding spec fixes category sets and scaling constants, and is persisted
as JSON: tomorrow's history and a future calendar encode exactly like today's.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandera.polars as pa
import polars as pl

from schemas import encoded as encoded_schemas
from tasks import names as n
from tasks.data import features as fx

log = logging.getLogger(__name__)

# 2: the year-end date features (christmas_rush narrowed to Dec 16-21); a model saved under 1 is refitted, not reread.
SPEC_VERSION = 2
IS_FUTURE = n.IS_FUTURE
STORE_INDEX = "store_index"
DAY_INDEX = "day_index"
OBSERVED = n.OBSERVED


@dataclass(frozen=True)
class EncodingSpec:
    """Everything needed to encode new rows exactly like the training rows."""

    yearly_fourier_order: int = 4
    monthly_fourier_order: int = 2
    log_competition_distance_mean: float = 0.0
    log_competition_distance_std: float = 1.0
    levels: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {
            n.STATE_HOLIDAY: n.STATE_HOLIDAY_LEVELS,
            n.STORE_TYPE: n.STORE_TYPE_LEVELS,
            n.ASSORTMENT: n.ASSORTMENT_LEVELS,
            n.PROMO_INTERVAL: n.PROMO_INTERVAL_LEVELS,
        }
    )
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        if self.yearly_fourier_order < 0 or self.monthly_fourier_order < 0:
            raise ValueError(
                f"Fourier orders must be >= 0, got yearly={self.yearly_fourier_order}, "
                f"monthly={self.monthly_fourier_order}"
            )
        if not self.log_competition_distance_std > 0:
            raise ValueError(f"log_competition_distance_std must be > 0, got {self.log_competition_distance_std}")

    @property
    def features(self) -> tuple[fx.Feature, ...]:
        return fx.registry(self.yearly_fourier_order, self.monthly_fourier_order)

    def feature_names(self, scope: fx.Scope) -> tuple[str, ...]:
        return fx.names_in(self.features, scope)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EncodingSpec:
        raw = json.loads(text)
        if raw.get("version") != SPEC_VERSION:
            raise ValueError(f"encoding spec version {raw.get('version')!r} is not supported (expected {SPEC_VERSION})")
        raw["levels"] = {k: tuple(v) for k, v in raw["levels"].items()}
        return cls(**raw)


def build_spec(stores: pl.DataFrame, yearly_fourier_order: int = 4, monthly_fourier_order: int = 2) -> EncodingSpec:
    """Fit the scaling constants of the store covariates on a stores table."""
    log_distance = stores[n.COMPETITION_DISTANCE].drop_nulls().log1p()
    mean = float(log_distance.mean()) if len(log_distance) else 0.0
    std = float(log_distance.std()) if len(log_distance) > 1 else 1.0
    return EncodingSpec(
        yearly_fourier_order=yearly_fourier_order,
        monthly_fourier_order=monthly_fourier_order,
        log_competition_distance_mean=mean,
        log_competition_distance_std=std if std > 0 else 1.0,
    )


def check_categories(frame: pl.DataFrame, spec: EncodingSpec, source: str) -> None:
    """Raise a ValueError naming every value outside the spec's fixed category sets."""
    problems = []
    for column, levels in spec.levels.items():
        if column not in frame.columns:
            continue
        unknown = frame.filter(~pl.col(column).is_in(list(levels)))[column]
        if len(unknown):
            values = sorted({str(v) for v in unknown.unique().to_list()})[:5]
            problems.append(f"{column}: {len(unknown)} rows with unknown values {values}; known: {list(levels)}")
    if problems:
        raise ValueError(f"{source}: unknown categories (the encoding spec fixes them):\n  " + "\n  ".join(problems))


# --- long-format features -------------------------------------------------


def calendar_rows(history: pl.LazyFrame | None, future: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """History and future calendar rows in one frame, Sales null on future rows."""
    columns = [n.STORE, n.DATE, n.OPEN, n.PROMO, n.STATE_HOLIDAY, n.SCHOOL_HOLIDAY]
    parts = []
    if history is not None:
        parts.append(history.select(*columns, pl.col(n.SALES), pl.lit(False).alias(IS_FUTURE)))
    if future is not None:
        parts.append(future.select(*columns, pl.lit(None, dtype=pl.Int32).alias(n.SALES), pl.lit(True).alias(IS_FUTURE)))
    if not parts:
        raise ValueError("calendar_rows needs history rows, future rows or both")
    return pl.concat(parts, how="vertical_relaxed")


def _closure_neighbours(rows: pl.LazyFrame) -> pl.LazyFrame:
    """Flags for the days just before and after a closure that is not the weekly Sunday.

    Neighbours are found by calendar date (a join), never by row position, so
    a day missing from the data is simply unknown (no flag).
    """
    neighbours = rows.select(n.STORE, n.DATE, n.OPEN)

    def open_on(shift_days: int, alias: str) -> pl.LazyFrame:
        return neighbours.select(n.STORE, (pl.col(n.DATE) - dt.timedelta(days=shift_days)).alias(n.DATE), pl.col(n.OPEN).alias(alias))

    for shift_days, alias in ((-2, "_open_m2"), (-1, "_open_m1"), (1, "_open_p1"), (2, "_open_p2")):
        rows = rows.join(open_on(shift_days, alias), on=[n.STORE, n.DATE], how="left")
    weekday = pl.col(n.DATE).dt.weekday()
    closed = {alias: (pl.col(alias) == 0) for alias in ("_open_m2", "_open_m1", "_open_p1", "_open_p2")}
    is_open = {alias: (pl.col(alias) == 1) for alias in ("_open_m1", "_open_p1")}
    return rows.with_columns(
        (closed["_open_p1"] & (weekday != 6)).fill_null(False).alias(fx.BEFORE_CLOSURE_FEATURE),
        (closed["_open_m1"] & (weekday != 1)).fill_null(False).alias(fx.AFTER_CLOSURE_FEATURE),
        (closed["_open_p2"] & is_open["_open_p1"] & (weekday != 5)).fill_null(False).alias(fx.TWO_BEFORE_CLOSURE_FEATURE),
        (closed["_open_m2"] & is_open["_open_m1"] & (weekday != 2)).fill_null(False).alias(fx.TWO_AFTER_CLOSURE_FEATURE),
    ).drop("_open_m2", "_open_m1", "_open_p1", "_open_p2")


def _promo2_active(month_abbrev: pl.Expr) -> pl.Expr:
    promo2_start = pl.date(pl.col(n.PROMO2_SINCE_YEAR), 1, 1) + pl.duration(weeks=pl.col(n.PROMO2_SINCE_WEEK) - 1)
    started = pl.col(n.PROMO2_SINCE_YEAR).is_null() | (pl.col(n.DATE) >= promo2_start)
    in_interval = pl.col(n.PROMO_INTERVAL).str.split(",").list.contains(month_abbrev)
    return ((pl.col(n.PROMO2) == 1) & started & in_interval).fill_null(False)


def _competition_active() -> pl.Expr:
    since = pl.date(pl.col(n.COMPETITION_OPEN_SINCE_YEAR), pl.col(n.COMPETITION_OPEN_SINCE_MONTH), 1)
    has_competitor = pl.col(n.COMPETITION_DISTANCE).is_not_null()
    return (has_competitor & (since.is_null() | (pl.col(n.DATE) >= since))).fill_null(False)


def store_day_features(rows: pl.LazyFrame, stores: pl.LazyFrame) -> pl.LazyFrame:
    """Per (store, day) features, plus Sales and the observed mask.

    A day is observed when the store was open and sold something: closed days
    and days missing from the data are unobserved, never zeros. Open days with
    zero sales (54 rows in Rossmann) are treated as data errors, as Kaggle's
    scoring did, and left unobserved.
    """
    month_abbrev = pl.col(n.DATE).dt.month().replace_strict(
        list(range(1, 13)), list(n.PROMO_INTERVAL_MONTHS), return_dtype=pl.String
    )
    holiday = [(pl.col(n.STATE_HOLIDAY) != n.STATE_HOLIDAY_LEVELS[0]).alias(fx.STATE_HOLIDAY_FEATURE)] + [
        (pl.col(n.STATE_HOLIDAY) == level).alias(name)
        for level, name in zip(n.STATE_HOLIDAY_LEVELS[2:], fx.HOLIDAY_TYPE_FEATURES, strict=True)
    ]
    store_columns = [
        n.STORE,
        n.COMPETITION_DISTANCE,
        n.COMPETITION_OPEN_SINCE_MONTH,
        n.COMPETITION_OPEN_SINCE_YEAR,
        n.PROMO2,
        n.PROMO2_SINCE_WEEK,
        n.PROMO2_SINCE_YEAR,
        n.PROMO_INTERVAL,
    ]
    return (
        _closure_neighbours(rows)
        .join(stores.select(store_columns), on=n.STORE, how="left")
        .with_columns(
            (pl.col(n.PROMO) == 1).alias(fx.PROMO_FEATURE),
            (pl.col(n.SCHOOL_HOLIDAY) == 1).alias(fx.SCHOOL_HOLIDAY_FEATURE),
            _promo2_active(month_abbrev).alias(fx.PROMO2_ACTIVE_FEATURE),
            *holiday,
            *[
                ((pl.col(n.PROMO) == 1) & (pl.col(n.DATE).dt.weekday() == d)).alias(name)
                for d, name in zip(range(2, 6), fx.PROMO_WEEKDAY_FEATURES, strict=True)
            ],
            _competition_active().alias(fx.COMPETITION_ACTIVE_FEATURE),
            ((pl.col(n.OPEN) == 1) & (pl.col(n.SALES) > 0)).fill_null(False).alias(OBSERVED),
        )
        .select(
            n.STORE,
            n.DATE,
            IS_FUTURE,
            n.OPEN,
            n.SALES,
            OBSERVED,
            *fx.STORE_DAY_FEATURES,
        )
    )


def date_features(dates: pl.LazyFrame, spec: EncodingSpec) -> pl.LazyFrame:
    """Features of the calendar day alone: weekday contrasts, seasonality, the days of the year's end."""
    date = pl.col(n.DATE)
    weekday = [(date.dt.weekday() == d).alias(name) for d, name in zip(range(2, 8), fx.WEEKDAY_FEATURES, strict=True)]
    # Angles from days since the epoch, so that every year has the same phase.
    days = date.cast(pl.Int32).cast(pl.Float64)
    yearly = []
    for k in range(1, spec.yearly_fourier_order + 1):
        angle = 2 * math.pi * k * days / 365.25
        yearly += [angle.sin().alias(f"year_sin_{k}"), angle.cos().alias(f"year_cos_{k}")]
    position = (date.dt.day() - 1).cast(pl.Float64) / date.dt.month_end().dt.day().cast(pl.Float64)
    monthly = []
    for k in range(1, spec.monthly_fourier_order + 1):
        angle = 2 * math.pi * k * position
        monthly += [angle.sin().alias(f"month_sin_{k}"), angle.cos().alias(f"month_cos_{k}")]
    december = date.dt.month() == 12
    year_end = [(december & date.dt.day().is_between(*days)).alias(name) for name, days in fx.YEAR_END_FEATURES.items()]
    return dates.select(date, *weekday, *yearly, *monthly, *year_end)


def store_features(stores: pl.LazyFrame, spec: EncodingSpec) -> pl.LazyFrame:
    """Store attributes as contrasts and a standardised log competition distance."""
    contrasts = [
        (pl.col(n.STORE_TYPE) == level).alias(name)
        for level, name in zip(n.STORE_TYPE_LEVELS[1:], fx.STORE_TYPE_FEATURES, strict=True)
    ] + [
        (pl.col(n.ASSORTMENT) == level).alias(name)
        for level, name in zip(n.ASSORTMENT_LEVELS[1:], fx.ASSORTMENT_FEATURES, strict=True)
    ]
    distance = pl.col(n.COMPETITION_DISTANCE)
    # A missing distance is coded explicitly: an average distance plus a flag.
    standardised = (distance.log1p() - spec.log_competition_distance_mean) / spec.log_competition_distance_std
    return stores.select(
        n.STORE,
        *contrasts,
        standardised.fill_null(0.0).alias(fx.LOG_COMPETITION_DISTANCE_FEATURE),
        distance.is_null().alias(fx.COMPETITION_DISTANCE_MISSING_FEATURE),
        (pl.col(n.PROMO2) == 1).alias(fx.PROMO2_PARTICIPANT_FEATURE),
    )


# --- arrays ---------------------------------------------------------------


def days_before(a: np.ndarray, n_days: int, axis: int = 0) -> np.ndarray:
    """``a`` with zero days prepended on its day ``axis`` up to ``n_days`` days."""
    widths = [(0, 0)] * a.ndim
    widths[axis] = (n_days - a.shape[axis], 0)
    return np.pad(a, widths)


@dataclass(frozen=True)
class EncodedPanel:
    """Compact arrays for the model, indexed [store position, calendar day].

    ``stores[i]`` is the Store id at position i; ``dates[t]`` the calendar day
    t. Unobserved cells (closed, missing, or in the future) have sales 0 and
    ``observed`` False; ``present`` marks cells that have a row at all.
    """

    stores: np.ndarray  # int32 [S]
    dates: np.ndarray  # datetime64[D] [T]
    date_x: np.ndarray  # float32 [T, F_date]
    store_day_x: np.ndarray  # float32 [S, T, F_store_day]
    store_z: np.ndarray  # float32 [S, F_store]
    sales: np.ndarray  # float32 [S, T]
    observed: np.ndarray  # bool [S, T]
    present: np.ndarray  # bool [S, T]
    open: np.ndarray  # bool [S, T]

    @property
    def n_stores(self) -> int:
        return len(self.stores)

    @property
    def n_days(self) -> int:
        return len(self.dates)

    def store_positions(self, store_ids: np.ndarray) -> np.ndarray:
        """Positions of the given Store ids; ValueError naming any that are absent."""
        lookup = {int(s): i for i, s in enumerate(self.stores)}
        missing = [int(s) for s in store_ids if int(s) not in lookup]
        if missing:
            raise ValueError(f"stores not in this panel: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        return np.array([lookup[int(s)] for s in store_ids], dtype=np.int32)

    def padded_to(self, n_days: int) -> EncodedPanel:
        """The panel with days before its first prepended up to ``n_days`` days: no store has a row on them
        (unobserved, absent, closed, features 0), so that they add nothing to a fit's likelihood."""
        extra = n_days - self.n_days
        if extra < 0:
            raise ValueError(f"cannot pad a panel of {self.n_days} days to {n_days}")
        if extra == 0:
            return self
        return EncodedPanel(
            stores=self.stores,
            dates=np.concatenate([self.dates[0] - np.arange(extra, 0, -1), self.dates]),
            date_x=days_before(self.date_x, n_days, 0),
            store_day_x=days_before(self.store_day_x, n_days, 1),
            store_z=self.store_z,
            sales=days_before(self.sales, n_days, 1),
            observed=days_before(self.observed, n_days, 1),
            present=days_before(self.present, n_days, 1),
            open=days_before(self.open, n_days, 1),
        )

    def select_stores(self, positions: np.ndarray) -> EncodedPanel:
        return EncodedPanel(
            stores=self.stores[positions],
            dates=self.dates,
            date_x=self.date_x,
            store_day_x=self.store_day_x[positions],
            store_z=self.store_z[positions],
            sales=self.sales[positions],
            observed=self.observed[positions],
            present=self.present[positions],
            open=self.open[positions],
        )


def _bool_block(frame: pl.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    if not columns:
        return np.zeros((frame.height, 0), dtype=np.float32)
    return frame.select(pl.col(c).cast(pl.Float32) for c in columns).to_numpy().astype(np.float32, copy=False)


def to_panel(
    rows: pl.DataFrame,
    store_table: pl.DataFrame,
    spec: EncodingSpec,
    store_ids: np.ndarray,
    first_date: dt.date,
    last_date: dt.date,
) -> EncodedPanel:
    """Scatter long-format store-day rows into [store, day] arrays.

    ``rows`` comes from ``store_day_features``; rows outside the store set or
    the date range are ignored. ``store_table`` comes from ``store_features``.
    """
    if last_date < first_date:
        raise ValueError(f"last_date {last_date} is before first_date {first_date}")
    store_ids = np.asarray(store_ids, dtype=np.int32)
    dates = np.arange(np.datetime64(first_date, "D"), np.datetime64(last_date, "D") + 1)
    n_stores, n_days = len(store_ids), len(dates)
    sd_names = spec.feature_names(fx.Scope.STORE_DAY)

    position = pl.DataFrame({n.STORE: store_ids, STORE_INDEX: np.arange(n_stores, dtype=np.int32)})
    cells = (
        rows.lazy()
        .filter(pl.col(n.DATE).is_between(first_date, last_date))
        .join(position.lazy(), on=n.STORE, how="inner")
        .with_columns((pl.col(n.DATE) - pl.lit(first_date)).dt.total_days().cast(pl.Int32).alias(DAY_INDEX))
        .collect()
    )
    s_idx = cells[STORE_INDEX].to_numpy()
    t_idx = cells[DAY_INDEX].to_numpy()

    store_day_x = np.zeros((n_stores, n_days, len(sd_names)), dtype=np.float32)
    store_day_x[s_idx, t_idx] = _bool_block(cells, sd_names)
    sales = np.zeros((n_stores, n_days), dtype=np.float32)
    observed = np.zeros((n_stores, n_days), dtype=bool)
    present = np.zeros((n_stores, n_days), dtype=bool)
    is_open = np.zeros((n_stores, n_days), dtype=bool)
    obs = cells[OBSERVED].to_numpy()
    observed[s_idx, t_idx] = obs
    sales[s_idx[obs], t_idx[obs]] = cells[n.SALES].to_numpy()[obs]
    present[s_idx, t_idx] = True
    is_open[s_idx, t_idx] = cells[n.OPEN].to_numpy() == 1

    date_frame = date_features(pl.LazyFrame({n.DATE: dates.astype("datetime64[D]")}), spec).collect()
    _check_encoded(encoded_schemas.date_features_schema(spec.feature_names(fx.Scope.DATE)), date_frame)
    date_x = _bool_block(date_frame, spec.feature_names(fx.Scope.DATE))

    z_names = spec.feature_names(fx.Scope.STORE)
    store_frame = position.join(store_table, on=n.STORE, how="left").sort(STORE_INDEX)
    if store_frame[z_names[0]].null_count():
        absent = store_frame.filter(pl.col(z_names[0]).is_null())[n.STORE].to_list()
        raise ValueError(f"stores without attributes in the stores table: {absent[:10]}")
    store_z = _bool_block(store_frame, z_names)

    return EncodedPanel(
        stores=store_ids,
        dates=dates,
        date_x=date_x,
        store_day_x=store_day_x,
        store_z=store_z,
        sales=sales,
        observed=observed,
        present=present,
        open=is_open,
    )


@dataclass(frozen=True)
class EncodedData:
    """The history panel, the future panel (if a calendar was given) and the spec."""

    spec: EncodingSpec
    history: EncodedPanel
    future: EncodedPanel | None


def _check_encoded(schema: pa.DataFrameSchema, frame: pl.DataFrame) -> None:
    """Validate an encoded frame; a failure is a bug in the encoding, reported in full."""
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases.select("column", "check", "failure_case").unique().head(20)
        raise ValueError(f"{schema.name} break their schema (a bug in the encoding):\n{cases}") from err


def encode(
    train: pl.DataFrame,
    stores: pl.DataFrame,
    future: pl.DataFrame | None = None,
    spec: EncodingSpec | None = None,
    history_end: dt.date | None = None,
) -> EncodedData:
    """Encode validated typed frames into history (and future) panels.

    The history panel covers every store with at least one train row, from the
    first to the last train date. The future panel covers the calendar's
    stores and dates. Pass the persisted ``spec`` of a fitted model to encode
    exactly as it was trained. ``history_end`` ends the history panel on that
    day instead of the last train date: later rows are left out, missing days
    up to it are unobserved (a local fit against a model anchored there).
    """
    spec = spec or build_spec(stores)
    check_categories(train, spec, "train")
    check_categories(stores, spec, "stores")
    if future is not None:
        check_categories(future, spec, "future")
    rows = store_day_features(
        calendar_rows(train.lazy(), None if future is None else future.lazy()), stores.lazy()
    ).collect()
    store_table = store_features(stores.lazy(), spec).collect()
    _check_encoded(encoded_schemas.store_day_rows_schema(spec.feature_names(fx.Scope.STORE_DAY)), rows)
    _check_encoded(encoded_schemas.store_features_schema(), store_table)

    history_rows = rows.filter(~pl.col(IS_FUTURE))
    n_open_zero = history_rows.filter((pl.col(n.OPEN) == 1) & (pl.col(n.SALES) == 0)).height
    if n_open_zero:
        log.info("%d open days with zero sales are left unobserved (treated as data errors)", n_open_zero)
    history_stores = np.sort(history_rows[n.STORE].unique().to_numpy())
    history = to_panel(
        history_rows, store_table, spec, history_stores, history_rows[n.DATE].min(), history_end or history_rows[n.DATE].max()
    )
    future_panel = None
    if future is not None and future.height:
        future_panel = _future_panel(rows.filter(pl.col(IS_FUTURE)), store_table, spec)
    return EncodedData(spec=spec, history=history, future=future_panel)


def _future_panel(future_rows: pl.DataFrame, store_table: pl.DataFrame, spec: EncodingSpec) -> EncodedPanel:
    future_stores = np.sort(future_rows[n.STORE].unique().to_numpy())
    return to_panel(future_rows, store_table, spec, future_stores, future_rows[n.DATE].min(), future_rows[n.DATE].max())


def encode_future(stores: pl.DataFrame, future: pl.DataFrame, spec: EncodingSpec) -> EncodedPanel:
    """Encode a future calendar without its history (a fitted model forecasting a new calendar).

    Without history, the days just after a closure that began before the
    calendar are not flagged as such; everything else encodes as in ``encode``.
    """
    if not future.height:
        raise ValueError("the future calendar has no rows")
    check_categories(stores, spec, "stores")
    check_categories(future, spec, "future")
    rows = store_day_features(calendar_rows(None, future.lazy()), stores.lazy()).collect()
    store_table = store_features(stores.lazy(), spec).collect()
    _check_encoded(encoded_schemas.store_day_rows_schema(spec.feature_names(fx.Scope.STORE_DAY)), rows)
    _check_encoded(encoded_schemas.store_features_schema(), store_table)
    return _future_panel(rows, store_table, spec)
