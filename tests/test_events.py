"""Holidays the package dates itself: Easter's computus, the share of a period's days in an event's window,
and the spec's ``events``."""

from __future__ import annotations

import datetime as dt
import textwrap
from dataclasses import replace

import jax
import numpy as np
import polars as pl
import pytest

from tasks import names as n
from tasks import panel_pipeline as pp
from tasks.config import ForecastConfig, PanelFitConfig
from tasks.data.events import easter_sunday, event_date, event_days, period_shares, weekday_of_month, with_event_columns
from tasks.data.panel_demo import generate_panel_demo
from tasks.data.panel_encode import encode_panel
from tasks.data.spec import Event, SpecError, builtin_spec, parse_spec

# Western Easter Sundays from published tables, the earliest (March 22) and latest (April 25) possible among them.
EASTERS = {1818: "03-22", 1943: "04-25", 1991: "03-31", 1992: "04-19", 2010: "04-04", 2011: "04-24", 2012: "04-08",
           2013: "03-31", 2019: "04-21", 2024: "03-31", 2025: "04-20", 2038: "04-25", 2285: "03-22"}


@pytest.mark.parametrize(("year", "day"), sorted(EASTERS.items()))
def test_easter_sunday_matches_the_tables(year: int, day: str) -> None:
    easter = easter_sunday(year)
    assert easter.isoformat() == f"{year}-{day}" and easter.weekday() == 6


def test_easter_before_the_gregorian_calendar_is_refused() -> None:
    with pytest.raises(ValueError, match="1500"):
        easter_sunday(1500)


# US holidays on a weekday of a month, from published calendars: Thanksgiving, Labor Day, Memorial Day (the
# last Monday of May) and the Super Bowl (the first Sunday of February until 2021).
WEEKDAY_HOLIDAYS = [
    ("11-thu#4", {2010: "11-25", 2011: "11-24", 2012: "11-22", 2013: "11-28", 2018: "11-22", 2024: "11-28"}),
    ("09-mon#1", {2010: "09-06", 2011: "09-05", 2012: "09-03", 2013: "09-02", 2024: "09-02"}),
    ("05-mon#-1", {2010: "05-31", 2011: "05-30", 2012: "05-28", 2021: "05-31", 2024: "05-27"}),
    ("02-sun#1", {2010: "02-07", 2011: "02-06", 2012: "02-05", 2013: "02-03"}),
]


@pytest.mark.parametrize(("date", "days"), WEEKDAY_HOLIDAYS)
def test_a_weekday_of_a_month_matches_the_calendars(date: str, days: dict[int, str]) -> None:
    assert {year: event_date(date, year).isoformat() for year in days} == {year: f"{year}-{day}" for year, day in days.items()}


def test_the_nth_and_the_last_weekday_of_every_month_of_a_leap_cycle() -> None:
    for year in range(2020, 2024):
        for month in range(1, 13):
            days = [dt.date(year, month, 1) + dt.timedelta(days=k) for k in range(31)]
            days = [day for day in days if day.month == month]
            for weekday in range(7):
                matching = [day for day in days if day.weekday() == weekday]
                found = [weekday_of_month(year, month, weekday, nth) for nth in (1, 2, 3, 4, -1)]
                assert found == [*matching[:4], matching[-1]]
    with pytest.raises(ValueError, match="nth 1-4 or -1"):
        weekday_of_month(2024, 1, 0, 5)


def test_weekly_shares_count_the_weeks_days_from_its_label() -> None:
    # Easter 2012 is Sunday April 8; walmart's weeks are labelled by their last day, a Friday.
    fridays = [dt.date(2012, 3, 30) + dt.timedelta(weeks=k) for k in range(4)]
    before = period_shares(fridays, "easter", -7, -1, 7, "end")
    after = period_shares(fridays, "easter", 0, 6, 7, "end")
    assert list(before.values()) == pytest.approx([0, 6 / 7, 1 / 7, 0])  # Apr 1-6, then Saturday Apr 7
    assert list(after.values()) == pytest.approx([0, 0, 6 / 7, 1 / 7])
    # The same Fridays as the first days of their weeks: Friday Apr 6 to Thursday Apr 12 holds Apr 6 and 7.
    assert list(period_shares(fridays, "easter", -7, -1, 7, "start").values()) == pytest.approx([5 / 7, 2 / 7, 0, 0])


def test_daily_shares_are_flags_and_a_window_may_cross_new_year() -> None:
    days = [dt.date(2023, 12, 27) + dt.timedelta(days=k) for k in range(10)]
    shares = period_shares(days, "01-01", -3, 2, 1, "start")
    inside = [day for day, share in shares.items() if share == 1.0]
    assert inside == [dt.date(2023, 12, 29) + dt.timedelta(days=k) for k in range(6)]
    assert set(shares.values()) == {0.0, 1.0}


def test_windows_and_dates_are_checked() -> None:
    with pytest.raises(ValueError, match="first <= last"):
        event_days("easter", 3, 1, [2024])
    with pytest.raises(ValueError, match="02-29"):
        period_shares([dt.date(2024, 1, 1)], "02-29", 0, 0, 1, "start")
    with pytest.raises(ValueError, match="period label 'middle'"):
        period_shares([dt.date(2024, 1, 1)], "easter", 0, 0, 1, "middle")


def test_event_columns_follow_the_frames_rows() -> None:
    frame = pl.DataFrame({"period": [dt.date(2012, 4, 13), dt.date(2012, 4, 6), dt.date(2012, 4, 13)], "y": [1, 2, 3]})
    events = (Event(name="easter_after", date="easter", days=(0, 6)),)
    out = with_event_columns(frame, "period", events, 7, "end")
    assert out.columns == ["period", "y", "easter_after"]
    assert out["easter_after"].to_list() == pytest.approx([6 / 7, 0, 6 / 7])
    assert with_event_columns(frame, "period", (), 7, "end") is frame


SPEC = """\
name: tiny
frequency: week
target_kind: units
sales: {file: sales.csv, period: week, period_label: end, store: store, target: units,
        covariates: [{name: promo, column: promo}]}
"""


def _spec(extra: str):
    return parse_spec(SPEC + textwrap.dedent(extra), "tiny.yaml")


def test_events_become_covariates_after_the_files_own() -> None:
    spec = _spec("""\
        events:
          - {name: easter_before, date: easter, days: [-7, -1]}
          - {name: new_year, date: "01-01", pooled: false}
        pooling: {easter_before: [store]}
        dispersion_covariates: [new_year]
        """)
    assert [(c.name, c.kind, c.pooled) for c in spec.covariates] == [
        ("promo", "flag", True), ("easter_before", "flag", True), ("new_year", "flag", False)
    ]
    assert spec.pooled_through("easter_before") == ("store",)
    assert spec.events[1].days == (0, 0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("events: [{name: xmas, date: christmas}]\n", "date 'christmas' is neither 'easter', a day of the year as MM-DD, nor a weekday"),
        ("events: [{name: fifth, date: '11-thu#5'}]\n", "'11-thu#5' is no weekday of a month as MM-www#n (a fifth one"),
        ("events: [{name: day, date: '11-thursday#4'}]\n", "www one of mon, tue, wed, thu, fri, sat, sun"),
        ("events: [{name: month, date: '13-mon#1'}]\n", "month 13 is not 01-12"),
        ("events: [{name: leap, date: '02-29'}]\n", "date '02-29'"),
        ("events: [{name: late, date: '13-01'}]\n", "date '13-01'"),
        ("events: [{name: back, date: easter, days: [3, 1]}]\n", "days [3, 1]: need first <= last"),
        ("events: [{name: far, date: easter, days: [-200, 0]}]\n", "within 180 days"),
        ("events: [{name: promo, date: easter}]\n", "covariate names are not unique"),
        ("events: [{name: e, date: easter, when: 1}]\n", "when: Extra inputs are not permitted"),
    ],
)
def test_broken_events_name_the_field_and_the_rule(extra: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        _spec(extra)
    assert "tiny.yaml" in str(err.value) and message in str(err.value)


def test_a_period_label_other_than_start_or_end_is_refused() -> None:
    with pytest.raises(SpecError, match="period_label"):
        parse_spec(SPEC.replace("period_label: end", "period_label: middle"), "tiny.yaml")


def test_walmart_dates_easter_on_the_weeks_it_labels_by_their_last_day() -> None:
    spec = builtin_spec("walmart")
    assert spec.sales.period_label == "end"
    assert {e.name: (e.date, e.days) for e in spec.events} == {
        "easter_before": ("easter", (-7, -1)), "easter_after": ("easter", (0, 6)), "christmas": ("12-25", (0, 6))
    }
    assert spec.pooled_through("christmas") == ("store", "product")
    # Kaggle's holiday weeks after Christmas end on Fridays 2010-12-31 and 2011-12-30; the second holds Christmas Eve.
    christmas = next(event for event in spec.events if event.name == "christmas")
    fridays = [dt.date(2010, 12, 17) + dt.timedelta(weeks=k) for k in range(56)]
    shares = period_shares(fridays, christmas.date, *christmas.days, 7, spec.sales.period_label)
    assert {day.isoformat(): round(7 * share) for day, share in shares.items() if share} == {
        "2010-12-31": 7, "2011-12-30": 6, "2012-01-06": 1
    }


@pytest.mark.slow  # two fits of 16 series x 114 weeks: ~30 s on 2 cores
def test_a_lift_before_easter_is_forecast_in_the_weeks_easter_falls_in_that_year() -> None:
    # History: Easter 2022-04-17 and 2023-04-09; the horizon from 2024-03-14 holds Easter 2024-03-31, weeks earlier
    # in the year than either: a yearly profile cannot put the lift there, the dated event does.
    demo = generate_panel_demo(seed=5, n_stores=4, n_departments=2, products_per_department=2, n_weeks=114, horizon=13)
    tables = demo.tables()
    event = Event(name="easter_before", date="easter", days=(-7, -1))
    lift = np.log(3.0)
    sales = with_event_columns(tables.sales, n.PERIOD, [event], 7, "start")
    sales = sales.with_columns((pl.col(n.TARGET) * (lift * pl.col(event.name)).exp()).round())
    future = with_event_columns(tables.future, n.PERIOD, [event], 7, "start")
    share = future.group_by(n.PERIOD).agg(pl.col(event.name).first()).sort(n.PERIOD)[event.name].to_numpy()
    assert share[1:3] == pytest.approx([4 / 7, 3 / 7])  # the Thursday-to-Wednesday weeks of March 21 and 28
    true_total = demo.truth.future_mean.sum(axis=(0, 1)) * np.exp(lift * share)

    def forecast_total(spec) -> np.ndarray:
        panel = replace(tables, spec=spec, sales=sales, future=future)
        encoded = encode_panel(panel)
        config = PanelFitConfig(max_steps=1500, chunk_steps=100)
        fitted, _ = pp.fit_encoded(encoded, spec, config, jax.random.key(0), on_progress=lambda p: None)
        arrays = pp.forecast_encoded(fitted, encoded, (), ForecastConfig(num_draws=200), jax.random.key(1))
        return arrays.mean.sum(axis=0)

    dated = forecast_total(tables.spec.model_copy(update={"events": (event,)}))
    undated = forecast_total(tables.spec)
    easter_weeks, others = [1, 2], [0, *range(3, 13)]
    assert dated[easter_weeks] / true_total[easter_weeks] == pytest.approx([1.0, 1.0], abs=0.2)
    assert (undated[easter_weeks] / true_total[easter_weeks] < 0.8).all()
    assert np.median(dated[others] / true_total[others]) == pytest.approx(1.0, abs=0.1)
