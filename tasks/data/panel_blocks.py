"""Read, validate and encode a panel a few stores at a time, into series blocks on disk.

For a panel too large to hold: the sales table is never read whole and no dense [series x periods]
array of the whole panel is ever in memory. Two passes over parts of the stores: the first reads and
validates each part (``read_panel(stores=...)``: Parquet row groups of other stores are skipped), adds up
what the encoding learns from rows (``EncodingStats``: the series, the periods, covariate moments, price
medians' counts) and keeps the part's validated rows in a Parquet file of the staging folder; the second
encodes each kept part with that encoding into raw staging files on disk, at the rows of the blocks its
series are shuffled into, adding up what the model's structure needs of the whole history; the blocks
(``tasks.data.series_blocks``) are then written from the staging files, one contiguous read each. Each
block is a random cross-section of the panel.
Every rule runs on every part; the report lists the broken rules of all parts at once. Pure: no
Prefect, no MLflow.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from tasks import names as n
from tasks.data.panel_encode import (
    Dimensions,
    EncodingStats,
    PanelEncoding,
    dimensions_of,
    encoding_from_stats,
    encoding_stats,
    history_arrays,
    history_periods,
    time_features,
)
from tasks.data.panel_ingest import future_stores, read_panel, sales_stores
from tasks.data.series_blocks import BlocksMeta, SeriesBlock, write_series_blocks
from tasks.data.spec import PanelSpec
from tasks.data.validate import RULE_NOT_EMPTY, InputValidationError, RuleFailure, ValidationReport
from tasks.names import FileRole

log = logging.getLogger(__name__)

BLOCK_ORDER_SEED = 0


@dataclass(frozen=True)
class HistoryTotals:
    """What the model's structure needs of the whole history, added up over the parts."""

    n_observed: int = 0
    target_sum: float = 0.0  # of the observed targets
    log_target_sum: float = 0.0  # of their logs (amounts: every observed target is > 0)
    censored_max: float = 0.0  # the largest stocked-out target (0: none)
    n_censored: int = 0
    n_masked: int = 0  # rows with a target left out of the likelihood (masked, or an amount <= 0)

    def add(self, y: np.ndarray, observed: np.ndarray, censored: np.ndarray | None, amounts: bool, n_rows: int) -> HistoryTotals:
        values = y[observed].astype(np.float64)
        stocked_out = y[censored] if censored is not None else np.zeros(0)
        return HistoryTotals(
            n_observed=self.n_observed + values.size,
            target_sum=self.target_sum + float(values.sum()),
            log_target_sum=self.log_target_sum + (float(np.log(values).sum()) if amounts else 0.0),
            censored_max=max(self.censored_max, float(stocked_out.max(initial=0.0))),
            n_censored=self.n_censored + int(stocked_out.size),
            n_masked=self.n_masked + n_rows - values.size,
        )


@dataclass(frozen=True)
class PanelBlocks:
    """An encoded panel whose history lies in a series-block folder; everything else in memory."""

    spec: PanelSpec
    encoding: PanelEncoding
    dims: Dimensions
    directory: Path  # the series-block folder
    meta: BlocksMeta
    totals: HistoryTotals
    stores: pl.DataFrame  # the dimension frames, as PanelTables holds them
    products: pl.DataFrame | None

    @property
    def periods(self) -> np.ndarray:
        """datetime64[D] [T] of the history."""
        return history_periods(self.encoding)

    @property
    def x_time(self) -> np.ndarray:
        """[T, Pt]: the history's time features."""
        return time_features(self.periods, self.encoding.fourier_order, self.encoding.weekday)


class _Staging:
    """The encoded history in raw row-major files on disk, rows in block order: each part writes its series'
    rows where their blocks will read them, and each block is then one contiguous read. Plain file reads
    and writes (no memory map), so that the staged panel stays in the page cache, not in this process."""

    def __init__(self, folder: Path, n_rows: int, n_periods: int, n_features: int, with_censored: bool) -> None:
        self._row_shape = {"y": (n_periods,), "observed": (n_periods,), "x_series": (n_periods, n_features)}
        if with_censored:
            self._row_shape["censored"] = (n_periods,)
        self._dtype = {"y": np.float32, "observed": np.bool_, "x_series": np.float32, "censored": np.bool_}
        self._files = {}
        for name in self._row_shape:
            handle = (folder / f"{name}.bin").open("w+b")
            handle.truncate(n_rows * self._row_bytes(name))
            self._files[name] = handle

    def __enter__(self) -> _Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._files.values():
            handle.close()

    def _row_bytes(self, name: str) -> int:
        return int(np.prod(self._row_shape[name], dtype=np.int64)) * np.dtype(self._dtype[name]).itemsize

    def write(self, slots: np.ndarray, arrays) -> None:
        for name, handle in self._files.items():
            values = np.ascontiguousarray(getattr(arrays, name), self._dtype[name])
            width = self._row_bytes(name)
            for row, at in enumerate(slots):
                os.pwrite(handle.fileno(), values[row].tobytes(), int(at) * width)

    def read(self, start: int, count: int) -> tuple[np.ndarray, ...]:
        out = {}
        for name, handle in self._files.items():
            width = self._row_bytes(name)
            raw = os.pread(handle.fileno(), count * width, start * width)
            out[name] = np.frombuffer(raw, self._dtype[name]).reshape(count, *self._row_shape[name])
        return out["y"], out["observed"], out["x_series"], out.get("censored")


def store_parts(stores: Sequence[object], stores_per_part: int) -> list[list[object]]:
    if stores_per_part < 1:
        raise ValueError(f"stores_per_part must be >= 1, got {stores_per_part}")
    return [list(stores[i : i + stores_per_part]) for i in range(0, len(stores), stores_per_part)]


@dataclass(frozen=True)
class _Part:
    stores: list[object]  # values of the store column, as the files hold them
    future_only: bool = False  # stores in the future table and not in the sales: new stores, without history

    def describe(self) -> str:
        return f"{len(self.stores)} {'new ' if self.future_only else ''}store{'' if len(self.stores) == 1 else 's'}"


def _parts(spec: PanelSpec, data_dir: Path, future: Path | None, stores_per_part: int) -> list[_Part]:
    """Parts of the sales file's stores, then of the future table's stores that have no sales: validated last,
    their periods against the history the others end."""
    sold = sales_stores(spec, data_dir)
    new = sorted(set(future_stores(spec, future)) - set(sold)) if future is not None and sold else []
    return [_Part(p) for p in store_parts(sold, stores_per_part)] + [_Part(p, True) for p in store_parts(new, stores_per_part)]


def _unique_rows(frames: list[pl.DataFrame], key: str) -> pl.DataFrame:
    return pl.concat(frames, how="vertical_relaxed").unique(key, keep="first", maintain_order=True).sort(key)


def _kept_part(staging: Path, number: int) -> Path:
    return staging / f"part-{number:05d}.parquet"


def _first_pass(
    spec: PanelSpec, data_dir: Path, future: Path | None, parts: list[_Part], staging: Path, on_part: Callable[[str], None]
):
    """Validate each part (with its rows of ``future``), merge its stats and keep its validated sales rows in
    ``staging`` (``_kept_part``), so that the second pass neither reads the input nor runs the rules again.
    Returns the stats, the dimension frames and each part's stores (the encoding's keys)."""
    stats: EncodingStats | None = None
    stores, products, failures, part_keys = [], [], [], []
    future_rows = 0
    for i, part in enumerate(parts, 1):
        t0 = time.perf_counter()
        if part.future_only and stats is None:
            continue  # every part of the history broke a rule: no last period to check the new stores' against
        try:
            tables = read_panel(spec, data_dir, future, stores=part.stores, history_end=stats.last if part.future_only else None)
        except InputValidationError as err:
            failures += [f for f in err.report.failures if f not in failures]
            on_part(f"validate part {i}/{len(parts)} ({part.describe()}): {len(err.report.failures)} rules broken")
            continue
        part_stats = encoding_stats(tables)
        if part.future_only:  # no history of their own: their series join, in the other parts' periods
            part_stats = EncodingStats(part_stats.series, stats.first, stats.last, dict.fromkeys(stats.moments, (0, 0.0, 0.0)), {}, {})
        stats = part_stats if stats is None else stats.merge(part_stats)
        part_keys.append(part_stats.series[n.SERIES_STORE].unique().to_list())  # of its sales and future rows
        future_rows += 0 if tables.future is None else tables.future.height
        stores.append(tables.stores)
        if tables.products is not None:
            products.append(tables.products)
        if not failures:  # once a part has failed, nothing is encoded: its rows need not be kept
            # a fast codec: the file is read back once, moments later
            tables.sales.write_parquet(_kept_part(staging, i), compression="lz4", statistics=False)
        on_part(f"validate part {i}/{len(parts)} ({part.describe()}, {tables.sales.height:,} rows): {time.perf_counter() - t0:.1f}s")
    if future is not None and not future_rows and not failures:
        failures.append(RuleFailure(str(future), FileRole.FUTURE, None, RULE_NOT_EMPTY, 0, (), ()))
    if failures:
        raise InputValidationError(ValidationReport(tuple(failures)))
    return stats, _unique_rows(stores, n.SERIES_STORE), _unique_rows(products, n.SERIES_PRODUCT) if products else None, part_keys


def encode_to_blocks(
    spec: PanelSpec,
    data_dir: str | Path,
    directory: str | Path,
    block_size: int = 256,
    stores_per_part: int = 1,
    on_part: Callable[[str], None] = log.info,
    future: str | Path | None = None,
) -> PanelBlocks:
    """Read, validate and encode the history of ``spec``'s files under ``data_dir`` into a series-block
    folder at ``directory``, ``stores_per_part`` stores at a time (see the module's docstring). ``future``: a
    future table whose rows are validated with each part's (every rule, the periods after the history), so
    that a run that forecasts it after the fit learns of a broken one first; it is not encoded, but its series
    join the encoding, those of stores without sales (new stores) too."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    data_dir = Path(data_dir)
    future = None if future is None else Path(future)
    parts = _parts(spec, data_dir, future, stores_per_part)
    if not parts:  # a sales file without rows (or without stores): the whole file's read reports the rules it breaks
        read_panel(spec, data_dir, future)
        raise ValueError(f"the sales file of spec {spec.name!r} under {data_dir} holds no store")
    Path(directory).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=Path(directory).parent) as tmp:
        stats, stores, products, part_keys = _first_pass(spec, data_dir, future, parts, Path(tmp), on_part)
        return _encode_parts(spec, stats, stores, products, Path(directory), Path(tmp), part_keys, block_size, on_part)


def _encode_parts(
    spec: PanelSpec, stats: EncodingStats, stores: pl.DataFrame, products: pl.DataFrame | None, directory: Path, staging: Path,
    part_keys: list[list[object]], block_size: int, on_part: Callable[[str], None],
) -> PanelBlocks:
    encoding = encoding_from_stats(spec, stats, stores, products)
    dims = dimensions_of(spec, stores, products, encoding)
    store_code = {key: i for i, key in enumerate(encoding.store_keys)}
    periods = history_periods(encoding)
    n_series, n_periods, n_features = encoding.n_series, len(periods), len(encoding.series_names(spec))
    # Blocks are random cross-sections of the panel (every store and department in each), so that a pool of
    # a few blocks is a sample of the whole panel and not of the stores read last; a series' slot in the
    # block order is its rank in a fixed shuffle (the layout of the data, not a draw of the model).
    order = np.random.default_rng(BLOCK_ORDER_SEED).permutation(n_series)
    slot = np.empty(n_series, np.int64)
    slot[order] = np.arange(n_series)
    totals = HistoryTotals()
    with _Staging(staging, n_series, n_periods, n_features, with_censored=bool(spec.sales.censoring_columns)) as arrays_on_disk:
        for i, keys in enumerate(part_keys, 1):
            t0 = time.perf_counter()
            sales = pl.read_parquet(_kept_part(staging, i))
            _kept_part(staging, i).unlink()
            codes = [store_code[key] for key in keys]
            rows = np.flatnonzero(np.isin(dims.series_store, codes))
            arrays, n_rows = history_arrays(sales, spec, products, encoding, rows)
            del sales
            totals = totals.add(arrays.y, arrays.observed, arrays.censored, spec.target_kind == "amount", n_rows)
            arrays_on_disk.write(slot[rows], arrays)
            on_part(f"encode part {i}/{len(part_keys)} ({rows.size:,} series): {time.perf_counter() - t0:.1f}s")

        def blocks() -> Iterator[SeriesBlock]:
            for start in range(0, n_series, block_size):
                series = order[start : start + block_size].astype(np.int32)
                y, observed, x_series, censored = arrays_on_disk.read(start, series.size)
                yield SeriesBlock(series, dims.series_store[series], dims.series_product[series], y, observed, x_series, censored)

        t0 = time.perf_counter()
        meta = write_series_blocks(directory, blocks())
        on_part(f"write {meta.n_blocks} series blocks: {time.perf_counter() - t0:.1f}s")
    return PanelBlocks(
        spec=spec,
        encoding=encoding,
        dims=dims,
        directory=Path(directory),
        meta=meta,
        totals=totals,
        stores=stores,
        products=products,
    )
