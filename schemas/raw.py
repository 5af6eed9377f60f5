"""pandera models of the typed input frames, as ``tasks.data.ingest.cast_typed`` makes them.

One model per FileRole. Validate COLLECTED polars DataFrames with
``lazy=True``: on a LazyFrame pandera checks only names and types, and
without ``lazy`` it stops at the first failure.

The ingest row-number column (``names.ROW``) and the future calendar's
``names.OPEN_WAS_MISSING`` flag are no part of the rules: ``strict = False``
lets them through unchecked, and a failure's frame position maps back to ROW
in ``tasks.data.validate``.

Every check here is a vectorised polars expression: pandera's element-wise
checks run a Python function per value and would cost seconds on a million
rows.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from tasks import names as n
from tasks.names import FileRole

# Competition and Promo2 start years: Rossmann's store.csv holds 1900 (a
# placeholder for "long ago") up to 2015; anything outside this is a typo.
YEAR_MIN = 1900
YEAR_MAX = 2100
MONTH_RANGE = {"min_value": 1, "max_value": 12}
ISO_WEEK_RANGE = {"min_value": 1, "max_value": 53}
ISO_WEEKDAY_RANGE = {"min_value": 1, "max_value": 7}
YEAR_RANGE = {"min_value": YEAR_MIN, "max_value": YEAR_MAX}
FLAG_LEVELS = [0, 1]

# Names of the cross-column checks, as they appear in failure reports. Each is
# also its check method's name: pandera 0.35 takes ``@pa.check(name=...)`` off
# the shared check info the first time a model is built (BaseCheckInfo.to_check
# pops it), so a second model inheriting the check would report the method name.
DAY_OF_WEEK_MATCHES_DATE = "day_of_week_matches_date"
NO_SALES_WHEN_CLOSED = "no_sales_when_closed"

# For cross-column checks a failing value alone says little ("3"); a report
# shows these columns of the failing row instead ("Date=2013-01-01, DayOfWeek=3").
CHECK_CONTEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    DAY_OF_WEEK_MATCHES_DATE: (n.DATE, n.DAY_OF_WEEK),
    NO_SALES_WHEN_CLOSED: (n.OPEN, n.SALES),
}


class _CalendarRows(pa.DataFrameModel):
    """Columns shared by the train file and the future calendar: one row per (Store, Date)."""

    store: pl.Int32 = pa.Field(alias=n.STORE, nullable=False)
    day_of_week: pl.Int8 = pa.Field(alias=n.DAY_OF_WEEK, nullable=False, in_range=ISO_WEEKDAY_RANGE)
    date: pl.Date = pa.Field(alias=n.DATE, nullable=False)
    open: pl.Int8 = pa.Field(alias=n.OPEN, nullable=False, isin=FLAG_LEVELS)
    promo: pl.Int8 = pa.Field(alias=n.PROMO, nullable=False, isin=FLAG_LEVELS)
    state_holiday: pl.String = pa.Field(alias=n.STATE_HOLIDAY, nullable=False, isin=list(n.STATE_HOLIDAY_LEVELS))
    school_holiday: pl.Int8 = pa.Field(alias=n.SCHOOL_HOLIDAY, nullable=False, isin=FLAG_LEVELS)

    @pa.check(n.DAY_OF_WEEK)
    def day_of_week_matches_date(cls, data: pa.PolarsData) -> pl.LazyFrame:
        # ISO weekday, Monday=1: Rossmann's 2013-01-01 (a Tuesday) has DayOfWeek 2.
        # A null on either side is the not-null check's to report, not this one's.
        matches = pl.col(n.DATE).dt.weekday() == pl.col(data.key)
        return data.lazyframe.select(matches.fill_null(True))

    class Config:
        strict = False
        coerce = False


class TrainRows(_CalendarRows):
    """Daily sales history (Kaggle train.csv)."""

    sales: pl.Int32 = pa.Field(alias=n.SALES, nullable=False, ge=0)
    customers: pl.Int32 = pa.Field(alias=n.CUSTOMERS, nullable=True, ge=0)

    @pa.check(n.SALES)
    def no_sales_when_closed(cls, data: pa.PolarsData) -> pl.LazyFrame:
        # Open days with zero sales are legal (54 of them in Rossmann); sales on
        # a closed day are not.
        closed_with_sales = (pl.col(n.OPEN) == 0) & (pl.col(data.key) != 0)
        return data.lazyframe.select(closed_with_sales.not_().fill_null(True))

    class Config:
        name = "train"
        strict = False
        coerce = False


class FutureRows(_CalendarRows):
    """The calendar to forecast (Kaggle test.csv format; Id optional)."""

    id: pl.Int64 = pa.Field(alias=n.ID, nullable=True)

    class Config:
        name = "future"
        strict = False
        coerce = False


class StoreRows(pa.DataFrameModel):
    """Store attributes (Kaggle store.csv), one row per store."""

    store: pl.Int32 = pa.Field(alias=n.STORE, nullable=False)
    store_type: pl.String = pa.Field(alias=n.STORE_TYPE, nullable=False, isin=list(n.STORE_TYPE_LEVELS))
    assortment: pl.String = pa.Field(alias=n.ASSORTMENT, nullable=False, isin=list(n.ASSORTMENT_LEVELS))
    competition_distance: pl.Float64 = pa.Field(alias=n.COMPETITION_DISTANCE, nullable=True, ge=0)
    competition_open_since_month: pl.Int32 = pa.Field(
        alias=n.COMPETITION_OPEN_SINCE_MONTH, nullable=True, in_range=MONTH_RANGE
    )
    competition_open_since_year: pl.Int32 = pa.Field(
        alias=n.COMPETITION_OPEN_SINCE_YEAR, nullable=True, in_range=YEAR_RANGE
    )
    promo2: pl.Int8 = pa.Field(alias=n.PROMO2, nullable=False, isin=FLAG_LEVELS)
    promo2_since_week: pl.Int32 = pa.Field(alias=n.PROMO2_SINCE_WEEK, nullable=True, in_range=ISO_WEEK_RANGE)
    promo2_since_year: pl.Int32 = pa.Field(alias=n.PROMO2_SINCE_YEAR, nullable=True, in_range=YEAR_RANGE)
    # Ingest turns a blank PromoInterval into "", the first level.
    promo_interval: pl.String = pa.Field(alias=n.PROMO_INTERVAL, nullable=False, isin=list(n.PROMO_INTERVAL_LEVELS))

    class Config:
        name = "stores"
        strict = False
        coerce = False


SCHEMAS: dict[FileRole, type[pa.DataFrameModel]] = {
    FileRole.TRAIN: TrainRows,
    FileRole.STORES: StoreRows,
    FileRole.FUTURE: FutureRows,
}


def schema_for(role: FileRole) -> type[pa.DataFrameModel]:
    """The pandera model of the typed frame of ``role``."""
    return SCHEMAS[role]
