"""tasks.evaluate.backtest and tasks.evaluate.baselines: the split keeps the scored days out of the fit; scores on hand-computed
cases; PIT and CRPS from draws; baselines on the same rows; champion gates."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import polars as pl
import pytest

from tasks import names as n
from tasks.config import COLD_START_WINDOW_DAYS, ChampionGates, FitConfig, ForecastConfig
from tasks.data.encode import build_spec, encode
from tasks.data.validate import read_validated
from tasks.evaluate.backtest import (
    DrawScores,
    default_origin,
    pit_histogram,
    randomized_pit,
    rmspe_ratio_interval,
    run_backtest,
    score,
    score_rows,
    split_at,
    store_bootstrap,
)
from tasks.evaluate.baselines import BASELINES, median_by_weekday
from tasks.evaluate.coldstart_curve import first_days, held_out_stores
from tasks.track.report import measured_sections, methods_table

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


def test_a_new_store_is_given_its_most_recent_days_and_nothing_from_the_horizon(inputs) -> None:
    split = split_at(inputs.train, default_origin(inputs.train, 14), 14)
    for n_days in (1, 7):
        given = first_days(split.history, split.origin, n_days)
        dates = sorted(set(given[n.DATE].to_list()))
        assert dates == [split.origin - dt.timedelta(days=d) for d in range(n_days, 0, -1)]
        assert given.height == split.history.filter(pl.col(n.DATE) >= dates[0]).height


def test_held_out_stores_are_seeded_and_were_open_before_the_origin(inputs) -> None:
    split = split_at(inputs.train, default_origin(inputs.train, 14), 14)
    held = held_out_stores(split, 5, seed=3)
    assert held.tolist() == held_out_stores(split, 5, seed=3).tolist() != held_out_stores(split, 5, seed=4).tolist()
    window = split.history.filter(pl.col(n.STORE).is_in(held.tolist()), pl.col(n.DATE) >= split.origin - dt.timedelta(days=COLD_START_WINDOW_DAYS))
    assert set(window.filter(pl.col(n.OPEN) == 1)[n.STORE].unique().to_list()) == set(held.tolist())
    with pytest.raises(ValueError, match="can be held out"):
        held_out_stores(split, split.history[n.STORE].n_unique(), seed=0)


def _rows_per_store(n_stores: int, days: int, error: np.ndarray, inside: np.ndarray) -> pl.DataFrame:
    """Scored rows: store s has sales 100 and mean 100 * (1 - error[s]); its intervals hold the sales when inside[s]."""
    store = np.repeat(np.arange(n_stores), days)
    mean = 100.0 * (1.0 - error[store])
    half = np.where(inside[store], 1.0, -1.0)  # an interval that misses lies above the sales
    return pl.DataFrame(
        {
            n.STORE: store,
            n.DATE: [dt.date(2024, 1, 1) + dt.timedelta(days=int(d)) for d in np.tile(np.arange(days), n_stores)],
            n.SALES: np.full(store.size, 100.0),
            n.MEAN: mean,
            **{n.quantile_column(q): 100.0 + (1.0 - half) * 5 + (q - 0.5) for q in (0.05, 0.25, 0.5, 0.75, 0.95)},
            "scored": np.ones(store.size, bool),
        }
    )


def test_store_bootstrap_resamples_stores_not_days() -> None:
    same = _rows_per_store(50, 10, np.full(50, 0.1), np.ones(50, bool))
    assert store_bootstrap(same) == {"rmspe_se": pytest.approx(0.0, abs=1e-12), "coverage_50_se": 0.0, "coverage_90_se": 0.0}
    # Half the stores always inside, half never: coverage 0.5 with the standard error of a mean over
    # 100 stores, sqrt(0.25 / 100) = 0.05, however many days each store has.
    halves = _rows_per_store(100, 30, np.full(100, 0.1), np.arange(100) % 2 == 0)
    assert score(halves)["coverage_50"] == 0.5
    assert store_bootstrap(halves, seed=1)["coverage_50_se"] == pytest.approx(0.05, rel=0.15)


def test_rmspe_ratio_interval_is_paired_over_stores() -> None:
    rng = np.random.default_rng(0)
    error = rng.uniform(0.0, 0.3, 40)
    rows = _rows_per_store(40, 5, error, np.ones(40, bool))
    assert rmspe_ratio_interval(rows, rows) == pytest.approx((1.0, 1.0))
    doubled = _rows_per_store(40, 5, 2 * error, np.ones(40, bool))
    assert rmspe_ratio_interval(doubled, rows) == pytest.approx((2.0, 2.0))


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


def test_randomized_pit_is_uniform_for_a_calibrated_count_forecast() -> None:
    rng = np.random.default_rng(0)
    rate = rng.uniform(2.0, 30.0, size=4000)
    y = rng.poisson(rate).astype(float)
    ensemble = rng.poisson(rate[:, None], size=(4000, 2000)).astype(float)
    hist = pit_histogram(randomized_pit(y, ensemble, rng))
    assert np.abs(hist - 0.1).max() < 0.02
    too_narrow = randomized_pit(y, np.repeat(rate[:, None], 50, axis=1).round(), rng)
    assert pit_histogram(too_narrow)[[0, -1]].sum() > 0.4  # U-shaped: intervals too narrow


def test_draw_scores_crps_is_zero_for_a_perfect_forecast_and_grows_with_the_error(tiny_demo_files) -> None:
    inputs = read_validated(tiny_demo_files["train"], tiny_demo_files["stores"])
    split = split_at(inputs.train, default_origin(inputs.train, 7), 7)
    future = encode(split.history, inputs.stores, split.calendar, build_spec(inputs.stores)).future
    truth = DrawScores(future, split.actual)
    sales = np.nan_to_num(truth.sales)
    truth(np.arange(future.n_stores), np.repeat(sales[None], 20, axis=0))
    off = DrawScores(future, split.actual)
    off(np.arange(future.n_stores), np.repeat(sales[None] + 100.0, 20, axis=0))
    perfect, shifted = truth.frame(), off.frame()
    assert perfect.height == split.actual.filter((pl.col(n.OPEN) == 1) & (pl.col(n.SALES) > 0)).height
    assert perfect["crps"].max() == 0.0 and np.allclose(shifted["crps"].to_numpy(), 100.0)


def test_median_by_weekday_is_the_recent_same_weekday_median(inputs) -> None:
    split = split_at(inputs.train, default_origin(inputs.train, 7), 7)
    encoded = encode(split.history, inputs.stores, split.calendar, build_spec(inputs.stores))
    forecast = median_by_weekday(encoded.history, encoded.future, weeks=4)
    store = int(encoded.future.stores[0])
    day = encoded.future.dates[0].astype(dt.date)
    recent = split.history.filter(
        (pl.col(n.STORE) == store)
        & (pl.col(n.DATE) > split.origin - dt.timedelta(days=29))
        & (pl.col(n.DATE).dt.weekday() == day.isoweekday())
        & (pl.col(n.OPEN) == 1)
        & (pl.col(n.SALES) > 0)
    )
    assert forecast.mean[0, 0] == pytest.approx(float(np.median(recent[n.SALES].to_numpy())))


def test_methods_table_lists_every_method() -> None:
    table = methods_table({"model": {"rmspe": 0.1, "coverage_50": 0.5}, "lightgbm": {"rmspe": 0.2}})
    lines = table.strip().splitlines()
    assert lines[0].startswith("| method | RMSPE") and lines[2].startswith("| model | 0.1000") and "50.0%" in lines[2]
    assert lines[3].startswith("| lightgbm | 0.2000")


@pytest.mark.slow
def test_baselines_are_scored_on_the_same_rows_as_the_model(inputs) -> None:
    result = run_backtest(inputs.train, inputs.stores, FIT, FORECAST, jax.random.key(1), 14, baselines=tuple(BASELINES))
    assert set(result.methods) == {"model", *BASELINES}
    counts = {m: s["n_scored"] for m, s in result.methods.items()}
    assert len(set(counts.values())) == 1 and counts["model"] > 0
    for scores in result.methods.values():
        assert 0 < scores["crps_scaled"] < 1 and 0 <= scores["coverage_90"] <= 1
    scored = result.scored.filter(pl.col("scored"))
    keys = [set(scored.filter(pl.col("method") == m).select(n.STORE, n.DATE).iter_rows()) for m in result.methods]
    assert all(k == keys[0] for k in keys)


def test_the_evaluation_script_refuses_a_file_it_cannot_tell_apart_before_running_anything(tmp_path: Path) -> None:
    report = tmp_path / "EVALUATION.md"
    report.write_text("# Notes\n\nmeasured by hand\n")
    script = Path(__file__).resolve().parents[1] / "bench" / "evaluation.py"
    done = subprocess.run([sys.executable, str(script), "--write", str(report), "--data", str(tmp_path / "absent")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode != 0 and "has no line '## Goals (issue 5)'" in done.stderr and "3 lines" in done.stderr
    assert report.read_text() == "# Notes\n\nmeasured by hand\n"


def test_regenerating_the_evaluation_keeps_the_measured_sections_after_it() -> None:
    goals = "## Goals (issue 5)"
    generated = f"# Evaluation\n\n## Backtest\n\n| a |\n\n{goals}\n\n- met\n"
    measured = "## Any retailer's data\n\nwalmart 0.0180\n\n### OJ\n\n## Replenishment\n\n0.943\n"
    assert measured_sections(generated + "\n" + measured, goals) == measured
    assert generated.endswith(goals + "\n\n- met\n") and measured_sections(generated, goals) == ""
    # a file without the generated part's last heading: no guess at where it ends (the script refuses to write)
    assert measured_sections(measured, goals) is None
    # the real file: the measured sections are its tail, the Rossmann through the year onwards
    text = (Path(__file__).resolve().parents[1] / "EVALUATION.md").read_text()
    kept = measured_sections(text, goals)
    assert text.endswith(kept) and kept.startswith("## ") and "## Replenishment by simulation (issue 12)" in kept
