"""Integration on the real Rossmann files: they pass, their known quirks are found, and planted
faults in copies of them are reported where they were planted.

The folder comes from BHM_ROSSMANN_DIR (CI sets it to ../shared/data/rossmann); without it the
module is skipped. Each real file is read once per module.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from schemas.raw import NO_SALES_WHEN_CLOSED
from tasks import names as n
from tasks.data.summary import DataSummary, summarize
from tasks.data.validate import (
    RULE_AFTER_HISTORY,
    RULE_STORE_KNOWN,
    RULE_UNIQUE,
    RuleFailure,
    ValidatedInputs,
    ValidationReport,
    check_inputs,
)
from tasks.names import FileRole

ENV_DIR = "BHM_ROSSMANN_DIR"

# Facts of the published files (see the data folder's README.md), checked here.
N_TRAIN_ROWS = 963_689
N_STORES = 1_115
FIRST_DATE = dt.date(2013, 1, 1)
LAST_DATE = dt.date(2015, 6, 13)
N_GAPPED_STORES = 180
GAP_FIRST, GAP_LAST = dt.date(2014, 7, 1), dt.date(2014, 12, 31)
GAP_DAYS = (GAP_LAST - GAP_FIRST).days + 1  # 184
LATE_STORE = 988  # no row for 2013-01-01
N_OPEN_DAYS = 798_508
N_OPEN_ZERO_SALES = 54
STORES_WITHOUT_COMPETITION_DISTANCE = (291, 622, 879)

# A generous bound: the check takes well under a second here on 2 cores; a
# Python loop over rows would take tens of seconds.
MAX_CHECK_SECONDS = 15.0

pytestmark = pytest.mark.skipif(
    not os.environ.get(ENV_DIR),
    reason=f"{ENV_DIR} is not set: point it at the folder holding Rossmann's train.csv and store.csv",
)


@pytest.fixture(scope="module")
def data_dir() -> Path:
    value = os.environ[ENV_DIR]
    folder = Path(value)
    for name in ("train.csv", "store.csv"):
        if not (folder / name).is_file():
            pytest.fail(f"{ENV_DIR}={value}: {name} not found there")
    return folder


@dataclass(frozen=True)
class Checked:
    inputs: ValidatedInputs | None
    report: ValidationReport
    seconds: float


@pytest.fixture(scope="module")
def real(data_dir: Path) -> Checked:
    start = time.perf_counter()
    inputs, report = check_inputs(data_dir / "train.csv", data_dir / "store.csv")
    return Checked(inputs, report, time.perf_counter() - start)


@pytest.fixture(scope="module")
def real_inputs(real: Checked) -> ValidatedInputs:
    assert real.report.ok, real.report.to_text()
    assert real.inputs is not None
    return real.inputs


@pytest.fixture(scope="module")
def summary(real_inputs: ValidatedInputs) -> DataSummary:
    return summarize(real_inputs.train, real_inputs.stores, None)


# ---------------------------------------------------------------------------
# the real files pass, quickly


def test_real_files_pass(real: Checked) -> None:
    assert real.report.ok, real.report.to_text()


def test_real_files_check_quickly(real: Checked) -> None:
    assert real.seconds < MAX_CHECK_SECONDS


def test_real_row_and_store_counts(real_inputs: ValidatedInputs) -> None:
    assert real_inputs.train.height == N_TRAIN_ROWS
    assert real_inputs.stores.height == N_STORES
    assert real_inputs.train[n.ROW].to_list()[:3] == [1, 2, 3]  # file order kept


def test_state_holiday_keeps_its_letters(real_inputs: ValidatedInputs) -> None:
    assert sorted(real_inputs.train[n.STATE_HOLIDAY].unique().to_list()) == list(n.STATE_HOLIDAY_LEVELS)


def test_stores_without_competition_distance(real_inputs: ValidatedInputs) -> None:
    stores = real_inputs.stores.filter(pl.col(n.COMPETITION_DISTANCE).is_null())[n.STORE].sort().to_list()
    assert tuple(stores) == STORES_WITHOUT_COMPETITION_DISTANCE


# ---------------------------------------------------------------------------
# the summary finds the known quirks


def test_summary_counts(summary: DataSummary) -> None:
    assert summary.n_train_rows == N_TRAIN_ROWS
    assert summary.n_stores == N_STORES
    assert summary.n_stores_with_history == N_STORES
    assert (summary.first_date, summary.last_date) == (FIRST_DATE, LAST_DATE)
    assert summary.n_open_days == N_OPEN_DAYS
    assert summary.n_open_zero_sales == N_OPEN_ZERO_SALES
    assert (summary.n_future_rows, summary.n_future_stores, summary.n_new_stores) == (0, 0, 0)


def test_summary_finds_the_half_year_gap(summary: DataSummary, real_inputs: ValidatedInputs) -> None:
    assert summary.n_gapped_stores == N_GAPPED_STORES
    assert {days for _, days in summary.gapped_stores} == {GAP_DAYS}
    gapped = [store for store, _ in summary.gapped_stores]
    in_gap = real_inputs.train.filter(
        pl.col(n.STORE).is_in(gapped) & pl.col(n.DATE).is_between(GAP_FIRST, GAP_LAST)
    )
    assert in_gap.is_empty()


def test_store_988_starts_late_and_is_not_gapped(summary: DataSummary) -> None:
    # Its only missing day lies before its first date: a late start, not a gap in its history.
    assert LATE_STORE not in {store for store, _ in summary.gapped_stores}
    assert summary.late_start_stores == ((LATE_STORE, FIRST_DATE + dt.timedelta(days=1)),)
    assert summary.early_end_stores == ()


def test_summary_is_json_friendly(summary: DataSummary) -> None:
    as_dict = json.loads(json.dumps(summary.to_dict()))
    assert as_dict["n_gapped_stores"] == N_GAPPED_STORES
    assert as_dict["first_date"] == FIRST_DATE.isoformat()
    assert "180" in summary.to_text()


# ---------------------------------------------------------------------------
# a future calendar after the real history

FUTURE_DAYS = 48  # the days Kaggle held out: 2015-06-14 .. 2015-07-31


def future_calendar(stores: list[int]) -> pl.DataFrame:
    """A test.csv-style calendar: every store on every day after the history, as text."""
    days = pl.date_range(LAST_DATE + dt.timedelta(days=1), LAST_DATE + dt.timedelta(days=FUTURE_DAYS), eager=True)
    grid = pl.DataFrame({n.STORE: stores}).join(pl.DataFrame({n.DATE: days}), how="cross")
    return grid.select(
        pl.int_range(1, pl.len() + 1).alias(n.ID),
        pl.col(n.STORE),
        pl.col(n.DATE).dt.weekday().alias(n.DAY_OF_WEEK),
        pl.col(n.DATE),
        (pl.col(n.DATE).dt.weekday() != 7).cast(pl.Int8).alias(n.OPEN),
        pl.lit(0).alias(n.PROMO),
        pl.lit("0").alias(n.STATE_HOLIDAY),
        pl.lit("0").alias(n.SCHOOL_HOLIDAY),
    ).cast(pl.String)


def test_real_history_with_a_future_calendar(data_dir: Path, tmp_path: Path) -> None:
    future = future_calendar(list(range(1, N_STORES + 1)))
    # Kaggle's test.csv leaves Open blank on some rows
    future = future.with_columns(pl.when(pl.col(n.ID) == "5").then(None).otherwise(pl.col(n.OPEN)).alias(n.OPEN))
    future_path = tmp_path / "future.csv"
    future.write_csv(future_path)
    inputs, report = check_inputs(data_dir / "train.csv", data_dir / "store.csv", future_path)
    assert report.ok, report.to_text()
    assert inputs is not None and inputs.future is not None
    summary = summarize(inputs.train, inputs.stores, inputs.future)
    assert summary.n_future_rows == N_STORES * FUTURE_DAYS
    assert summary.n_future_stores == N_STORES
    assert summary.n_new_stores == 0
    assert summary.n_future_open_missing == 1


# ---------------------------------------------------------------------------
# planted faults in copies of the real files, all reported in one run

NEGATIVE_SALES_ROW = 10
BAD_HOLIDAY_ROW = 20
DUPLICATED_ROW = 30
DROPPED_STORE = 1115  # removed from the copy of store.csv
EARLY_FUTURE_STORE = 1


@dataclass(frozen=True)
class Planted:
    report: ValidationReport
    paths: dict[FileRole, Path]
    closed_row: int  # the closed day given sales
    n_dropped_store_rows: int


def replace_at(frame: pl.DataFrame, row: int, column: str, value: str) -> pl.DataFrame:
    """Set ``column`` of 1-based data row ``row`` to ``value``."""
    at_row = pl.int_range(1, pl.len() + 1) == row
    return frame.with_columns(pl.when(at_row).then(pl.lit(value)).otherwise(pl.col(column)).alias(column))


@pytest.fixture(scope="module")
def planted(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Planted:
    folder = tmp_path_factory.mktemp("planted")
    train = pl.read_csv(data_dir / "train.csv", infer_schema=False)
    stores = pl.read_csv(data_dir / "store.csv", infer_schema=False)

    is_row = pl.int_range(1, pl.len() + 1)
    closed_row = int(
        train.with_columns(is_row.alias("_row"))
        .filter((pl.col(n.OPEN) == "0") & (pl.col(n.STORE) != str(DROPPED_STORE)))["_row"]
        .first()
    )
    train = replace_at(train, NEGATIVE_SALES_ROW, n.SALES, "-5")
    train = replace_at(train, BAD_HOLIDAY_ROW, n.STATE_HOLIDAY, "z")
    train = replace_at(train, closed_row, n.SALES, "100")
    train = pl.concat([train, train.slice(DUPLICATED_ROW - 1, 1)])
    stores = stores.filter(pl.col(n.STORE) != str(DROPPED_STORE))

    future = future_calendar([EARLY_FUTURE_STORE, 2])
    # the first row of store 1 moves back onto its last history day
    future = replace_at(future, 1, n.DATE, LAST_DATE.isoformat())
    future = replace_at(future, 1, n.DAY_OF_WEEK, str(LAST_DATE.isoweekday()))

    paths = {
        FileRole.TRAIN: folder / "train.csv",
        FileRole.STORES: folder / "store.csv",
        FileRole.FUTURE: folder / "test.csv",
    }
    train.write_csv(paths[FileRole.TRAIN])
    stores.write_csv(paths[FileRole.STORES])
    future.write_csv(paths[FileRole.FUTURE])
    n_dropped = train.filter(pl.col(n.STORE) == str(DROPPED_STORE)).height
    _, report = check_inputs(paths[FileRole.TRAIN], paths[FileRole.STORES], paths[FileRole.FUTURE])
    return Planted(report, paths, closed_row, n_dropped)


def only(report: ValidationReport, role: FileRole, column: str, rule: str) -> RuleFailure:
    matches = [f for f in report.failures if (f.role, f.column, f.rule) == (role, column, rule)]
    assert len(matches) == 1, report.to_text()
    return matches[0]


def test_planted_faults_and_nothing_else(planted: Planted) -> None:
    keys = {(f.role, f.column, f.rule) for f in planted.report.failures}
    assert keys == {
        (FileRole.TRAIN, n.SALES, "greater_than_or_equal_to(0)"),
        (FileRole.TRAIN, n.SALES, NO_SALES_WHEN_CLOSED),
        (FileRole.TRAIN, n.STATE_HOLIDAY, f"isin({list(n.STATE_HOLIDAY_LEVELS)!r})"),
        (FileRole.TRAIN, f"{n.STORE}, {n.DATE}", RULE_UNIQUE),
        (FileRole.TRAIN, n.STORE, RULE_STORE_KNOWN),
        (FileRole.FUTURE, n.DATE, RULE_AFTER_HISTORY),
    }
    assert all(f.file == str(planted.paths[f.role]) for f in planted.report.failures)


def test_planted_negative_sales(planted: Planted) -> None:
    failure = only(planted.report, FileRole.TRAIN, n.SALES, "greater_than_or_equal_to(0)")
    assert (failure.n_rows, failure.rows, failure.examples) == (1, (NEGATIVE_SALES_ROW,), ("-5",))


def test_planted_unknown_state_holiday(planted: Planted) -> None:
    failure = only(planted.report, FileRole.TRAIN, n.STATE_HOLIDAY, f"isin({list(n.STATE_HOLIDAY_LEVELS)!r})")
    assert (failure.n_rows, failure.rows, failure.examples) == (1, (BAD_HOLIDAY_ROW,), ("z",))


def test_planted_sales_on_closed_day(planted: Planted) -> None:
    failure = only(planted.report, FileRole.TRAIN, n.SALES, NO_SALES_WHEN_CLOSED)
    assert (failure.n_rows, failure.rows, failure.examples) == (1, (planted.closed_row,), ("Open=0, Sales=100",))


def test_planted_duplicate_store_date(planted: Planted) -> None:
    failure = only(planted.report, FileRole.TRAIN, f"{n.STORE}, {n.DATE}", RULE_UNIQUE)
    assert failure.n_rows == 2
    assert failure.rows == (DUPLICATED_ROW, N_TRAIN_ROWS + 1)
    assert failure.examples == (f"Store={DUPLICATED_ROW}, Date={LAST_DATE.isoformat()}",)


def test_planted_store_missing_from_stores_file(planted: Planted) -> None:
    failure = only(planted.report, FileRole.TRAIN, n.STORE, RULE_STORE_KNOWN)
    assert failure.examples == (str(DROPPED_STORE),)
    assert failure.n_rows == planted.n_dropped_store_rows > 0
    assert failure.rows[0] == DROPPED_STORE  # newest day first, stores ascending: row 1115 is its first


def test_planted_future_inside_history(planted: Planted) -> None:
    failure = only(planted.report, FileRole.FUTURE, n.DATE, RULE_AFTER_HISTORY)
    assert failure.rows == (1,)
    assert failure.examples == (
        f"Store={EARLY_FUTURE_STORE}, Date={LAST_DATE.isoformat()} (last train date {LAST_DATE.isoformat()})",
    )


def test_planted_report_text_points_at_the_rows(planted: Planted) -> None:
    text = planted.report.to_text()
    assert "6 rule(s) broken in 2 file(s)" in text
    assert f"at rows:  {NEGATIVE_SALES_ROW} " in text
