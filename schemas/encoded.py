"""pandera schemas of the encoded features, the boundary between encoding and the model.

The inputs were validated already, so a failure here is a bug in the
encoding, not in the data: it stops the run before anything is fitted. The
feature columns come from the registry (``tasks.data.features``), so the schemas
are built from the encoding spec rather than written out by hand.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from tasks import names as n
from tasks.data import features as fx

IS_FUTURE = n.IS_FUTURE
OBSERVED = n.OBSERVED


def _flag(name: str) -> pa.Column:
    return pa.Column(pl.Boolean, nullable=False, name=name)


def store_day_rows_schema(store_day_features: tuple[str, ...]) -> pa.DataFrameSchema:
    """One row per (Store, Date): flags, the observed mask and sales where observed."""
    observed_days_sold = pa.Check(
        lambda data: data.lazyframe.select(
            ~pl.col(OBSERVED) | ((pl.col(n.OPEN) == 1) & (pl.col(n.SALES) > 0))
        ),
        name="observed_means_open_with_sales",
    )
    return pa.DataFrameSchema(
        {
            n.STORE: pa.Column(pl.Int32, nullable=False),
            n.DATE: pa.Column(pl.Date, nullable=False),
            IS_FUTURE: _flag(IS_FUTURE),
            OBSERVED: _flag(OBSERVED),
            n.OPEN: pa.Column(pl.Int8, pa.Check.isin([0, 1]), nullable=False),
            n.SALES: pa.Column(pl.Int32, pa.Check.ge(0), nullable=True),
            **{name: _flag(name) for name in store_day_features},
        },
        checks=[observed_days_sold],
        unique=[n.STORE, n.DATE],
        strict=True,
        name="encoded store-day rows",
    )


def date_features_schema(date_features: tuple[str, ...]) -> pa.DataFrameSchema:
    """One row per calendar day: weekday contrasts and flags, Fourier terms in [-1, 1]."""
    columns = {n.DATE: pa.Column(pl.Date, nullable=False, unique=True)}
    for name in date_features:
        if name.startswith(("year_", "month_")):
            columns[name] = pa.Column(pl.Float64, pa.Check.in_range(-1.0, 1.0), nullable=False, name=name)
        else:
            columns[name] = _flag(name)
    return pa.DataFrameSchema(columns, strict=True, name="encoded date features")


def store_features_schema() -> pa.DataFrameSchema:
    """One row per store: contrasts and flags, a finite standardised log distance."""
    columns = {n.STORE: pa.Column(pl.Int32, nullable=False, unique=True)}
    for name in (*fx.STORE_TYPE_FEATURES, *fx.ASSORTMENT_FEATURES, fx.COMPETITION_DISTANCE_MISSING_FEATURE, fx.PROMO2_PARTICIPANT_FEATURE):
        columns[name] = _flag(name)
    columns[fx.LOG_COMPETITION_DISTANCE_FEATURE] = pa.Column(
        pl.Float64, pa.Check(lambda data: data.lazyframe.select(pl.col(data.key).is_finite()), name="finite"), nullable=False
    )
    return pa.DataFrameSchema(columns, strict=True, name="encoded store features")
