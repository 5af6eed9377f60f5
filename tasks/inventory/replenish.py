"""Orders of every series in a future table, from the panel model's joint draws: the forecast runs in chunks
of series, and each chunk's draws [D, s, T] are turned into that chunk's orders at once, so memory stays at
one chunk's draws whatever the number of series. Pure: no Prefect, no MLflow."""

from __future__ import annotations

import jax
import numpy as np
import polars as pl

from tasks import names as n
from tasks.config import ForecastConfig
from tasks.data.panel_encode import EncodedPanelData
from tasks.data.panel_ingest import PanelTables
from tasks.inventory.orders import InventoryPolicy, Orders, plan_orders
from tasks.model.panel_state import FittedPanel
from tasks.panel_pipeline import forecast_encoded

# Figures of each order row, in the orders file's column order.
_FIGURES = (
    (n.INVENTORY_POSITION, "inventory_position"),
    (n.EXPECTED_DEMAND, "expected_demand"),
    (n.EXPECTED_COST, "expected_cost"),
    (n.FILL_RATE, "fill_rate"),
    (n.STOCKOUT_PROBABILITY, "stockout_probability"),
    (n.CYCLE_SERVICE, "cycle_service"),
    (n.EXPECTED_LEFTOVER, "expected_leftover"),
    (n.CRITICAL_RATIO, "critical_ratio"),
)


def series_to_order(tables: PanelTables, encoded: EncodedPanelData) -> tuple[np.ndarray, list[tuple]]:
    """Positions (in the model's series order) of the series the future table asks for, and their input keys
    (store, product or None)."""
    encoding = encoded.encoding
    present = encoded.future.present.any(axis=1)
    positions = np.flatnonzero(present)
    keys = []
    for position in positions:
        store_code, product_code = encoding.series[position]
        product = encoding.product_keys[product_code] if tables.spec.sales.product is not None else None
        keys.append((encoding.store_keys[store_code], product))
    return positions, keys


class _OrderCollector:
    """The forecast's ``on_draws``: plans the orders of each chunk's series to order, keeps their rows."""

    def __init__(self, positions: np.ndarray, policy: InventoryPolicy, n_series: int) -> None:
        self.policy_row = np.full(n_series, -1, np.int64)  # model series -> its policy row (-1: not ordered)
        self.policy_row[positions] = np.arange(positions.size)
        self.policy = policy
        self.parts: list[dict[str, np.ndarray]] = []

    def __call__(self, rows: np.ndarray, draws: np.ndarray) -> None:
        mine = self.policy_row[rows]
        local = np.flatnonzero(mine >= 0)
        if local.size == 0:
            return
        mine = mine[local]
        sub = self.policy.select(mine)
        for orders in plan_orders(draws[:, local].astype(np.float64), sub):
            self.parts.append(_rows(orders, mine, sub))

    def columns(self) -> dict[str, np.ndarray]:
        if not self.parts:
            integer = {"series", "period", "lead_time", "packs"}
            return {name: np.zeros(0, np.int64 if name in integer else np.float64) for name in _rows_names()}
        return {name: np.concatenate([p[name] for p in self.parts]) for name in self.parts[0]}


def _rows_names() -> tuple[str, ...]:
    return ("series", "period", "lead_time", "packs", "pack_size", "quantity", *(attr for _, attr in _FIGURES))


def _rows(orders: Orders, series: np.ndarray, policy: InventoryPolicy) -> dict[str, np.ndarray]:
    on = orders.ordering
    return {
        "series": series[on],
        "period": np.full(int(on.sum()), orders.period),
        "lead_time": policy.lead_time[on].astype(np.int64),
        "packs": orders.packs[on],
        "pack_size": policy.pack_size[on],
        "quantity": orders.quantity[on],
        **{attr: getattr(orders, attr)[on] for _, attr in _FIGURES},
    }


def replenish_encoded(
    fitted: FittedPanel,
    encoded: EncodedPanelData,
    positions: np.ndarray,
    policy: InventoryPolicy,
    config: ForecastConfig,
    key: jax.Array,
) -> dict[str, np.ndarray]:
    """The planned orders of the series at ``positions`` (policy rows in the same order), as columns: series
    (index into ``positions``), period (forecast period index), lead_time, packs, pack_size, quantity, figures."""
    if policy.n_series != positions.size:
        raise ValueError(f"the policy holds {policy.n_series} series, {positions.size} are to be ordered")
    collector = _OrderCollector(positions, policy, encoded.encoding.n_series)
    forecast_encoded(fitted, encoded, (), config, key, on_draws=collector)
    return collector.columns()


def orders_frame(spec, keys: list[tuple], periods: np.ndarray, columns: dict[str, np.ndarray], model_version: str) -> pl.DataFrame:
    """The orders file: one row per series and order day, keyed by the input's key column names, sorted by
    order day then keys; ``place_now`` marks the orders of the first forecast period (the ones to send)."""
    dtype = pl.Int64 if spec.key_type == "int" else pl.String
    series, period = columns["series"], columns["period"]
    days = periods.astype("datetime64[D]")
    data = {spec.sales.store: pl.Series([keys[i][0] for i in series], dtype=dtype)}
    if spec.sales.product is not None:
        data[spec.sales.product] = pl.Series([keys[i][1] for i in series], dtype=dtype)
    step = (days[1] - days[0]) if len(days) > 1 else np.timedelta64(spec.period_days, "D")
    data |= {
        n.ORDER_PERIOD: pl.Series(days[period], dtype=pl.Date),
        n.ARRIVAL_PERIOD: pl.Series(days[0] + (period + columns["lead_time"]) * step, dtype=pl.Date),
        n.PLACE_NOW: pl.Series(period == 0, dtype=pl.Boolean),
        n.PACKS: pl.Series(columns["packs"], dtype=pl.Int64),
        n.PACK_SIZE: pl.Series(columns["pack_size"], dtype=pl.Float64),
        n.ORDER_QUANTITY: pl.Series(columns["quantity"], dtype=pl.Float64),
    }
    for column, attr in _FIGURES:
        data[column] = pl.Series(columns[attr], dtype=pl.Float64)
    frame = pl.DataFrame(data).with_columns(pl.lit(model_version).alias(n.MODEL_VERSION))
    return frame.sort([n.ORDER_PERIOD, *spec.key_columns])


def summary(frame: pl.DataFrame) -> dict[str, float]:
    """Figures of the orders to place now: count, units, expected cost, fill rate and service level."""
    now = frame.filter(pl.col(n.PLACE_NOW))
    if now.is_empty():
        return {"orders_series": 0.0}
    demand = float(now[n.EXPECTED_DEMAND].sum())
    served = float((now[n.FILL_RATE] * now[n.EXPECTED_DEMAND]).sum())
    return {
        "orders_series": float(now.height),
        "orders_nonzero": float((now[n.PACKS] > 0).sum()),
        "orders_units": float(now[n.ORDER_QUANTITY].sum()),
        "orders_expected_cost": float(now[n.EXPECTED_COST].sum()),
        "orders_fill_rate": served / demand if demand > 0 else 1.0,
        "orders_cycle_service": float(now[n.CYCLE_SERVICE].mean()),
        "orders_no_stockout": float(1.0 - now[n.STOCKOUT_PROBABILITY].mean()),
        "orders_critical_ratio": float(now[n.CRITICAL_RATIO].mean()),
    }
