"""The main job's core on Rossmann: read+validate+encode, fit_history, forecast_frame (twice), backtest scores.

History up to --cut, forecast of the 48 days after it (a Kaggle test.csv
calendar built from train.csv rows), one fresh process per repeat.
Goals: global fit <= 60 s to convergence; forecast of 1,115 stores x 48 days
x 1,000 draws <= 5 s once compiled; peak RSS <= 4 GB; RMSPE <= 0.12;
interval coverage within 3 points of nominal.
"""

from __future__ import annotations

import common

FIELDS = [
    ("split_s", "split", ".1f"),
    ("read_validate_s", "read+validate", ".1f"),
    ("encode_s", "encode", ".1f"),
    ("fit_compile_s", "fit compile s", ".1f"),
    ("fit_run_s", "fit run s", ".1f"),
    ("fit_steps", "steps", ".0f"),
    ("converged", "converged", ""),
    ("fit_total_s", "fit total s", ".1f"),
    ("forecast_first_s", "forecast 1st s", ".2f"),
    ("forecast_second_s", "forecast 2nd s", ".2f"),
    ("peak_rss_gb", "peak RSS GB", ".2f"),
    *common.SCORE_FIELDS,
]


def main() -> None:
    args = common.parser(__doc__.splitlines()[0], repeats=3).parse_args()
    parent = common.repeated(__file__, args, lambda a: common.backtest_run(a, second_forecast=True), FIELDS)
    if parent is None:
        return
    machine, runs, med = parent
    first = runs[0]
    print(f"data: history to {args.cut}, {first['n_global_stores']} stores in the global fit; forecast "
          f"{first['forecast_stores']} stores x {first['forecast_days']} days x {first['num_draws']} draws")
    common.show(f"median of {len(runs)}", med, FIELDS)
    converged = all(r["converged"] for r in runs)
    goals = [
        common.goal("global fit s (converged)", med["fit_total_s"], converged and med["fit_total_s"] <= 60, "<= 60 s, converged"),
        common.goal(f"forecast s (2nd call, {first['num_draws']} draws)", med["forecast_second_s"], med["forecast_second_s"] <= 5, "<= 5 s"),
        common.goal("peak RSS GB", med["peak_rss_gb"], med["peak_rss_gb"] <= 4, "<= 4 GB"),
        *common.accuracy_goals(med),
    ]
    common.reference("fit_seconds", "rmspe", "cov50", "cov90")
    common.result("fit_forecast", args, machine, repeats=runs, median=med, goals=goals)


if __name__ == "__main__":
    main()
