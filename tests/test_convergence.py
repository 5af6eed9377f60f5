"""When a fit is called converged: the loss trend's noise, and a rising loss that is not a plateau."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasks.model.inference import FitSettings, LossTrend, drive_svi, loss_trend

CHUNK = 100
SETTINGS = FitSettings(max_steps=3000, chunk_steps=CHUNK, tolerance=1e-4, patience=2, window_chunks=5)
WINDOW = SETTINGS.window_chunks * CHUNK


class ScriptedLosses:
    """A ``ChunkProgram`` that plays back a given loss per step, a chunk at a time."""

    def __init__(self, losses: np.ndarray) -> None:
        self.losses = losses

    def start(self, key: jax.Array, init: dict) -> int:
        return 0

    def compile(self, state: int, scale: jnp.ndarray) -> None:
        pass

    def run(self, state: int, scale: jnp.ndarray) -> tuple[int, jnp.ndarray]:
        return state + 1, jnp.asarray(self.losses[state * CHUNK : (state + 1) * CHUNK])

    def params(self, state: int) -> dict:
        return {}

    def blocks_read(self) -> int | None:
        return None


def _drive(losses: np.ndarray):
    return drive_svi(ScriptedLosses(losses), {}, 1, SETTINGS, jax.random.key(0), lambda progress: None)


def _trends(n_chunks: int, chunk_offset_sd: float, seeds: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Improvements, standard errors and rises of flat losses: noise of 0.2 a step, plus an offset shared by each chunk's steps."""
    window = n_chunks * CHUNK
    trends = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        offsets = np.repeat(chunk_offset_sd * rng.normal(size=n_chunks), CHUNK)
        trends.append(loss_trend(8.0 + offsets + 0.2 * rng.normal(size=window), window, CHUNK))
    return (
        np.array([t.improvement for t in trends]),
        np.array([t.standard_error for t in trends]),
        np.array([t.rising(SETTINGS.tolerance) for t in trends]),
    )


def test_the_trends_standard_error_is_the_spread_of_its_estimate_over_noise() -> None:
    improvements, standard_errors, rising = _trends(SETTINGS.window_chunks, 0.0)
    assert np.std(improvements) == pytest.approx(np.mean(standard_errors), rel=0.1)
    assert rising.mean() < 0.002  # a plateau's noise is not a rise
    assert loss_trend(8.0 + np.zeros(WINDOW), WINDOW, CHUNK).improvement == pytest.approx(0.0)
    assert loss_trend(np.ones(WINDOW - 1), WINDOW, CHUNK) == LossTrend(float("inf"), float("inf"))


def test_chunks_drawn_from_different_pools_of_series_are_not_read_as_a_rise() -> None:
    # A streamed fit: each chunk's loss is its own pool's, above or below the others'; the trend is read
    # over up to 20 chunks. Steps taken as independent, the offsets would look like a rise in 6% of checks.
    improvements, standard_errors, rising = _trends(20, 0.05)
    assert np.std(improvements) == pytest.approx(np.mean(standard_errors), rel=0.15)
    assert rising.mean() < 0.005


def test_a_rise_is_one_beyond_both_the_tolerance_and_the_noise() -> None:
    steps = np.arange(WINDOW)
    noise = 0.002 * np.random.default_rng(1).normal(size=WINDOW)
    rising = loss_trend(8.0 + 2e-5 * steps + noise, WINDOW, CHUNK)  # 2.5e-4 a chunk, relative
    assert rising.improvement == pytest.approx(-2.5e-4, rel=0.1) and rising.rising(SETTINGS.tolerance)
    assert not rising.rising(1e-3)  # within the tolerance asked for
    noisy = loss_trend(8.0 + 2e-5 * steps + 250 * noise, WINDOW, CHUNK)  # the same rise, lost in the noise
    assert not noisy.rising(SETTINGS.tolerance)
    assert not loss_trend(8.0 - 2e-5 * steps + noise, WINDOW, CHUNK).rising(SETTINGS.tolerance)


def test_a_fit_whose_loss_rises_is_not_called_converged(caplog: pytest.LogCaptureFixture) -> None:
    steps = np.arange(SETTINGS.max_steps)
    noise = 0.01 * np.random.default_rng(2).normal(size=steps.size)
    # Falls, turns near step 770 and climbs on (an optimiser walking off its optimum): no plateau.
    losses = 8.0 + np.exp(-steps / 150.0) + 4e-5 * steps + noise
    with caplog.at_level(logging.WARNING, logger="tasks.model.inference"):
        result = _drive(losses)
    assert not result.converged and result.n_steps == SETTINGS.max_steps
    assert "the loss is rising" in caplog.text


def test_a_noisy_plateau_is_called_converged_whichever_way_its_noise_tilts() -> None:
    steps = np.arange(SETTINGS.max_steps)
    noise = 0.2 * np.random.default_rng(3).normal(size=steps.size)
    result = _drive(8.0 + np.exp(-steps / 150.0) + noise)
    assert result.converged and result.n_steps < SETTINGS.max_steps
