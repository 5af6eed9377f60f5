"""What the validated inputs hold: the facts a person checks before trusting a fit.

Pure: no Prefect, no MLflow. Works on the typed frames of
``tasks.data.validate.ValidatedInputs``.

A "gapped" store is one with calendar days missing BETWEEN its first and last
train date (Rossmann: 180 stores lack 2014-07-01..2014-12-31). Days missing
before a store's first date are a late start, not a gap (Rossmann's store 988
starts on 2013-01-02): those stores are listed apart, as are stores whose
history ends before the last train date. The model masks all of these days
out of the likelihood; they are not zero sales.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import polars as pl

from tasks import names as n

_FIRST = "_first_date"
_LAST = "_last_date"
_N_DAYS = "_n_days"
_N_MISSING = "_n_missing"
MAX_STORES_IN_TEXT = 10


@dataclass(frozen=True)
class DataSummary:
    """Facts of one run's inputs; store lists are sorted by store."""

    n_train_rows: int
    n_stores: int  # rows of the stores file
    n_stores_with_history: int  # distinct stores in train
    first_date: dt.date | None
    last_date: dt.date | None
    n_open_days: int
    n_open_zero_sales: int
    gapped_stores: tuple[tuple[int, int], ...]  # (store, calendar days missing inside its history)
    late_start_stores: tuple[tuple[int, dt.date], ...]  # (store, first train date) after the overall first date
    early_end_stores: tuple[tuple[int, dt.date], ...]  # (store, last train date) before the overall last date
    n_future_rows: int
    n_future_stores: int
    n_new_stores: int  # in the future calendar, absent from train
    n_future_open_missing: int  # future rows whose blank Open was taken as open

    @property
    def n_gapped_stores(self) -> int:
        return len(self.gapped_stores)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: dates as ISO text, store lists as lists of objects."""
        return {
            "n_train_rows": self.n_train_rows,
            "n_stores": self.n_stores,
            "n_stores_with_history": self.n_stores_with_history,
            "first_date": _iso(self.first_date),
            "last_date": _iso(self.last_date),
            "n_open_days": self.n_open_days,
            "n_open_zero_sales": self.n_open_zero_sales,
            "n_gapped_stores": self.n_gapped_stores,
            "gapped_stores": [{"store": s, "n_missing_days": k} for s, k in self.gapped_stores],
            "late_start_stores": [{"store": s, "first_date": _iso(d)} for s, d in self.late_start_stores],
            "early_end_stores": [{"store": s, "last_date": _iso(d)} for s, d in self.early_end_stores],
            "n_future_rows": self.n_future_rows,
            "n_future_stores": self.n_future_stores,
            "n_new_stores": self.n_new_stores,
            "n_future_open_missing": self.n_future_open_missing,
        }

    def to_text(self) -> str:
        lines = [
            f"train: {self.n_train_rows:,} rows, {self.n_stores_with_history:,} stores with history, "
            f"{_iso(self.first_date)} to {_iso(self.last_date)}",
            f"  open days: {self.n_open_days:,}, of which {self.n_open_zero_sales:,} with zero sales",
            f"  stores with days missing inside their history: {self.n_gapped_stores:,}"
            + _store_list(self.gapped_stores, "missing days"),
            f"  stores starting after {_iso(self.first_date)}: {len(self.late_start_stores):,}"
            + _store_list(self.late_start_stores, "first date"),
            f"  stores ending before {_iso(self.last_date)}: {len(self.early_end_stores):,}"
            + _store_list(self.early_end_stores, "last date"),
            f"stores file: {self.n_stores:,} stores",
            f"future: {self.n_future_rows:,} rows, {self.n_future_stores:,} stores, "
            f"{self.n_new_stores:,} new (no history), "
            f"{self.n_future_open_missing:,} rows with Open blank (taken as open)",
        ]
        return "\n".join(lines)


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day is not None else None


def _store_list(pairs: tuple[tuple[int, Any], ...], what: str) -> str:
    if not pairs:
        return ""
    shown = ", ".join(f"{store} ({value})" for store, value in pairs[:MAX_STORES_IN_TEXT])
    more = f", ... {len(pairs) - MAX_STORES_IN_TEXT:,} more" if len(pairs) > MAX_STORES_IN_TEXT else ""
    return f" [store ({what}): {shown}{more}]"


def _store_spans(train: pl.DataFrame) -> pl.DataFrame:
    """Per store: first and last train date, distinct days, and calendar days missing in between."""
    spans = train.group_by(n.STORE).agg(
        pl.col(n.DATE).min().alias(_FIRST),
        pl.col(n.DATE).max().alias(_LAST),
        pl.col(n.DATE).n_unique().alias(_N_DAYS),
    )
    span_days = (pl.col(_LAST) - pl.col(_FIRST)).dt.total_days() + 1
    return spans.with_columns((span_days - pl.col(_N_DAYS)).alias(_N_MISSING)).sort(n.STORE)


def _pairs(frame: pl.DataFrame, value: str) -> tuple[tuple[Any, Any], ...]:
    return tuple((int(store), v) for store, v in zip(frame[n.STORE].to_list(), frame[value].to_list(), strict=True))


def _date_or_none(value: object) -> dt.date | None:
    return value if isinstance(value, dt.date) else None


def _open_flag_count(frame: pl.DataFrame) -> int:
    return int(frame[n.OPEN_WAS_MISSING].sum()) if n.OPEN_WAS_MISSING in frame.columns else 0


def summarize(train: pl.DataFrame, stores: pl.DataFrame, future: pl.DataFrame | None) -> DataSummary:
    """Counts, date range and history gaps of validated inputs."""
    spans = _store_spans(train)
    first_date = _date_or_none(train[n.DATE].min())
    last_date = _date_or_none(train[n.DATE].max())
    gapped = spans.filter(pl.col(_N_MISSING) > 0)
    late = spans.filter(pl.col(_FIRST) > first_date) if first_date is not None else spans.clear()
    early = spans.filter(pl.col(_LAST) < last_date) if last_date is not None else spans.clear()
    is_open = pl.col(n.OPEN) == 1

    future_stores = future[n.STORE].unique() if future is not None else pl.Series(n.STORE, [], dtype=pl.Int32)
    new_stores = future_stores.filter(~future_stores.is_in(spans[n.STORE].implode()))
    return DataSummary(
        n_train_rows=train.height,
        n_stores=stores.height,
        n_stores_with_history=spans.height,
        first_date=first_date,
        last_date=last_date,
        n_open_days=train.filter(is_open).height,
        n_open_zero_sales=train.filter(is_open & (pl.col(n.SALES) == 0)).height,
        gapped_stores=tuple((s, int(k)) for s, k in _pairs(gapped, _N_MISSING)),
        late_start_stores=_pairs(late, _FIRST),
        early_end_stores=_pairs(early, _LAST),
        n_future_rows=future.height if future is not None else 0,
        n_future_stores=future_stores.len(),
        n_new_stores=new_stores.len(),
        n_future_open_missing=_open_flag_count(future) if future is not None else 0,
    )
