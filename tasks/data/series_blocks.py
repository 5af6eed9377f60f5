"""Encoded series on disk, in blocks: what a fit reads one block at a time instead of holding the panel.

A folder holds ``series.parquet``, one row per series and one row group per block of series, with the
series' encoded arrays as fixed-size list columns (the target, the observed and stocked-out masks, the
series x period covariates flattened period-major), and ``blocks.json``: the shape (series, periods,
features), each block's size, and totals a fit needs before reading any block (observed
cells, the most censored periods of a series). Blocks are written one after the other, so the writer
never holds more than one; the folder appears whole or not at all (``tasks.ops.atomic.write_folder``).
Pure: no Prefect, no MLflow.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.ops.atomic import write_folder

SERIES_FILE = "series.parquet"
META_FILE = "blocks.json"
FORMAT_VERSION = 1


class SeriesBlock(NamedTuple):
    """The encoded arrays of a block of series (every array's first axis: the block's series)."""

    series: np.ndarray  # int32 [b]: each series' index in the panel
    store: np.ndarray  # int32 [b]: its store code
    product: np.ndarray  # int32 [b]: its product code
    y: np.ndarray  # float32 [b, T]; 0 where unobserved
    observed: np.ndarray  # bool [b, T]
    x_series: np.ndarray  # float32 [b, T, F]
    censored: np.ndarray | None = None  # bool [b, T]; None: the panel has no stocked-out cell

    @property
    def size(self) -> int:
        return int(self.series.shape[0])


@dataclass(frozen=True)
class BlocksMeta:
    n_series: int
    n_periods: int
    n_features: int
    block_sizes: tuple[int, ...]
    n_observed: int  # observed cells over every series
    max_censored: int  # the most censored periods of one series (0: no censored cell)
    version: int = FORMAT_VERSION

    @property
    def n_blocks(self) -> int:
        return len(self.block_sizes)

    @property
    def block_size(self) -> int:
        """The largest block's size: what a pool of blocks is padded to."""
        return max(self.block_sizes)


def _fixed_lists(values: np.ndarray, value_type: pa.DataType) -> pa.FixedSizeListArray:
    rows = values.shape[0]
    width = int(np.prod(values.shape[1:], dtype=np.int64))
    flat = pa.array(np.ascontiguousarray(values).reshape(rows * width), type=value_type)
    return pa.FixedSizeListArray.from_arrays(flat, width)


def _check_block(block: SeriesBlock, shape: tuple[int, int, int] | None, index: int) -> tuple[int, int, int]:
    b, t, f = block.x_series.shape
    if shape is not None and (t, f) != shape[1:]:
        raise ValueError(f"series block {index}: {t} periods x {f} features, the first block had {shape[1]} x {shape[2]}")
    for name, array in (("y", block.y), ("observed", block.observed)) + ((("censored", block.censored),) if block.censored is not None else ()):
        if array.shape != (b, t):
            raise ValueError(f"series block {index}: {name} has shape {array.shape}, expected {(b, t)}")
    if b == 0:
        raise ValueError(f"series block {index} is empty")
    return b, t, f


def write_series_blocks(directory: str | Path, blocks: Iterable[SeriesBlock]) -> BlocksMeta:
    """Write ``blocks`` (of one shape; together every series 0..N-1 exactly once, in any order) as a
    series-block folder. Blocks are consumed one at a time: a generator that encodes each on demand
    keeps one block in memory."""
    meta: BlocksMeta | None = None

    def write(tmp: Path) -> None:
        nonlocal meta
        writer: pq.ParquetWriter | None = None
        sizes: list[int] = []
        n_observed = max_censored = 0
        shape: tuple[int, int, int] | None = None
        with_censored: bool | None = None
        seen = np.zeros(0, bool)
        try:
            for index, block in enumerate(blocks):
                b, t, f = _check_block(block, shape, index)
                shape = shape or (b, t, f)
                if with_censored is None:
                    with_censored = block.censored is not None
                elif with_censored != (block.censored is not None):
                    raise ValueError("either every block carries the censored mask or none does")
                if block.series.min() < 0:
                    raise ValueError(f"series block {index}: negative series index {int(block.series.min())}")
                if block.series.max() >= seen.size:
                    seen = np.concatenate([seen, np.zeros(int(block.series.max()) + 1 - seen.size, bool)])
                values, counts = np.unique(block.series, return_counts=True)
                again = values[seen[values] | (counts > 1)]
                if again.size:
                    raise ValueError(f"series block {index}: series {int(again[0])} is written twice")
                seen[values] = True
                columns = {
                    "series": pa.array(block.series, pa.int32()),
                    "store": pa.array(block.store, pa.int32()),
                    "product": pa.array(block.product, pa.int32()),
                    "y": _fixed_lists(block.y, pa.float32()),
                    "observed": _fixed_lists(block.observed, pa.bool_()),
                    "x_series": _fixed_lists(block.x_series, pa.float32()),
                }
                if with_censored:
                    columns["censored"] = _fixed_lists(block.censored, pa.bool_())
                    max_censored = max(max_censored, int(block.censored.sum(axis=1).max()))
                table = pa.table(columns)
                if writer is None:
                    writer = pq.ParquetWriter(tmp / SERIES_FILE, table.schema, compression="zstd")
                writer.write_table(table, row_group_size=b)
                sizes.append(b)
                n_observed += int(block.observed.sum())
        finally:
            if writer is not None:
                writer.close()
        if shape is None:
            raise ValueError("no series blocks to write")
        if not seen.all():
            raise ValueError(f"series {int(np.flatnonzero(~seen)[0])} is in no block (the blocks hold {int(seen.sum())} of 0..{seen.size - 1})")
        meta = BlocksMeta(int(seen.size), shape[1], shape[2], tuple(sizes), n_observed, max_censored)
        (tmp / META_FILE).write_text(json.dumps(meta.__dict__))

    write_folder(directory, write)
    return meta


def _matrix(column: pa.ChunkedArray, rows: int, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    values = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype).reshape(rows, *shape)


class SeriesBlocks:
    """A series-block folder, read one block (a Parquet row group) at a time."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / META_FILE
        if not meta_path.is_file() or not (self.directory / SERIES_FILE).is_file():
            raise FileNotFoundError(f"{self.directory}: not a series-block folder (needs {SERIES_FILE} and {META_FILE})")
        raw = json.loads(meta_path.read_text())
        if raw.get("version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: series-block format {raw.get('version')!r} is not supported ({FORMAT_VERSION})")
        self.meta = BlocksMeta(**{**raw, "block_sizes": tuple(raw["block_sizes"])})
        self._file = pq.ParquetFile(self.directory / SERIES_FILE)
        if self._file.metadata.num_row_groups != self.meta.n_blocks:
            raise ValueError(f"{self.directory / SERIES_FILE}: {self._file.metadata.num_row_groups} row groups, {META_FILE} says {self.meta.n_blocks}")
        self.has_censored = "censored" in self._file.schema_arrow.names

    def read(self, index: int) -> SeriesBlock:
        if not 0 <= index < self.meta.n_blocks:
            raise IndexError(f"block {index} out of range (0..{self.meta.n_blocks - 1})")
        table = self._file.read_row_group(index)
        rows, t, f = table.num_rows, self.meta.n_periods, self.meta.n_features
        return SeriesBlock(
            series=table["series"].to_numpy().astype(np.int32),
            store=table["store"].to_numpy().astype(np.int32),
            product=table["product"].to_numpy().astype(np.int32),
            y=_matrix(table["y"], rows, (t,), np.float32),
            observed=_matrix(table["observed"], rows, (t,), bool),
            x_series=_matrix(table["x_series"], rows, (t, f), np.float32),
            censored=_matrix(table["censored"], rows, (t,), bool) if self.has_censored else None,
        )

    def __iter__(self) -> Iterator[SeriesBlock]:
        for index in range(self.meta.n_blocks):
            yield self.read(index)
