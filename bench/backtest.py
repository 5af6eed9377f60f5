"""The issue's backtest: fit to --cut (2015-04-26), forecast the last 48 days of the shared history, per seed.

One fresh process per seed; the median across seeds. Goals: RMSPE <= 0.12;
50% and 90% intervals covering within 3 points of nominal.
"""

from __future__ import annotations

import sys

import common

FIELDS = [
    *common.SCORE_FIELDS,
    ("fit_total_s", "fit s", ".1f"),
    ("fit_steps", "steps", ".0f"),
    ("converged", "converged", ""),
]


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], repeats=None, seed=False)
    common.add_seeds(p, "0..2")
    args = p.parse_args()
    args.seeds = common.seed_list(args.seeds)
    common.setup(args)
    if args.child:
        args.seed = args.seeds[0]
        return common.child_done(common.backtest_run(args, second_forecast=False))
    machine = common.machine_info()
    common.print_machine(machine)
    runs = {s: common.run_fresh(__file__, [*sys.argv[1:], "--seeds", str(s)]) for s in args.seeds}
    for seed, run in runs.items():
        common.show(f"seed {seed}", run, FIELDS)
    med = common.medians(list(runs.values()))
    common.show(f"median of {len(runs)} seeds", med, FIELDS)
    goals = common.accuracy_goals(med)
    common.reference("rmspe", "cov50", "cov90", "rmspe_per_store_poisson", "rmspe_median_by_weekday")
    common.result("backtest", args, machine, seeds=runs, median=med, goals=goals)


if __name__ == "__main__":
    main()
