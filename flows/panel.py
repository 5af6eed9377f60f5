"""The panel flow: a dataset spec's store x product series, read -> validate -> encode -> fit ->
forecast every series and aggregate -> export -> track (an MLflow run with the fit, the files and
the effect plots)."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import polars as pl
from prefect import flow

from flows import engines
from flows.runtime import prefect_tags, rename_flow_run
from tasks import panel_pipeline, panel_stages, stages
from tasks.config import PanelRunConfig
from tasks.data.panel_encode import Dimensions
from tasks.data.spec import PanelSpec, load_spec, spec_files
from tasks.model.panel_state import FittedPanel
from tasks.ops.atomic import temp_path
from tasks.panel_pipeline import PanelRunResult, run_info
from tasks.pipeline import RunKeys
from tasks.track import panel_recording
from tasks.track.recording import Tracker, open_run, record_config

SUMMARY_ARTIFACT_KEY = "panel-summary"
EFFECTS_STREAM = 1  # the effect draws' key: the forecast key folded with this


def panel_spec(path: Path) -> PanelSpec:
    spec = load_spec(path)
    if not isinstance(spec, PanelSpec):
        raise ValueError(f"{path}: layout {spec.layout!r} runs with the nightly flows, not the panel flows")
    return spec


def record_elasticities(
    tracker: Tracker, fitted: FittedPanel, dims: Dimensions, stores: pl.DataFrame, products: pl.DataFrame | None, spec: PanelSpec, keys: RunKeys
) -> None:
    """Each price covariate's elasticity per product, drawn only when a run records them; ``stores`` and
    ``products``: the dimension frames, for the keys' labels."""
    for effects in panel_stages.elasticities(fitted, dims, spec, jax.random.fold_in(keys.forecast, EFFECTS_STREAM)):
        panel_recording.record_effects(tracker, effects, panel_pipeline.key_labels(spec, stores, products, effects.side))


@flow(name="panel", flow_run_name="panel", validate_parameters=True)
def panel(config: PanelRunConfig) -> PanelRunResult:
    spec = panel_spec(config.spec)
    keys = RunKeys.from_seed(config.seed)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if config.series_blocks is None:
        tables, encoded = panel_stages.read_and_encode(spec, config.data, config.future)
        rename_flow_run(f"panel {spec.name} {encoded.encoding.anchor}")
        paths = tables.paths
        timings["read_encode"] = time.perf_counter() - started
    else:
        rename_flow_run(f"panel {spec.name}")  # its history's last period is known once the blocks are written
        paths = {role: str(path) for role, path in spec_files(spec, config.data).items()}
    info = run_info(paths, config.spec.read_text(), config.fit, config.seed)

    tags = {**prefect_tags("panel"), "dataset": spec.name, "data_fingerprint": info["data_fingerprint"]}
    if config.series_blocks is not None:
        tags["series_blocks"] = "yes"
    with open_run(config.tracking, f"panel {spec.name}", tags) as tracker:
        t = time.perf_counter()
        if config.series_blocks is None:
            fitted, fit = panel_stages.fit(encoded, spec, config.fit, keys.fit, info)
            n_masked = encoded.n_masked
            timings["fit"] = time.perf_counter() - t
        else:
            # a panel larger than memory: the history only ever in series blocks on disk, the forecast from the
            # fitted model and the future table alone (validated with the history's parts, before the fit)
            blocks, fitted, fit = panel_stages.train_from_blocks(
                spec, config.data, config.fit, config.series_blocks, keys.fit, info, future=config.future
            )
            rename_flow_run(f"panel {spec.name} {blocks.encoding.anchor}")
            n_masked = blocks.totals.n_masked
            timings["encode_and_fit"] = time.perf_counter() - t
            t = time.perf_counter()
            tables, encoded = panel_stages.read_and_encode(spec, config.data, config.future, fitted)
            timings["read_encode_future"] = time.perf_counter() - t
        fitted_dir = panel_stages.save_model(fitted, config.fitted_dir)

        t = time.perf_counter()
        frame, _ = engines.forecast(fitted, tables, encoded, config.forecast, config.fan_out, keys.forecast, temp_path(config.out))
        out = panel_stages.export(frame, config.out)
        timings["forecast"] = time.perf_counter() - t

        if tracker is not None:
            t = time.perf_counter()
            record_config(tracker, config, {"model_version": fitted.model_version})
            panel_recording.record_panel_fit(tracker, fit, encoded.encoding.n_series, n_masked, fitted.info)
            panel_recording.record_panel_files(tracker, out, fitted_dir)
            record_elasticities(tracker, fitted, encoded.dims, tables.stores, tables.products, spec, keys)
            timings["track"] = time.perf_counter() - t
        n_series_rows = int((frame["level"] == "series").sum())
        result = PanelRunResult(
            forecast_path=out,
            fitted_dir=fitted_dir,
            fit=fit,
            n_series=encoded.encoding.n_series,
            n_forecast_rows=n_series_rows,
            n_aggregate_rows=frame.height - n_series_rows,
            n_masked=n_masked,
            timings=timings,
        )
        stages.publish_summary(
            SUMMARY_ARTIFACT_KEY,
            f"# Panel forecast: {spec.name}\n\n- series: {result.n_series:,}\n- forecast rows: {n_series_rows:,} "
            f"(+{result.n_aggregate_rows:,} aggregate rows)\n- fit: {fit.n_steps:,} steps, converged: {fit.converged}\n"
            f"- forecast file: `{out}`\n- fitted model: `{fitted_dir}`\n",
            f"panel forecast: {n_series_rows:,} rows",
        )
    return result
