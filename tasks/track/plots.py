"""Diagnostic plots of a run: arrays and frames in, a matplotlib ``Figure`` out.

Pure functions, no pyplot state and no display: every figure is built with
``matplotlib.figure.Figure`` so that it renders headless (Agg) in flows, and
is handed to the tracking module (or ``figure_png``) to be written.
"""

from __future__ import annotations

import io

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from tasks import names as n
from tasks.model import inference
from tasks.model.state import FittedModel

WEEKDAY_PREFIX = "weekday_"
PROMO_NAME = "promo"
WEEKDAY_LABELS = {2: "Tue", 3: "Wed", 4: "Thu", 5: "Fri", 6: "Sat", 7: "Sun"}
CLOSED_COLOR = "0.85"
PROMO_COLOR = "#f6d28b"
BAND_COLOR = "tab:blue"


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure rendered to PNG bytes (Agg, no display needed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


# --- fit ----------------------------------------------------------------------


def elbo_curve(losses: np.ndarray, title: str) -> Figure:
    """Loss per observation against the SVI step; log-scaled y when the trace spans a decade or more."""
    losses = np.asarray(losses, dtype=float).ravel()
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, lw=0.8, color="tab:blue")
    finite = losses[np.isfinite(losses)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() >= 10.0:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("negative ELBO per observation")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    return fig


def store_coefficients(fitted: FittedModel, store_z: np.ndarray) -> np.ndarray:
    """Per-store pooled coefficients [S, P] of a fitted model, rows in ``fitted.store_ids`` order."""
    return inference.store_coefficients(fitted.params, store_z)


# --- effects across stores ------------------------------------------------------


def _lift_percent(coef: np.ndarray) -> np.ndarray:
    return 100.0 * np.expm1(np.asarray(coef, dtype=float))


def _kde(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian kernel density of ``values`` on ``grid`` (Silverman's bandwidth), in numpy."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.zeros_like(grid)
    spread = float(np.std(values))
    bandwidth = 1.06 * spread * values.size ** (-0.2) if spread > 0 else max(1.0, 0.05 * abs(float(values[0])))
    u = (grid[:, None] - values[None, :]) / bandwidth
    return np.exp(-0.5 * u**2).sum(axis=1) / (values.size * bandwidth * np.sqrt(2.0 * np.pi))


def _columns(names: tuple[str, ...], store_coef: np.ndarray, wanted: list[str]) -> np.ndarray:
    coef = np.asarray(store_coef, dtype=float)
    if coef.ndim != 2 or coef.shape[1] != len(names):
        raise ValueError(f"store_coef has shape {coef.shape}, expected [stores, {len(names)}] to match names")
    return coef[:, [names.index(w) for w in wanted]]


def weekday_effects(store_coef: np.ndarray, names: tuple[str, ...]) -> Figure:
    """Density across stores of each weekday's effect relative to Monday, as a % lift (one line per weekday)."""
    weekdays = [name for name in names if name.startswith(WEEKDAY_PREFIX)]
    if not weekdays:
        raise ValueError("no pooled coefficient named weekday_*: nothing to plot")
    lifts = _lift_percent(_columns(names, store_coef, weekdays))
    finite = lifts[np.isfinite(lifts)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
    pad = max(5.0, 0.1 * (hi - lo))
    grid = np.linspace(lo - pad, hi + pad, 400)
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    for j, name in enumerate(weekdays):
        suffix = name.removeprefix(WEEKDAY_PREFIX)
        label = WEEKDAY_LABELS.get(int(suffix), suffix) if suffix.isdigit() else suffix
        ax.plot(grid, _kde(lifts[:, j], grid), label=label)
    ax.set_xlabel("effect on sales relative to Monday (%)")
    ax.set_ylabel("density across stores")
    ax.set_title(f"Weekday effects across {lifts.shape[0]} stores")
    ax.legend(ncols=2, fontsize="small")
    ax.grid(True, alpha=0.3)
    return fig


def promo_effects(store_coef: np.ndarray, names: tuple[str, ...]) -> Figure:
    """Histogram across stores of the promo lift exp(coef) - 1 in %, the median marked."""
    if PROMO_NAME not in names:
        raise ValueError(f"no pooled coefficient named {PROMO_NAME!r}: nothing to plot")
    lift = _lift_percent(_columns(names, store_coef, [PROMO_NAME])[:, 0])
    lift = lift[np.isfinite(lift)]
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.hist(lift, bins=min(40, max(5, lift.size // 5)), color="tab:orange", alpha=0.8)
    if lift.size:
        median = float(np.median(lift))
        ax.axvline(median, color="black", lw=1.5, ls="--", label=f"median {median:+.1f}%")
        ax.legend()
    ax.set_xlabel("promo lift on sales (%)")
    ax.set_ylabel("stores")
    ax.set_title(f"Promo effect across {lift.size} stores")
    ax.grid(True, alpha=0.3)
    return fig


# --- forecasts -----------------------------------------------------------------


def _day_spans(days: np.ndarray) -> list[tuple[np.datetime64, np.datetime64]]:
    """Runs of consecutive days as (start, end) half-day-padded spans, so that adjacent days merge."""
    if days.size == 0:
        return []
    days = np.unique(days.astype("datetime64[D]"))
    breaks = np.flatnonzero(np.diff(days) != np.timedelta64(1, "D")) + 1
    half = np.timedelta64(12, "h")
    return [(run[0].astype("datetime64[h]") - half, run[-1].astype("datetime64[h]") + half) for run in np.split(days, breaks)]


def _shade(ax, days: np.ndarray, color: str, label: str) -> None:
    for i, (start, end) in enumerate(_day_spans(days)):
        ax.axvspan(start, end, color=color, alpha=0.6, lw=0, zorder=0, label=label if i == 0 else None)


def _dates(frame: pl.DataFrame) -> np.ndarray:
    return frame[n.DATE].cast(pl.Date).to_numpy().astype("datetime64[D]")


def store_forecasts(history: pl.DataFrame, forecast: pl.DataFrame, stores: list[int], days_back: int = 56) -> Figure:
    """One panel per store: the last ``days_back`` days of sales, then the forecast mean with 50% and 90% bands.

    ``history`` has Kaggle train columns (Store, Date, Sales, Open, Promo); ``forecast``
    the contract columns (Store, Date, mean, q05, q25, q50, q75, q95, open). Closed days
    (and, where the frames have a promo column, promo days) are shaded; sales of closed
    days are not drawn (they are unobserved, not zero).
    """
    if not stores:
        raise ValueError("no stores to plot")
    fig = Figure(figsize=(10, 2.6 * len(stores)), layout="constrained")
    axes = fig.subplots(len(stores), 1, squeeze=False)[:, 0]
    forecast_promo = next((c for c in (n.PROMO, "promo") if c in forecast.columns), None)
    for ax, store in zip(axes, stores, strict=True):
        past = history.filter(pl.col(n.STORE) == store).sort(n.DATE)
        if past.height:
            last = past[n.DATE].max()
            past = past.filter(pl.col(n.DATE) > pl.lit(last) - pl.duration(days=days_back))
        future = forecast.filter(pl.col(n.STORE) == store).sort(n.DATE)

        past_days = _dates(past)
        past_open = past[n.OPEN].cast(pl.Int64).to_numpy() != 0 if past.height else np.zeros(0, bool)
        sales = past[n.SALES].cast(pl.Float64).to_numpy() if past.height else np.zeros(0)
        future_days = _dates(future)
        future_open = future["open"].cast(pl.Boolean).to_numpy() if "open" in future.columns else np.ones(future.height, bool)

        closed = np.concatenate([past_days[~past_open], future_days[~future_open]])
        promo_days = [past_days[past[n.PROMO].cast(pl.Int64).to_numpy() != 0]] if past.height and n.PROMO in past.columns else []
        if forecast_promo is not None and future.height:
            promo_days.append(future_days[future[forecast_promo].cast(pl.Int64).to_numpy() != 0])
        _shade(ax, np.concatenate(promo_days) if promo_days else np.zeros(0, "datetime64[D]"), PROMO_COLOR, "promo")
        _shade(ax, closed, CLOSED_COLOR, "closed")

        ax.plot(past_days, np.where(past_open, sales, np.nan), color="black", lw=1.0, marker=".", ms=3, label="actual")
        if future.height:
            q = {c: future[c].cast(pl.Float64).to_numpy() for c in ("mean", "q05", "q25", "q75", "q95")}
            ax.fill_between(future_days, q["q05"], q["q95"], color=BAND_COLOR, alpha=0.18, lw=0, label="90%")
            ax.fill_between(future_days, q["q25"], q["q75"], color=BAND_COLOR, alpha=0.35, lw=0, label="50%")
            ax.plot(future_days, q["mean"], color=BAND_COLOR, lw=1.5, label="forecast mean")
            ax.axvline(future_days[0].astype("datetime64[h]") - np.timedelta64(12, "h"), color="0.4", ls=":", lw=1)
        else:
            ax.plot([], [], color=BAND_COLOR, lw=1.5, label="forecast mean")
        ax.set_title(f"Store {store}" + ("" if past.height or future.height else " (no data)"), loc="left", fontsize="medium")
        ax.set_ylabel("sales")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    axes[0].legend(loc="upper left", ncols=6, fontsize="small")
    return fig


# --- panel effects --------------------------------------------------------------


def effect_intervals(labels: list[str], mean: np.ndarray, low: np.ndarray, high: np.ndarray, title: str, xlabel: str) -> Figure:
    """One row per key (a brand, a store): the posterior mean and its interval, with a line at zero."""
    order = np.argsort(mean)
    fig = Figure(figsize=(7.0, 0.35 * len(labels) + 1.5), layout="constrained")
    ax = fig.add_subplot()
    rows = np.arange(len(labels))
    ax.errorbar(mean[order], rows, xerr=[mean[order] - low[order], high[order] - mean[order]], fmt="o", color=BAND_COLOR, capsize=3)
    ax.axvline(0.0, color="0.5", linewidth=0.8)
    ax.set_yticks(rows, [labels[i] for i in order])
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return fig
