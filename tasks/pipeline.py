"""The stages of the main job as plain functions: fit, forecast, export, run.

No Prefect and no MLflow here: flows wrap these stages as tasks, and the
CLI runs them in process. Arrays in, arrays and frames out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import jax
import numpy as np
import polars as pl

from tasks import names as n
from tasks.config import FitConfig, ForecastConfig, RunConfig
from tasks.data import features as fx
from tasks.data.encode import EncodedData, EncodedPanel, build_spec, days_before, encode, encode_future
from tasks.data.summary import DataSummary, summarize
from tasks.data.validate import ValidatedInputs, read_validated
from tasks.forecast.draws import forecast, select_store_params
from tasks.model import state
from tasks.model.buckets import round_up
from tasks.model.inference import FitProgress, FitResult, Params, fit_global, fit_local, log_progress
from tasks.model.store_day import ModelInputs, ModelStructure, Site, calendar_basis, model_inputs, shock_covariates
from tasks.names import FileRole
from tasks.ops import atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitReport:
    global_fit: FitResult
    local_fit: FitResult | None
    n_global_stores: int
    n_local_stores: int
    n_prior_only_stores: int
    seconds: float


@dataclass(frozen=True)
class RunResult:
    forecast_path: Path
    fitted_dir: Path
    summary: DataSummary
    fit: FitReport
    n_forecast_rows: int
    timings: dict[str, float] = field(default_factory=dict)


def panel_inputs(
    panel: EncodedPanel,
    anchor: dt.date,
    structure: ModelStructure,
    with_sales: bool,
    day_basis: np.ndarray | None = None,
    history_shock_x: np.ndarray | None = None,
) -> ModelInputs:
    return model_inputs(
        panel.dates,
        panel.date_x,
        panel.store_day_x,
        panel.store_z,
        panel.observed if with_sales else panel.present,
        panel.sales if with_sales else None,
        np.datetime64(anchor, "D"),
        structure.block_days,
        structure.n_history_days,
        structure.log_offset,
        day_basis,
        panel_shock_covariates(panel),
        history_shock_x,
    )


def panel_shock_covariates(panel: EncodedPanel) -> np.ndarray:
    """Shock-scale covariates of each day of the panel [T, C], from its calendar (all of the panel's stores)."""
    holiday = panel.store_day_x[..., fx.STORE_DAY_FEATURES.index(fx.STATE_HOLIDAY_FEATURE)] > 0.5
    return shock_covariates(panel.dates, panel.present, panel.open, holiday)


def _crop_to_observed(panel: EncodedPanel) -> EncodedPanel:
    """The panel from its first observed day on: a local fit needs no empty past."""
    days = np.flatnonzero(panel.observed.any(axis=0))
    first = int(days[0]) if days.size else panel.n_days - 1
    return EncodedPanel(
        stores=panel.stores,
        dates=panel.dates[first:],
        date_x=panel.date_x[first:],
        store_day_x=panel.store_day_x[:, first:],
        store_z=panel.store_z,
        sales=panel.sales[:, first:],
        observed=panel.observed[:, first:],
        present=panel.present[:, first:],
        open=panel.open[:, first:],
    )


def bucketed_days(n_days: int, bucket_days: int) -> int:
    """``n_days`` rounded up to a multiple of ``bucket_days``: the history length a fit compiles for, so that
    the histories of consecutive nightly runs (and a backtest's nearby origins) share their programs."""
    if n_days < 1 or bucket_days < 1:
        raise ValueError(f"n_days and bucket_days must be >= 1, got {n_days} and {bucket_days}")
    return round_up(n_days, bucket_days)


def prior_store_params(n_stores: int, structure: ModelStructure) -> Params:
    """Store-level guide parameters equal to the prior: a store known only by its attributes."""
    shapes = {
        Site.POOLED_RAW: (n_stores, 1, structure.n_pooled),
        Site.DISPERSION_RAW: (n_stores, 1),
        Site.LEVEL_STEPS_PAST: (n_stores, 1, structure.n_past_blocks),
    }
    params: Params = {}
    for site, shape in shapes.items():
        params[f"{site}.loc"] = np.zeros(shape, np.float32)
        params[f"{site}.scale"] = np.ones(shape, np.float32)
    return params


def _concat_store_params(parts: list[Params], globals_from: Params) -> Params:
    merged = {k: v for k, v in globals_from.items() if k.split(".")[0] in Site.GLOBAL}
    for site in Site.STORE:
        for part in ("loc", "scale"):
            key = f"{site}.{part}"
            merged[key] = np.concatenate([p[key] for p in parts], axis=0)
    return merged


def fit_new_stores(
    fitted: state.FittedModel,
    panel: EncodedPanel,
    config: FitConfig,
    key: jax.Array,
    on_progress: Callable[[FitProgress], None] = log_progress,
) -> FitResult:
    """Local fit of the panel's stores against the fitted model's fixed globals, in one program.

    The panel must share the fitted model's history calendar (same anchor);
    it is cropped to its first observed day, then padded to a bucket of days
    (no further back than the fitted history), so that new stores opened a
    few days apart share one compiled program.
    """
    if panel.dates[-1].astype(dt.date) != fitted.anchor:
        raise ValueError(f"panel ends {panel.dates[-1]}, the fitted model's history ends {fitted.anchor}")
    cropped = _crop_to_observed(panel)
    bucket = min(bucketed_days(cropped.n_days, config.history_bucket_days), fitted.structure.n_history_days)
    # A panel reaching past the fitted history stays as it is: model_inputs names the days it lacks.
    cropped = cropped.padded_to(max(cropped.n_days, bucket))
    inputs = panel_inputs(cropped, fitted.anchor, fitted.structure, True, fitted.day_basis, fitted.history_shock_x)
    return fit_local(inputs, fitted.structure, fitted.params, config.settings(local=True), key, on_progress)


def with_stores(fitted: state.FittedModel, store_ids: np.ndarray, store_params: Params) -> state.FittedModel:
    """The fitted model with these stores' store-level parameters; a store it already had is replaced."""
    store_ids = np.asarray(store_ids, np.int32)
    keep = np.flatnonzero(~np.isin(fitted.store_ids, store_ids))
    kept = select_store_params(fitted.params, keep)
    return replace(
        fitted,
        params=_concat_store_params([kept, store_params], fitted.params),
        store_ids=np.concatenate([fitted.store_ids[keep], store_ids]),
    )


def with_prior_stores(fitted: state.FittedModel, store_ids: np.ndarray) -> state.FittedModel:
    """The fitted model, plus prior store parameters for those of ``store_ids`` it has none for."""
    missing = np.setdiff1d(np.asarray(store_ids, np.int32), fitted.store_ids)
    if not missing.size:
        return fitted
    log.info("%d stores have no history: they are forecast from the population", missing.size)
    return with_stores(fitted, missing, prior_store_params(missing.size, fitted.structure))


@dataclass(frozen=True)
class GlobalFitSetup:
    """What the global fit sees: its structure, the history padded to the structure's days, and the calendar
    arrays of those days (zero rows on the padding: its day shocks are prior draws that touch no sales)."""

    structure: ModelStructure
    anchor: dt.date
    history: EncodedPanel  # padded to structure.n_history_days
    day_basis: np.ndarray
    history_shock_x: np.ndarray
    global_positions: np.ndarray  # stores with at least short_history_days observed days
    local_positions: np.ndarray

    def global_inputs(self) -> ModelInputs:
        panel = self.history.select_stores(self.global_positions)
        return panel_inputs(panel, self.anchor, self.structure, True, self.day_basis, self.history_shock_x)


def global_fit_setup(encoded: EncodedData, config: FitConfig) -> GlobalFitSetup:
    """The global fit's structure and inputs: a history of ``n`` days is fitted as one of
    ``bucketed_days(n, config.history_bucket_days)`` days, the earliest of them empty."""
    history = encoded.history
    n_observed = history.observed.sum(axis=1)
    global_pos = np.flatnonzero(n_observed >= config.short_history_days)
    if not global_pos.size:
        raise ValueError(
            f"no store has {config.short_history_days} or more observed days: the global fit needs some "
            f"(most observed days of any store: {int(n_observed.max(initial=0))})"
        )
    log_offset = float(np.log(history.sales[history.observed].mean()))
    n_days = bucketed_days(history.n_days, config.history_bucket_days)
    return GlobalFitSetup(
        structure=ModelStructure.from_features(encoded.spec.features, n_days, config.block_days, log_offset, config.pooling),
        anchor=history.dates[-1].astype(dt.date),
        history=history.padded_to(n_days),
        day_basis=days_before(calendar_basis(history.date_x, history.store_day_x, history.observed), n_days),
        history_shock_x=days_before(panel_shock_covariates(history), n_days),
        global_positions=global_pos,
        local_positions=np.flatnonzero(n_observed < config.short_history_days),
    )


def fit_history(
    encoded: EncodedData,
    config: FitConfig,
    key: jax.Array,
    prior_only_stores: np.ndarray | None = None,
    on_progress: Callable[[FitProgress], None] = log_progress,
    info: dict | None = None,
) -> tuple[state.FittedModel, FitReport]:
    """Global fit on stores with enough history, local fits for the rest.

    Stores with at least ``short_history_days`` observed days take part in
    the global fit; the others are fitted locally against the fixed globals,
    all in one program. ``prior_only_stores`` (no history at all) get the
    prior: their forecast is that of a store with their attributes.
    """
    t0 = time.perf_counter()
    setup = global_fit_setup(encoded, config)
    history, structure, anchor = setup.history, setup.structure, setup.anchor
    global_pos, local_pos = setup.global_positions, setup.local_positions
    key_global, key_local = jax.random.split(key)

    log.info("global fit: %d stores, %d observed days", global_pos.size, int(history.observed[global_pos].sum()))
    global_fit = fit_global(setup.global_inputs(), structure, config.settings(), key_global, on_progress)
    fitted = state.FittedModel(
        params=global_fit.params,
        store_ids=history.stores[global_pos].astype(np.int32),
        structure=structure,
        spec=encoded.spec,
        anchor=anchor,
        day_basis=setup.day_basis,
        history_shock_x=setup.history_shock_x,
    )

    local_fit = None
    if local_pos.size:
        log.info("local fit: %d stores with fewer than %d observed days", local_pos.size, config.short_history_days)
        local_panel = history.select_stores(local_pos)
        local_fit = fit_new_stores(fitted, local_panel, config, key_local, on_progress)
        fitted = with_stores(fitted, local_panel.stores, local_fit.params)

    prior_only = np.setdiff1d(np.asarray(prior_only_stores if prior_only_stores is not None else [], np.int32), history.stores)
    fitted = with_prior_stores(fitted, prior_only)

    report = FitReport(
        global_fit=global_fit,
        local_fit=local_fit,
        n_global_stores=int(global_pos.size),
        n_local_stores=int(local_pos.size),
        n_prior_only_stores=int(prior_only.size),
        seconds=time.perf_counter() - t0,
    )
    fit_info = {
        "global_steps": global_fit.n_steps,
        "global_converged": global_fit.converged,
        "global_final_loss": float(global_fit.losses[-min(100, global_fit.n_steps) :].mean()),
        "local_steps": local_fit.n_steps if local_fit else 0,
        "n_global_stores": report.n_global_stores,
        "n_local_stores": report.n_local_stores,
        "n_prior_only_stores": report.n_prior_only_stores,
        "fit_seconds": report.seconds,
    }
    return replace(fitted, info={**(info or {}), **fit_info}), report


def forecast_frame(
    fitted: state.FittedModel,
    future_panel: EncodedPanel,
    future: pl.DataFrame,
    config: ForecastConfig,
    key: jax.Array,
    on_draws: Callable[[np.ndarray, np.ndarray], None] | None = None,
) -> pl.DataFrame:
    """One row per future calendar row: the contract columns plus open flags and model version.

    ``on_draws`` sees the sales draws of each chunk of stores (``tasks.forecast.draws.forecast``).
    """
    params = select_store_params(fitted.params, fitted.positions(future_panel.stores))
    inputs = panel_inputs(future_panel, fitted.anchor, fitted.structure, with_sales=False)
    arrays = forecast(
        params, fitted.structure, inputs, key, config.num_draws, config.quantiles, config.chunk_stores, on_draws
    )

    store_pos = {int(s): i for i, s in enumerate(future_panel.stores)}
    rows = future.select(
        *([n.ID] if n.ID in future.columns and future[n.ID].null_count() == 0 else []),
        n.STORE,
        n.DATE,
        n.OPEN,
        *([n.OPEN_WAS_MISSING] if n.OPEN_WAS_MISSING in future.columns else []),
    )
    s_idx = np.array([store_pos[int(s)] for s in rows[n.STORE].to_list()], dtype=np.int64)
    t_idx = (rows[n.DATE].to_numpy().astype("datetime64[D]") - future_panel.dates[0]).astype(np.int64)
    values = {n.MEAN: arrays.mean[s_idx, t_idx]}
    for level, q in zip(arrays.levels, arrays.quantiles, strict=True):
        values[n.quantile_column(level)] = q[s_idx, t_idx]
    return (
        rows.with_columns(pl.Series(name, v, dtype=pl.Float32) for name, v in values.items())
        .with_columns((pl.col(n.OPEN) == 1).alias(n.WAS_OPEN), pl.lit(fitted.model_version).alias(n.MODEL_VERSION))
        .drop(n.OPEN)
        .sort([n.STORE, n.DATE])
    )


def _write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write`` to a temporary name beside ``path``, flushed and renamed into place when complete."""
    return atomic.write_file(path, write)


def write_parquet_atomic(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write to a temporary name beside ``path`` and rename into place when complete."""
    return _write_atomic(path, frame.write_parquet)


def write_text_atomic(text: str, path: str | Path) -> Path:
    return _write_atomic(path, lambda tmp: tmp.write_text(text))


@dataclass(frozen=True)
class RunKeys:
    """The JAX keys of a run, all derived from its seed."""

    fit: jax.Array
    forecast: jax.Array
    backtest: jax.Array

    @classmethod
    def from_seed(cls, seed: int) -> RunKeys:
        root = jax.random.key(seed)
        key_fit, key_forecast = jax.random.split(root)
        return cls(fit=key_fit, forecast=key_forecast, backtest=jax.random.fold_in(root, 1))


def read_inputs(train: Path, stores: Path, future: Path | None) -> tuple[ValidatedInputs, DataSummary]:
    """Read and validate the inputs (InputValidationError lists every broken rule), and summarise them."""
    inputs = read_validated(train, stores, future)
    summary = summarize(inputs.train, inputs.stores, inputs.future)
    log.info("validated: %s", summary.to_text().replace("\n", "; "))
    return inputs, summary


def encode_inputs(inputs: ValidatedInputs, config: FitConfig, require_future: bool = True) -> EncodedData:
    spec = build_spec(inputs.stores, config.yearly_fourier_order, config.monthly_fourier_order)
    encoded = encode(inputs.train, inputs.stores, inputs.future, spec)
    if require_future and encoded.future is None:
        raise ValueError(f"{inputs.paths.get(FileRole.FUTURE)}: the future calendar has no rows")
    return encoded


def run_info(train: Path, stores: Path, config: FitConfig, seed: int) -> dict:
    """What identifies a fit: data fingerprint, model version (package, data, settings and seed), versions."""
    fingerprint = state.file_fingerprint(train, stores)
    # What the fit depends on besides the data: its settings and the seed.
    settings_hash = hashlib.sha256(f"{config.model_dump_json()}|{seed}".encode()).hexdigest()
    return {
        "data_fingerprint": fingerprint,
        "model_version": f"{state.package_versions()['bhm-forecast']}+{fingerprint[:12]}.{settings_hash[:8]}",
        "versions": state.package_versions(),
        "seed": seed,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def forecast_calendar(
    fitted: state.FittedModel, stores: pl.DataFrame, future: pl.DataFrame, config: ForecastConfig, key: jax.Array
) -> pl.DataFrame:
    """Forecast a validated future calendar with a fitted model, no refit; stores it lacks get the prior."""
    first_day = future[n.DATE].min()
    if first_day <= fitted.anchor:
        raise ValueError(
            f"the future calendar starts on {first_day}, not after the model's last history day {fitted.anchor}"
        )
    panel = encode_future(stores, future, fitted.spec)
    return forecast_frame(with_prior_stores(fitted, panel.stores), panel, future, config, key)


def calendar_for_stores(future: pl.DataFrame, store_ids: np.ndarray) -> pl.DataFrame:
    """The future calendar's rows of ``store_ids``; a ValueError when it has none."""
    rows = future.filter(pl.col(n.STORE).is_in(np.asarray(store_ids).tolist()))
    if not rows.height:
        raise ValueError(f"the future calendar has no rows for stores {np.asarray(store_ids)[:10].tolist()}")
    return rows


def calendar_span(future: pl.DataFrame) -> tuple[dt.date, dt.date, int]:
    """First and last date of a calendar, and its number of stores."""
    return future[n.DATE].min(), future[n.DATE].max(), future[n.STORE].n_unique()


def cold_start(
    fitted: state.FittedModel,
    inputs: ValidatedInputs,
    store_ids: Sequence[int],
    config: FitConfig,
    key: jax.Array,
    on_progress: Callable[[FitProgress], None] = log_progress,
) -> tuple[state.FittedModel, FitResult | None, np.ndarray]:
    """Local fits of ``store_ids`` (default: the train stores the model lacks) against the model's fixed globals.

    Their history is taken up to the model's last history day; later rows
    cannot be used (the model's calendar ends there) and are logged. Returns
    the model with the stores' parameters, the local fit and the store ids.
    """
    train = inputs.train
    ids = np.asarray(store_ids, np.int32) if len(store_ids) else np.setdiff1d(train[n.STORE].unique().to_numpy(), fitted.store_ids)
    if not ids.size:
        raise ValueError("no store to fit: every store of the train file is already in the model (name stores to refit)")
    unknown = np.setdiff1d(ids, inputs.stores[n.STORE].to_numpy())
    if unknown.size:
        raise ValueError(f"stores {unknown[:10].tolist()} are not in {inputs.paths.get(FileRole.STORES)}")
    rows = train.filter(pl.col(n.STORE).is_in(ids.tolist()))
    later = rows.filter(pl.col(n.DATE) > fitted.anchor).height
    if later:
        log.warning("%d train rows after the model's last history day %s are not used", later, fitted.anchor)
    rows = rows.filter(pl.col(n.DATE) <= fitted.anchor)
    local_fit = None
    if rows.height:
        encoded = encode(rows, inputs.stores, None, fitted.spec, history_end=fitted.anchor)
        log.info("local fit of %d stores against the fixed globals", encoded.history.n_stores)
        local_fit = fit_new_stores(fitted, encoded.history, config, key, on_progress)
        fitted = with_stores(fitted, encoded.history.stores, local_fit.params)
    return with_prior_stores(fitted, ids), local_fit, ids


def run(config: RunConfig, on_progress: Callable[[FitProgress], None] = log_progress) -> RunResult:
    """ingest -> validate -> encode -> global fit -> local fits -> forecast -> export."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    inputs, summary = read_inputs(config.train, config.stores, config.future)
    timings["read_validate"] = time.perf_counter() - t

    t = time.perf_counter()
    encoded = encode_inputs(inputs, config.fit)
    timings["encode"] = time.perf_counter() - t

    keys = RunKeys.from_seed(config.seed)
    info = run_info(config.train, config.stores, config.fit, config.seed)
    fitted, report = fit_history(encoded, config.fit, keys.fit, encoded.future.stores, on_progress, info)
    timings["fit"] = report.seconds
    fitted_dir = state.save(fitted, config.fitted_dir)

    t = time.perf_counter()
    frame = forecast_frame(fitted, encoded.future, inputs.future, config.forecast, keys.forecast)
    timings["forecast"] = time.perf_counter() - t
    write_parquet_atomic(frame, config.out)
    log.info("wrote %d forecast rows to %s", frame.height, config.out)
    return RunResult(config.out, fitted_dir, summary, report, frame.height, timings)
