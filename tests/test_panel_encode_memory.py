"""Encoding rows a block at a time (to bound the memory of the 54M rows of M5) gives the arrays that one
block of all the rows gives, with and without stock-outs, and fails on the same unknown key."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import polars as pl
import pytest

from tasks import names as n
from tasks.data import panel_encode
from tasks.data.m5_demo import write_m5_demo
from tasks.data.panel_demo import generate_panel_demo
from tasks.data.panel_encode import encode_panel
from tasks.data.panel_ingest import read_panel
from tasks.data.spec import load_spec


def _arrays(encoded) -> dict[str, np.ndarray | None]:
    parts = {"history": encoded.history, "future": encoded.future}
    return {
        f"{part}.{field.name}": getattr(arrays, field.name)
        for part, arrays in parts.items()
        if arrays is not None
        for field in dataclasses.fields(arrays)
    }


def _assert_same(blocked: dict, whole: dict) -> None:
    assert blocked.keys() == whole.keys()
    for name, expected in whole.items():
        actual = blocked[name]
        if expected is None:
            assert actual is None, name
            continue
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, name
        assert actual.tobytes() == expected.tobytes(), name


@pytest.fixture(scope="module")
def m5_tables(tmp_path_factory):
    folder = tmp_path_factory.mktemp("m5")
    write_m5_demo(folder, n_series=30, n_days=60, horizon=7)
    return read_panel(load_spec(folder / "spec.yaml"), folder, folder / "future.parquet")


@pytest.mark.parametrize("tables_of", ["m5", "censored"])
def test_blocks_of_rows_encode_like_one_block(tables_of, m5_tables, monkeypatch):
    if tables_of == "m5":
        tables = m5_tables
    else:
        demo = generate_panel_demo(seed=1, n_stores=2, n_departments=2, products_per_department=2, n_weeks=30, horizon=4, stockout_share=0.2)
        tables = demo.tables()
    whole = encode_panel(tables)
    monkeypatch.setattr(panel_encode, "ROWS_PER_BLOCK", 97)  # several blocks, the last one short
    blocked = encode_panel(tables)
    assert blocked.encoding == whole.encoding and blocked.n_masked == whole.n_masked
    _assert_same(_arrays(blocked), _arrays(whole))
    if tables_of == "censored":
        assert whole.history.censored.any()


def test_an_unknown_series_in_a_later_block_fails_as_before(m5_tables, monkeypatch):
    encoding = encode_panel(m5_tables).encoding
    last_store = m5_tables.future[n.SERIES_STORE][-1]
    future = m5_tables.future.with_columns(
        pl.when(pl.int_range(pl.len()) == pl.len() - 1).then(pl.lit("nowhere")).otherwise(pl.col(n.SERIES_STORE)).alias(n.SERIES_STORE)
    )
    assert last_store != "nowhere"
    monkeypatch.setattr(panel_encode, "ROWS_PER_BLOCK", 5)
    with pytest.raises(KeyError, match="nowhere"):
        encode_panel(dataclasses.replace(m5_tables, future=future), encoding)


def test_a_models_encoding_leaves_out_rows_of_other_series_and_periods_block_by_block(m5_tables, monkeypatch):
    """What ``encode_for`` relies on: with a given encoding the history is its series and its periods. Rows of
    a series it lacks and of days after its anchor are left out, block by block, giving the arrays of the
    tables restricted beforehand."""
    keys = [n.SERIES_STORE, n.SERIES_PRODUCT]
    sales = m5_tables.sales
    anchor = sales[n.PERIOD].max()
    dropped_series = sales.select(keys).unique().sort(keys).head(1)
    known_sales = sales.join(dropped_series, on=keys, how="anti").filter(pl.col(n.PERIOD) < anchor)
    known_future = m5_tables.future.join(dropped_series, on=keys, how="anti")
    encoding = encode_panel(dataclasses.replace(m5_tables, sales=known_sales, future=known_future)).encoding
    assert encoding.n_series == sales.select(keys).unique().height - 1
    restricted = encode_panel(dataclasses.replace(m5_tables, sales=known_sales, future=None), encoding)

    monkeypatch.setattr(panel_encode, "ROWS_PER_BLOCK", 97)
    everything = encode_panel(dataclasses.replace(m5_tables, future=None), encoding)
    assert sales.height > known_sales.height + 1  # both kinds of rows were there to leave out
    assert everything.n_masked == restricted.n_masked
    _assert_same(_arrays(everything), _arrays(restricted))


def test_a_sales_row_outside_the_periods_of_a_new_encoding_cannot_happen_silently(m5_tables):
    """Without a model's encoding every row is placed, and a row off the periods is an error, not a cell of
    the next series (a cell index past the row's own)."""
    encoding = encode_panel(m5_tables).encoding
    later = m5_tables.sales.tail(1).with_columns(pl.col(n.PERIOD) + pl.duration(days=3))
    lookups = panel_encode._RowLookups.build(encoding, m5_tables.spec)
    periods = panel_encode.period_grid(dt.date.fromisoformat(encoding.first_period), encoding.anchor_date, encoding.period_days)
    with pytest.raises(ValueError, match="outside the encoding's periods"):
        panel_encode._cells(later, lookups, encoding.period_days, periods, keep_inside=False)
