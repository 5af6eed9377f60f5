"""Censored demand: on simulated panels with ~20% of periods stocked out, how close the censored and the
uncensored panel models come to the true mean demand, and how well the censored model's intervals cover
the true demand of held-out periods.

The simulation (``tasks.data.panel_demo`` with ``stockout_share=0.2``): NB demand (concentration 5)
with store, product, season, price and promotion effects; each period's stock a random quantile of its
series' demand law, sales min(demand, stock), a flag where the stock ran out. Both models see the same
sales; only the censored one is told which periods stocked out. Mean demand: the posterior mean of
E[demand] over the history's observed cells, against the true mean of those cells; coverage: the
horizon's true (uncensored) demand inside the 90% and 50% intervals.

    python bench/censoring.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import time

import common
import numpy as np

from tasks.data.panel_demo import generate_panel_demo
from tasks.evaluate.censoring import censoring_experiment


def run_seed(seed: int, args: argparse.Namespace) -> dict:
    demo = generate_panel_demo(
        seed=seed, n_stores=args.stores, n_departments=2, products_per_department=args.products_per_department,
        n_weeks=args.weeks, horizon=args.horizon, stockout_share=args.share, concentration=args.concentration,
    )  # fmt: skip
    return {"seed": seed, **censoring_experiment(demo, args.steps, seed)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--stores", type=int, default=8)
    p.add_argument("--products-per-department", type=int, default=4)
    p.add_argument("--weeks", type=int, default=80)
    p.add_argument("--horizon", type=int, default=13)
    p.add_argument("--share", type=float, default=0.2, help="share of periods stocked out (about)")
    p.add_argument("--concentration", type=float, default=5.0)
    p.add_argument("--steps", type=int, default=1500)
    args = p.parse_args()
    machine = common.machine_info()
    common.print_machine(machine)
    start = time.perf_counter()
    n_series = args.stores * 2 * args.products_per_department
    print(
        f"panel: {n_series} series x {args.weeks} weeks, horizon {args.horizon}, concentration {args.concentration}, "
        f"{args.steps} SVI steps; seeds {args.seeds}"
    )
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        r = run_seed(seed, args)
        rows.append(r)
        c, u = r["censored"], r["uncensored"]
        print(
            f"seed {seed}: stocked out {100 * r['stocked_out']:.1f}% | true mean demand {r['true_mean']:.2f} (sales {r['sales_mean']:.2f}) | "
            f"censored {c['mean']:.2f} ({100 * (c['mean'] / r['true_mean'] - 1):+.1f}%) | "
            f"uncensored {u['mean']:.2f} ({100 * (u['mean'] / r['true_mean'] - 1):+.1f}%) | "
            f"horizon: true {r['true_future_mean']:.2f}, censored {c['future_mean']:.2f}, uncensored {u['future_mean']:.2f} | "
            f"coverage 90/50: censored {100 * c['coverage90']:.1f}/{100 * c['coverage50']:.1f}, "
            f"uncensored {100 * u['coverage90']:.1f}/{100 * u['coverage50']:.1f} | {c['seconds']:.0f}s + {u['seconds']:.0f}s"
        )
    err = {k: np.array([100 * (r[k]["mean"] / r["true_mean"] - 1) for r in rows]) for k in ("censored", "uncensored")}
    cov = {(k, lv): np.mean([100 * r[k][f"coverage{lv}"] for r in rows]) for k in ("censored", "uncensored") for lv in (90, 50)}
    print(
        f"mean over seeds: true mean demand {np.mean([r['true_mean'] for r in rows]):.2f}; "
        f"censored error {err['censored'].mean():+.1f}% (worst {err['censored'][np.argmax(np.abs(err['censored']))]:+.1f}%); "
        f"uncensored error {err['uncensored'].mean():+.1f}% (worst {err['uncensored'][np.argmax(np.abs(err['uncensored']))]:+.1f}%)"
    )
    print(
        f"coverage of the true demand: censored 90% -> {cov[('censored', 90)]:.1f}, 50% -> {cov[('censored', 50)]:.1f}; "
        f"uncensored 90% -> {cov[('uncensored', 90)]:.1f}, 50% -> {cov[('uncensored', 50)]:.1f}"
    )
    worst = float(err["censored"][np.argmax(np.abs(err["censored"]))])
    goals = [
        common.goal("censored mean demand error, worst seed (%)", worst, abs(worst) <= 3.0, "within +-3%"),
        common.goal("uncensored mean demand error, mean over seeds (%)", float(err["uncensored"].mean()), err["uncensored"].mean() < 0, "< 0 (it underestimates)"),
        common.goal("censored 90% coverage of the true demand", cov[("censored", 90)], abs(cov[("censored", 90)] - 90) <= 3, "90 +- 3"),
    ]
    seconds = time.perf_counter() - start
    print(f"run time {seconds:.0f}s")
    # the figures only: a fitted model's repr (every array) is no part of a result line
    figures = [{k: ({f: v for f, v in r[k].items() if f != "fitted"} if k in ("censored", "uncensored") else r[k]) for k in r} for r in rows]
    common.result("censoring.py", args, machine, goals=goals, seeds=figures, seconds=seconds)


if __name__ == "__main__":
    main()
