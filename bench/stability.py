"""Divergence check: the global fit (default FitConfig) for each seed, on Rossmann and/or the demo data.

A seed diverged when the fit raised tasks.model.inference.FitDivergedError or left
a non-finite loss or parameter. The seeds run one after another in one
process (compiled programs are reused); the data sets are encoded by the
main job's path (read_validated, build_spec, encode).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import common
import numpy as np

FIELDS = [
    ("diverged", "diverged", ""),
    ("steps", "steps", ".0f"),
    ("converged", "converged", ""),
    ("seconds", "seconds", ".1f"),
    ("compile_s", "of which compile", ".1f"),
    ("final_loss", "final loss/obs", ".6f"),
    ("error", "error", ""),
]


def encoded_data(dataset: str, args, config):
    if dataset == "rossmann":
        return common.load_backtest(args.data, args.cut, config).encoded
    from tasks.data.demo import generate_demo

    with tempfile.TemporaryDirectory(prefix="bhm-bench-demo-") as tmp:
        paths = generate_demo(seed=0).write(Path(tmp))
        return common.read_encode(paths["train"], paths["stores"], paths["future"], config)[1]


def fit_seed(encoded, config, seed: int, progress) -> dict:
    from tasks.model.inference import FitDivergedError
    from tasks.pipeline import fit_history

    t0 = time.perf_counter()
    try:
        fitted, report = fit_history(common.global_only(encoded, config), config, common.job_keys(seed)[0], None, progress)
    except FitDivergedError as err:
        return {"seed": seed, "diverged": True, "seconds": time.perf_counter() - t0, "error": str(err)}
    g = report.global_fit
    finite = bool(np.isfinite(g.losses).all() and all(np.isfinite(v).all() for v in g.params.values()))
    return {
        "seed": seed,
        "diverged": not finite,
        "steps": g.n_steps,
        "converged": g.converged,
        "seconds": report.seconds,
        "compile_s": g.compile_seconds,
        "final_loss": fitted.info["global_final_loss"],
    }


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], repeats=None, seed=False, draws=False)
    common.add_seeds(p, "0..9")
    p.add_argument("--dataset", choices=("rossmann", "demo", "both"), default="both")
    args = p.parse_args()
    args.seeds = common.seed_list(args.seeds)
    common.setup(args)
    machine = common.machine_info()
    common.print_machine(machine)
    config = common.fit_config(args.max_steps)
    summary, runs = {}, {}
    for dataset in ("rossmann", "demo") if args.dataset == "both" else (args.dataset,):
        encoded = encoded_data(dataset, args, config)
        n_global = common.global_only(encoded, config).history.n_stores
        print(f"{dataset}: global fit on {n_global} of {encoded.history.n_stores} stores x {encoded.history.n_days} days")
        runs[dataset] = [fit_seed(encoded, config, seed, common.progress(args)) for seed in args.seeds]
        for run in runs[dataset]:
            common.show(f"{dataset} seed {run['seed']}", run, FIELDS)
        n_diverged = sum(r["diverged"] for r in runs[dataset])
        summary[dataset] = f"{n_diverged} of {len(args.seeds)} seeds diverged"
        print(f"{dataset}: {summary[dataset]}")
    common.reference("diverged_rossmann", "diverged_synthetic")
    common.result("stability", args, machine, summary=summary, seeds=runs)


if __name__ == "__main__":
    main()
