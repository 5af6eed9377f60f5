"""``bhm`` on a dataset spec: ``--spec SPEC.yaml --data DIR`` for the commands, and ``bhm spec NAME``.

Wiring only. A spec of layout ``rossmann`` names Kaggle's files: the commands then run exactly as with
``--train``/``--stores``. A ``panel`` spec runs the panel flow (``flows/panel.py``) for ``run``, the
panel validation for ``validate`` and the panel backtest for ``backtest``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

FREQUENCY_WORDS = {"day": "daily", "week": "weekly"}
SPEC_COMMANDS_WITH_PANEL = ("validate", "run", "backtest", "train", "forecast", "replenish")


class SpecUsageError(Exception):
    """A spec that cannot be used, or options that do not go with it (exit code 2)."""


def add_spec_options(parser: argparse.ArgumentParser, title: str = "dataset spec (instead of the Rossmann file options)") -> None:
    group = parser.add_argument_group(title)
    group.add_argument("--spec", type=Path, metavar="SPEC.yaml", default=None, help="dataset spec; `bhm spec NAME` prints a built-in one")
    group.add_argument("--data", type=Path, metavar="DIR", default=None, help="folder holding the files the spec names")


def add_fan_out_options(parser: argparse.ArgumentParser, what: str = "a panel forecast's partitions", partitions: bool = True) -> None:
    """The options of a FanOutConfig for the runs of ``what``; a backtest fans out origins, no partitions to size."""
    from tasks.config import FanOutConfig

    fields = FanOutConfig.model_fields
    group = parser.add_argument_group(f"where {what} run (with --spec)")
    group.add_argument("--engine", choices=("in-process", "dask"), default=None, help=f"{fields['engine'].description} (default: in-process)")
    group.add_argument("--dask-address", metavar="ADDR", default=None, help=f"{fields['dask_address'].description}; implies --engine dask")
    group.add_argument("--dask-workers", type=int, metavar="N", default=None, help=f"{fields['dask_workers'].description} (default {fields['dask_workers'].default})")
    if partitions:
        group.add_argument(
            "--series-per-partition", type=int, metavar="N", default=None,
            help=f"{fields['series_per_partition'].description} (default {fields['series_per_partition'].default:,})",
        )  # fmt: skip


def add_series_blocks_options(parser: argparse.ArgumentParser) -> None:
    """The options of a SeriesBlocksConfig: a panel too large for memory, fitted from series blocks on disk."""
    from tasks.config import SeriesBlocksConfig

    fields = SeriesBlocksConfig.model_fields
    group = parser.add_argument_group("a panel larger than memory (with --spec): fit from series blocks on disk")
    group.add_argument("--series-blocks", action="store_true", help=SeriesBlocksConfig.__doc__.split(":")[0].strip())
    for field, metavar in (("block_size", "N"), ("stores_per_part", "N"), ("blocks_per_pool", "N")):
        group.add_argument(
            f"--{field.replace('_', '-')}", type=int, metavar=metavar, default=None,
            help=f"{fields[field].description} (default {fields[field].default}; implies --series-blocks)",
        )  # fmt: skip
    group.add_argument("--blocks-dir", type=Path, metavar="DIR", default=None, help=f"{fields['directory'].description}; implies --series-blocks")


SERIES_BLOCKS_OPTIONS = {"block_size": "--block-size", "stores_per_part": "--stores-per-part", "blocks_per_pool": "--blocks-per-pool", "blocks_dir": "--blocks-dir"}


def series_blocks_raw(args: argparse.Namespace) -> dict[str, Any] | None:
    """The SeriesBlocksConfig the options ask for; None when none was given (the history in memory)."""
    given = {field: getattr(args, field) for field in SERIES_BLOCKS_OPTIONS if getattr(args, field, None) is not None}
    if not given and not getattr(args, "series_blocks", False):
        return None
    if "blocks_dir" in given:
        given["directory"] = given.pop("blocks_dir")
    return given


def refuse_series_blocks(args: argparse.Namespace) -> None:
    """Series blocks hold a panel's series; a Rossmann-layout run has none."""
    given = [option for field, option in SERIES_BLOCKS_OPTIONS.items() if getattr(args, field, None) is not None]
    if getattr(args, "series_blocks", False):
        given.insert(0, "--series-blocks")
    if given:
        raise SpecUsageError(f"{', '.join(given)}: series blocks are for a panel spec (--spec), not the Rossmann layout")


FAN_OUT_OPTIONS = {"engine": "--engine", "dask_address": "--dask-address", "dask_workers": "--dask-workers", "series_per_partition": "--series-per-partition"}


def fan_out_raw(args: argparse.Namespace) -> dict[str, Any]:
    """The FanOutConfig the fan-out options ask for (only what was given; an address means Dask)."""
    raw = {field: getattr(args, field) for field in FAN_OUT_OPTIONS if getattr(args, field, None) is not None}
    if "dask_address" in raw:
        raw.setdefault("engine", "dask")
    return raw


def refuse_fan_out(args: argparse.Namespace) -> None:
    """The fan-out options fan out a panel forecast or backtest; a Rossmann-layout run has none to fan out."""
    given = [option for field, option in FAN_OUT_OPTIONS.items() if getattr(args, field, None) is not None]
    if given:
        raise SpecUsageError(
            f"{', '.join(given)} fan out a panel spec's forecast or backtest (--spec with a panel spec); this run has none"
        )


def load(args: argparse.Namespace) -> Any:
    """The spec of ``--spec`` (None without it); a Rossmann spec fills ``--train``/``--stores`` from ``--data``."""
    from tasks.data.spec import RossmannSpec, SpecError, load_spec, spec_files

    if args.spec is None:
        if getattr(args, "data", None) is not None:
            raise SpecUsageError("--data goes with --spec")
        return None
    if args.data is None:
        raise SpecUsageError("--spec needs --data (the folder holding the spec's files)")
    for option in ("train", "stores"):
        if getattr(args, option, None) is not None:
            raise SpecUsageError(f"--{option} does not go with --spec: the spec names the files")
    try:
        spec = load_spec(args.spec)
        paths = spec_files(spec, args.data)
    except SpecError as err:
        raise SpecUsageError(str(err)) from None
    if isinstance(spec, RossmannSpec):
        args.train, args.stores = paths["sales"], paths["stores"]
        return None
    if args.command not in SPEC_COMMANDS_WITH_PANEL:
        raise SpecUsageError(
            f"bhm {args.command} runs on Rossmann-layout specs only for now; a panel spec ({spec.name!r}) "
            f"works with: {', '.join(SPEC_COMMANDS_WITH_PANEL)}"
        )
    return spec


def cmd_spec(args: argparse.Namespace) -> int:
    from tasks.data.spec import BUILTIN_SPECS

    if args.name not in BUILTIN_SPECS:
        print(f"bhm spec: error: no built-in spec {args.name!r}; built-in: {', '.join(BUILTIN_SPECS)}", file=sys.stderr)
        return 2
    sys.stdout.write(BUILTIN_SPECS[args.name])
    return 0


def tables_summary(tables: Any) -> str:
    from tasks import names as n
    from tasks.data.panel_rules import distinct_keys

    spec = tables.spec
    sales = tables.sales
    series_keys = [n.SERIES_STORE] + ([n.SERIES_PRODUCT] if spec.sales.product else [])
    lines = [
        f"dataset {spec.name}: {FREQUENCY_WORDS[spec.frequency]} periods, target {spec.sales.target} ({spec.target_kind})",
        f"sales: {sales.height:,} rows, {distinct_keys(sales, series_keys).height:,} series, "
        f"{sales[n.SERIES_STORE].n_unique():,} stores"
        + (f", {sales[n.SERIES_PRODUCT].n_unique():,} products" if spec.sales.product else ""),
        f"periods: {sales[n.PERIOD].min()} to {sales[n.PERIOD].max()} ({sales[n.PERIOD].n_unique():,} distinct)",
    ]
    if tables.n_negative_masked:
        lines.append(f"negative targets masked (left out of the fit): {tables.n_negative_masked:,}")
    if tables.future is not None:
        future = tables.future
        lines.append(
            f"future: {future.height:,} rows, {distinct_keys(future, series_keys).height:,} series, "
            f"{future[n.PERIOD].min()} to {future[n.PERIOD].max()}"
        )
    return "\n".join(lines)


def validate_panel(spec: Any, args: argparse.Namespace) -> int:
    from tasks.data.panel_ingest import read_panel
    from tasks.data.validate import InputValidationError

    if args.future is not None and not args.future.is_file():
        raise SpecUsageError(f"--future: file not found: {args.future}")
    try:
        tables = read_panel(spec, args.data, args.future)
    except InputValidationError as err:
        print(err.report.to_text())
        return 1
    print("Input validation passed: no rule broken.\n")
    print(tables_summary(tables))
    return 0


def _require_future(args: argparse.Namespace) -> None:
    if args.future is None or args.out is None:
        raise SpecUsageError(f"bhm {args.command} with a panel spec needs --future (the keys and periods to forecast) and --out")
    if not args.future.is_file():
        raise SpecUsageError(f"--future: file not found: {args.future}")


def _forecast_line(result: Any) -> str:
    return (
        f"forecast: {result.n_forecast_rows:,} series rows and {result.n_aggregate_rows:,} aggregate rows written to "
        f"{Path(result.forecast_path).resolve()}"
    )


def _fit_line(result: Any) -> str:
    fit = result.fit
    return f"fit: {result.n_series:,} series, {fit.n_steps:,} steps, converged: {'yes' if fit.converged else 'no (stopped at the step cap)'}"


def run_panel(spec: Any, args: argparse.Namespace, run_flow: Any) -> int:
    _require_future(args)
    raw = {
        "spec": args.spec,
        "data": args.data,
        "future": args.future,
        "out": args.out,
        "seed": args.seed,
        "state_dir": args.state_dir,
        "fit": {"max_steps": args.max_steps},
        "series_blocks": series_blocks_raw(args),
        "forecast": {"num_draws": args.num_draws},
        "fan_out": fan_out_raw(args),
        "tracking": {"enabled": not args.no_tracking},
    }
    start = time.perf_counter()

    def describe(result: Any) -> list[str]:
        stages = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in result.timings.items())
        return [
            _forecast_line(result),
            f"fitted model: {Path(result.fitted_dir).resolve()}",
            _fit_line(result),
            f"seconds: {stages}; total {time.perf_counter() - start:.1f}s",
        ]

    return run_flow("panel", "PanelRunConfig", raw, describe)


def backtest_panel(spec: Any, args: argparse.Namespace, run_flow: Any) -> int:
    from tasks.config import BacktestRunConfig

    rossmann_only = {
        "horizon_days": ("--horizon-days", "; a panel spec counts periods: --horizon N"),
        "cold_start_stores": ("--cold-start-stores", ""),
    }
    for field, (option, hint) in rossmann_only.items():
        if getattr(args, field) != BacktestRunConfig.model_fields[field].default:
            raise SpecUsageError(f"{option} is for the Rossmann layout, not a panel spec ({spec.name!r}){hint}")
    raw: dict[str, Any] = {}
    if args.baselines is not None:
        raw["baselines"] = () if args.baselines.strip() == "none" else tuple(b.strip() for b in args.baselines.split(",") if b.strip())
    raw |= {
        "spec": args.spec,
        "data": args.data,
        "origins": tuple(args.origin),
        **({"n_origins": args.origins} if args.origins is not None else {}),
        "horizon": args.horizon,
        "out_dir": args.out_dir,
        "seed": args.seed,
        "fit": {"max_steps": args.max_steps},
        "forecast": {"num_draws": args.num_draws},
        "fan_out": fan_out_raw(args),
        "tracking": {"enabled": not args.no_tracking},
    }

    def describe(result: Any) -> list[str]:
        from tasks.evaluate.panel_backtest import summary_table

        origins = ", ".join(str(b.origin) for b in result.backtests)
        lines = [f"backtest of {spec.name} from {origins}, {result.backtests[0].horizon} periods (means over the origins):"]
        lines.append(summary_table(result.scores))
        if result.out_dir is not None:
            lines.append(f"scores: {Path(result.out_dir).resolve()}")
        if result.mlflow_run:
            lines.append(f"MLflow: {result.mlflow_run}")
        return lines

    return run_flow("panel_backtest", "PanelBacktestConfig", raw, describe)


def train_panel(spec: Any, args: argparse.Namespace, run_flow: Any) -> int:
    if args.state_dir is None:
        raise SpecUsageError("bhm train --spec needs --state-dir (the folder to write the fitted model to)")
    raw = {
        "spec": args.spec,
        "data": args.data,
        "state_dir": args.state_dir,
        "seed": args.seed,
        "fit": {"max_steps": args.max_steps},
        "series_blocks": series_blocks_raw(args),
        "tracking": {"enabled": not args.no_tracking},
    }

    def describe(result: Any) -> list[str]:
        mlflow = [f"MLflow: {result.mlflow_run}"] if result.mlflow_run else []
        return [f"fitted model: {Path(result.fitted_dir).resolve()}", _fit_line(result), *mlflow]

    return run_flow("panel_train", "PanelTrainConfig", raw, describe)


def _saved_model_raw(args: argparse.Namespace) -> dict[str, Any]:
    """The config of a flow that draws from a saved panel model: forecast and replenish."""
    _require_future(args)
    return {
        "spec": args.spec,
        "data": args.data,
        "future": args.future,
        "out": args.out,
        "model_dir": args.model_dir,
        "seed": args.seed,
        "forecast": {"num_draws": args.num_draws},
        "tracking": {"enabled": not args.no_tracking},
    }


def forecast_panel(spec: Any, args: argparse.Namespace, run_flow: Any) -> int:
    if args.model_dir is None:
        raise SpecUsageError("bhm forecast --spec needs --model-dir (a fitted panel model folder; the registry holds Rossmann models)")
    raw = _saved_model_raw(args) | {"fan_out": fan_out_raw(args)}

    def describe(result: Any) -> list[str]:
        mlflow = [f"MLflow: {result.mlflow_run}"] if result.mlflow_run else []
        return [_forecast_line(result), f"model version: {result.model_version}", *mlflow]

    return run_flow("panel_forecast", "PanelForecastConfig", raw, describe)


def replenish_panel(spec: Any, args: argparse.Namespace, run_flow: Any) -> int:
    if spec.inventory is None:
        raise SpecUsageError(f"spec {spec.name!r} has no inventory section: bhm replenish needs one (README: Orders)")
    raw = _saved_model_raw(args)

    def describe(result: Any) -> list[str]:
        figures = result.summary
        lines = [f"orders: {result.n_order_rows:,} rows (series x order day) written to {Path(result.orders_path).resolve()}"]
        if figures.get("orders_series"):
            lines.append(
                f"to place now: {int(figures['orders_nonzero']):,} of {int(figures['orders_series']):,} series order, "
                f"{figures['orders_units']:,.0f} units; expected cost {figures['orders_expected_cost']:,.1f}, "
                f"fill rate {figures['orders_fill_rate']:.1%}; cycles without a lost sale {figures['orders_cycle_service']:.1%} "
                f"(critical ratio {figures['orders_critical_ratio']:.1%}; with the lead time's: {figures['orders_no_stockout']:.1%})"
            )
        lines.append(f"model version: {result.model_version}")
        return lines + ([f"MLflow: {result.mlflow_run}"] if result.mlflow_run else [])

    return run_flow("replenish", "ReplenishConfig", raw, describe)
