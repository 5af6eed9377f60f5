"""Replay a forecast horizon with the realised sales as demand: a policy orders, demand is served from stock.

Pure NumPy. The rules are those of ``tasks.inventory.orders`` (read its module docstring): per series, an
order placed at the start of period ``k`` arrives at the start of ``k + L`` (the lead time) and has to last
until the next order arrives, ``R`` periods later (the review period). Demand that finds the shelf empty is
lost, never back-ordered: sales are ``min(stock, demand)``.

Order days are periods 0, R, 2R, ... of the horizon while the order's protection interval ``k + L + R`` fits
in it. At each order day the policy sees the state before that period's arrivals (``ReplayState``: the
period, the stock on hand [S] and the pipeline of units arriving by period [S, H], that period's included,
the form ``orders.order_at`` takes) and returns the units to order [S].

What is counted (the measured window). The first order arrives at period L; the last one, placed at
``k_last``, lasts until ``end = k_last + L + R``. A *cycle* is the span from one order's arrival to the next
one's (R periods); the measured window is the cycles of the policy's orders, periods ``[L, end)``. Lost and
served units are counted there; the left-over is the stock on hand just before each of the policy's later
orders arrives and at ``end`` (where the next order would arrive): the stock each order's cycle leaves, the
quantity ``orders.py``'s objective charges. So every measured period's demand is met by the policy's own
orders (plus whatever its start stock left over), and

    total cost = lost_sale_cost * lost + leftover_cost * leftover,

per series, summed. Fill rate = served / demand; cycle service level = share of cycles without a lost sale.

Start state. The data sets have no stock records, so every series starts at its policy's own order-up-to
level for the first lead time, with nothing on order: the stock on hand at period 0 is what the policy
would hold to cover the periods ``[0, L)`` before its first order can arrive, at the same critical ratio
(``Policy.start_stock``: for the model, that quantile of its joint draws' lead-time sum; for an order-up-to
policy, its level over L periods), rounded up to whole packs. The same rule applies to every policy. The
periods ``[0, L)`` are a warm-up served from that stock and are not scored (their lost units are reported
as ``warmup_lost``); what the start stock leaves at period L is stock the first order counts on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tasks.inventory.orders import InventoryPolicy


@dataclass(frozen=True)
class ReplayState:
    """What a policy sees at an order day: before that period's arrivals and sales."""

    period: int
    rows: np.ndarray  # int [s]: the series that order at this period
    on_hand: np.ndarray  # [s] stock on hand at the start of ``period``
    arrivals: np.ndarray  # [s, H] units arriving by period (``period`` included), from orders already placed


OrderFunction = Callable[[ReplayState], np.ndarray]  # -> units to order [s], for ``state.rows``


@dataclass(frozen=True)
class ReplayResult:
    """Per series over the measured window (arrays [S]), and the cycles' stock-outs ([S, C], NaN past a series' cycles)."""

    demand: np.ndarray
    served: np.ndarray
    lost: np.ndarray
    leftover: np.ndarray  # summed over the cycles' ends
    cost: np.ndarray
    ordered: np.ndarray  # units ordered over the replay
    n_orders: np.ndarray  # orders placed with quantity > 0
    cycle_stockout: np.ndarray  # [S, C] 1.0 when the cycle lost a sale, 0.0 when not, NaN where no cycle
    warmup_lost: np.ndarray  # lost in [0, L), not scored
    start_stock: np.ndarray
    window: tuple[np.ndarray, np.ndarray]  # (first, end) period of each series' measured window

    @property
    def total_cost(self) -> float:
        return float(self.cost.sum())

    @property
    def fill_rate(self) -> float:
        total = float(self.demand.sum())
        return float(self.served.sum()) / total if total > 0 else 1.0

    @property
    def cycle_service_level(self) -> float:
        cycles = self.cycle_stockout[np.isfinite(self.cycle_stockout)]
        return float(1.0 - cycles.mean()) if cycles.size else 1.0


def order_days(n_periods: int, lead_time: np.ndarray, review_period: np.ndarray) -> np.ndarray:
    """bool [S, H]: the order days of each series, 0, R, 2R, ... while ``k + L + R <= n_periods``."""
    k = np.arange(n_periods)[None, :]
    lead, review = np.asarray(lead_time, int)[:, None], np.asarray(review_period, int)[:, None]
    return (k % review == 0) & (k + lead + review <= n_periods)


def replay(demand: np.ndarray, policy: InventoryPolicy, order: OrderFunction) -> ReplayResult:
    """Run ``order`` over the horizon of realised ``demand`` [S, H] from ``policy``'s start state.

    ``policy`` gives the rules per series (lead time, review period, costs; pack size and minimum order are the
    order function's to respect) and the start: ``on_hand`` at period 0 and ``open_orders`` [S, <=H] arriving
    by period. Quantities returned are used as they are (negative ones are an error).
    """
    demand = np.asarray(demand, np.float64)
    if demand.ndim != 2 or demand.shape[0] != policy.n_series:
        raise ValueError(f"demand must be [{policy.n_series} series, periods], got shape {demand.shape}")
    if not np.isfinite(demand).all() or (demand < 0).any():
        raise ValueError("demand must be finite and >= 0 (drop or fill the series with unknown periods first)")
    n_series, n_periods = demand.shape
    lead = policy.lead_time.astype(int)
    review = policy.review_period.astype(int)
    if (lead + review > n_periods).any():
        raise ValueError(f"lead time + review period exceed the {n_periods}-period horizon for some series")
    ordering = order_days(n_periods, lead, review)
    n_cycles = ordering.sum(axis=1)
    first, end = lead, (n_cycles - 1) * review + lead + review
    arrivals = np.zeros((n_series, n_periods))
    opened = np.asarray(policy.open_orders, np.float64)[:, :n_periods]
    arrivals[:, : opened.shape[1]] += opened
    # A later order's arrival (not the first one's) or the window's end closes a cycle: charge what is left.
    charge = np.zeros((n_series, n_periods + 1), bool)
    for s in range(n_series):
        days = np.flatnonzero(ordering[s])
        charge[s, days[1:] + lead[s]] = True
        charge[s, end[s]] = True

    stock = np.asarray(policy.on_hand, np.float64).copy()
    lost = np.zeros(n_series)
    served = np.zeros(n_series)
    wanted = np.zeros(n_series)
    leftover = np.zeros(n_series)
    warmup_lost = np.zeros(n_series)
    ordered = np.zeros(n_series)
    n_orders = np.zeros(n_series, np.int64)
    cycle_lost = np.zeros((n_series, max(int(n_cycles.max(initial=0)), 1)))
    for t in range(n_periods):
        rows = np.flatnonzero(ordering[:, t])
        if rows.size:
            quantity = np.asarray(order(ReplayState(t, rows, stock[rows].copy(), arrivals[rows].copy())), np.float64)
            if quantity.shape != rows.shape or not np.isfinite(quantity).all() or (quantity < 0).any():
                raise ValueError(f"period {t}: the policy must return {rows.size} finite quantities >= 0, got {quantity!r}")
            arrivals[rows, t + lead[rows]] += quantity
            ordered[rows] += quantity
            n_orders[rows] += quantity > 0
        leftover += np.where(charge[:, t], stock, 0.0)
        stock = stock + arrivals[:, t]
        sold = np.minimum(stock, demand[:, t])
        missed = demand[:, t] - sold
        stock -= sold
        scored = (t >= first) & (t < end)
        lost += np.where(scored, missed, 0.0)
        served += np.where(scored, sold, 0.0)
        wanted += np.where(scored, demand[:, t], 0.0)
        warmup_lost += np.where(t < first, missed, 0.0)
        live = np.flatnonzero(scored)
        cycle_lost[live, (t - first[live]) // review[live]] += missed[live]
    leftover += np.where(charge[:, n_periods], stock, 0.0)

    cycle_stockout = np.where(np.arange(cycle_lost.shape[1])[None, :] < n_cycles[:, None], (cycle_lost > 0).astype(float), np.nan)
    cost = policy.lost_sale_cost * lost + policy.leftover_cost * leftover
    return ReplayResult(
        demand=wanted,
        served=served,
        lost=lost,
        leftover=leftover,
        cost=cost,
        ordered=ordered,
        n_orders=n_orders,
        cycle_stockout=cycle_stockout,
        warmup_lost=warmup_lost,
        start_stock=np.asarray(policy.on_hand, np.float64).copy(),
        window=(first, end),
    )
