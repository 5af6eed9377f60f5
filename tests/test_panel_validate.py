"""tasks.data.panel_ingest: a tiny valid panel round-trips into the canonical frames; every rule, broken
alone, is reported where it broke (file, column, rule, rows); many faults are reported at once."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest

from tasks import names as n
from tasks.data import panel_rules as r
from tasks.data.panel_encode import encode_panel
from tasks.data.panel_ingest import PanelTables, read_panel
from tasks.data.spec import PRODUCT_SIDE, STORE_SIDE, PanelSpec, SpecError, parse_spec
from tasks.data.validate import RULE_COLUMN_PRESENT, RULE_NOT_EMPTY, InputValidationError, RuleFailure, ValidationReport
from tasks.names import FileRole
from tasks.panel_pipeline import key_labels

# ---------------------------------------------------------------------------
# fixture: 3 shops x 2 skus x 20 weeks (Fridays), a 4-week future, shops with a region and a state,
# skus with a department and a category, weekly events by state

SPEC = """\
name: tiny
layout: panel
frequency: week
target_kind: units
negative_target: mask
sales:
  file: sales.csv
  period: week
  store: shop
  product: sku
  target: qty
  covariates:
    - {name: price, column: "price{product}", kind: price}
    - {name: promo, column: promo, kind: flag}
stores:
  file: shops.csv
  key: shop
  hierarchy: [region]
  attributes:
    - {column: state, kind: category}
    - {column: area, kind: numeric, transform: log}
products:
  file: skus.csv
  key: sku
  hierarchy: [department, category]
  attributes:
    - {column: size, kind: numeric}
calendar:
  file: events.csv
  period: week
  by: state
  covariates:
    - {name: holiday, column: holiday, kind: flag}
aggregates: [region, category, total]
"""

Row = dict[str, str | None]  # None: a blank field

SALES, FUTURE, SHOPS, SKUS, EVENTS = "sales.csv", "future.csv", "shops.csv", "skus.csv", "events.csv"
ROLE_OF = {SALES: FileRole.SALES, FUTURE: FileRole.FUTURE, SHOPS: FileRole.STORES, SKUS: FileRole.PRODUCTS,
           EVENTS: FileRole.CALENDAR}
SHOP_IDS, SKU_IDS = (1, 2, 3), (1, 2)
STATES = {1: "NY", 2: "NJ", 3: "TX"}
N_WEEKS, N_FUTURE = 20, 4
FIRST_WEEK = dt.date(2024, 1, 5)  # a Friday
HOLIDAY_WEEK, HOLIDAY_STATE = 5, "NY"
NEGATIVE = (2, 1, 3)  # (shop, sku, week) of a return: qty -4
PROMO_TEXT = ("0", "1", "TRUE", "false")  # flags in any case


def week(i: int) -> str:
    return (FIRST_WEEK + dt.timedelta(weeks=i)).isoformat()


def price(sku: int, shop: int, w: int) -> str:
    return f"{1.5 + sku + 0.01 * shop + 0.001 * w:.3f}"


def sales_row(shop: int, sku: int, w: int) -> int:
    """1-based data row of (shop, sku, week) in sales.csv: week-major, as a till exports it."""
    return w * len(SHOP_IDS) * len(SKU_IDS) + SHOP_IDS.index(shop) * len(SKU_IDS) + SKU_IDS.index(sku) + 1


def future_row(shop: int, sku: int, w: int) -> int:
    return (w - N_WEEKS) * len(SHOP_IDS) * len(SKU_IDS) + SHOP_IDS.index(shop) * len(SKU_IDS) + SKU_IDS.index(sku) + 1


def series_rows(weeks: range, with_target: bool) -> list[Row]:
    rows = []
    for w in weeks:
        for shop in SHOP_IDS:
            for sku in SKU_IDS:
                row: Row = {"shop": str(shop), "sku": str(sku), "week": week(w), "department": f"D{sku}"}
                if with_target:
                    row["qty"] = "-4" if (shop, sku, w) == NEGATIVE else str(10 * shop + sku + w % 3)
                row |= {f"price{p}": price(p, shop, w) for p in SKU_IDS}
                row["promo"] = PROMO_TEXT[(w + shop) % len(PROMO_TEXT)]
                rows.append(row)
    return rows


def good_tables() -> dict[str, list[Row]]:
    return {
        SALES: series_rows(range(N_WEEKS), with_target=True),
        FUTURE: series_rows(range(N_WEEKS, N_WEEKS + N_FUTURE), with_target=False),
        SHOPS: [{"shop": str(s), "region": "North" if s < 3 else "South", "state": STATES[s], "area": str(100 * s)}
                for s in SHOP_IDS],
        SKUS: [{"sku": str(p), "department": f"D{p}", "category": "Juice", "size": str(32 * p)} for p in SKU_IDS],
        EVENTS: [{"week": week(w), "state": state, "holiday": "1" if (w, state) == (HOLIDAY_WEEK, HOLIDAY_STATE) else "0"}
                 for w in range(N_WEEKS + N_FUTURE) for state in STATES.values()],
    }


@dataclass
class Panel:
    """Editable raw files and spec; ``write`` puts them as CSV under a folder."""

    tables: dict[str, list[Row]] = field(default_factory=good_tables)
    spec: str = SPEC
    dropped: set[str] = field(default_factory=set)

    def set(self, file: str, row: int, column: str, value: str | None) -> None:
        self.tables[file][row - 1][column] = value

    def append_copy(self, file: str, row: int) -> None:
        self.tables[file].append(copy.deepcopy(self.tables[file][row - 1]))

    def rename_column(self, file: str, old: str, new: str) -> None:
        for row in self.tables[file]:
            row[new] = row.pop(old)

    def drop_column(self, file: str, column: str) -> None:
        for row in self.tables[file]:
            row.pop(column)

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for file, rows in self.tables.items():
            if file in self.dropped:
                continue
            columns = list(rows[0]) if rows else list(good_tables()[file][0])
            lines = [",".join(columns)] + [",".join(row[c] or "" for c in columns) for row in rows]
            (folder / file).write_text("\n".join(lines) + "\n")
        return folder


def read(tmp_path: Path, panel: Panel) -> PanelTables:
    folder = panel.write(tmp_path / "in")
    return read_panel(parse_spec(panel.spec), folder, future=folder / FUTURE)


def failing(tmp_path: Path, panel: Panel, error: type[Exception] = InputValidationError) -> ValidationReport:
    with pytest.raises(error) as info:
        read(tmp_path, panel)
    return info.value.report


def find(report: ValidationReport, role: FileRole, column: str | None, rule: str) -> RuleFailure:
    matches = [f for f in report.failures if (f.role, f.column, f.rule) == (role, column, rule)]
    assert len(matches) == 1, f"expected one {role.value}/{column}/{rule} failure in:\n{report.to_text()}"
    return matches[0]


def failure_keys(report: ValidationReport) -> set[tuple[FileRole, str | None, str]]:
    return {(f.role, f.column, f.rule) for f in report.failures}


# ---------------------------------------------------------------------------
# the valid panel


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> PanelTables:
    return read(tmp_path_factory.mktemp("good"), Panel())


def test_sales_are_canonical_typed_and_sorted(good: PanelTables) -> None:
    sales = good.sales
    assert sales.columns == [n.SERIES_STORE, n.SERIES_PRODUCT, n.PERIOD, n.TARGET, "price", "promo", "holiday",
                             "price1", "price2", n.ROW]
    assert sales.schema[n.SERIES_STORE] == pl.Int64 and sales.schema[n.SERIES_PRODUCT] == pl.Int64
    assert sales.schema[n.PERIOD] == pl.Date
    assert all(sales.schema[c] == pl.Float64 for c in (n.TARGET, "price", "promo", "holiday", "price1", "price2"))
    assert sales.height == len(SHOP_IDS) * len(SKU_IDS) * N_WEEKS
    keys = [n.SERIES_STORE, n.SERIES_PRODUCT, n.PERIOD]
    assert sales.select(keys).equals(sales.select(keys).sort(keys))
    first = sales.row(1, named=True)  # shop 1, sku 1, second week: row 7 of the file
    assert first[n.ROW] == sales_row(1, 1, 1) and first[n.PERIOD] == dt.date.fromisoformat(week(1))


def test_a_label_column_names_the_keys_in_effect_plots(tmp_path: Path) -> None:
    panel = Panel(spec=SPEC.replace("  hierarchy: [department, category]\n", "  hierarchy: [department, category]\n  label: title\n"))
    for row in panel.tables[SKUS]:
        row["title"] = f"Juice {row['sku']}"
    tables = read(tmp_path, panel)
    assert tables.products["title"].to_list() == ["Juice 1", "Juice 2"]
    assert key_labels(tables.spec, tables.stores, tables.products, PRODUCT_SIDE) == {1: "Juice 1 (1)", 2: "Juice 2 (2)"}
    assert key_labels(tables.spec, tables.stores, tables.products, STORE_SIDE) == {}


def test_a_missing_label_column_is_reported(tmp_path: Path) -> None:
    panel = Panel(spec=SPEC.replace("  hierarchy: [department, category]\n", "  hierarchy: [department, category]\n  label: title\n"))
    report = failing(tmp_path, panel)
    assert failure_keys(report) == {(FileRole.PRODUCTS, "title", RULE_COLUMN_PRESENT)}


def test_negative_target_is_masked_and_counted(good: PanelTables) -> None:
    shop, sku, w = NEGATIVE
    masked = good.sales.filter(pl.col(n.TARGET).is_null())
    assert good.n_negative_masked == 1
    assert masked.select(n.SERIES_STORE, n.SERIES_PRODUCT, n.ROW).row(0) == (shop, sku, sales_row(shop, sku, w))


def test_own_price_is_the_pattern_column_of_the_rows_product(good: PanelTables) -> None:
    own = good.sales.select(pl.when(pl.col(n.SERIES_PRODUCT) == 1).then(pl.col("price1")).otherwise(pl.col("price2")))
    assert own.to_series().equals(good.sales["price"], check_names=False)
    assert set(good.sales["promo"].unique()) == {0.0, 1.0}


def test_calendar_is_joined_through_the_store_state(good: PanelTables) -> None:
    holidays = good.sales.filter(pl.col("holiday") == 1)
    assert set(holidays[n.SERIES_STORE]) == {1} and set(holidays[n.PERIOD]) == {dt.date.fromisoformat(week(HOLIDAY_WEEK))}
    assert good.future is not None and good.future["holiday"].null_count() == 0


EVENTS_SPEC = """\
events:
  - {name: easter_before, date: easter, days: [-7, -1]}
  - {name: easter_after, date: easter, days: [0, 6]}
  - {name: late_may, date: "05-27"}
"""


def test_events_are_dated_in_the_history_and_the_future_and_encoded_as_they_are(tmp_path: Path) -> None:
    # The fixture's weeks are Fridays labelling the week they end; Easter 2024 is Sunday March 31.
    labelled = SPEC.replace("  period: week\n  store: shop", "  period: week\n  period_label: end\n  store: shop", 1)
    tables = read(tmp_path, Panel(spec=labelled + EVENTS_SPEC))
    assert tables.sales.columns[tables.sales.columns.index("holiday") :][:4] == ["holiday", "easter_before", "easter_after", "late_may"]
    by_week = tables.sales.group_by(n.PERIOD).agg(pl.col("easter_before", "easter_after").first()).sort(n.PERIOD)
    shares = {d.isoformat(): (round(7 * b), round(7 * a)) for d, b, a in by_week.filter(pl.col("easter_before") + pl.col("easter_after") > 0).iter_rows()}
    assert shares == {"2024-03-29": (6, 0), "2024-04-05": (1, 6), "2024-04-12": (0, 1)}  # days of 7
    assert tables.future is not None and set(tables.sales["late_may"]) == {0.0}
    assert tables.future.group_by(n.PERIOD).agg(pl.col("late_may").first()).sort(n.PERIOD)["late_may"].to_list() == pytest.approx(
        [0, 1 / 7, 0, 0]  # May 27 is in the week Saturday May 25 to Friday May 31
    )
    encoded = encode_panel(tables)
    column = encoded.encoding.series_names(tables.spec).index("easter_before")
    s = encoded.encoding.series.index((0, 0))
    t = (dt.date(2024, 3, 29) - FIRST_WEEK).days // 7
    assert encoded.history.x_series[s, t, column] == pytest.approx(6 / 7)


def test_with_events_a_period_that_is_no_date_is_still_reported_as_such(tmp_path: Path) -> None:
    panel = Panel(spec=SPEC + EVENTS_SPEC)
    panel.set(SALES, 5, "week", "2024-02-30")
    report = failing(tmp_path, panel)
    assert find(report, S, "week", r.RULE_PARSE_DATE).rows == (5,)


def test_future_and_dimensions_are_canonical(good: PanelTables) -> None:
    assert good.future is not None
    assert n.TARGET not in good.future.columns
    assert good.future.height == len(SHOP_IDS) * len(SKU_IDS) * N_FUTURE
    assert good.stores.columns == [n.SERIES_STORE, "region", "state", "area", n.ROW]
    assert good.stores.schema["region"] == pl.String and good.stores.schema["area"] == pl.Float64
    assert good.stores["area"].to_list() == [100.0, 200.0, 300.0]  # the log transform is the encoder's
    assert good.products is not None and good.products.columns == [n.SERIES_PRODUCT, "department", "category", "size", n.ROW]
    assert good.paths[FileRole.FUTURE.value].endswith(FUTURE)


def test_without_dimension_tables_the_keys_come_from_sales_and_future(tmp_path: Path) -> None:
    spec = parse_spec(SPEC)
    assert isinstance(spec, PanelSpec)
    bare = spec.model_copy(update={"stores": None, "products": None, "calendar": None, "aggregates": ("total",)})
    folder = Panel().write(tmp_path)
    tables = read_panel(bare, folder, future=folder / FUTURE)
    assert tables.stores.columns == [n.SERIES_STORE] and tables.stores[n.SERIES_STORE].to_list() == list(SHOP_IDS)
    assert tables.products is not None and tables.products[n.SERIES_PRODUCT].to_list() == list(SKU_IDS)


def test_with_the_end_of_a_saved_models_history_the_sales_file_is_not_read(tmp_path: Path, good: PanelTables) -> None:
    panel = Panel()
    panel.set(SALES, R, "qty", "not a number")  # a broken history: a forecast from a saved model never sees it
    folder = panel.write(tmp_path / "in")
    history_end = FIRST_WEEK + dt.timedelta(weeks=N_WEEKS - 1)
    tables = read_panel(parse_spec(SPEC), folder, future=folder / FUTURE, history_end=history_end)
    assert tables.sales.is_empty() and tables.sales.schema == good.sales.schema
    assert tables.future is not None and tables.future.equals(good.future)
    assert tables.stores.equals(good.stores) and FileRole.SALES.value not in tables.paths


def test_without_the_history_the_future_is_checked_against_the_saved_models_last_period(tmp_path: Path) -> None:
    folder = Panel().write(tmp_path / "in")
    spec = parse_spec(SPEC)
    # a model whose history ended a week later: the future's first week is not after it
    later = FIRST_WEEK + dt.timedelta(weeks=N_WEEKS)
    with pytest.raises(InputValidationError) as info:
        read_panel(spec, folder, future=folder / FUTURE, history_end=later)
    failure = find(info.value.report, F, "week", r.RULE_FUTURE_AFTER_HISTORY)
    assert failure.file == str(folder / FUTURE) and failure.n_rows == len(SHOP_IDS) * len(SKU_IDS)
    assert failure.examples == (f"{week(N_WEEKS)} (last sales period {later})",)
    # a model of Thursday weeks: every future week is on another weekday
    with pytest.raises(InputValidationError) as info:
        read_panel(spec, folder, future=folder / FUTURE, history_end=FIRST_WEEK + dt.timedelta(weeks=N_WEEKS - 1, days=-1))
    assert find(info.value.report, F, "week", r.RULE_WEEKDAY).n_rows == len(SHOP_IDS) * len(SKU_IDS) * N_FUTURE


def test_parquet_files_read_alike(tmp_path: Path, good: PanelTables) -> None:
    folder = Panel().write(tmp_path / "csv")
    for file in (SALES, FUTURE, SHOPS, SKUS):
        pl.read_csv(folder / file, infer_schema=True).write_parquet(tmp_path / file.replace(".csv", ".parquet"))
    (tmp_path / EVENTS).write_text((folder / EVENTS).read_text())
    spec = SPEC.replace(".csv", ".parquet").replace("events.parquet", EVENTS)
    tables = read_panel(parse_spec(spec), tmp_path, future=tmp_path / "future.parquet")
    assert tables.sales.equals(good.sales)
    assert tables.stores.equals(good.stores)


# ---------------------------------------------------------------------------
# one fault at a time

S, F, ST, P, C = FileRole.SALES, FileRole.FUTURE, FileRole.STORES, FileRole.PRODUCTS, FileRole.CALENDAR
FILE_OF = {role: file for file, role in ROLE_OF.items()}
SATURDAY = (FIRST_WEEK + dt.timedelta(days=1)).isoformat()


@dataclass(frozen=True)
class Fault:
    role: FileRole
    edit: Callable[[Panel], None]
    column: str | None
    rule: str
    rows: tuple[int, ...]
    n_rows: int | None = None  # defaults to len(rows)
    examples: tuple[str, ...] | None = None
    also: frozenset[tuple[FileRole, str | None, str]] = frozenset()
    error: type[Exception] = InputValidationError


def set_(file: str, row: int, column: str, value: str | None) -> Callable[[Panel], None]:
    return lambda panel: panel.set(file, row, column, value)


def respec(old: str, new: str) -> Callable[[Panel], None]:
    def edit(panel: Panel) -> None:
        assert old in panel.spec
        panel.spec = panel.spec.replace(old, new)

    return edit


def drop_events(w: int, state: str) -> Callable[[Panel], None]:
    def edit(panel: Panel) -> None:
        panel.tables[EVENTS] = [e for e in panel.tables[EVENTS] if (e["week"], e["state"]) != (week(w), state)]

    return edit


def empty_sales(panel: Panel) -> None:
    panel.tables[SALES] = []


R = sales_row(2, 2, 4)  # a row of shop 2 (NJ), sku 2, fifth week
FR = future_row(3, 1, N_WEEKS + 1)

FAULTS = {
    "sales-store-unlisted": Fault(S, set_(SALES, R, "shop", "9"), "shop", r.RULE_STORE_LISTED, (R,), examples=("9",)),
    "future-store-unlisted": Fault(F, set_(FUTURE, FR, "shop", "8"), "shop", r.RULE_STORE_LISTED, (FR,)),
    "sku-in-two-departments": Fault(
        S, set_(SALES, R, "department", "D1"), "department", r.RULE_HIERARCHY_AGREES, (R,),
        examples=("sku=2, department=D1 (table: D2)",),
    ),
    "department-in-two-categories": Fault(
        P, lambda p: (p.set(SKUS, 2, "department", "D1"), p.set(SKUS, 2, "category", "Soda")), "category",
        r.RULE_HIERARCHY, (1, 2), examples=("department=D1 in category Juice, Soda",),
        # the sales file's own department column now contradicts the table for sku 2
        also=frozenset({(S, "department", r.RULE_HIERARCHY_AGREES), (F, "department", r.RULE_HIERARCHY_AGREES)}),
    ),
    "sales-mixed-weekdays": Fault(
        S, set_(SALES, R, "week", SATURDAY), "week", r.RULE_WEEKDAY, (R,), examples=(f"{SATURDAY} (Sat, not Fri)",),
        also=frozenset({(S, "week", r.RULE_CALENDAR_COVERS)}),
    ),
    "sales-duplicate-series-period": Fault(
        S, lambda p: p.append_copy(SALES, R), "shop, sku, week", r.RULE_UNIQUE_SERIES_PERIOD,
        (R, N_WEEKS * 6 + 1), examples=(f"shop=2, sku=2, week={week(4)}",),
    ),
    "future-duplicate-series-period": Fault(
        F, lambda p: p.append_copy(FUTURE, FR), "shop, sku, week", r.RULE_UNIQUE_SERIES_PERIOD, (FR, N_FUTURE * 6 + 1),
    ),
    "price-zero": Fault(S, set_(SALES, R, "price2", "0"), "price2", r.RULE_PRICE_POSITIVE, (R,), examples=("0.0",)),
    "pattern-price-negative": Fault(
        S, set_(SALES, R, "price1", "-0.5"), "price1", r.RULE_PRICE_POSITIVE, (R,), examples=("-0.5",),
    ),
    "negative-target-rejected": Fault(
        S, respec("negative_target: mask", "negative_target: reject"), "qty", r.RULE_TARGET_NOT_NEGATIVE,
        (sales_row(*NEGATIVE),), examples=("-4.0",),
    ),
    "fractional-units": Fault(S, set_(SALES, R, "qty", "2.5"), "qty", r.RULE_WHOLE_UNITS, (R,), examples=("2.5",)),
    "flag-yes": Fault(S, set_(SALES, R, "promo", "yes"), "promo", r.RULE_PARSE_FLAG, (R,), examples=("yes",)),
    "future-flag-two": Fault(F, set_(FUTURE, FR, "promo", "2"), "promo", r.RULE_PARSE_FLAG, (FR,)),
    "date-unparseable": Fault(
        S, set_(SALES, R, "week", "2024-02-30"), "week", r.RULE_PARSE_DATE, (R,), examples=("2024-02-30",),
    ),
    "number-unparseable": Fault(S, set_(SALES, R, "qty", "12x"), "qty", r.RULE_PARSE_NUMBER, (R,), examples=("12x",)),
    "attribute-unparseable": Fault(ST, set_(SHOPS, 3, "area", "big"), "area", r.RULE_PARSE_NUMBER, (3,)),
    "key-unparseable": Fault(S, set_(SALES, R, "shop", "two"), "shop", r.RULE_PARSE_INT, (R,), examples=("two",)),
    "key-null": Fault(S, set_(SALES, R, "sku", None), "sku", r.RULE_NOT_BLANK, (R,)),
    "target-null": Fault(S, set_(SALES, R, "qty", " "), "qty", r.RULE_NOT_BLANK, (R,)),
    "covariate-null": Fault(S, set_(SALES, R, "promo", None), "promo", r.RULE_NOT_BLANK, (R,)),
    "calendar-missing-period": Fault(
        S, drop_events(7, "NJ"), "week", r.RULE_CALENDAR_COVERS, (sales_row(2, 1, 7), sales_row(2, 2, 7)),
        examples=(f"week={week(7)}, state=NJ",),
    ),
    "calendar-duplicate-rows": Fault(C, lambda p: p.append_copy(EVENTS, 4), "week, state", r.RULE_UNIQUE_CALENDAR,
                                     (4, (N_WEEKS + N_FUTURE) * 3 + 1)),
    "calendar-flag-unparseable": Fault(C, set_(EVENTS, 2, "holiday", "Y"), "holiday", r.RULE_PARSE_FLAG, (2,)),
    "future-before-history-end": Fault(
        F, set_(FUTURE, FR, "week", week(N_WEEKS - 1)), "week", r.RULE_FUTURE_AFTER_HISTORY, (FR,),
        examples=(f"{week(N_WEEKS - 1)} (last sales period {week(N_WEEKS - 1)})",),
    ),
    "future-other-weekday": Fault(
        F, set_(FUTURE, FR, "week", (FIRST_WEEK + dt.timedelta(weeks=N_WEEKS + 1, days=-1)).isoformat()), "week",
        r.RULE_WEEKDAY, (FR,), also=frozenset({(F, "week", r.RULE_CALENDAR_COVERS)}),
    ),
    "stores-duplicate-key": Fault(ST, lambda p: p.append_copy(SHOPS, 2), "shop", r.RULE_UNIQUE_KEY, (2, 4)),
    "empty-sales": Fault(S, empty_sales, None, RULE_NOT_EMPTY, (), n_rows=0),
    "log-attribute-not-positive": Fault(ST, set_(SHOPS, 2, "area", "0"), "area", r.RULE_LOG_DOMAIN, (2,)),
    "category-attribute-blank": Fault(ST, set_(SHOPS, 1, "state", ""), "state", r.RULE_NOT_BLANK, (1,)),
    "spec-names-missing-column": Fault(
        S, lambda p: p.rename_column(SALES, "promo", "promotion"), "promo", RULE_COLUMN_PRESENT, (), n_rows=0,
        error=r.SpecColumnsError,
    ),
    "pattern-column-missing": Fault(
        F, lambda p: p.drop_column(FUTURE, "price2"), "price2", r.RULE_PATTERN_COLUMN_PRESENT,
        tuple(sorted(future_row(s, 2, w) for s in SHOP_IDS for w in range(N_WEEKS, N_WEEKS + N_FUTURE))[:5]),
        n_rows=len(SHOP_IDS) * N_FUTURE, examples=("2",), error=r.SpecColumnsError,
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS.values()), ids=list(FAULTS))
def test_each_rule_is_reported_where_it_broke(tmp_path: Path, fault: Fault) -> None:
    panel = Panel()
    fault.edit(panel)
    report = failing(tmp_path, panel, fault.error)

    failure = find(report, fault.role, fault.column, fault.rule)
    assert failure.file == str(tmp_path / "in" / FILE_OF[fault.role])
    assert failure.rows == fault.rows
    assert failure.n_rows == (fault.n_rows if fault.n_rows is not None else len(fault.rows))
    if fault.examples is not None:
        assert failure.examples == fault.examples
    assert failure_keys(report) == {(fault.role, fault.column, fault.rule)} | fault.also


def test_a_missing_column_is_both_a_spec_error_and_a_report(tmp_path: Path) -> None:
    panel = Panel()
    panel.rename_column(SALES, "promo", "promotion")
    panel.rename_column(SHOPS, "area", "size_sqft")
    report = failing(tmp_path, panel, SpecError)
    assert failure_keys(report) == {(S, "promo", RULE_COLUMN_PRESENT), (ST, "area", RULE_COLUMN_PRESENT)}
    assert "promotion" in find(report, S, "promo", RULE_COLUMN_PRESENT).examples


def test_a_missing_file_is_a_spec_error_naming_it(tmp_path: Path) -> None:
    panel = Panel(dropped={SKUS})
    with pytest.raises(SpecError, match=r"'tiny'.*skus\.csv"):
        read(tmp_path, panel)


def test_an_unknown_frequency_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="frequency"):
        parse_spec(SPEC.replace("frequency: week", "frequency: month"))


def test_a_fill_makes_a_blank_covariate_legal(tmp_path: Path) -> None:
    panel = Panel(spec=SPEC.replace("column: promo, kind: flag}", "column: promo, kind: flag, fill: 0}"))
    panel.set(SALES, R, "promo", None)
    tables = read(tmp_path, panel)
    assert tables.sales.filter(pl.col(n.ROW) == R)["promo"].to_list() == [0.0]


def test_all_failures_of_a_file_are_reported_at_once(tmp_path: Path) -> None:
    panel = Panel()
    panel.set(SALES, 1, "qty", "1.5")
    panel.set(SALES, 2, "promo", "maybe")
    panel.set(SALES, 3, "price1", "0")
    panel.set(SALES, 4, "shop", "7")
    panel.set(SALES, 5, "week", "2024/01/05")
    panel.append_copy(SALES, 6)
    panel.set(SHOPS, 3, "area", "-1")
    report = failing(tmp_path, panel)
    expected = {
        (S, "qty", r.RULE_WHOLE_UNITS): (1,),
        (S, "promo", r.RULE_PARSE_FLAG): (2,),
        (S, "price1", r.RULE_PRICE_POSITIVE): (3,),
        (S, "shop", r.RULE_STORE_LISTED): (4,),
        (S, "week", r.RULE_PARSE_DATE): (5,),
        (S, "shop, sku, week", r.RULE_UNIQUE_SERIES_PERIOD): (6, N_WEEKS * 6 + 1),
        (ST, "area", r.RULE_LOG_DOMAIN): (3,),
    }
    assert failure_keys(report) == set(expected)
    for (role, column, rule), rows in expected.items():
        assert find(report, role, column, rule).rows == rows
    roles = [f.role for f in report.failures]
    assert roles == sorted(roles, key=[S, ST, P, C, F].index), "a report reads file by file"


def test_a_calendar_fill_covers_missing_periods(tmp_path: Path) -> None:
    panel = Panel(spec=SPEC.replace("column: holiday, kind: flag}", "column: holiday, kind: flag, fill: 0}"))
    drop_events(HOLIDAY_WEEK, HOLIDAY_STATE)(panel)
    tables = read(tmp_path, panel)
    assert tables.sales["holiday"].null_count() == 0 and tables.sales["holiday"].sum() == 0


def test_text_keys_and_a_calendar_by_store(tmp_path: Path) -> None:
    spec = SPEC.replace("negative_target: mask", "negative_target: mask\nkey_type: str").replace("by: state", "by: shop")
    panel = Panel(spec=spec)
    panel.tables[EVENTS] = [
        {"week": week(w), "shop": str(s), "holiday": "1" if (w, s) == (HOLIDAY_WEEK, 3) else "0"}
        for w in range(N_WEEKS + N_FUTURE) for s in SHOP_IDS
    ]
    tables = read(tmp_path, panel)
    assert tables.sales.schema[n.SERIES_STORE] == pl.String and tables.sales.schema[n.SERIES_PRODUCT] == pl.String
    assert set(tables.sales.filter(pl.col("holiday") == 1)[n.SERIES_STORE]) == {"3"}
    assert tables.stores.schema[n.SERIES_STORE] == pl.String


def test_daily_periods_may_fall_on_any_weekday(tmp_path: Path) -> None:
    spec = parse_spec(SPEC.replace("frequency: week", "frequency: day"))
    assert isinstance(spec, PanelSpec)
    panel = Panel()
    panel.set(SALES, R, "week", SATURDAY)
    folder = panel.write(tmp_path)
    tables = read_panel(spec.model_copy(update={"calendar": None}), folder, future=folder / FUTURE)
    assert dt.date.fromisoformat(SATURDAY) in set(tables.sales[n.PERIOD])
