"""A simulated store x product panel with known truth, in the generic contract's files.

Stores sit in regions, products in departments; each series' log mean is a sum of a store effect, a
region effect, a department effect, a product effect, the department's yearly profile, a price
elasticity (per product, around its department's) times the log relative price, and a promotion lift;
counts are negative binomial. With ``stockout_share`` > 0, each period's stock is drawn from the
series' own demand law (a random quantile, independent of the period's demand), sales are
min(demand, stock) and a ``stockout`` flag marks the periods that sold out (about that share), so
that the history's sales are censored demand; the horizon's truth stays the demand. Tests check that the fitted model's intervals hold these truths, and
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
from tasks.data.panel_ingest import CENSORED, PanelTables
from tasks.data.spec import BUILTIN_SPECS, PanelSpec, dump_spec, parse_spec

DEFAULT_START = dt.date(2022, 1, 6)  # a Thursday: every period starts on one

DEMO_SPEC = BUILTIN_SPECS["panel_demo"]
STOCKOUT = "stockout"  # the sales table's stock-out flag, when the demo censors demand


@dataclass(frozen=True)
class PanelTruth:
    store_effect: np.ndarray  # [n_stores] store + region effect on the log level, centred
    department_effect: np.ndarray  # [n_departments], centred
    product_effect: np.ndarray  # [n_products] product + department effect, centred
    elasticity: np.ndarray  # [n_products]
    department_elasticity: np.ndarray  # [n_departments]
    promo_lift: np.ndarray  # [n_departments]
    concentration: float | np.ndarray  # [n_stores, n_products, n_weeks + horizon] with a promo_concentration
    future_mean: np.ndarray  # [n_stores, n_products, horizon] the true mean of the horizon's periods
    history_mean: np.ndarray | None = None  # [n_stores, n_products, n_weeks] the true mean demand of the history


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
        if STOCKOUT in sales.columns:
            sales = sales.with_columns((pl.col(STOCKOUT) == 1).alias(CENSORED)).drop(STOCKOUT)
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

    def shelves(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The inventory at the origin (about a week of demand on the shelf, packs of 6 or 12 by department,
        the first forecast week's shelf price, a unit cost of 60% of it) and the open orders (every third
        series has a pack arriving in the second forecast week): the spec's inventory section's files."""
        first = self.future.filter(pl.col("week") == pl.col("week").min()).sort("store_id", "item_id")
        stores = {k: i for i, k in enumerate(self.stores["store_id"].to_list())}
        items = {k: i for i, k in enumerate(self.products["item_id"].to_list())}
        week_one = self.truth.future_mean[:, :, 0]
        mean = np.array([week_one[stores[s], items[p]] for s, p in first.select("store_id", "item_id").iter_rows()])
        department = dict(self.products.select("item_id", "department").iter_rows())
        pack = np.array([6.0 if department[p] == "D1" else 12.0 for p in first["item_id"].to_list()])
        inventory = first.select(
            "store_id",
            "item_id",
            pl.Series("on_hand", np.floor(mean)),
            pl.Series("pack_size", pack),
            pl.col("price").round(2),
            (0.6 * pl.col("price")).round(2).alias("unit_cost"),
        )
        second = self.future["week"].unique().sort()[min(1, self.future["week"].n_unique() - 1)]
        open_orders = (
            inventory.gather_every(3)
            .select("store_id", "item_id", pl.lit(second).alias("week"), pl.col("pack_size").alias("units"))
        )
        return inventory, open_orders

    def write(self, folder: str | Path) -> dict[str, Path]:
        """sales.csv, stores.csv, products.csv, future.csv, truth.csv, inventory.csv, open_orders.csv and
        spec.yaml in ``folder``."""
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
        paths["inventory"], paths["open_orders"] = folder / "inventory.csv", folder / "open_orders.csv"
        inventory, open_orders = self.shelves()
        inventory.write_csv(paths["inventory"])
        open_orders.write_csv(paths["open_orders"])
        paths["spec"].write_text(DEMO_SPEC if self.spec.sales.stockout is None else dump_spec(self.spec))
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
    stockout_share: float = 0.0,
    concentration: float = 15.0,
    promo_concentration: float | None = None,
    store_drift: float = 0.0,
    chain_growth: float = 0.0,
    lift_drift: float = 0.0,
    store_shock: float = 0.0,
    series_drift: float = 0.0,
) -> PanelDemo:
    """``promo_concentration``: the NB concentration of promotion weeks (default ``concentration``): lower
    makes a promotion's sales noisier than a regular week's. ``store_drift``: the sd of a step, every 13 weeks,
    of a walk of each store's level that all its products share (0: none). ``chain_growth``: a steady growth of
    every series, in log per year (0.1: about 10% a year). ``lift_drift``: a steady change of every promotion's
    lift, in log per year, that the horizon continues. ``store_shock``: the sd of a shock of each store and week (in
    log) that all its products share, the store's traffic that week (0: none). ``series_drift``: the sd of a step,
    every 13 weeks, of a walk of each series' own level (0: none)."""
    if min(n_stores, n_regions, n_departments, products_per_department, n_weeks, horizon) < 1:
        raise ValueError("every count of the panel demo must be >= 1")
    if concentration <= 0 or (promo_concentration is not None and promo_concentration <= 0):
        raise ValueError(f"concentrations must be > 0, got {concentration!r} and {promo_concentration!r}")
    if min(store_drift, store_shock, series_drift) < 0:
        raise ValueError(f"store_drift, store_shock and series_drift must be >= 0, got {store_drift!r}, {store_shock!r} and {series_drift!r}")
    if not 0.0 <= stockout_share < 0.5:
        raise ValueError(f"stockout_share must lie in [0, 0.5), got {stockout_share!r}")
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
    if store_drift > 0:
        # A stream of its own, so that the demo without drift draws exactly what it always did.
        steps = np.random.default_rng([seed, 2]).normal(0.0, store_drift, (n_stores, n_total // 13 + 1))
        steps[:, 0] = 0.0
        log_mu = log_mu + np.cumsum(steps, axis=1)[:, np.arange(n_total) // 13][:, None, :]
    if series_drift > 0:
        steps = np.random.default_rng([seed, 4]).normal(0.0, series_drift, (n_stores, n_products, n_total // 13 + 1))
        steps[..., 0] = 0.0
        log_mu = log_mu + np.cumsum(steps, axis=2)[..., np.arange(n_total) // 13]
    if store_shock > 0:
        log_mu = log_mu + np.random.default_rng([seed, 3]).normal(0.0, store_shock, (n_stores, 1, n_total))
    log_mu = log_mu + chain_growth * np.arange(n_total) / 52.0
    log_mu = log_mu + lift_drift * (np.arange(n_total) - n_weeks) / 52.0 * promo
    mu = np.exp(log_mu)
    if promo_concentration is not None:
        concentration = np.where(promo, promo_concentration, concentration)
    units = rng.negative_binomial(concentration, concentration / (concentration + mu))
    stocked_out = np.zeros(units.shape, bool)
    if stockout_share > 0:
        # A stream of its own, so that the demo without stock-outs draws exactly what it always did.
        stock_rng = np.random.default_rng([seed, 1])
        level = stock_rng.uniform(1.0 - 2.0 * stockout_share, 1.0, units.shape)
        stock = _nb_quantile(level, mu, concentration)
        stocked_out = (units >= stock) & (np.arange(n_weeks + horizon) < n_weeks)  # the horizon keeps its demand
        units = np.where(stocked_out, stock, units)

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
            **({STOCKOUT: stocked_out.ravel().astype(np.int8)} if stockout_share > 0 else {}),
            "_t": t_grid.ravel(),
        }
    )
    history = frame.filter(pl.col("_t") < n_weeks)
    keep = rng.random(history.height) >= missing_share  # absent rows: missing weeks
    sales = history.filter(pl.Series(keep)).drop("_t")
    horizon_rows = frame.filter(pl.col("_t") >= n_weeks).drop("_t", *([STOCKOUT] if stockout_share > 0 else []))
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
        history_mean=mu[..., :n_weeks],
    )
    spec = parse_spec(DEMO_SPEC, "panel demo spec")
    if stockout_share > 0:
        spec = spec.model_copy(update={"sales": spec.sales.model_copy(update={"stockout": STOCKOUT})})
    return PanelDemo(
        spec=spec,
        sales=sales,
        future=horizon_rows.drop("units"),
        stores=stores,
        products=products,
        truth_future=horizon_rows,
        truth=truth,
    )


def _nb_quantile(level: np.ndarray, mu: np.ndarray, concentration: float) -> np.ndarray:
    """The smallest k with P(Y <= k) >= level, for Y ~ NB(mu, concentration), element by element: the
    pmf's recurrence, summed until every level is reached."""
    p = mu / (mu + concentration)
    pmf = (1.0 - p) ** concentration
    cdf = pmf.copy()
    quantile = np.zeros(mu.shape, np.int64)
    k = 0
    while True:
        below = cdf < level
        if not below.any():
            return quantile
        pmf = pmf * (k + concentration) / (k + 1) * p
        k += 1
        cdf = cdf + pmf
        quantile = np.where(below, k, quantile)
