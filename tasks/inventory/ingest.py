"""Read and validate the inventory of ``bhm replenish``: the spec's inventory file (stock and ordering rules
per series) and its optional open-orders file, into an ``InventoryPolicy`` aligned with the series to order.

Every broken rule of both files is reported at once, naming the file, column, rule and rows, as the
sales files' validation does (``tasks.data.panel_rules``): a setting out of its bounds (negative stock, a
pack of 0, a lead time that is not a whole number), a blank, a series listed twice, a series of the future
table with no inventory row, a lead time plus review period longer than the forecast horizon, an open
order arriving before the first forecast period or off the period grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from tasks.data import panel_rules as r
from tasks.data.panel_ingest import read_raw, validate_file
from tasks.data.panel_rules import ColumnPlan, FileCheck, Kind
from tasks.data.spec import INVENTORY_BOUNDS, InventoryTable, PanelSpec, SpecError
from tasks.data.validate import (
    InputValidationError,
    RuleFailure,
    ValidationReport,
    _describe_rows,
    _failure_from_rows,
)
from tasks.inventory.orders import InventoryPolicy
from tasks.names import FileRole

RULE_LISTED = "every series of the future table has an inventory row"
RULE_WITHIN_HORIZON = "lead time + review period within the forecast horizon"
RULE_MARGIN = "price > unit_cost (a lost sale costs the margin)"
RULE_ARRIVAL_AHEAD = "arrives in a forecast period (on or after the first; earlier arrivals belong in on_hand)"
RULE_ARRIVAL_GRID = "arrival period on the forecast's period grid"
RULE_QUANTITY = "quantity >= 0"


@dataclass(frozen=True)
class InventoryInputs:
    """The ordering policy of each series to order (in the order asked for) and the files it came from."""

    policy: InventoryPolicy
    paths: dict[str, str]
    n_open_orders_after_horizon: int = 0


def _setting_check(name: str, column: str):
    bound = INVENTORY_BOUNDS[name]
    ok = pl.col(column) >= bound.low if bound.inclusive else pl.col(column) > bound.low
    if bound.whole:
        ok = ok & (pl.col(column) == pl.col(column).floor())
    return r.value_check(f"{name} {bound.rule}", ok)


def _plans(spec: PanelSpec, table: InventoryTable) -> list[ColumnPlan]:
    plans = [ColumnPlan(key, r.key_kind(spec)) for key in spec.key_columns]
    seen: dict[str, ColumnPlan] = {}
    for name, setting in table.settings().items():
        if isinstance(setting, str):
            check = _setting_check(name, setting)
            if setting in seen:  # one column serving two settings gets both checks
                seen[setting] = ColumnPlan(setting, Kind.NUMBER, checks=seen[setting].checks + (check,))
            else:
                seen[setting] = ColumnPlan(setting, Kind.NUMBER, checks=(check,))
    return plans + list(seen.values())


def _read(path: str, role: FileRole, plans: list[ColumnPlan]) -> FileCheck:
    """The file read and checked column by column as the sales files are (``tasks.data.panel_ingest``)."""
    check = FileCheck(role, path)
    raw, check.failures = read_raw(path, role)
    if raw is not None:
        validate_file(check, raw, plans)
    return check


def _value(setting: str | float) -> pl.Expr:
    return pl.col(setting) if isinstance(setting, str) else pl.lit(float(setting))


def _costs(table: InventoryTable) -> tuple[pl.Expr, pl.Expr]:
    if table.lost_sale_cost is not None:
        return _value(table.lost_sale_cost), _value(table.leftover_cost)
    price, unit_cost = _value(table.price), _value(table.unit_cost)
    return price - unit_cost, unit_cost * _value(table.holding_rate)


def _key_frame(spec: PanelSpec, series: list[tuple]) -> pl.DataFrame:
    """The series to order, as a frame of the inventory file's key columns plus their position."""
    columns = {spec.sales.store: [s[0] for s in series]}
    if spec.sales.product is not None:
        columns[spec.sales.product] = [s[1] for s in series]
    dtype = pl.Int64 if spec.key_type == "int" else pl.String
    return pl.DataFrame({k: pl.Series(v, dtype=dtype) for k, v in columns.items()}).with_row_index("_position")


def read_inventory(spec: PanelSpec, data_dir: str | Path, series: list[tuple], periods: np.ndarray) -> InventoryInputs:
    """The policy of each series in ``series`` ((store key, product key or None) in input key values) over the
    forecast ``periods`` (datetime64[D], the future table's, in order).

    Raises ``SpecError`` when the spec has no inventory or its file is missing, and
    ``InputValidationError`` listing every broken rule of the inventory files.
    """
    table = spec.inventory
    if table is None:
        raise SpecError(f"spec {spec.name!r} has no inventory section: bhm replenish needs one (README: Orders)")
    data_dir = Path(data_dir)
    paths = {FileRole.INVENTORY: data_dir / table.file}
    if table.open_orders is not None:
        paths[FileRole.OPEN_ORDERS] = data_dir / table.open_orders.file
    for role, path in paths.items():
        if not path.is_file():
            raise SpecError(f"spec {spec.name!r}: {role.value} file not found: {path}")
    keys = list(spec.key_columns)
    inventory = _read(str(paths[FileRole.INVENTORY]), FileRole.INVENTORY, _plans(spec, table))
    checks = [inventory]
    wanted = _key_frame(spec, series)
    horizon = len(periods)
    if inventory.frame is not None:
        frame, path = inventory.frame, str(paths[FileRole.INVENTORY])
        inventory.failures += r.duplicate_failures(frame, keys, r.RULE_UNIQUE_KEY, FileRole.INVENTORY, path)
        if table.price is not None:
            thin = frame.filter(~(_value(table.price) > _value(table.unit_cost)).fill_null(True))
            if not thin.is_empty():
                inventory.failures.append(_failure_from_rows(
                    thin, path=path, role=FileRole.INVENTORY, column=f"{table.price}, {table.unit_cost}", rule=RULE_MARGIN,
                    example=_describe_rows(keys),
                ))
        unlisted = wanted.join(frame.select(keys), on=keys, how="anti")
        if not unlisted.is_empty():
            example = pl.concat_str([pl.lit(f"{k}=") + pl.col(k).cast(pl.String) for k in keys], separator=" ")
            inventory.failures.append(RuleFailure(
                path, FileRole.INVENTORY, ", ".join(keys), RULE_LISTED, unlisted.height,
                tuple(unlisted.select(example.alias("e"))["e"].head(5).to_list()), (),
            ))
        reach = _value(table.lead_time) + _value(table.review_period)
        long = frame.join(wanted.select(keys), on=keys, how="semi").filter((reach > horizon).fill_null(False))
        if not long.is_empty():
            inventory.failures.append(_failure_from_rows(
                long, path=path, role=FileRole.INVENTORY, column="lead_time + review_period",
                rule=f"{RULE_WITHIN_HORIZON} ({horizon} periods)", example=_describe_rows(keys),
            ))
    arrivals = np.zeros((wanted.height, horizon))
    after_horizon = 0
    if table.open_orders is not None:
        open_table = table.open_orders
        plans = [ColumnPlan(key, r.key_kind(spec)) for key in keys] + [
            ColumnPlan(open_table.period, Kind.DATE),
            ColumnPlan(open_table.quantity, Kind.NUMBER, checks=(r.value_check(RULE_QUANTITY, pl.col(open_table.quantity) >= 0),)),
        ]
        opened = _read(str(paths[FileRole.OPEN_ORDERS]), FileRole.OPEN_ORDERS, plans)
        checks.append(opened)
        if opened.frame is not None and not opened.failures and horizon:
            arrivals, after_horizon = _arrivals(opened, open_table.period, open_table.quantity, keys, wanted, periods)
    failures = tuple(f for check in checks for f in check.failures)
    if failures:
        raise InputValidationError(ValidationReport(failures))

    frame = inventory.frame
    lost, leftover = _costs(table)
    values = wanted.join(
        frame.select(
            *keys,
            _value(table.on_hand).alias("on_hand"),
            _value(table.lead_time).alias("lead_time"),
            _value(table.review_period).alias("review_period"),
            _value(table.pack_size).alias("pack_size"),
            _value(table.min_order).alias("min_order"),
            lost.alias("lost_sale_cost"),
            leftover.alias("leftover_cost"),
        ),
        on=keys,
        how="left",
    ).sort("_position")
    policy = InventoryPolicy(
        **{name: values[name].to_numpy().astype(np.float64) for name in
           ("on_hand", "lead_time", "review_period", "pack_size", "min_order", "lost_sale_cost", "leftover_cost")},
        open_orders=arrivals,
    )
    return InventoryInputs(policy, {role.value: str(path) for role, path in paths.items()}, after_horizon)


def _arrivals(
    opened: FileCheck, period: str, quantity: str, keys: list[str], wanted: pl.DataFrame, periods: np.ndarray
) -> tuple[np.ndarray, int]:
    """Units arriving per series to order and forecast period; open orders of other series are ignored."""
    frame, path = opened.frame, opened.path
    step = int((periods[1] - periods[0]).astype(int)) if len(periods) > 1 else 1
    first = periods[0]
    offset = (frame[period].to_numpy().astype("datetime64[D]") - first).astype(np.int64)
    frame = frame.with_columns(pl.Series("_offset", offset))
    early = frame.filter(pl.col("_offset") < 0)
    if not early.is_empty():
        opened.failures.append(_failure_from_rows(
            early, path=path, role=FileRole.OPEN_ORDERS, column=period,
            rule=f"{RULE_ARRIVAL_AHEAD}, first forecast period {first}", example=pl.col(period).cast(pl.String),
        ))
    off_grid = frame.filter(pl.col("_offset") % step != 0)
    if not off_grid.is_empty():
        opened.failures.append(_failure_from_rows(
            off_grid, path=path, role=FileRole.OPEN_ORDERS, column=period, rule=f"{RULE_ARRIVAL_GRID} (every {step} days from {first})",
            example=pl.col(period).cast(pl.String),
        ))
    if opened.failures:
        return np.zeros((wanted.height, len(periods))), 0
    frame = frame.with_columns((pl.col("_offset") // step).alias("_t"))
    inside = frame.filter(pl.col("_t") < len(periods))
    placed = inside.join(wanted, on=keys, how="inner")
    arrivals = np.zeros((wanted.height, len(periods)))
    np.add.at(arrivals, (placed["_position"].to_numpy(), placed["_t"].to_numpy()), placed[quantity].to_numpy())
    return arrivals, frame.height - inside.height
