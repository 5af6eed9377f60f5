"""A saved panel model's forecast (`bhm forecast --spec`): read + validate, encode, forecast every series and
aggregate, build the frame; seconds and peak memory, each repeat a fresh process.

Two modes: ``future`` (what `bhm forecast` does: the sales file is not read, only the future table, the
dimension tables and the calendar) and ``with-history`` (what it did before: the sales file read, validated
and encoded whole in the model's encoding, though the forecast uses none of it), the baseline.

    bhm demo --shape m5 --out m5 && bhm train --spec m5/spec.yaml --data m5 --state-dir m5/model --no-tracking
    python bench/saved_model_forecast.py --data m5 --model-dir m5/model
    # goal (issue 11): the forecast of 28 days x 1,000 draws with every aggregate level in 60 s or less, peak RSS <= 6 GB
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import jax  # noqa: E402

from tasks.config import ForecastConfig  # noqa: E402
from tasks.data.panel_encode import encode_panel  # noqa: E402
from tasks.data.panel_ingest import read_panel  # noqa: E402
from tasks.data.spec import load_spec  # noqa: E402
from tasks.panel_pipeline import aggregate_levels, encode_for, forecast_encoded, forecast_frame, load_for  # noqa: E402

FIELDS = [
    ("read_validate_s", "read+validate s", ".1f"),
    ("encode_s", "encode s", ".1f"),
    ("forecast_s", "forecast s", ".1f"),
    ("frame_s", "frame s", ".1f"),
    ("total_s", "total s", ".1f"),
    ("series_rows", "series rows", ".0f"),
    ("peak_rss_gb", "peak RSS GB", ".2f"),
]


def child(args: argparse.Namespace) -> dict:
    spec = load_spec(args.data / "spec.yaml")
    fitted = load_for(args.model_dir, spec)
    future = args.future or args.data / "future.parquet"
    t0 = time.perf_counter()
    if args.mode == "future":
        tables = read_panel(spec, args.data, future, history_end=fitted.encoding.anchor_date)
        read_s = time.perf_counter() - t0
        t = time.perf_counter()
        encoded = encode_for(tables, fitted)
    else:
        tables = read_panel(spec, args.data, future)
        read_s = time.perf_counter() - t0
        t = time.perf_counter()
        encoded = encode_panel(tables, fitted.encoding)
    encode_s = time.perf_counter() - t
    t = time.perf_counter()
    aggregates = aggregate_levels(tables, encoded)
    arrays = forecast_encoded(fitted, encoded, aggregates, ForecastConfig(num_draws=args.num_draws), jax.random.key(args.seed))
    forecast_s = time.perf_counter() - t
    t = time.perf_counter()
    frame = forecast_frame(tables, encoded, arrays, aggregates, fitted.model_version)
    frame_s = time.perf_counter() - t
    return {
        "mode": args.mode,
        "read_validate_s": read_s,
        "encode_s": encode_s,
        "forecast_s": forecast_s,
        "frame_s": frame_s,
        "total_s": time.perf_counter() - t0,
        "series_rows": int((frame["level"] == "series").sum()),
        "peak_rss_gb": common.peak_rss_gb(),
    }


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], repeats=3, fit=False, panel_data=True)
    p.add_argument("--model-dir", type=Path, required=True, help="a saved panel model of the folder's spec (bhm train --spec)")
    p.add_argument("--future", type=Path, default=None, help="future table (default: the folder's future.parquet)")
    p.add_argument("--num-draws", type=int, default=ForecastConfig().num_draws)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", default="future,with-history", help="comma-separated: future, with-history")
    p.add_argument("--mode", default=None, help=argparse.SUPPRESS)  # the child's one mode
    args = p.parse_args()
    common.setup(args)
    if args.child:
        common.child_done(child(args))
        return
    machine = common.machine_info()
    common.print_machine(machine)
    argv = list(sys.argv[1:])
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    for _ in range(args.repeats):  # modes interleaved, so that a busy spell of the machine hits both
        for mode in modes:
            runs[mode].append(common.run_fresh(__file__, [*argv, "--mode", mode]))
            common.show(f"{mode} repeat {len(runs[mode])}", runs[mode][-1], FIELDS)
    medians = {mode: common.medians(r) for mode, r in runs.items()}
    for mode, m in medians.items():
        common.show(f"{mode} median", m, FIELDS)
    if "future" in medians and "with-history" in medians:
        for field in ("total_s", "peak_rss_gb"):
            print(f"{field}, future / with-history: {medians['future'][field] / medians['with-history'][field]:.2f}")
    common.result(__file__, args, machine, medians=medians)


if __name__ == "__main__":
    main()
