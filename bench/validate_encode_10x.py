"""Read, validate and encode an input 10 times Rossmann's size: peak memory against the scale goal.

The train file is Rossmann's own, copied 10 times with the stores renumbered (11,150 stores x 942
days, about 10.2M rows; the store file likewise), written as CSV to a temporary folder. Each
repetition reads, validates (every rule) and encodes it in a fresh process, as the nightly job
does (``tasks.data.validate.read_validated``, ``tasks.data.encode``), and reports seconds per
stage and peak RSS.

    python bench/validate_encode_10x.py --repeats 1      # goal: peak RSS <= 6 GB
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from tasks import names as n  # noqa: E402

GOAL_GB = 6.0
COPIES = 10


def write_10x(data_dir: Path, out_dir: Path, copies: int = COPIES) -> tuple[Path, Path, int]:
    train, stores = common.rossmann_files(data_dir)
    raw_train = pl.read_csv(train, infer_schema=False)
    raw_stores = pl.read_csv(stores, infer_schema=False)
    n_stores = raw_stores.height
    renumber = [
        pl.concat(
            frame.with_columns((pl.col(n.STORE).cast(pl.Int64) + k * n_stores).cast(pl.String).alias(n.STORE))
            for k in range(copies)
        )
        for frame in (raw_train, raw_stores)
    ]
    out_train, out_stores = out_dir / "train.csv", out_dir / "store.csv"
    renumber[0].write_csv(out_train)
    renumber[1].write_csv(out_stores)
    return out_train, out_stores, renumber[0].height


def child(args) -> dict:
    t0 = time.perf_counter()
    _, encoded, seconds = common.read_encode(args.train_file, args.stores_file, None, common.fit_config(None))
    history = encoded.history
    return {
        **seconds,
        "total_s": time.perf_counter() - t0,
        "peak_rss_gb": common.peak_rss_gb(),
        "stores": int(history.n_stores),
        "days": int(history.n_days),
    }


def main() -> None:
    p = common.parser(__doc__.split("\n\n")[0], repeats=1, fit=False)
    p.add_argument("--train-file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--stores-file", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        common.setup(args)
        common.child_done(child(args))
        return
    machine = common.machine_info()
    common.print_machine(machine)
    with tempfile.TemporaryDirectory(prefix="bhm-10x-") as tmp:
        t0 = time.perf_counter()
        train, stores, rows = write_10x(args.data, Path(tmp))
        print(f"wrote {rows:,} train rows ({train.stat().st_size / 2**20:.0f} MiB CSV) in {time.perf_counter() - t0:.1f} s")
        argv = ["--data", str(args.data), "--train-file", str(train), "--stores-file", str(stores)]
        runs = [common.run_fresh(__file__, argv) for _ in range(args.repeats)]
    fields = [("read_validate_s", "read+validate", ".1f"), ("encode_s", "encode", ".1f"), ("total_s", "total", ".1f"),
              ("peak_rss_gb", "peak RSS GB", ".2f"), ("stores", "stores", "d"), ("days", "days", "d")]  # fmt: skip
    for i, run in enumerate(runs, 1):
        common.show(f"repeat {i}", run, fields)
    medians = common.medians(runs)
    common.show("median", medians, fields)
    goal = common.goal("peak_rss_gb", medians["peak_rss_gb"], medians["peak_rss_gb"] <= GOAL_GB, f"<= {GOAL_GB} GB")
    common.result("validate_encode_10x.py", args, machine, rows=rows, runs=runs, medians=medians, goals=[goal])


if __name__ == "__main__":
    main()
