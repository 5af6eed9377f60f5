"""The panel forecast in process and fanned out on a Dask LocalCluster: seconds, peak memory, and whether
the two forecast files are equal.

Each repetition runs the panel forecast flow (read, validate, encode with the saved model's encoding,
forecast every series and aggregate, export; no tracking) in a fresh process, once per engine, with the
same seed and partitions; the forecast stage's seconds are the flow's less its other tasks'. The model
folder comes from ``bhm train --spec`` or ``bhm run --spec`` on the same data.

    python bench/fan_out.py --data m5 --model-dir m5/model --workers 2    # issue 11: forecast <= 60 s
    python bench/fan_out.py --data m5 --model-dir m5/model --engines dask --repeats 3 --compile-cache NEW_FOLDER
        # whether the cluster's workers load the programs an earlier run compiled ("new cached programs" 0 after the first)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

GOAL_FORECAST_SECONDS = 60.0  # issue 11's, for the M5 shape
M5_SERIES = 30_490
FIELDS = [
    ("engine", "engine", "s"), ("flow_s", "flow s", ".1f"), ("forecast_s", "forecast s", ".1f"), ("peak_rss_gb", "peak RSS GB", ".2f"),
    ("new_cached_programs", "new cached programs", ".0f"),
]  # fmt: skip


def panel_forecast_series(data: Path) -> set:
    import polars as pl

    from tasks.data.spec import load_spec

    spec = load_spec(data / "spec.yaml")
    keys = [c for c in (spec.sales.store, spec.sales.product) if c]
    return set(pl.read_parquet(data / "future.parquet", columns=keys).unique().iter_rows())


def child(args: argparse.Namespace) -> dict:
    from flows import environment

    environment.configure()  # as `bhm` does: Prefect's local server under $BHM_HOME, before Prefect is imported
    from flows import engines
    from flows.panel_forecast import panel_forecast
    from tasks.config import FanOutConfig, ForecastConfig, PanelForecastConfig, TrackingConfig

    seconds: dict[str, float] = {}
    engine_forecast = engines.forecast

    def timed_forecast(*a, **k):
        t = time.perf_counter()
        try:
            return engine_forecast(*a, **k)
        finally:
            seconds["forecast"] = time.perf_counter() - t

    engines.forecast = timed_forecast  # the flow looks it up on the module at call time
    fan_out = FanOutConfig(engine=args.engine, dask_workers=args.workers, series_per_partition=args.series_per_partition)
    config = PanelForecastConfig(
        spec=args.data / "spec.yaml", data=args.data, future=args.data / "future.parquet", out=args.out, model_dir=args.model_dir,
        seed=args.seed, forecast=ForecastConfig(num_draws=args.num_draws), fan_out=fan_out, tracking=TrackingConfig(enabled=False),
    )  # fmt: skip
    cached_before = common.compile_cache_files()
    t = time.perf_counter()
    result = panel_forecast(config)
    flow_seconds = time.perf_counter() - t
    # programs compiled and written by this run, in this process or in the cluster's workers (they share the folder);
    # JAX writes a program's "-cache" file beside an "-atime" one
    new_programs = sorted(name for name in common.compile_cache_files() - cached_before if name.endswith("-cache"))
    digest = hashlib.sha256(Path(result.forecast_path).read_bytes()).hexdigest()
    return {
        "engine": args.engine,
        "flow_s": flow_seconds,
        "forecast_s": seconds["forecast"],
        "peak_rss_gb": common.peak_rss_gb(),  # this process only: a LocalCluster's workers have their own
        "rows": result.n_forecast_rows + result.n_aggregate_rows,
        "sha256": digest,
        "new_cached_programs": len(new_programs),
        "new_programs": [name.split("-")[0] for name in new_programs],
    }


def main() -> None:
    p = common.parser(__doc__.split("\n\n")[0], repeats=3, fit=False, panel_data=True)
    p.add_argument("--model-dir", type=Path, required=True, help="fitted panel model folder for the data")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    p.add_argument("--series-per-partition", type=int, default=8192, help="series per partition (both engines)")
    p.add_argument("--num-draws", type=int, default=1000, help="forecast draws")
    p.add_argument("--seed", type=int, default=0, help="seed of the forecast's key")
    p.add_argument(
        "--engines", default="in-process,dask", help="engines to run, comma-separated (in-process alone: the forecast's speed, M5 at full size)"
    )
    p.add_argument(
        "--compile-cache", type=Path, default=None,
        help="a new folder for JAX's compilation cache, shared by every repeat and worker: the first repeat of an engine "
        "compiles, the later ones load (default: the usual cache, whatever it holds)",
    )  # fmt: skip
    p.add_argument("--engine", choices=("in-process", "dask"), default="in-process", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        common.setup(args)
        common.child_done(child(args))
        return
    machine = common.machine_info()
    common.print_machine(machine)
    if args.compile_cache is not None:
        if args.compile_cache.exists() and any(args.compile_cache.iterdir()):
            p.error(f"--compile-cache {args.compile_cache}: not empty; give a new folder")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(args.compile_cache.resolve())  # the children inherit it
    shared = ["--data", str(args.data), "--model-dir", str(args.model_dir), "--workers", str(args.workers)]
    shared += ["--series-per-partition", str(args.series_per_partition), "--num-draws", str(args.num_draws), "--seed", str(args.seed)]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not engines or not set(engines) <= {"in-process", "dask"}:
        p.error(f"--engines: in-process and/or dask, got {args.engines!r}")
    runs: dict[str, list[dict]] = {engine: [] for engine in engines}
    with tempfile.TemporaryDirectory(prefix="bhm-fan-out-") as tmp:
        for i in range(args.repeats):
            for engine in runs:  # alternate, so that a busy spell of the machine hits both
                out = Path(tmp) / f"{engine}-{i}.parquet"
                runs[engine].append(common.run_fresh(__file__, [*shared, "--engine", engine, "--out", str(out)]))
                common.show(f"repeat {i + 1}", runs[engine][-1], FIELDS)
    medians = {engine: common.medians(records) for engine, records in runs.items()}
    for engine, record in medians.items():
        common.show(f"median of {args.repeats}, {engine}", {"engine": engine, **record}, FIELDS)
    digests = {r["sha256"] for records in runs.values() for r in records}
    print(f"forecast files: {runs[engines[0]][0]['rows']:,} rows; identical across engines and repeats: {len(digests) == 1}")
    if len(engines) == 2:
        print(f"forecast seconds, Dask / in process: {medians['dask']['forecast_s'] / medians['in-process']['forecast_s']:.2f}")
    goals = [common.goal("files identical", float(len(digests) == 1), len(digests) == 1, "1.0")]
    if "in-process" in medians:
        seconds = medians["in-process"]["forecast_s"]
        series = len(panel_forecast_series(args.data))
        goals.insert(
            0,
            common.goal(
                f"forecast seconds (in process, {series:,} series)", seconds, seconds <= GOAL_FORECAST_SECONDS,
                f"<= {GOAL_FORECAST_SECONDS:.0f} s for M5's {M5_SERIES:,} series",
            ),
        )  # fmt: skip
    common.result("fan_out.py", args, machine, runs=runs, medians=medians, goals=goals)


if __name__ == "__main__":
    main()
