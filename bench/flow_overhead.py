"""Orchestration overhead: the nightly flow on the built-in demo, on Prefect's temporary server, with MLflow tracking.

Each repetition is a fresh process with no PREFECT_API_URL (so Prefect starts
its temporary server) and its own BHM_HOME. Overhead is the process's time
from before its imports to the flow's return, less the time inside fitting
and forecasting (the fit, the forecast and the backtest's fit and forecast)
and less the writing of the demo data.
With ``--prefect-db existing`` the runs share one Prefect database, made by a
warm-up run first (the nightly job's usual case); with ``new`` each starts a
new one (a first run on a machine). Goal: <= 15 s outside fitting and forecasting.
"""

from __future__ import annotations

import time

PROCESS_START = time.perf_counter()

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import common  # noqa: E402

FIELDS = [
    ("overhead_s", "overhead", ".1f"),
    ("imports_s", "imports", ".1f"),
    ("flow_s", "flow", ".1f"),
    ("server_and_setup_s", "server start + setup", ".1f"),
    ("track_s", "MLflow", ".1f"),
    ("fit_s", "fit", ".1f"),
    ("forecast_s", "forecast", ".1f"),
    ("backtest_s", "backtest", ".1f"),
    ("peak_rss_gb", "peak RSS GB", ".2f"),
]
GOAL_SECONDS = 15.0


def child(args) -> dict:
    t = time.perf_counter()
    from flows import environment

    environment.configure()
    from flows.nightly import nightly
    from tasks.config import NightlyConfig
    from tasks.data.demo import generate_demo

    imports = time.perf_counter() - t
    data = Path(os.environ["BHM_HOME"]) / "data"
    t = time.perf_counter()
    files = generate_demo(seed=0).write(data)
    demo_s = time.perf_counter() - t  # making the test data is not part of the nightly job
    config = NightlyConfig(**files, out=data / "forecast.parquet", backtest_days=args.backtest_days)
    t = time.perf_counter()
    result = nightly(config)
    flow_s = time.perf_counter() - t
    since_start = time.perf_counter() - PROCESS_START
    timings = result.run.timings
    inside = timings["fit"] + timings["forecast"] + timings.get("backtest", 0.0)
    in_flow = sum(timings.values())
    return {
        "overhead_s": since_start - inside - demo_s,
        "imports_s": imports,
        "flow_s": flow_s,
        # What the flow's own stages do not account for: the temporary server, flow and task runs, shutdown.
        "server_and_setup_s": flow_s - in_flow,
        "track_s": timings.get("track", 0.0),
        "fit_s": timings["fit"],
        "forecast_s": timings["forecast"],
        "backtest_s": timings.get("backtest", 0.0),
        "since_process_start_s": since_start,
        "demo_data_s": demo_s,
        "peak_rss_gb": common.peak_rss_gb(),
    }


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], repeats=3, fit=False)
    p.add_argument("--prefect-db", choices=("existing", "new"), default="existing", help="reuse one Prefect database or not")
    p.add_argument("--backtest-days", type=int, default=48, help="the nightly flow's backtest (0: none)")
    p.add_argument("--home", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    common.setup(args)
    if args.child:
        os.environ["BHM_HOME"] = str(args.home)
        for key in ("PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_TRACKING_URI"):
            os.environ.pop(key, None)
        return common.child_done(child(args))

    machine = common.machine_info()
    common.print_machine(machine)
    base = [a for a in sys.argv[1:] if a != "--child"]
    with tempfile.TemporaryDirectory(prefix="bhm-overhead-") as tmp:
        shared = Path(tmp) / "shared"
        if args.prefect_db == "existing":
            warm = common.run_fresh(__file__, [*base, "--home", str(shared)])
            common.show("warm-up (new database, not counted)", warm, FIELDS)
        runs = []
        for i in range(args.repeats):
            home = shared if args.prefect_db == "existing" else Path(tmp) / f"run{i}"
            runs.append(common.run_fresh(__file__, [*base, "--home", str(home)]))
            common.show(f"repeat {i + 1}", runs[-1], FIELDS)
    med = common.medians(runs)
    common.show(f"median of {len(runs)}", med, FIELDS)
    goals = [common.goal("overhead outside fit and forecast (s)", med["overhead_s"], med["overhead_s"] <= GOAL_SECONDS, f"<= {GOAL_SECONDS}")]
    common.result("flow_overhead", args, machine, runs=runs, median=med, goals=goals)


if __name__ == "__main__":
    main()
