"""The lean paths of panel reading (packed keys, the calendar looked up in place, sorting column by column,
column-wise encoding) give what the plain ones give: same tables, same failures, same arrays."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tasks import names as n
from tasks.data import panel_rules as r
from tasks.data.m5_demo import write_m5_demo
from tasks.data.panel_encode import encode_panel
from tasks.data.panel_ingest import read_panel
from tasks.data.spec import load_spec
from tasks.data.validate import InputValidationError


@pytest.fixture(scope="module")
def m5_dirs(tmp_path_factory):
    """A small M5 demo as written (sorted by store, item, date) and the same rows shuffled."""
    ordered = tmp_path_factory.mktemp("m5_ordered")
    write_m5_demo(ordered, n_series=60, n_days=60, horizon=7)
    shuffled = tmp_path_factory.mktemp("m5_shuffled")
    for path in ordered.iterdir():
        if path.name in ("sales.parquet", "future.parquet"):
            pl.read_parquet(path).sample(fraction=1.0, shuffle=True, seed=3).write_parquet(shuffled / path.name)
        else:
            (shuffled / path.name).write_bytes(path.read_bytes())
    return ordered, shuffled


def _tables(folder):
    return read_panel(load_spec(folder / "spec.yaml"), folder, folder / "future.parquet")


def _plain_sort(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(n.SERIES_STORE, n.SERIES_PRODUCT, n.PERIOD)


def test_shuffled_rows_give_the_sorted_tables_of_a_plain_sort(m5_dirs):
    ordered, shuffled = (_tables(folder) for folder in m5_dirs)
    for name in ("sales", "future"):
        frame = getattr(shuffled, name)
        assert_frame_equal(frame, _plain_sort(frame))
        # the file's own rows: the same values, only the row numbers differ
        assert_frame_equal(frame.drop(n.ROW), getattr(ordered, name).drop(n.ROW))
    assert ordered.sales.columns == [n.SERIES_STORE, n.SERIES_PRODUCT, n.PERIOD, n.TARGET, "price", "snap", "event", n.ROW]
    assert_frame_equal(ordered.stores, shuffled.stores)
    assert_frame_equal(ordered.products, shuffled.products)


def test_encoding_does_not_depend_on_the_row_order(m5_dirs):
    ordered, shuffled = (encode_panel(_tables(folder)) for folder in m5_dirs)
    for part in ("history", "future"):
        for field in ("x_series", "y", "observed", "present"):
            np.testing.assert_array_equal(getattr(getattr(ordered, part), field), getattr(getattr(shuffled, part), field))


def test_packed_keys_order_and_compare_as_the_keys_do():
    frame = pl.DataFrame(
        {
            "store": ["b", "a", "b", None, "a", "a", "b"],
            "item": [3, 10, 3, 1, -2, 10, 3],
            "day": pl.Series(["2020-01-02", "2020-01-01", "2020-01-02", "2020-01-01", "2021-05-01", "2020-01-01", "2020-01-01"]).str.to_date(),
        }
    )
    keys = ["store", "item", "day"]
    packed = r.packed_keys(frame, keys)
    assert packed.is_null().to_list() == [False, False, False, True, False, False, False]
    valid = frame.with_columns(packed).drop_nulls()
    assert_frame_equal(valid.sort("_packed").drop("_packed"), valid.sort(keys).drop("_packed"))
    plain = frame.select(pl.len().over(keys).gt(1) & pl.all_horizontal(pl.col(keys).is_not_null())).to_series()
    assert r._duplicated(frame, keys).to_list() == plain.to_list() == [True, True, True, False, False, True, False]
    assert not r.increasing(packed)
    assert r.increasing(r.packed_keys(valid.unique(keys).sort(keys), keys))


def test_packed_keys_among_a_table_are_null_for_keys_it_lacks():
    table = pl.DataFrame({"store": ["x", "y"], "day": pl.Series(["2020-01-01", "2020-01-03"]).str.to_date()})
    frame = pl.DataFrame({"store": ["y", "z", "x"], "day": pl.Series(["2020-01-03", "2020-01-01", "2019-12-31"]).str.to_date()})
    looked = r.packed_keys(frame, ["day", "store"], among=table)
    own = r.packed_keys(table, ["day", "store"])
    assert looked[0] == own[1]
    assert looked.is_null().to_list() == [False, True, True]


def test_duplicate_and_unlisted_failures_are_reported_on_a_shuffled_file(m5_dirs, tmp_path):
    ordered, _ = m5_dirs
    for path in ordered.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    sales = pl.read_parquet(ordered / "sales.parquet")
    broken = pl.concat([sales, sales.slice(5, 2)]).with_columns(
        pl.when(pl.int_range(pl.len()) == 9).then(pl.lit("NOWHERE")).otherwise(pl.col("store_id")).alias("store_id")
    )
    broken.reverse().write_parquet(tmp_path / "sales.parquet")
    with pytest.raises(InputValidationError) as info:
        _tables(tmp_path)
    failures = {f.rule: f for f in info.value.report.failures}
    rows = broken.height
    duplicated = failures[r.RULE_UNIQUE_SERIES_PERIOD]
    assert duplicated.n_rows == 4
    assert duplicated.rows == (1, 2, rows - 6, rows - 5)  # the file reversed: its 1-based rows
    unlisted = failures[r.RULE_STORE_LISTED]
    assert (unlisted.n_rows, unlisted.examples, unlisted.rows) == (1, ("NOWHERE",), (rows - 9,))
