"""What the benchmarks share: machine info, fresh-process repeats, the Rossmann backtest split, scores.

A benchmark script runs as a parent that prints the machine, starts one fresh
child process per repetition (``run_fresh``: the child is the same script with
``--child`` and prints one ``CHILD {json}`` line), then prints per-repeat
lines, medians, goals and a final ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tasks import names as n  # noqa: E402
from tasks.config import FitConfig, ForecastConfig  # noqa: E402
from tasks.data.encode import EncodedData, build_spec, encode  # noqa: E402
from tasks.data.validate import ValidatedInputs, read_validated  # noqa: E402
from tasks.evaluate import metrics  # noqa: E402
from tasks.model.inference import FitProgress, log_progress  # noqa: E402

DATA_ENV = "BHM_ROSSMANN_DIR"
DEFAULT_CUT = dt.date(2015, 4, 26)
HORIZON_DAYS = 48
CHILD_PREFIX = "CHILD "
GIB = 2**30

# The seed project's numbers on a 2-core CPU (shared/DESIGN.md, "The reference we measure against").
REFERENCE = {
    "fit_seconds": 815.0,  # its notebook's 6,000 steps, the one Rossmann seed that did not diverge
    "rmspe": 0.157,  # 48-day holdout after that fit
    "cov50": 0.70,
    "cov90": 0.97,
    "rmspe_per_store_poisson": 0.150,
    "rmspe_median_by_weekday": 0.248,
    "cold_rmspe_new": 0.159,  # 100 stores given 7 days, fitted locally
    "cold_rmspe_established": 0.156,
    "cold_cov90_new": 0.98,
    "local_fit_seconds": 22.0,  # over 90% of it compiling
    "diverged_rossmann": "11 of 12 seeds",
    "diverged_synthetic": "2 of 3 seeds",
}


# --- machine, arguments, processes ----------------------------------------


def machine_info() -> dict:
    import jax
    import numpyro

    cpu_model = next((line.split(":", 1)[1].strip() for line in _lines("/proc/cpuinfo") if line.startswith("model name")), "")
    mem_kib = next((int(line.split()[1]) for line in _lines("/proc/meminfo") if line.startswith("MemTotal")), 0)
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "memory_gb": round(mem_kib / 2**20, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),  # others' work on the machine inflates timings
        "jax_devices": [str(d) for d in jax.devices()],
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpyro": numpyro.__version__,
        "polars": pl.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def _lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def print_machine(info: dict) -> None:
    print(
        f"machine: {info['cpu_count']} cpus ({info['cpu_affinity']} usable, {info['cpu']}), {info['memory_gb']} GB, "
        f"load {info['load_avg_1m']}; jax devices {info['jax_devices']}; "
        f"python {info['python']}, jax {info['jax']}, numpyro {info['numpyro']}, polars {info['polars']}"
    )


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_ENV) or REPO.parent / "shared" / "data" / "rossmann")


def add_seeds(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--seeds", nargs="+", default=[default], help=f"seeds: a list and/or ranges, e.g. 0 1 2 or 0..9 (default {default})")


def seed_list(values: list[str]) -> list[int]:
    """``["0..2", "7"]`` -> [0, 1, 2, 7]: ranges are inclusive."""
    out = []
    for text in values:
        first, _, last = text.partition("..")
        out += range(int(first), int(last or first) + 1)
    return out


def parser(
    description: str, repeats: int | None = 3, fit: bool = True, seed: bool = True, draws: bool = True, panel_data: bool = False
) -> argparse.ArgumentParser:
    """The benchmarks' common options; ``panel_data``: --data is a panel data folder (its spec.yaml), required."""
    p = argparse.ArgumentParser(description=description)
    if panel_data:
        p.add_argument("--data", type=Path, required=True, help="a panel data folder with its spec.yaml (bhm demo --shape m5 --out DIR)")
    else:
        p.add_argument("--data", type=Path, default=default_data_dir(), help=f"folder with train.csv, store.csv (env {DATA_ENV})")
    if repeats is not None:
        p.add_argument("--repeats", type=int, default=repeats, help="fresh processes to take the median over")
    if fit:
        p.add_argument("--cut", type=dt.date.fromisoformat, default=DEFAULT_CUT, help="last history day")
        p.add_argument("--max-steps", type=int, default=None, help="cap the fits' steps (smoke runs); default FitConfig()")
        if draws:
            p.add_argument("--num-draws", type=int, default=ForecastConfig().num_draws, help="forecast draws (smoke runs)")
        if seed:
            p.add_argument("--seed", type=int, default=0, help="seed of the run's JAX key")
    p.add_argument("-v", "--verbose", action="store_true", help="log the fits' progress to stderr")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p


def setup(args: argparse.Namespace) -> None:
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
        for name in ("jax", "absl"):
            logging.getLogger(name).setLevel(logging.WARNING)


def progress(args: argparse.Namespace) -> Callable[[FitProgress], None]:
    return log_progress if args.verbose else (lambda p: None)


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB), in GB of 2^30 bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def compile_cache_files() -> set[str]:
    """The files in JAX's persistent compilation cache folder (``JAX_COMPILATION_CACHE_DIR``); none when unset."""
    folder = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    return {f.name for f in Path(folder).rglob("*") if f.is_file()} if folder else set()


def child_done(record: dict) -> None:
    record = {**record, "load_avg_1m_end": round(os.getloadavg()[0], 2)}  # was the machine busy meanwhile?
    print(CHILD_PREFIX + json.dumps(record, default=_jsonable), flush=True)


def run_fresh(script: str, argv: list[str]) -> dict:
    """Run ``script argv --child`` in a fresh interpreter; its ``CHILD`` record. Its stderr passes through."""
    proc = subprocess.run([sys.executable, str(Path(script).resolve()), *argv, "--child"], stdout=subprocess.PIPE, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(CHILD_PREFIX)]
    if proc.returncode or not lines:
        raise RuntimeError(f"{script} {' '.join(argv)}: exit {proc.returncode}; stdout tail:\n{proc.stdout[-2000:]}")
    return json.loads(lines[-1][len(CHILD_PREFIX) :])


def repeated(script: str, args: argparse.Namespace, child: Callable[[argparse.Namespace], dict], *field_sets) -> tuple[dict, list[dict], dict] | None:
    """A benchmark's skeleton: as the child, measure once and report; as the parent, print the
    machine, run ``args.repeats`` fresh children and show each. Returns (machine, runs, medians)
    in the parent, None in the child."""
    setup(args)
    if args.child:
        child_done(child(args))
        return None
    machine = machine_info()
    print_machine(machine)
    runs = [run_fresh(script, sys.argv[1:]) for _ in range(args.repeats)]
    for i, run in enumerate(runs, 1):
        for fields in field_sets:
            show(f"repeat {i}", run, fields)
    return machine, runs, medians(runs)


def medians(records: list[dict]) -> dict:
    """Median of every numeric field present in all records; booleans as a count of True."""
    out: dict = {}
    for key, value in records[0].items():
        values = [r.get(key) for r in records]
        if isinstance(value, bool):
            out[key] = f"{sum(bool(v) for v in values)}/{len(values)}"
        elif isinstance(value, int | float) and all(isinstance(v, int | float) for v in values):
            out[key] = statistics.median(values)
    return out


def show(label: str, record: dict, fields: Iterable[tuple[str, str, str]]) -> None:
    """One line: ``label: name value unit, ...`` for the (key, name, format) fields present in ``record``."""
    parts = [f"{name} {_fmt(record[key], fmt)}" for key, name, fmt in fields if key in record]
    print(f"{label}: " + ", ".join(parts))


def _fmt(value, fmt: str) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, fmt)
    return str(value)


def goal(name: str, value: float | None, met: bool, target: str) -> dict:
    shown = "n/a" if value is None else f"{value:.3f}"
    print(f"goal {name}: {shown} (goal {target}) -> {'met' if met else 'NOT met'}")
    return {"name": name, "value": value, "goal": target, "met": bool(met)}


def reference(*keys: str) -> None:
    print("reference (seed project, DESIGN.md): " + ", ".join(f"{k} {REFERENCE[k]}" for k in keys))


def result(script: str, args: argparse.Namespace, machine: dict, **fields) -> None:
    options = {k: v for k, v in vars(args).items() if k != "child"}
    print("RESULT " + json.dumps({"script": script, "args": options, "machine": machine, **fields}, default=_jsonable))


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# --- data: read, validate, encode -------------------------------------------


def rossmann_files(data_dir: Path) -> tuple[Path, Path]:
    train, stores = Path(data_dir) / "train.csv", Path(data_dir) / "store.csv"
    for path in (train, stores):
        if not path.is_file():
            sys.exit(f"{path} not found: pass --data or set {DATA_ENV}")
    return train, stores


def fit_config(max_steps: int | None) -> FitConfig:
    """The default FitConfig, or one whose step caps are at most ``max_steps`` (smoke runs)."""
    if max_steps is None:
        return FitConfig()
    return FitConfig(max_steps=max_steps, local_max_steps=min(max_steps, FitConfig().local_max_steps))


def read_encode(train: Path, stores: Path, future: Path | None, config: FitConfig) -> tuple[ValidatedInputs, EncodedData, dict]:
    """tasks.data.validate.read_validated then tasks.data.encode.encode, as the main job does; with seconds per stage."""
    t0 = time.perf_counter()
    inputs = read_validated(train, stores, future)
    t1 = time.perf_counter()
    spec = build_spec(inputs.stores, config.yearly_fourier_order, config.monthly_fourier_order)
    encoded = encode(inputs.train, inputs.stores, inputs.future, spec)
    t2 = time.perf_counter()
    return inputs, encoded, {"read_validate_s": t1 - t0, "encode_s": t2 - t1}


@dataclass(frozen=True)
class Backtest:
    """History up to the cut and the calendar after it, validated and encoded; the actual sales kept aside."""

    inputs: ValidatedInputs
    encoded: EncodedData
    actual: pl.DataFrame  # Store, Date, Sales, Open of the horizon
    seconds: dict[str, float]


def split_files(
    data_dir: Path, cut: dt.date, out_dir: Path, horizon: int = HORIZON_DAYS, short_stores: Iterable[int] = (), short_days: int = 7
) -> tuple[Path, Path, Path, pl.DataFrame]:
    """Write the history up to ``cut`` (train.csv) and the ``horizon`` days after it as a Kaggle test.csv calendar.

    ``short_stores`` keep only their last ``short_days`` calendar days of
    history. Returns (train, stores, future paths, actual sales of the horizon).
    """
    train_path, stores_path = rossmann_files(data_dir)
    raw = pl.read_csv(train_path, infer_schema=False)  # as text, the way ingest reads it
    date = pl.col(n.DATE).str.to_date("%Y-%m-%d")
    history = raw.filter(date <= cut)
    short_stores = [int(s) for s in short_stores]
    if short_stores:
        is_short = pl.col(n.STORE).cast(pl.Int32).is_in(short_stores)
        history = history.filter(~is_short | (date > cut - dt.timedelta(days=short_days)))
    horizon_rows = raw.filter(date.is_between(cut + dt.timedelta(days=1), cut + dt.timedelta(days=horizon))).sort(
        [date, pl.col(n.STORE).cast(pl.Int32)]
    )
    future = horizon_rows.with_row_index(n.ID, offset=1).select(n.FUTURE_COLUMNS)
    actual = horizon_rows.select(
        pl.col(n.STORE).cast(pl.Int32), date.alias(n.DATE), pl.col(n.SALES).cast(pl.Int32), pl.col(n.OPEN).cast(pl.Int8)
    )
    paths = out_dir / "train.csv", out_dir / "test.csv"
    history.write_csv(paths[0])
    future.write_csv(paths[1])
    return paths[0], stores_path, paths[1], actual


def load_backtest(data_dir: Path, cut: dt.date, config: FitConfig, short_stores: Iterable[int] = (), short_days: int = 7) -> Backtest:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bhm-bench-") as tmp:
        train, stores, future, actual = split_files(data_dir, cut, Path(tmp), HORIZON_DAYS, short_stores, short_days)
        split_s = time.perf_counter() - t0
        inputs, encoded, seconds = read_encode(train, stores, future, config)
    return Backtest(inputs, encoded, actual, {"split_s": split_s, **seconds})


def store_ids(data_dir: Path) -> np.ndarray:
    return pl.read_csv(rossmann_files(data_dir)[1], columns=[n.STORE])[n.STORE].to_numpy().astype(np.int32)


def global_only(encoded: EncodedData, config: FitConfig) -> EncodedData:
    """The stores with enough history for the global fit: ``fit_history`` on this runs no local fit."""
    history = encoded.history
    keep = np.flatnonzero(history.observed.sum(axis=1) >= config.short_history_days)
    return EncodedData(encoded.spec, history.select_stores(keep), encoded.future)


# --- the backtest run -----------------------------------------------------------


def job_keys(seed: int):
    """The fit and forecast keys, derived from the seed as tasks.pipeline.run derives them."""
    import jax

    key_fit, key_forecast = jax.random.split(jax.random.key(seed))
    return key_fit, key_forecast


def score(frame: pl.DataFrame, actual: pl.DataFrame, stores: np.ndarray | None = None, exclude: bool = False) -> dict:
    """tasks.evaluate.metrics on open days with positive sales; optionally only (or all but) ``stores``."""
    scored = frame.join(actual, on=[n.STORE, n.DATE], how="inner").filter(pl.col(n.OPEN) == 1)
    if stores is not None:
        chosen = pl.col(n.STORE).is_in(np.asarray(stores).tolist())
        scored = scored.filter(~chosen if exclude else chosen)
    sales = scored[n.SALES].to_numpy().astype(float)
    col = {q: scored[n.quantile_column(q)].to_numpy() for q in ForecastConfig().quantiles}
    levels = tuple(col)
    return {
        "rmspe_mean": metrics.rmspe(sales, scored[n.MEAN].to_numpy()),
        "rmspe_q50": metrics.rmspe(sales, col[0.5]),
        "wql": metrics.scaled_quantile_loss(sales, np.stack([col[q] for q in levels]), levels),
        "cov50": metrics.coverage(sales, col[0.25], col[0.75]),
        "cov90": metrics.coverage(sales, col[0.05], col[0.95]),
        "n_scored_days": int((sales > 0).sum()),
    }


SCORE_FIELDS = [
    ("rmspe_mean", "RMSPE(mean)", ".4f"),
    ("rmspe_q50", "RMSPE(q50)", ".4f"),
    ("wql", "wQL", ".4f"),
    ("cov50", "cov50", ".3f"),
    ("cov90", "cov90", ".3f"),
]


def accuracy_goals(record: dict) -> list[dict]:
    """The issue's accuracy goals: RMSPE <= 0.12, coverage within 3 points of nominal."""
    rm, c50, c90 = record["rmspe_mean"], record["cov50"], record["cov90"]
    return [
        goal("RMSPE(mean)", rm, rm <= 0.12, "<= 0.12"),
        goal("cov50", c50, abs(c50 - 0.5) <= 0.03, "0.50 +- 0.03"),
        goal("cov90", c90, abs(c90 - 0.9) <= 0.03, "0.90 +- 0.03"),
    ]


def backtest_run(args: argparse.Namespace, second_forecast: bool) -> dict:
    """The main job's core on the Rossmann backtest: read, validate, encode, fit_history, forecast_frame, score.

    With ``second_forecast`` the forecast runs a second time in the same
    process (compiled by then): the forecast's steady-state time.
    """
    import jax

    from tasks.pipeline import fit_history, forecast_frame

    config, fc = fit_config(args.max_steps), ForecastConfig(num_draws=args.num_draws)
    bt = load_backtest(args.data, args.cut, config)
    key_fit, key_forecast = job_keys(args.seed)
    fitted, report = fit_history(bt.encoded, config, key_fit, bt.encoded.future.stores, progress(args))
    g = report.global_fit

    t0 = time.perf_counter()
    frame = forecast_frame(fitted, bt.encoded.future, bt.inputs.future, fc, key_forecast)
    record = {**bt.seconds, "forecast_first_s": time.perf_counter() - t0}
    if second_forecast:
        t0 = time.perf_counter()
        forecast_frame(fitted, bt.encoded.future, bt.inputs.future, fc, jax.random.fold_in(key_forecast, 1))
        record["forecast_second_s"] = time.perf_counter() - t0
    return {
        **record,
        "fit_compile_s": g.compile_seconds,
        "fit_run_s": g.run_seconds,
        "fit_steps": g.n_steps,
        "converged": g.converged,
        "fit_total_s": report.seconds,
        "final_loss": fitted.info["global_final_loss"],
        "n_global_stores": report.n_global_stores,
        "n_local_stores": report.n_local_stores,
        "forecast_stores": int(bt.encoded.future.n_stores),
        "forecast_days": int(bt.encoded.future.n_days),
        "num_draws": fc.num_draws,
        **score(frame, bt.actual),
        "peak_rss_gb": peak_rss_gb(),
    }
