"""What JAX's persistent compilation cache saves the nightly flow: the built-in demo, cache off against cache on.

Each run is a fresh process, as a nightly run or a deployment's flow run is, on one BHM_HOME whose Prefect
database a warm-up run (cache off, not counted) made first. ``off``: BHM_COMPILE_CACHE=off, every run
compiles. ``cold``: the first run with an empty cache folder, which it fills. ``warm``: the runs after it,
which load the programs. ``next nights``: then runs on histories one, two, three ... days longer than the
cold run's (the demo drawn with that many more days), as the nights after it: each night's history is new,
and it loads its programs when its length falls in the same bucket of ``history_bucket_days`` (FitConfig).
Each process also gets its own PYTHONHASHSEED, as processes do by default: a hit needs the same program in
every process. Compile time is the global fit's and the backtest fit's (the
time from the fit's start to its first step), the flow time is the nightly flow's, from call to return.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import common

FIELDS = [
    ("flow_s", "flow", ".1f"),
    ("compile_s", "fit compile", ".1f"),
    ("fit_s", "fit", ".1f"),
    ("forecast_s", "forecast", ".1f"),
    ("backtest_s", "backtest", ".1f"),
    ("cache_mb", "cache MB", ".0f"),
]


def child(args: argparse.Namespace) -> dict:
    import time

    from flows import environment

    environment.configure()
    from flows.nightly import nightly
    from tasks.config import NightlyConfig
    from tasks.data.demo import generate_demo

    data = Path(os.environ["BHM_HOME"]) / "data"
    files = generate_demo(seed=0, n_history_days=args.history_days).write(data)
    config = NightlyConfig(**files, out=data / "forecast.parquet", backtest_days=args.backtest_days, tracking={"enabled": False})
    t = time.perf_counter()
    result = nightly(config)
    flow_s = time.perf_counter() - t
    timings = result.run.timings
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    return {
        "flow_s": flow_s,
        "compile_s": result.run.fit.global_fit.compile_seconds,
        "fit_s": timings["fit"],
        "forecast_s": timings["forecast"],
        "backtest_s": timings.get("backtest", 0.0),
        "cache_mb": sum(f.stat().st_size for f in Path(cache).rglob("*") if f.is_file()) / 2**20 if cache else 0.0,
    }


def _run(base: list[str], home: Path, cache: str, hash_seed: int) -> dict:
    os.environ.update({"BHM_HOME": str(home), "BHM_COMPILE_CACHE": cache, "PYTHONHASHSEED": str(hash_seed)})
    return common.run_fresh(__file__, base)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], repeats=3, fit=False)
    p.add_argument("--backtest-days", type=int, default=48, help="the nightly flow's backtest (0: none)")
    p.add_argument("--history-days", type=int, default=730, help="days of demo history of the cold and warm runs")
    p.add_argument("--next-nights", type=int, default=3, help="runs on 1, 2, ... more days of history after the warm runs")
    args = p.parse_args()
    common.setup(args)
    if args.child:
        return common.child_done(child(args))

    for key in ("PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_TRACKING_URI", "JAX_COMPILATION_CACHE_DIR"):
        os.environ.pop(key, None)
    machine = common.machine_info()
    common.print_machine(machine)
    base = [a for a in sys.argv[1:] if a != "--child"]
    hash_seeds = iter(range(1, 1000))
    with tempfile.TemporaryDirectory(prefix="bhm-compile-cache-") as tmp:
        home, cache = Path(tmp) / "home", Path(tmp) / "jax-cache"
        common.show("warm-up (new Prefect database, not counted)", _run(base, home, "off", next(hash_seeds)), FIELDS)
        off = [_run(base, home, "off", next(hash_seeds)) for _ in range(args.repeats)]
        for i, run in enumerate(off, 1):
            common.show(f"off, repeat {i}", run, FIELDS)
        cold = _run(base, home, str(cache), next(hash_seeds))
        common.show("cold (fills the cache)", cold, FIELDS)
        warm = [_run(base, home, str(cache), next(hash_seeds)) for _ in range(args.repeats)]
        for i, run in enumerate(warm, 1):
            common.show(f"warm, repeat {i}", run, FIELDS)
        nights = []
        for night in range(1, args.next_nights + 1):
            longer = [*base, "--history-days", str(args.history_days + night)]
            nights.append(_run(longer, home, str(cache), next(hash_seeds)))
            common.show(f"next night {night} ({args.history_days + night} days)", nights[-1], FIELDS)
    off_med, warm_med = common.medians(off), common.medians(warm)
    common.show(f"off, median of {len(off)}", off_med, FIELDS)
    common.show(f"warm, median of {len(warm)}", warm_med, FIELDS)
    ratio = warm_med["flow_s"] / off_med["flow_s"]
    print(f"warm / off flow time: {ratio:.2f}; compile {off_med['compile_s']:.1f} s -> {warm_med['compile_s']:.1f} s")
    nights_med = common.medians(nights) if nights else None
    if nights_med:
        common.show(f"next nights, median of {len(nights)}", nights_med, FIELDS)
        print(f"next nights / off flow time: {nights_med['flow_s'] / off_med['flow_s']:.2f}; "
              f"compile {off_med['compile_s']:.1f} s -> {nights_med['compile_s']:.1f} s")
    common.result("compile_cache", args, machine, off=off, cold=cold, warm=warm, off_median=off_med,
                  warm_median=warm_med, warm_over_off=ratio, next_nights=nights, next_nights_median=nights_med)


if __name__ == "__main__":
    main()
