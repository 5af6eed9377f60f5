"""Encode validated panel tables (``tasks.data.panel_ingest.PanelTables``) into arrays for the panel model.

Series are (store, product) pairs; periods lie on the spec's grid (a day or a week apart), aligned by
date, so a series with a gap has unobserved periods in the middle of its row. ``PanelEncoding`` fixes
everything a later encoding must repeat (the key sets, hierarchy groups, attribute scaling, covariate
scaling, reference prices) and is stored as JSON with a fitted model: tomorrow's history and a
future table encode exactly like today's.

Features:
- time: yearly Fourier terms of the period's day of year, and weekday contrasts for daily data;
- series x period: every covariate of the spec (flags as 0/1, numeric standardised over the history,
  prices as the log of the price relative to the product's median history price, so that the
  coefficient is an elasticity) and, with ``cross_price``, the mean relative log price of the other
  products of the series' group (its coefficient a cross-price elasticity).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl

from tasks import names as n
from tasks.data.panel_ingest import CENSORED, PanelTables
from tasks.data.panel_rules import distinct_keys
from tasks.data.spec import (
    CROSS_PRICE,
    PRODUCT_PLACEHOLDER,
    PRODUCT_SIDE,
    STORE_SIDE,
    Covariate,
    DimensionTable,
    PanelSpec,
)

ENCODING_VERSION = 1
DAYS_PER_YEAR = 365.25


def season_names(order: int) -> tuple[str, ...]:
    return tuple(f"year_{kind}{k}" for k in range(1, order + 1) for kind in ("sin", "cos"))


WEEKDAY_NAMES = tuple(f"weekday_{d}" for d in range(2, 8))  # ISO weekdays, Monday the reference


@dataclass(frozen=True)
class PanelEncoding:
    """How rows become arrays; JSON round-trips it exactly."""

    period_days: int
    anchor: str  # ISO date of the last history period
    first_period: str  # ISO date of the first history period
    store_keys: tuple  # key values, in code order
    product_keys: tuple  # (None,) when the spec has no product key
    series: tuple[tuple[int, int], ...]  # (store code, product code) of each series, in series order
    store_groups: dict[str, tuple[str, ...]]  # hierarchy level -> group values, in code order
    product_groups: dict[str, tuple[str, ...]]
    store_attributes: dict[str, tuple[float, float]]  # feature -> (mean, sd) of the transformed value
    product_attributes: dict[str, tuple[float, float]]
    categories: dict[str, tuple[str, ...]]  # category attribute -> its levels (first one the reference)
    covariate_scaling: dict[str, tuple[float, float]]  # numeric covariate -> (mean, sd) over the history
    reference_log_price: dict[str, dict[str, float]] = field(default_factory=dict)  # price -> product key -> log median
    fourier_order: int = 0
    weekday: bool = False
    cross_price: bool = False
    version: int = ENCODING_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> PanelEncoding:
        raw = json.loads(text)
        if raw.get("version") != ENCODING_VERSION:
            raise ValueError(f"panel encoding version {raw.get('version')!r} is not supported ({ENCODING_VERSION})")
        for key in ("store_keys", "product_keys"):
            raw[key] = tuple(raw[key])
        raw["series"] = tuple(tuple(pair) for pair in raw["series"])
        for key in ("store_groups", "product_groups", "categories"):
            raw[key] = {k: tuple(v) for k, v in raw[key].items()}
        for key in ("store_attributes", "product_attributes", "covariate_scaling"):
            raw[key] = {k: tuple(v) for k, v in raw[key].items()}
        return cls(**raw)

    @property
    def anchor_date(self) -> dt.date:
        return dt.date.fromisoformat(self.anchor)

    @property
    def time_names(self) -> tuple[str, ...]:
        return season_names(self.fourier_order) + (WEEKDAY_NAMES if self.weekday else ())

    def series_names(self, spec: PanelSpec) -> tuple[str, ...]:
        return tuple(c.name for c in spec.covariates) + ((CROSS_PRICE,) if self.cross_price else ())

    @property
    def n_series(self) -> int:
        return len(self.series)


@dataclass(frozen=True)
class PanelArrays:
    """Arrays of one stretch of periods (the history, or the future), indexed [series, period]."""

    periods: np.ndarray  # datetime64[D] [T]
    x_time: np.ndarray  # float32 [T, Pt]
    x_series: np.ndarray  # float32 [S, T, Ps]
    y: np.ndarray  # float32 [S, T]; 0 where unobserved
    observed: np.ndarray  # bool [S, T]: enters the likelihood
    present: np.ndarray  # bool [S, T]: the input has a row for the cell
    # bool [S, T]: observed cells that stocked out, whose target is a lower bound of demand; None when the
    # spec marks no stock-outs (or for the future)
    censored: np.ndarray | None = None

    @property
    def n_periods(self) -> int:
        return len(self.periods)


@dataclass(frozen=True)
class Dimensions:
    """Per store and per product: hierarchy group codes and attribute features."""

    series_store: np.ndarray  # int32 [S]
    series_product: np.ndarray  # int32 [S]
    store_groups: np.ndarray  # int32 [L_s, n_stores]: level 0 is the store itself
    product_groups: np.ndarray  # int32 [L_p, n_products]: level 0 is the product itself
    store_attributes: np.ndarray  # float32 [n_stores, A_s]
    product_attributes: np.ndarray  # float32 [n_products, A_p]


@dataclass(frozen=True)
class EncodedPanelData:
    encoding: PanelEncoding
    dims: Dimensions
    history: PanelArrays | None  # None: the future alone, for a saved model (``encode_future``)
    future: PanelArrays | None
    n_masked: int  # history cells left out of the likelihood although the input has a target (masked, <= 0 amounts)


# --- keys, groups, attributes -------------------------------------------------


def _keys(frame: pl.DataFrame, column: str) -> tuple:
    return tuple(frame[column].unique().sort().to_list())


def _series_keys(tables: PanelTables, has_product: bool) -> pl.DataFrame:
    keys = [n.SERIES_STORE, *([n.SERIES_PRODUCT] if has_product else [])]
    frames = [distinct_keys(tables.sales, keys)] + ([distinct_keys(tables.future, keys)] if tables.future is not None else [])
    return pl.concat(frames).unique().sort(keys)


def _transform(values: np.ndarray, transform: str) -> np.ndarray:
    if transform == "log":
        return np.log(values)
    if transform == "log1p":
        return np.log1p(values)
    return values


def _attribute_block(
    frame: pl.DataFrame | None, table: DimensionTable | None, key_column: str, keys: tuple, prefix: str
) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, ...]]]:
    """Raw attribute features per key (numeric transformed, categories as contrasts) and category levels."""
    if frame is None or table is None:
        return {}, {}
    ordered = pl.DataFrame({key_column: list(keys)}, schema={key_column: frame.schema[key_column]}).join(
        frame, on=key_column, how="left"
    )
    features: dict[str, np.ndarray] = {}
    categories: dict[str, tuple[str, ...]] = {}
    for attribute in table.attributes:
        column = ordered[attribute.column]
        if attribute.kind == "category":
            levels = tuple(sorted(str(v) for v in column.drop_nulls().unique().to_list()))
            categories[f"{prefix}{attribute.column}"] = levels
            values = np.array([str(v) for v in column.to_list()])
            for level in levels[1:]:
                features[f"{prefix}{attribute.column}={level}"] = (values == level).astype(np.float64)
        else:
            raw = column.cast(pl.Float64).fill_null(attribute.fill if attribute.fill is not None else float("nan"))
            features[f"{prefix}{attribute.column}"] = _transform(raw.to_numpy(), attribute.transform)
    return features, categories


def _standardise(features: dict[str, np.ndarray], stats: dict[str, tuple[float, float]] | None) -> tuple[np.ndarray, dict]:
    """Features as a [K, A] block, standardised with ``stats`` (computed here when None)."""
    if not features:
        return np.zeros((0, 0), np.float32), {}
    if stats is None:
        stats = {}
        for name, values in features.items():
            mean = float(np.nanmean(values))
            sd = float(np.nanstd(values))
            stats[name] = (mean, sd if sd > 1e-9 else 1.0)
    columns = [np.nan_to_num((features[name] - mean) / sd) for name, (mean, sd) in stats.items()]
    return np.stack(columns, axis=1).astype(np.float32), stats


def _group_codes(
    frame: pl.DataFrame | None, levels: tuple[str, ...], key_column: str, keys: tuple, known: dict[str, tuple[str, ...]] | None
) -> tuple[np.ndarray, dict[str, tuple[str, ...]]]:
    """[1 + len(levels), n_keys] codes: the key itself, then each hierarchy level's group."""
    codes = [np.arange(len(keys), dtype=np.int32)]
    groups: dict[str, tuple[str, ...]] = {}
    if frame is not None and levels:
        ordered = pl.DataFrame({key_column: list(keys)}, schema={key_column: frame.schema[key_column]}).join(
            frame, on=key_column, how="left"
        )
        for level in levels:
            values = [str(v) for v in ordered[level].to_list()]
            names = known[level] if known is not None else tuple(sorted(set(values)))
            lookup = {v: i for i, v in enumerate(names)}
            unknown = sorted({v for v in values if v not in lookup})
            if unknown:
                # A group the model has never seen: it joins the list, and starts from its prior.
                names = names + tuple(unknown)
                lookup = {v: i for i, v in enumerate(names)}
            groups[level] = names
            codes.append(np.array([lookup[v] for v in values], dtype=np.int32))
    return np.stack(codes), groups


# --- periods and features ------------------------------------------------------


def period_grid(first: dt.date, last: dt.date, period_days: int) -> np.ndarray:
    n_periods = (last - first).days // period_days + 1
    return np.datetime64(first, "D") + np.arange(n_periods) * np.timedelta64(period_days, "D")


def time_features(periods: np.ndarray, fourier_order: int, weekday: bool) -> np.ndarray:
    periods = np.asarray(periods, dtype="datetime64[D]")
    day_of_year = (periods - periods.astype("datetime64[Y]")).astype(np.float64)
    columns = []
    for k in range(1, fourier_order + 1):
        angle = 2.0 * math.pi * k * day_of_year / DAYS_PER_YEAR
        columns += [np.sin(angle), np.cos(angle)]
    if weekday:
        iso = (periods.astype(np.int64) + 3) % 7 + 1  # 1970-01-01 was a Thursday
        columns += [(iso == d).astype(np.float64) for d in range(2, 8)]
    if not columns:
        return np.zeros((len(periods), 0), np.float32)
    return np.stack(columns, axis=1).astype(np.float32)


def _covariate_values(
    frame: pl.DataFrame, covariate: Covariate, encoding_scaling: dict, base_log_price: np.ndarray | None, product_code: pl.Series | None
) -> np.ndarray:
    """``base_log_price``: a price covariate's reference per product code (one value without a product key);
    ``product_code``: each row's product code (None without a product key)."""
    values = frame[covariate.name].cast(pl.Float64)
    if covariate.fill is not None:
        values = values.fill_null(covariate.fill)
    raw = values.to_numpy()
    if covariate.kind == "price":
        return np.log(raw) - (base_log_price[0] if product_code is None else base_log_price[product_code.to_numpy()])
    if covariate.kind == "numeric":
        mean, sd = encoding_scaling[covariate.name]
        return (raw - mean) / sd
    return raw


def _cross_price_values(frame: pl.DataFrame, spec: PanelSpec, encoding: PanelEncoding, products: pl.DataFrame | None) -> np.ndarray:
    """Mean relative log price of the other products of each row's group (0 when it has none)."""
    cross = spec.cross_price
    price = next(c for c in spec.covariates if c.name == cross.price)
    reference = encoding.reference_log_price[price.name]
    keys = [str(k) for k in encoding.product_keys]
    group_of = {k: "" for k in keys}
    if cross.within is not None and products is not None:
        for key, group in zip(products[n.SERIES_PRODUCT].cast(pl.String).to_list(), products[cross.within].to_list(), strict=True):
            group_of[key] = str(group)
    relative = np.stack(
        [np.log(frame[price.column.replace(PRODUCT_PLACEHOLDER, k)].cast(pl.Float64).to_numpy()) - reference[k] for k in keys], axis=1
    )  # [rows, products]
    own = frame[n.SERIES_PRODUCT].cast(pl.String).to_list()
    position = {k: i for i, k in enumerate(keys)}
    same_group = np.array([[group_of[k] == group_of[o] for k in keys] for o in keys], dtype=bool)
    np.fill_diagonal(same_group, False)
    mask = same_group[[position[o] for o in own]]  # [rows, products]
    counts = mask.sum(axis=1)
    total = np.where(mask, np.nan_to_num(relative), 0.0).sum(axis=1)
    return np.where(counts > 0, total / np.maximum(counts, 1), 0.0)


def _value_counts(values: pl.Series, products: pl.Series | None) -> pl.DataFrame:
    """(product as text, value, count) of the non-null ``values`` ("" for every row without ``products``):
    the parts of a median that add up over parts of the rows. Grouped by the products' integer codes,
    several times faster than by their strings for tens of millions of rows."""
    if products is None:
        frame = pl.DataFrame({"value": values.cast(pl.Float64)}).drop_nulls().group_by("value").len(name="count")
        return frame.select(pl.lit("").alias(n.SERIES_PRODUCT), "value", pl.col("count").cast(pl.Int64))
    text = products.cast(pl.String)
    names = text.unique().drop_nulls().sort()
    codes = text.cast(pl.Enum(names)).to_physical()
    frame = pl.DataFrame({"code": codes, "value": values.cast(pl.Float64)}).drop_nulls()
    counts = frame.group_by("code", "value").len(name="count")
    return counts.select(
        pl.col("code").replace_strict(pl.Series(range(len(names)), dtype=codes.dtype), names).alias(n.SERIES_PRODUCT),
        "value",
        pl.col("count").cast(pl.Int64),
    )


def _medians(counts: pl.DataFrame) -> dict[str, float]:
    """Each product's median from its (value, count) rows, one per distinct value: the middle value, or the
    mean of the two middle ones, as polars' median of the rows themselves."""
    out = {}
    for (product,), part in counts.group_by(n.SERIES_PRODUCT):
        part = part.sort("value")
        values, cumulative = part["value"].to_numpy(), np.cumsum(part["count"].to_numpy())
        total = int(cumulative[-1])
        low, high = (total - 1) // 2, total // 2  # 0-based ranks of the middle value(s)
        out[str(product)] = float((values[np.searchsorted(cumulative, low, "right")] + values[np.searchsorted(cumulative, high, "right")]) / 2)
    return out


@dataclass(frozen=True)
class _RowLookups:
    """What encoding a block of rows looks up, built once per stretch of periods instead of once per block."""

    store_keys: list
    store_enum: pl.Enum | None  # the keys as an Enum when they are all text: a cast instead of a lookup
    product_keys: list | None  # None without a product key
    product_enum: pl.Enum | None
    n_products: int
    series_pairs: pl.Series  # store code * n_products + product code, in series order
    base_log_price: dict[str, np.ndarray]  # price covariate -> reference log price per product code

    @classmethod
    def build(cls, encoding: PanelEncoding, spec: PanelSpec) -> _RowLookups:
        n_products = len(encoding.product_keys)
        base = {
            name: np.array([ref.get(str(key), np.nan) for key in encoding.product_keys] if spec.sales.product else [ref.get("", np.nan)])
            for name, ref in encoding.reference_log_price.items()
        }
        has_product = spec.sales.product is not None
        return cls(
            store_keys=list(encoding.store_keys),
            store_enum=_text_enum(encoding.store_keys),
            product_keys=list(encoding.product_keys) if has_product else None,
            product_enum=_text_enum(encoding.product_keys) if has_product else None,
            n_products=n_products,
            series_pairs=pl.Series([store * n_products + product for store, product in encoding.series], dtype=pl.Int64),
            base_log_price=base,
        )


def _text_enum(keys: tuple) -> pl.Enum | None:
    return pl.Enum(list(keys)) if keys and all(isinstance(key, str) for key in keys) else None


def _positions(column: pl.Series, keys: list, enum: pl.Enum | None, strict: bool = True) -> pl.Series:
    """Each row's position in ``keys`` (Int64), column-wise: a Python lookup per row takes a minute and
    gigabytes for the 54M rows of M5. A value not among ``keys`` raises KeyError, or is null if not ``strict``."""
    if enum is not None and column.dtype == pl.String():
        codes = column.cast(enum, strict=False).to_physical().cast(pl.Int64)
    else:
        codes = column.replace_strict(keys, list(range(len(keys))), default=None, return_dtype=pl.Int64)
    if strict and codes.null_count():
        raise KeyError(column.filter(codes.is_null())[0])
    return codes


def _series_index(store_code: pl.Series, product_code: pl.Series | None, lookups: _RowLookups, strict: bool = True) -> pl.Series:
    """Each row's series: its position in the encoding's series (pairs of store and product codes). A pair
    (or code) the encoding lacks raises KeyError, or is null if not ``strict``."""
    n_products, pairs = lookups.n_products, lookups.series_pairs
    row_pairs = store_code * n_products + (0 if product_code is None else product_code)
    index = row_pairs.replace_strict(pairs, pl.int_range(pairs.len(), dtype=pl.Int64, eager=True), default=None, return_dtype=pl.Int64)
    if strict and index.null_count():
        pair = row_pairs.filter(index.is_null())[0]
        raise KeyError((pair // n_products, pair % n_products))
    return index


# Rows are encoded a block at a time: for the 54M rows of M5, whole-frame codes, cell indices and float64
# values (each 0.4 GB, several alive at once) raised the peak memory by 3 GB on top of the output arrays.
ROWS_PER_BLOCK = 1 << 21


def _row_blocks(frame: pl.DataFrame) -> list[pl.DataFrame]:
    """Consecutive slices of ``frame`` (views, no copies), in row order."""
    return [frame.slice(start, ROWS_PER_BLOCK) for start in range(0, frame.height, ROWS_PER_BLOCK)]


def _cells(
    block: pl.DataFrame, lookups: _RowLookups, period_days: int, periods: np.ndarray, keep_inside: bool, row_of: pl.Series | None = None
) -> tuple[pl.DataFrame, np.ndarray, pl.Series | None]:
    """Each row's cell in the flattened [series, period] arrays (series * n_periods + period), and its
    product code (None without a product key). ``keep_inside``: rows of a series the encoding lacks, or
    of a period outside ``periods``, are dropped (the block returned is then a filtered copy); else
    they raise KeyError (series) or ValueError (periods). ``row_of``: each encoding series' row in arrays
    of some of the series (null for the others, whose rows are then dropped or raise as unknown series)."""
    strict = not keep_inside
    store_code = _positions(block[n.SERIES_STORE], lookups.store_keys, lookups.store_enum, strict)
    product_code = None
    if lookups.product_keys is not None:
        product_code = _positions(block[n.SERIES_PRODUCT], lookups.product_keys, lookups.product_enum, strict)
    series = _series_index(store_code, product_code, lookups, strict)
    if row_of is not None:
        series = row_of.gather(series)
        if strict and series.null_count():
            raise KeyError(f"{series.null_count()} rows of series outside the arrays' series")
    # in polars: numpy's datetime arithmetic makes a temporary per step
    days = (pl.col(n.PERIOD) - pl.lit(periods[0].astype(dt.date))).dt.total_days().cast(pl.Int64)
    period = block.select(days // period_days).to_series()
    inside = series.is_not_null() & (period >= 0) & (period < len(periods))
    if not inside.all():
        if not keep_inside:
            outside = block.filter(~inside)[n.PERIOD]
            raise ValueError(f"{outside.len()} rows lie outside the encoding's periods {periods[0]} to {periods[-1]} (first: {outside[0]})")
        block, series, period = block.filter(inside), series.filter(inside), period.filter(inside)
        product_code = None if product_code is None else product_code.filter(inside)
    return block, series.to_numpy() * len(periods) + period.to_numpy(), product_code


def _scatter_covariates(
    x_cells: np.ndarray, block: pl.DataFrame, cell: np.ndarray, product_code: pl.Series | None, encoding: PanelEncoding,
    spec: PanelSpec, products: pl.DataFrame | None, lookups: _RowLookups,
) -> None:
    """Each covariate of ``block``'s rows into its column of ``x_cells`` ([cells, features], a view of x_series)."""
    for j, covariate in enumerate(spec.covariates):
        base = lookups.base_log_price.get(covariate.name)
        values = _covariate_values(block, covariate, encoding.covariate_scaling, base, product_code)
        x_cells[:, j][cell] = np.nan_to_num(values)
    if encoding.cross_price:
        x_cells[:, len(spec.covariates)][cell] = _cross_price_values(block, spec, encoding, products)


def _scatter_target(
    block: pl.DataFrame, cell: np.ndarray, spec: PanelSpec, y_cells: np.ndarray, observed_cells: np.ndarray,
    censored_cells: np.ndarray | None,
) -> None:
    """``block``'s usable targets into ``y_cells`` and ``observed_cells`` (flattened [series, period]), and its
    stock-outs among them into ``censored_cells``."""
    target = block[n.TARGET].cast(pl.Float64).to_numpy()
    usable = np.isfinite(target)
    if spec.target_kind == "amount":
        usable &= target > 0  # the log-scale likelihood needs a positive amount
    usable_cell = cell[usable]
    y_cells[usable_cell] = target[usable]
    observed_cells[usable_cell] = True
    if censored_cells is not None:
        flagged = usable & block[CENSORED].fill_null(False).to_numpy()
        censored_cells[cell[flagged]] = True


def _scatter(
    frame: pl.DataFrame,
    encoding: PanelEncoding,
    spec: PanelSpec,
    periods: np.ndarray,
    products: pl.DataFrame | None,
    with_target: bool,
    keep_inside: bool = False,
    series_rows: np.ndarray | None = None,
) -> tuple[PanelArrays, int]:
    """Arrays [series, period] of one stretch of periods from its rows, and how many rows they hold.
    ``keep_inside``: rows of the encoding's series and of ``periods`` only (see ``_cells``), chosen block
    by block: filtering the whole frame first copied M5's 4 GB of sales. ``series_rows``: arrays of these
    encoding series only, in this order (default: every series)."""
    row_of = None
    if series_rows is not None:
        positions = np.full(encoding.n_series, -1, np.int64)
        positions[series_rows] = np.arange(len(series_rows))
        row_of = pl.Series(positions).replace(-1, None)
    shape = (encoding.n_series if series_rows is None else len(series_rows), len(periods))
    x_series = np.zeros((*shape, len(encoding.series_names(spec))), np.float32)
    present = np.zeros(shape, bool)
    y = np.zeros(shape, np.float32)
    observed = np.zeros(shape, bool)
    censored = np.zeros(shape, bool) if with_target and CENSORED in frame.columns else None
    # flat views: a row's cell is then one index instead of a (series, period) pair
    x_cells = x_series.reshape(math.prod(shape), x_series.shape[-1])  # not (-1, F): F may be 0
    y_cells, observed_cells, present_cells = y.reshape(-1), observed.reshape(-1), present.reshape(-1)
    censored_cells = None if censored is None else censored.reshape(-1)
    lookups = _RowLookups.build(encoding, spec)
    n_rows = 0
    for block in _row_blocks(frame):
        block, cell, product_code = _cells(block, lookups, encoding.period_days, periods, keep_inside, row_of)
        n_rows += block.height
        _scatter_covariates(x_cells, block, cell, product_code, encoding, spec, products, lookups)
        present_cells[cell] = True
        if with_target:
            _scatter_target(block, cell, spec, y_cells, observed_cells, censored_cells)
    arrays = PanelArrays(
        periods=periods,
        x_time=time_features(periods, encoding.fourier_order, encoding.weekday),
        x_series=x_series,
        y=y,
        observed=observed,
        present=present,
        censored=censored,
    )
    return arrays, n_rows


@dataclass(frozen=True)
class EncodingStats:
    """What a new encoding learns from the rows of sales (and future), in parts that add up: a panel read a
    part at a time (``tasks.data.panel_blocks``) merges the parts' stats into the whole panel's."""

    series: pl.DataFrame  # the distinct keys: store (and product)
    first: dt.date  # of the history
    last: dt.date
    moments: dict[str, tuple[int, float, float]]  # numeric covariate -> (count, mean, sum of squared deviations)
    price_counts: dict[str, pl.DataFrame]  # price covariate -> (product, value, count) of its own column
    pattern_counts: dict[str, pl.DataFrame]  # price pattern column -> ("", value, count)

    def merge(self, other: EncodingStats) -> EncodingStats:
        moments = {}
        for name, (n_a, mean_a, m2_a) in self.moments.items():
            n_b, mean_b, m2_b = other.moments[name]
            total = n_a + n_b
            delta = mean_b - mean_a
            # Chan et al.'s pairwise update: no cancellation between large sums of squares
            mean = mean_a + delta * n_b / total if total else 0.0
            moments[name] = (total, mean, m2_a + m2_b + delta * delta * n_a * n_b / total if total else 0.0)

        def joined(a: dict[str, pl.DataFrame], b: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
            # counts of the same (product, value) added up, so that a hundred parts' stats stay one part's size
            added = {k: pl.concat([a[k], b[k]]).group_by(n.SERIES_PRODUCT, "value").agg(pl.col("count").sum()) for k in a.keys() & b.keys()}
            return {k: added[k] if k in added else a.get(k, b.get(k)) for k in {*a, *b}}

        keys = list(self.series.columns)
        return EncodingStats(
            series=pl.concat([self.series, other.series]).unique().sort(keys),
            first=min(self.first, other.first),
            last=max(self.last, other.last),
            moments=moments,
            price_counts=joined(self.price_counts, other.price_counts),
            pattern_counts=joined(self.pattern_counts, other.pattern_counts),
        )


def encoding_stats(tables: PanelTables) -> EncodingStats:
    spec = tables.spec
    moments = {}
    for covariate in spec.covariates:
        if covariate.kind == "numeric":
            values = tables.sales[covariate.name].cast(pl.Float64)
            if covariate.fill is not None:
                values = values.fill_null(covariate.fill)
            values = values.drop_nulls().to_numpy()
            mean = float(values.mean()) if values.size else 0.0
            moments[covariate.name] = (int(values.size), mean, float(((values - mean) ** 2).sum()))
    price_counts, pattern_counts = {}, {}
    product = tables.sales[n.SERIES_PRODUCT] if spec.sales.product is not None else None
    for covariate in spec.covariates:
        if covariate.kind != "price":
            continue
        price_counts[covariate.name] = _value_counts(tables.sales[covariate.name], product)
        if covariate.per_product:
            for column in tables.sales.columns:
                if covariate.column.replace(PRODUCT_PLACEHOLDER, "") != column and _matches(covariate.column, column):
                    pattern_counts[column] = _value_counts(tables.sales[column], None)
    periods = tables.sales[n.PERIOD]
    return EncodingStats(
        series=_series_keys(tables, spec.sales.product is not None),
        first=periods.min(),
        last=periods.max(),
        moments=moments,
        price_counts=price_counts,
        pattern_counts=pattern_counts,
    )


def _matches(pattern: str, column: str) -> bool:
    head, _, tail = pattern.partition(PRODUCT_PLACEHOLDER)
    return column.startswith(head) and column.endswith(tail) and len(column) > len(head) + len(tail)


def build_encoding(tables: PanelTables) -> PanelEncoding:
    return encoding_from_stats(tables.spec, encoding_stats(tables), tables.stores, tables.products)


def encoding_from_stats(spec: PanelSpec, stats: EncodingStats, stores: pl.DataFrame, products: pl.DataFrame | None) -> PanelEncoding:
    """The encoding of a panel whose rows gave ``stats``, with its dimension tables."""
    has_product = spec.sales.product is not None
    series = stats.series
    store_keys = _keys(series, n.SERIES_STORE)
    product_keys = _keys(series, n.SERIES_PRODUCT) if has_product else (None,)
    store_code = {k: i for i, k in enumerate(store_keys)}
    product_code = {k: i for i, k in enumerate(product_keys)}
    pairs = tuple(
        (store_code[row[0]], product_code[row[1] if has_product else None]) for row in series.iter_rows()
    )
    _, store_groups = _group_codes(stores, spec.hierarchy_levels(STORE_SIDE), n.SERIES_STORE, store_keys, None)
    _, product_groups = _group_codes(products, spec.hierarchy_levels(PRODUCT_SIDE), n.SERIES_PRODUCT, product_keys, None)
    store_features, store_categories = _attribute_block(stores, spec.stores, n.SERIES_STORE, store_keys, "store:")
    product_features, product_categories = _attribute_block(products, spec.products, n.SERIES_PRODUCT, product_keys, "product:")
    _, store_stats = _standardise(store_features, None)
    _, product_stats = _standardise(product_features, None)
    scaling = {}
    for name, (count, mean, m2) in stats.moments.items():
        sd = float(np.sqrt(m2 / (count - 1))) if count > 1 else 0.0  # polars' std: ddof 1
        scaling[name] = (mean if count else 0.0, sd if sd > 1e-9 else 1.0)
    return PanelEncoding(
        period_days=spec.period_days,
        anchor=stats.last.isoformat(),
        first_period=stats.first.isoformat(),
        store_keys=store_keys,
        product_keys=product_keys,
        series=pairs,
        store_groups=store_groups,
        product_groups=product_groups,
        store_attributes=store_stats,
        product_attributes=product_stats,
        categories={**store_categories, **product_categories},
        covariate_scaling=scaling,
        reference_log_price=_reference_prices(stats, spec, tuple(str(k) for k in product_keys)),
        fourier_order=spec.yearly_fourier_order,
        weekday=spec.frequency == "day",
        cross_price=spec.cross_price is not None,
    )


def _reference_prices(stats: EncodingStats, spec: PanelSpec, products: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Log median history price of each product, per price covariate ("" for all when no product key)."""
    reference: dict[str, dict[str, float]] = {}
    for covariate in spec.covariates:
        if covariate.kind != "price":
            continue
        medians = _medians(stats.price_counts[covariate.name])
        order = [k for k in products if k in medians] + sorted(set(medians) - set(products))  # one JSON text per model
        reference[covariate.name] = {key: float(np.log(medians[key])) for key in order}
        if covariate.per_product and spec.sales.product is not None:
            # A product with no history row of its own (new in the future table): its pattern column's median.
            for key in products:
                column = covariate.column.replace(PRODUCT_PLACEHOLDER, key)
                if key not in reference[covariate.name] and column in stats.pattern_counts:
                    reference[covariate.name][key] = float(np.log(_medians(stats.pattern_counts[column])[""]))
    return reference


def dimensions(tables: PanelTables, encoding: PanelEncoding) -> Dimensions:
    return dimensions_of(tables.spec, tables.stores, tables.products, encoding)


def dimensions_of(spec: PanelSpec, stores: pl.DataFrame, products: pl.DataFrame | None, encoding: PanelEncoding) -> Dimensions:
    """``dimensions`` from the dimension tables alone."""
    store_codes, _ = _group_codes(stores, spec.hierarchy_levels(STORE_SIDE), n.SERIES_STORE, encoding.store_keys, encoding.store_groups)
    product_codes, _ = _group_codes(
        products, spec.hierarchy_levels(PRODUCT_SIDE), n.SERIES_PRODUCT, encoding.product_keys, encoding.product_groups
    )
    store_features, _ = _attribute_block(stores, spec.stores, n.SERIES_STORE, encoding.store_keys, "store:")
    product_features, _ = _attribute_block(products, spec.products, n.SERIES_PRODUCT, encoding.product_keys, "product:")
    store_attr, _ = _standardise(store_features, encoding.store_attributes or None)
    product_attr, _ = _standardise(product_features, encoding.product_attributes or None)
    series = np.array(encoding.series, dtype=np.int32).reshape(-1, 2)
    return Dimensions(
        series_store=series[:, 0],
        series_product=series[:, 1],
        store_groups=store_codes,
        product_groups=product_codes,
        store_attributes=store_attr.reshape(len(encoding.store_keys), -1),
        product_attributes=product_attr.reshape(len(encoding.product_keys), -1),
    )


def history_periods(encoding: PanelEncoding) -> np.ndarray:
    return period_grid(dt.date.fromisoformat(encoding.first_period), encoding.anchor_date, encoding.period_days)


def history_arrays(
    sales: pl.DataFrame, spec: PanelSpec, products: pl.DataFrame | None, encoding: PanelEncoding, series_rows: np.ndarray
) -> tuple[PanelArrays, int]:
    """The history arrays of some of the encoding's series (``series_rows``, in that order) from sales rows
    (``PanelTables.sales``'s) that hold theirs (a part of the panel's stores: ``tasks.data.panel_blocks``), and
    how many rows entered; ``products``: ``PanelTables.products``, or any frame that lists their products."""
    periods = history_periods(encoding)
    return _scatter(sales, encoding, spec, periods, products, True, keep_inside=True, series_rows=series_rows)


def encode_panel(tables: PanelTables, encoding: PanelEncoding | None = None) -> EncodedPanelData:
    """History and future arrays of ``tables`` (a new encoding from the history when none is given).

    With a given encoding (a fitted model's), the history is its periods and its series: sales rows of
    other series or periods are left out; the future table's series must be among its series.
    """
    spec = tables.spec
    given = encoding is not None
    encoding = encoding or build_encoding(tables)
    history, n_with_target = _scatter(tables.sales, encoding, spec, history_periods(encoding), tables.products, True, keep_inside=given)
    return EncodedPanelData(
        encoding=encoding,
        dims=dimensions(tables, encoding),
        history=history,
        future=_future_arrays(tables, encoding),
        n_masked=n_with_target - int(history.observed.sum()),
    )


def encode_future(tables: PanelTables, encoding: PanelEncoding) -> EncodedPanelData:
    """The future table's arrays in a fitted model's encoding, without a history: a forecast from a saved
    model needs none (its fitted state ends where the history did), so the memory is the future's."""
    return EncodedPanelData(
        encoding=encoding, dims=dimensions(tables, encoding), history=None, future=_future_arrays(tables, encoding), n_masked=0
    )


def _future_arrays(tables: PanelTables, encoding: PanelEncoding) -> PanelArrays | None:
    if tables.future is None or not tables.future.height:
        return None
    first = encoding.anchor_date + dt.timedelta(days=encoding.period_days)
    periods = period_grid(first, tables.future[n.PERIOD].max(), encoding.period_days)
    return _scatter(tables.future, encoding, tables.spec, periods, tables.products, with_target=False)[0]
