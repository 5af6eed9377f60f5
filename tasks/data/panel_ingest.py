"""Read and validate the files a panel spec names, into canonical typed tables.

Pure: no Prefect, no MLflow. Every broken rule of every file is collected and reported at once, as
``tasks.data.validate`` does for the Rossmann files (``RuleFailure``: file, column, rule, row count,
examples, 1-based data rows); nothing is fitted or written when one fails.

The validated tables use the canonical names of ``tasks.names`` (``store``, ``product``, ``period``,
``target``, one column per covariate under its spec name), so that the encoder never sees a
retailer's own column names; ``PanelTables.spec`` maps them back for the forecast file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from tasks.data.spec import PanelSpec


@dataclass(frozen=True)
class PanelTables:
    """Validated tables of a panel spec.

    sales: ``store``, ``product`` (when the spec has a product key), ``period`` (Date), ``target``
        (Float64, null where masked: a negative target under ``negative_target: mask``), one Float64
        column per covariate of the spec (sales and calendar covariates, by their spec names; a price
        covariate holds the raw price, > 0), for a per-product price pattern also the pattern's
        column of every product (e.g. ``price1`` ... ``price11``, Float64, as the input names them),
        and ``row`` (1-based data row of the source file). Sorted by keys and period.
    future: the same columns less ``target``; None when no future file was given.
    stores: ``store``, one String column per store hierarchy level (spec names), one column per
        attribute (Float64 for numeric, String for category), ``row``. Every store of sales and future.
    products: the same for products; None when the spec has no product table.
    """

    spec: PanelSpec
    sales: pl.DataFrame
    stores: pl.DataFrame
    products: pl.DataFrame | None
    future: pl.DataFrame | None
    paths: dict[str, str]
    n_negative_masked: int = 0


def read_panel(spec: PanelSpec, data_dir: str | Path, future: str | Path | None = None) -> PanelTables:
    """Read and validate every file of ``spec`` under ``data_dir`` (and the future file, if given).

    Raises ``tasks.data.validate.InputValidationError`` listing every broken rule, or
    ``tasks.data.spec.SpecError`` when a file the spec names is missing.
    """
    raise NotImplementedError
