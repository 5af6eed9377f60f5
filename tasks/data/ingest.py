"""Ingest: lazy scans of the Kaggle-format input files, CSV or Parquet.

CSV is read with every column as text and cast afterwards with explicit types,
so that a reader never guesses (StateHoliday "0"/"a" stays a category) and a
value that does not parse becomes a reportable validation failure instead of
an exception deep inside the CSV reader.
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from tasks import names as n
from tasks.names import FileRole

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".csv", ".parquet", ".pq")

TYPED_COLUMNS: dict[FileRole, dict[str, pl.DataType]] = {
    FileRole.TRAIN: {
        n.STORE: pl.Int32(),
        n.DAY_OF_WEEK: pl.Int8(),
        n.DATE: pl.Date(),
        n.SALES: pl.Int32(),
        n.CUSTOMERS: pl.Int32(),
        n.OPEN: pl.Int8(),
        n.PROMO: pl.Int8(),
        n.STATE_HOLIDAY: pl.String(),
        n.SCHOOL_HOLIDAY: pl.Int8(),
    },
    FileRole.FUTURE: {
        n.ID: pl.Int64(),
        n.STORE: pl.Int32(),
        n.DAY_OF_WEEK: pl.Int8(),
        n.DATE: pl.Date(),
        n.OPEN: pl.Int8(),
        n.PROMO: pl.Int8(),
        n.STATE_HOLIDAY: pl.String(),
        n.SCHOOL_HOLIDAY: pl.Int8(),
    },
    FileRole.STORES: {
        n.STORE: pl.Int32(),
        n.STORE_TYPE: pl.String(),
        n.ASSORTMENT: pl.String(),
        n.COMPETITION_DISTANCE: pl.Float64(),
        n.COMPETITION_OPEN_SINCE_MONTH: pl.Int32(),
        n.COMPETITION_OPEN_SINCE_YEAR: pl.Int32(),
        n.PROMO2: pl.Int8(),
        n.PROMO2_SINCE_WEEK: pl.Int32(),
        n.PROMO2_SINCE_YEAR: pl.Int32(),
        n.PROMO_INTERVAL: pl.String(),
    },
}

# Columns a file may leave out. Kaggle's test.csv has an Id; a calendar
# written by hand need not.
OPTIONAL_COLUMNS: dict[FileRole, frozenset[str]] = {
    FileRole.TRAIN: frozenset({n.CUSTOMERS}),
    FileRole.FUTURE: frozenset({n.ID}),
    FileRole.STORES: frozenset(),
}

DATE_FORMAT = "%Y-%m-%d"


def scan_raw(path: str | Path, role: FileRole) -> pl.LazyFrame:
    """Lazily scan one input file as it is, with a 1-based data-row number.

    CSV columns come as text; Parquet columns keep the file's own types.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{role.value} file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame = pl.scan_csv(path, infer_schema=False)
    elif suffix in (".parquet", ".pq"):
        frame = pl.scan_parquet(path)
    else:
        raise ValueError(f"{role.value} file {path}: unsupported suffix {suffix!r}; expected one of {SUPPORTED_SUFFIXES}")
    return frame.with_row_index(n.ROW, offset=1)


def missing_columns(raw: pl.LazyFrame, role: FileRole) -> list[str]:
    """Required columns of ``role`` that the raw frame lacks."""
    present = set(raw.collect_schema().names())
    return [c for c in TYPED_COLUMNS[role] if c not in present and c not in OPTIONAL_COLUMNS[role]]


def _cast(column: str, dtype: pl.DataType, source: pl.DataType) -> pl.Expr:
    expr = pl.col(column)
    if source == pl.String() and dtype != pl.String():
        expr = expr.str.strip_chars()
    if dtype == pl.Date() and source == pl.String():
        return expr.str.to_date(DATE_FORMAT, strict=False)
    if dtype.is_integer() and (source == pl.String() or source.is_float()):
        # "1270.0" (or 1270.0 in a float column) is still the integer 1270, but
        # "4256.7" is not an integer: it becomes null and is reported as unparsed.
        as_float = expr.cast(pl.Float64, strict=False)
        return pl.when(as_float == as_float.floor()).then(as_float).cast(dtype, strict=False)
    return expr.cast(dtype, strict=False)


def _is_blank(column: str, source: pl.DataType) -> pl.Expr:
    blank = pl.col(column).is_null()
    if source == pl.String():
        blank = blank | (pl.col(column).str.strip_chars() == "")
    return blank


def cast_typed(raw: pl.LazyFrame, role: FileRole) -> pl.LazyFrame:
    """Cast a raw frame to its explicit types; unparseable values become null.

    Validation compares the result with the raw frame, row by row in the same
    order, to report values that did not parse. Absent optional columns are
    added as nulls. A blank Open in a future calendar means "unknown": it is
    flagged in OPEN_WAS_MISSING and taken as open.
    """
    source = raw.collect_schema()
    exprs = [pl.col(n.ROW)]
    if role is FileRole.FUTURE and n.OPEN in source:
        exprs.append(_is_blank(n.OPEN, source[n.OPEN]).alias(n.OPEN_WAS_MISSING))
    for column, dtype in TYPED_COLUMNS[role].items():
        if column in source:
            exprs.append(_cast(column, dtype, source[column]).alias(column))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(column))
    typed = raw.select(exprs)
    if role is FileRole.STORES:
        # Kaggle writes "no PromoInterval" as an empty quoted string; a blank
        # field or a null in Parquet means the same.
        typed = typed.with_columns(pl.col(n.PROMO_INTERVAL).fill_null(""))
    if role is FileRole.FUTURE and n.OPEN in source:
        # Only a blank Open is taken as open; text that did not parse stays null.
        typed = typed.with_columns(
            pl.when(pl.col(n.OPEN_WAS_MISSING)).then(pl.lit(1, pl.Int8)).otherwise(pl.col(n.OPEN)).alias(n.OPEN)
        )
    return typed


def parse_failures(raw: pl.DataFrame, typed: pl.DataFrame, role: FileRole) -> dict[str, pl.DataFrame]:
    """Per column, the rows whose raw value is present but did not parse.

    Returns ``{column: frame with ROW and the raw text}`` for columns with
    at least one such row.
    """
    failures: dict[str, pl.DataFrame] = {}
    for column in TYPED_COLUMNS[role]:
        if column not in raw.columns or typed.schema[column] == pl.String():
            continue
        raw_col = raw[column]
        present = raw_col.is_not_null()
        if raw_col.dtype == pl.String():
            present = present & (raw_col.str.strip_chars() != "")
        bad = present & typed[column].is_null()
        if bad.any():
            failures[column] = pl.DataFrame({n.ROW: raw[n.ROW].filter(bad), column: raw_col.filter(bad).cast(pl.String)})
    return failures


def log_blank_open(future: pl.DataFrame, path: str | Path) -> int:
    """Log (and return) how many future rows had a blank Open, now treated as open."""
    count = int(future[n.OPEN_WAS_MISSING].sum()) if n.OPEN_WAS_MISSING in future.columns else 0
    if count:
        stores = future.filter(pl.col(n.OPEN_WAS_MISSING))[n.STORE].unique().sort().to_list()
        log.warning(
            "%s: Open is blank on %d rows (stores %s); treated as open, and flagged in the forecast",
            path,
            count,
            stores[:10],
        )
    return count
