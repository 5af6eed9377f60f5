"""Holidays the package dates itself, so that a spec can name a moving holiday without a calendar file.

An event (``PanelSpec.events``) is Easter, a fixed day of the year (``MM-DD``) or a weekday of a month
(``MM-www#n``: ``11-thu#4`` is the fourth Thursday of November, US Thanksgiving; ``05-mon#-1`` the last Monday
of May), with a window of days around it. Its covariate in a period is the share of the period's days that fall
inside the window of some year: 1 or 0 for daily data; for weekly data the share of the 7 days from the period's
date (``sales.period_label: start``) or up to it (``end``). Easter moves by up to five weeks between years, so a
yearly profile fitted on two years puts its lift in the wrong week; a share of the week follows it exactly.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

import polars as pl

EASTER = "easter"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# The nth (1 to 4, or -1: the last) weekday of a month exists in every month of every year; a fifth does not.
_WEEKDAY_OF_MONTH = re.compile(rf"(\d\d)-({'|'.join(WEEKDAYS)})#(-1|[1-4])")
# A window reaches at most this far from its date, so that only the neighbouring years' dates can touch a day.
MAX_WINDOW_DAYS = 180


def easter_sunday(year: int) -> dt.date:
    """Western (Gregorian) Easter Sunday: the anonymous Gregorian computus (Meeus, Jones and Butcher)."""
    if year < 1583:
        raise ValueError(f"year {year}: the Gregorian computus starts in 1583")
    golden = year % 19
    century, year_of_century = divmod(year, 100)
    leap_centuries, century_rest = divmod(century, 4)
    correction = (century + 8) // 25
    moon = (century - correction + 1) // 3
    epact = (19 * golden + century - leap_centuries - moon + 15) % 30
    leap_years, year_rest = divmod(year_of_century, 4)
    weekday = (32 + 2 * century_rest + 2 * leap_years - epact - year_rest) % 7
    shift = (golden + 11 * epact + 22 * weekday) // 451
    month, day = divmod(epact + weekday - 7 * shift + 114, 31)
    return dt.date(year, month, day + 1)


def parse_month_day(text: str) -> tuple[int, int]:
    """``MM-DD`` -> (month, day); a ValueError naming the text when it is no day of every year (02-29 is not)."""
    try:
        month, day = (int(part) for part in text.split("-"))
        dt.date(2001, month, day)
    except ValueError as err:
        raise ValueError(f"{text!r} is not a day of every year as MM-DD (02-29 is not)") from err
    return month, day


def weekday_of_month(year: int, month: int, weekday: int, nth: int) -> dt.date:
    """The ``nth`` (1 to 4; -1: the last) ``weekday`` (0: Monday) of ``month`` in ``year``."""
    if not 1 <= month <= 12:
        raise ValueError(f"month {month} is not 01-12")
    if not (0 <= weekday <= 6 and nth in (-1, 1, 2, 3, 4)):
        raise ValueError(f"weekday {weekday} #{nth}: need a weekday 0-6 (Monday 0) and nth 1-4 or -1 (the last)")
    if nth > 0:
        first = dt.date(year, month, 1)
        return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (nth - 1))
    last = dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def event_date(date: str, year: int) -> dt.date:
    """The event's date in ``year``: ``easter``, a fixed ``MM-DD``, or a weekday of a month ``MM-www#n``."""
    if date == EASTER:
        return easter_sunday(year)
    if match := _WEEKDAY_OF_MONTH.fullmatch(date):
        return weekday_of_month(year, int(match[1]), WEEKDAYS.index(match[2]), int(match[3]))
    if "#" in date:
        raise ValueError(f"{date!r} is no weekday of a month as MM-www#n (a fifth one is not in every month)")
    month, day = parse_month_day(date)
    return dt.date(year, month, day)


def check_window(first: int, last: int) -> None:
    """A ValueError naming the window unless it runs forwards and stays within MAX_WINDOW_DAYS of its date."""
    if not -MAX_WINDOW_DAYS <= first <= last <= MAX_WINDOW_DAYS:
        raise ValueError(f"days [{first}, {last}]: need first <= last, each within {MAX_WINDOW_DAYS} days of the date")


def event_days(date: str, first: int, last: int, years: Iterable[int]) -> set[dt.date]:
    """Every day of the window [date + first, date + last] of each of ``years``."""
    check_window(first, last)
    days = set()
    for year in years:
        anchor = event_date(date, year)
        days.update(anchor + dt.timedelta(days=offset) for offset in range(first, last + 1))
    return days


def period_shares(periods: Iterable[dt.date], date: str, first: int, last: int, period_days: int, label: str) -> dict[dt.date, float]:
    """Each period -> the share of its ``period_days`` days inside the event's window (``label``: the period's
    date is its first day, ``start``, or its last, ``end``)."""
    if label not in ("start", "end"):
        raise ValueError(f"period label {label!r}: expected 'start' or 'end'")
    periods = sorted(set(periods))
    if not periods:
        return {}
    offset = 0 if label == "start" else -(period_days - 1)
    years = range(periods[0].year - 1, periods[-1].year + 2)
    inside = event_days(date, first, last, years)
    shares = {}
    for period in periods:
        start = period + dt.timedelta(days=offset)
        hits = sum(start + dt.timedelta(days=k) in inside for k in range(period_days))
        shares[period] = hits / period_days
    return shares


def with_event_columns(frame: pl.DataFrame, period: str, events: Iterable, period_days: int, label: str) -> pl.DataFrame:
    """``frame`` with one Float64 column per event (named by the event), from its ``period`` column of dates.

    ``events``: objects with ``name``, ``date`` and ``days`` (``tasks.data.spec.Event``)."""
    events = tuple(events)
    if not events:
        return frame
    periods = frame[period].drop_nulls().unique().to_list()  # a blank or unparsed period is validation's to report
    columns = []
    for event in events:
        shares = period_shares(periods, event.date, event.days[0], event.days[1], period_days, label)
        columns.append(
            pl.col(period).replace_strict(list(shares), list(shares.values()), default=None, return_dtype=pl.Float64).alias(event.name)
        )
    return frame.with_columns(columns)
