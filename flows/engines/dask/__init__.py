"""The panel forecast's partitions, and the panel backtest's origins, as Prefect tasks on Dask (prefect-dask's
DaskTaskRunner).

A LocalCluster of ``dask_workers`` processes by default, the running cluster at ``dask_address`` when one
is given. The flow writes the job (``tasks.forecast.panel_job``) into ``workdir``, each partition task reads
it and writes its block there (retried on failure; a block is renamed into place only when whole), and
the flow combines the blocks in partition order; only paths travel between tasks. A backtest origin's task
reads the spec's files itself and writes its scores into ``workdir``. A remote cluster's
workers must see ``workdir`` (shared storage), have this package installed, and reach the same Prefect API
(``PREFECT_API_URL``); a LocalCluster's workers are given this process's.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import polars as pl

from tasks import panel_pipeline, panel_stages
from tasks.config import FanOutConfig, ForecastConfig, PanelBacktestConfig
from tasks.data.panel_encode import EncodedPanelData
from tasks.data.panel_ingest import PanelTables
from tasks.data.spec import PanelSpec
from tasks.evaluate.panel_backtest import PanelBacktest
from tasks.forecast.panel_draws import PanelForecastArrays
from tasks.model.panel_state import FittedPanel

log = logging.getLogger(__name__)


def _runner(fan_out: FanOutConfig):
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as err:  # pragma: no cover - the extra is part of the test install
        raise RuntimeError("the Dask engine needs the `dask` extra: pip install 'bhm-forecast[dask]'") from err
    if fan_out.dask_address is not None:
        return DaskTaskRunner(address=fan_out.dask_address)
    return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(fan_out.dask_workers))


def local_cluster_kwargs(workers: int) -> dict:
    """A LocalCluster of ``workers`` single-threaded processes that report to this process's Prefect API (else
    each worker would start a temporary Prefect server of its own), quiet unless something goes wrong."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # the server's address, also a temporary server's
        api_url = str(client.api_url)
    env = {"DASK_LOGGING__DISTRIBUTED": "warning", "PREFECT_API_URL": api_url}
    return {"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None, "env": env}


def forecast(
    fitted: FittedPanel,
    tables: PanelTables,
    encoded: EncodedPanelData,
    config: ForecastConfig,
    fan_out: FanOutConfig,
    key: jax.Array,
    workdir: Path,
) -> tuple[pl.DataFrame, PanelForecastArrays]:
    job = Path(workdir)
    aggregates = panel_pipeline.aggregate_levels(tables, encoded)
    plan = panel_stages.write_forecast_job(job, fitted, encoded, aggregates, config, key, fan_out.series_per_partition)
    try:
        what = f"{plan.n_partitions} partitions of at most {plan.chunks_per_partition * plan.chunk} series"
        calls = [{"job": job, "partition": p} for p in range(plan.n_partitions)]
        parts = _run_tasks(fan_out, panel_stages.forecast_partition, calls, what)
        return panel_stages.combine_partitions(parts, fitted, tables, encoded, aggregates, config)
    finally:
        shutil.rmtree(job, ignore_errors=True)


def backtest(
    spec: PanelSpec, origins: list[dt.date], horizon: int, config: PanelBacktestConfig, workdir: Path
) -> tuple[PanelBacktest, ...]:
    workdir.mkdir(parents=True)
    try:
        calls = [
            {"spec": spec, "origin": origin, "horizon": horizon, "config": config, "index": i, "out": workdir / f"origin-{i}.parquet"}
            for i, origin in enumerate(origins)
        ]
        done = _run_tasks(config.fan_out, panel_stages.backtest_to_file, calls, f"{len(origins)} backtest origins")
        return tuple(origin.backtest() for origin in done)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_tasks(fan_out: FanOutConfig, task: Any, calls: list[dict[str, Any]], what: str) -> list:
    """``task`` once per call's parameters, each a Prefect task on the cluster (retried on failure); the results
    in the calls' order."""
    retried = task.with_options(retries=fan_out.partition_retries, retry_delay_seconds=1)
    started = time.perf_counter()
    log.info("running %s on Dask (%s)", what, fan_out.dask_address or f"a LocalCluster of {fan_out.dask_workers} workers")
    with _runner(fan_out) as runner:
        futures = [runner.submit(retried, call) for call in calls]
        results = [future.result() for future in futures]
    log.info("%s done on Dask in %.1fs (the cluster's start included)", what, time.perf_counter() - started)
    return results
