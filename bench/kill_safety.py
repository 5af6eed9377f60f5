"""Kill -9 the nightly flow at each of its five fault points, round after round, and count torn files.

One round: for each point (read, fit, export, track, register) a nightly run on a small demo is
started with ``BHM_FAULT_POINT=<point>`` and kills itself there; after each kill the outputs are
checked (tests/crash_harness.py): a torn file is a visible forecast that does not read, a model
folder that does not load, a model version not READY, a champion whose files are incomplete, or
a forecast and model folder of different fits; "changed" counts kills after which the champion
moved, or, for kills before the outputs are published (read, fit, export), after which the
forecast or the model folder were not the previous ones byte for byte. The round ends with a complete rerun, which must succeed, sweep the temporaries,
and mark the killed MLflow runs FAILED. One `prefect server` (SQLite) serves all runs.

    python bench/kill_safety.py --rounds 20          # the issue's goal: 0 torn files in 100 kills
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import crash_harness as harness  # noqa: E402
from common import machine_info, print_machine  # noqa: E402

from tasks.ops import faults, servers  # noqa: E402

# Kills before the forecast and the model folder are published; later kills leave the new, complete pair.
BEFORE_PUBLISHING = (faults.READ, faults.FIT, faults.EXPORT)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--points", nargs="+", default=list(faults.POINTS), choices=faults.POINTS)
    p.add_argument("--max-minutes", type=float, default=None, help="start no new round after this many minutes")
    args = p.parse_args()
    machine = machine_info()
    print_machine(machine)
    totals = {"kills": 0, "torn": 0, "changed": 0, "not_killed": 0, "reruns_failed": 0, "debris_after_rerun": 0,
              "runs_left_running": 0}  # fmt: skip
    rounds = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bhm-kill-") as tmp:
        root = Path(tmp)
        files = harness.write_demo(root / "data")
        out = root / "forecasts" / "forecast.parquet"
        model_dir = out.with_suffix(".model")
        uri = f"sqlite:///{root / 'bhm' / 'mlflow.db'}"
        with servers.prefect_server(None, root / "prefect_server") as api:
            import os

            env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "BHM_"))}
            env |= {"BHM_HOME": str(root / "bhm"), "PREFECT_API_URL": api, "PREFECT_HOME": str(root / "prefect_home")}
            config = harness.nightly_config(files, out)
            first = harness.run_nightly(config, env)
            if first.returncode != 0:
                sys.exit(f"the first run failed:\n{first.stdout[-4000:]}")
            for number in range(1, args.rounds + 1):
                if args.max_minutes is not None and time.monotonic() - started > 60 * args.max_minutes:
                    print(f"stopping after {number - 1} rounds: --max-minutes {args.max_minutes:g} reached")
                    break
                t0 = time.monotonic()
                before = harness.snapshot(out, model_dir, uri)
                record = {"round": number, "torn": 0, "changed": 0, "killed_pids": []}
                for point in args.points:
                    done = harness.run_nightly(config, env, fault=point)
                    totals["kills"] += 1
                    if done.returncode != -signal.SIGKILL:
                        totals["not_killed"] += 1
                        print(f"round {number} {point}: exit {done.returncode}, not killed:\n{done.stdout[-2000:]}")
                        continue
                    record["killed_pids"].append(int(done.stdout.split("killing process ")[1].split()[0]))
                    problems = harness.torn(out, model_dir, uri)
                    after = harness.snapshot(out, model_dir, uri)
                    if point in BEFORE_PUBLISHING:  # the previous forecast, model folder and champion, byte for byte
                        changed = (after.forecast, after.model, after.champion) != (before.forecast, before.model, before.champion)
                    else:  # published already: the new pair, of one fit; the champion not moved yet
                        changed = after.champion != before.champion
                        if not problems and harness.pair_mismatch(out, model_dir):
                            problems.append("the forecast and the model folder are of different fits")
                    visible = harness.visible(out)
                    if visible != ["forecast.model", "forecast.parquet"]:
                        problems.append(f"visible entries {visible}")
                    record["torn"] += len(problems)
                    record["changed"] += int(changed)
                    for problem in problems:
                        print(f"round {number} {point}: TORN {problem}")
                rerun = harness.run_nightly(config, env)
                record["rerun_ok"] = rerun.returncode == 0
                record["debris_after_rerun"] = len(harness.debris(out))
                record["torn_after_rerun"] = len(harness.torn(out, model_dir, uri))
                record["runs_left_running"] = sum(
                    status == "RUNNING" for pid in record.pop("killed_pids") for status in harness.run_status(uri, pid)
                )
                record["seconds"] = round(time.monotonic() - t0, 1)
                totals["torn"] += record["torn"] + record["torn_after_rerun"]
                totals["changed"] += record["changed"]
                totals["reruns_failed"] += int(not record["rerun_ok"])
                totals["debris_after_rerun"] += record["debris_after_rerun"]
                totals["runs_left_running"] += record["runs_left_running"]
                rounds.append(record)
                print(
                    f"round {number}: {len(args.points)} kills, torn {record['torn']} (after rerun {record['torn_after_rerun']}), "
                    f"previous changed {record['changed']}, rerun {'ok' if record['rerun_ok'] else 'FAILED'}, "
                    f"temporaries left after rerun {record['debris_after_rerun']}, killed runs still RUNNING "
                    f"{record['runs_left_running']}, {record['seconds']} s",
                    flush=True,
                )
    seconds = time.monotonic() - started
    print(
        f"total: {len(rounds)} rounds, {totals['kills']} kills, {totals['torn']} torn files, {totals['changed']} kills changed "
        f"the previous outputs, {totals['not_killed']} runs not killed, {totals['reruns_failed']} reruns failed, "
        f"{totals['debris_after_rerun']} temporaries left after reruns, {totals['runs_left_running']} killed runs left RUNNING; "
        f"{seconds:.0f} s"
    )
    met = totals["torn"] == 0 and totals["changed"] == 0 and totals["not_killed"] == 0 and totals["reruns_failed"] == 0
    print(f"goal 0 torn files in {totals['kills']} kills: {'met' if met else 'NOT met'}"
          + ("" if totals["kills"] >= 100 else " (the issue's goal counts 100 kills: run --rounds 20)"))  # fmt: skip
    print("RESULT " + json.dumps({"script": "kill_safety.py", "args": vars(args), "machine": machine, "totals": totals,
                                  "rounds": rounds, "seconds": round(seconds, 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
