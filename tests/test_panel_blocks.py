"""A panel read, validated and encoded a few stores at a time into series blocks, and fitted from them
(issue 11, item 2): the same encoding and arrays as the in-memory path, every part's broken rules in one
report, and `bhm train --series-blocks` saving a model that `bhm forecast` uses."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import polars as pl
import pytest
from mlflow import MlflowClient

from flows import cli
from tasks.config import PanelFitConfig, SeriesBlocksConfig
from tasks.data.panel_blocks import encode_to_blocks
from tasks.data.panel_demo import generate_panel_demo
from tasks.data.panel_encode import encode_panel
from tasks.data.panel_ingest import read_panel, sales_stores
from tasks.data.series_blocks import SeriesBlocks
from tasks.data.spec import load_spec
from tasks.data.validate import InputValidationError
from tasks.panel_blocks_pipeline import train_from_blocks
from tasks.panel_pipeline import structure_for


@pytest.fixture(autouse=True)
def bhm_home(cli_home: Path) -> Path:
    return cli_home


@pytest.fixture(scope="module")
def panel_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    demo = generate_panel_demo(seed=2, n_stores=6, n_departments=2, products_per_department=3, n_weeks=60, horizon=4)
    return demo.write(tmp_path_factory.mktemp("panel"))


def _assert_blocks_hold_the_history(blocks, history) -> list[np.ndarray]:
    """Each block's arrays are the in-memory history's rows of its series; returns each block's series."""
    seen = []
    for block in SeriesBlocks(blocks.directory):
        np.testing.assert_array_equal(block.y, history.y[block.series])
        np.testing.assert_array_equal(block.observed, history.observed[block.series])
        np.testing.assert_array_equal(block.x_series, history.x_series[block.series])
        seen.append(block.series)
    return seen


def test_parts_of_the_stores_encode_as_the_whole_panel_does(panel_files, tmp_path) -> None:
    spec, data = load_spec(panel_files["spec"]), panel_files["spec"].parent
    encoded = encode_panel(read_panel(spec, data))
    parts: list[str] = []
    blocks = encode_to_blocks(spec, data, tmp_path / "blocks", block_size=5, stores_per_part=4, on_part=parts.append)
    assert len(sales_stores(spec, data)) == 6
    assert [p.split(" (")[0].split(":")[0] for p in parts] == ["validate part 1/2", "validate part 2/2", "encode part 1/2", "encode part 2/2", "write 8 series blocks"]
    rows = [int(p.split(", ")[1].split(" rows")[0].replace(",", "")) for p in parts[:2]]
    assert sum(rows) == pl.read_csv(panel_files["sales"]).height and "(4 stores" in parts[0] and "(24 series)" in parts[2]
    assert blocks.encoding == encoded.encoding
    for name in ("series_store", "series_product", "store_groups", "product_groups", "store_attributes", "product_attributes"):
        np.testing.assert_array_equal(getattr(blocks.dims, name), getattr(encoded.dims, name))
    history = encoded.history
    seen = _assert_blocks_hold_the_history(blocks, history)
    for series in seen:
        # a block is a cross-section: a shuffle of the series, not one store's or part's run of them
        assert series.size == 1 or np.unique(blocks.dims.series_store[series]).size > 1
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(36))
    assert blocks.totals.n_observed == int(history.observed.sum())
    assert blocks.totals.target_sum == pytest.approx(float(history.y[history.observed].sum()))
    np.testing.assert_array_equal(blocks.x_time, history.x_time)


def test_every_parts_broken_rules_are_reported_at_once_and_nothing_is_written(panel_files, tmp_path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    for role in ("stores", "products", "spec"):
        (folder / panel_files[role].name).write_bytes(panel_files[role].read_bytes())
    sales = pl.read_csv(panel_files["sales"], infer_schema=False)
    stores = sorted(sales["store_id"].unique().to_list())
    first_of = {store: sales.with_row_index().filter(pl.col("store_id") == store)["index"][0] for store in (stores[0], stores[-1])}
    bad_price = pl.int_range(pl.len()) == first_of[stores[0]]
    bad_units = pl.int_range(pl.len()) == first_of[stores[-1]]
    sales.with_columns(
        pl.when(bad_price).then(pl.lit("0")).otherwise(pl.col("price")).alias("price"),
        pl.when(bad_units).then(pl.lit("many")).otherwise(pl.col("units")).alias("units"),
    ).write_csv(folder / "sales.csv")
    spec = load_spec(folder / "spec.yaml")
    with pytest.raises(InputValidationError) as raised:
        encode_to_blocks(spec, folder, tmp_path / "blocks", stores_per_part=1)
    failures = {(f.column, f.rows) for f in raised.value.report.failures}
    # the rows are the file's own (data rows counted from 1), though each part read only its stores' rows
    assert ("price", (first_of[stores[0]] + 1,)) in failures and ("units", (first_of[stores[-1]] + 1,)) in failures
    assert not (tmp_path / "blocks").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["broken"]  # no staging folder left behind


def test_a_future_table_is_validated_with_the_parts_and_its_new_series_join_the_encoding(panel_files, tmp_path) -> None:
    spec = load_spec(panel_files["spec"])
    future = pl.read_csv(panel_files["future"], infer_schema=False)
    sales = pl.read_csv(panel_files["sales"], infer_schema=False)
    stores = sorted(sales["store_id"].unique().to_list())
    # series the history lacks: one of the first store's products (its sales rows dropped), and every product of
    # a new store (the last: no sales rows at all); a run forecasts them from their groups. The second store closed:
    # it has sales and no future rows.
    dropped = sorted(set(sales.filter(pl.col("store_id") == stores[0])["item_id"].to_list()))[0]
    folder = tmp_path / "data"
    folder.mkdir()
    for role in ("stores", "products", "spec"):
        (folder / panel_files[role].name).write_bytes(panel_files[role].read_bytes())
    lost = ((pl.col("store_id") == stores[0]) & (pl.col("item_id") == dropped)) | (pl.col("store_id") == stores[-1])
    sales.filter(~lost).write_csv(folder / "sales.csv")
    future_path = folder / panel_files["future"].name
    future.filter(pl.col("store_id") != stores[1]).write_csv(future_path)
    encoded = encode_panel(read_panel(spec, folder, future_path))
    parts: list[str] = []
    blocks = encode_to_blocks(spec, folder, tmp_path / "blocks", block_size=5, stores_per_part=2, future=future_path, on_part=parts.append)
    assert blocks.encoding == encoded.encoding and blocks.encoding.n_series == 36
    kept = sales.filter(~lost)
    rows = [kept.filter(pl.col("store_id").is_in(part)).height for part in (stores[:2], stores[2:4], stores[4:5])]
    assert [p.split(":")[0] for p in parts if p.startswith("validate")] == [
        f"validate part 1/4 (2 stores, {rows[0]:,} rows)", f"validate part 2/4 (2 stores, {rows[1]:,} rows)",
        f"validate part 3/4 (1 store, {rows[2]:,} rows)", "validate part 4/4 (1 new store, 0 rows)",
    ]
    assert blocks.totals.n_observed == int(encoded.history.observed.sum())
    _assert_blocks_hold_the_history(blocks, encoded.history)
    new_store = blocks.dims.series_store == [str(k) for k in blocks.encoding.store_keys].index(stores[-1])
    assert new_store.sum() == 6 and not encoded.history.observed[new_store].any()

    # broken future rows, a new store's too, are reported with the history's, before anything is encoded
    broken = tmp_path / "broken_future.csv"
    first_new = future.with_row_index().filter(pl.col("store_id") == stores[-1])["index"][0]
    last_sold = kept["week"].max()
    bad_price, bad_week = pl.int_range(pl.len()) == 2, pl.int_range(pl.len()) == first_new
    future.with_columns(
        pl.when(bad_price).then(pl.lit("free")).otherwise(pl.col("price")).alias("price"),
        pl.when(bad_week).then(pl.lit(last_sold)).otherwise(pl.col("week")).alias("week"),
    ).write_csv(broken)
    with pytest.raises(InputValidationError) as raised:
        encode_to_blocks(spec, folder, tmp_path / "blocks2", future=broken)
    failures = {(f.file, f.column, f.rows) for f in raised.value.report.failures}
    assert failures == {(str(broken), "price", (3,)), (str(broken), "week", (first_new + 1,))}
    assert not (tmp_path / "blocks2").exists()
    # a future table without rows is refused as in memory, though every part of it may be empty
    header_only = tmp_path / "empty_future.csv"
    future.head(0).write_csv(header_only)
    with pytest.raises(InputValidationError, match="at least one data row"):
        encode_to_blocks(spec, folder, tmp_path / "blocks3", future=header_only)


def test_a_fit_from_blocks_has_the_in_memory_fits_structure_and_sees_every_series(panel_files, tmp_path) -> None:
    spec, data = load_spec(panel_files["spec"]), panel_files["spec"].parent
    config = PanelFitConfig(max_steps=300, chunk_steps=50)
    blocks, fitted, fit = train_from_blocks(
        spec, data, config, SeriesBlocksConfig(block_size=8, blocks_per_pool=2), jax.random.key(0), on_progress=lambda p: None
    )
    expected = structure_for(encode_panel(read_panel(spec, data)), spec, config)
    assert fitted.structure.coef_names == expected.coef_names
    assert fitted.structure.log_offset == pytest.approx(expected.log_offset, abs=1e-5)
    assert fitted.structure == expected.__class__(**{**expected.__dict__, "log_offset": fitted.structure.log_offset})
    assert fitted.encoding.n_series == 36 and fit.n_steps == 300
    assert all(np.isfinite(v).all() for v in fitted.params.values())
    # every series' parameters moved from the warm start's zero scale deviation: each was in some pool
    assert (np.abs(fitted.params["series_latent.scale"] - 0.05).max(axis=1) > 1e-3).all()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_train_from_series_blocks_then_forecast(panel_files, bhm_home, tmp_path, capsys) -> None:
    data = ["--spec", str(panel_files["spec"]), "--data", str(panel_files["spec"].parent)]
    model = tmp_path / "model"
    argv = ["train", *data, "--state-dir", str(model), "--max-steps", "200", "--block-size", "8", "--blocks-per-pool", "2"]
    assert cli.main(argv) == 0
    assert "fit: 36 series, 200 steps" in capsys.readouterr().out
    client = MlflowClient(f"sqlite:///{bhm_home / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()], "attributes.run_name LIKE 'panel-train%'")
    assert run.data.tags["series_blocks"] == "yes"
    assert "effect_price_product.png" in {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "panel_shock_scale_ahead_store" in run.data.metrics  # estimated from the blocks on disk
    out = tmp_path / "forecast.parquet"
    forecast = ["forecast", *data, "--future", str(panel_files["future"]), "--model-dir", str(model), "--out", str(out), "--num-draws", "100"]
    assert cli.main([*forecast, "--no-tracking"]) == 0
    frame = pl.read_parquet(out)
    assert frame.filter(pl.col("level") == "series").height == 36 * 4
    assert frame["mean"].is_finite().all()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_run_from_series_blocks_forecasts_as_its_saved_model_does(panel_files, tmp_path, capsys) -> None:
    data = ["--spec", str(panel_files["spec"]), "--data", str(panel_files["spec"].parent)]
    future = ["--future", str(panel_files["future"]), "--num-draws", "100", "--seed", "3", "--no-tracking"]
    ran = tmp_path / "run.parquet"
    argv = ["run", *data, *future, "--out", str(ran), "--max-steps", "200", "--block-size", "8", "--blocks-per-pool", "2"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "fit: 36 series, 200 steps" in out and "encode_and_fit" in out
    model = tmp_path / "run.model"
    assert (model / "params.npz").is_file()
    again = tmp_path / "again.parquet"
    assert cli.main(["forecast", *data, *future, "--model-dir", str(model), "--out", str(again)]) == 0
    run_frame = pl.read_parquet(ran)
    assert run_frame.filter(pl.col("level") == "series").height == 36 * 4
    assert run_frame.equals(pl.read_parquet(again))


def test_series_blocks_are_refused_for_the_rossmann_layout(tiny_demo_files, tmp_path, capsys) -> None:
    argv = ["train", "--train", str(tiny_demo_files["train"]), "--stores", str(tiny_demo_files["stores"]), "--state-dir", str(tmp_path / "m")]
    argv += ["--series-blocks"]
    assert cli.main(argv) == 2
    assert "--series-blocks: series blocks are for a panel spec (--spec), not the Rossmann layout" in capsys.readouterr().err
