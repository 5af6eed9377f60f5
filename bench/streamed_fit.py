"""A panel's global fit from series blocks on disk against the in-memory fit: seconds per step, peak memory.

Each mode runs in a fresh process on a panel data folder (``bhm demo --shape m5 --out DIR``, ``--series N``
for other sizes):
- ``memory``: read and validate the whole sales table, encode it into dense arrays, fit (what ``bhm train``
  does by default);
- ``blocks``: read, validate and encode a few stores at a time into series blocks on disk, fit from them,
  a pool of blocks per chunk of steps read on a thread while the previous chunk runs (``bhm train
  --series-blocks``).
Seconds per step are the fit's run time over its steps (compilation and the streamed fit's closing epoch
that polishes the series, reported apart, left out). Issue 11's goals: on the M5
shape, read + validate + encode <= 60 s and peak RSS <= 6 GB; on 10 x M5 (304,900 series) peak RSS <= 12 GB
and seconds per step within 1.5 times the M5 run's (compare the ``blocks`` lines of the two runs).

    python bench/streamed_fit.py --data m5 --repeats 1
    python bench/streamed_fit.py --data m5x10 --modes blocks --max-steps 500 --repeats 1
    python bench/streamed_fit.py --data m5 --encode-only --repeats 3    # read + validate + encode only, no fit
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

FIELDS = [
    ("mode", "mode", ""),
    ("n_series", "series", ",.0f"),
    ("encode_s", "read+validate+encode s", ".1f"),
    ("fit_compile_s", "compile s", ".1f"),
    ("fit_run_s", "fit s", ".1f"),
    ("steps", "steps", ".0f"),
    ("converged", "converged", ""),
    ("seconds_per_step", "s/step", ".3f"),
    ("polish_s", "polish s", ".1f"),
    ("blocks_read", "blocks read", ".0f"),
    ("peak_rss_gb", "peak RSS GB", ".2f"),
]


def child(args) -> dict:
    import jax

    from tasks.config import PanelFitConfig, SeriesBlocksConfig
    from tasks.data.panel_blocks import encode_to_blocks
    from tasks.data.panel_encode import encode_panel
    from tasks.data.panel_ingest import read_panel
    from tasks.data.spec import load_spec
    from tasks.panel_blocks_pipeline import fit_blocks
    from tasks.panel_pipeline import fit_encoded

    spec = load_spec(args.data / "spec.yaml")
    config = PanelFitConfig() if args.max_steps is None else PanelFitConfig(max_steps=args.max_steps)
    key = jax.random.key(args.seed)
    seen = []

    def progress(p) -> None:
        seen.append(p)
        common.progress(args)(p)

    t0 = time.perf_counter()
    if args.mode == "memory":
        encoded = encode_panel(read_panel(spec, args.data))
        encode_s = time.perf_counter() - t0
        if args.encode_only:
            return {"mode": args.mode, "n_series": encoded.encoding.n_series, "encode_s": encode_s, "peak_rss_gb": common.peak_rss_gb()}
        _, fit = fit_encoded(encoded, spec, config, key, on_progress=progress)
        n_series = encoded.encoding.n_series
    else:
        blocks_config = SeriesBlocksConfig(block_size=args.block_size, blocks_per_pool=args.blocks_per_pool, stores_per_part=args.stores_per_part)
        with tempfile.TemporaryDirectory(prefix="bench-blocks-", dir=args.blocks_parent) as tmp:
            blocks = encode_to_blocks(spec, args.data, Path(tmp) / "blocks", blocks_config.block_size, blocks_config.stores_per_part)
            encode_s = time.perf_counter() - t0
            if args.encode_only:
                return {"mode": args.mode, "n_series": blocks.encoding.n_series, "encode_s": encode_s, "peak_rss_gb": common.peak_rss_gb()}
            _, fit = fit_blocks(blocks, config, blocks_config.blocks_per_pool, key, on_progress=progress)
        n_series = blocks.encoding.n_series
    return {
        "mode": args.mode,
        "n_series": n_series,
        "encode_s": encode_s,
        "fit_compile_s": fit.compile_seconds,
        "fit_run_s": fit.run_seconds,
        "steps": fit.n_steps,
        "converged": fit.converged,
        # the fit's own steps (the progress' clock); a streamed fit's run time also holds its polish epoch
        "seconds_per_step": seen[-1].seconds / seen[-1].step,
        "polish_s": fit.run_seconds - seen[-1].seconds,
        "final_loss": float(fit.losses[-min(500, fit.n_steps) :].mean()),
        "blocks_read": seen[-1].blocks_read if seen and seen[-1].blocks_read is not None else 0,
        "peak_rss_gb": common.peak_rss_gb(),
    }


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], repeats=1, draws=False, panel_data=True)
    p.add_argument("--modes", default="memory,blocks", help="comma-separated: memory, blocks")
    p.add_argument("--mode", default=None, help=argparse.SUPPRESS)  # the child's one mode
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--blocks-per-pool", type=int, default=32)
    p.add_argument("--stores-per-part", type=int, default=1)
    p.add_argument("--blocks-parent", type=Path, default=None, help="folder for the temporary blocks (default: the system's)")
    p.add_argument("--encode-only", action="store_true", help="read, validate and encode, no fit")
    args = p.parse_args()
    common.setup(args)
    if args.child:
        common.child_done(child(args))
        return
    machine = common.machine_info()
    common.print_machine(machine)
    argv = list(sys.argv[1:])
    runs = {}
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        runs[mode] = [common.run_fresh(__file__, [*argv, "--mode", mode]) for _ in range(args.repeats)]
        for i, run in enumerate(runs[mode], 1):
            common.show(f"{mode} repeat {i}", run, FIELDS)
    medians = {mode: common.medians(r) for mode, r in runs.items()}
    for mode, m in medians.items():
        common.show(f"{mode} median", m, FIELDS)
    if "memory" in medians and "blocks" in medians and not args.encode_only:
        ratio = medians["blocks"]["seconds_per_step"] / medians["memory"]["seconds_per_step"]
        print(f"seconds per step, blocks / memory: {ratio:.2f}")
    common.result(__file__, args, machine, medians=medians)


if __name__ == "__main__":
    main()
