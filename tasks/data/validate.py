"""Validate the input files of a run and report every broken rule at once.

Pure: no Prefect, no MLflow. Bad data never raises here; it becomes a
``ValidationReport`` that names file, column, rule, how many rows, example
values and 1-based data row numbers (``names.ROW``), so that a person can
find and fix the lines. Only a missing file or an unsupported suffix raises
(from ``tasks.data.ingest``), because then there is nothing to report on.

Three layers of rules, each vectorised:
1. per file, before types: required columns present, values parse;
2. per file, typed: the pandera models of ``schemas.raw``;
3. across rows and files, in polars: unique keys, stores known to the stores
   file, future dates after each store's history.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandera.polars as pa
import polars as pl

from schemas.raw import CHECK_CONTEXT_COLUMNS, schema_for
from tasks import names as n
from tasks.data import ingest
from tasks.names import FileRole

MAX_EXAMPLES = 5
MAX_ROWS = 5

RULE_COLUMN_PRESENT = "required column present"
RULE_NOT_EMPTY = "file has at least one data row"
RULE_READABLE = "file reads as"
RULE_UNIQUE = "unique"
RULE_STORE_KNOWN = f"{n.STORE} listed in the stores file"
RULE_AFTER_HISTORY = f"{n.DATE} after the store's last train {n.DATE}"

# What a failure's examples are, where they are not failing values.
_EXAMPLES_LABEL = {RULE_COLUMN_PRESENT: "examples (columns found that are not expected)"}

TRAIN_KEY = (n.STORE, n.DATE)
FUTURE_KEY = (n.STORE, n.DATE)
STORES_KEY = (n.STORE,)

# pandera's name for a null in a column that must have none; a value that did
# not parse is also null after the cast, but is reported once, as unparseable.
PANDERA_NOT_NULLABLE = "not_nullable"

# Columns of pandera's SchemaErrors.failure_cases that this module reads.
_CASE_VALUE = "failure_case"
_CASE_COLUMN = "column"
_CASE_CHECK = "check"
_CASE_POSITION = "index"
_POSITION = "_position"
_LAST_TRAIN_DATE = "_last_train_date"


@dataclass(frozen=True)
class RuleFailure:
    """One rule broken in one column of one file."""

    file: str
    role: FileRole
    column: str | None
    rule: str
    n_rows: int
    examples: tuple[str, ...]
    rows: tuple[int, ...]

    def to_text(self) -> str:
        column = self.column if self.column is not None else "(whole file)"
        lines = [
            f"{self.role.value} file {self.file}",
            f"  column:   {column}",
            f"  rule:     {self.rule}",
        ]
        if self.n_rows:
            lines.append(f"  rows:     {self.n_rows} failing")
        if self.examples:
            label = _EXAMPLES_LABEL.get(self.rule, "examples")
            lines.append(f"  {label}: {', '.join(repr(e) for e in self.examples)}")
        if self.rows:
            shown = "first " if self.n_rows > len(self.rows) else ""
            # ROW counts data rows from 1 after the header: CSV line = row + 1.
            lines.append(f"  at rows:  {shown}{', '.join(str(r) for r in self.rows)} (1 = first data row)")
        return "\n".join(lines)

    def to_record(self) -> dict[str, str | int]:
        return {
            "file": self.file,
            "role": self.role.value,
            "column": self.column or "",
            "rule": self.rule,
            "n_rows": self.n_rows,
            "examples": ", ".join(self.examples),
            "rows": ", ".join(str(r) for r in self.rows),
        }


@dataclass(frozen=True)
class ValidationReport:
    """Every rule broken in the inputs of a run; empty when all passed."""

    failures: tuple[RuleFailure, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failures

    def merge(self, other: ValidationReport) -> ValidationReport:
        return ValidationReport(self.failures + other.failures)

    def to_records(self) -> list[dict[str, str | int]]:
        return [failure.to_record() for failure in self.failures]

    def to_text(self) -> str:
        if self.ok:
            return "Input validation passed: no rule broken."
        files = sorted({failure.file for failure in self.failures})
        header = f"Input validation failed: {len(self.failures)} rule(s) broken in {len(files)} file(s)."
        blocks = [f"{i}. {failure.to_text()}" for i, failure in enumerate(self.failures, start=1)]
        return "\n\n".join([header, *blocks])

    def __str__(self) -> str:
        return self.to_text()


class InputValidationError(ValueError):
    """The inputs broke at least one rule; ``.report`` says which."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.to_text())
        self.report = report


@dataclass(frozen=True)
class ValidatedInputs:
    """Typed frames that passed every rule (ROW column kept for later reports)."""

    train: pl.DataFrame
    stores: pl.DataFrame
    future: pl.DataFrame | None
    paths: dict[FileRole, str]


# --------------------------------------------------------------------------
# building failures


def _as_text(values: Iterable[object]) -> tuple[str, ...]:
    return tuple("null" if v is None else str(v) for v in values)


def _describe_rows(columns: Sequence[str]) -> pl.Expr:
    """One text per row naming its values: "Store=1, Date=2015-06-13"."""
    pairs = [pl.concat_str(pl.lit(f"{c}="), pl.col(c).cast(pl.String).fill_null("null")) for c in columns]
    return pl.concat_str(pairs, separator=", ")


def _failure_from_rows(
    failing: pl.DataFrame, *, path: str, role: FileRole, column: str | None, rule: str, example: pl.Expr
) -> RuleFailure:
    """A RuleFailure from the failing rows of a typed or raw frame (must hold ROW)."""
    ordered = failing.sort(n.ROW)
    examples = ordered.select(example.alias("_example"))["_example"].unique(maintain_order=True).head(MAX_EXAMPLES)
    return RuleFailure(
        file=path,
        role=role,
        column=column,
        rule=rule,
        n_rows=failing.height,
        examples=_as_text(examples),
        rows=tuple(int(r) for r in ordered[n.ROW].head(MAX_ROWS)),
    )


# --------------------------------------------------------------------------
# layer 1: columns present, values parse


def _missing_column_failures(raw: pl.LazyFrame, role: FileRole, path: str) -> list[RuleFailure]:
    missing = ingest.missing_columns(raw, role)
    if not missing:
        return []
    present = [c for c in raw.collect_schema().names() if c != n.ROW]
    unexpected = [c for c in present if c not in ingest.TYPED_COLUMNS[role]]
    failures = []
    for column in missing:
        # A near-miss spelling ("store", "Date ") is the likeliest cause; show it first.
        close = difflib.get_close_matches(column, unexpected, n=MAX_EXAMPLES, cutoff=0.6)
        others = [c for c in unexpected if c not in close]
        examples = tuple((close + others)[:MAX_EXAMPLES])
        failures.append(RuleFailure(path, role, column, RULE_COLUMN_PRESENT, 0, examples, ()))
    return failures


def _parse_rule(column: str, role: FileRole) -> str:
    dtype = ingest.TYPED_COLUMNS[role][column]
    if dtype == pl.Date():
        return f"parses as {dtype} ({ingest.DATE_FORMAT})"
    return f"parses as {dtype}"


def _unparsed_values(raw: pl.DataFrame, typed: pl.DataFrame, role: FileRole) -> dict[str, pl.DataFrame]:
    """Per column, the rows (ROW and raw text) whose value is present but did not parse.

    ``raw`` and ``typed`` must be in the same row order (ingest compares them by position).
    """
    return ingest.parse_failures(raw, typed, role)


def _parse_failures(unparsed: dict[str, pl.DataFrame], role: FileRole, path: str) -> list[RuleFailure]:
    return [
        _failure_from_rows(
            bad, path=path, role=role, column=column, rule=_parse_rule(column, role), example=pl.col(column)
        )
        for column, bad in unparsed.items()
    ]


# --------------------------------------------------------------------------
# layer 2: pandera


def _pandera_failure_cases(
    typed: pl.DataFrame, role: FileRole, schema: pa.DataFrameSchema | None = None
) -> pl.DataFrame | None:
    try:
        (schema if schema is not None else schema_for(role)).validate(typed, lazy=True)
    except pa.errors.SchemaErrors as err:
        return err.failure_cases
    return None


def _pandera_failures(
    typed: pl.DataFrame,
    role: FileRole,
    path: str,
    unparsed: dict[str, pl.DataFrame],
    schema: pa.DataFrameSchema | None = None,
) -> list[RuleFailure]:
    """pandera's failures of ``typed`` as RuleFailures; ``schema`` defaults to the Rossmann model of ``role``
    (the panel contract passes a schema built from its spec)."""
    cases = _pandera_failure_cases(typed, role, schema)
    if cases is None:
        return []
    positions = typed.select(n.ROW).with_row_index(_POSITION).with_columns(pl.col(_POSITION).cast(pl.Int64))
    cases = cases.with_columns(pl.col(_CASE_POSITION).cast(pl.Int64)).join(
        positions, left_on=_CASE_POSITION, right_on=_POSITION, how="left", maintain_order="left"
    )
    cases = _drop_nulls_reported_as_unparsed(cases, unparsed)
    failures = []
    for (column, check), group in cases.group_by(_CASE_COLUMN, _CASE_CHECK, maintain_order=True):
        failures.append(_failure_from_cases(group, typed, role, path, str(column), str(check)))
    return failures


def _drop_nulls_reported_as_unparsed(cases: pl.DataFrame, unparsed: dict[str, pl.DataFrame]) -> pl.DataFrame:
    if not unparsed:
        return cases
    unparsed_rows = pl.concat(
        [frame.select(pl.lit(column).alias(_CASE_COLUMN), pl.col(n.ROW)) for column, frame in unparsed.items()]
    ).with_columns(pl.lit(PANDERA_NOT_NULLABLE).alias(_CASE_CHECK))
    return cases.join(
        unparsed_rows, on=[_CASE_COLUMN, _CASE_CHECK, n.ROW], how="anti", maintain_order="left"
    )


def _failure_from_cases(
    group: pl.DataFrame, typed: pl.DataFrame, role: FileRole, path: str, column: str, check: str
) -> RuleFailure:
    located = group.filter(pl.col(n.ROW).is_not_null())
    if located.is_empty():
        # A schema-level failure (wrong dtype): no row to point at.
        examples = _as_text(group[_CASE_VALUE].unique(maintain_order=True).head(MAX_EXAMPLES))
        return RuleFailure(path, role, column, check, 0, examples, ())
    context = CHECK_CONTEXT_COLUMNS.get(check)
    if context is None:
        return _failure_from_rows(
            located, path=path, role=role, column=column, rule=check, example=pl.col(_CASE_VALUE)
        )
    failing_rows = typed.join(located.select(n.ROW), on=n.ROW, how="semi")
    return _failure_from_rows(
        failing_rows, path=path, role=role, column=column, rule=check, example=_describe_rows(context)
    )


# --------------------------------------------------------------------------
# layer 3: across rows and files


def _with_keys(frame: pl.DataFrame, keys: Sequence[str]) -> pl.DataFrame:
    # Null keys are the not-null checks' to report; here they would only repeat them.
    return frame.drop_nulls(list(keys))


def _duplicate_key_failures(frame: pl.DataFrame, keys: Sequence[str], role: FileRole, path: str) -> list[RuleFailure]:
    keyed = _with_keys(frame, keys)
    duplicated = keyed.filter(pl.len().over(list(keys)) > 1)
    if duplicated.is_empty():
        return []
    return [
        _failure_from_rows(
            duplicated,
            path=path,
            role=role,
            column=", ".join(keys),
            rule=RULE_UNIQUE,
            example=_describe_rows(keys),
        )
    ]


def _unknown_store_failures(frame: pl.DataFrame, stores: pl.DataFrame, role: FileRole, path: str) -> list[RuleFailure]:
    unknown = _with_keys(frame, [n.STORE]).join(stores.select(n.STORE), on=n.STORE, how="anti")
    if unknown.is_empty():
        return []
    return [
        _failure_from_rows(
            unknown, path=path, role=role, column=n.STORE, rule=RULE_STORE_KNOWN, example=pl.col(n.STORE)
        )
    ]


def _future_before_history_failures(future: pl.DataFrame, train: pl.DataFrame, path: str) -> list[RuleFailure]:
    last_dates = (
        _with_keys(train, TRAIN_KEY).group_by(n.STORE).agg(pl.col(n.DATE).max().alias(_LAST_TRAIN_DATE))
    )
    # Stores absent from train are new: the inner join leaves them out, any date is fine.
    early = (
        _with_keys(future, FUTURE_KEY)
        .join(last_dates, on=n.STORE, how="inner")
        .filter(pl.col(n.DATE) <= pl.col(_LAST_TRAIN_DATE))
    )
    if early.is_empty():
        return []
    example = pl.concat_str(
        _describe_rows(FUTURE_KEY),
        pl.lit(" (last train date "),
        pl.col(_LAST_TRAIN_DATE).cast(pl.String),
        pl.lit(")"),
    )
    return [
        _failure_from_rows(
            early, path=path, role=FileRole.FUTURE, column=n.DATE, rule=RULE_AFTER_HISTORY, example=example
        )
    ]


def _relation_failures(typed: dict[FileRole, pl.DataFrame], paths: dict[FileRole, str]) -> list[RuleFailure]:
    """Rules across rows and files, on whichever typed frames exist."""
    failures: list[RuleFailure] = []
    keys = {FileRole.TRAIN: TRAIN_KEY, FileRole.STORES: STORES_KEY, FileRole.FUTURE: FUTURE_KEY}
    for role, frame in typed.items():
        failures += _duplicate_key_failures(frame, keys[role], role, paths[role])
    stores = typed.get(FileRole.STORES)
    if stores is not None:
        for role in (FileRole.TRAIN, FileRole.FUTURE):
            if role in typed:
                failures += _unknown_store_failures(typed[role], stores, role, paths[role])
    if FileRole.TRAIN in typed and FileRole.FUTURE in typed:
        future, train = typed[FileRole.FUTURE], typed[FileRole.TRAIN]
        failures += _future_before_history_failures(future, train, paths[FileRole.FUTURE])
    return failures


# --------------------------------------------------------------------------
# entry points


def _check_file(raw_scan: pl.LazyFrame, role: FileRole, path: str) -> tuple[pl.DataFrame | None, list[RuleFailure]]:
    """Read one file once; its typed frame (None if unreadable or columns are missing) and its failures."""
    try:
        missing = _missing_column_failures(raw_scan, role, path)
        if missing:
            return None, missing
        raw = _in_file_order(raw_scan.collect())
    except pl.exceptions.PolarsError as err:
        # A file polars cannot read (ragged or empty CSV, broken Parquet) is bad data, not a crash.
        return None, [_unreadable_failure(err, role, path)]
    typed = _in_file_order(ingest.cast_typed(raw.lazy(), role).collect())
    if typed.is_empty():
        return typed, [RuleFailure(path, role, None, RULE_NOT_EMPTY, 0, (), ())]
    unparsed = _unparsed_values(raw, typed, role)
    failures = _parse_failures(unparsed, role, path) + _pandera_failures(typed, role, path, unparsed)
    return typed, _in_column_order(failures, role)


def _unreadable_failure(err: Exception, role: FileRole, path: str) -> RuleFailure:
    suffix = Path(path).suffix.lower()
    kind = "CSV" if suffix == ".csv" else "Parquet"
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return RuleFailure(path, role, None, f"{RULE_READABLE} {kind}", 0, (message,), ())


def _in_file_order(frame: pl.DataFrame) -> pl.DataFrame:
    # A streaming collect need not keep row order; raw and typed are compared
    # by position, and later stages expect the file's order.
    return frame if frame[n.ROW].is_sorted() else frame.sort(n.ROW)


def _in_column_order(failures: list[RuleFailure], role: FileRole) -> list[RuleFailure]:
    """Failures in the file's column order, so that a report reads left to right (stable within a column)."""
    order = {column: i for i, column in enumerate(ingest.TYPED_COLUMNS[role])}
    return sorted(failures, key=lambda failure: order.get(failure.column or "", len(order)))


def _by_file(failures: list[RuleFailure], roles: list[FileRole]) -> list[RuleFailure]:
    """Failures grouped file by file, so that a person fixes one file at a time (stable within a file)."""
    return sorted(failures, key=lambda failure: roles.index(failure.role))


def _check_files(paths: dict[FileRole, str]) -> tuple[dict[FileRole, pl.DataFrame] | None, ValidationReport]:
    """Read and check the files of ``paths``, each against its role's rules and all against each other."""
    # Scan every file first so that a missing file or bad suffix raises before any work.
    scans = {role: ingest.scan_raw(path, role) for role, path in paths.items()}

    typed: dict[FileRole, pl.DataFrame] = {}
    failures: list[RuleFailure] = []
    for role, path in paths.items():
        frame, file_failures = _check_file(scans[role], role, path)
        failures += file_failures
        if frame is not None:
            typed[role] = frame
    failures += _relation_failures(typed, paths)

    future = typed.get(FileRole.FUTURE)
    if future is not None:
        ingest.log_blank_open(future, paths[FileRole.FUTURE])
    report = ValidationReport(tuple(_by_file(failures, list(paths))))
    return (typed if report.ok else None), report


def check_inputs(
    train_path: str | Path, stores_path: str | Path, future_path: str | Path | None = None
) -> tuple[ValidatedInputs | None, ValidationReport]:
    """Read and check the inputs of a run; (typed frames, empty report), or (None, report of every failure)."""
    paths = {FileRole.TRAIN: str(train_path), FileRole.STORES: str(stores_path)}
    if future_path is not None:
        paths[FileRole.FUTURE] = str(future_path)
    typed, report = _check_files(paths)
    if typed is None:
        return None, report
    inputs = ValidatedInputs(train=typed[FileRole.TRAIN], stores=typed[FileRole.STORES], future=typed.get(FileRole.FUTURE), paths=paths)
    return inputs, report


def read_validated_calendar(stores_path: str | Path, future_path: str | Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The typed store and future-calendar frames of a forecast without history; raises InputValidationError."""
    typed, report = _check_files({FileRole.STORES: str(stores_path), FileRole.FUTURE: str(future_path)})
    if typed is None:
        raise InputValidationError(report)
    return typed[FileRole.STORES], typed[FileRole.FUTURE]


def read_validated(
    train_path: str | Path, stores_path: str | Path, future_path: str | Path | None = None
) -> ValidatedInputs:
    """The typed inputs of a run; raises InputValidationError with the full report if any rule is broken."""
    inputs, report = check_inputs(train_path, stores_path, future_path)
    if inputs is None:
        raise InputValidationError(report)
    return inputs
