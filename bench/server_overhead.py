"""The nightly flow on a small demo with the defaults (Prefect's temporary server on SQLite, MLflow on
SQLite under BHM_HOME) against a team's servers (PostgreSQL-backed `prefect server` and `mlflow
server` with a local artifact root, started here on 127.0.0.1): wall seconds of each run, a fresh
process each, the two setups alternated; medians and their difference.

Both setups start warm, as a nightly job finds them: the default Prefect and MLflow databases are
created before the first timed run, and the servers are started once (their start-up is printed,
not counted).

    python bench/server_overhead.py --repeats 3        # goal: PostgreSQL-backed <= defaults + 15 s
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import crash_harness as harness  # noqa: E402
from common import machine_info, print_machine  # noqa: E402

from tasks.ops import servers  # noqa: E402

GOAL_SECONDS = 15.0


def _timed(config: dict, env: dict[str, str]) -> float:
    t0 = time.monotonic()
    done = harness.run_nightly(config, env)
    seconds = time.monotonic() - t0
    if done.returncode != 0:
        sys.exit(f"a run failed:\n{done.stdout[-4000:]}")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    machine = machine_info()
    print_machine(machine)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "BHM_"))}
    times: dict[str, list[float]] = {"defaults": [], "postgres": []}
    with tempfile.TemporaryDirectory(prefix="bhm-servers-") as tmp:
        root = Path(tmp)
        files = harness.write_demo(root / "data")
        default_env = base | {"BHM_HOME": str(root / "default_home")}
        # Warm defaults: the temporary server's database and the MLflow database exist, as on any night but the first.
        prefect_home = root / "default_home" / "prefect"
        prefect_home.mkdir(parents=True)
        subprocess.run([sys.executable, "-m", "prefect", "server", "database", "reset", "-y"],
                       env=default_env | {"PREFECT_HOME": str(prefect_home)}, check=True, capture_output=True)  # fmt: skip
        t0 = time.monotonic()
        with servers.postgres() as pg:
            with (
                servers.mlflow_server(pg.url("mlflow", driver="postgresql+psycopg"), root / "mlartifacts") as mlflow_url,
                servers.prefect_server(pg.url("prefect", driver="postgresql+asyncpg"), root / "prefect_server") as api,
            ):
                print(f"PostgreSQL, mlflow server and prefect server started in {time.monotonic() - t0:.1f} s (not counted)")
                team_env = base | {"BHM_HOME": str(root / "team_home"), "PREFECT_API_URL": api,
                                   "PREFECT_HOME": str(root / "team_prefect_home"), "MLFLOW_TRACKING_URI": mlflow_url}  # fmt: skip
                for i in range(1, args.repeats + 1):
                    for setup, env in (("defaults", default_env), ("postgres", team_env)):
                        seconds = _timed(harness.nightly_config(files, root / setup / "forecast.parquet"), env)
                        times[setup].append(seconds)
                        print(f"repeat {i} {setup}: {seconds:.1f} s (load {os.getloadavg()[0]:.2f})", flush=True)
    medians = {setup: statistics.median(values) for setup, values in times.items()}
    difference = medians["postgres"] - medians["defaults"]
    print(f"median defaults (temporary Prefect server, SQLite MLflow): {medians['defaults']:.1f} s")
    print(f"median PostgreSQL-backed prefect server + mlflow server: {medians['postgres']:.1f} s")
    print(f"difference: {difference:+.1f} s (goal <= +{GOAL_SECONDS:g} s) -> {'met' if difference <= GOAL_SECONDS else 'NOT met'}")
    print("RESULT " + json.dumps({"script": "server_overhead.py", "args": vars(args), "machine": machine, "times": times,
                                  "medians": medians, "difference": difference}))  # fmt: skip


if __name__ == "__main__":
    main()
