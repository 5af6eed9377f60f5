"""The dataset spec: built-in specs, and every kind of broken spec named in its error."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from tasks.data.spec import (
    BUILTIN_SPECS,
    PanelSpec,
    RossmannSpec,
    SpecError,
    builtin_spec,
    dump_spec,
    load_spec,
    parse_spec,
    spec_files,
)

MINIMAL = """\
name: tiny
frequency: week
target_kind: units
sales: {file: sales.csv, period: week, store: store, product: item, target: units,
        covariates: [{name: price, column: "price{product}", kind: price}, {name: promo, column: promo}]}
products: {file: products.csv, key: item, hierarchy: [department]}
aggregates: [store, department, total]
"""


def _spec(extra: str = "", base: str = MINIMAL) -> PanelSpec:
    return parse_spec(base + textwrap.dedent(extra), "tiny.yaml")


@pytest.mark.parametrize("name", sorted(BUILTIN_SPECS))
def test_every_builtin_spec_parses_and_round_trips(name: str) -> None:
    spec = builtin_spec(name)
    assert parse_spec(dump_spec(spec), "dumped") == spec


def test_builtin_layouts() -> None:
    assert isinstance(builtin_spec("rossmann"), RossmannSpec)
    walmart = builtin_spec("walmart")
    assert isinstance(walmart, PanelSpec)
    assert (walmart.frequency, walmart.target_kind, walmart.negative_target) == ("week", "amount", "mask")
    oj = builtin_spec("dominicks_oj")
    assert oj.cross_price is not None and oj.covariates[0].per_product


def test_unknown_builtin_names_the_known_ones() -> None:
    with pytest.raises(SpecError, match="walmart"):
        builtin_spec("m6")


def test_defaults_of_a_minimal_spec() -> None:
    spec = _spec()
    assert spec.negative_target == "reject"
    assert spec.pooled_through("level") == ("store", "product")
    assert spec.period_days == 7 and spec.season_length == 52
    assert spec.aggregate_sides()["department"] == ("product", "department")
    assert spec.aggregate_sides()["item"] == ("product", None)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("frequency: month\n", "frequency: Input should be 'day' or 'week'"),
        ("target_kind: kilos\n", "target_kind"),
        ("negative_target: ignore\n", "negative_target"),
        ("aggregates: [region]\n", "aggregate 'region' is not a key, a hierarchy column or 'total'"),
        ("aggregates: [total, total]\n", "listed twice"),
        ("pooling: {elasticity: [product]}\n", "pooling names 'elasticity'"),
        ("pooling: {weekday: [store]}\n", "weekly data has no weekday profile"),
        ("cross_price: {price: promo}\n", "must name a price covariate"),
        ("cross_price: {price: price, within: brand}\n", "not a level of the product hierarchy"),
        ("colour: blue\n", "colour: Extra inputs are not permitted"),
        ("yearly_fourier_order: 40\n", "yearly_fourier_order"),
        ("shocks: [chain, region]\n", "shocks.1: Input should be 'chain', 'store' or 'product'"),
        ("shocks: [chain, chain]\n", "shocks are listed twice"),
        ("dispersion_covariates: [promo, weather]\n", "dispersion_covariates names ['weather'], which are not covariates"),
        ("dispersion_covariates: [cross_price]\n", "dispersion_covariates names ['cross_price']"),
        ("dispersion_covariates: [promo, promo]\n", "dispersion_covariates are listed twice"),
        ("level_walks: [store, store]\n", "level_walks are listed twice"),
        ("level_walks: [region]\n", "level_walks.0: Input should be 'chain', 'store' or 'product'"),
        ("recency_half_life: 0\n", "recency_half_life: Input should be greater than or equal to 1"),
    ],
)
def test_broken_specs_name_the_field_and_the_rule(extra: str, message: str) -> None:
    base = "\n".join(line for line in MINIMAL.splitlines() if not line.startswith(extra.split(":")[0] + ":")) + "\n"
    with pytest.raises(SpecError) as err:
        _spec(extra, base)
    assert "tiny.yaml" in str(err.value)
    assert message in str(err.value)


def test_product_pooling_needs_a_product_key() -> None:
    text = """\
name: stores_only
frequency: day
target_kind: units
sales: {file: s.csv, period: d, store: s, target: y}
pooling: {level: [product]}
"""
    with pytest.raises(SpecError, match="needs a product key"):
        parse_spec(text, "s.yaml")
    with pytest.raises(SpecError, match="product shocks need a product key"):
        parse_spec(text.replace("pooling: {level: [product]}", "shocks: [chain, product]"), "s.yaml")
    with pytest.raises(SpecError, match="a product level walk needs a product key"):
        parse_spec(text.replace("pooling: {level: [product]}", "level_walks: [product]"), "s.yaml")


def test_not_a_mapping_and_bad_yaml_and_unknown_layout() -> None:
    with pytest.raises(SpecError, match="a spec is a YAML mapping"):
        parse_spec("- a\n- b\n", "list.yaml")
    with pytest.raises(SpecError, match="not valid YAML"):
        parse_spec("name: [unclosed\n", "bad.yaml")
    with pytest.raises(SpecError, match="layout: must be 'panel' or 'rossmann'"):
        parse_spec("layout: m5\n", "m5.yaml")


def test_missing_spec_file_and_missing_data_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")
    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(MINIMAL)
    spec = load_spec(spec_path)
    (tmp_path / "sales.csv").write_text("week,store,item,units,promo\n")
    with pytest.raises(SpecError) as err:
        spec_files(spec, tmp_path)
    assert "products:" in str(err.value) and "products.csv" in str(err.value)
    assert "sales:" not in str(err.value)


def test_builtin_specs_name_files_that_exist_in_the_shared_data() -> None:
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not shared.is_dir():
        pytest.skip(f"no shared data folder at {shared}")
    for name in ("rossmann", "walmart", "dominicks_oj"):
        assert spec_files(builtin_spec(name), shared / name)


def test_dumped_spec_is_plain_yaml() -> None:
    raw = yaml.safe_load(dump_spec(builtin_spec("walmart")))
    assert raw["sales"]["target"] == "Weekly_Sales" and raw["layout"] == "panel"
