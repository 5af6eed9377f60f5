"""bhm replenish: the inventory files' rules (every fault named by file, column, rule and rows; nothing
written), the spec's inventory section, and (slow) train -> replenish end to end with its MLflow run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from flows import cli
from tasks import names as n
from tasks.data.panel_demo import generate_panel_demo
from tasks.data.spec import SpecError, load_spec, parse_spec
from tasks.data.validate import InputValidationError
from tasks.inventory.ingest import RULE_LISTED, RULE_MARGIN, RULE_WITHIN_HORIZON, read_inventory

HORIZON = 6
INVENTORY_SECTION = """inventory:
  file: inventory.csv
  on_hand: on_hand
  lead_time: lead_time
  review_period: review_period
  pack_size: pack_size
  min_order: 0
  price: price
  unit_cost: unit_cost
  holding_rate: 0.25
  open_orders: {file: open_orders.csv, period: week, quantity: units}
"""


@pytest.fixture(autouse=True)
def bhm_home(cli_home: Path) -> Path:
    return cli_home


def _inventory(keys: pl.DataFrame) -> pl.DataFrame:
    return keys.with_columns(
        on_hand=pl.lit(40.0), lead_time=pl.lit(1), review_period=pl.lit(2), pack_size=pl.lit(6), price=pl.lit(5.0), unit_cost=pl.lit(2.0)
    )


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The panel demo's files plus an inventory file, an open-orders file and the spec's inventory section."""
    demo = generate_panel_demo(seed=1, n_stores=3, n_departments=2, products_per_department=2, n_weeks=60, horizon=HORIZON)
    folder = tmp_path_factory.mktemp("shop")
    paths = demo.write(folder)
    keys = demo.future.select("store_id", "item_id").unique().sort("store_id", "item_id")
    _inventory(keys).write_csv(folder / "inventory.csv")
    second = demo.future["week"].unique().sort()[1]
    keys.head(2).with_columns(week=pl.lit(second), units=pl.lit(12)).write_csv(folder / "open_orders.csv")
    text = paths["spec"].read_text()
    paths["spec"].write_text(text[: text.index("\ninventory:") + 1] + INVENTORY_SECTION)  # the demo's own, with columns
    return paths


def test_the_demos_own_inventory_passes_its_rules(tmp_path: Path) -> None:
    demo = generate_panel_demo(seed=2, n_stores=3, n_departments=2, products_per_department=2, n_weeks=30, horizon=4)
    paths = demo.write(tmp_path)
    series, periods = _series_and_periods(paths)
    policy = read_inventory(load_spec(paths["spec"]), tmp_path, series, periods).policy
    assert policy.n_series == 12 and set(np.unique(policy.pack_size)) == {6.0, 12.0}
    assert policy.open_orders[:, 1].sum() > 0 and policy.open_orders[:, [0, 2, 3]].sum() == 0
    np.testing.assert_allclose(policy.critical_ratio, 0.4 / (0.4 + 0.15), atol=0.02)  # cents rounding


def _series_and_periods(shop: dict[str, Path]) -> tuple[list[tuple], np.ndarray]:
    future = pl.read_csv(shop["future"], try_parse_dates=True)
    keys = future.select("store_id", "item_id").unique().sort("store_id", "item_id")
    periods = np.array(sorted(future["week"].unique().to_list()), dtype="datetime64[D]")
    return list(keys.iter_rows()), periods


def _copy_with(shop: dict[str, Path], folder: Path, inventory: pl.DataFrame | None = None, open_orders: pl.DataFrame | None = None) -> Path:
    folder.mkdir(exist_ok=True)
    for name in ("sales.csv", "stores.csv", "products.csv", "future.csv", "spec.yaml", "inventory.csv", "open_orders.csv"):
        (folder / name).write_bytes((shop["spec"].parent / name).read_bytes())
    if inventory is not None:
        inventory.write_csv(folder / "inventory.csv")
    if open_orders is not None:
        open_orders.write_csv(folder / "open_orders.csv")
    return folder


def test_the_inventory_becomes_a_policy_in_the_order_asked_for(shop: dict[str, Path]) -> None:
    series, periods = _series_and_periods(shop)
    spec = load_spec(shop["spec"])
    inputs = read_inventory(spec, shop["spec"].parent, series[::-1], periods)
    policy = inputs.policy
    assert policy.n_series == len(series)
    np.testing.assert_allclose(policy.lost_sale_cost, 3.0)  # price - unit cost
    np.testing.assert_allclose(policy.leftover_cost, 0.5)  # unit cost x holding rate
    np.testing.assert_allclose(policy.critical_ratio, 3.0 / 3.5)
    # the first two series (in key order) get 12 units in the second forecast week; asked in reverse order
    assert policy.open_orders[-1, 1] == 12 and policy.open_orders[-2, 1] == 12 and policy.open_orders.sum() == 24


def _failures(shop: dict[str, Path], folder: Path, **files: pl.DataFrame) -> list:
    series, periods = _series_and_periods(shop)
    data = _copy_with(shop, folder, **files)
    with pytest.raises(InputValidationError) as caught:
        read_inventory(load_spec(data / "spec.yaml"), data, series, periods)
    return list(caught.value.report.failures)


def test_every_inventory_fault_is_reported_at_once_with_file_column_rule_and_rows(shop: dict[str, Path], tmp_path: Path) -> None:
    good = pl.read_csv(shop["spec"].parent / "inventory.csv")
    broken = good.with_columns(
        on_hand=pl.when(pl.int_range(pl.len()) == 1).then(-3.0).otherwise(pl.col("on_hand")),
        pack_size=pl.when(pl.int_range(pl.len()) == 2).then(0).otherwise(pl.col("pack_size")),
        lead_time=pl.when(pl.int_range(pl.len()) == 3).then(1.5).otherwise(pl.col("lead_time")),
        review_period=pl.when(pl.int_range(pl.len()) == 4).then(9).otherwise(pl.col("review_period")),
        unit_cost=pl.when(pl.int_range(pl.len()) == 5).then(6.0).otherwise(pl.col("unit_cost")),
    )
    broken = pl.concat([broken.head(6), broken.slice(7), broken.head(1)])  # row 7 missing, row 1 twice
    failures = _failures(shop, tmp_path / "broken", inventory=broken)
    found = {(f.column, f.rule): f for f in failures}
    assert all(f.file.endswith("inventory.csv") for f in failures)
    assert found[("on_hand", "on_hand >= 0")].rows == (2,)
    assert found[("pack_size", "pack_size > 0")].rows == (3,)
    assert found[("lead_time", "lead_time a whole number >= 0")].rows == (4,)
    assert found[("lead_time + review_period", f"{RULE_WITHIN_HORIZON} ({HORIZON} periods)")].rows == (5,)
    assert found[("price, unit_cost", RULE_MARGIN)].rows == (6,)
    assert found[("store_id, item_id", RULE_LISTED)].n_rows == 1
    assert found[("store_id, item_id", "one row per key")].n_rows == 2


def test_a_blank_cost_and_an_unparsable_stock_are_named(shop: dict[str, Path], tmp_path: Path) -> None:
    good = pl.read_csv(shop["spec"].parent / "inventory.csv").with_columns(pl.col("on_hand").cast(pl.String), pl.col("price").cast(pl.String))
    broken = good.with_columns(
        on_hand=pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("lots")).otherwise(pl.col("on_hand")),
        price=pl.when(pl.int_range(pl.len()) == 2).then(pl.lit(None)).otherwise(pl.col("price")),
    )
    failures = _failures(shop, tmp_path / "blank", inventory=broken)
    by_column = {f.column: f for f in failures}
    assert by_column["on_hand"].rows == (1,) and "parses" in by_column["on_hand"].rule
    assert by_column["price"].rows == (3,)


def test_an_open_order_due_before_the_first_forecast_period_is_refused(shop: dict[str, Path], tmp_path: Path) -> None:
    orders = pl.read_csv(shop["spec"].parent / "open_orders.csv").with_columns(week=pl.lit("2020-01-02"))
    failures = _failures(shop, tmp_path / "early", open_orders=orders)
    assert len(failures) == 1
    assert failures[0].file.endswith("open_orders.csv") and failures[0].column == "week" and failures[0].rows == (1, 2)
    assert "earlier arrivals belong in on_hand" in failures[0].rule


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("inventory:\n  file: i.csv\n  on_hand: s\n  lead_time: 1\n", "inventory costs are missing"),
        ("inventory:\n  file: i.csv\n  on_hand: s\n  lead_time: 1\n  price: 3\n  unit_cost: 1\n", "holding_rate missing"),
        ("inventory:\n  file: i.csv\n  on_hand: s\n  lead_time: 1\n  pack_size: 0\n  lost_sale_cost: 3\n  leftover_cost: 1\n", "pack_size = 0 must be > 0"),
        ("inventory:\n  file: i.csv\n  on_hand: -2\n  lead_time: 1\n  lost_sale_cost: 3\n  leftover_cost: 1\n", "on_hand = -2 must be >= 0"),
    ],
)
def test_a_bad_inventory_section_is_a_spec_error(shop: dict[str, Path], section: str, message: str) -> None:
    text = shop["spec"].read_text().replace(INVENTORY_SECTION, section)
    with pytest.raises(SpecError, match=message):
        parse_spec(text, "shop.yaml")


def test_replenish_needs_an_inventory_section(shop: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _copy_with(shop, tmp_path / "bare")
    (data / "spec.yaml").write_text(shop["spec"].read_text().replace(INVENTORY_SECTION, ""))
    out = tmp_path / "orders.parquet"
    argv = ["replenish", "--spec", str(data / "spec.yaml"), "--data", str(data), "--future", str(data / "future.csv")]
    code = cli.main([*argv, "--model-dir", str(tmp_path / "none"), "--out", str(out), "--no-tracking"])
    assert code == cli.EXIT_USAGE and "has no inventory section" in capsys.readouterr().err and not out.exists()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_train_then_replenish_writes_the_orders_and_tracks_them(shop: dict[str, Path], tmp_path: Path, bhm_home: Path) -> None:
    from mlflow import MlflowClient

    data = ["--spec", str(shop["spec"]), "--data", str(shop["spec"].parent)]
    model = tmp_path / "model"
    assert cli.main(["train", *data, "--seed", "1", "--max-steps", "200", "--no-tracking", "--state-dir", str(model)]) == 0
    out = tmp_path / "orders.parquet"
    common = [*data, "--future", str(shop["future"]), "--model-dir", str(model), "--num-draws", "200"]
    assert cli.main(["replenish", *common, "--out", str(out)]) == 0
    orders = pl.read_parquet(out)
    n_series = 3 * 4
    now = orders.filter(pl.col(n.PLACE_NOW))
    assert now.height == n_series and now["order_period"].n_unique() == 1
    # lead 1 + review 2 in a 6-week horizon: order days 0 and 2 (day 4 would need 7 weeks)
    assert orders.height == 2 * n_series
    assert (orders[n.ORDER_QUANTITY] == orders[n.PACKS] * 6).all() and (orders[n.PACKS] >= 0).all()
    assert ((orders[n.ARRIVAL_PERIOD] - orders[n.ORDER_PERIOD]).dt.total_days() == 7).all()
    assert orders[n.CRITICAL_RATIO].to_numpy() == pytest.approx(3.0 / 3.5)
    assert ((orders[n.FILL_RATE] >= 0) & (orders[n.FILL_RATE] <= 1)).all()
    assert (orders[n.CYCLE_SERVICE] >= 1.0 - orders[n.STOCKOUT_PROBABILITY] - 1e-9).all()
    client = MlflowClient(f"sqlite:///{bhm_home / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()], "attributes.run_name LIKE 'replenish%'")
    assert run.data.metrics["orders_series"] == n_series
    assert run.data.metrics["orders_cycle_service"] == pytest.approx(float(now[n.CYCLE_SERVICE].mean()), rel=1e-6)
    assert run.data.metrics["orders_expected_cost"] == pytest.approx(float(now[n.EXPECTED_COST].sum()), rel=1e-6)
    assert {"orders.png"} <= {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    assert [Path(a.path).name for a in client.list_artifacts(run.info.run_id, "orders")] == ["orders.parquet"]

    # a broken inventory: exit 1, the report, and the previous orders file left as it was
    before = out.read_bytes()
    broken = _copy_with(shop, tmp_path / "broken", inventory=_inventory(pl.read_csv(shop["spec"].parent / "inventory.csv").select("store_id", "item_id")).with_columns(pack_size=pl.lit(0)))
    argv = ["replenish", "--spec", str(broken / "spec.yaml"), "--data", str(broken), "--future", str(shop["future"])]
    assert cli.main([*argv, "--model-dir", str(model), "--out", str(out), "--no-tracking"]) == cli.EXIT_DATA
    assert out.read_bytes() == before
