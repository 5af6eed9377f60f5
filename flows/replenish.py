"""The replenish flow: a saved panel model's joint draws of demand over each order's protection interval ->
the cost-minimising orders of every series of a future table -> the orders file -> an MLflow run (expected
cost, fill rate, service level, plots, the file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow

from flows.panel import panel_spec
from flows.runtime import prefect_tags, rename_flow_run
from tasks import inventory_stages, panel_stages
from tasks.config import ReplenishConfig
from tasks.inventory import replenish as orders_of
from tasks.pipeline import RunKeys
from tasks.track import inventory_recording
from tasks.track.recording import open_run, record_config


@dataclass(frozen=True)
class ReplenishResult:
    orders_path: Path
    model_version: str
    n_order_rows: int
    summary: dict[str, float]
    mlflow_run: str | None


@flow(name="replenish", flow_run_name="replenish", validate_parameters=True)
def replenish(config: ReplenishConfig) -> ReplenishResult:
    spec = panel_spec(config.spec)
    fitted = panel_stages.load_model(config.model_dir, spec)
    keys = RunKeys.from_seed(config.seed)
    tables, encoded = panel_stages.read_and_encode(spec, config.data, config.future, fitted)
    rename_flow_run(f"replenish {spec.name} {tables.future['period'].min()}")
    positions, series_keys = orders_of.series_to_order(tables, encoded)
    inventory = inventory_stages.inventory(spec, config.data, series_keys, encoded.future.periods)
    tags = {**prefect_tags("replenish"), "dataset": spec.name, "model_version": fitted.model_version}
    with open_run(config.tracking, f"replenish {spec.name}", tags) as tracker:
        columns = inventory_stages.orders(fitted, encoded, positions, inventory, config.forecast, keys.forecast)
        frame = orders_of.orders_frame(spec, series_keys, encoded.future.periods, columns, fitted.model_version)
        out = panel_stages.export(frame, config.out)
        summary = orders_of.summary(frame)
        if tracker is not None:
            record_config(tracker, config, {"model_version": fitted.model_version})
            inventory_recording.record_orders(tracker, frame, summary, out)
    return ReplenishResult(out, fitted.model_version, frame.height, summary, tracker.link if tracker else None)
