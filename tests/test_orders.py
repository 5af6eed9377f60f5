"""The order optimiser: exact over the pack choices (against a brute-force search that simulates every draw
period by period), its figures, the plan over several order days, and the errors of a bad policy."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.inventory.orders import InventoryPolicy, order_at, plan_orders


def _policy(rng: np.random.Generator, n_series: int, n_periods: int) -> InventoryPolicy:
    return InventoryPolicy(
        on_hand=rng.integers(0, 20, n_series).astype(float),
        lead_time=rng.integers(0, 4, n_series).astype(float),
        review_period=rng.integers(1, 5, n_series).astype(float),
        pack_size=rng.choice([1.0, 5.0, 10.0], n_series),
        min_order=rng.choice([0.0, 10.0, 20.0], n_series),
        lost_sale_cost=rng.uniform(1, 9, n_series),
        leftover_cost=rng.uniform(0.5, 2, n_series),
        open_orders=np.where(rng.random((n_series, n_periods)) < 0.2, 5.0, 0.0),
    )


def _simulated_cost(demand: np.ndarray, policy: InventoryPolicy, s: int, quantity: float) -> float:
    """The mean cost over the draws of ordering ``quantity`` now, simulated draw by draw and period by period."""
    lead, review = int(policy.lead_time[s]), int(policy.review_period[s])
    costs = []
    for draw in demand[:, s]:
        stock, lost = policy.on_hand[s], 0.0
        for t in range(lead):
            stock += policy.open_orders[s, t]
            sold = min(stock, draw[t])
            lost += draw[t] - sold
            stock -= sold
        available = stock + quantity + policy.open_orders[s, lead : lead + review].sum()
        need = draw[lead : lead + review].sum()
        lost += max(need - available, 0.0)
        costs.append(policy.lost_sale_cost[s] * lost + policy.leftover_cost[s] * max(available - need, 0.0))
    return float(np.mean(costs))


def test_the_order_is_the_cheapest_feasible_pack_count() -> None:
    rng = np.random.default_rng(0)
    n_series, n_draws, n_periods = 30, 300, 10
    means = rng.uniform(0.3, 6.0, (1, n_series, 1))
    demand = rng.negative_binomial(2, 2 / (2 + means), size=(n_draws, n_series, n_periods)).astype(float)
    policy = _policy(rng, n_series, n_periods)
    orders = order_at(demand, policy, 0)
    for s in range(n_series):
        pack, smallest = policy.pack_size[s], policy.min_order[s]
        feasible = [k for k in range(80) if k == 0 or k * pack >= smallest]
        costs = [_simulated_cost(demand, policy, s, k * pack) for k in feasible]
        assert orders.expected_cost[s] == pytest.approx(min(costs), rel=1e-9, abs=1e-9)
        assert orders.quantity[s] == orders.packs[s] * pack
        assert orders.packs[s] == 0 or orders.quantity[s] >= smallest
    assert np.all((orders.fill_rate >= 0) & (orders.fill_rate <= 1))
    assert np.all((orders.stockout_probability >= 0) & (orders.stockout_probability <= 1))


def test_a_certain_demand_is_met_exactly_with_nothing_left() -> None:
    demand = np.tile(np.array([3.0, 4.0, 5.0, 6.0]), (50, 1, 1))  # every draw the same: demand is known
    policy = InventoryPolicy(
        on_hand=np.array([3.0]), lead_time=np.array([1.0]), review_period=np.array([2.0]), pack_size=np.array([1.0]),
        min_order=np.array([0.0]), lost_sale_cost=np.array([3.0]), leftover_cost=np.array([1.0]), open_orders=np.zeros((1, 4)),
    )
    orders = order_at(demand, policy, 0)
    assert orders.quantity[0] == 9.0  # periods 1 and 2: 4 + 5 units, the stock of 3 went in period 0
    assert orders.expected_cost[0] == 0.0 and orders.fill_rate[0] == 1.0 and orders.stockout_probability[0] == 0.0
    assert orders.critical_ratio[0] == pytest.approx(0.75)


@pytest.mark.parametrize("under", [1.0, 3.0, 9.0])
def test_the_orders_cycles_lose_no_sale_at_the_critical_ratio(under: float) -> None:
    rng = np.random.default_rng(2)
    demand = rng.poisson(rng.uniform(20, 60, (1, 400, 1)), size=(2000, 400, 3)).astype(float)
    policy = InventoryPolicy(
        on_hand=np.full(400, 30.0), lead_time=np.ones(400), review_period=np.full(400, 2.0), pack_size=np.ones(400),
        min_order=np.zeros(400), lost_sale_cost=np.full(400, under), leftover_cost=np.ones(400), open_orders=np.zeros((400, 3)),
    )
    orders = order_at(demand, policy, 0)
    # whole units make the distribution discrete: the cheapest order's cycle service lies at or just above the ratio
    assert orders.cycle_service.mean() == pytest.approx(under / (under + 1.0), abs=0.03)
    assert np.all(orders.cycle_service >= orders.critical_ratio - 0.01)
    assert np.all(orders.stockout_probability >= 1.0 - orders.cycle_service - 1e-12)  # the lead time's losses come on top


def test_packs_round_to_the_cheaper_side_and_a_minimum_order_can_mean_no_order() -> None:
    demand = np.full((10, 2, 2), 7.0)
    policy = InventoryPolicy(
        on_hand=np.zeros(2), lead_time=np.zeros(2), review_period=np.array([1.0, 1.0]), pack_size=np.array([5.0, 1.0]),
        min_order=np.array([0.0, 50.0]), lost_sale_cost=np.array([1.0, 1.0]), leftover_cost=np.array([1.0, 1.0]),
        open_orders=np.zeros((2, 2)),
    )
    orders = order_at(demand, policy, 0)
    assert orders.packs[0] == 1  # 5 units: 2 lost (cost 2) beats 10 units: 3 left (cost 3)
    assert orders.quantity[1] == 0.0  # 50 units would leave 43 over; losing 7 costs less


def test_the_plan_orders_every_review_period_and_follows_each_draw() -> None:
    rng = np.random.default_rng(1)
    demand = rng.poisson(4.0, size=(200, 3, 12)).astype(float)
    policy = InventoryPolicy(
        on_hand=np.array([10.0, 0.0, 4.0]), lead_time=np.array([1.0, 2.0, 0.0]), review_period=np.array([2.0, 3.0, 1.0]),
        pack_size=np.ones(3), min_order=np.zeros(3), lost_sale_cost=np.full(3, 3.0), leftover_cost=np.ones(3),
        open_orders=np.zeros((3, 12)),
    )
    plan = plan_orders(demand, policy)
    days = {o.period: o.ordering for o in plan}
    assert [p for p, on in days.items() if on[0]] == [0, 2, 4, 6, 8]  # lead 1 + review 2 must fit in 12 periods
    assert [p for p, on in days.items() if on[1]] == [0, 3, 6]
    assert [p for p, on in days.items() if on[2]] == list(range(12))
    first = plan[0]
    np.testing.assert_array_equal(first.quantity, order_at(demand, policy, 0).quantity)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("on_hand", -1.0, "on_hand must be >= 0"),
        ("pack_size", 0.0, "pack_size must be > 0"),
        ("lead_time", 1.5, "lead_time must be a whole number >= 0"),
        ("review_period", 0.0, "review_period must be a whole number >= 1"),
        ("lost_sale_cost", 0.0, "lost_sale_cost must be > 0"),
        ("leftover_cost", np.nan, "leftover_cost has 1 missing"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_field_and_series(field: str, value: float, message: str) -> None:
    values = dict(
        on_hand=np.ones(3), lead_time=np.ones(3), review_period=np.ones(3), pack_size=np.ones(3), min_order=np.zeros(3),
        lost_sale_cost=np.ones(3), leftover_cost=np.ones(3), open_orders=np.zeros((3, 4)),
    )
    values[field] = values[field].copy()
    values[field][1] = value
    with pytest.raises(ValueError, match=message):
        InventoryPolicy(**values)


def test_a_protection_interval_past_the_horizon_is_an_error() -> None:
    policy = InventoryPolicy(
        on_hand=np.ones(2), lead_time=np.array([1.0, 3.0]), review_period=np.array([1.0, 2.0]), pack_size=np.ones(2),
        min_order=np.zeros(2), lost_sale_cost=np.ones(2), leftover_cost=np.ones(2), open_orders=np.zeros((2, 4)),
    )
    with pytest.raises(ValueError, match=r"reach past the 4-period horizon for 1 series \(positions \[1\]\).*at least 5"):
        order_at(np.ones((5, 2, 4)), policy, 0)
