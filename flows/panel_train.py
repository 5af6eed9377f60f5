"""The panel train flow: a dataset spec's history read, validated, encoded and fitted; the fitted model
saved (and its fit, files and price elasticities tracked). No forecast: `bhm forecast --spec` uses it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow

from flows.panel import panel_spec, record_elasticities
from flows.runtime import prefect_tags, rename_flow_run
from tasks import panel_pipeline, panel_stages
from tasks.config import PanelTrainConfig
from tasks.data.spec import PanelSpec, spec_files
from tasks.model.inference import FitResult
from tasks.pipeline import RunKeys
from tasks.track import panel_recording
from tasks.track.recording import open_run, record_config


@dataclass(frozen=True)
class PanelTrainResult:
    fitted_dir: Path
    fit: FitResult
    n_series: int
    mlflow_run: str | None


@flow(name="panel-train", flow_run_name="panel-train", validate_parameters=True)
def panel_train(config: PanelTrainConfig) -> PanelTrainResult:
    spec = panel_spec(config.spec)
    keys = RunKeys.from_seed(config.seed)
    if config.series_blocks is not None:
        return _train_from_blocks(config, spec, keys)
    tables, encoded = panel_stages.read_and_encode(spec, config.data, None)
    rename_flow_run(f"panel-train {spec.name} {encoded.encoding.anchor}")
    info = panel_pipeline.run_info(tables.paths, config.spec.read_text(), config.fit, config.seed)
    tags = {**prefect_tags("panel-train"), "dataset": spec.name, "data_fingerprint": info["data_fingerprint"]}
    with open_run(config.tracking, f"panel-train {spec.name}", tags) as tracker:
        fitted, fit = panel_stages.fit(encoded, spec, config.fit, keys.fit, info)
        fitted_dir = panel_stages.save_model(fitted, config.state_dir)
        if tracker is not None:
            record_config(tracker, config, {"model_version": fitted.model_version})
            panel_recording.record_panel_fit(tracker, fit, encoded.encoding.n_series, encoded.n_masked, fitted.info)
            panel_recording.record_panel_files(tracker, None, fitted_dir)
            record_elasticities(tracker, fitted, encoded.dims, tables.stores, tables.products, spec, keys)
    return PanelTrainResult(fitted_dir, fit, encoded.encoding.n_series, tracker.link if tracker else None)


def _train_from_blocks(config: PanelTrainConfig, spec: PanelSpec, keys: RunKeys) -> PanelTrainResult:
    """A panel larger than memory: encoded into series blocks on disk a few stores at a time, fitted from
    them."""
    rename_flow_run(f"panel-train {spec.name}")  # its history's last period is known once the blocks are written
    paths = {role: str(path) for role, path in spec_files(spec, config.data).items()}
    info = panel_pipeline.run_info(paths, config.spec.read_text(), config.fit, config.seed)
    tags = {**prefect_tags("panel-train"), "dataset": spec.name, "data_fingerprint": info["data_fingerprint"], "series_blocks": "yes"}
    with open_run(config.tracking, f"panel-train {spec.name}", tags) as tracker:
        blocks, fitted, fit = panel_stages.train_from_blocks(spec, config.data, config.fit, config.series_blocks, keys.fit, info)
        rename_flow_run(f"panel-train {spec.name} {blocks.encoding.anchor}")
        fitted_dir = panel_stages.save_model(fitted, config.state_dir)
        if tracker is not None:
            record_config(tracker, config, {"model_version": fitted.model_version})
            panel_recording.record_panel_fit(tracker, fit, blocks.encoding.n_series, blocks.totals.n_masked, fitted.info)
            panel_recording.record_panel_files(tracker, None, fitted_dir)
            record_elasticities(tracker, fitted, blocks.dims, blocks.stores, blocks.products, spec, keys)
    return PanelTrainResult(fitted_dir, fit, blocks.encoding.n_series, tracker.link if tracker else None)
