"""Where a panel forecast's partitions of series run.

One function per engine, the same signature: ``forecast(fitted, tables, encoded, config, fan_out, key,
workdir)`` returns the forecast frame and arrays. In this process (the default, no extra dependency) the
partitions run one after the other in the forecast task; on Dask (``flows/engines/dask``, the ``dask``
extra) each runs as a Prefect task on a DaskTaskRunner and writes its own file under ``workdir``. The
partitions are cut the same way (``FanOutConfig.series_per_partition``), so both give the same numbers.
"""

from __future__ import annotations

from pathlib import Path

import jax
import polars as pl

from tasks import panel_stages
from tasks.config import FanOutConfig, ForecastConfig
from tasks.data.panel_encode import EncodedPanelData
from tasks.data.panel_ingest import PanelTables
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
