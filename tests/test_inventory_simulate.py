"""The replay's bookkeeping (tasks.inventory.simulate) and the policies it compares (tasks.inventory.policies)."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.inventory import policies as pol
from tasks.inventory.orders import InventoryPolicy
from tasks.inventory.simulate import ReplayState, order_days, replay


def rules(n: int, lead: int = 1, review: int = 2, pack: float = 1.0, min_order: float = 0.0, cu: float = 3.0, co: float = 1.0, on_hand=None, horizon: int = 8) -> InventoryPolicy:
    full = lambda v: np.full(n, float(v))  # noqa: E731
    return InventoryPolicy(
        on_hand=full(0) if on_hand is None else np.asarray(on_hand, float),
        lead_time=full(lead),
        review_period=full(review),
        pack_size=full(pack),
        min_order=full(min_order),
        lost_sale_cost=full(cu),
        leftover_cost=full(co),
        open_orders=np.zeros((n, horizon)),
    )


def constant(quantity: float):
    return lambda state: np.full(state.rows.size, quantity)


def test_order_days_stop_where_the_protection_interval_leaves_the_horizon():
    days = order_days(8, np.array([1]), np.array([2]))[0]
    assert np.flatnonzero(days).tolist() == [0, 2, 4]  # 6 + 1 + 2 > 8


def test_replay_bookkeeping_by_hand():
    # Lead 1, review 2, horizon 8: orders at 0, 2, 4 arrive at 1, 3, 5; the window is [1, 7).
    demand = np.array([[4.0, 3, 6, 1, 5, 2, 9, 7]])
    seen = []

    def order(state: ReplayState) -> np.ndarray:
        seen.append((state.period, state.on_hand.copy(), state.arrivals.copy()))
        return np.array([5.0])

    result = replay(demand, rules(1, on_hand=[6.0]), order)
    # t0: stock 6, sell 4 -> 2 (warm-up). t1: +5 -> 7, sell 3 -> 4. t2: sell 6 of 4 -> lost 2, 0.
    # t3: charge 0; +5, sell 1 -> 4. t4: sell 4 of 5 -> lost 1, 0. t5: charge 0; +5, sell 2 -> 3. t6: sell 3 of 9 -> lost 6.
    # t7 = end: charge 0. Window [1, 7): demand 3+6+1+5+2+9 = 26, lost 9, served 17.
    assert result.window[0].tolist() == [1] and result.window[1].tolist() == [7]
    assert result.demand.tolist() == [26.0]
    assert result.lost.tolist() == [9.0]
    assert result.served.tolist() == [17.0]
    assert result.leftover.tolist() == [0.0]
    assert result.cost.tolist() == [27.0]
    assert result.warmup_lost.tolist() == [0.0]
    assert result.cycle_stockout.tolist() == [[1.0, 1.0, 1.0]]
    assert [p for p, _, _ in seen] == [0, 2, 4]
    assert seen[1][1].tolist() == [4.0]  # the stock at the start of period 2, before its sales
    assert seen[1][2][0, 3] == 0.0 and seen[0][2].sum() == 0.0  # the pipeline holds orders not yet placed: none


def test_leftover_is_the_stock_just_before_each_later_arrival_and_at_the_end():
    demand = np.array([[1.0, 1, 1, 1, 1, 1, 1, 1]])
    result = replay(demand, rules(1, on_hand=[0.0]), constant(4.0))
    # warm-up t0 loses 1. t1: +4, sell 1 -> 3; t2 -> 2; t3: charge 2, +4 -> 6, sell -> 5; t4 -> 4;
    # t5: charge 4, +4 -> 8 -> 7; t6 -> 6; t7 = end: charge 6. Leftover 2 + 4 + 6.
    assert result.leftover.tolist() == [12.0]
    assert result.lost.tolist() == [0.0] and result.warmup_lost.tolist() == [1.0]
    assert result.cost.tolist() == [12.0]
    assert result.cycle_service_level == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_conservation_and_stock_never_negative(seed):
    rng = np.random.default_rng(seed)
    n, horizon = 5, 20
    demand = rng.poisson(3.0, size=(n, horizon)).astype(float)
    stocks = []

    def order(state: ReplayState) -> np.ndarray:
        stocks.append(state.on_hand.min())
        return rng.integers(0, 12, size=state.rows.size).astype(float)

    r = rules(n, lead=2, review=3, on_hand=rng.integers(0, 10, size=n), horizon=horizon)
    result = replay(demand, r, order)
    np.testing.assert_allclose(result.served + result.lost, result.demand)
    first, end = result.window
    expected = np.array([demand[s, first[s] : end[s]].sum() for s in range(n)])
    np.testing.assert_allclose(result.demand, expected)
    assert min(stocks) >= 0 and (result.leftover >= 0).all()
    np.testing.assert_allclose(result.cost, 3.0 * result.lost + 1.0 * result.leftover)


def test_round_to_packs_and_minimum_order():
    q = pol.round_to_packs(np.array([0.0, 0.4, 10.0, 10.1, 3.0, -2.0]), np.full(6, 10.0), np.array([0, 0, 0, 0, 25, 25.0]))
    assert q.tolist() == [0.0, 10.0, 10.0, 20.0, 30.0, 0.0]


def test_every_policy_orders_whole_packs():
    rng = np.random.default_rng(3)
    n, horizon = 4, 12
    demand = rng.poisson(7.0, size=(n, horizon)).astype(float)
    r = rules(n, lead=1, review=2, pack=10.0, min_order=20.0, horizon=horizon)
    draws = rng.poisson(7.0, size=(200, n, horizon)).astype(float)
    point = np.full((n, horizon), 7.0)
    made = [
        pol.model(r, draws),
        pol.point_safety_stock(r, point, np.full(n, 2.6)),
        pol.lightgbm_quantiles(r, point + 2.0),
        pol.seasonal_naive_safety_stock(r, point, np.full(n, 3.0)),
    ]
    for policy in made:
        quantities = []

        def order(state, policy=policy, quantities=quantities):
            q = policy(state)
            quantities.append(q)
            return q

        start = policy.start_stock()
        assert np.allclose(start % 10.0, 0.0)
        replay(demand, rules(n, lead=1, review=2, pack=10.0, min_order=20.0, on_hand=start, horizon=horizon), order)
        q = np.concatenate(quantities)
        assert np.allclose(q % 10.0, 0.0), policy.name
        assert ((q == 0) | (q >= 20.0)).all(), policy.name


def test_model_with_the_truth_as_its_only_draw_loses_nothing_and_leaves_nothing():
    rng = np.random.default_rng(4)
    n, horizon = 6, 30
    demand = rng.poisson(5.0, size=(n, horizon)).astype(float)
    r = rules(n, lead=2, review=7, horizon=horizon)
    policy = pol.model(r, demand[None])
    start = policy.start_stock()
    np.testing.assert_allclose(start, demand[:, :2].sum(axis=1))  # exactly the first lead time's demand
    result = replay(demand, rules(n, lead=2, review=7, on_hand=start, horizon=horizon), policy)
    assert result.lost.sum() == 0 and result.warmup_lost.sum() == 0
    assert result.leftover.sum() == 0  # pack 1: each order is exactly its cycle's demand
    # With packs of 10 each order is a pack count either side of its cycle's demand, whichever costs less
    # (3 per unit short, 1 per unit over): a cycle costs at most min(3 * short, 1 * over) < 10.
    r10 = rules(n, lead=2, review=7, pack=10.0, horizon=horizon)
    policy10 = pol.model(r10, demand[None])
    result10 = replay(demand, rules(n, lead=2, review=7, pack=10.0, on_hand=policy10.start_stock(), horizon=horizon), policy10)
    cycles = np.isfinite(result10.cycle_stockout).sum(axis=1)
    assert (result10.cost < 10.0 * cycles).all()
    assert result10.cost.sum() < replay(demand, rules(n, lead=2, review=7, pack=10.0, on_hand=policy10.start_stock(), horizon=horizon), _rounded_up(demand, 10.0)).cost.sum()


def _rounded_up(demand: np.ndarray, pack: float):
    """Knows the truth and always rounds its order up to packs (never loses a sale)."""

    def order(state: ReplayState) -> np.ndarray:
        need = demand[state.rows, state.period : state.period + 9].sum(axis=1) - state.on_hand - state.arrivals[:, state.period : state.period + 9].sum(axis=1)
        return np.ceil(np.maximum(need, 0) / pack) * pack

    return order


def test_point_safety_stock_level_on_a_known_case():
    # Lead 2, review 3: protection 5 periods of mean 10, sigma 4, critical ratio 0.9 (cost 9:1).
    r = rules(1, lead=2, review=3, cu=9.0, co=1.0, horizon=10)
    policy = pol.point_safety_stock(r, np.full((1, 10), 10.0), np.array([4.0]))
    z = 1.2815515655446004
    np.testing.assert_allclose(policy.level(0, np.array([5])), [50.0 + z * 4.0 * np.sqrt(5)])
    # Order at period 0 with 12 on hand and 7 arriving at period 1: level - 19, rounded up.
    state = ReplayState(0, np.array([0]), np.array([12.0]), np.array([[0, 7.0, 0, 0, 0, 0, 0, 0, 0, 0]]))
    assert policy(state).tolist() == [np.ceil(50.0 + z * 4.0 * np.sqrt(5) - 19.0)]
    np.testing.assert_allclose(policy.start_stock(), [np.ceil(20.0 + z * 4.0 * np.sqrt(2))])
    # A per-period sigma: the safety term is z * sqrt(sum of the variances).
    sigma = np.array([[1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
    per_period = pol.point_safety_stock(r, np.full((1, 10), 10.0), sigma)
    np.testing.assert_allclose(per_period.level(1, np.array([5])), [50.0 + z * np.sqrt(4 + 9 + 16 + 25 + 36)])


def test_lightgbm_quantiles_sum_the_per_period_quantiles():
    r = rules(2, lead=1, review=2, horizon=6)
    q = np.arange(12.0).reshape(2, 6)
    policy = pol.lightgbm_quantiles(r, q)
    np.testing.assert_allclose(policy.level(2, np.array([3, 3])), [2 + 3 + 4, 8 + 9 + 10])


def test_seasonal_difference_sd():
    y = np.tile(np.array([1.0, 5.0]), 20)[None]  # period 2: zero seasonal-difference error
    y = np.vstack([y, y + np.r_[np.zeros(20), np.full(20, 2.0)][None], np.full((1, 40), np.nan)])
    sd = pol.seasonal_difference_sd(y, 2)
    assert sd[0] == 0.0 and sd[1] > 0 and sd[2] == 0.0


def test_forecast_error_sd_own_errors_or_the_pooled_ones_scaled():
    rng = np.random.default_rng(3)
    errors = np.full((4, 20), np.nan)
    errors[0] = rng.normal(0.0, 2.0, 20)  # scale 10: relative sd 0.2
    errors[1] = rng.normal(0.0, 8.0, 20)  # scale 40: relative sd 0.2
    errors[2, :3] = [50.0, -50.0, 0.0]  # too few errors of its own: borrows the pooled relative sd
    scale = np.array([10.0, 40.0, 100.0, 0.0])  # the last: no error, nothing to scale by
    sd = pol.forecast_error_sd(errors, scale)
    np.testing.assert_allclose(sd[:2], errors[:2].std(axis=1, ddof=1))
    pooled = np.concatenate([errors[0] / 10.0, errors[1] / 40.0]).std(ddof=1)
    np.testing.assert_allclose(sd[2], 100.0 * pooled)
    assert 10.0 < sd[2] < 30.0 and sd[3] == 0.0


@pytest.mark.parametrize("ratio", [1.0, 3.0, 9.0])
def test_calibrated_draws_reach_the_critical_ratio_as_cycle_service_level(ratio):
    # Truth and draws from the same law (iid Poisson days): the model's orders meet each cycle's demand in a
    # share of the cycles close to the critical ratio; the fill rate is far above it (it is not the target).
    rng = np.random.default_rng(5)
    n, horizon = 1000, 30
    demand = rng.poisson(20.0, size=(n, horizon)).astype(float)
    draws = rng.poisson(20.0, size=(400, n, horizon)).astype(float)
    r = rules(n, lead=2, review=7, cu=ratio, co=1.0, horizon=horizon)
    policy = pol.model(r, draws)
    result = replay(demand, rules(n, lead=2, review=7, cu=ratio, co=1.0, on_hand=policy.start_stock(), horizon=horizon), policy)
    critical = ratio / (ratio + 1.0)
    assert abs(result.cycle_service_level - critical) < 0.04
    assert result.fill_rate > critical + 0.05
