"""tasks.data.ingest: CSV and Parquet read alike, types are explicit, bad values are reported, not raised."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from tasks import names as n
from tasks.data import ingest
from tasks.names import FileRole

# Kaggle's own quoting: header quoted, StateHoliday and SchoolHoliday quoted.
TRAIN_CSV = """\
"Store","DayOfWeek","Date","Sales","Customers","Open","Promo","StateHoliday","SchoolHoliday"
1,6,2015-06-13,4256,502,1,0,"0","0"
2,6,2015-06-13,0,0,0,0,"a","1"
1,5,2015-06-12,5000,600,1,1,"0","0"
2,5,2015-06-12,0,0,1,1,"0","1"
"""

STORES_CSV = """\
"Store","StoreType","Assortment","CompetitionDistance","CompetitionOpenSinceMonth","CompetitionOpenSinceYear","Promo2","Promo2SinceWeek","Promo2SinceYear","PromoInterval"
1,"c","a",1270,9,2008,0,,,""
2,"a","a",,,,1,13,2010,"Jan,Apr,Jul,Oct"
3,"a","c",620,9,2009,0,,,
"""

FUTURE_CSV = """\
"Id","Store","DayOfWeek","Date","Open","Promo","StateHoliday","SchoolHoliday"
1,1,7,2015-06-14,0,0,"0","0"
2,2,7,2015-06-14,,0,"0","0"
3,1,1,2015-06-15,1,1,"0","0"
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def read_typed(path: Path, role: FileRole) -> pl.DataFrame:
    return ingest.cast_typed(ingest.scan_raw(path, role), role).collect().sort(n.ROW)


def as_guessing_parquet(csv_path: Path, tmp_path: Path) -> Path:
    """The CSV converted by a reader that guesses types, as a user's own tooling would."""
    parquet_path = tmp_path / (csv_path.stem + ".parquet")
    pl.read_csv(csv_path, infer_schema=True).write_parquet(parquet_path)
    return parquet_path


@pytest.mark.parametrize(
    ("role", "text"),
    [(FileRole.TRAIN, TRAIN_CSV), (FileRole.STORES, STORES_CSV), (FileRole.FUTURE, FUTURE_CSV)],
)
def test_csv_and_parquet_read_alike(tmp_path: Path, role: FileRole, text: str) -> None:
    csv_path = write(tmp_path, f"{role.value}.csv", text)
    from_csv = read_typed(csv_path, role)
    from_parquet = read_typed(as_guessing_parquet(csv_path, tmp_path), role)
    assert from_csv.schema == from_parquet.schema
    assert from_csv.equals(from_parquet)


def test_typed_parquet_reads_like_csv(tmp_path: Path) -> None:
    csv_path = write(tmp_path, "train.csv", TRAIN_CSV)
    from_csv = read_typed(csv_path, FileRole.TRAIN)
    parquet_path = tmp_path / "typed.parquet"
    from_csv.drop(n.ROW).write_parquet(parquet_path)
    assert read_typed(parquet_path, FileRole.TRAIN).equals(from_csv)


def test_pq_suffix_is_parquet(tmp_path: Path) -> None:
    csv_path = write(tmp_path, "train.csv", TRAIN_CSV)
    pq_path = tmp_path / "train.pq"
    pl.read_csv(csv_path).write_parquet(pq_path)
    assert read_typed(pq_path, FileRole.TRAIN).height == 4


def test_types_are_the_declared_ones(tmp_path: Path) -> None:
    typed = read_typed(write(tmp_path, "train.csv", TRAIN_CSV), FileRole.TRAIN)
    for column, dtype in ingest.TYPED_COLUMNS[FileRole.TRAIN].items():
        assert typed.schema[column] == dtype, column
    assert typed[n.DATE].to_list()[:1] == [dt.date(2015, 6, 13)]


def test_row_is_one_based_data_row(tmp_path: Path) -> None:
    typed = read_typed(write(tmp_path, "train.csv", TRAIN_CSV), FileRole.TRAIN)
    assert typed[n.ROW].to_list() == [1, 2, 3, 4]


def test_quoted_state_holiday_stays_a_string(tmp_path: Path) -> None:
    typed = read_typed(write(tmp_path, "train.csv", TRAIN_CSV), FileRole.TRAIN)
    assert typed.schema[n.STATE_HOLIDAY] == pl.String()
    assert typed[n.STATE_HOLIDAY].to_list() == ["0", "a", "0", "0"]


def test_all_zero_state_holiday_in_a_guessed_parquet_is_still_text(tmp_path: Path) -> None:
    # A type-guessing reader makes an all-"0" StateHoliday an integer column.
    only_zero = "\n".join(line for line in TRAIN_CSV.splitlines() if '"a"' not in line) + "\n"
    parquet_path = as_guessing_parquet(write(tmp_path, "train.csv", only_zero), tmp_path)
    assert pl.read_parquet(parquet_path).schema[n.STATE_HOLIDAY].is_integer()
    assert read_typed(parquet_path, FileRole.TRAIN)[n.STATE_HOLIDAY].to_list() == ["0", "0", "0"]


def test_blank_future_open_is_open_and_flagged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "future.csv", FUTURE_CSV)
    typed = read_typed(path, FileRole.FUTURE)
    assert typed[n.OPEN].to_list() == [0, 1, 1]
    assert typed[n.OPEN_WAS_MISSING].to_list() == [False, True, False]
    with caplog.at_level("WARNING"):
        assert ingest.log_blank_open(typed, path) == 1
    assert "blank on 1 rows" in caplog.text


def test_future_without_id_gets_null_ids(tmp_path: Path) -> None:
    no_id = "\n".join(line.split(",", 1)[1] for line in FUTURE_CSV.splitlines()) + "\n"
    raw = ingest.scan_raw(write(tmp_path, "future.csv", no_id), FileRole.FUTURE)
    assert ingest.missing_columns(raw, FileRole.FUTURE) == []
    typed = ingest.cast_typed(raw, FileRole.FUTURE).collect()
    assert typed[n.ID].null_count() == typed.height


def test_blank_promo_interval_becomes_empty_level(tmp_path: Path) -> None:
    typed = read_typed(write(tmp_path, "stores.csv", STORES_CSV), FileRole.STORES)
    # quoted "" and an unquoted blank field alike
    assert typed[n.PROMO_INTERVAL].to_list() == ["", "Jan,Apr,Jul,Oct", ""]
    assert n.PROMO_INTERVAL_LEVELS[0] == ""


def test_blank_numbers_are_null_not_zero(tmp_path: Path) -> None:
    typed = read_typed(write(tmp_path, "stores.csv", STORES_CSV), FileRole.STORES)
    assert typed[n.COMPETITION_DISTANCE].to_list() == [1270.0, None, 620.0]
    assert typed[n.PROMO2_SINCE_WEEK].to_list() == [None, 13, None]


def test_integer_written_as_float_text_parses(tmp_path: Path) -> None:
    text = TRAIN_CSV.replace(",4256,", ",4256.0,")
    path = write(tmp_path, "train.csv", text)
    raw = ingest.scan_raw(path, FileRole.TRAIN).collect()
    typed = ingest.cast_typed(raw.lazy(), FileRole.TRAIN).collect()
    assert typed.sort(n.ROW)[n.SALES][0] == 4256
    assert ingest.parse_failures(raw, typed, FileRole.TRAIN) == {}


def test_unparseable_value_does_not_raise_and_is_reported(tmp_path: Path) -> None:
    text = TRAIN_CSV.replace(",4256,", ",12x,").replace("2015-06-12,5000", "2015-13-12,5000")
    raw = ingest.scan_raw(write(tmp_path, "train.csv", text), FileRole.TRAIN).collect()
    typed = ingest.cast_typed(raw.lazy(), FileRole.TRAIN).collect()
    failures = ingest.parse_failures(raw, typed, FileRole.TRAIN)
    assert set(failures) == {n.SALES, n.DATE}
    assert failures[n.SALES].to_dicts() == [{n.ROW: 1, n.SALES: "12x"}]
    assert failures[n.DATE].to_dicts() == [{n.ROW: 3, n.DATE: "2015-13-12"}]


def test_blank_value_is_not_a_parse_failure(tmp_path: Path) -> None:
    text = TRAIN_CSV.replace(",4256,502,", ",,502,")
    raw = ingest.scan_raw(write(tmp_path, "train.csv", text), FileRole.TRAIN).collect()
    typed = ingest.cast_typed(raw.lazy(), FileRole.TRAIN).collect()
    assert ingest.parse_failures(raw, typed, FileRole.TRAIN) == {}
    assert typed[n.SALES].null_count() == 1


def test_missing_columns_are_named(tmp_path: Path) -> None:
    text = TRAIN_CSV.replace('"Sales"', '"Revenue"')
    raw = ingest.scan_raw(write(tmp_path, "train.csv", text), FileRole.TRAIN)
    assert ingest.missing_columns(raw, FileRole.TRAIN) == [n.SALES]


def test_customers_is_optional(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    pl.read_csv(TRAIN_CSV.encode(), infer_schema=False).drop(n.CUSTOMERS).write_csv(path)
    raw = ingest.scan_raw(path, FileRole.TRAIN)
    assert n.CUSTOMERS not in raw.collect_schema().names()
    assert ingest.missing_columns(raw, FileRole.TRAIN) == []
    assert ingest.cast_typed(raw, FileRole.TRAIN).collect()[n.CUSTOMERS].null_count() == 4


def test_unsupported_suffix_raises_clearly(tmp_path: Path) -> None:
    path = write(tmp_path, "train.xlsx", TRAIN_CSV)
    with pytest.raises(ValueError, match=r"unsupported suffix '\.xlsx'.*\.csv"):
        ingest.scan_raw(path, FileRole.TRAIN)


def test_missing_file_raises_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train file not found"):
        ingest.scan_raw(tmp_path / "nope.csv", FileRole.TRAIN)
