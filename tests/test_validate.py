"""tasks.data.validate: a good fixture passes; every rule, broken alone, is reported where it was broken;
many faults are reported at once."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest

from schemas.raw import DAY_OF_WEEK_MATCHES_DATE, NO_SALES_WHEN_CLOSED, TrainRows
from tasks import names as n
from tasks.data import ingest
from tasks.data.summary import summarize
from tasks.data.validate import (
    RULE_AFTER_HISTORY,
    RULE_COLUMN_PRESENT,
    RULE_NOT_EMPTY,
    RULE_STORE_KNOWN,
    RULE_UNIQUE,
    InputValidationError,
    RuleFailure,
    ValidatedInputs,
    ValidationReport,
    check_inputs,
    read_validated,
)
from tasks.names import FileRole

# ---------------------------------------------------------------------------
# fixture: a small Kaggle-format data set, held as raw field text per row

Row = dict[str, str | None]  # None: a blank, unquoted field

# Kaggle quotes these columns' values; the rest are bare.
QUOTED = frozenset({n.STATE_HOLIDAY, n.SCHOOL_HOLIDAY, n.STORE_TYPE, n.ASSORTMENT, n.PROMO_INTERVAL})

LAST_TRAIN_DAY = dt.date(2015, 6, 13)  # a Saturday
TRAIN_DAYS = 7  # 2015-06-07 (Sunday, closed) .. 2015-06-13
TRAIN_STORES = (1, 2, 3)
NEW_STORE = 4  # in the stores file and the future calendar, not in train
FUTURE_STORES = (1, 2, NEW_STORE)
FUTURE_DAYS = 3  # 2015-06-14 (Sunday, closed) .. 2015-06-16

ROLE_COLUMNS = {FileRole.TRAIN: n.TRAIN_COLUMNS, FileRole.STORES: n.STORE_COLUMNS, FileRole.FUTURE: n.FUTURE_COLUMNS}


def calendar_fields(store: int, day: dt.date) -> Row:
    is_sunday = day.isoweekday() == 7
    return {
        n.STORE: str(store),
        n.DAY_OF_WEEK: str(day.isoweekday()),
        n.DATE: day.isoformat(),
        n.OPEN: "0" if is_sunday else "1",
        n.PROMO: "1" if day.isoweekday() in (1, 2) else "0",
        n.STATE_HOLIDAY: "0",
        n.SCHOOL_HOLIDAY: "1" if store == 2 else "0",
    }


def good_train_rows() -> list[Row]:
    """Newest day first, stores ascending within a day, as Kaggle ships train.csv."""
    rows = []
    for back in range(TRAIN_DAYS):
        day = LAST_TRAIN_DAY - dt.timedelta(days=back)
        for store in TRAIN_STORES:
            row = calendar_fields(store, day)
            is_open = row[n.OPEN] == "1"
            row[n.SALES] = str(1000 * store + back) if is_open else "0"
            row[n.CUSTOMERS] = str(100 * store + back) if is_open else "0"
            rows.append(row)
    # Legal quirks, all present in Rossmann: an open day with zero sales, a
    # missing Customers count, a public holiday.
    rows[train_row(3, dt.date(2015, 6, 10)) - 1].update({n.SALES: "0", n.CUSTOMERS: "0"})
    rows[train_row(1, dt.date(2015, 6, 9)) - 1][n.CUSTOMERS] = None
    rows[train_row(2, dt.date(2015, 6, 11)) - 1].update(
        {n.OPEN: "0", n.SALES: "0", n.CUSTOMERS: "0", n.STATE_HOLIDAY: "a"}
    )
    return rows


def train_row(store: int, day: dt.date) -> int:
    """1-based data row of (store, day) in good_train_rows."""
    back = (LAST_TRAIN_DAY - day).days
    return back * len(TRAIN_STORES) + TRAIN_STORES.index(store) + 1


def good_store_rows() -> list[Row]:
    none = {n.PROMO2_SINCE_WEEK: None, n.PROMO2_SINCE_YEAR: None}
    rows: list[Row] = [
        {n.STORE: "1", n.STORE_TYPE: "c", n.ASSORTMENT: "a", n.COMPETITION_DISTANCE: "1270",
         n.COMPETITION_OPEN_SINCE_MONTH: "9", n.COMPETITION_OPEN_SINCE_YEAR: "2008", n.PROMO2: "0",
         **none, n.PROMO_INTERVAL: ""},
        {n.STORE: "2", n.STORE_TYPE: "a", n.ASSORTMENT: "a", n.COMPETITION_DISTANCE: "570",
         n.COMPETITION_OPEN_SINCE_MONTH: "11", n.COMPETITION_OPEN_SINCE_YEAR: "2007", n.PROMO2: "1",
         n.PROMO2_SINCE_WEEK: "13", n.PROMO2_SINCE_YEAR: "2010", n.PROMO_INTERVAL: "Jan,Apr,Jul,Oct"},
        # no competition known (three Rossmann stores), and a blank PromoInterval
        {n.STORE: "3", n.STORE_TYPE: "d", n.ASSORTMENT: "c", n.COMPETITION_DISTANCE: None,
         n.COMPETITION_OPEN_SINCE_MONTH: None, n.COMPETITION_OPEN_SINCE_YEAR: None, n.PROMO2: "0",
         **none, n.PROMO_INTERVAL: None},
        {n.STORE: str(NEW_STORE), n.STORE_TYPE: "b", n.ASSORTMENT: "b", n.COMPETITION_DISTANCE: "20",
         n.COMPETITION_OPEN_SINCE_MONTH: "1", n.COMPETITION_OPEN_SINCE_YEAR: "1900", n.PROMO2: "1",
         n.PROMO2_SINCE_WEEK: "53", n.PROMO2_SINCE_YEAR: "2015", n.PROMO_INTERVAL: "Mar,Jun,Sept,Dec"},
    ]
    return rows


def good_future_rows() -> list[Row]:
    rows = []
    for ahead in range(1, FUTURE_DAYS + 1):
        day = LAST_TRAIN_DAY + dt.timedelta(days=ahead)
        for store in FUTURE_STORES:
            rows.append({n.ID: str(len(rows) + 1), **calendar_fields(store, day)})
    rows[future_row(2, dt.date(2015, 6, 16)) - 1][n.OPEN] = None  # blank Open: Kaggle test.csv has 11
    return rows


def future_row(store: int, day: dt.date) -> int:
    ahead = (day - LAST_TRAIN_DAY).days
    return (ahead - 1) * len(FUTURE_STORES) + FUTURE_STORES.index(store) + 1


def kaggle_csv(columns: tuple[str, ...], rows: list[Row]) -> str:
    def cell(column: str, value: str | None) -> str:
        if value is None:
            return ""
        return f'"{value}"' if column in QUOTED else value

    header = ",".join(f'"{c}"' for c in columns)
    body = [",".join(cell(c, row[c]) for c in columns) for row in rows]
    return "\n".join([header, *body]) + "\n"


@dataclass
class Inputs:
    """Editable raw inputs; ``write`` puts them in Kaggle format under a folder."""

    rows: dict[FileRole, list[Row]] = field(
        default_factory=lambda: {
            FileRole.TRAIN: good_train_rows(),
            FileRole.STORES: good_store_rows(),
            FileRole.FUTURE: good_future_rows(),
        }
    )
    columns: dict[FileRole, tuple[str, ...]] = field(default_factory=lambda: dict(ROLE_COLUMNS))

    def set(self, role: FileRole, row: int, column: str, value: str | None) -> None:
        self.rows[role][row - 1][column] = value

    def update(self, role: FileRole, row: int, values: Row) -> None:
        self.rows[role][row - 1].update(values)

    def append_copy(self, role: FileRole, row: int) -> None:
        self.rows[role].append(copy.deepcopy(self.rows[role][row - 1]))

    def rename_column(self, role: FileRole, old: str, new: str) -> None:
        self.columns[role] = tuple(new if c == old else c for c in self.columns[role])
        for row in self.rows[role]:
            row[new] = row.pop(old)

    def drop_rows(self, role: FileRole, rows: tuple[int, ...] | None = None) -> None:
        """Drop the given 1-based rows, or all of them."""
        self.rows[role] = [] if rows is None else [r for i, r in enumerate(self.rows[role], 1) if i not in rows]

    def write(self, folder: Path) -> dict[FileRole, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for role, rows in self.rows.items():
            paths[role] = folder / f"{role.value}.csv"
            paths[role].write_text(kaggle_csv(self.columns[role], rows))
        return paths


def run_check(tmp_path: Path, inputs: Inputs) -> tuple[ValidatedInputs | None, ValidationReport, dict[FileRole, Path]]:
    paths = inputs.write(tmp_path / "in")
    validated, report = check_inputs(paths[FileRole.TRAIN], paths[FileRole.STORES], paths[FileRole.FUTURE])
    return validated, report, paths


def isin(levels: tuple[object, ...] | list[object]) -> str:
    """pandera's name of an isin check."""
    return f"isin({list(levels)!r})"


FLAG = isin([0, 1])
NOT_NULL = "not_nullable"
GE0 = "greater_than_or_equal_to(0)"


def in_range(low: int, high: int) -> str:
    return f"in_range({low}, {high})"


def find(report: ValidationReport, role: FileRole, column: str | None, rule: str) -> RuleFailure:
    matches = [f for f in report.failures if (f.role, f.column, f.rule) == (role, column, rule)]
    assert len(matches) == 1, f"expected one {role.value}/{column}/{rule} failure in:\n{report.to_text()}"
    return matches[0]


def failure_keys(report: ValidationReport) -> set[tuple[FileRole, str | None, str]]:
    return {(f.role, f.column, f.rule) for f in report.failures}


# ---------------------------------------------------------------------------
# the good fixture


def test_good_inputs_pass(tmp_path: Path) -> None:
    validated, report, paths = run_check(tmp_path, Inputs())
    assert report.ok, report.to_text()
    assert report.failures == ()
    assert validated is not None
    assert validated.train.height == TRAIN_DAYS * len(TRAIN_STORES)
    assert validated.stores.height == 4
    assert validated.future is not None and validated.future.height == FUTURE_DAYS * len(FUTURE_STORES)
    assert validated.paths == {role: str(path) for role, path in paths.items()}
    assert validated.future[n.OPEN_WAS_MISSING].sum() == 1
    assert n.ROW in validated.train.columns


def test_good_inputs_pass_without_future(tmp_path: Path) -> None:
    paths = Inputs().write(tmp_path)
    validated, report = check_inputs(paths[FileRole.TRAIN], paths[FileRole.STORES])
    assert report.ok
    assert validated is not None and validated.future is None
    assert set(validated.paths) == {FileRole.TRAIN, FileRole.STORES}


def test_good_inputs_pass_as_parquet(tmp_path: Path) -> None:
    csv_paths = Inputs().write(tmp_path / "csv")
    parquet = {}
    for role, path in csv_paths.items():
        parquet[role] = tmp_path / f"{role.value}.parquet"
        pl.read_csv(path, infer_schema=True, try_parse_dates=True).write_parquet(parquet[role])
    validated, report = check_inputs(parquet[FileRole.TRAIN], parquet[FileRole.STORES], parquet[FileRole.FUTURE])
    assert report.ok, report.to_text()
    from_csv = read_validated(csv_paths[FileRole.TRAIN], csv_paths[FileRole.STORES], csv_paths[FileRole.FUTURE])
    assert validated is not None
    assert validated.train.sort(n.ROW).equals(from_csv.train.sort(n.ROW))
    assert validated.stores.sort(n.ROW).equals(from_csv.stores.sort(n.ROW))


def test_schema_allows_row_column_and_checks_nothing_in_it() -> None:
    frame = pl.DataFrame(
        {
            n.ROW: pl.Series([0], dtype=pl.UInt32),  # a row number 0 breaks no rule: ROW is not checked
            n.STORE: pl.Series([1], dtype=pl.Int32),
            n.DAY_OF_WEEK: pl.Series([2], dtype=pl.Int8),
            n.DATE: [dt.date(2013, 1, 1)],  # Rossmann's first day, a Tuesday
            n.SALES: pl.Series([0], dtype=pl.Int32),
            n.CUSTOMERS: pl.Series([None], dtype=pl.Int32),
            n.OPEN: pl.Series([0], dtype=pl.Int8),
            n.PROMO: pl.Series([0], dtype=pl.Int8),
            n.STATE_HOLIDAY: ["a"],
            n.SCHOOL_HOLIDAY: pl.Series([1], dtype=pl.Int8),
        }
    )
    TrainRows.validate(frame, lazy=True)


# ---------------------------------------------------------------------------
# one fault at a time

SAT = dt.date(2015, 6, 13)
FRI = dt.date(2015, 6, 12)
SUN = dt.date(2015, 6, 7)
FUTURE_MON = dt.date(2015, 6, 15)


@dataclass(frozen=True)
class Fault:
    role: FileRole
    edit: Callable[[Inputs], None]
    column: str | None
    rule: str
    rows: tuple[int, ...]
    n_rows: int | None = None  # defaults to len(rows)
    examples: tuple[str, ...] | None = None  # checked when given
    # other failures the same edit rightly causes
    also: frozenset[tuple[FileRole, str | None, str]] = frozenset()


T, S, F = FileRole.TRAIN, FileRole.STORES, FileRole.FUTURE


def set_(role: FileRole, row: int, column: str, value: str | None) -> Callable[[Inputs], None]:
    return lambda inputs: inputs.set(role, row, column, value)


FAULTS = {
    # --- train: columns and parsing
    "train-missing-column": Fault(
        T, lambda i: i.rename_column(T, n.SALES, "sales"), n.SALES, RULE_COLUMN_PRESENT, (), n_rows=0,
        examples=("sales",),
    ),
    "train-empty": Fault(T, lambda i: i.drop_rows(T), None, RULE_NOT_EMPTY, (), n_rows=0),
    "train-store-unparseable": Fault(
        T, set_(T, 2, n.STORE, "two"), n.STORE, "parses as Int32", (2,), examples=("two",)
    ),
    "train-date-unparseable": Fault(
        T, set_(T, 3, n.DATE, "2015-02-30"), n.DATE, "parses as Date (%Y-%m-%d)", (3,), examples=("2015-02-30",)
    ),
    "train-sales-unparseable": Fault(T, set_(T, 1, n.SALES, "12x"), n.SALES, "parses as Int32", (1,)),
    "train-open-unparseable": Fault(T, set_(T, 1, n.OPEN, "yes"), n.OPEN, "parses as Int8", (1,)),
    "train-sales-fractional": Fault(
        T, set_(T, 1, n.SALES, "4256.7"), n.SALES, "parses as Int32", (1,), examples=("4256.7",)
    ),
    "train-open-fractional": Fault(T, set_(T, 1, n.OPEN, "1.5"), n.OPEN, "parses as Int8", (1,), examples=("1.5",)),
    # --- train: not null
    "train-store-null": Fault(T, set_(T, 2, n.STORE, None), n.STORE, NOT_NULL, (2,)),
    "train-date-null": Fault(T, set_(T, 2, n.DATE, None), n.DATE, NOT_NULL, (2,)),
    "train-day-of-week-null": Fault(T, set_(T, 2, n.DAY_OF_WEEK, None), n.DAY_OF_WEEK, NOT_NULL, (2,)),
    "train-open-null": Fault(T, set_(T, 2, n.OPEN, None), n.OPEN, NOT_NULL, (2,)),
    "train-promo-null": Fault(T, set_(T, 2, n.PROMO, None), n.PROMO, NOT_NULL, (2,)),
    "train-state-holiday-null": Fault(T, set_(T, 2, n.STATE_HOLIDAY, None), n.STATE_HOLIDAY, NOT_NULL, (2,)),
    "train-school-holiday-empty": Fault(T, set_(T, 2, n.SCHOOL_HOLIDAY, ""), n.SCHOOL_HOLIDAY, NOT_NULL, (2,)),
    "train-sales-null": Fault(T, set_(T, 2, n.SALES, None), n.SALES, NOT_NULL, (2,)),
    # --- train: ranges and categories
    "train-sales-negative": Fault(T, set_(T, 2, n.SALES, "-1"), n.SALES, GE0, (2,), examples=("-1",)),
    "train-customers-negative": Fault(T, set_(T, 4, n.CUSTOMERS, "-3"), n.CUSTOMERS, GE0, (4,)),
    "train-open-not-flag": Fault(T, set_(T, 1, n.OPEN, "2"), n.OPEN, FLAG, (1,), examples=("2",)),
    "train-promo-not-flag": Fault(T, set_(T, 1, n.PROMO, "-1"), n.PROMO, FLAG, (1,)),
    "train-school-holiday-not-flag": Fault(T, set_(T, 1, n.SCHOOL_HOLIDAY, "2"), n.SCHOOL_HOLIDAY, FLAG, (1,)),
    "train-state-holiday-unknown": Fault(
        T, set_(T, 5, n.STATE_HOLIDAY, "z"), n.STATE_HOLIDAY, isin(n.STATE_HOLIDAY_LEVELS), (5,), examples=("z",)
    ),
    "train-state-holiday-empty-text": Fault(
        T, set_(T, 5, n.STATE_HOLIDAY, ""), n.STATE_HOLIDAY, isin(n.STATE_HOLIDAY_LEVELS), (5,), examples=("",)
    ),
    "train-day-of-week-out-of-range": Fault(
        T, set_(T, 1, n.DAY_OF_WEEK, "8"), n.DAY_OF_WEEK, in_range(1, 7), (1,),
        also=frozenset({(T, n.DAY_OF_WEEK, DAY_OF_WEEK_MATCHES_DATE)}),
    ),
    # --- train: across columns
    "train-day-of-week-not-date": Fault(
        T, set_(T, train_row(1, FRI), n.DAY_OF_WEEK, "3"), n.DAY_OF_WEEK, DAY_OF_WEEK_MATCHES_DATE,
        (train_row(1, FRI),), examples=("Date=2015-06-12, DayOfWeek=3",),
    ),
    "train-sales-when-closed": Fault(
        T, set_(T, train_row(2, SUN), n.SALES, "100"), n.SALES, NO_SALES_WHEN_CLOSED,
        (train_row(2, SUN),), examples=("Open=0, Sales=100",),
    ),
    # --- train: across rows and files
    "train-duplicate-store-date": Fault(
        T, lambda i: i.append_copy(T, 5), f"{n.STORE}, {n.DATE}", RULE_UNIQUE,
        (5, TRAIN_DAYS * len(TRAIN_STORES) + 1), examples=("Store=2, Date=2015-06-12",),
    ),
    "train-store-unknown": Fault(
        T, set_(T, 2, n.STORE, "99"), n.STORE, RULE_STORE_KNOWN, (2,), examples=("99",)
    ),
    # --- stores
    "stores-missing-column": Fault(
        S, lambda i: i.rename_column(S, n.STORE_TYPE, "Store Type"), n.STORE_TYPE, RULE_COLUMN_PRESENT, (),
        n_rows=0, examples=("Store Type",),
    ),
    "stores-duplicate-store": Fault(
        S, lambda i: i.append_copy(S, 2), n.STORE, RULE_UNIQUE, (2, 5), examples=("Store=2",)
    ),
    "stores-store-null": Fault(
        S, set_(S, 4, n.STORE, None), n.STORE, NOT_NULL, (4,),
        also=frozenset({(F, n.STORE, RULE_STORE_KNOWN)}),
    ),
    "stores-store-unparseable": Fault(
        S, set_(S, 4, n.STORE, "4b"), n.STORE, "parses as Int32", (4,),
        also=frozenset({(F, n.STORE, RULE_STORE_KNOWN)}),
    ),
    "stores-store-type-unknown": Fault(
        S, set_(S, 1, n.STORE_TYPE, "e"), n.STORE_TYPE, isin(n.STORE_TYPE_LEVELS), (1,), examples=("e",)
    ),
    "stores-store-type-null": Fault(S, set_(S, 1, n.STORE_TYPE, None), n.STORE_TYPE, NOT_NULL, (1,)),
    "stores-assortment-unknown": Fault(
        S, set_(S, 2, n.ASSORTMENT, "d"), n.ASSORTMENT, isin(n.ASSORTMENT_LEVELS), (2,)
    ),
    "stores-assortment-null": Fault(S, set_(S, 2, n.ASSORTMENT, None), n.ASSORTMENT, NOT_NULL, (2,)),
    "stores-competition-distance-negative": Fault(
        S, set_(S, 1, n.COMPETITION_DISTANCE, "-5"), n.COMPETITION_DISTANCE, GE0, (1,), examples=("-5.0",)
    ),
    "stores-competition-distance-unparseable": Fault(
        S, set_(S, 1, n.COMPETITION_DISTANCE, "far"), n.COMPETITION_DISTANCE, "parses as Float64", (1,),
        examples=("far",),
    ),
    "stores-competition-month-out-of-range": Fault(
        S, set_(S, 2, n.COMPETITION_OPEN_SINCE_MONTH, "13"), n.COMPETITION_OPEN_SINCE_MONTH, in_range(1, 12), (2,)
    ),
    "stores-competition-year-out-of-range": Fault(
        S, set_(S, 2, n.COMPETITION_OPEN_SINCE_YEAR, "1850"), n.COMPETITION_OPEN_SINCE_YEAR,
        in_range(1900, 2100), (2,),
    ),
    "stores-promo2-not-flag": Fault(S, set_(S, 3, n.PROMO2, "3"), n.PROMO2, FLAG, (3,)),
    "stores-promo2-null": Fault(S, set_(S, 3, n.PROMO2, None), n.PROMO2, NOT_NULL, (3,)),
    "stores-promo2-week-out-of-range": Fault(
        S, set_(S, 2, n.PROMO2_SINCE_WEEK, "54"), n.PROMO2_SINCE_WEEK, in_range(1, 53), (2,)
    ),
    "stores-promo2-year-out-of-range": Fault(
        S, set_(S, 2, n.PROMO2_SINCE_YEAR, "20100"), n.PROMO2_SINCE_YEAR, in_range(1900, 2100), (2,)
    ),
    "stores-promo-interval-unknown": Fault(
        S, set_(S, 2, n.PROMO_INTERVAL, "Jan,Feb"), n.PROMO_INTERVAL, isin(n.PROMO_INTERVAL_LEVELS), (2,),
        examples=("Jan,Feb",),
    ),
    # --- future
    "future-missing-column": Fault(
        F, lambda i: i.rename_column(F, n.DATE, "date"), n.DATE, RULE_COLUMN_PRESENT, (), n_rows=0,
        examples=("date",),
    ),
    "future-id-unparseable": Fault(F, set_(F, 3, n.ID, "x3"), n.ID, "parses as Int64", (3,)),
    "future-open-unparseable": Fault(F, set_(F, 3, n.OPEN, "x"), n.OPEN, "parses as Int8", (3,)),
    "future-open-not-flag": Fault(F, set_(F, 3, n.OPEN, "2"), n.OPEN, FLAG, (3,)),
    "future-state-holiday-unknown": Fault(
        F, set_(F, 3, n.STATE_HOLIDAY, "d"), n.STATE_HOLIDAY, isin(n.STATE_HOLIDAY_LEVELS), (3,)
    ),
    "future-date-null": Fault(F, set_(F, 3, n.DATE, None), n.DATE, NOT_NULL, (3,)),
    "future-day-of-week-not-date": Fault(
        F, set_(F, future_row(1, FUTURE_MON), n.DAY_OF_WEEK, "2"), n.DAY_OF_WEEK, DAY_OF_WEEK_MATCHES_DATE,
        (future_row(1, FUTURE_MON),), examples=("Date=2015-06-15, DayOfWeek=2",),
    ),
    "future-duplicate-store-date": Fault(
        F, lambda i: i.append_copy(F, 3), f"{n.STORE}, {n.DATE}", RULE_UNIQUE,
        (3, FUTURE_DAYS * len(FUTURE_STORES) + 1), examples=(f"Store={NEW_STORE}, Date=2015-06-14",),
    ),
    "future-store-unknown": Fault(F, set_(F, 3, n.STORE, "5"), n.STORE, RULE_STORE_KNOWN, (3,), examples=("5",)),
    "future-date-within-history": Fault(
        F, lambda i: i.update(F, 2, {n.DATE: "2015-06-13", n.DAY_OF_WEEK: "6"}), n.DATE, RULE_AFTER_HISTORY, (2,),
        examples=("Store=2, Date=2015-06-13 (last train date 2015-06-13)",),
    ),
    "future-date-before-history": Fault(
        F, lambda i: i.update(F, 1, {n.DATE: "2015-01-01", n.DAY_OF_WEEK: "4"}), n.DATE, RULE_AFTER_HISTORY, (1,)
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS.values()), ids=list(FAULTS))
def test_each_rule_is_reported_where_it_broke(tmp_path: Path, fault: Fault) -> None:
    inputs = Inputs()
    fault.edit(inputs)
    validated, report, paths = run_check(tmp_path, inputs)

    assert validated is None
    assert not report.ok
    failure = find(report, fault.role, fault.column, fault.rule)
    assert failure.file == str(paths[fault.role])
    assert failure.rows == fault.rows
    assert failure.n_rows == (fault.n_rows if fault.n_rows is not None else len(fault.rows))
    if fault.examples is not None:
        assert failure.examples == fault.examples
    # nothing else is reported: no double counting, no false alarms
    assert failure_keys(report) == {(fault.role, fault.column, fault.rule)} | fault.also


def test_whole_numbers_written_as_decimals_pass(tmp_path: Path) -> None:
    # Other tools write integer columns as "1270.0"; that is still 1270.
    inputs = Inputs()
    inputs.set(T, 1, n.SALES, "4256.0")
    inputs.set(S, 1, n.COMPETITION_OPEN_SINCE_YEAR, "2008.0")
    validated, report, _ = run_check(tmp_path, inputs)
    assert report.ok, report.to_text()
    assert validated is not None and validated.train[n.SALES][0] == 4256


def test_new_store_may_start_any_day(tmp_path: Path) -> None:
    # Store 4 has no history: a future date long before the others' history is fine.
    inputs = Inputs()
    inputs.update(F, future_row(NEW_STORE, FUTURE_MON), {n.DATE: "2013-01-01", n.DAY_OF_WEEK: "2"})
    _, report, _ = run_check(tmp_path, inputs)
    assert report.ok, report.to_text()


def test_many_failing_rows_are_counted_and_sampled(tmp_path: Path) -> None:
    inputs = Inputs()
    open_rows = [i + 1 for i, row in enumerate(inputs.rows[T]) if row[n.OPEN] == "1"]
    for k, row in enumerate(open_rows):
        inputs.set(T, row, n.SALES, str(-1 - k % 7))
    _, report, _ = run_check(tmp_path, inputs)
    failure = find(report, T, n.SALES, GE0)
    assert failure.n_rows == len(open_rows)
    assert failure.rows == tuple(open_rows[:5])
    assert failure.examples == ("-1", "-2", "-3", "-4", "-5")


def test_failure_rows_follow_row_column_not_frame_position(tmp_path: Path) -> None:
    # Parquet rows shuffled on write: ROW still numbers them as they lie in the file.
    paths = Inputs().write(tmp_path)
    frame = pl.read_csv(paths[T], infer_schema=False)
    frame = frame.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("-9")).otherwise(pl.col(n.SALES))
                               .alias(n.SALES))
    parquet = tmp_path / "train.parquet"
    frame.write_parquet(parquet)
    _, report = check_inputs(parquet, paths[S])
    assert find(report, T, n.SALES, GE0).rows == (8,)


# ---------------------------------------------------------------------------
# many faults at once


def test_all_faults_are_reported_at_once(tmp_path: Path) -> None:
    inputs = Inputs()
    inputs.set(T, 1, n.SALES, "-1")
    inputs.set(T, 2, n.STATE_HOLIDAY, "z")
    inputs.set(T, 3, n.CUSTOMERS, "many")
    inputs.set(T, train_row(1, SUN), n.SALES, "50")
    inputs.append_copy(T, 4)
    inputs.set(S, 1, n.STORE_TYPE, "e")
    inputs.set(S, 3, n.PROMO_INTERVAL, "Jan")
    inputs.set(F, 3, n.STORE, "77")
    inputs.update(F, 1, {n.DATE: "2015-06-10", n.DAY_OF_WEEK: "3"})
    inputs.set(F, 2, n.DAY_OF_WEEK, "1")
    validated, report, paths = run_check(tmp_path, inputs)

    assert validated is None
    expected = {
        (T, n.SALES, GE0): (1,),
        (T, n.STATE_HOLIDAY, isin(n.STATE_HOLIDAY_LEVELS)): (2,),
        (T, n.CUSTOMERS, "parses as Int32"): (3,),
        (T, n.SALES, NO_SALES_WHEN_CLOSED): (train_row(1, SUN),),
        (T, f"{n.STORE}, {n.DATE}", RULE_UNIQUE): (4, TRAIN_DAYS * len(TRAIN_STORES) + 1),
        (S, n.STORE_TYPE, isin(n.STORE_TYPE_LEVELS)): (1,),
        (S, n.PROMO_INTERVAL, isin(n.PROMO_INTERVAL_LEVELS)): (3,),
        (F, n.STORE, RULE_STORE_KNOWN): (3,),
        (F, n.DATE, RULE_AFTER_HISTORY): (1,),
        (F, n.DAY_OF_WEEK, DAY_OF_WEEK_MATCHES_DATE): (2,),
    }
    assert failure_keys(report) == set(expected)
    for (role, column, rule), rows in expected.items():
        failure = find(report, role, column, rule)
        assert failure.rows == rows
        assert failure.file == str(paths[role])
    # a report reads file by file
    roles = [f.role for f in report.failures]
    assert roles == sorted(roles, key=[T, S, F].index)


def test_missing_columns_in_one_file_do_not_hide_faults_in_another(tmp_path: Path) -> None:
    inputs = Inputs()
    inputs.rename_column(T, n.DATE, "Day")
    inputs.set(S, 2, n.ASSORTMENT, "x")
    inputs.set(F, 4, n.STORE, "123")
    _, report, _ = run_check(tmp_path, inputs)
    assert failure_keys(report) == {
        (T, n.DATE, RULE_COLUMN_PRESENT),
        (S, n.ASSORTMENT, isin(n.ASSORTMENT_LEVELS)),
        (F, n.STORE, RULE_STORE_KNOWN),
    }


# ---------------------------------------------------------------------------
# the report, the error and the entry points


def sample_report() -> ValidationReport:
    return ValidationReport(
        (
            RuleFailure("data/train.csv", T, n.SALES, GE0, 7, ("-1", "-2"), (3, 9, 12, 15, 20)),
            RuleFailure("data/store.csv", S, n.STORE_TYPE, RULE_COLUMN_PRESENT, 0, ("Store Type",), ()),
        )
    )


def test_report_text_names_file_column_rule_count_examples_rows() -> None:
    text = sample_report().to_text()
    assert "2 rule(s) broken in 2 file(s)" in text
    first_block = text.split("\n\n")[1]
    expected_parts = ("train file data/train.csv", "column:   Sales", GE0, "7 failing", "'-1', '-2'", "first 3, 9, 12, 15")
    for expected in expected_parts:
        assert expected in first_block
    assert "column:   StoreType" in text and RULE_COLUMN_PRESENT in text


def test_empty_report_is_ok_and_says_so() -> None:
    report = ValidationReport()
    assert report.ok
    assert "passed" in report.to_text()
    assert report.to_records() == []


def test_report_records_are_flat() -> None:
    records = sample_report().to_records()
    assert records[0] == {
        "file": "data/train.csv",
        "role": "train",
        "column": n.SALES,
        "rule": GE0,
        "n_rows": 7,
        "examples": "-1, -2",
        "rows": "3, 9, 12, 15, 20",
    }
    assert all(isinstance(v, (str, int)) for record in records for v in record.values())


def test_reports_merge_in_order() -> None:
    a, b = sample_report().failures
    merged = ValidationReport((a,)).merge(ValidationReport((b,)))
    assert merged.failures == (a, b)
    assert ValidationReport().merge(ValidationReport()).ok


def test_error_carries_report_and_its_text() -> None:
    report = sample_report()
    error = InputValidationError(report)
    assert isinstance(error, ValueError)
    assert error.report is report
    assert str(error) == report.to_text()


def test_read_validated_raises_with_the_full_report(tmp_path: Path) -> None:
    inputs = Inputs()
    inputs.set(T, 2, n.SALES, "-1")
    inputs.set(S, 1, n.STORE_TYPE, "e")
    paths = inputs.write(tmp_path)
    with pytest.raises(InputValidationError) as caught:
        read_validated(paths[T], paths[S], paths[F])
    assert len(caught.value.report.failures) == 2
    assert str(paths[T]) in str(caught.value) and str(paths[S]) in str(caught.value)


def test_read_validated_returns_typed_frames(tmp_path: Path) -> None:
    paths = Inputs().write(tmp_path)
    validated = read_validated(paths[T], paths[S], paths[F])
    for role, frame in ((T, validated.train), (S, validated.stores), (F, validated.future)):
        assert frame is not None
        for column, dtype in ingest.TYPED_COLUMNS[role].items():
            assert frame.schema[column] == dtype


def test_missing_file_raises(tmp_path: Path) -> None:
    paths = Inputs().write(tmp_path)
    with pytest.raises(FileNotFoundError, match="stores file not found"):
        check_inputs(paths[T], tmp_path / "nope.csv", paths[F])


def test_unsupported_suffix_raises(tmp_path: Path) -> None:
    paths = Inputs().write(tmp_path)
    future_json = tmp_path / "future.json"
    future_json.write_text("{}")
    with pytest.raises(ValueError, match="unsupported suffix"):
        check_inputs(paths[T], paths[S], future_json)


@pytest.mark.parametrize(
    ("name", "content", "rule"),
    [
        ("train.csv", kaggle_csv(n.TRAIN_COLUMNS, good_train_rows()[:2]) + "1,6,2015-06-13,1,1,1,0,0,0,9,9\n",
         "file reads as CSV"),
        ("train.csv", "", "file reads as CSV"),
        ("train.parquet", "not a parquet file", "file reads as Parquet"),
    ],
    ids=["ragged-csv", "zero-byte-csv", "broken-parquet"],
)
def test_unreadable_file_is_reported_not_raised(tmp_path: Path, name: str, content: str, rule: str) -> None:
    paths = Inputs().write(tmp_path / "good")
    bad = tmp_path / name
    bad.write_text(content)
    validated, report = check_inputs(bad, paths[S], paths[F])
    assert validated is None
    failure = find(report, T, None, rule)
    assert failure.file == str(bad)
    assert failure.examples and failure.examples[0]
    # the other files were still checked
    assert {f.role for f in report.failures} == {T}


def test_missing_column_report_shows_the_near_miss(tmp_path: Path) -> None:
    inputs = Inputs()
    inputs.rename_column(T, n.SALES, "sales ")
    _, report, _ = run_check(tmp_path, inputs)
    assert "columns found that are not expected): 'sales '" in report.to_text()


# ---------------------------------------------------------------------------
# the summary of validated inputs (tasks.data.summary)


def test_summary_of_the_good_fixture(tmp_path: Path) -> None:
    paths = Inputs().write(tmp_path)
    validated = read_validated(paths[T], paths[S], paths[F])
    summary = summarize(validated.train, validated.stores, validated.future)
    n_train = TRAIN_DAYS * len(TRAIN_STORES)
    closed = len(TRAIN_STORES) + 1  # the Sunday, and one public holiday
    assert summary.n_train_rows == n_train
    assert summary.n_stores == 4
    assert summary.n_stores_with_history == len(TRAIN_STORES)
    assert (summary.first_date, summary.last_date) == (SUN, SAT)
    assert summary.n_open_days == n_train - closed
    assert summary.n_open_zero_sales == 1
    assert summary.gapped_stores == summary.late_start_stores == summary.early_end_stores == ()
    assert summary.n_future_rows == FUTURE_DAYS * len(FUTURE_STORES)
    assert summary.n_future_stores == len(FUTURE_STORES)
    assert summary.n_new_stores == 1
    assert summary.n_future_open_missing == 1


def test_summary_tells_gaps_from_late_starts_and_early_ends(tmp_path: Path) -> None:
    inputs = Inputs()
    gap = (train_row(1, dt.date(2015, 6, 10)), train_row(1, dt.date(2015, 6, 11)))
    late = (train_row(3, SUN),)
    early = (train_row(2, SAT),)
    inputs.drop_rows(T, gap + late + early)
    paths = inputs.write(tmp_path)
    validated = read_validated(paths[T], paths[S])
    summary = summarize(validated.train, validated.stores, None)
    assert summary.gapped_stores == ((1, 2),)
    assert summary.late_start_stores == ((3, SUN + dt.timedelta(days=1)),)
    assert summary.early_end_stores == ((2, SAT - dt.timedelta(days=1)),)
    assert (summary.n_future_rows, summary.n_future_stores, summary.n_new_stores) == (0, 0, 0)

    as_dict = json.loads(json.dumps(summary.to_dict()))
    assert as_dict["gapped_stores"] == [{"store": 1, "n_missing_days": 2}]
    assert as_dict["late_start_stores"] == [{"store": 3, "first_date": "2015-06-08"}]
    assert as_dict["n_gapped_stores"] == 1
    text = summary.to_text()
    assert "days missing inside their history: 1 [store (missing days): 1 (2)]" in text
    assert "3 (2015-06-08)" in text


def test_fractional_value_in_a_parquet_float_column_is_reported(tmp_path: Path) -> None:
    paths = Inputs().write(tmp_path)
    # pandas writes an integer column with gaps as floats
    train = pl.read_csv(paths[T], infer_schema=True)
    sales = [float(v) for v in train[n.SALES]]
    sales[1], sales[2] = 2.5, float("nan")
    train = train.with_columns(pl.Series(n.SALES, sales, dtype=pl.Float64))
    parquet = tmp_path / "train.parquet"
    train.write_parquet(parquet)
    _, report = check_inputs(parquet, paths[S], paths[F])
    failure = find(report, T, n.SALES, "parses as Int32")
    assert (failure.rows, failure.n_rows) == ((2, 3), 2)
    assert set(failure.examples) == {"2.5", "NaN"}
    assert failure_keys(report) == {(T, n.SALES, "parses as Int32")}
