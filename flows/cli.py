"""The ``bhm`` command line: validate input files; run the nightly, train, cold_start and forecast flows.

Wiring only: parse options, build the flow's typed config (``tasks.config``),
run the flow in process (Prefect's temporary server when no PREFECT_API_URL
is set, see ``flows.environment``), turn the outcome into text and exit codes.

Exit codes:
    0  success (``validate``: every rule passed)
    1  the input data broke a rule (the report says which), or the data cannot be modelled
    2  usage: bad or missing options, a file not found, an invalid configuration
    3  the fit diverged (non-finite ELBO): nothing was written
    4  another run holds the lock on the same outputs (the message names it): nothing was done
  143  terminated by SIGTERM: the run unwound (MLflow run FAILED, temporary server stopped), outputs as before
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows import cli_spec, environment

if TYPE_CHECKING:
    from pydantic import BaseModel

    from tasks.config import NightlyConfig
    from tasks.pipeline import RunResult

EXIT_OK = 0
EXIT_DATA = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_LOCKED = 4
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports it

BHM_HOME_ENV = environment.BHM_HOME_ENV
DEFAULT_BHM_HOME = environment.DEFAULT_BHM_HOME
DEMO_FOLDER = "demo"
DEMO_FORECAST = "forecast.parquet"
DEMO_SEED = 0

DATA_OPTIONS = ("train", "stores", "future")

# Third-party loggers that talk too much at INFO/DEBUG. jax's xla_bridge logs
# "Unable to initialize backend 'tpu'" at INFO on every start.
QUIET_LOGGERS = {
    "jax": logging.WARNING,
    "jax._src.xla_bridge": logging.ERROR,
    "absl": logging.WARNING,
    "httpx": logging.WARNING,  # one INFO line per Prefect API call
    "distributed": logging.WARNING,  # a Dask cluster's start-up and shutdown, a dozen lines per worker
    "prefect.task_runs": logging.WARNING,  # "Finished in state Completed()" per task; our stages log their own progress
    "alembic": logging.WARNING,
}

# RunConfig field paths -> the option that sets them, for error messages.
OPTION_OF_FIELD = {
    ("train",): "--train",
    ("stores",): "--stores",
    ("future",): "--future",
    ("out",): "--out",
    ("seed",): "--seed",
    ("state_dir",): "--state-dir",
    ("fit", "max_steps"): "--max-steps",
    ("fit", "local_max_steps"): "--local-max-steps",
    ("fit",): "--max-steps/--local-max-steps",
    ("forecast", "num_draws"): "--num-draws",
    ("backtest_days",): "--backtest-days",
    ("store_ids",): "--store-ids",
    ("model", "path"): "--model-dir",
    ("model", "registered_model"): "--model-name",
    ("model", "alias"): "--alias",
    ("model", "version"): "--version",
    ("origins",): "--origin",
    ("spec",): "--spec",
    ("data",): "--data",
    ("n_origins",): "--origins",
    ("horizon",): "--horizon",
    ("horizon_days",): "--horizon-days",
    ("baselines",): "--baselines",
    ("cold_start_stores",): "--cold-start-stores",
    ("cold_start_days",): "--cold-start-days",
}

log = logging.getLogger("bhm")


class UsageError(Exception):
    """A problem with the options or files given: exit 2, message on stderr."""


# --------------------------------------------------------------------------
# logging


class CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (test capture swaps it).

    Its name must not start with "_": Prefect replaces the root logger's
    configuration unless it finds a user handler there, judged by that name.
    """

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:  # StreamHandler.__init__ assigns it
        pass


def setup_logging(level: int) -> None:
    """One stderr handler on the root logger at ``level``; noisy third-party loggers held down."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_bhm_cli", False)]:
        root.removeHandler(handler)
    handler = CurrentStderrHandler()
    handler._bhm_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    from flows import progress  # a fit's progress: live in a terminal, plain lines under a scheduler

    progress.install(handler)
    root.addHandler(handler)
    root.setLevel(level)
    for name, floor in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(floor, level))


def _log_level(args: argparse.Namespace) -> int:
    if getattr(args, "verbose", False):
        return logging.DEBUG
    if getattr(args, "quiet", False):
        return logging.WARNING
    return logging.INFO


# --------------------------------------------------------------------------
# parser


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: ...)" where there is a default worth showing (not None, not a bare flag)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _field_default(model: Any, name: str) -> Any:
    return model.model_fields[name].default


def _add_verbosity(parser: argparse.ArgumentParser, top_level: bool) -> None:
    # On subcommands the default is SUPPRESS, so that `bhm -v run` is not undone by run's own default.
    default = False if top_level else argparse.SUPPRESS
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", default=default, help="log at DEBUG")
    group.add_argument("-q", "--quiet", action="store_true", default=default, help="log warnings and errors only")


def build_parser() -> argparse.ArgumentParser:
    from tasks.config import BASELINE_NAMES, BacktestRunConfig, FitConfig, ForecastConfig, NightlyConfig, RunConfig

    formatter = _HelpFormatter
    parser = argparse.ArgumentParser(
        prog="bhm",
        description="Bayesian hierarchical forecasts of daily store sales (Kaggle Rossmann format).",
        epilog=f"Logs go to stderr at INFO. {BHM_HOME_ENV} (default {DEFAULT_BHM_HOME}) holds the built-in demo.",
        formatter_class=formatter,
    )
    _add_verbosity(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    validate = commands.add_parser(
        "validate",
        help="check the input files and report every broken rule",
        description="Check the input files against every rule; print the report (and, when all pass, "
        "a summary of the data) to stdout. Exit 0 when every rule passes, 1 when any fails.",
        formatter_class=formatter,
    )
    _add_verbosity(validate, top_level=False)
    _add_paths(validate, RunConfig, "train", "stores", "future", required=False)
    cli_spec.add_spec_options(validate)
    validate.set_defaults(handler=cmd_validate)

    run = commands.add_parser(
        "run",
        help="validate, fit and write the forecast Parquet (the built-in demo when no data is given)",
        description="Read and validate the inputs, fit the model, forecast every row of the future "
        "calendar and write the forecast Parquet file and the fitted model folder. Without "
        f"--train/--stores/--future it runs on the built-in demo data, written to ${BHM_HOME_ENV}/{DEMO_FOLDER}/.",
        formatter_class=formatter,
    )
    _add_verbosity(run, top_level=False)
    data = run.add_argument_group("data (give all three, or none for the built-in demo)")
    _add_paths(data, RunConfig, *DATA_OPTIONS, required=False)
    run.add_argument(
        "--out",
        type=Path,
        metavar="PATH",
        default=None,
        help=f"forecast Parquet file to write (demo default: ${BHM_HOME_ENV}/{DEMO_FOLDER}/{DEMO_FORECAST}; "
        "required with data options)",
    )
    run.add_argument(
        "--seed", type=int, metavar="N", default=_field_default(RunConfig, "seed"), help=RunConfig.model_fields["seed"].description
    )
    run.add_argument(
        "--state-dir",
        type=Path,
        metavar="PATH",
        default=None,
        help="folder for the fitted model (default: beside --out, named <out stem>.model)",
    )
    run.add_argument(
        "--max-steps",
        type=int,
        metavar="N",
        default=_field_default(FitConfig, "max_steps"),
        help="step cap of the global fit (it stops earlier when the loss settles)",
    )
    run.add_argument(
        "--local-max-steps",
        type=int,
        metavar="N",
        default=_field_default(FitConfig, "local_max_steps"),
        help="step cap of the local fits of short-history stores",
    )
    run.add_argument(
        "--num-draws",
        type=int,
        metavar="N",
        default=_field_default(ForecastConfig, "num_draws"),
        help=ForecastConfig.model_fields["num_draws"].description,
    )
    run.add_argument(
        "--backtest-days",
        type=int,
        metavar="N",
        default=_field_default(NightlyConfig, "backtest_days"),
        help="days of the backtest that gates the champion alias (0: no backtest, the alias stays)",
    )
    _add_tracking(run)
    cli_spec.add_spec_options(run)
    cli_spec.add_series_blocks_options(run)
    cli_spec.add_fan_out_options(run)
    run.set_defaults(handler=cmd_run)

    _add_flow_commands(commands, formatter)

    bt = commands.add_parser(
        "backtest",
        help="fit before each origin, forecast the days after it, score the model and the baselines",
        description="Run the backtest flow: for each origin, fit on the history before it, forecast the "
        "--horizon-days after it and score the model and the baselines on the same open days with sales "
        "(RMSPE, MAPE, wQL, CRPS, interval coverage, PIT); all in one MLflow run.",
        formatter_class=formatter,
    )
    _add_verbosity(bt, top_level=False)
    _add_paths(bt, BacktestRunConfig, "train", "stores", required=False)
    cli_spec.add_spec_options(bt)
    bt.add_argument(
        "--horizon", type=int, metavar="N", default=None,
        help="with a panel spec: periods forecast after each origin (default: 13 weeks or 28 days)",
    )
    bt.add_argument(
        "--origins", type=int, metavar="N", default=None,
        help="with a panel spec and no --origin: this many origins spread over the history's last year (default 4)",
    )
    bt.add_argument(
        "--origin", action="append", default=[], metavar="DATE", help="first forecast day, YYYY-MM-DD (repeat for several; "
        "default: one, --horizon-days before the history's end)"
    )
    _add_count(bt, BacktestRunConfig, "horizon_days")
    bt.add_argument(
        "--baselines", metavar="NAMES", default=None,
        help=f"comma-separated baselines, or none (default: {','.join(BASELINE_NAMES)}; also seed_like, the seed's "
        "model, the new stores' reference; with a panel spec: seasonal_naive,ets,lightgbm_quantile,loglog_price_regression)"
    )
    bt.add_argument("--out-dir", type=Path, metavar="DIR", default=None, help="write backtest_rows.parquet and metrics.md here")
    _add_count(bt, BacktestRunConfig, "cold_start_stores")
    bt.add_argument(
        "--cold-start-days",
        metavar="N,N,...",
        default=",".join(map(str, _field_default(BacktestRunConfig, "cold_start_days"))),
        help=BacktestRunConfig.model_fields["cold_start_days"].description,
    )
    _add_count(bt, BacktestRunConfig, "seed")
    bt.add_argument("--max-steps", type=int, metavar="N", default=_field_default(FitConfig, "max_steps"), help="step cap of the global fit")
    _add_count(bt, ForecastConfig, "num_draws")
    _add_tracking(bt)
    cli_spec.add_fan_out_options(bt, "a panel backtest's origins", partitions=False)
    bt.set_defaults(handler=cmd_backtest)

    demo = commands.add_parser(
        "demo",
        help="write the built-in demo data (train.csv, store.csv, test.csv) to a folder",
        description="Write the built-in demo data, the files that `bhm run` uses without data options, to --out.",
        formatter_class=formatter,
    )
    _add_verbosity(demo, top_level=False)
    demo.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write the files to")
    demo.add_argument(
        "--shape", choices=("rossmann", "panel", "m5"), default="rossmann",
        help="rossmann: train.csv, store.csv, test.csv; panel: a store x product panel with its spec.yaml, future.csv and "
        "truth.csv; m5: an M5-shaped daily store x item panel (intermittent demand, prices, events, SNAP days by state) "
        "with its spec.yaml, a 28-day future.parquet, truth.parquet and truth_params.npz",
    )
    demo.add_argument("--series", type=int, metavar="N", default=None, help="with --shape m5: about N series (default 30,490, M5's)")
    demo.add_argument("--days", type=int, metavar="N", default=None, help="with --shape m5: days of history (default 1,941, M5's)")
    demo.add_argument(
        "--seed", type=int, metavar="N", default=DEMO_SEED, help=f"seed of the simulation (default {DEMO_SEED}: the built-in demo's data)"
    )
    demo.set_defaults(handler=cmd_demo)

    spec = commands.add_parser(
        "spec",
        help="print a built-in dataset spec (rossmann, walmart, dominicks_oj, panel_demo)",
        description="Print a built-in dataset spec as YAML, to adapt or to use as it is with --spec and --data.",
        formatter_class=formatter,
    )
    _add_verbosity(spec, top_level=False)
    spec.add_argument("name", metavar="NAME", help="built-in spec name")
    spec.set_defaults(handler=cli_spec.cmd_spec)
    return parser


def _add_paths(parser: Any, config: Any, *names: str, required: bool = True) -> None:
    """``--<name> PATH`` options, their help taken from the flow config's field descriptions."""
    for name in names:
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=Path,
            required=required,
            default=None,
            metavar="PATH",
            help=config.model_fields[name].description,
        )


def _add_count(parser: Any, config: Any, name: str, help: str | None = None) -> None:
    """``--<name> N``: default and help from the config's field."""
    field = config.model_fields[name]
    parser.add_argument(f"--{name.replace('_', '-')}", type=int, metavar="N", default=field.default, help=help or field.description)


def _add_tracking(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-tracking", action="store_true", help="do not record the run in MLflow (nothing registered either)"
    )


def _add_model_source(parser: argparse.ArgumentParser) -> None:
    from tasks.config import ModelSource

    group = parser.add_argument_group("model (default: the registered model's @champion version)")
    group.add_argument("--model-dir", type=Path, metavar="PATH", default=None, help=ModelSource.model_fields["path"].description)
    group.add_argument(
        "--model-name", metavar="NAME", default=_field_default(ModelSource, "registered_model"), help="registered model name"
    )
    which = group.add_mutually_exclusive_group()
    which.add_argument("--alias", metavar="ALIAS", default=_field_default(ModelSource, "alias"), help="version alias to use")
    which.add_argument("--version", type=int, metavar="N", default=None, help="version number to use instead of the alias")


def _add_flow_commands(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    from tasks.config import ColdStartConfig, FitConfig, ForecastConfig, ForecastRunConfig, TrainConfig

    train = commands.add_parser(
        "train",
        help="fit on the history, save the fitted model and register it as a new version (no forecast)",
        description="Run the train flow: global fit (and local fits of short-history stores), saved to --state-dir, "
        "recorded in MLflow and registered as a new version. The champion alias does not move (no backtest).",
        formatter_class=formatter,
    )
    _add_verbosity(train, top_level=False)
    _add_paths(train, TrainConfig, "train", "stores", required=False)
    _add_paths(train, TrainConfig, "state_dir")
    cli_spec.add_spec_options(train)
    cli_spec.add_series_blocks_options(train)
    _add_count(train, TrainConfig, "seed")
    train.add_argument("--max-steps", type=int, metavar="N", default=_field_default(FitConfig, "max_steps"), help="step cap of the global fit")
    _add_tracking(train)
    train.set_defaults(handler=cmd_train)

    cold = commands.add_parser(
        "cold-start",
        help="fit new stores against a fitted model's globals, then forecast them",
        description="Run the cold_start flow: local fits of the new stores' few days of history with the globals of "
        "a fitted model held fixed (by default the registered champion), then forecast their future calendar.",
        formatter_class=formatter,
    )
    _add_verbosity(cold, top_level=False)
    _add_paths(cold, ColdStartConfig, "train", "stores", required=False)
    _add_paths(cold, ColdStartConfig, "future", "out")
    cli_spec.add_spec_options(cold)
    cold.add_argument(
        "--store-ids", metavar="IDS", default="", help="comma-separated stores to fit (default: the train stores the model lacks)"
    )
    cold.add_argument("--state-dir", type=Path, metavar="PATH", default=None, help=ColdStartConfig.model_fields["state_dir"].description)
    _add_count(cold, ColdStartConfig, "seed")
    _add_model_source(cold)
    _add_tracking(cold)
    cold.set_defaults(handler=cmd_cold_start)

    fc = commands.add_parser(
        "forecast",
        help="forecast a future calendar with a fitted model, no refit",
        description="Run the forecast flow: forecast every row of a future calendar with an already fitted model "
        "(by default the registered champion). Stores it does not know are forecast from stores like them.",
        formatter_class=formatter,
    )
    _add_verbosity(fc, top_level=False)
    _add_paths(fc, ForecastRunConfig, "stores", required=False)
    _add_paths(fc, ForecastRunConfig, "future", "out")
    cli_spec.add_spec_options(fc)
    cli_spec.add_fan_out_options(fc)
    _add_count(fc, ForecastRunConfig, "seed")
    _add_count(fc, ForecastConfig, "num_draws")
    _add_model_source(fc)
    _add_tracking(fc)
    fc.set_defaults(handler=cmd_forecast)

    from tasks.config import ReplenishConfig

    rp = commands.add_parser(
        "replenish",
        help="order for every series of a future table (a panel spec with an inventory section)",
        description="Run the replenish flow: a fitted panel model's joint draws of demand over each order's lead time "
        "and review period, and the spec's inventory file (stock, lead time, packs, costs), give each series' "
        "cost-minimising order in packs, with its expected cost, fill rate, stock-out probability and left-over "
        "(README: Orders).",
        formatter_class=formatter,
    )
    _add_verbosity(rp, top_level=False)
    cli_spec.add_spec_options(rp, "dataset spec (required: a panel spec with an inventory section)")
    _add_paths(rp, ReplenishConfig, "future", "out", "model_dir")
    _add_count(rp, ReplenishConfig, "seed")
    _add_count(rp, ForecastConfig, "num_draws")
    _add_tracking(rp)
    rp.set_defaults(handler=cmd_replenish)


# --------------------------------------------------------------------------
# helpers


def _check_input_file(path: Path, option: str) -> None:
    from tasks.data.ingest import SUPPORTED_SUFFIXES

    if not path.is_file():
        raise UsageError(f"{option}: file not found: {path}")
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise UsageError(f"{option}: {path} has suffix {path.suffix!r}; expected one of {', '.join(SUPPORTED_SUFFIXES)}")


def _check_input_files(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{name}" for name in names if getattr(args, name) is None]
    if missing:
        raise UsageError(f"give {', '.join(missing)} (or --spec and --data)")
    for name in names:
        _check_input_file(getattr(args, name), f"--{name}")


def _validation_messages(err: Any) -> list[str]:
    """One line per problem of a pydantic ValidationError, naming the option."""
    lines = []
    for problem in err.errors():
        loc = tuple(str(part) for part in problem["loc"])
        option = OPTION_OF_FIELD.get(loc) or OPTION_OF_FIELD.get(loc[:1], ".".join(loc) or "configuration")
        message = str(problem["msg"]).removeprefix("Value error, ")
        value = problem.get("input")
        got = f" (got {value if isinstance(value, Path) else repr(value)})" if not isinstance(value, dict) else ""
        lines.append(message if message.startswith(option) else f"{option}: {message}{got}")
    return lines


def _demo_inputs() -> dict[str, Path]:
    from tasks.data.demo import generate_demo

    folder = environment.bhm_home() / DEMO_FOLDER
    log.info("no data options given: writing the built-in demo data (seed %d) to %s", DEMO_SEED, folder)
    return generate_demo(seed=DEMO_SEED).write(folder)


def _seconds(value: float) -> str:
    return f"{value:.1f}s"


def _stores(count: int) -> str:
    return f"{count:,} store" + ("" if count == 1 else "s")


def run_summary_text(result: RunResult, total_seconds: float) -> str:
    fit = result.fit
    global_fit = fit.global_fit
    lines = [
        f"forecast: {result.n_forecast_rows:,} rows written to {Path(result.forecast_path).resolve()}",
        f"fitted model: {Path(result.fitted_dir).resolve()}",
        f"global fit: {_stores(fit.n_global_stores)}, {global_fit.n_steps:,} steps, "
        f"converged: {'yes' if global_fit.converged else 'no (stopped at the step cap)'}",
    ]
    if fit.local_fit is not None:
        local = fit.local_fit
        lines.append(
            f"local fit: {_stores(fit.n_local_stores)} with short history, {local.n_steps:,} steps, "
            f"converged: {'yes' if local.converged else 'no (stopped at the step cap)'}"
        )
    if fit.n_prior_only_stores:
        lines.append(f"stores with no history (forecast from the population): {fit.n_prior_only_stores:,}")
    stages = ", ".join(f"{name} {_seconds(seconds)}" for name, seconds in result.timings.items())
    lines.append(f"seconds: {stages}; total {_seconds(total_seconds)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# commands


def cmd_validate(args: argparse.Namespace) -> int:
    from tasks.data.summary import summarize
    from tasks.data.validate import check_inputs

    panel = cli_spec.load(args)
    if panel is not None:
        return cli_spec.validate_panel(panel, args)
    _check_input_files(args, "train", "stores")
    if args.future is not None:
        _check_input_file(args.future, "--future")
    inputs, report = check_inputs(args.train, args.stores, args.future)
    print(report.to_text())
    if inputs is None:
        return EXIT_DATA
    print()
    print(summarize(inputs.train, inputs.stores, inputs.future).to_text())
    return EXIT_OK


def _validated(model: type[BaseModel], raw: dict[str, Any]) -> Any:
    """``model`` validated from ``raw``; a UsageError naming the option of each problem."""
    from pydantic import ValidationError

    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise UsageError("invalid configuration:\n  " + "\n  ".join(_validation_messages(err))) from None


def _validated_model(name: str, raw: Any) -> Any:
    """``raw`` validated as the config class ``tasks.config.<name>``."""
    from tasks import config

    return _validated(getattr(config, name), raw)


def _tracking(args: argparse.Namespace) -> dict[str, Any]:
    return {"enabled": not args.no_tracking}


def _model_source(args: argparse.Namespace) -> dict[str, Any]:
    source: dict[str, Any] = {"registered_model": args.model_name, "alias": args.alias, "version": args.version}
    if args.model_dir is not None:
        if not args.model_dir.is_dir():
            raise UsageError(f"--model-dir: not a folder: {args.model_dir}")
        source["path"] = args.model_dir
    return source


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _store_ids(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in _comma_list(text))
    except ValueError:
        raise UsageError(f"--store-ids: expected comma-separated store numbers, got {text!r}") from None


def _run_config(args: argparse.Namespace) -> NightlyConfig:
    from tasks.config import NightlyConfig

    given = {name: getattr(args, name) for name in DATA_OPTIONS if getattr(args, name) is not None}
    if given and len(given) < len(DATA_OPTIONS):
        missing = ", ".join(f"--{name}" for name in DATA_OPTIONS if name not in given)
        raise UsageError(f"give all of --train, --stores and --future, or none for the demo; missing: {missing}")
    if given:
        if args.out is None:
            raise UsageError("--out is required when --train/--stores/--future are given")
        for name, path in given.items():
            _check_input_file(path, f"--{name}")
        paths = given
        out = args.out
    else:
        out = args.out if args.out is not None else environment.bhm_home() / DEMO_FOLDER / DEMO_FORECAST
        paths = None  # the demo is written only once the configuration is known to be valid
    # Demo mode validates with placeholder input paths; the demo files replace them below.
    raw: dict[str, Any] = {
        "train": Path("train.csv"),
        "stores": Path("store.csv"),
        "future": Path("test.csv"),
        **(paths or {}),
        "out": out,
        "seed": args.seed,
        "state_dir": args.state_dir,
        "fit": {"max_steps": args.max_steps, "local_max_steps": args.local_max_steps},
        "forecast": {"num_draws": args.num_draws},
        "backtest_days": args.backtest_days,
        "tracking": _tracking(args),
    }
    config = _validated(NightlyConfig, raw)
    if paths is None:
        demo = _demo_inputs()
        config = config.model_copy(update={"train": demo["train"], "stores": demo["stores"], "future": demo["future"]})
    return config


def _run_flow(flow_fn: Callable[[Any], Any], config: BaseModel) -> tuple[int, Any]:
    """Run a flow in process (Prefect's temporary server when no PREFECT_API_URL); (exit code, result)."""
    from tasks.data.validate import InputValidationError
    from tasks.model.inference import FitDivergedError
    from tasks.ops.lock import RunLockedError

    try:
        return EXIT_OK, flow_fn(config)
    except InputValidationError as err:
        print(err.report.to_text(), file=sys.stderr)
        print("\nnothing was written: fix the files and run again.", file=sys.stderr)
        return EXIT_DATA, None
    except FitDivergedError as err:
        print(f"error: {err}", file=sys.stderr)
        print("nothing was written.", file=sys.stderr)
        return EXIT_DIVERGED, None
    except RunLockedError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_LOCKED, None


def _flow_command(flow_name: str, config: BaseModel, describe: Callable[[Any], list[str]]) -> int:
    """Run the flow ``flows.<flow_name>.<flow_name>`` in process and print ``describe(result)``."""
    environment.configure()
    module = importlib.import_module(f"flows.{flow_name}")
    code, result = _run_flow(getattr(module, flow_name), config)
    if code == EXIT_OK:
        print("\n".join(describe(result)))
    return code


def _panel_flow_command(flow_name: str, config_name: str, raw: dict[str, Any], describe: Callable[[Any], list[str]]) -> int:
    return _flow_command(flow_name, _validated_model(config_name, raw), describe)


def _tracking_lines(registration: Any, mlflow_run: str | None) -> list[str]:
    lines = []
    if registration is not None:
        lines.append(f"registry: {registration.describe()}")
    if mlflow_run:
        lines.append(f"MLflow: {mlflow_run}")
    return lines


def cmd_run(args: argparse.Namespace) -> int:
    from tasks.track.report import scores_text

    panel = cli_spec.load(args)
    if panel is not None:
        return cli_spec.run_panel(
            panel, args, _panel_flow_command
        )
    cli_spec.refuse_fan_out(args)
    cli_spec.refuse_series_blocks(args)
    config = _run_config(args)
    start = time.perf_counter()

    def describe(result: Any) -> list[str]:
        lines = [run_summary_text(result.run, time.perf_counter() - start)]
        if result.backtest:
            lines.append(f"backtest ({config.backtest_days} days): {scores_text(result.backtest)}")
        return lines + _tracking_lines(result.registration, result.mlflow_run)

    return _flow_command("nightly", config, describe)


def cmd_backtest(args: argparse.Namespace) -> int:
    from tasks.config import BacktestRunConfig
    from tasks.track.report import cold_start_table, methods_table

    panel = cli_spec.load(args)
    if panel is not None:
        return cli_spec.backtest_panel(
            panel, args, _panel_flow_command
        )
    for option, value in (("--horizon", args.horizon), ("--origins", args.origins)):
        if value is not None:
            raise UsageError(f"{option} goes with a panel spec (--spec); the Rossmann backtest takes --horizon-days and --origin")
    cli_spec.refuse_fan_out(args)
    _check_input_files(args, "train", "stores")
    from tasks.config import BASELINE_NAMES

    if args.baselines is None:
        baselines: tuple[str, ...] = BASELINE_NAMES
    else:
        baselines = () if args.baselines.strip() == "none" else _comma_list(args.baselines)
    raw = {
        "train": args.train,
        "stores": args.stores,
        "origins": tuple(args.origin),
        "horizon_days": args.horizon_days,
        "baselines": baselines,
        "out_dir": args.out_dir,
        "cold_start_stores": args.cold_start_stores,
        "cold_start_days": _comma_list(args.cold_start_days),
        "seed": args.seed,
        "fit": {"max_steps": args.max_steps},
        "forecast": {"num_draws": args.num_draws},
        "tracking": _tracking(args),
    }

    def describe(result: Any) -> list[str]:
        origins = ", ".join(str(r.origin) for r in result.suite.results)
        lines = [f"backtest from {origins}, {raw['horizon_days']} days:", methods_table(result.suite.overall)]
        if result.curve is not None:
            lines.append(cold_start_table(result.curve))
        if result.out_dir is not None:
            lines.append(f"scores: {Path(result.out_dir).resolve()}")
        return lines + _tracking_lines(None, result.mlflow_run)

    return _flow_command("backtest", _validated(BacktestRunConfig, raw), describe)


def cmd_demo(args: argparse.Namespace) -> int:
    from tasks.data.demo import generate_demo

    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if args.shape != "m5" and (args.series is not None or args.days is not None):
        raise UsageError("--series and --days go with --shape m5")
    if args.shape == "panel":
        from tasks.data.panel_demo import generate_panel_demo

        paths = generate_panel_demo(seed=args.seed).write(args.out)
    elif args.shape == "m5":
        from tasks.data.m5_demo import M5_DAYS, M5_SERIES, write_m5_demo

        try:
            paths = write_m5_demo(args.out, n_series=args.series or M5_SERIES, seed=args.seed, n_days=args.days or M5_DAYS)
        except ValueError as err:
            raise UsageError(str(err)) from None
    else:
        paths = generate_demo(seed=args.seed).write(args.out)
    print("\n".join(f"{role}: {path.resolve()}" for role, path in paths.items()))
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from tasks.config import TrainConfig

    panel = cli_spec.load(args)
    if panel is not None:
        return cli_spec.train_panel(panel, args, _panel_flow_command)
    cli_spec.refuse_series_blocks(args)
    _check_input_files(args, "train", "stores")
    raw = {
        "train": args.train,
        "stores": args.stores,
        "state_dir": args.state_dir,
        "seed": args.seed,
        "fit": {"max_steps": args.max_steps},
        "tracking": _tracking(args),
    }

    def describe(result: Any) -> list[str]:
        fit = result.fit.global_fit
        return [
            f"fitted model: {Path(result.fitted_dir).resolve()}",
            f"global fit: {_stores(result.fit.n_global_stores)}, {fit.n_steps:,} steps, converged: {'yes' if fit.converged else 'no'}",
            *_tracking_lines(result.registration, result.mlflow_run),
        ]

    return _flow_command("train", _validated(TrainConfig, raw), describe)


def cmd_cold_start(args: argparse.Namespace) -> int:
    from tasks.config import ColdStartConfig

    cli_spec.load(args)
    _check_input_files(args, *DATA_OPTIONS)
    raw = {
        "train": args.train,
        "stores": args.stores,
        "future": args.future,
        "out": args.out,
        "store_ids": _store_ids(args.store_ids),
        "model": _model_source(args),
        "state_dir": args.state_dir,
        "seed": args.seed,
        "tracking": _tracking(args),
    }

    def describe(result: Any) -> list[str]:
        return [
            f"stores fitted: {', '.join(map(str, result.store_ids))}",
            f"forecast: {result.n_forecast_rows:,} rows written to {Path(result.forecast_path).resolve()}",
            f"fitted model with the new stores: {Path(result.fitted_dir).resolve()}",
            *_tracking_lines(None, result.mlflow_run),
        ]

    return _flow_command("cold_start", _validated(ColdStartConfig, raw), describe)


def cmd_forecast(args: argparse.Namespace) -> int:
    from tasks.config import ForecastRunConfig

    panel = cli_spec.load(args)
    if panel is not None:
        return cli_spec.forecast_panel(panel, args, _panel_flow_command)
    cli_spec.refuse_fan_out(args)
    _check_input_files(args, "stores", "future")
    raw = {
        "stores": args.stores,
        "future": args.future,
        "out": args.out,
        "model": _model_source(args),
        "seed": args.seed,
        "forecast": {"num_draws": args.num_draws},
        "tracking": _tracking(args),
    }

    def describe(result: Any) -> list[str]:
        return [
            f"forecast: {result.n_forecast_rows:,} rows written to {Path(result.forecast_path).resolve()}",
            f"model version: {result.model_version}",
            *_tracking_lines(None, result.mlflow_run),
        ]

    return _flow_command("forecast", _validated(ForecastRunConfig, raw), describe)


def cmd_replenish(args: argparse.Namespace) -> int:
    panel = cli_spec.load(args)
    if panel is None:
        raise UsageError("bhm replenish needs --spec and --data: a panel spec with an inventory section (README: Orders)")
    return cli_spec.replenish_panel(panel, args, _panel_flow_command)


# --------------------------------------------------------------------------
# entry point


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or argparse's own usage error (already printed)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    setup_logging(_log_level(args))
    previous = _on_sigterm_unwind()
    try:
        return args.handler(args)
    except Terminated:
        print(f"bhm {args.command}: terminated (SIGTERM): the outputs are as before this run", file=sys.stderr)
        return EXIT_TERMINATED
    except (UsageError, cli_spec.SpecUsageError) as err:
        print(f"bhm {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as err:
        print(f"bhm {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as err:
        # The data passed validation but cannot be modelled (e.g. no store with enough history).
        log.debug("traceback", exc_info=True)
        hint = "" if log.isEnabledFor(logging.DEBUG) else " (run with -v for the traceback)"
        print(f"bhm {args.command}: error: {err}{hint}", file=sys.stderr)
        return EXIT_DATA
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler stopping the job, a node drained): unwinds like Ctrl-C, so that the MLflow run
    ends FAILED, temporaries are removed and the temporary Prefect server is stopped, not orphaned."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _on_sigterm_unwind() -> Any:
    """Turn SIGTERM into ``Terminated`` for the command's duration (main thread only); the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


if __name__ == "__main__":
    sys.exit(main())
