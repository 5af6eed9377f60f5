"""A simulated store x product panel with known truth, in the generic contract's files.

Stores sit in regions, products in departments; each series' log mean is a sum of a store effect, a
region effect, a department effect, a product effect, the department's yearly profile, a price
elasticity (per product, around its department's) times the log relative price, and a promotion lift;
counts are negative binomial. Tests check that the fitted model's intervals hold these truths, and
``bhm demo --shape panel`` writes the files with their spec so that a person can run the generic path.

Deterministic given the seed: one explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from tasks import names as n
from tasks.data.panel_ingest import PanelTables
from tasks.data.spec import BUILTIN_SPECS, PanelSpec, parse_spec

DEFAULT_START = dt.date(2022, 1, 6)  # a Thursday: every period starts on one

DEMO_SPEC = BUILTIN_SPECS["panel_demo"]


@dataclass(frozen=True)
class PanelTruth:
    store_effect: np.ndarray  # [n_stores] store + region effect on the log level, centred
    department_effect: np.ndarray  # [n_departments], centred
    product_effect: np.ndarray  # [n_products] product + department effect, centred
    elasticity: np.ndarray  # [n_products]
    department_elasticity: np.ndarray  # [n_departments]
    promo_lift: np.ndarray  # [n_departments]
    concentration: float
    future_mean: np.ndarray  # [n_stores, n_products, horizon] the true mean of the horizon's periods


@dataclass(frozen=True)
class PanelDemo:
    spec: PanelSpec
    sales: pl.DataFrame  # input column names (the spec's)
    future: pl.DataFrame
    stores: pl.DataFrame
    products: pl.DataFrame
    truth_future: pl.DataFrame  # the horizon's drawn demand, the sales table's columns
    truth: PanelTruth

    def tables(self) -> PanelTables:
        """The canonical validated tables, as ``tasks.data.panel_ingest.read_panel`` returns them."""
        rename = {"store_id": n.SERIES_STORE, "item_id": n.SERIES_PRODUCT, "week": n.PERIOD}
        sales = self.sales.rename({**rename, "units": n.TARGET}).with_columns(
            pl.col(n.TARGET).cast(pl.Float64), pl.col("price").cast(pl.Float64), pl.col("promo").cast(pl.Float64)
        )
        future = self.future.rename(rename).with_columns(pl.col("price").cast(pl.Float64), pl.col("promo").cast(pl.Float64))
        stores = self.stores.rename({"store_id": n.SERIES_STORE}).with_columns(pl.col("size").cast(pl.Float64))
        products = self.products.rename({"item_id": n.SERIES_PRODUCT})
        row = pl.int_range(1, pl.len() + 1).alias(n.ROW)
        return PanelTables(
            spec=self.spec,
            sales=sales.with_columns(row).sort([n.SERIES_STORE, n.SERIES_PRODUCT, n.PERIOD]),
            stores=stores.with_columns(row),
            products=products.with_columns(row),
            future=future.with_columns(row).sort([n.SERIES_STORE, n.SERIES_PRODUCT, n.PERIOD]),
            paths={"sales": "sales.csv", "stores": "stores.csv", "products": "products.csv", "future": "future.csv"},
        )

    def write(self, folder: str | Path) -> dict[str, Path]:
        """sales.csv, stores.csv, products.csv, future.csv, truth.csv and spec.yaml in ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {
            "sales": folder / "sales.csv",
            "stores": folder / "stores.csv",
            "products": folder / "products.csv",
            "future": folder / "future.csv",
            "truth": folder / "truth.csv",
            "spec": folder / "spec.yaml",
        }
        self.sales.write_csv(paths["sales"])
        self.stores.write_csv(paths["stores"])
        self.products.write_csv(paths["products"])
        self.future.write_csv(paths["future"])
        self.truth_future.write_csv(paths["truth"])
        paths["spec"].write_text(DEMO_SPEC)
        return paths


def generate_panel_demo(
    seed: int = 0,
    n_stores: int = 12,
    n_regions: int = 3,
    n_departments: int = 3,
    products_per_department: int = 4,
    n_weeks: int = 104,
    horizon: int = 13,
    start: dt.date = DEFAULT_START,
    missing_share: float = 0.03,
) -> PanelDemo:
    if min(n_stores, n_regions, n_departments, products_per_department, n_weeks, horizon) < 1:
        raise ValueError("every count of the panel demo must be >= 1")
    rng = np.random.default_rng(seed)
    n_products = n_departments * products_per_department
    region = np.arange(n_stores) % n_regions
    department = np.repeat(np.arange(n_departments), products_per_department)
    size = rng.uniform(1_000, 5_000, n_stores).round()

    region_effect = rng.normal(0.0, 0.3, n_regions)
    store_effect = region_effect[region] + rng.normal(0.0, 0.25, n_stores) + 0.3 * (np.log(size) - np.log(size).mean())
    store_effect -= store_effect.mean()
    department_effect = rng.normal(0.0, 0.6, n_departments)
    department_effect -= department_effect.mean()
    product_effect = department_effect[department] + rng.normal(0.0, 0.3, n_products)
    product_effect -= product_effect.mean()
    department_elasticity = rng.uniform(-2.5, -1.0, n_departments)
    elasticity = department_elasticity[department] + rng.normal(0.0, 0.25, n_products)
    promo_lift = rng.uniform(0.15, 0.4, n_departments)
    season_amplitude = rng.uniform(0.1, 0.3, n_departments)
    season_phase = rng.uniform(0, 2 * np.pi, n_departments)
    concentration = 15.0
    base = np.log(20.0)

    n_total = n_weeks + horizon
    weeks = np.datetime64(start, "D") + 7 * np.arange(n_total)
    day_of_year = (weeks - weeks.astype("datetime64[Y]")).astype(np.float64)
    season = season_amplitude[:, None] * np.sin(2 * np.pi * day_of_year[None, :] / 365.25 + season_phase[:, None])  # [D, T]

    list_price = rng.uniform(2.0, 8.0, n_products)
    # Prices: the list price, discounted 10-30% on promotion weeks, with store-specific noise.
    promo = rng.random((n_stores, n_products, n_total)) < 0.15
    discount = np.where(promo, rng.uniform(0.1, 0.3, promo.shape), 0.0)
    price = list_price[None, :, None] * (1.0 - discount) * np.exp(rng.normal(0.0, 0.05, promo.shape))
    log_relative_price = np.log(price) - np.log(np.median(price[..., :n_weeks], axis=(0, 2)))[None, :, None]
    series_noise = rng.normal(0.0, 0.1, (n_stores, n_products))
    log_mu = (
        base
        + store_effect[:, None, None]
        + product_effect[None, :, None]
        + series_noise[..., None]
        + season[department][None, :, :]
        + elasticity[None, :, None] * log_relative_price
        + promo_lift[department][None, :, None] * promo
    )
    mu = np.exp(log_mu)
    units = rng.negative_binomial(concentration, concentration / (concentration + mu))

    store_ids = np.arange(1, n_stores + 1)
    item_ids = np.arange(101, 101 + n_products)
    s_grid, p_grid, t_grid = np.meshgrid(np.arange(n_stores), np.arange(n_products), np.arange(n_total), indexing="ij")
    frame = pl.DataFrame(
        {
            "store_id": store_ids[s_grid.ravel()],
            "item_id": item_ids[p_grid.ravel()],
            "week": weeks[t_grid.ravel()],
            "units": units.ravel(),
            "price": np.round(price.ravel(), 4),
            "promo": promo.ravel().astype(np.int8),
            "_t": t_grid.ravel(),
        }
    )
    history = frame.filter(pl.col("_t") < n_weeks)
    keep = rng.random(history.height) >= missing_share  # absent rows: missing weeks
    sales = history.filter(pl.Series(keep)).drop("_t")
    horizon_rows = frame.filter(pl.col("_t") >= n_weeks).drop("_t")
    stores = pl.DataFrame({"store_id": store_ids, "region": [f"R{r + 1}" for r in region], "size": size})
    products = pl.DataFrame({"item_id": item_ids, "department": [f"D{d + 1}" for d in department]})
    truth = PanelTruth(
        store_effect=store_effect,
        department_effect=department_effect,
        product_effect=product_effect,
        elasticity=elasticity,
        department_elasticity=department_elasticity,
        promo_lift=promo_lift,
        concentration=concentration,
        future_mean=mu[..., n_weeks:],
    )
    return PanelDemo(
        spec=parse_spec(DEMO_SPEC, "panel demo spec"),
        sales=sales,
        future=horizon_rows.drop("units"),
        stores=stores,
        products=products,
        truth_future=horizon_rows,
        truth=truth,
    )
