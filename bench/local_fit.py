"""Cold start: global fit without --stores random stores, then one local fit of them on their last --days days.

In each fresh process: the global fit (history to --cut, default FitConfig)
on all stores but the chosen ones; tasks.model.inference.fit_local for the chosen
stores in one call (compile and run seconds), a second call with another key
(compiled programs are cached per shape, so compile should be ~0); then the
48-day forecast of every store, scored for the new stores and the
established ones apart. Goal: a local fit <= 3 s once compiled.
"""

from __future__ import annotations

import time

import common

FIELDS = [
    ("global_fit_s", "global fit s", ".1f"),
    ("global_compile_s", "of which compile s", ".1f"),
    ("global_steps", "steps", ".0f"),
    ("local1_compile_s", "local 1st compile s", ".2f"),
    ("local1_run_s", "run s", ".2f"),
    ("local1_steps", "steps", ".0f"),
    ("local2_compile_s", "local 2nd compile s", ".2f"),
    ("local2_run_s", "run s", ".2f"),
    ("local2_wall_s", "wall s", ".2f"),
    ("local2_steps", "steps", ".0f"),
    ("peak_rss_gb", "peak RSS GB", ".2f"),
]
SCORES = [(prefix + key, f"{who} {name}", fmt) for prefix, who in (("new_", "new"), ("est_", "established")) for key, name, fmt in common.SCORE_FIELDS]


def child(args) -> dict:
    import jax
    import numpy as np

    from tasks.config import ForecastConfig
    from tasks.pipeline import fit_history, fit_new_stores, forecast_frame, with_stores

    config, progress = common.fit_config(args.max_steps), common.progress(args)
    new = np.sort(np.random.default_rng(args.seed).choice(common.store_ids(args.data), args.stores, replace=False))
    bt = common.load_backtest(args.data, args.cut, config, short_stores=new, short_days=args.days)
    key_fit, key_forecast = common.job_keys(args.seed)
    established = common.global_only(bt.encoded, config)
    fitted, report = fit_history(established, config, key_fit, None, progress)

    history = bt.encoded.history
    panel = history.select_stores(history.store_positions(new))
    key_local = jax.random.split(key_fit)[1]  # the key fit_history gives its local fit
    record, fits = {}, []
    for call, key in (("local1", key_local), ("local2", jax.random.fold_in(key_local, 1))):
        t0 = time.perf_counter()
        fit = fit_new_stores(fitted, panel, config, key, progress)
        fits.append(fit)
        record |= {
            f"{call}_compile_s": fit.compile_seconds,
            f"{call}_run_s": fit.run_seconds,
            f"{call}_wall_s": time.perf_counter() - t0,
            f"{call}_steps": fit.n_steps,
            f"{call}_converged": fit.converged,
        }
    local = fits[0]  # the forecast uses the first call's fit
    combined = with_stores(fitted, panel.stores, local.params)
    frame = forecast_frame(combined, bt.encoded.future, bt.inputs.future, ForecastConfig(num_draws=args.num_draws), key_forecast)
    new_scores = common.score(frame, bt.actual, new)
    est_scores = common.score(frame, bt.actual, new, exclude=True)
    return {
        "global_fit_s": report.seconds,
        "global_compile_s": report.global_fit.compile_seconds,
        "global_steps": report.global_fit.n_steps,
        "global_converged": report.global_fit.converged,
        "n_established": report.n_global_stores,
        "n_new": int(panel.n_stores),
        "new_local_days": int(panel.n_days),
        "new_observed_days_mean": float(panel.observed.sum(axis=1).mean()),
        **record,
        **{f"new_{k}": v for k, v in new_scores.items()},
        **{f"est_{k}": v for k, v in est_scores.items()},
        "peak_rss_gb": common.peak_rss_gb(),
    }


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], repeats=3)
    p.add_argument("--stores", type=int, default=100, help="stores held out of the global fit (chosen with --seed)")
    p.add_argument("--days", type=int, default=7, help="calendar days of history the held-out stores keep")
    args = p.parse_args()
    parent = common.repeated(__file__, args, child, FIELDS, SCORES)
    if parent is None:
        return
    machine, runs, med = parent
    r = runs[0]
    print(f"data: {r['n_established']} established stores (history to {args.cut}); {r['n_new']} new stores with "
          f"{r['new_local_days']} days, {r['new_observed_days_mean']:.1f} observed on average")
    common.show(f"median of {len(runs)}", med, FIELDS)
    common.show(f"median of {len(runs)}", med, SCORES)
    goals = [common.goal("local fit s, compiled (2nd call wall)", med["local2_wall_s"], med["local2_wall_s"] <= 3, "<= 3 s")]
    common.reference("local_fit_seconds", "cold_rmspe_new", "cold_rmspe_established", "cold_cov90_new")
    common.result("local_fit", args, machine, repeats=runs, median=med, goals=goals)


if __name__ == "__main__":
    main()
