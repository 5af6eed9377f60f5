"""M5's weighted scaled pinball loss, by hand on small arrays."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.evaluate.m5 import M5_LEVELS, M5_QUANTILES, history_scale, level_codes, level_score
from tasks.evaluate.panel_metrics import aggregate


def test_the_twelve_levels_group_the_series_as_m5_does() -> None:
    # 2 states; stores 0, 1 in state 0 and store 2 in state 1; items 0, 1 in department 0 (category 0), item 2 in
    # department 1 (category 1); every store sells every item: 9 series
    store = np.repeat([0, 1, 2], 3)
    item = np.tile([0, 1, 2], 3)
    columns = {"store": store, "state": np.array([0, 0, 1])[store], "item": item,
               "department": np.array([0, 0, 1])[item], "category": np.array([0, 0, 1])[item]}  # fmt: skip
    codes = level_codes(columns)
    assert list(codes) == list(M5_LEVELS) and len(codes) == 12
    groups = {name: int(c.max()) + 1 for name, c in codes.items()}
    assert groups == {"total": 1, "state": 2, "store": 3, "category": 2, "department": 2, "state x category": 4,
                      "state x department": 4, "store x category": 6, "store x department": 6, "item": 3,
                      "item x state": 6, "item x store": 9}  # fmt: skip
    sums = aggregate(np.arange(9.0)[:, None] * np.ones((1, 2)), codes["state"])
    np.testing.assert_array_equal(sums, [[15.0, 15.0], [21.0, 21.0]])
    with pytest.raises(ValueError, match=r"'department'"):
        level_codes({k: v for k, v in columns.items() if k != "department"})


def test_the_scale_counts_changes_from_the_first_sale_on() -> None:
    scale = history_scale(np.array([[0, 0, 2, 4, 4], [0, 0, 0, 0, 0], [1, 0, 1, 0, 1.0]]))
    assert scale[0] == pytest.approx(1.0)  # |4 - 2| and |4 - 4| after the first sale; the zeros before do not count
    assert np.isnan(scale[1])
    assert scale[2] == pytest.approx(1.0)


def test_a_level_score_is_the_dollar_weighted_mean_of_scaled_pinball_losses() -> None:
    levels = tuple(sorted({*M5_QUANTILES, 0.05, 0.95}))
    truth = np.array([[2.0, 4.0], [1.0, 1.0], [3.0, 3.0]])
    quantiles = np.broadcast_to(np.array([3.0, 1.0, 2.0])[None, :, None], (len(levels), 3, 2)).copy()
    history = np.array([[0, 1, 3, 5.0], [1, 2, 1, 2.0], [0, 0, 0, 0.0]])  # scales 2, 1, none
    score = level_score(truth, quantiles, levels, history, dollars=np.array([30.0, 10.0, 50.0]))
    # series 0: forecast 3 at every quantile, truth 2 and 4: loss (1 - u) at 2 and u at 4, a mean of 0.5 over the
    # two periods whatever u; scaled by 2: 0.25. Series 1: exact, 0. Series 2: no scale, left out.
    assert score.wspl == pytest.approx((30 * 0.25 + 10 * 0.0) / 40)
    assert score.n_series == 3 and score.n_unscaled == 1
    assert score.coverage_50 == pytest.approx(2 / 6) and score.coverage_90 == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="needs the quantiles"):
        level_score(truth, quantiles[:3], levels[:3], history, np.ones(3))


def test_randomized_coverage_is_nominal_for_calibrated_counts() -> None:
    from scipy import stats

    from tasks.evaluate.m5 import randomized_coverage

    rng = np.random.default_rng(0)
    law = stats.nbinom(0.8, 0.8 / (0.8 + 0.6))  # mean 0.6: two thirds zeros
    y = law.rvs(size=200_000, random_state=rng)
    below, at_most = law.cdf(y - 1), law.cdf(y)
    assert randomized_coverage(below, at_most, 0.5) == pytest.approx(0.5, abs=0.005)
    assert randomized_coverage(below, at_most, 0.9) == pytest.approx(0.9, abs=0.005)
    # the closed interval of the same calibrated law covers far more than half
    assert np.mean((y >= law.ppf(0.25)) & (y <= law.ppf(0.75))) > 0.6
    # a forecast too narrow for these counts (Poisson, the same mean) covers less
    narrow = stats.poisson(0.6)
    assert randomized_coverage(narrow.cdf(y - 1), narrow.cdf(y), 0.9) < 0.87


def test_calibrated_coverage_sd_bounds_the_spread_of_a_calibrated_forecasts_coverage() -> None:
    from scipy import stats

    from tasks.evaluate.m5 import randomized_coverage
    from tasks.evaluate.panel_metrics import calibrated_coverage_sd

    rng = np.random.default_rng(1)
    n_cells, trials = 84, 2_000  # a level of 3 groups x 28 days
    # small counts tie often, which the randomization smooths: below the bound; large ones reach it
    for mean, lowest_ratio in ((3.0, 0.6), (500.0, 0.95)):
        law = stats.nbinom(5.0, 5.0 / (5.0 + mean))
        y = law.rvs(size=(trials, n_cells), random_state=rng)
        below, at_most = law.cdf(y - 1), law.cdf(y)
        for central in (0.5, 0.9):
            shares = np.array([randomized_coverage(below[i], at_most[i], central) for i in range(trials)])
            bound = calibrated_coverage_sd(n_cells, central)
            assert shares.mean() == pytest.approx(central, abs=0.005)
            assert lowest_ratio * bound < shares.std() <= 1.05 * bound, (mean, central, shares.std() / bound)
    with pytest.raises(ValueError, match="n_cells"):
        calibrated_coverage_sd(0, 0.5)
    with pytest.raises(ValueError, match="central"):
        calibrated_coverage_sd(10, 1.0)
