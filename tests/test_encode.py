"""tasks.data.encode: contrasts, calendar alignment, the observed mask, fixed categories, and the
promise that a future calendar encodes exactly like the same days inside history."""

from __future__ import annotations

import datetime as dt
import functools

import numpy as np
import pandera.polars as pa
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.encoded import store_day_rows_schema
from tasks import names as n
from tasks.data import encode as enc
from tasks.data import features as fx
from tasks.data import ingest
from tasks.data.demo import DemoData, generate_demo
from tasks.names import FileRole

MONDAY = dt.date(2015, 6, 1)


# --------------------------------------------------------------------------
# hand-made frames, typed as ingest types them


def day(offset: int) -> dt.date:
    return MONDAY + dt.timedelta(days=offset)


def train_frame(rows: list[dict]) -> pl.DataFrame:
    """Train rows; DayOfWeek from the date, other columns defaulted where not given."""
    defaults = {n.CUSTOMERS: 0, n.PROMO: 0, n.STATE_HOLIDAY: "0", n.SCHOOL_HOLIDAY: 0}
    full = [{**defaults, **row, n.DAY_OF_WEEK: row[n.DATE].isoweekday()} for row in rows]
    return pl.DataFrame(full).select(pl.col(c).cast(t) for c, t in ingest.TYPED_COLUMNS[FileRole.TRAIN].items())


def future_frame(rows: list[dict]) -> pl.DataFrame:
    defaults = {n.PROMO: 0, n.STATE_HOLIDAY: "0", n.SCHOOL_HOLIDAY: 0, n.OPEN: 1}
    full = [{**defaults, **row, n.ID: i, n.DAY_OF_WEEK: row[n.DATE].isoweekday()} for i, row in enumerate(rows, 1)]
    return pl.DataFrame(full).select(pl.col(c).cast(t) for c, t in ingest.TYPED_COLUMNS[FileRole.FUTURE].items())


def stores_frame(rows: list[dict]) -> pl.DataFrame:
    defaults = {
        n.STORE_TYPE: "a",
        n.ASSORTMENT: "a",
        n.COMPETITION_DISTANCE: 500.0,
        n.COMPETITION_OPEN_SINCE_MONTH: None,
        n.COMPETITION_OPEN_SINCE_YEAR: None,
        n.PROMO2: 0,
        n.PROMO2_SINCE_WEEK: None,
        n.PROMO2_SINCE_YEAR: None,
        n.PROMO_INTERVAL: "",
    }
    full = [{**defaults, **row} for row in rows]
    return pl.DataFrame(full, infer_schema_length=None).select(
        pl.col(c).cast(t) for c, t in ingest.TYPED_COLUMNS[FileRole.STORES].items()
    )


def features_of(train: pl.DataFrame, stores: pl.DataFrame) -> pl.DataFrame:
    """Long-format store-day features, one row per train row, sorted by store and date."""
    rows = enc.calendar_rows(train.lazy())
    return enc.store_day_features(rows, stores.lazy()).collect().sort(n.STORE, n.DATE)


def column_of(panel: enc.EncodedPanel, spec: enc.EncodingSpec, name: str) -> np.ndarray:
    """One store-day feature as an [S, T] array."""
    return panel.store_day_x[..., spec.feature_names(fx.Scope.STORE_DAY).index(name)]


# --------------------------------------------------------------------------
# contrasts, not one-hot


def test_category_blocks_are_contrasts_against_a_reference_level() -> None:
    spec = enc.EncodingSpec()
    date_names = spec.feature_names(fx.Scope.DATE)
    assert [f for f in date_names if f.startswith("weekday_")] == [f"weekday_{d}" for d in range(2, 8)]
    store_day = spec.feature_names(fx.Scope.STORE_DAY)
    # any holiday against none, then the holiday types b and c against a
    assert [f for f in store_day if f.startswith("state_holiday")] == ["state_holiday", "state_holiday_b", "state_holiday_c"]
    store = spec.feature_names(fx.Scope.STORE)
    assert [f for f in store if f.startswith("store_type_")] == ["store_type_b", "store_type_c", "store_type_d"]
    assert [f for f in store if f.startswith("assortment_")] == ["assortment_b", "assortment_c"]


def test_weekday_features_are_six_contrasts_against_monday() -> None:
    spec = enc.EncodingSpec()
    week = pl.LazyFrame({n.DATE: [day(i) for i in range(7)]})
    frame = enc.date_features(week, spec).collect()
    weekday = frame.select(fx.WEEKDAY_FEATURES).cast(pl.Int8).to_numpy()
    assert weekday.shape == (7, 6)
    assert weekday[0].sum() == 0  # Monday: the reference, no column of its own
    np.testing.assert_array_equal(weekday[1:], np.eye(6, dtype=np.int8))  # Tuesday..Sunday: one each


def test_year_end_days_each_have_their_own_flag() -> None:
    december = pl.LazyFrame({n.DATE: [dt.date(2014, 12, 1) + dt.timedelta(days=i) for i in range(38)]})
    frame = enc.date_features(december, enc.EncodingSpec()).collect()
    flagged = {name: [d.day for d, on in zip(frame[n.DATE], frame[name], strict=True) if on] for name in fx.YEAR_END_FEATURES}
    assert flagged == {
        fx.CHRISTMAS_RUSH_FEATURE: [16, 17, 18, 19, 20, 21],
        fx.CHRISTMAS_LAST_DAYS_FEATURE: [22, 23],
        fx.CHRISTMAS_EVE_FEATURE: [24],
        fx.NEW_YEAR_RUSH_FEATURE: [29, 30],
        fx.NEW_YEARS_EVE_FEATURE: [31],
    }  # and nothing in January


def test_state_holiday_and_store_attributes_are_contrasts() -> None:
    train = train_frame(
        [{n.STORE: 1, n.DATE: day(i), n.SALES: 100, n.OPEN: 1, n.STATE_HOLIDAY: h} for i, h in enumerate("0abc")]
    )
    stores = stores_frame([{n.STORE: 1, n.STORE_TYPE: "d", n.ASSORTMENT: "a"}])
    spec = enc.build_spec(stores)
    panel = enc.encode(train, stores, spec=spec).history
    names = (fx.STATE_HOLIDAY_FEATURE, *fx.HOLIDAY_TYPE_FEATURES)
    holiday = np.stack([column_of(panel, spec, name)[0] for name in names], axis=1)
    np.testing.assert_array_equal(holiday, [[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 0, 1]])
    z = dict(zip(spec.feature_names(fx.Scope.STORE), panel.store_z[0], strict=True))
    assert [z[f] for f in fx.STORE_TYPE_FEATURES] == [0, 0, 1]
    assert [z[f] for f in fx.ASSORTMENT_FEATURES] == [0, 0]  # "a" is the reference


# --------------------------------------------------------------------------
# alignment by calendar date, and the observed mask


def test_days_are_aligned_by_calendar_date_not_shifted() -> None:
    store2_days = [0, 1, 2, 7, 8, 9]  # days 3..6 missing: a gap inside the history
    rows = [{n.STORE: 1, n.DATE: day(i), n.SALES: 1000 + i, n.OPEN: 1} for i in range(10)]
    rows += [{n.STORE: 2, n.DATE: day(i), n.SALES: 2000 + i, n.OPEN: 1} for i in store2_days]
    stores = stores_frame([{n.STORE: 1}, {n.STORE: 2}])
    panel = enc.encode(train_frame(rows), stores).history

    assert panel.dates[0] == np.datetime64(day(0)) and panel.n_days == 10
    assert list(panel.stores) == [1, 2]
    np.testing.assert_array_equal(panel.sales[1], [2000, 2001, 2002, 0, 0, 0, 0, 2007, 2008, 2009])
    np.testing.assert_array_equal(panel.present[1], [i in store2_days for i in range(10)])
    np.testing.assert_array_equal(panel.observed[1], panel.present[1])
    np.testing.assert_array_equal(panel.sales[0], 1000 + np.arange(10))


def test_observed_mask_is_exactly_open_days_with_sales() -> None:
    rows = [
        {n.STORE: 1, n.DATE: day(0), n.SALES: 100, n.OPEN: 1},
        {n.STORE: 1, n.DATE: day(1), n.SALES: 0, n.OPEN: 0},  # closed
        {n.STORE: 1, n.DATE: day(2), n.SALES: 0, n.OPEN: 1},  # open, zero sales: a data error
        # day 3 missing
        {n.STORE: 1, n.DATE: day(4), n.SALES: 50, n.OPEN: 1},
    ]
    panel = enc.encode(train_frame(rows), stores_frame([{n.STORE: 1}])).history
    np.testing.assert_array_equal(panel.observed[0], [True, False, False, False, True])
    np.testing.assert_array_equal(panel.present[0], [True, True, True, False, True])
    np.testing.assert_array_equal(panel.open[0], [True, False, True, False, True])
    np.testing.assert_array_equal(panel.sales[0], [100, 0, 0, 0, 50])


# --------------------------------------------------------------------------
# fixed categories and the persisted spec


@pytest.mark.parametrize(
    ("frame", "column", "value"),
    [("train", n.STATE_HOLIDAY, "x"), ("stores", n.STORE_TYPE, "e"), ("stores", n.ASSORTMENT, "z"), ("future", n.STATE_HOLIDAY, "d")],
)
def test_unknown_category_raises_naming_column_and_value(frame: str, column: str, value: str) -> None:
    train = train_frame([{n.STORE: 1, n.DATE: day(i), n.SALES: 100, n.OPEN: 1} for i in range(3)])
    stores = stores_frame([{n.STORE: 1}])
    future = future_frame([{n.STORE: 1, n.DATE: day(3)}])
    frames = {"train": train, "stores": stores, "future": future}
    frames[frame] = frames[frame].with_columns(pl.lit(value).alias(column))
    with pytest.raises(ValueError, match=rf"(?s){frame}.*{column}.*'{value}'"):
        enc.encode(frames["train"], frames["stores"], frames["future"], enc.build_spec(stores))


def test_spec_json_round_trip() -> None:
    stores = stores_frame([{n.STORE: 1, n.COMPETITION_DISTANCE: 100.0}, {n.STORE: 2, n.COMPETITION_DISTANCE: 9000.0}])
    spec = enc.build_spec(stores, yearly_fourier_order=3, monthly_fourier_order=1)
    assert spec.log_competition_distance_std > 0 and spec.log_competition_distance_mean != 0
    again = enc.EncodingSpec.from_json(spec.to_json())
    assert again == spec
    assert again.features == spec.features


def test_spec_of_another_version_is_refused() -> None:
    text = enc.EncodingSpec().to_json().replace(f'"version": {enc.SPEC_VERSION}', '"version": 999')
    with pytest.raises(ValueError, match="version"):
        enc.EncodingSpec.from_json(text)


# --------------------------------------------------------------------------
# store-day features


def test_before_and_after_closure_flag_the_neighbours_of_a_midweek_closure_only() -> None:
    # Two weeks Monday..Sunday; Sundays closed (weekly, not flagged), Wednesday of week 2 closed (flagged).
    closed = {6, 13, 9}
    rows = [
        {n.STORE: 1, n.DATE: day(i), n.SALES: 0 if i in closed else 100, n.OPEN: int(i not in closed)} for i in range(14)
    ]
    frame = features_of(train_frame(rows), stores_frame([{n.STORE: 1}]))
    before = frame[fx.BEFORE_CLOSURE_FEATURE].to_list()
    after = frame[fx.AFTER_CLOSURE_FEATURE].to_list()
    assert [i for i, flag in enumerate(before) if flag] == [8]  # Tuesday before the Wednesday closure
    assert [i for i, flag in enumerate(after) if flag] == [10]  # Thursday after it


def test_promo2_active_follows_interval_months_and_start_week() -> None:
    stores = stores_frame(
        [
            # Week 14 of 2015 starts 2015-01-01 + 13 weeks = 2015-04-02.
            {n.STORE: 1, n.PROMO2: 1, n.PROMO2_SINCE_WEEK: 14, n.PROMO2_SINCE_YEAR: 2015, n.PROMO_INTERVAL: "Jan,Apr,Jul,Oct"},
            {n.STORE: 2, n.PROMO2: 1, n.PROMO2_SINCE_WEEK: 1, n.PROMO2_SINCE_YEAR: 2015, n.PROMO_INTERVAL: "Mar,Jun,Sept,Dec"},
            {n.STORE: 3, n.PROMO2: 0, n.PROMO_INTERVAL: ""},
        ]
    )
    cases = {
        (1, dt.date(2015, 1, 15)): False,  # interval month, before the start
        (1, dt.date(2015, 4, 1)): False,
        (1, dt.date(2015, 4, 2)): True,
        (1, dt.date(2015, 5, 12)): False,  # started, month not in the interval
        (1, dt.date(2015, 7, 1)): True,
        (2, dt.date(2015, 8, 31)): False,
        (2, dt.date(2015, 9, 15)): True,  # "Sept", as Rossmann spells it
        (3, dt.date(2015, 7, 1)): False,  # not a participant
    }
    rows = [{n.STORE: s, n.DATE: d, n.SALES: 100, n.OPEN: 1} for s, d in cases]
    frame = features_of(train_frame(rows), stores)
    got = {(s, d): a for s, d, a in frame.select(n.STORE, n.DATE, fx.PROMO2_ACTIVE_FEATURE).iter_rows()}
    assert got == cases


def test_competition_active_from_its_opening_month_and_only_with_a_known_competitor() -> None:
    stores = stores_frame(
        [
            {n.STORE: 1, n.COMPETITION_OPEN_SINCE_MONTH: 3, n.COMPETITION_OPEN_SINCE_YEAR: 2015},
            {n.STORE: 2},  # distance known, opening date unknown: taken as always there
            {n.STORE: 3, n.COMPETITION_DISTANCE: None, n.COMPETITION_OPEN_SINCE_MONTH: 1, n.COMPETITION_OPEN_SINCE_YEAR: 2010},
        ]
    )
    cases = {
        (1, dt.date(2015, 2, 28)): False,
        (1, dt.date(2015, 3, 1)): True,
        (2, dt.date(2015, 2, 28)): True,
        (3, dt.date(2015, 3, 1)): False,
    }
    rows = [{n.STORE: s, n.DATE: d, n.SALES: 100, n.OPEN: 1} for s, d in cases]
    frame = features_of(train_frame(rows), stores)
    got = {(s, d): a for s, d, a in frame.select(n.STORE, n.DATE, fx.COMPETITION_ACTIVE_FEATURE).iter_rows()}
    assert got == cases


# --------------------------------------------------------------------------
# properties


@functools.cache
def small_demo(seed: int) -> DemoData:
    return generate_demo(seed=seed, n_stores=6, n_history_days=120, horizon=14, n_new_stores=1, n_gapped_stores=1)


def as_future_calendar(rows: pl.DataFrame) -> pl.DataFrame:
    return (
        rows.sort(n.DATE, n.STORE)
        .drop(n.SALES, n.CUSTOMERS)
        .with_row_index(n.ID, offset=1)
        .with_columns(pl.col(n.ID).cast(pl.Int64))
        .select(n.FUTURE_COLUMNS)
    )


def day_positions(panel: enc.EncodedPanel, dates: np.ndarray) -> np.ndarray:
    return (dates - panel.dates[0]).astype(np.int64)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2), k=st.integers(1, 30))
def test_future_calendar_encodes_like_the_same_days_inside_history(seed: int, k: int) -> None:
    demo = small_demo(seed)
    full = demo.train
    cutoff = full[n.DATE].max() - dt.timedelta(days=k - 1)
    past = full.filter(pl.col(n.DATE) < cutoff)
    future = as_future_calendar(full.filter(pl.col(n.DATE) >= cutoff))
    spec = enc.build_spec(demo.stores)

    whole = enc.encode(full, demo.stores, spec=spec).history
    split = enc.encode(past, demo.stores, future, spec)
    assert split.future is not None

    ahead = split.future
    s = whole.store_positions(ahead.stores)
    t = day_positions(whole, ahead.dates)
    assert ahead.n_days == k
    np.testing.assert_array_equal(ahead.date_x, whole.date_x[t])
    # Includes before/after_closure on the first and last days, which look across the boundary.
    np.testing.assert_array_equal(ahead.store_day_x, whole.store_day_x[s][:, t])
    np.testing.assert_array_equal(ahead.present, whole.present[s][:, t])
    np.testing.assert_array_equal(ahead.open, whole.open[s][:, t])
    np.testing.assert_array_equal(ahead.store_z, whole.store_z[s])
    assert not ahead.observed.any()

    # And the history part is the same as the first days of the whole history.
    before = split.history
    s = whole.store_positions(before.stores)
    t = day_positions(whole, before.dates)
    for name in ("store_day_x", "sales", "observed", "present", "open"):
        np.testing.assert_array_equal(getattr(before, name), getattr(whole, name)[s][:, t], err_msg=name)
    np.testing.assert_array_equal(before.date_x, whole.date_x[t])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    drop=st.floats(0.0, 0.9),
    close=st.floats(0.0, 0.5),
    zero=st.floats(0.0, 0.2),
)
def test_observed_marks_exactly_the_open_days_with_sales(seed: int, drop: float, close: float, zero: float) -> None:
    demo = small_demo(0)
    rng = np.random.default_rng(seed)
    height = demo.train.height
    closed = rng.random(height) < close
    zeroed = rng.random(height) < zero
    keep = rng.random(height) >= drop
    keep[rng.integers(height)] = True
    train = (
        demo.train.with_columns(
            pl.when(pl.Series(closed)).then(0).otherwise(pl.col(n.OPEN)).cast(pl.Int8).alias(n.OPEN),
            pl.when(pl.Series(closed | zeroed)).then(0).otherwise(pl.col(n.SALES)).cast(pl.Int32).alias(n.SALES),
        )
        .filter(pl.Series(keep))
    )
    panel = enc.encode(train, demo.stores).history

    s = panel.store_positions(train[n.STORE].to_numpy())
    t = day_positions(panel, train[n.DATE].to_numpy().astype("datetime64[D]"))
    is_open = train[n.OPEN].to_numpy() == 1
    sales = train[n.SALES].to_numpy()
    expected_present = np.zeros_like(panel.present)
    expected_present[s, t] = True
    expected_observed = np.zeros_like(panel.observed)
    expected_observed[s, t] = is_open & (sales > 0)
    expected_sales = np.zeros_like(panel.sales)
    expected_sales[s, t] = np.where(is_open & (sales > 0), sales, 0)

    np.testing.assert_array_equal(panel.present, expected_present)
    np.testing.assert_array_equal(panel.observed, expected_observed)
    np.testing.assert_array_equal(panel.sales, expected_sales)
    assert list(panel.stores) == sorted(set(train[n.STORE].to_list()))


def test_encoded_rows_break_their_schema_loudly() -> None:
    """The encoded-feature schema catches an encoding bug: an observed day that sold nothing."""
    demo = generate_demo(n_stores=4, n_history_days=60, horizon=7, n_new_stores=0, n_gapped_stores=0)
    spec = enc.build_spec(demo.stores)
    rows = enc.store_day_features(enc.calendar_rows(demo.train.lazy()), demo.stores.lazy()).collect()
    schema = store_day_rows_schema(spec.feature_names(fx.Scope.STORE_DAY))
    schema.validate(rows, lazy=True)
    broken = rows.with_columns(pl.when(pl.col(n.OPEN) == 0).then(True).otherwise(pl.col(n.OBSERVED)).alias(n.OBSERVED))
    with pytest.raises(pa.errors.SchemaErrors, match="observed_means_open_with_sales"):
        schema.validate(broken, lazy=True)
