"""The ``bhm`` command line: validate input files, run the main job.

Wiring only: parse options, build a ``tasks.config.RunConfig``, call the pure
stages in ``tasks``, turn their outcomes into text and exit codes.

Exit codes:
    0  success (``validate``: every rule passed)
    1  the input data broke a rule (the report says which), or the data cannot be modelled
    2  usage: bad or missing options, a file not found, an invalid configuration
    3  the fit diverged (non-finite ELBO): nothing was written
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasks.config import RunConfig
    from tasks.pipeline import RunResult

EXIT_OK = 0
EXIT_DATA = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3

BHM_HOME_ENV = "BHM_HOME"
DEFAULT_BHM_HOME = "~/.bhm"
DEMO_FOLDER = "demo"
DEMO_FORECAST = "forecast.parquet"
DEMO_SEED = 0

DATA_OPTIONS = ("train", "stores", "future")

# Third-party loggers that talk too much at INFO/DEBUG. jax's xla_bridge logs
# "Unable to initialize backend 'tpu'" at INFO on every start.
QUIET_LOGGERS = {"jax": logging.WARNING, "jax._src.xla_bridge": logging.ERROR, "absl": logging.WARNING}

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
}

log = logging.getLogger("bhm")


class UsageError(Exception):
    """A problem with the options or files given: exit 2, message on stderr."""


# --------------------------------------------------------------------------
# logging


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (test capture swaps it)."""

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
    handler = _CurrentStderrHandler()
    handler._bhm_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
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
    from tasks.config import FitConfig, ForecastConfig, RunConfig

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
    validate.add_argument("--train", type=Path, required=True, metavar="PATH", help="Kaggle-format train file (CSV or Parquet)")
    validate.add_argument("--stores", type=Path, required=True, metavar="PATH", help="Kaggle-format store file (CSV or Parquet)")
    validate.add_argument("--future", type=Path, default=None, metavar="PATH", help="future calendar in Kaggle test.csv format (CSV or Parquet)")
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
    data.add_argument("--train", type=Path, default=None, metavar="PATH", help=RunConfig.model_fields["train"].description)
    data.add_argument("--stores", type=Path, default=None, metavar="PATH", help=RunConfig.model_fields["stores"].description)
    data.add_argument("--future", type=Path, default=None, metavar="PATH", help=RunConfig.model_fields["future"].description)
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
    run.set_defaults(handler=cmd_run)
    return parser


# --------------------------------------------------------------------------
# helpers


def bhm_home() -> Path:
    """$BHM_HOME (default ~/.bhm), as an absolute path."""
    return Path(os.environ.get(BHM_HOME_ENV) or DEFAULT_BHM_HOME).expanduser().resolve()


def _check_input_file(path: Path, option: str) -> None:
    from tasks.ingest import SUPPORTED_SUFFIXES

    if not path.is_file():
        raise UsageError(f"{option}: file not found: {path}")
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise UsageError(f"{option}: {path} has suffix {path.suffix!r}; expected one of {', '.join(SUPPORTED_SUFFIXES)}")


def _validation_messages(err: Any) -> list[str]:
    """One line per problem of a pydantic ValidationError, naming the option."""
    lines = []
    for problem in err.errors():
        loc = tuple(str(part) for part in problem["loc"])
        option = OPTION_OF_FIELD.get(loc, ".".join(loc) or "configuration")
        message = str(problem["msg"]).removeprefix("Value error, ")
        value = problem.get("input")
        got = f" (got {value if isinstance(value, Path) else repr(value)})" if not isinstance(value, dict) else ""
        lines.append(message if message.startswith(option) else f"{option}: {message}{got}")
    return lines


def _demo_inputs() -> dict[str, Path]:
    from tasks.demo import generate_demo

    folder = bhm_home() / DEMO_FOLDER
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
    from tasks.summary import summarize
    from tasks.validate import check_inputs

    _check_input_file(args.train, "--train")
    _check_input_file(args.stores, "--stores")
    if args.future is not None:
        _check_input_file(args.future, "--future")
    inputs, report = check_inputs(args.train, args.stores, args.future)
    print(report.to_text())
    if inputs is None:
        return EXIT_DATA
    print()
    print(summarize(inputs.train, inputs.stores, inputs.future).to_text())
    return EXIT_OK


def _run_config(args: argparse.Namespace) -> RunConfig:
    from pydantic import ValidationError

    from tasks.config import RunConfig

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
        out = args.out if args.out is not None else bhm_home() / DEMO_FOLDER / DEMO_FORECAST
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
    }
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as err:
        raise UsageError("invalid configuration:\n  " + "\n  ".join(_validation_messages(err))) from None
    if paths is None:
        demo = _demo_inputs()
        config = config.model_copy(update={"train": demo["train"], "stores": demo["stores"], "future": demo["future"]})
    return config


def cmd_run(args: argparse.Namespace) -> int:
    config = _run_config(args)

    from tasks.inference import FitDivergedError
    from tasks.pipeline import run
    from tasks.validate import InputValidationError

    start = time.perf_counter()
    try:
        result = run(config)
    except InputValidationError as err:
        print(err.report.to_text(), file=sys.stderr)
        print("\nnothing was written: fix the files and run again.", file=sys.stderr)
        return EXIT_DATA
    except FitDivergedError as err:
        print(f"error: {err}", file=sys.stderr)
        print("nothing was written.", file=sys.stderr)
        return EXIT_DIVERGED
    print(run_summary_text(result, time.perf_counter() - start))
    return EXIT_OK


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
    try:
        return args.handler(args)
    except UsageError as err:
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


if __name__ == "__main__":
    sys.exit(main())
