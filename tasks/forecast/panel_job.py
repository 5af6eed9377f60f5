"""A panel forecast as a job of partitions that any engine can run: everything a partition needs, in one
folder of plain files (arrays in ``.npz``, the rest in JSON), and each partition's result in a
file of its own.

``write_job`` is called once by the flow; ``run_partition(folder, p)`` by whichever process runs partition
``p`` (this one, or a Dask worker on another machine that sees the folder), and writes ``part-<p>.npz``
under a temporary name first, so a retried or killed partition never leaves a half-written file;
``read_blocks`` hands the finished blocks to ``combine_blocks`` in partition order. Pure: no Prefect, no
MLflow, no Dask.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import jax
import numpy as np

from tasks.forecast.panel_draws import AggregateLevel, ChunkPlan, SeriesBlockForecast, forecast_series_block
from tasks.model.inference import Params
from tasks.model.panel import PanelInputs, PanelStructure
from tasks.model.panel_state import structure_from_json
from tasks.ops.atomic import write_file

JOB_FILE = "job.json"
ARRAYS_FILE = "job.npz"
JOB_VERSION = 2  # 2: the inputs carry the log offset
_PARAM, _INPUT, _CODES = "param/", "input/", "aggregate/"


def part_path(folder: Path, partition: int) -> Path:
    return Path(folder) / f"part-{partition:05d}.npz"


def write_job(
    folder: Path,
    params: Params,
    structure: PanelStructure,
    inputs: PanelInputs,
    key: jax.Array,
    plan: ChunkPlan,
    num_draws: int,
    quantiles: tuple[float, ...],
    aggregates: tuple[AggregateLevel, ...],
    wanted: np.ndarray,
) -> Path:
    """Write the job into ``folder`` (created; the job files are written whole or not at all)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {f"{_PARAM}{k}": np.asarray(v) for k, v in params.items()}
    arrays |= {f"{_INPUT}{k}": np.asarray(v) for k, v in inputs._asdict().items() if v is not None}
    arrays |= {f"{_CODES}{a.name}": np.asarray(a.codes) for a in aggregates}
    arrays["wanted"] = np.asarray(wanted, bool)
    arrays["key"] = np.asarray(jax.random.key_data(key))

    def save_arrays(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(handle, **arrays)

    write_file(folder / ARRAYS_FILE, save_arrays)
    meta = {
        "job_version": JOB_VERSION,
        "structure": asdict(structure),
        "plan": asdict(plan),
        "num_draws": num_draws,
        "quantiles": list(quantiles),
        # labels only matter for the forecast file, which the flow builds; a partition needs their count
        "aggregates": [{"name": a.name, "n_groups": len(a.labels)} for a in aggregates],
    }
    write_file(folder / JOB_FILE, lambda tmp: tmp.write_text(json.dumps(meta, indent=2, default=str)))
    return folder


def run_partition(folder: Path, partition: int) -> Path:
    """Compute partition ``partition`` of the job in ``folder`` and write its block; returns the block's file."""
    folder = Path(folder)
    meta = json.loads((folder / JOB_FILE).read_text())
    if meta.get("job_version") != JOB_VERSION:
        raise ValueError(f"{folder / JOB_FILE}: job version {meta.get('job_version')!r} is not {JOB_VERSION}")
    with np.load(folder / ARRAYS_FILE, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    params = {k.removeprefix(_PARAM): v for k, v in arrays.items() if k.startswith(_PARAM)}
    fields = dict.fromkeys(PanelInputs._fields)
    fields |= {k.removeprefix(_INPUT): jax.numpy.asarray(v) for k, v in arrays.items() if k.startswith(_INPUT)}
    inputs = PanelInputs(**fields)
    aggregates = tuple(
        AggregateLevel(a["name"], (None,) * a["n_groups"], arrays[f"{_CODES}{a['name']}"]) for a in meta["aggregates"]
    )
    block = forecast_series_block(
        params,
        structure_from_json(meta["structure"]),
        inputs,
        jax.random.wrap_key_data(arrays["key"]),
        ChunkPlan(**meta["plan"]),
        partition,
        meta["num_draws"],
        tuple(meta["quantiles"]),
        aggregates,
        arrays["wanted"],
    )
    return write_block(part_path(folder, partition), block)


def write_block(path: Path, block: SeriesBlockForecast) -> Path:
    arrays = {"first": np.asarray(block.first), "mean": block.mean, "quantiles": block.quantiles}
    arrays |= {f"sums/{k}": v for k, v in block.aggregate_sums.items()}
    arrays |= {f"mean_sums/{k}": v for k, v in block.aggregate_mean_sums.items()}

    def save(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(handle, **arrays)

    return write_file(path, save)


def read_block(path: Path) -> SeriesBlockForecast:
    with np.load(path, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    return SeriesBlockForecast(
        first=int(arrays["first"]),
        mean=arrays["mean"],
        quantiles=arrays["quantiles"],
        aggregate_sums={k.removeprefix("sums/"): v for k, v in arrays.items() if k.startswith("sums/")},
        aggregate_mean_sums={k.removeprefix("mean_sums/"): v for k, v in arrays.items() if k.startswith("mean_sums/")},
    )


def read_blocks(paths: list[Path]) -> Iterator[SeriesBlockForecast]:
    """The blocks of ``paths`` (in the order given: partition order), one at a time."""
    for path in paths:
        yield read_block(path)
