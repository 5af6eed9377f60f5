"""The M5-shaped generator: M5's shape and scaling, intermittent demand, launches, files that pass the
spec's validation, determinism for a seed, and `bhm demo --shape m5`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from flows import cli
from tasks.data.m5_demo import M5_SPEC, M5Shape, write_m5_demo
from tasks.data.panel_ingest import read_panel
from tasks.data.spec import parse_spec

N_SERIES, N_DAYS = 210, 180


@pytest.fixture(scope="module")
def m5(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_m5_demo(tmp_path_factory.mktemp("m5"), n_series=N_SERIES, n_days=N_DAYS, seed=4)


def test_the_default_shape_is_m5s_and_more_series_add_stores() -> None:
    assert (M5Shape.for_series().n_stores, M5Shape.for_series().n_items) == (10, 3_049)
    ten_times = M5Shape.for_series(304_900)
    assert (ten_times.n_stores, ten_times.n_items) == (100, 3_049)
    assert (M5Shape.for_series(N_SERIES).n_stores, M5Shape.for_series(N_SERIES).n_items) == (10, 21)
    with pytest.raises(ValueError, match="n_series must be >= 10"):
        M5Shape.for_series(5)


def test_files_pass_the_specs_validation_with_m5s_hierarchies(m5: dict[str, Path]) -> None:
    assert m5["spec"].read_text() == M5_SPEC
    tables = read_panel(parse_spec(M5_SPEC, "m5"), m5["spec"].parent, m5["future"])
    assert tables.stores["state_id"].unique().sort().to_list() == ["CA", "TX", "WI"]
    assert tables.stores.height == 10
    assert tables.products["dept_id"].n_unique() == 7 and tables.products["cat_id"].n_unique() == 3
    series = tables.sales.select("store", "product").unique().height
    assert series == 10 * 21
    future_days = tables.future.group_by("store", "product").len()["len"]
    assert (future_days == 28).all()


def test_demand_is_intermittent_and_items_launch_during_the_history(m5: dict[str, Path]) -> None:
    sales = pl.read_parquet(m5["sales"])
    assert (sales["sales"] == 0).mean() > 0.5
    assert (sales["sales"] <= 3).mean() > 0.85
    first = sales.group_by("item_id").agg(pl.col("date").min())["date"]
    assert (first > first.min()).sum() >= 1  # launched after the first day: no rows before
    prices = sales.group_by("store_id", "item_id").agg(pl.col("sell_price").n_unique())["sell_price"]
    assert (prices > 1).mean() > 0.5  # prices change
    truth = pl.read_parquet(m5["truth"])
    assert {"sales", "true_mean", "sell_price"} <= set(truth.columns) and truth.height == pl.read_parquet(m5["future"]).height
    with np.load(m5["truth_params"], allow_pickle=False) as params:
        assert params["elasticity"].shape == (21,) and (params["elasticity"] < 0).mean() > 0.9


def test_the_inventory_covers_every_future_series_and_passes_its_rules(m5: dict[str, Path]) -> None:
    from tasks.inventory.ingest import read_inventory

    spec = parse_spec(M5_SPEC, "m5")
    future = pl.read_parquet(m5["future"])
    series = list(future.select("store_id", "item_id").unique().sort("store_id", "item_id").iter_rows())
    periods = np.array(sorted(future["date"].unique().to_list()), dtype="datetime64[D]")
    policy = read_inventory(spec, m5["spec"].parent, series, periods).policy
    assert policy.n_series == len(series) == 10 * 21
    assert set(np.unique(policy.pack_size)) == {1.0, 6.0}
    assert (policy.lead_time == 2).all() and (policy.review_period == 7).all()
    np.testing.assert_allclose(policy.critical_ratio, 0.4 / (0.4 + 0.6 * 0.25), atol=0.02)  # price rounding


def test_the_same_seed_writes_the_same_data(m5: dict[str, Path], tmp_path: Path) -> None:
    again = write_m5_demo(tmp_path, n_series=N_SERIES, n_days=N_DAYS, seed=4)
    assert pl.read_parquet(again["sales"]).equals(pl.read_parquet(m5["sales"]))
    other = write_m5_demo(tmp_path / "other", n_series=N_SERIES, n_days=N_DAYS, seed=5)
    assert not pl.read_parquet(other["sales"]).equals(pl.read_parquet(m5["sales"]))


def test_bhm_demo_shape_m5(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--shape", "m5", "--series", "40", "--days", "60", "--out", str(tmp_path)]) == 0
    assert "spec: " in capsys.readouterr().out
    assert pl.read_parquet(tmp_path / "sales.parquet")["store_id"].n_unique() == 10
    assert cli.main(["demo", "--shape", "panel", "--series", "40", "--out", str(tmp_path / "p")]) == 2
    assert "--series and --days go with --shape m5" in capsys.readouterr().err


def test_bhm_demo_seed_draws_other_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--seed`` gives a second window of the same shape (to judge a model on more than one), the default the built-in."""
    small = ["demo", "--shape", "m5", "--series", "40", "--days", "60"]
    assert cli.main([*small, "--out", str(tmp_path / "a")]) == 0
    assert cli.main([*small, "--seed", "0", "--out", str(tmp_path / "b")]) == 0
    assert cli.main([*small, "--seed", "1", "--out", str(tmp_path / "c")]) == 0
    sales = [pl.read_parquet(tmp_path / name / "sales.parquet") for name in "abc"]
    assert sales[0].equals(sales[1]) and not sales[0].equals(sales[2])
    capsys.readouterr()
    assert cli.main([*small, "--seed", "-1", "--out", str(tmp_path / "d")]) == 2
    assert "--seed must be >= 0, got -1" in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_a_failed_write_leaves_no_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.data.m5_demo as m5_demo

    prices = m5_demo._weekly_prices
    calls = []

    def broken(*args, **kwargs):  # the third store fails, after two stores' rows were written
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return prices(*args, **kwargs)

    monkeypatch.setattr(m5_demo, "_weekly_prices", broken)
    with pytest.raises(OSError, match="disk full"):
        write_m5_demo(tmp_path, n_series=20, n_days=60)
    assert list(tmp_path.iterdir()) == []
