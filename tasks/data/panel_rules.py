"""The rules of the generic panel contract, each a vectorised check that yields ``RuleFailure``s.

The spec decides which column of which file gets which rule (the ``*_plans`` functions); this
module also knows how to cast a column of a given kind, how to tell a value that did not parse
from a blank, and how to check keys, grids, hierarchies and calendars across rows and files.
``tasks.data.panel_ingest`` reads the files, runs the rules and builds the canonical frames.
Every check runs on frames that still carry the input's own column names, so that a failure names
the column a person has to fix.

Per-column rules (types, blanks, value ranges) go through pandera, with the same mapping of
failure cases to data rows as the Rossmann path (``tasks.data.validate``); rules across rows and
files are polars joins and group-bys.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

import pandera.polars as pa
import polars as pl

from tasks import names as n
from tasks.data import ingest
from tasks.data.spec import PRODUCT_PLACEHOLDER, PRODUCT_SIDE, STORE_SIDE, Covariate, DimensionTable, PanelSpec, SpecError
from tasks.data.validate import (
    MAX_EXAMPLES,
    PANDERA_NOT_NULLABLE,
    RULE_COLUMN_PRESENT,
    InputValidationError,
    RuleFailure,
    ValidationReport,
    _describe_rows,
    _failure_from_rows,
    _pandera_failures,
)
from tasks.names import FileRole

# --------------------------------------------------------------------------
# rule texts: each defined here once, as a report and a test spell it

RULE_NOT_BLANK = PANDERA_NOT_NULLABLE
RULE_PATTERN_COLUMN_PRESENT = "per-product column present for every product of the data"
RULE_PARSE_DATE = f"parses as a date ({ingest.DATE_FORMAT})"
RULE_PARSE_INT = "parses as an integer"
RULE_PARSE_NUMBER = "parses as a finite number"
RULE_PARSE_FLAG = "parses as a flag (0/1 or true/false)"
RULE_PRICE_POSITIVE = "price > 0"
RULE_WHOLE_UNITS = "units are whole numbers"
RULE_TARGET_NOT_NEGATIVE = "target >= 0 (negative_target: reject)"
RULE_STOCK_NOT_NEGATIVE = "stock on hand >= 0"
RULE_LOG_DOMAIN = "value > 0 (log transform)"
RULE_LOG1P_DOMAIN = "value > -1 (log1p transform)"
RULE_UNIQUE_SERIES_PERIOD = "one row per series and period"
RULE_UNIQUE_KEY = "one row per key"
RULE_UNIQUE_CALENDAR = "one calendar row per period (and by)"
RULE_WEEKDAY = "weekly periods on the weekday of the first sales period"
RULE_FUTURE_AFTER_HISTORY = "future period after the last sales period"
RULE_STORE_LISTED = "store listed in the stores table"
RULE_PRODUCT_LISTED = "product listed in the products table"
RULE_HIERARCHY = "each hierarchy group in one coarser group"
RULE_HIERARCHY_AGREES = "hierarchy column agrees with the dimension table"
RULE_CALENDAR_COVERS = "period listed in the calendar"

WEEKDAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_TRUE_TEXT = ("1", "true")
_FALSE_TEXT = ("0", "false")
_BAD = "_bad_"
_EXAMPLE = "_example"
_PARENTS = "_parents"
_LAST = "_last_period"
_EXPECTED = "_expected"


class Kind(str, Enum):
    """How a column is parsed: the kind decides its dtype and its parse rule."""

    INT_KEY = "int key"
    STR_KEY = "str key"
    DATE = "date"
    NUMBER = "number"
    FLAG = "flag"
    TEXT = "text"


DTYPES: dict[Kind, pl.DataType] = {
    Kind.INT_KEY: pl.Int64(),
    Kind.STR_KEY: pl.String(),
    Kind.DATE: pl.Date(),
    Kind.NUMBER: pl.Float64(),
    Kind.FLAG: pl.Float64(),
    Kind.TEXT: pl.String(),
}
PARSE_RULES = {Kind.INT_KEY: RULE_PARSE_INT, Kind.DATE: RULE_PARSE_DATE, Kind.NUMBER: RULE_PARSE_NUMBER,
               Kind.FLAG: RULE_PARSE_FLAG}


@dataclass(frozen=True)
class ColumnPlan:
    """One input column: how to parse it, whether a blank is allowed or filled, and its value checks."""

    column: str
    kind: Kind
    nullable: bool = False
    fill: float | None = None
    checks: tuple[pa.Check, ...] = ()


@dataclass
class FileCheck:
    """One file's typed frame (input column names, plus ROW) and the failures found in it so far."""

    role: FileRole
    path: str
    frame: pl.DataFrame | None = None
    failures: list[RuleFailure] = field(default_factory=list)


class SpecColumnsError(InputValidationError, SpecError):
    """The files lack columns the spec names: the spec does not fit the data (either may be wrong).

    A SpecError, as the brief of a spec mismatch is, and an InputValidationError, so that the
    report names every missing column of every file at once, like the Rossmann path."""

    def __init__(self, spec_name: str, report: ValidationReport) -> None:
        super().__init__(report)
        self.args = (f"spec {spec_name!r} does not fit its files:\n{report.to_text()}",)


# --------------------------------------------------------------------------
# value checks, named by their rule text (pandera reports the name)


def value_check(rule: str, ok: pl.Expr) -> pa.Check:
    """A vectorised pandera check; a null passes (blanks are the not-null rule's to report)."""
    return pa.Check(lambda data: data.lazyframe.select(ok.fill_null(True)), name=rule)


def positive_price(column: str) -> pa.Check:
    return value_check(RULE_PRICE_POSITIVE, pl.col(column) > 0)


def whole_units(column: str) -> pa.Check:
    # a negative target is the negative-target rule's (reject) or masked (mask)
    return value_check(RULE_WHOLE_UNITS, (pl.col(column) == pl.col(column).floor()) | (pl.col(column) < 0))


def not_negative_target(column: str) -> pa.Check:
    return value_check(RULE_TARGET_NOT_NEGATIVE, pl.col(column) >= 0)


def not_negative_stock(column: str) -> pa.Check:
    return value_check(RULE_STOCK_NOT_NEGATIVE, pl.col(column) >= 0)


def transform_domain(column: str, transform: str) -> tuple[pa.Check, ...]:
    """The encoder takes log / log1p of the attribute: reject values where that is undefined now."""
    if transform == "log":
        return (value_check(RULE_LOG_DOMAIN, pl.col(column) > 0),)
    if transform == "log1p":
        return (value_check(RULE_LOG1P_DOMAIN, pl.col(column) > -1),)
    return ()


# --------------------------------------------------------------------------
# plans: which column of which file gets which rule


def key_kind(spec: PanelSpec) -> Kind:
    return Kind.INT_KEY if spec.key_type == "int" else Kind.STR_KEY


def pattern_column(covariate: Covariate, product: object) -> str:
    """The column a per-product covariate takes for one product: price{product} -> price7."""
    return covariate.column.replace(PRODUCT_PLACEHOLDER, str(product))


def pattern_columns(spec: PanelSpec, products: Sequence[object]) -> dict[str, tuple[object, Covariate]]:
    """Every pattern column the data's products use -> (its product, its covariate)."""
    return {
        pattern_column(c, p): (p, c) for c in spec.sales.covariates if c.per_product for p in products
    }


def _covariate_plans(covariates: Sequence[Covariate], products: Sequence[object]) -> list[ColumnPlan]:
    plans = []
    for covariate in covariates:
        kind = Kind.FLAG if covariate.kind == "flag" else Kind.NUMBER
        columns = [pattern_column(covariate, p) for p in products] if covariate.per_product else [covariate.column]
        for column in columns:
            checks = (positive_price(column),) if covariate.kind == "price" else ()
            plans.append(ColumnPlan(column, kind, fill=covariate.fill, checks=checks))
    return plans


def _target_checks(spec: PanelSpec) -> tuple:
    column = spec.sales.target
    checks = (whole_units(column),) if spec.target_kind == "units" else ()
    return checks + ((not_negative_target(column),) if spec.negative_target == "reject" else ())


def series_plans(spec: PanelSpec, products: Sequence[object], present: Sequence[str], with_target: bool) -> list[ColumnPlan]:
    """Sales (future) columns: keys, period, target (sales only), covariates, and any hierarchy column
    the file happens to carry (optional: checked against its dimension table, not output)."""
    plans = [ColumnPlan(key, key_kind(spec)) for key in spec.key_columns]
    plans.append(ColumnPlan(spec.sales.period, Kind.DATE))
    if with_target:
        plans.append(ColumnPlan(spec.sales.target, Kind.NUMBER, checks=_target_checks(spec)))
        plans += stock_plans(spec)
    plans += _covariate_plans(spec.sales.covariates, products)
    levels = [*spec.hierarchy_levels(STORE_SIDE), *spec.hierarchy_levels(PRODUCT_SIDE)]
    return plans + [ColumnPlan(level, Kind.TEXT, nullable=True) for level in levels if level in present]


def stock_plans(spec: PanelSpec) -> list[ColumnPlan]:
    """The sales table's stock-out columns (the future table needs neither): a flag (0/1, true/false) and
    the stock on hand at the end of the period (>= 0); a blank in either is an error, since it would
    leave open whether the period's sales are demand or a lower bound of it."""
    plans = []
    if spec.sales.stockout is not None:
        plans.append(ColumnPlan(spec.sales.stockout, Kind.FLAG))
    if spec.sales.stock_on_hand is not None:
        plans.append(ColumnPlan(spec.sales.stock_on_hand, Kind.NUMBER, checks=(not_negative_stock(spec.sales.stock_on_hand),)))
    return plans


def table_plans(table: DimensionTable, kind: Kind) -> list[ColumnPlan]:
    plans = [ColumnPlan(table.key, kind)] + [ColumnPlan(level, Kind.TEXT) for level in table.hierarchy]
    if table.label is not None and table.label not in table.hierarchy:
        plans.append(ColumnPlan(table.label, Kind.TEXT, nullable=True))
    for attribute in table.attributes:
        if attribute.kind == "category":
            plans.append(ColumnPlan(attribute.column, Kind.TEXT))
        else:
            checks = transform_domain(attribute.column, attribute.transform)
            plans.append(ColumnPlan(attribute.column, Kind.NUMBER, fill=attribute.fill, checks=checks))
    return plans


def calendar_plans(spec: PanelSpec) -> list[ColumnPlan]:
    calendar = spec.calendar
    plans = [ColumnPlan(calendar.period, Kind.DATE)]
    if calendar.by is not None:
        # the by column is parsed as the store table parses it, so that the two join
        store_plans = table_plans(spec.stores, key_kind(spec)) if spec.stores else []
        kinds = {p.column: p.kind for p in store_plans} | {spec.sales.store: key_kind(spec)}
        plans.append(ColumnPlan(calendar.by, kinds.get(calendar.by, Kind.TEXT)))
    return plans + _covariate_plans(calendar.covariates, ())


# --------------------------------------------------------------------------
# columns present


def missing_column_failures(present: Sequence[str], required: Sequence[str], role: FileRole, path: str) -> list[RuleFailure]:
    """One failure per required column the file lacks; examples: the file's columns nobody asked for,
    near-miss spellings ("Promo " for "promo") first, since they are the likeliest cause."""
    unexpected = [c for c in present if c not in required and c != n.ROW]
    failures = []
    for column in dict.fromkeys(required):
        if column in present:
            continue
        close = difflib.get_close_matches(column, unexpected, n=MAX_EXAMPLES, cutoff=0.6)
        examples = tuple([*close, *(c for c in unexpected if c not in close)][:MAX_EXAMPLES])
        failures.append(RuleFailure(path, role, column, RULE_COLUMN_PRESENT, 0, examples, ()))
    return failures


def missing_pattern_failures(
    keys: pl.DataFrame, product_column: str, missing: dict[str, object], role: FileRole, path: str
) -> list[RuleFailure]:
    """A failure per absent pattern column (price7 for product 7); rows: that product's rows of the file.

    ``keys``: ROW and the parsed product key; ``missing``: column -> its product."""
    return [
        _failure_from_rows(
            keys.filter(pl.col(product_column) == product), path=path, role=role, column=column,
            rule=RULE_PATTERN_COLUMN_PRESENT, example=pl.col(product_column),
        )
        for column, product in missing.items()
    ]


# --------------------------------------------------------------------------
# parsing


def _blank(column: str, source: pl.DataType) -> pl.Expr:
    blank = pl.col(column).is_null()
    if source == pl.String():
        blank = blank | (pl.col(column).str.strip_chars() == "")
    return blank


def _parsed(column: str, kind: Kind, source: pl.DataType) -> pl.Expr:
    """The column as its kind's dtype; a value that does not parse becomes null."""
    expr = pl.col(column)
    text = source == pl.String()
    if text:
        expr = expr.str.strip_chars()
    if kind in (Kind.TEXT, Kind.STR_KEY):
        return expr.cast(pl.String)
    if kind is Kind.DATE:
        if text:
            return expr.str.to_date(ingest.DATE_FORMAT, strict=False)
        return expr.dt.date() if isinstance(source, pl.Datetime) else expr.cast(pl.Date, strict=False)
    if kind is Kind.FLAG:
        if text:
            lower = expr.str.to_lowercase()
            return pl.when(lower.is_in(_TRUE_TEXT)).then(1.0).when(lower.is_in(_FALSE_TEXT)).then(0.0).otherwise(None)
        number = expr.cast(pl.Float64, strict=False)
        return pl.when(number.is_in((0.0, 1.0))).then(number)
    number = expr.cast(pl.Float64, strict=False)
    number = pl.when(number.is_finite()).then(number)
    if kind is Kind.INT_KEY:
        # "12.0" is still key 12; "12.5" is not a key
        return pl.when(number == number.floor()).then(number).cast(pl.Int64, strict=False)
    return number


def cast_file(raw: pl.DataFrame, plans: Sequence[ColumnPlan]) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """The typed frame (input names, ROW kept) and, per column, the rows whose value did not parse.

    A blank stays null (or takes the plan's fill); only a present value that does not parse is
    unparsed, so that a blank is reported once, by the not-null rule."""
    schema = raw.schema
    typed_exprs, bad_exprs = [pl.col(n.ROW)], []
    for plan in plans:
        if _text_as_is(raw, plan):
            # the typed column is the raw one (no copy); a text value always parses, so nothing is unparsed
            typed_exprs.append(pl.col(plan.column))
            continue
        blank = _blank(plan.column, schema[plan.column])
        parsed = pl.when(blank).then(None).otherwise(_parsed(plan.column, plan.kind, schema[plan.column]))
        if plan.fill is not None:
            parsed = pl.when(blank).then(pl.lit(plan.fill)).otherwise(parsed)
        typed_exprs.append(parsed.cast(DTYPES[plan.kind]).alias(plan.column))
        bad_exprs.append((~blank & parsed.is_null()).alias(_BAD + plan.column))
    both = raw.select(*typed_exprs, *bad_exprs)
    unparsed = {}
    for plan in plans:
        if _BAD + plan.column not in both.columns:
            continue
        bad = both[_BAD + plan.column]
        if bad.any():
            unparsed[plan.column] = pl.DataFrame(
                {n.ROW: raw[n.ROW].filter(bad), plan.column: raw[plan.column].filter(bad).cast(pl.String)}
            )
    return both.select(pl.col(n.ROW), *(p.column for p in plans)), unparsed


def _text_as_is(raw: pl.DataFrame, plan: ColumnPlan) -> bool:
    """Whether parsing a text (or string key) column would leave it as it is: no value blank, none with
    whitespace around it. Decided on the distinct values, so that a key column of millions of rows is
    neither stripped value by value (seconds) nor held twice (raw and typed)."""
    if plan.kind not in (Kind.TEXT, Kind.STR_KEY) or plan.fill is not None or raw.schema[plan.column] != pl.String():
        return False
    values = raw[plan.column].unique().drop_nulls()
    return bool((values.str.strip_chars() == values).all()) and not bool((values == "").any())


def parse_failures(unparsed: dict[str, pl.DataFrame], plans: Sequence[ColumnPlan], role: FileRole, path: str) -> list[RuleFailure]:
    kinds = {plan.column: plan.kind for plan in plans}
    return [
        _failure_from_rows(bad, path=path, role=role, column=column, rule=PARSE_RULES[kinds[column]], example=pl.col(column))
        for column, bad in unparsed.items()
    ]


def column_failures(
    typed: pl.DataFrame, plans: Sequence[ColumnPlan], unparsed: dict[str, pl.DataFrame], role: FileRole, path: str
) -> list[RuleFailure]:
    """Blanks and value checks of each column, through a pandera schema built from the plans."""
    schema = pa.DataFrameSchema(
        {
            plan.column: pa.Column(DTYPES[plan.kind], nullable=plan.nullable, checks=list(plan.checks))
            for plan in plans
        },
        strict=False,
        name=role.value,
    )
    return _pandera_failures(typed, role, path, unparsed, schema=schema)


# --------------------------------------------------------------------------
# across rows
#
# A sales file holds tens of millions of rows: a rule selects the few columns it reads and filters
# them, so that no copy of the whole frame is made to find (usually) no failing row.

# packed keys use at most this many distinct combinations, so that they fit an Int64
_PACKED_ROOM = 2**62


def _not_null(keys: Sequence[str]) -> pl.Expr:
    # null keys are the not-null rule's to report; here they would only repeat it
    return pl.all_horizontal(pl.col(k).is_not_null() for k in keys)


def _key_codes(key: str, column: pl.Series, among: pl.Series | None) -> tuple[pl.Expr, int] | None:
    """An expression of a key column as Int64 codes in 0 .. n-1 that order as its values do, and n: ranks
    of the distinct strings, offsets of dates and integers from the smallest. The values coded are those
    of ``among`` (a small table's column; default: ``column`` itself): null where the value is null or
    not among them. None for a dtype without such codes."""
    values = column if among is None else among
    if column.dtype == pl.String() and values.dtype == pl.String():
        distinct = values.unique().drop_nulls().sort()
        codes = pl.col(key).cast(pl.Enum(distinct), strict=among is None).to_physical().cast(pl.Int64)
        return codes, max(len(distinct), 1)
    if column.dtype == values.dtype and (column.dtype == pl.Date() or column.dtype.is_signed_integer()):
        low, high = values.to_physical().min(), values.to_physical().max()
        codes = pl.col(key).to_physical().cast(pl.Int64)
        if low is None:
            return codes, 1
        codes = codes - low
        if among is not None:
            codes = pl.when(codes.is_between(0, high - low)).then(codes)
        return codes, high - low + 1
    return None


def packed_keys(frame: pl.DataFrame, keys: Sequence[str], among: pl.DataFrame | None = None) -> pl.Series | None:
    """``packed_key`` of every row of ``frame``."""
    packed = packed_key(frame, keys, among)
    return None if packed is None else frame.select(packed).to_series()


def packed_key(frame: pl.DataFrame, keys: Sequence[str], among: pl.DataFrame | None = None) -> pl.Expr | None:
    """An expression of one Int64 per row that compares and sorts as the row's keys do, in order (store, product, period:
    equal when all are equal, ordered as a sort by them orders); null where a key is null. None when the
    keys do not fit in 62 bits or a key's dtype has no codes: then compare the columns themselves.
    With ``among`` (a frame with the same key columns), the codes are those of its keys, and null where a
    row's keys are not among them: the same value on both sides of a join on the keys.

    Rows of string keys compare far faster as one integer (the duplicate check of 54M M5 rows: 2 s
    instead of 15 s, and no hash table of strings). One expression, so that polars computes it chunk by
    chunk rather than a column of 54M codes per key and per operation."""
    packed, room = None, 1
    for key in reversed(keys):
        coded = _key_codes(key, frame[key], None if among is None else among[key])
        if coded is None:
            return None
        codes, size = coded
        packed = codes if packed is None else codes * room + packed
        room *= size
        if room > _PACKED_ROOM:
            return None
    return packed.alias("_packed")


def increasing(packed: pl.Series) -> bool:
    """Whether packed keys (``packed_keys``) strictly increase: the rows are sorted, unique, none null."""
    return packed.null_count() == 0 and bool((packed.diff().drop_nulls() > 0).all())


def distinct_keys(frame: pl.DataFrame, keys: Sequence[str]) -> pl.DataFrame:
    """The distinct keys of ``frame``, through their packed integer (``packed_keys``): where
    the frame is sorted by them, as PanelTables' frames are, the rows whose keys differ from the row
    before, with no hash table of the strings of every row (14 s and gigabytes for M5's 54M rows)."""
    packed = packed_keys(frame, keys)
    if packed is None:
        return frame.select(keys).unique()
    steps = packed.diff()
    first = steps.fill_null(1) != 0 if bool((steps.drop_nulls() >= 0).all()) else packed.is_first_distinct()
    return frame.select(keys).filter(first)


def _duplicated(frame: pl.DataFrame, keys: Sequence[str]) -> pl.Series:
    """True on every row whose keys (none null) another row repeats."""
    packed = packed_keys(frame, keys)
    if packed is None:
        return frame.select((pl.struct(keys).is_duplicated() & _not_null(keys)).alias(_BAD)).to_series()
    if increasing(packed):
        return pl.repeat(False, frame.height, dtype=pl.Boolean, eager=True)
    # sorting integers and marking the (few) repeated ones is faster than hashing every row
    ordered = packed.drop_nulls().sort()
    repeated = ordered.filter(ordered.diff() == 0).unique()
    return packed.is_in(repeated.implode()).fill_null(False)


def duplicate_failures(frame: pl.DataFrame, keys: Sequence[str], rule: str, role: FileRole, path: str) -> list[RuleFailure]:
    duplicated = _duplicated(frame, keys)
    if not duplicated.any():
        return []
    rows = frame.select(n.ROW, *keys).filter(duplicated)
    return [_failure_from_rows(rows, path=path, role=role, column=", ".join(keys), rule=rule,
                               example=_describe_rows(keys))]


def weekday_failures(frame: pl.DataFrame, period: str, weekday: int, role: FileRole, path: str) -> list[RuleFailure]:
    """Rows of a weekly file whose period is not on the history's weekday (ISO, Monday = 1)."""
    off = frame.select(n.ROW, period).filter(pl.col(period).is_not_null() & (pl.col(period).dt.weekday() != weekday))
    if off.is_empty():
        return []
    day_name = pl.col(period).dt.weekday().replace_strict(dict(enumerate(WEEKDAY_NAMES, 1)), return_dtype=pl.String)
    example = pl.concat_str(
        pl.col(period).cast(pl.String), pl.lit(" ("), day_name, pl.lit(f", not {WEEKDAY_NAMES[weekday - 1]})")
    )
    return [_failure_from_rows(off, path=path, role=role, column=period, rule=RULE_WEEKDAY, example=example)]


def after_history_failures(frame: pl.DataFrame, period: str, last: object, path: str) -> list[RuleFailure]:
    early = frame.select(n.ROW, period).filter(pl.col(period).is_not_null() & (pl.col(period) <= last))
    if early.is_empty():
        return []
    example = pl.concat_str(pl.col(period).cast(pl.String), pl.lit(f" (last sales period {last})"))
    return [_failure_from_rows(early, path=path, role=FileRole.FUTURE, column=period,
                               rule=RULE_FUTURE_AFTER_HISTORY, example=example)]


def unlisted_failures(
    frame: pl.DataFrame, column: str, table: pl.DataFrame, table_key: str, rule: str, role: FileRole, path: str
) -> list[RuleFailure]:
    """Rows whose key is absent from its dimension table."""
    listed = table[table_key].drop_nulls()
    unknown = frame.select(n.ROW, column).filter(pl.col(column).is_not_null() & ~pl.col(column).is_in(listed.implode()))
    if unknown.is_empty():
        return []
    return [_failure_from_rows(unknown, path=path, role=role, column=column, rule=rule, example=pl.col(column))]


def hierarchy_failures(table: pl.DataFrame, levels: Sequence[str], role: FileRole, path: str) -> list[RuleFailure]:
    """Each group of a finer level in one group of every coarser level; the report names the group
    and its conflicting parents (column: the coarser level)."""
    failures = []
    for i, finer in enumerate(levels):
        for coarser in levels[i + 1:]:
            keyed = table.filter(_not_null([finer, coarser]))
            parents = keyed.group_by(finer).agg(pl.col(coarser).unique().sort().alias(_PARENTS))
            conflicting = parents.filter(pl.col(_PARENTS).list.len() > 1)
            if conflicting.is_empty():
                continue
            rows = keyed.join(conflicting, on=finer, how="inner")
            example = pl.concat_str(
                pl.lit(f"{finer}="), pl.col(finer), pl.lit(f" in {coarser} "), pl.col(_PARENTS).list.join(", ")
            )
            failures.append(_failure_from_rows(rows, path=path, role=role, column=coarser, rule=RULE_HIERARCHY,
                                               example=example))
    return failures


def agreement_failures(
    frame: pl.DataFrame, key: str, level: str, table: pl.DataFrame, table_key: str, role: FileRole, path: str
) -> list[RuleFailure]:
    """Rows of a sales (future) file whose own copy of a hierarchy column contradicts the dimension table."""
    lookup = table.select(pl.col(table_key).alias(key), pl.col(level).alias(_EXPECTED))
    keyed = frame.select(n.ROW, key, level).filter(_not_null([key, level]))
    wrong = keyed.join(lookup, on=key, how="inner").filter(pl.col(level) != pl.col(_EXPECTED))
    if wrong.is_empty():
        return []
    example = pl.concat_str(_describe_rows([key, level]), pl.lit(" (table: "), pl.col(_EXPECTED), pl.lit(")"))
    return [_failure_from_rows(wrong, path=path, role=role, column=level, rule=RULE_HIERARCHY_AGREES, example=example)]


def calendar_gap_failures(missing: pl.DataFrame, keys: Sequence[str], role: FileRole, path: str) -> list[RuleFailure]:
    """Rows of a sales (future) file without a calendar row; ``missing`` holds ROW and the (period[, by])
    of those rows under the file's own names, period first (the column reported)."""
    missing = missing.filter(_not_null(keys))
    if missing.is_empty():
        return []
    return [_failure_from_rows(missing, path=path, role=role, column=keys[0], rule=RULE_CALENDAR_COVERS,
                               example=_describe_rows(keys))]


# --------------------------------------------------------------------------
# across files, as the spec relates them


def cross_file_failures(
    spec: PanelSpec, frames: dict[FileRole, pl.DataFrame], paths: dict[FileRole, str], history_end: dt.date | None = None
) -> list[RuleFailure]:
    """Every rule across rows and files, on whichever typed frames exist (input column names).
    ``history_end``: the last period of a history that was not read (a saved model's), for the rules that
    compare the future and the calendar with the history's periods."""
    return (
        _unique_failures(spec, frames, paths)
        + _dimension_failures(spec, frames, paths)
        + _grid_failures(spec, frames, paths, history_end)
    )


def _series_roles(frames: dict[FileRole, pl.DataFrame]) -> list[FileRole]:
    return [role for role in (FileRole.SALES, FileRole.FUTURE) if role in frames]


def _unique_failures(spec: PanelSpec, frames: dict[FileRole, pl.DataFrame], paths: dict[FileRole, str]) -> list[RuleFailure]:
    failures = []
    for role in _series_roles(frames):
        keys = [*spec.key_columns, spec.sales.period]
        failures += duplicate_failures(frames[role], keys, RULE_UNIQUE_SERIES_PERIOD, role, paths[role])
    if spec.calendar is not None and FileRole.CALENDAR in frames:
        keys = [spec.calendar.period, *([spec.calendar.by] if spec.calendar.by else [])]
        failures += duplicate_failures(frames[FileRole.CALENDAR], keys, RULE_UNIQUE_CALENDAR, FileRole.CALENDAR,
                                       paths[FileRole.CALENDAR])
    return failures


def _dimension_failures(spec: PanelSpec, frames: dict[FileRole, pl.DataFrame], paths: dict[FileRole, str]) -> list[RuleFailure]:
    """Unique keys and a consistent hierarchy in each table; every key of sales and future listed in it,
    and any hierarchy column sales or future carry in agreement with it."""
    failures = []
    sides = (
        (FileRole.STORES, spec.stores, spec.sales.store, RULE_STORE_LISTED),
        (FileRole.PRODUCTS, spec.products, spec.sales.product, RULE_PRODUCT_LISTED),
    )
    for table_role, table, series_key, rule in sides:
        if table is None or table_role not in frames:
            continue
        frame, path = frames[table_role], paths[table_role]
        failures += duplicate_failures(frame, [table.key], RULE_UNIQUE_KEY, table_role, path)
        failures += hierarchy_failures(frame, table.hierarchy, table_role, path)
        for role in _series_roles(frames):
            failures += unlisted_failures(frames[role], series_key, frame, table.key, rule, role, paths[role])
            for level in table.hierarchy:
                if level in frames[role].columns:
                    failures += agreement_failures(frames[role], series_key, level, frame, table.key, role, paths[role])
    return failures


def _grid_failures(
    spec: PanelSpec, frames: dict[FileRole, pl.DataFrame], paths: dict[FileRole, str], history_end: dt.date | None
) -> list[RuleFailure]:
    """Weekly periods on one weekday (that of the first sales period, or of ``history_end``: a weekly history's
    periods share their weekday); future periods after the history."""
    sales = frames.get(FileRole.SALES)
    if sales is not None:
        first, last = sales[spec.sales.period].min(), sales[spec.sales.period].max()
    else:
        first = last = history_end
    if first is None:
        return []
    failures = []
    periods = {FileRole.SALES: spec.sales.period, FileRole.FUTURE: spec.sales.period}
    if spec.calendar is not None:
        periods[FileRole.CALENDAR] = spec.calendar.period
    if spec.frequency == "week":
        for role, period in periods.items():
            if role in frames:
                failures += weekday_failures(frames[role], period, first.isoweekday(), role, paths[role])
    if FileRole.FUTURE in frames:
        failures += after_history_failures(frames[FileRole.FUTURE], spec.sales.period, last, paths[FileRole.FUTURE])
    return failures
