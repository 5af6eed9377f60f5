"""tasks.backtest: the split keeps the scored days out of the fit; scores on hand-computed cases; champion gates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import jax
import numpy as np
import polars as pl
import pytest

from tasks import names as n
from tasks.backtest import default_origin, run_backtest, score, score_rows, split_at
from tasks.config import ChampionGates, FitConfig, ForecastConfig
from tasks.validate import read_validated

FIT = FitConfig(max_steps=300, local_max_steps=200)
FORECAST = ForecastConfig(num_draws=100)


@pytest.fixture(scope="module")
def inputs(tiny_demo_files: dict[str, Path]):
    return read_validated(tiny_demo_files["train"], tiny_demo_files["stores"])


def test_split_keeps_the_horizon_out_of_the_history(inputs) -> None:
    train = inputs.train
    origin = default_origin(train, 14)
    assert origin == train[n.DATE].max() - dt.timedelta(days=13)
    split = split_at(train, origin, 14)
    assert split.history[n.DATE].max() < origin
    assert split.calendar[n.DATE].min() == origin and split.calendar[n.DATE].max() == train[n.DATE].max()
    assert n.SALES not in split.calendar.columns and n.CUSTOMERS not in split.calendar.columns
    assert split.history.height + split.actual.height == train.height
    assert split.actual.height == split.calendar.height


def test_split_refuses_an_empty_side(inputs) -> None:
    train = inputs.train
    with pytest.raises(ValueError, match="no train rows before"):
        split_at(train, train[n.DATE].min(), 14)
    with pytest.raises(ValueError, match="no train rows from"):
        split_at(train, train[n.DATE].max() + dt.timedelta(days=1), 14)
    with pytest.raises(ValueError, match="horizon_days"):
        split_at(train, train[n.DATE].max(), 0)


def _frame(actual: list[float], mean: list[float], q: dict[str, list[float]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(len(actual))]
    forecast = pl.DataFrame({n.STORE: [1] * len(actual), n.DATE: days, n.MEAN: mean, **q})
    actuals = pl.DataFrame({n.STORE: [1] * len(actual), n.DATE: days, n.SALES: actual, n.OPEN: [1] * len(actual)})
    return forecast, actuals


def test_scores_on_a_hand_computed_case() -> None:
    q = {"q05": [50.0, 100.0], "q25": [80.0, 150.0], "q50": [90.0, 200.0], "q75": [120.0, 210.0], "q95": [130.0, 400.0]}
    forecast, actual = _frame([100.0, 200.0], [110.0, 180.0], q)
    scores = score(score_rows(forecast, actual))
    # RMSPE of the mean: errors 10% and 10%.
    assert scores["rmspe"] == pytest.approx(0.1)
    # Median: errors 10% and 0%: RMSPE sqrt(0.01 / 2), MAPE 5%.
    assert scores["rmspe_median"] == pytest.approx(np.sqrt(0.005))
    assert scores["mape"] == pytest.approx(0.05)
    # 50% interval [q25, q75]: 100 in [80, 120], 200 in [150, 210]; 90%: both inside.
    assert scores["coverage_50"] == 1.0 and scores["coverage_90"] == 1.0
    # Pinball losses, by level (actual - q > 0: level * diff, else (level - 1) * diff):
    losses = {
        0.05: (0.05 * 50 + 0.05 * 100) / 2,
        0.25: (0.25 * 20 + 0.25 * 50) / 2,
        0.5: (0.5 * 10 + 0.0) / 2,
        0.75: (0.25 * 20 + 0.25 * 10) / 2,
        0.95: (0.05 * 30 + 0.05 * 200) / 2,
    }
    assert scores["wql"] == pytest.approx(np.mean(list(losses.values())) / 150.0)


def test_closed_and_zero_sales_days_are_not_scored() -> None:
    q = {c: [100.0, 1.0, 100.0] for c in ("q05", "q25", "q50", "q75", "q95")}
    forecast, actual = _frame([100.0, 0.0, 50.0], [100.0, 5.0, 100.0], q)
    actual = actual.with_columns(pl.Series(n.OPEN, [1, 1, 0]))
    scores = score(score_rows(forecast, actual))
    assert scores["n_scored"] == 1 and scores["rmspe"] == 0.0


def test_champion_gates() -> None:
    good = {"rmspe": 0.11, "wql": 0.03, "coverage_50": 0.55, "coverage_90": 0.92}
    assert ChampionGates().failures(good) == []
    failures = ChampionGates(max_rmspe=0.1, max_wql=0.02, max_coverage_error=0.04).failures(good)
    assert len(failures) == 3 and any("RMSPE" in f for f in failures) and any("coverage_50" in f for f in failures)
    assert ChampionGates(max_rmspe=None, max_coverage_error=None).failures({**good, "rmspe": float("nan")}) == []
    assert ChampionGates().failures({**good, "rmspe": float("nan")})  # NaN never passes a gate


@pytest.mark.slow
def test_a_planted_leak_in_the_scored_days_does_not_reach_the_fit(inputs) -> None:
    """Sales of the scored days multiplied by 10 change the scores, never the forecast."""
    train, horizon = inputs.train, 14
    origin = default_origin(train, horizon)
    leaked = train.with_columns(
        pl.when(pl.col(n.DATE) >= origin).then(pl.col(n.SALES) * 10).otherwise(pl.col(n.SALES)).alias(n.SALES)
    )
    key = jax.random.key(5)
    clean = run_backtest(train, inputs.stores, FIT, FORECAST, key, horizon)
    planted = run_backtest(leaked, inputs.stores, FIT, FORECAST, key, horizon)
    columns = [n.STORE, n.DATE, n.MEAN, "q05", "q50", "q95"]
    assert clean.scored.select(columns).equals(planted.scored.select(columns))
    assert planted.metrics["rmspe"] > 0.8 > clean.metrics["rmspe"]  # the leak is there to be seen in the actuals
