"""Read and validate the files a panel spec names, into canonical typed tables.

Pure: no Prefect, no MLflow. Every broken rule of every file is collected and reported at once, as
``tasks.data.validate`` does for the Rossmann files (``RuleFailure``: file, column, rule, row count,
examples, 1-based data rows); nothing is fitted or written when one fails.

The validated tables use the canonical names of ``tasks.names`` (``store``, ``product``, ``period``,
``target``, one column per covariate under its spec name), so that the encoder never sees a
retailer's own column names; ``PanelTables.spec`` maps them back for the forecast file.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from tasks import names as n
from tasks.data import ingest
from tasks.data import panel_rules as r
from tasks.data.events import with_event_columns
from tasks.data.panel_rules import ColumnPlan, FileCheck
from tasks.data.spec import (
    Covariate,
    DimensionTable,
    PanelSpec,
    SpecError,
    spec_files,
)
from tasks.data.validate import RULE_COLUMN_PRESENT, RULE_NOT_EMPTY, InputValidationError, RuleFailure, ValidationReport
from tasks.data.validate import _unreadable_failure as unreadable_failure
from tasks.names import FileRole

log = logging.getLogger(__name__)

ROLES = {"sales": FileRole.SALES, "stores": FileRole.STORES, "products": FileRole.PRODUCTS,
         "calendar": FileRole.CALENDAR, "future": FileRole.FUTURE}
# the calendar's `by` value of a row, while sales and calendar are joined
_BY = "_by"
_IN_CALENDAR = "_in_calendar"
CENSORED = n.CENSORED

@dataclass(frozen=True)
class PanelTables:
    """Validated tables of a panel spec.

    sales: ``store``, ``product`` (when the spec has a product key), ``period`` (Date), ``target``
        (Float64, null where masked: a negative target under ``negative_target: mask``), one Float64
        column per covariate of the spec (sales and calendar covariates, by their spec names; a price
        covariate holds the raw price, > 0), for a per-product price pattern also the pattern's
        column of every product (e.g. ``price1`` ... ``price11``, Float64, as the input names them),
        and ``row`` (1-based data row of the source file). Sorted by keys and period.
        With a ``stockout`` or ``stock_on_hand`` column in the spec, also ``censored`` (Boolean, after
        ``target``): the period stocked out, its target is a lower bound of demand.
    future: the same columns less ``target`` (and ``censored``); None when no future file was given.
    stores: ``store``, one String column per store hierarchy level (spec names), one column per
        attribute (Float64 for numeric, untransformed; String for category), the spec's ``label`` column
        when it names one, ``row``. Every store of
        sales and future. Without a stores table: the distinct stores of sales and future, ``store`` only.
    products: the same for products; without a products table, the distinct products of sales and
        future (``product`` only, as ``stores`` without a stores table); None only when the spec has no
        product key.
    """

    spec: PanelSpec
    sales: pl.DataFrame
    stores: pl.DataFrame
    products: pl.DataFrame | None
    future: pl.DataFrame | None
    paths: dict[str, str]
    n_negative_masked: int = 0


# --------------------------------------------------------------------------
# one file at a time


def read_raw(path: str, role: FileRole, rows: pl.Expr | None = None) -> tuple[pl.DataFrame | None, list[RuleFailure]]:
    """The file as it is (CSV as text), in file order; an unreadable file is a failure, not a crash.
    ``rows``: only the rows it keeps (numbered as in the whole file; Parquet skips row groups it rules out)."""
    try:
        scan = ingest.scan_raw(path, role)
        raw = (scan if rows is None else scan.filter(rows)).collect()
    except pl.exceptions.PolarsError as err:
        return None, [unreadable_failure(err, role, path)]
    return raw.sort(n.ROW), []


def _data_products(spec: PanelSpec, raws: dict[FileRole, pl.DataFrame]) -> list[object]:
    """The product keys of sales and future, parsed: they decide which pattern columns must exist."""
    column = spec.sales.product
    if column is None or not any(c.per_product for c in spec.sales.covariates):
        return []
    keys = [
        r.cast_file(raw.select(n.ROW, column), [ColumnPlan(column, r.key_kind(spec))])[0][column]
        for role, raw in raws.items()
        if role in (FileRole.SALES, FileRole.FUTURE) and column in raw.columns
    ]
    return sorted(pl.concat(keys).drop_nulls().unique().to_list()) if keys else []


def _pattern_failures(spec: PanelSpec, raw: pl.DataFrame, products: Sequence[object], check: FileCheck) -> set[str]:
    """Record a failure per pattern column the file lacks; returns the missing columns."""
    missing = {c: pc for c, pc in r.pattern_columns(spec, products).items() if c not in raw.columns}
    if missing and spec.sales.product in raw.columns:
        keys = r.cast_file(raw.select(n.ROW, spec.sales.product), [ColumnPlan(spec.sales.product, r.key_kind(spec))])[0]
        check.failures += r.missing_pattern_failures(
            keys, spec.sales.product, {c: p for c, (p, _) in missing.items()}, check.role, check.path
        )
    return set(missing)


def validate_file(check: FileCheck, raw: pl.DataFrame, plans: Sequence[ColumnPlan], may_be_empty: bool = False) -> None:
    """Columns present, at least one row (unless ``may_be_empty``: a part of the file), values parse, per-column
    rules; sets ``check.frame`` when the columns are there (cross-file rules then run on it)."""
    missing = r.missing_column_failures(raw.columns, [p.column for p in plans], check.role, check.path)
    if missing:
        check.failures += missing
        return
    typed, unparsed = r.cast_file(raw, plans)
    if typed.is_empty() and not may_be_empty:
        check.failures.append(RuleFailure(check.path, check.role, None, RULE_NOT_EMPTY, 0, (), ()))
    check.failures += r.parse_failures(unparsed, plans, check.role, check.path)
    check.failures += r.column_failures(typed, plans, unparsed, check.role, check.path)
    check.frame = typed


def _check_files(spec: PanelSpec, paths: dict[FileRole, str], stores: Sequence[object] | None = None) -> tuple[dict[FileRole, FileCheck], list[object]]:
    checks = {role: FileCheck(role, path) for role, path in paths.items()}
    raws = {}
    for role, path in paths.items():
        rows = pl.col(spec.sales.store).is_in(list(stores)) if stores is not None and role in (FileRole.SALES, FileRole.FUTURE) else None
        raw, failures = read_raw(path, role, rows)
        checks[role].failures += failures
        if raw is not None:
            raws[role] = raw
    products = _data_products(spec, raws)
    for role in list(raws):
        # popped, so that each raw frame is freed as soon as its typed frame exists (a sales file's raw
        # and typed frames together are most of the peak memory)
        # a part's stores may have no sales rows (new stores) or no future rows (closed ones): ``encode_to_blocks``
        # checks that each whole file has rows
        part_of_file = stores is not None and role in (FileRole.SALES, FileRole.FUTURE)
        _validate_raw(spec, raws.pop(role), products, checks[role], may_be_empty=part_of_file)
    return checks, products


def _validate_raw(spec: PanelSpec, raw: pl.DataFrame, products: Sequence[object], check: FileCheck, may_be_empty: bool = False) -> None:
    """The plans of the file's role, then ``validate_file``."""
    role = check.role
    if role in (FileRole.SALES, FileRole.FUTURE):
        missing = _pattern_failures(spec, raw, products, check)
        plans = r.series_plans(spec, products, raw.columns, with_target=role is FileRole.SALES)
        plans = [p for p in plans if p.column not in missing]
    elif role is FileRole.CALENDAR:
        plans = r.calendar_plans(spec)
    else:
        plans = r.table_plans(spec.stores if role is FileRole.STORES else spec.products, r.key_kind(spec))
    validate_file(check, raw, plans, may_be_empty)


# --------------------------------------------------------------------------
# canonical frames


def _own_value(covariate: Covariate, product_column: str | None, products: Sequence[object]) -> pl.Expr:
    """A covariate's value for the row: its column, or for a pattern the column of the row's product."""
    if not covariate.per_product:
        return pl.col(covariate.column)
    value = pl.lit(None, dtype=pl.Float64)
    for product in reversed(products):
        value = pl.when(pl.col(product_column) == product).then(pl.col(r.pattern_column(covariate, product))).otherwise(value)
    return value


def _canonical_series(spec: PanelSpec, typed: pl.DataFrame, products: Sequence[object], with_target: bool) -> pl.DataFrame:
    """Canonical names; a negative target masked to null under ``negative_target: mask``."""
    columns = [pl.col(spec.sales.store).alias(n.SERIES_STORE)]
    if spec.sales.product is not None:
        columns.append(pl.col(spec.sales.product).alias(n.SERIES_PRODUCT))
    columns.append(pl.col(spec.sales.period).alias(n.PERIOD))
    if with_target:
        target = pl.col(spec.sales.target)
        if spec.negative_target == "mask":
            target = pl.when(target < 0).then(None).otherwise(target)
        columns.append(target.alias(n.TARGET))
        if spec.sales.censoring_columns:
            columns.append(_stocked_out(spec).alias(CENSORED))
    columns += [_own_value(c, spec.sales.product, products).alias(c.name) for c in spec.sales.covariates]
    columns += [pl.col(column) for column in r.pattern_columns(spec, products)]
    return typed.select(*columns, pl.col(n.ROW))


def _stocked_out(spec: PanelSpec) -> pl.Expr:
    """True where the period stocked out: its flag is 1, or its stock on hand at the end is 0."""
    flags = []
    if spec.sales.stockout is not None:
        flags.append(pl.col(spec.sales.stockout) == 1.0)
    if spec.sales.stock_on_hand is not None:
        flags.append(pl.col(spec.sales.stock_on_hand) == 0.0)
    return pl.any_horizontal(flags).fill_null(False)


def _calendar_events(spec: PanelSpec, calendar: pl.DataFrame, lookup: pl.DataFrame | None) -> tuple[pl.DataFrame, list[str]]:
    """The calendar's covariates and ``_IN_CALENDAR``, one row per key of a canonical series frame, and
    those keys: the period and, when the calendar has a ``by``, the store (through the store table's
    ``by`` column, ``lookup``, unless ``by`` is the store key itself)."""
    cal = spec.calendar
    keys = [n.PERIOD, *([_BY] if cal.by else [])]
    events = calendar.select(
        pl.col(cal.period).alias(n.PERIOD),
        *([pl.col(cal.by).alias(_BY)] if cal.by else []),
        *(pl.col(c.column).alias(c.name) for c in cal.covariates),
        pl.lit(True).alias(_IN_CALENDAR),
    )
    # duplicate calendar rows are reported on their own; here they must not multiply sales rows
    events = events.drop_nulls(keys).unique(keys, keep="first")
    if cal.by is None:
        return events, [n.PERIOD]
    if lookup is None:
        return events.rename({_BY: n.SERIES_STORE}), [n.PERIOD, n.SERIES_STORE]
    # a few rows per store and period, rather than a by column of every sales row
    return lookup.join(events, on=_BY, how="inner").drop(_BY), [n.PERIOD, n.SERIES_STORE]


def _join_calendar(
    spec: PanelSpec, frame: pl.DataFrame, calendar: pl.DataFrame, stores: pl.DataFrame | None, check: FileCheck
) -> pl.DataFrame:
    """The calendar's covariates as columns of a canonical sales (future) frame, by period and, when the
    calendar has a ``by``, by the store key or the store table's column; rows without a calendar row are a
    failure unless every calendar covariate has a fill."""
    cal = spec.calendar
    lookup = None
    if cal.by is not None and cal.by != spec.sales.store:
        lookup = stores.select(pl.col(spec.stores.key).alias(n.SERIES_STORE), pl.col(cal.by).alias(_BY)).unique(n.SERIES_STORE)
    events, keys = _calendar_events(spec, calendar, lookup)
    frame = _with_calendar(frame, events, keys)
    if not all(c.fill is not None for c in cal.covariates):
        _calendar_gaps(spec, frame.filter(pl.col(_IN_CALENDAR).is_null()), lookup, check)
    frame = frame.with_columns(pl.col(c.name).fill_null(c.fill) for c in cal.covariates if c.fill is not None)
    return frame.drop(_IN_CALENDAR)


def _with_calendar(frame: pl.DataFrame, events: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """``frame`` with the calendar's columns of each row (null where it has no calendar row).

    When the keys pack into one integer, each row's calendar values are looked up by it, column by
    column beside the frame's: a join would copy every column of the frame (and a join on the period
    and store strings of 54M M5 rows takes 4.8 GB and 6 s)."""
    packed = r.packed_key(frame, keys, among=events)
    values = [c for c in events.columns if c not in keys]
    if packed is None:
        return frame.join(events, on=keys, how="left", maintain_order="left")
    slots = events.select(r.packed_key(events, keys)).to_series()
    return frame.with_columns(
        packed.replace_strict(slots, events[c], default=None, return_dtype=events[c].dtype).alias(c) for c in values
    )


def _calendar_gaps(spec: PanelSpec, missing: pl.DataFrame, lookup: pl.DataFrame | None, check: FileCheck) -> None:
    """Record the rows of a canonical frame without a calendar row, by period (and by) as the input names them."""
    cal = spec.calendar
    columns = [pl.col(n.PERIOD).alias(spec.sales.period)]
    if cal.by is not None:
        if lookup is not None:
            missing = missing.join(lookup, on=n.SERIES_STORE, how="left")
        columns.append(pl.col(_BY if lookup is not None else n.SERIES_STORE).alias(cal.by))
    missing = missing.select(n.ROW, *columns)
    check.failures += r.calendar_gap_failures(missing, missing.columns[1:], check.role, check.path)


def _sorted(frame: pl.DataFrame, order: Sequence[str]) -> pl.DataFrame:
    """``frame.sort(order)`` for validated keys (unique, none null), with at most one column in two copies
    at a time, and no copy at all when the file is sorted already."""
    packed = r.packed_keys(frame, order)
    if packed is None:
        return frame.sort(order)
    if not r.increasing(packed):
        permutation = packed.arg_sort()
        del packed
        # column by column, each original dropped as its sorted copy is made
        frame = pl.DataFrame([frame.drop_in_place(name).gather(permutation) for name in frame.columns])
    # as frame.sort flags it
    return frame.with_columns(pl.col(order[0]).set_sorted())


def _dimension(table: DimensionTable | None, typed: pl.DataFrame | None, key: str, series: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """A dimension table under canonical key name; without a table, the distinct keys of the series."""
    if table is None:
        return pl.concat([frame.select(key).unique() for frame in series]).unique().sort(key)
    columns = [*table.hierarchy, *(a.column for a in table.attributes)]
    if table.label is not None and table.label not in columns:
        columns.append(table.label)
    return typed.select(pl.col(table.key).alias(key), *columns, n.ROW).sort(key)


def _series_order(spec: PanelSpec) -> list[str]:
    return [n.SERIES_STORE, *([n.SERIES_PRODUCT] if spec.sales.product else []), n.PERIOD]


def _series_columns(spec: PanelSpec, products: Sequence[object], with_target: bool) -> list[str]:
    """PanelTables' column order: keys, period, target, covariates (sales, then calendar), pattern columns, row."""
    target = ([n.TARGET] + ([CENSORED] if spec.sales.censoring_columns else [])) if with_target else []
    covariates = [c.name for c in spec.covariates]
    return [*_series_order(spec), *target, *covariates, *r.pattern_columns(spec, products), n.ROW]


# --------------------------------------------------------------------------
# entry point


def _columns_complete(checks: dict[FileRole, FileCheck]) -> bool:
    rules = (RULE_COLUMN_PRESENT, r.RULE_PATTERN_COLUMN_PRESENT)
    return not any(f.rule in rules for check in checks.values() for f in check.failures)


def _series_frames(
    spec: PanelSpec, frames: dict[FileRole, pl.DataFrame], products: Sequence[object], checks: dict[FileRole, FileCheck]
) -> dict[FileRole, pl.DataFrame]:
    """Canonical sales and future frames with the calendar joined (its gaps recorded as failures) and the
    events' shares added; empty when a file lacks columns, since then there is nothing to join on."""
    if not _columns_complete(checks):
        return {}
    series = {role: _canonical_series(spec, frames[role], products, role is FileRole.SALES)
              for role in (FileRole.SALES, FileRole.FUTURE) if role in frames}
    if spec.calendar is not None and FileRole.CALENDAR in frames:
        for role, frame in series.items():
            series[role] = _join_calendar(spec, frame, frames[FileRole.CALENDAR], frames.get(FileRole.STORES), checks[role])
    series = {role: with_event_columns(frame, n.PERIOD, spec.events, spec.period_days, spec.sales.period_label)
              for role, frame in series.items()}
    return {role: frame.select(_series_columns(spec, products, role is FileRole.SALES)) for role, frame in series.items()}


def _input_paths(spec: PanelSpec, data_dir: str | Path, future: str | Path | None) -> dict[FileRole, str]:
    paths = {ROLES[role]: str(path) for role, path in spec_files(spec, data_dir).items()}
    if future is not None:
        if not Path(future).is_file():
            raise SpecError(f"spec {spec.name!r}: future file not found: {future}")
        paths[FileRole.FUTURE] = str(future)
    return paths


def _raise_if_failed(spec: PanelSpec, checks: dict[FileRole, FileCheck]) -> None:
    """One report of every failure, file by file; a SpecError too when the spec names absent columns."""
    order = list(checks)
    # file by file, so that a person fixes one file at a time (stable within a file)
    failures = tuple(sorted((f for check in checks.values() for f in check.failures), key=lambda f: order.index(f.role)))
    if not failures:
        return
    report = ValidationReport(failures)
    if any(f.rule in (RULE_COLUMN_PRESENT, r.RULE_PATTERN_COLUMN_PRESENT) for f in failures):
        raise r.SpecColumnsError(spec.name, report)
    raise InputValidationError(report)


def sales_stores(spec: PanelSpec, data_dir: str | Path) -> list[object]:
    """The distinct values of the sales file's store column, as the file holds them (text in a CSV), sorted:
    what ``read_panel(stores=...)`` selects by."""
    return _store_values(spec, spec_files(spec, data_dir)["sales"], FileRole.SALES)


def future_stores(spec: PanelSpec, future: str | Path) -> list[object]:
    """``sales_stores`` of a future table."""
    return _store_values(spec, future, FileRole.FUTURE)


def _store_values(spec: PanelSpec, path: str | Path, role: FileRole) -> list[object]:
    try:
        values = ingest.scan_raw(path, role).select(pl.col(spec.sales.store).unique()).collect().to_series()
    except pl.exceptions.ColumnNotFoundError as err:
        raise SpecError(f"spec {spec.name!r}: the {role.value} file {path} has no store column {spec.sales.store!r}") from err
    return sorted(values.drop_nulls().to_list())


def _no_sales(spec: PanelSpec, future: pl.DataFrame, products: Sequence[object]) -> pl.DataFrame:
    """A sales frame without rows, of the columns and types of a read one (the future's, and the target's)."""
    types = {**future.schema, n.TARGET: pl.Float64, CENSORED: pl.Boolean}
    return pl.DataFrame(schema={column: types[column] for column in _series_columns(spec, products, with_target=True)})


def read_panel(
    spec: PanelSpec,
    data_dir: str | Path,
    future: str | Path | None = None,
    stores: Sequence[object] | None = None,
    history_end: dt.date | None = None,
) -> PanelTables:
    """Read and validate every file of ``spec`` under ``data_dir`` (and the future file, if given).

    ``stores``: only the sales (and future) rows of these values of the store column (``sales_stores``), so
    that a panel too large for memory is read a part at a time; every rule runs on the part (the dimension
    tables and the calendar are read whole).

    ``history_end``: the sales file is not read (``sales`` comes back empty): a forecast from a saved model
    needs nothing of it, whose history ended on this period; the future table's periods are checked against
    it (after it, and for weekly data on its weekday).

    Raises ``tasks.data.validate.InputValidationError`` listing every broken rule, or
    ``tasks.data.spec.SpecError`` when a file the spec names is missing (or a column: then the error
    is both, ``panel_rules.SpecColumnsError``, with the report of every absent column).
    """
    paths = _input_paths(spec, data_dir, future)
    if history_end is not None:
        if FileRole.FUTURE not in paths:
            raise ValueError("there is no future table to forecast: give one (--future FILE) or name it in the spec's files")
        del paths[FileRole.SALES]
    checks, products = _check_files(spec, paths, stores)
    frames = {role: check.frame for role, check in checks.items() if check.frame is not None}
    for failure in r.cross_file_failures(spec, frames, paths, history_end):
        checks[failure.role].failures.append(failure)
    series = _series_frames(spec, frames, products, checks)
    _raise_if_failed(spec, checks)

    n_masked = int((frames[FileRole.SALES][spec.sales.target] < 0).sum()) if spec.negative_target == "mask" and FileRole.SALES in frames else 0
    # the canonical frames hold what is still needed of the typed sales (future) frames
    for role in series:
        frames.pop(role)
        checks[role].frame = None
    if history_end is not None:
        series[FileRole.SALES] = _no_sales(spec, series[FileRole.FUTURE], products)
    if n_masked:
        log.info("%s: %d negative %s values masked (negative_target: mask): left out of the fit",
                 paths[FileRole.SALES], n_masked, spec.sales.target)
    if spec.sales.censoring_columns and history_end is None:
        n_stocked_out = int(series[FileRole.SALES][CENSORED].sum())
        log.info("%s: %d periods stocked out: their %s is a lower bound of demand", paths[FileRole.SALES], n_stocked_out, spec.sales.target)
    order = _series_order(spec)
    sales, future_frame = (_sorted(series.pop(role), order) if role in series else None for role in (FileRole.SALES, FileRole.FUTURE))
    keyed = [frame for frame in (sales, future_frame) if frame is not None]
    stores = _dimension(spec.stores, frames.get(FileRole.STORES), n.SERIES_STORE, keyed)
    products_frame = None
    if spec.sales.product is not None:
        products_frame = _dimension(spec.products, frames.get(FileRole.PRODUCTS), n.SERIES_PRODUCT, keyed)
    return PanelTables(
        spec=spec, sales=sales, stores=stores, products=products_frame, future=future_frame,
        paths={role.value: path for role, path in paths.items()}, n_negative_masked=n_masked,
    )
