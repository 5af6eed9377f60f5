"""The markdown summary of a flow run (published as a Prefect artifact): plain values in, text out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tasks.data.summary import DataSummary
from tasks.evaluate.coldstart_curve import ColdStartCurve
from tasks.model.inference import FitResult


def _row(name: str, value: object) -> str:
    return f"| {name} | {value} |"


def _fit_rows(label: str, fit: FitResult, n_stores: int) -> list[str]:
    converged = "converged" if fit.converged else "stopped at the step cap"
    final = float(fit.losses[-min(100, fit.n_steps) :].mean()) if fit.n_steps else float("nan")
    return [
        _row(f"{label} fit", f"{n_stores:,} stores, {fit.n_steps:,} steps, {converged}"),
        _row(f"{label} fit seconds", f"{fit.compile_seconds + fit.run_seconds:.1f} ({fit.compile_seconds:.1f} compiling)"),
        _row(f"{label} final loss (negative ELBO per observation)", f"{final:.4f}"),
    ]


def scores_text(scores: Mapping[str, float]) -> str:
    """A backtest's headline scores in one line."""
    return (
        f"RMSPE {scores['rmspe']:.4f}, wQL {scores['wql']:.4f}, "
        f"coverage 50% {scores['coverage_50']:.1%}, 90% {scores['coverage_90']:.1%}"
    )


def run_markdown(
    title: str,
    summary: DataSummary | None = None,
    fits: Mapping[str, tuple[FitResult, int]] | None = None,
    backtest: Mapping[str, float] | None = None,
    backtest_origin: str | None = None,
    outputs: Mapping[str, Path | str] | None = None,
    registration: str | None = None,
    mlflow_link: str | None = None,
    seconds: Mapping[str, float] | None = None,
) -> str:
    """A short report: data size, fit, backtest scores, outputs, registry, where the MLflow run is."""
    lines = [f"# {title}", "", "| | |", "|---|---|"]
    if summary is not None:
        lines += [
            _row("train rows", f"{summary.n_train_rows:,}"),
            _row("history", f"{summary.first_date} to {summary.last_date}, {summary.n_stores_with_history:,} stores"),
            _row("future rows", f"{summary.n_future_rows:,} ({summary.n_future_stores:,} stores, {summary.n_new_stores:,} new)"),
        ]
    for label, (fit, n_stores) in (fits or {}).items():
        lines += _fit_rows(label, fit, n_stores)
    if backtest:
        where = f" (from {backtest_origin})" if backtest_origin else ""
        lines.append(_row(f"backtest{where}", scores_text(backtest)))
    for name, value in (outputs or {}).items():
        lines.append(_row(name, f"`{value}`"))
    if registration:
        lines.append(_row("registry", registration))
    if seconds:
        lines.append(_row("seconds", ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())))
    if mlflow_link:
        lines.append(_row("MLflow", mlflow_link))
    return "\n".join(lines) + "\n"


METHOD_COLUMNS = (
    ("rmspe", "RMSPE", "{:.4f}"),
    ("rmspe_median", "RMSPE (median)", "{:.4f}"),
    ("mape", "MAPE", "{:.4f}"),
    ("wql", "wQL", "{:.4f}"),
    ("crps_scaled", "CRPS / mean sales", "{:.4f}"),
    ("coverage_50", "50% coverage", "{:.1%}"),
    ("coverage_90", "90% coverage", "{:.1%}"),
    ("n_scored", "days scored", "{:,.0f}"),
)


def methods_table(methods: Mapping[str, Mapping[str, float]]) -> str:
    """A markdown table of every method's scores (rows) by metric (columns)."""
    header = "| method | " + " | ".join(title for _, title, _ in METHOD_COLUMNS) + " |"
    lines = [header, "|---|" + "---:|" * len(METHOD_COLUMNS)]
    for method, scores in methods.items():
        cells = [fmt.format(scores[key]) if key in scores else "" for key, _, fmt in METHOD_COLUMNS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cold_start_table(curve: ColdStartCurve) -> str:
    """The cold-start curve as a markdown table: one row per method and days of history, with the
    store-bootstrap standard errors of RMSPE and coverage."""

    def rmspe(s: Mapping[str, float]) -> str:
        return f"{s['rmspe']:.4f} ± {s['rmspe_se']:.4f}"

    def cover(s: Mapping[str, float], key: str) -> str:
        return f"{s[key]:.1%} ± {s[key + '_se'] * 100:.1f}"

    def scores(s: Mapping[str, float]) -> str:
        return f"RMSPE {rmspe(s)}, coverage 50% {cover(s, 'coverage_50')}, 90% {cover(s, 'coverage_90')}"

    lines = [
        f"\nCold start: {len(curve.held_out)} held-out stores, each opened N days before {curve.origin} and forecast "
        f"from it. The same stores fitted on their whole history: {scores(curve.full_history)}; the other "
        f"(established) stores: RMSPE {curve.established['rmspe']:.4f}, coverage 50% "
        f"{curve.established['coverage_50']:.1%}, 90% {curve.established['coverage_90']:.1%}. "
        "± is the standard error over resampled stores.\n",
        "| method | days of history | RMSPE | wQL | 50% coverage | 90% coverage | days scored |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in sorted(curve.points, key=lambda p: (p["method"] != "model", p["method"], p["days"])):
        lines.append(
            f"| {p['method']} | {p['days']} | {rmspe(p)} | {p['wql']:.4f} | {cover(p, 'coverage_50')} | "
            f"{cover(p, 'coverage_90')} | {p['n_scored']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def measured_sections(text: str, last_generated_heading: str) -> str | None:
    """The part of a report after its generated one: from the first level-2 heading after
    ``last_generated_heading`` to the end ("" when there is none). EVALUATION.md keeps there the measurements
    of other commands (the panel data sets, replenishment, the M5 shape), which a regeneration must not lose.
    None when the text lacks the heading: then nothing tells the generated part from the rest."""
    lines = text.splitlines(keepends=True)
    heading = next((i for i, line in enumerate(lines) if line.rstrip("\r\n") == last_generated_heading), None)
    if heading is None:
        return None
    start = next((i for i in range(heading + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "".join(lines[start:])
