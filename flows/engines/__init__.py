"""Where a panel forecast's partitions of series, and a panel backtest's origins, run.

Two functions per engine, the same signatures: ``forecast(fitted, tables, encoded, config, fan_out, key,
workdir)`` returns the forecast frame and arrays; ``backtest(tables, origins, horizon, config, workdir)`` the
backtest of each origin (a fan-out's origins read the spec's files themselves). In this process (the default, no extra dependency) the partitions, or the origins,
run one after the other; on Dask (``flows/engines/dask``, the ``dask`` extra) each runs as a Prefect task on a
DaskTaskRunner and writes its own file under ``workdir``. Partitions are cut the same way
(``FanOutConfig.series_per_partition``) and each origin has its own key (``origin_key``), so both engines give
the same numbers.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import jax
import polars as pl

from tasks import panel_stages
from tasks.config import FanOutConfig, ForecastConfig, PanelBacktestConfig
from tasks.data.panel_encode import EncodedPanelData
from tasks.data.panel_ingest import PanelTables
from tasks.evaluate.panel_backtest import PanelBacktest
from tasks.forecast.panel_draws import PanelForecastArrays
from tasks.model.panel_state import FittedPanel


def forecast(
    fitted: FittedPanel,
    tables: PanelTables,
    encoded: EncodedPanelData,
    config: ForecastConfig,
    fan_out: FanOutConfig,
    key: jax.Array,
    workdir: Path,
) -> tuple[pl.DataFrame, PanelForecastArrays]:
    """The forecast frame and arrays, computed where ``fan_out`` says; ``workdir`` holds a fan-out's files."""
    if fan_out.engine == "dask":
        from flows.engines import dask

        return dask.forecast(fitted, tables, encoded, config, fan_out, key, workdir)
    return panel_stages.forecast(fitted, tables, encoded, config, key, fan_out.series_per_partition)


def backtest(
    tables: PanelTables, origins: list[dt.date], horizon: int, config: PanelBacktestConfig, workdir: Path
) -> tuple[PanelBacktest, ...]:
    """The backtest at each origin, run where ``config.fan_out`` says; ``workdir`` (not there yet) holds a
    fan-out's files."""
    if config.fan_out.engine == "dask":
        from flows.engines import dask

        return dask.backtest(tables.spec, origins, horizon, config, workdir)
    return tuple(panel_stages.backtest_at(tables, origin, horizon, config, i) for i, origin in enumerate(origins))
