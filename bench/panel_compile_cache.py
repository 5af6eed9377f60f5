"""What JAX's persistent compilation cache saves a panel spec's nightly job: walmart, cache off against cache on.

The job of ``panel_run.py`` (read and validate, encode, the global fit, the forecast of series and aggregates),
each run a fresh process, as a nightly run is. ``off``: no cache, every run compiles. ``cold``: the first run with
an empty cache folder, which it fills. ``warm``: the same history again. ``next periods``: histories one, two,
three ... periods longer than the cold run's (the history ends that many periods later), as the next weeks' runs:
each has new data, another mean, a few more cells, and loads its programs when its length falls in the cold run's
bucket of ``history_bucket_days`` (PanelFitConfig). ``new cache files``: the programs a run compiled and wrote (a
program that compiles in under a second is not cached, by JAX's default).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import common
import panel_run

FIELDS = [
    ("fit_compile_s", "fit compile s", ".1f"),
    ("fit_run_s", "fit run s", ".1f"),
    ("forecast_s", "forecast s", ".1f"),
    ("total_s", "total s", ".1f"),
    ("new_cache_files", "new cache files", ".0f"),
]


def child(args) -> dict:
    from tasks.ops import compile_cache

    compile_cache.enable()
    before = common.compile_cache_files()
    record = panel_run.child(args)
    new = sorted(common.compile_cache_files() - before)
    # JAX names an entry after its program (jit_<function>-<hash>): which programs this run compiled
    return {**record, "new_cache_files": len(new), "new_programs": [name.split("-")[0] for name in new]}


def _run(argv: list[str], cache: str, hash_seed: int) -> dict:
    os.environ.update({"BHM_COMPILE_CACHE": cache, "PYTHONHASHSEED": str(hash_seed)})
    return common.run_fresh(__file__, argv)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], repeats=2, seed=True, draws=True)
    p.set_defaults(data=panel_run.SHARED)
    p.add_argument("--dataset", choices=("walmart", "dominicks_oj"), default="walmart")
    p.add_argument("--horizon", type=int, default=None, help="periods of the future table (default: the issue's)")
    p.add_argument("--next-periods", type=int, default=3, help="runs on 1, 2, ... more periods of history after the cold run")
    p.add_argument("--periods-earlier", type=int, default=0, help=argparse.SUPPRESS)  # each run's, set by the parent
    args = p.parse_args()
    args.data = Path(args.data)
    args.horizon = args.horizon or panel_run.ISSUE_HORIZON[args.dataset]
    args.walk_scale = "auto"
    common.setup(args)
    if args.child:
        return common.child_done(child(args))
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    machine = common.machine_info()
    common.print_machine(machine)
    base = [a for a in sys.argv[1:] if a != "--child"]
    hash_seeds = iter(range(1, 1000))

    def at(earlier: int) -> list[str]:
        return [*base, "--periods-earlier", str(earlier)]

    with tempfile.TemporaryDirectory(prefix="bhm-panel-compile-cache-") as tmp:
        cache = str(Path(tmp) / "jax-cache")
        off = [_run(at(args.next_periods), "off", next(hash_seeds)) for _ in range(args.repeats)]
        for i, run in enumerate(off, 1):
            common.show(f"off, repeat {i}", run, FIELDS)
        cold = _run(at(args.next_periods), cache, next(hash_seeds))
        common.show("cold (fills the cache)", cold, FIELDS)
        warm = [_run(at(args.next_periods), cache, next(hash_seeds)) for _ in range(args.repeats)]
        for i, run in enumerate(warm, 1):
            common.show(f"warm, repeat {i}", run, FIELDS)
        later = []
        for period in range(1, args.next_periods + 1):
            later.append(_run(at(args.next_periods - period), cache, next(hash_seeds)))
            common.show(f"next period {period}", later[-1], FIELDS)
            if later[-1]["new_programs"]:
                print(f"  compiled: {', '.join(later[-1]['new_programs'])}")
    medians = {name: common.medians(runs) for name, runs in (("off", off), ("warm", warm), ("next periods", later)) if runs}
    for name, med in medians.items():
        common.show(f"{name}, median", med, FIELDS)
    common.result("panel_compile_cache", args, machine, off=off, cold=cold, warm=warm, next_periods=later, medians=medians)


if __name__ == "__main__":
    main()
