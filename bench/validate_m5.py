"""Read, validate and encode an M5-sized panel (30,490 series x 1,941 days): seconds and peak memory.

The data is a folder of ``bhm demo --shape m5`` (``--data``; by default one is written to a temporary
folder first, ``--series`` and ``--days`` as in ``bhm demo``). Each repetition runs in a fresh process,
so that its peak RSS is its own: ``tasks.data.panel_ingest.read_panel`` (read and every rule; the future
file too when the folder has one), then ``tasks.data.panel_encode.encode_panel`` unless ``--no-encode``.

    python bench/validate_m5.py --data /tmp/m5full    # goal (issue 11): read+validate+encode <= 60 s, peak RSS <= 6 GB
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from tasks.data.spec import load_spec  # noqa: E402

GOAL_SECONDS = 60.0
GOAL_GB = 6.0
FIELDS = [
    ("read_validate_s", "read+validate s", ".1f"),
    ("read_validate_peak_rss_gb", "its peak RSS GB", ".2f"),
    ("encode_s", "encode s", ".1f"),
    ("total_s", "total s", ".1f"),
    ("peak_rss_gb", "peak RSS GB", ".2f"),
]


def child(args: argparse.Namespace) -> dict:
    from tasks.data.panel_ingest import read_panel

    future = args.data / "future.parquet"
    t0 = time.perf_counter()
    tables = read_panel(load_spec(args.data / "spec.yaml"), args.data, future if future.is_file() else None)
    record = {
        "read_validate_s": time.perf_counter() - t0,
        "read_validate_peak_rss_gb": common.peak_rss_gb(),
        "rows": tables.sales.height,
        "series": None,
    }
    if args.encode:
        from tasks.data.panel_encode import encode_panel

        t1 = time.perf_counter()
        encoded = encode_panel(tables)
        record["encode_s"] = time.perf_counter() - t1
        record["series"] = encoded.encoding.n_series
    record["total_s"] = time.perf_counter() - t0
    record["peak_rss_gb"] = common.peak_rss_gb()
    return record


def write_demo(folder: Path, series: int | None, days: int | None) -> None:
    from tasks.data.m5_demo import M5_DAYS, M5_SERIES, write_m5_demo

    t0 = time.perf_counter()
    write_m5_demo(folder, n_series=series or M5_SERIES, n_days=days or M5_DAYS)
    print(f"wrote the M5 demo to {folder} in {time.perf_counter() - t0:.0f} s")


def main() -> None:
    p = common.parser(__doc__.split("\n\n")[0], repeats=3, fit=False)
    p.set_defaults(data=None)
    p.add_argument("--series", type=int, default=None, help="without --data: about N series (default M5's 30,490)")
    p.add_argument("--days", type=int, default=None, help="without --data: days of history (default M5's 1,941)")
    p.add_argument("--no-encode", dest="encode", action="store_false", help="read and validate only")
    args = p.parse_args()
    if args.child:
        common.setup(args)
        common.child_done(child(args))
        return
    machine = common.machine_info()
    common.print_machine(machine)
    with tempfile.TemporaryDirectory(prefix="bhm-m5-") as tmp:
        if args.data is None:
            args.data = Path(tmp)
            write_demo(args.data, args.series, args.days)
        argv = ["--data", str(args.data), *([] if args.encode else ["--no-encode"])]
        runs = [common.run_fresh(__file__, argv) for _ in range(args.repeats)]
    print(f"data: {runs[0]['rows']:,} sales rows" + (f", {runs[0]['series']:,} series" if runs[0]["series"] else ""))
    for i, run in enumerate(runs, 1):
        common.show(f"repeat {i}", run, FIELDS)
    medians = common.medians(runs)
    common.show(f"median of {len(runs)}", medians, FIELDS)
    goals = [
        common.goal("total seconds", medians["total_s"], medians["total_s"] <= GOAL_SECONDS, f"<= {GOAL_SECONDS:.0f} s"),
        common.goal("peak RSS GB", medians["peak_rss_gb"], medians["peak_rss_gb"] <= GOAL_GB, f"<= {GOAL_GB} GB"),
    ]
    common.result("validate_m5.py", args, machine, runs=runs, medians=medians, goals=goals)


if __name__ == "__main__":
    main()
