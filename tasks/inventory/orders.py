"""Replenishment orders from joint draws of demand: the pack count that minimises the expected cost.

An order placed at the start of period ``k`` arrives at the start of period ``k + L`` (the lead time) and
has to last until the next order arrives, ``R`` periods later (the review period): demand over that
protection interval is a sum of periods, whose distribution only joint draws give (a sum of daily
quantiles is not a quantile of the sum). Demand that finds the shelf empty is lost, not back-ordered.

Per draw, the stock on hand runs through the lead time (open orders arrive on their periods, sales are
``min(stock, demand)``); what is left, plus the open orders due within the review period, meets the
review period's demand together with the new order ``q``. So the cost of a draw is

    lost_sale_cost * (lost during the lead time + (need - q)^+) + leftover_cost * (q - need)^+,

with ``need`` = review-period demand - stock available at the arrival. Its mean over the draws is convex
and piecewise linear in ``q``, minimised at the critical-ratio order statistic of ``need``; over the
feasible orders {0} and {k packs >= the minimum order} the best is therefore one of: the pack counts
on either side of that minimiser, the smallest feasible count, or 0. Those four are scored exactly on
every draw, so the choice is exact for the draws given, with no normal approximation. An open order
due within the review period is counted as available at the new order's arrival (exact when it
arrives before the shelf runs empty, which a plan ordering every review period keeps close to true).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass(frozen=True)
class InventoryPolicy:
    """Per series (arrays [S]): the state at the first forecast period and the rules of ordering.

    ``open_orders`` [S, T] holds the units of orders already placed, by the forecast period they arrive at
    (the start of that period). Lead and review periods count forecast periods; order days are periods
    0, R, 2R, ... of the horizon.
    """

    on_hand: np.ndarray
    lead_time: np.ndarray
    review_period: np.ndarray
    pack_size: np.ndarray
    min_order: np.ndarray
    lost_sale_cost: np.ndarray
    leftover_cost: np.ndarray
    open_orders: np.ndarray

    def __post_init__(self) -> None:
        n_series = np.shape(self.on_hand)[0] if np.ndim(self.on_hand) == 1 else None
        if n_series is None:
            raise ValueError(f"on_hand must be one value per series [S], got shape {np.shape(self.on_hand)}")
        for field in fields(self):
            value = np.asarray(getattr(self, field.name))
            expected = (n_series,) if field.name != "open_orders" else (n_series, value.shape[-1] if value.ndim == 2 else -1)
            if value.shape != expected:
                raise ValueError(f"{field.name} must have shape {expected}, got {value.shape}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{field.name} has {int((~np.isfinite(value)).sum())} missing or infinite values")
        problems = [
            _check("on_hand", self.on_hand, self.on_hand < 0, ">= 0"),
            _check("open_orders", self.open_orders, self.open_orders < 0, ">= 0"),
            _check("lead_time", self.lead_time, (self.lead_time < 0) | (self.lead_time != np.round(self.lead_time)), "a whole number >= 0"),
            _check(
                "review_period",
                self.review_period,
                (self.review_period < 1) | (self.review_period != np.round(self.review_period)),
                "a whole number >= 1",
            ),
            _check("pack_size", self.pack_size, self.pack_size <= 0, "> 0"),
            _check("min_order", self.min_order, self.min_order < 0, ">= 0"),
            _check("lost_sale_cost", self.lost_sale_cost, self.lost_sale_cost <= 0, "> 0"),
            _check("leftover_cost", self.leftover_cost, self.leftover_cost <= 0, "> 0"),
        ]
        problems = [p for p in problems if p]
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def n_series(self) -> int:
        return int(np.shape(self.on_hand)[0])

    @property
    def critical_ratio(self) -> np.ndarray:
        """The share of protection-interval demand that the cost-minimising order aims to meet."""
        return self.lost_sale_cost / (self.lost_sale_cost + self.leftover_cost)

    @property
    def protection_periods(self) -> np.ndarray:
        return (self.lead_time + self.review_period).astype(int)

    def select(self, rows: np.ndarray) -> InventoryPolicy:
        return InventoryPolicy(**{f.name: np.asarray(getattr(self, f.name))[rows] for f in fields(self)})


def _check(name: str, values: np.ndarray, bad: np.ndarray, rule: str) -> str:
    bad = np.asarray(bad)
    if not bad.any():
        return ""
    rows = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))
    return f"{name} must be {rule}: {rows.size} series (positions {rows[:10].tolist()}{' ...' if rows.size > 10 else ''})"


@dataclass(frozen=True)
class Orders:
    """The order of each series placed at one period, and what it is expected to achieve over the draws."""

    period: int  # forecast period the orders are placed at
    ordering: np.ndarray  # bool [S]: the period is an order day of the series
    packs: np.ndarray  # int [S]
    quantity: np.ndarray  # [S] units: packs x pack size
    expected_cost: np.ndarray  # [S] over the protection interval
    fill_rate: np.ndarray  # [S] expected share of protection-interval demand served
    stockout_probability: np.ndarray  # [S] probability that some demand is lost (the lead time's included)
    cycle_service: np.ndarray  # [S] probability that the order's cycle (its review period) loses no sale: aims at the critical ratio
    expected_leftover: np.ndarray  # [S] units left when the next order arrives
    expected_demand: np.ndarray  # [S] over the protection interval
    inventory_position: np.ndarray  # [S] mean on hand + open orders within the interval, before ordering
    critical_ratio: np.ndarray  # [S]


def run_lead_time(demand: np.ndarray, on_hand: np.ndarray, arrivals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per draw, the stock on hand after the lead time and the units lost during it.

    ``demand`` [L, D, S] (period-major: each period's draws are contiguous) and ``arrivals`` [S, L] are the
    lead time's periods; ``on_hand`` [D, S] or [S].
    """
    stock = np.array(np.broadcast_to(on_hand, demand.shape[1:]), dtype=demand.dtype)
    lost = np.zeros(demand.shape[1:], demand.dtype)
    sold = np.empty_like(stock)
    for j in range(demand.shape[0]):
        stock += arrivals[:, j]
        np.minimum(stock, demand[j], out=sold)
        lost += demand[j]
        lost -= sold
        stock -= sold
    return stock, lost


def _by_timing(lead: np.ndarray, review: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
    """The series grouped by (lead time, review period): each group's periods are plain slices."""
    pairs = np.stack([lead, review], axis=1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return [(int(lt), int(rp), np.flatnonzero(inverse.ravel() == g)) for g, (lt, rp) in enumerate(unique)]


def _order_statistic(need: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """The ceil(D * ratio)-th smallest need of each series [S]: a minimiser of the expected cost."""
    n_draws = need.shape[0]
    rank = np.clip(np.ceil(n_draws * ratio).astype(int) - 1, 0, n_draws - 1)
    by_series = np.ascontiguousarray(need.T)  # [S, D]: partitions along contiguous rows
    out = np.empty(need.shape[1])
    for value in np.unique(rank):  # one partition per distinct ratio (usually one)
        cols = rank == value
        out[cols] = np.partition(by_series[cols] if not cols.all() else by_series, value, axis=1)[:, value]
    return out


def order_at(
    demand: np.ndarray,
    policy: InventoryPolicy,
    period: int,
    on_hand: np.ndarray | None = None,
    arrivals: np.ndarray | None = None,
) -> Orders:
    """The cost-minimising order of every series placed at forecast period ``period``.

    ``demand`` [D, S, T]: joint draws of demand per forecast period. ``on_hand`` [D, S] or [S]: the stock
    at the start of ``period`` (default: the policy's, for period 0). ``arrivals`` [S, T]: units arriving by
    period (default: the policy's open orders). The protection interval must end within the horizon.
    """
    demand = np.asarray(demand)
    if demand.ndim != 3 or demand.shape[1] != policy.n_series:
        raise ValueError(f"demand draws must be [draws, {policy.n_series} series, periods], got shape {demand.shape}")
    n_periods = demand.shape[2]
    ends = period + policy.protection_periods
    if (too_long := ends > n_periods).any():
        rows = np.flatnonzero(too_long)
        raise ValueError(
            f"lead time + review period from period {period} reach past the {n_periods}-period horizon for "
            f"{rows.size} series (positions {rows[:10].tolist()}): forecast at least {int(ends.max())} periods"
        )
    arrivals = policy.open_orders if arrivals is None else np.asarray(arrivals, np.float64)
    on_hand = policy.on_hand if on_hand is None else np.asarray(on_hand, np.float64)
    # Demand draws are counts (or amounts): float32 holds whole numbers exactly up to 2**24 and halves the
    # memory traffic of the [D, S] passes below; means are taken in float64.
    work = np.float32 if demand.dtype == np.float32 else np.float64
    n_draws = demand.shape[0]
    need = np.empty((n_draws, policy.n_series), work)
    lost_before = np.empty_like(need)
    total_demand = np.empty_like(need)
    position = np.empty(policy.n_series)
    for lead, review, rows in _by_timing(policy.lead_time.astype(int), policy.review_period.astype(int)):
        every = rows.size == policy.n_series
        block = demand[:, :, period : period + lead + review] if every else demand[:, rows, period : period + lead + review]
        by_period = np.ascontiguousarray(np.moveaxis(block, -1, 0), dtype=work)  # [L + R, D, s]
        lead_demand = by_period[:lead]
        review_demand = by_period[lead:].sum(axis=0)
        stock_now = on_hand if every else (on_hand[:, rows] if np.ndim(on_hand) == 2 else on_hand[rows])
        lead_arrivals = arrivals[rows, period : period + lead].astype(work)
        review_arrivals = arrivals[rows, period + lead : period + lead + review].sum(axis=-1)
        stock, lost = run_lead_time(lead_demand, stock_now, lead_arrivals)
        need[:, rows] = review_demand - stock - review_arrivals.astype(work)
        lost_before[:, rows] = lost
        total_demand[:, rows] = lead_demand.sum(axis=0) + review_demand
        position[rows] = np.broadcast_to(stock_now, (n_draws, rows.size)).mean(axis=0) + lead_arrivals.sum(axis=-1) + review_arrivals

    ratio = policy.critical_ratio
    target = np.maximum(_order_statistic(need, ratio), 0.0)
    pack = policy.pack_size
    smallest = np.where(policy.min_order > 0, np.maximum(np.ceil(policy.min_order / pack - 1e-9), 1), 0)
    below = np.floor(target / pack)
    candidates = np.stack([np.zeros_like(below), below, below + 1, smallest])  # [4, S]
    feasible = (candidates == 0) | (candidates >= smallest)
    cu, co = policy.lost_sale_cost, policy.leftover_cost
    costs = np.stack([_mean_cost(need, (k * pack).astype(work), cu, co) for k in candidates])
    best = np.argmin(np.where(feasible, costs, np.inf), axis=0)
    packs = np.take_along_axis(candidates, best[None], axis=0)[0].astype(np.int64)
    quantity = packs * pack

    short = need - quantity.astype(work)
    lost = lost_before + np.maximum(short, 0)
    leftover = np.maximum(-short, 0)
    mean_demand = total_demand.mean(axis=0, dtype=np.float64)
    mean_lost = lost.mean(axis=0, dtype=np.float64)
    fill = np.where(mean_demand > 0, 1.0 - mean_lost / np.where(mean_demand > 0, mean_demand, 1.0), 1.0)
    return Orders(
        period=period,
        ordering=np.ones(policy.n_series, bool),
        packs=packs,
        quantity=quantity,
        expected_cost=cu * mean_lost + co * leftover.mean(axis=0, dtype=np.float64),
        fill_rate=fill,
        stockout_probability=(lost > 0).mean(axis=0),
        cycle_service=(short <= 0).mean(axis=0),
        expected_leftover=leftover.mean(axis=0, dtype=np.float64),
        expected_demand=mean_demand,
        inventory_position=position,
        critical_ratio=ratio,
    )


def _mean_cost(need: np.ndarray, quantity: np.ndarray, under: np.ndarray, over: np.ndarray) -> np.ndarray:
    """Mean over the draws of under * (need - q)^+ + over * (q - need)^+ for each series [S]."""
    short = need - quantity
    excess = np.maximum(short, 0).mean(axis=0, dtype=np.float64)
    # E[(q - need)^+] = E[(need - q)^+] - E[need - q]: one pass fewer
    return under * excess + over * (excess - short.mean(axis=0, dtype=np.float64))


def plan_orders(demand: np.ndarray, policy: InventoryPolicy) -> list[Orders]:
    """Orders at every order day of the horizon whose protection interval the draws cover.

    The first order day's orders are the ones to place now. Later ones are the plan as it stands: each is
    chosen on the draws' own stock at its day, which follows the earlier planned orders and each draw's
    demand, so the plan is consistent draw by draw (a later night's run replaces it with fresher data).
    """
    demand = np.asarray(demand)
    n_draws, n_series, n_periods = demand.shape
    review = policy.review_period.astype(int)
    arrivals = np.asarray(policy.open_orders, np.float64)
    if arrivals.shape[1] < n_periods:
        arrivals = np.pad(arrivals, ((0, 0), (0, n_periods - arrivals.shape[1])))
    arrivals = arrivals[:, :n_periods].copy()
    if (policy.protection_periods > n_periods).any():
        rows = np.flatnonzero(policy.protection_periods > n_periods)
        raise ValueError(
            f"lead time + review period exceed the {n_periods}-period horizon for {rows.size} series "
            f"(positions {rows[:10].tolist()}): forecast at least {int(policy.protection_periods.max())} periods"
        )
    stock = np.broadcast_to(np.asarray(policy.on_hand, np.float64), (n_draws, n_series)).copy()
    plan = []
    for period in range(n_periods):
        ordering = period % review == 0
        fits = period + policy.protection_periods <= n_periods
        rows = np.flatnonzero(ordering & fits)
        if rows.size:
            sub = policy.select(rows)
            orders = order_at(demand[:, rows], sub, period, on_hand=stock[:, rows], arrivals=arrivals[rows])
            arrivals[rows, period + sub.lead_time.astype(int)] += orders.quantity
            plan.append(_widen(orders, rows, n_series))
        stock = np.maximum(stock + arrivals[:, period] - demand[:, :, period], 0.0)
    return plan


def _widen(orders: Orders, rows: np.ndarray, n_series: int) -> Orders:
    """The orders of ``rows`` placed in full-size arrays (series without an order: 0 packs, NaN figures)."""
    values = {}
    for field in fields(orders):
        value = getattr(orders, field.name)
        if field.name == "period":
            values[field.name] = value
            continue
        fill = False if field.name == "ordering" else (0 if field.name in ("packs", "quantity") else np.nan)
        out = np.full(n_series, fill, dtype=value.dtype if field.name in ("ordering", "packs") else np.float64)
        out[rows] = value
        values[field.name] = out
    return Orders(**values)
