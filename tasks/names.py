"""The one place for column names, category sets and file roles.

Every other module refers to these constants; no module spells a column name
or a category level on its own.
"""

from __future__ import annotations

from enum import Enum


class FileRole(str, Enum):
    """The three input files of a run, named as they appear in reports."""

    TRAIN = "train"
    STORES = "stores"
    FUTURE = "future"
    # The generic contract's files (tasks.data.spec): the sales table, the product table, the calendar,
    # and the spec itself.
    SALES = "sales"
    PRODUCTS = "products"
    CALENDAR = "calendar"
    SPEC = "spec"
    # bhm replenish: the stock and ordering rules per series, and the orders already placed.
    INVENTORY = "inventory"
    OPEN_ORDERS = "open_orders"


# Raw input columns (Kaggle Rossmann format).
STORE = "Store"
DAY_OF_WEEK = "DayOfWeek"
DATE = "Date"
SALES = "Sales"
CUSTOMERS = "Customers"
OPEN = "Open"
PROMO = "Promo"
STATE_HOLIDAY = "StateHoliday"
SCHOOL_HOLIDAY = "SchoolHoliday"
ID = "Id"

STORE_TYPE = "StoreType"
ASSORTMENT = "Assortment"
COMPETITION_DISTANCE = "CompetitionDistance"
COMPETITION_OPEN_SINCE_MONTH = "CompetitionOpenSinceMonth"
COMPETITION_OPEN_SINCE_YEAR = "CompetitionOpenSinceYear"
PROMO2 = "Promo2"
PROMO2_SINCE_WEEK = "Promo2SinceWeek"
PROMO2_SINCE_YEAR = "Promo2SinceYear"
PROMO_INTERVAL = "PromoInterval"

# Column added at ingest: the 1-based data row of the source file (header not
# counted), so that a validation report can point a person at the line.
ROW = "row"
# Set at ingest on future calendars whose Open was blank: treated as open.
OPEN_WAS_MISSING = "open_was_missing"
# Encoded store-day rows: which rows belong to the future calendar, and which
# days enter the likelihood (open and sold something).
IS_FUTURE = "is_future"
OBSERVED = "observed"

TRAIN_COLUMNS = (STORE, DAY_OF_WEEK, DATE, SALES, CUSTOMERS, OPEN, PROMO, STATE_HOLIDAY, SCHOOL_HOLIDAY)
FUTURE_COLUMNS = (ID, STORE, DAY_OF_WEEK, DATE, OPEN, PROMO, STATE_HOLIDAY, SCHOOL_HOLIDAY)
STORE_COLUMNS = (
    STORE,
    STORE_TYPE,
    ASSORTMENT,
    COMPETITION_DISTANCE,
    COMPETITION_OPEN_SINCE_MONTH,
    COMPETITION_OPEN_SINCE_YEAR,
    PROMO2,
    PROMO2_SINCE_WEEK,
    PROMO2_SINCE_YEAR,
    PROMO_INTERVAL,
)

# Canonical columns of the generic contract's validated tables (tasks.data.panel_ingest): whatever
# the input calls its keys, period and target, the pipeline sees these names; the forecast file
# gets the input's own names back.
SERIES_STORE = "store"
SERIES_PRODUCT = "product"
PERIOD = "period"
TARGET = "target"
# Set when the spec marks stock-outs: True where the period stocked out (its flag is 1, or its stock on hand
# is 0), so that its target is a lower bound of demand.
CENSORED = "censored"
# The rows of the forecast file that hold an aggregate: its level ("series" for a series' own row,
# a level named in the spec's aggregates otherwise) and the group's value at that level.
LEVEL = "level"
GROUP = "group"
SERIES_LEVEL = "series"

# Fixed category sets. The first level of each is the reference level of its
# contrasts; the encoding spec persists them so tomorrow's run encodes alike.
STATE_HOLIDAY_LEVELS = ("0", "a", "b", "c")
STORE_TYPE_LEVELS = ("a", "b", "c", "d")
ASSORTMENT_LEVELS = ("a", "b", "c")
PROMO_INTERVAL_LEVELS = ("", "Jan,Apr,Jul,Oct", "Feb,May,Aug,Nov", "Mar,Jun,Sept,Dec")
# Month abbreviations exactly as PromoInterval spells them (note "Sept").
PROMO_INTERVAL_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sept", "Oct", "Nov", "Dec")

# Forecast file contract (DESIGN.md): other tools read these names.
MEAN = "mean"
QUANTILE_COLUMNS = {0.05: "q05", 0.25: "q25", 0.5: "q50", 0.75: "q75", 0.95: "q95"}
MODEL_VERSION = "model_version"
WAS_OPEN = "open"


def quantile_column(q: float) -> str:
    """Column name of quantile ``q`` in the forecast file (0.05 -> "q05", 0.025 -> "q025")."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must lie strictly between 0 and 1, got {q!r}")
    if q in QUANTILE_COLUMNS:
        return QUANTILE_COLUMNS[q]
    digits = f"{q:.6f}".split(".")[1].rstrip("0")
    return "q" + (digits if len(digits) > 1 else digits + "0")


# The orders file of ``bhm replenish`` (README: "Orders file"): one row per series and order day, keyed by
# the input's own key columns.
ORDER_PERIOD = "order_period"
ARRIVAL_PERIOD = "arrival_period"
PLACE_NOW = "place_now"
PACKS = "packs"
PACK_SIZE = "pack_size"
ORDER_QUANTITY = "order_quantity"
INVENTORY_POSITION = "inventory_position"
EXPECTED_DEMAND = "expected_demand"
EXPECTED_COST = "expected_cost"
FILL_RATE = "fill_rate"
STOCKOUT_PROBABILITY = "stockout_probability"
CYCLE_SERVICE = "cycle_service"
EXPECTED_LEFTOVER = "expected_leftover"
CRITICAL_RATIO = "critical_ratio"
