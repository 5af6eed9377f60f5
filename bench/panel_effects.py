"""Price elasticities of a built-in panel spec's products, with 90% intervals: a plot and a markdown table.

One fit on the shared history before the last --horizon periods (the data EVALUATION.md's last backtest
origin sees), seed --seed. What `bhm run` logs to MLflow as ``plots/effect_price_product.png``, written
to a file for EVALUATION.md:

    python bench/panel_effects.py --dataset dominicks_oj --plot docs/oj_price_elasticities.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import common
import jax
import numpy as np

from tasks import panel_pipeline
from tasks.config import PanelFitConfig
from tasks.data.panel_ingest import read_panel
from tasks.data.spec import builtin_spec
from tasks.evaluate.panel_backtest import split
from tasks.model.panel_effects import price_elasticities
from tasks.track import plots

SHARED = common.REPO.parent / "shared" / "data"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="dominicks_oj")
    p.add_argument("--data", type=Path, default=SHARED)
    p.add_argument("--horizon", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", type=Path, default=None, help="write the plot (PNG) here")
    args = p.parse_args()
    common.print_machine(common.machine_info())
    spec = builtin_spec(args.dataset)
    tables = read_panel(spec, args.data / args.dataset)
    origin = sorted(tables.sales["period"].unique())[-args.horizon]
    as_of, _ = split(tables, origin, args.horizon)
    encoded = panel_pipeline.encode_tables(as_of)
    key_fit, key_effects = jax.random.split(jax.random.key(args.seed))
    fitted, fit = panel_pipeline.fit_encoded(encoded, spec, PanelFitConfig(), key_fit, on_progress=lambda _: None)
    print(f"fit on the history before {origin}: {fit.n_steps} steps, converged: {fit.converged}")
    effects = price_elasticities(fitted, encoded.dims, panel_pipeline.price_names(spec), key_effects)
    if not effects:
        sys.exit(f"{args.dataset}: the spec has no price covariate")
    for effect in effects:
        labels = panel_pipeline.key_labels(spec, as_of.stores, as_of.products, effect.side)
        names = [str(labels.get(k, k)) for k in effect.keys]
        summary = effect.summary()
        print(f"\n| {effect.side} | elasticity ({effect.coefficient}) | 90% interval |\n|---|---|---|")
        for i in np.argsort(summary["mean"]):
            print(f"| {names[i]} | {summary['mean'][i]:.2f} | {summary['low'][i]:.2f} to {summary['high'][i]:.2f} |")
        print(f"negative for {int((summary['high'] < 0).sum())} of {len(names)} (90% interval below 0)")
        if args.plot is not None and effect is effects[0]:
            fig = plots.effect_intervals(
                names, summary["mean"], summary["low"], summary["high"],
                f"{spec.name}: own-price elasticity by {effect.side} (90% intervals)", "elasticity (log units per log price)",
            )  # fmt: skip
            args.plot.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.plot.with_name(f".{args.plot.name}.tmp")
            fig.savefig(tmp, format="png", dpi=110)
            tmp.replace(args.plot)
            print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
