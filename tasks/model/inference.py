"""Stochastic variational inference for the store-sales model.

The variational family is a mean-field normal: Normal for real sites,
LogNormal for the positive scales. Its parameters are plain arrays keyed
``"<site>.loc"`` and ``"<site>.scale"``; store-level ones have the stores
along the first axis, so fits of different store sets concatenate.

A fit runs compiled chunks of steps (one ``lax.scan`` per chunk, compiled
once per shape) and stops when the relative change of the mean loss between
consecutive chunks stays under a tolerance, or at a step cap. A non-finite
loss raises ``FitDivergedError``: nothing downstream may use such a fit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache, partial
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.infer import SVI
from numpyro.infer.elbo import ELBO
from numpyro.infer.util import compute_log_probs
from numpyro.optim import ClippedAdam

from tasks.model.store_day import ModelInputs, ModelStructure, Site, model
from tasks.model.warm_start import warm_start

log = logging.getLogger(__name__)

Params = dict[str, np.ndarray]


class FitDivergedError(RuntimeError):
    """The ELBO became non-finite: the fit is unusable and nothing is exported."""


@dataclass(frozen=True)
class FitSettings:
    """How SVI runs and when it stops.

    Convergence: after each chunk, the slope of the loss over the last
    ``window_chunks`` chunks (least squares, robust to the step-to-step noise
    of a one-sample ELBO) predicts the relative improvement of one more chunk;
    the fit stops once that stays below ``tolerance`` for ``patience`` checks,
    and a loss that rises beyond both ``tolerance`` and its noise (``LossTrend.rising``) is not calm.
    """

    learning_rate: float = 0.02
    learning_rate_half_life: int = 400  # steps; the decay quiets the final iterates
    max_steps: int = 5000
    chunk_steps: int = 100
    tolerance: float = 1e-4
    patience: int = 2
    window_chunks: int = 5
    subsample_size: int | None = None
    num_particles: int = 1
    clip_norm: float = 10.0
    init_scale: float = 0.05

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.learning_rate_half_life < 1:
            raise ValueError(f"learning_rate_half_life must be >= 1, got {self.learning_rate_half_life}")
        if self.chunk_steps < 1 or self.max_steps < self.chunk_steps:
            raise ValueError(f"need 1 <= chunk_steps <= max_steps, got {self.chunk_steps}, {self.max_steps}")
        if not self.tolerance > 0:
            raise ValueError(f"tolerance must be > 0, got {self.tolerance}")
        if self.window_chunks < 2:
            raise ValueError(f"window_chunks must be >= 2, got {self.window_chunks}")
        if self.subsample_size is not None and self.subsample_size < 1:
            raise ValueError(f"subsample_size must be >= 1 or None, got {self.subsample_size}")


@dataclass(frozen=True)
class FitProgress:
    step: int
    max_steps: int
    loss: float  # mean loss per observation over the last chunk
    relative_improvement: float  # predicted for one more chunk; inf until the window is full
    seconds: float  # since the first step (compilation excluded)
    series_per_step: int | None = None  # series each step reads (a subsample, or all); None: not told
    stop_reason: str | None = None  # on the fit's last chunk: "converged" or "max_steps"; None before
    blocks_read: int | None = None  # series blocks read from disk so far (a streamed fit); None: in memory

    @property
    def seconds_left_at_most(self) -> float:
        """Time to the step cap at the mean pace so far: an upper bound on what is left, since the fit
        stops earlier once it converges (0 on the last chunk; inf before the first step)."""
        if self.stop_reason is not None:
            return 0.0
        if self.step <= 0:
            return float("inf")
        return self.seconds / self.step * max(self.max_steps - self.step, 0)


@dataclass(frozen=True)
class FitResult:
    """An immutable record of one fit: variational parameters and the loss trace."""

    params: Params
    losses: np.ndarray  # per step, loss per observed cell
    n_steps: int
    converged: bool
    compile_seconds: float
    run_seconds: float


def log_progress(progress: FitProgress) -> None:
    """One INFO line per chunk; the record carries ``fit_progress`` for a handler that renders it
    (the CLI's live terminal display, ``flows.progress``)."""
    blocks = "" if progress.blocks_read is None else f"  {progress.blocks_read} series blocks read"
    log.info(
        "step %d/%d  loss/obs %.5f  rel.improvement/chunk %.2e  %.1fs%s",
        progress.step,
        progress.max_steps,
        progress.loss,
        progress.relative_improvement,
        progress.seconds,
        blocks,
        extra={"fit_progress": progress},
    )


# A loss trend that rises by more than this many standard errors of its slope is the loss going up,
# not the ELBO's noise around a plateau: the fit is not called converged on it. Noise alone passes 4 in
# under 0.2% of windows, 0.5% with a streamed fit's chunk offsets (tests/test_convergence.py), so a
# plateau's fit stops as it did.
RISE_STANDARD_ERRORS = 4.0


@dataclass(frozen=True)
class LossTrend:
    """The least-squares trend of the last ``window`` steps' losses, per chunk of steps and relative to their mean."""

    improvement: float  # the predicted relative decrease over one more chunk; inf before a full window
    standard_error: float  # of ``improvement``; inf before a full window

    def rising(self, tolerance: float) -> bool:
        """The loss goes up by more than ``tolerance`` a chunk, and by more than its noise can explain."""
        rise = -self.improvement
        return rise > tolerance and rise > RISE_STANDARD_ERRORS * self.standard_error


def loss_trend(losses: np.ndarray, window: int, chunk: int) -> LossTrend:
    """The trend of the last ``window`` of ``losses``, read over ``chunk`` steps.

    The slope's standard error is the larger of two: with each step's noise independent (a fit held in
    memory draws every step afresh), and with each chunk of steps as one cluster (a sandwich estimate),
    since a streamed fit's chunk takes all its steps from one pool of series, whose loss sits above or
    below the others' for the whole chunk.
    """
    n_chunks = -(-window // chunk)
    if losses.size < window or n_chunks < 2:
        return LossTrend(float("inf"), float("inf"))
    recent = losses[-window:].astype(np.float64)
    steps = np.arange(window, dtype=np.float64)
    centred = steps - steps.mean()
    weights = centred / float(centred @ centred)
    slope = float(weights @ recent)
    residuals = recent - recent.mean() - slope * centred
    independent_var = float(residuals @ residuals) / (window - 2) * float(weights @ weights)
    per_chunk_terms = np.add.reduceat(weights * residuals, np.arange(0, window, chunk))
    clustered_var = n_chunks / (n_chunks - 1) * float(per_chunk_terms @ per_chunk_terms)
    slope_se = np.sqrt(max(independent_var, clustered_var))
    relative = chunk / max(abs(float(recent.mean())), 1e-12)
    return LossTrend(-slope * relative, float(slope_se * relative))


# --- the variational family -----------------------------------------------


def _site_dist(site: str, loc: jnp.ndarray, scale: jnp.ndarray, event_dims: int) -> dist.Distribution:
    base = dist.LogNormal(loc, scale) if site in Site.POSITIVE else dist.Normal(loc, scale)
    return base.to_event(event_dims) if event_dims else base


# Event dims of each site as the model declares it (store sites inside the plate).
EVENT_DIMS = {
    Site.POOLED_MEAN: 1,
    Site.POOLED_SCALE: 1,
    Site.STORE_SHIFT: 2,
    Site.GLOBAL_COEF: 1,
    Site.LEVEL_SCALE: 0,
    Site.DAY_SCALE: 0,
    Site.DAY_SCALE_COEF: 1,
    Site.DAY_RAW: 1,
    Site.DISPERSION_MEAN: 0,
    Site.DISPERSION_SCALE: 0,
    Site.TAIL_LOGIT: 1,
    Site.TAIL_GAP: 1,
    Site.POOLED_RAW: 1,
    Site.DISPERSION_RAW: 0,
    Site.LEVEL_STEPS_PAST: 1,
}


def guide(
    inputs: ModelInputs,
    structure: ModelStructure,
    subsample_size: int | None = None,
    sites: tuple[str, ...] = Site.GLOBAL + Site.STORE,
) -> None:
    """Mean-field guide over ``sites``.

    Its parameters have no defaults: a fit passes its start values to
    ``SVI.init(init_params=...)``, a forecast passes fitted values.
    """

    def param(name: str) -> jnp.ndarray:
        if name.endswith(".scale"):
            return numpyro.param(name, None, constraint=dist.constraints.positive)
        return numpyro.param(name, None)

    for site in Site.GLOBAL:
        if site in sites:
            numpyro.sample(site, _site_dist(site, param(f"{site}.loc"), param(f"{site}.scale"), EVENT_DIMS[site]))
    store_sites = [s for s in Site.STORE if s in sites]
    if not store_sites:
        return
    full = {s: (param(f"{s}.loc"), param(f"{s}.scale")) for s in store_sites}
    n_stores = inputs.observed.shape[0]
    with numpyro.plate(Site.STORES_PLATE, n_stores, subsample_size=subsample_size, dim=-2) as idx:
        for site, (loc, scale) in full.items():
            numpyro.sample(site, _site_dist(site, jnp.asarray(loc)[idx], jnp.asarray(scale)[idx], EVENT_DIMS[site]))


def local_start(
    inputs: ModelInputs, structure: ModelStructure, fixed: dict[str, jnp.ndarray], init_scale: float
) -> Params:
    """Store-level guide parameters for a local fit: population effects, own level.

    Each store starts where the fixed population puts a store with its
    attributes, except for its level, which starts at its own log mean sales.
    """
    sales = np.asarray(inputs.sales)
    observed = np.asarray(inputs.observed)
    n_stores = sales.shape[0]
    counts = observed.sum(axis=1)
    totals = np.where(observed, sales, 0.0).sum(axis=1)
    z = np.asarray(inputs.store_z)
    population = np.asarray(fixed[Site.POOLED_MEAN]) + z @ np.asarray(fixed[Site.STORE_SHIFT])  # [S, P]
    scale = np.asarray(fixed[Site.POOLED_SCALE])
    pooled_raw = np.zeros((n_stores, 1, structure.n_pooled), np.float32)
    with np.errstate(divide="ignore"):
        log_level = np.log(np.maximum(totals / np.maximum(counts, 1), 1.0)) - structure.log_offset
    own = np.where(counts > 0, log_level - population[:, 0], 0.0)
    pooled_raw[:, 0, 0] = np.clip(own / scale[0], -4.0, 4.0)
    locs = {
        Site.POOLED_RAW: pooled_raw,
        Site.DISPERSION_RAW: np.zeros((n_stores, 1), np.float32),
        Site.LEVEL_STEPS_PAST: np.zeros((n_stores, 1, structure.n_past_blocks), np.float32),
    }
    params: Params = {}
    for site, loc in locs.items():
        params[f"{site}.loc"] = loc
        params[f"{site}.scale"] = np.full(loc.shape, init_scale, np.float32)
    return params


def point_estimate(params: Params, sites: tuple[str, ...]) -> dict[str, jnp.ndarray]:
    """Posterior medians of ``sites`` in the constrained space."""
    out = {}
    for site in sites:
        loc = jnp.asarray(params[f"{site}.loc"])
        out[site] = jnp.exp(loc) if site in Site.POSITIVE else loc
    return out


def store_coefficients(params: Params, store_z: np.ndarray) -> np.ndarray:
    """Per-store pooled coefficients [S, P] at the posterior medians.

    b[s] = pooled_mean + z[s] @ store_shift + pooled_scale * pooled_raw[s], for
    the stores whose store-level parameters ``params`` holds, in that order;
    ``store_z`` [S, F_store] are their encoded attributes.
    """
    est = {k: np.asarray(v) for k, v in point_estimate(params, (Site.POOLED_MEAN, Site.POOLED_SCALE, Site.STORE_SHIFT)).items()}
    raw = np.asarray(params[f"{Site.POOLED_RAW}.loc"])
    raw = raw.reshape(raw.shape[0], -1)
    z = np.asarray(store_z, dtype=np.float64)
    expected = (raw.shape[0], est[Site.STORE_SHIFT].shape[0])
    if z.shape != expected:
        raise ValueError(f"store_z has shape {z.shape}, expected {expected} for these parameters")
    return est[Site.POOLED_MEAN][None, :] + z @ est[Site.STORE_SHIFT] + est[Site.POOLED_SCALE][None, :] * raw


# --- fitting ----------------------------------------------------------------


def _local_model(inputs: ModelInputs, fixed: dict[str, jnp.ndarray], structure: ModelStructure) -> None:
    with handlers.condition(data=fixed):
        model(inputs, structure)


def _local_guide(inputs: ModelInputs, fixed: dict[str, jnp.ndarray], structure: ModelStructure) -> None:
    guide(inputs, structure, sites=Site.STORE)


@lru_cache(maxsize=16)
def _svi_program(structure: ModelStructure, settings: FitSettings, subsample_size: int | None, local: bool):
    """SVI plus its compiled init and chunk functions, built once per (structure, settings).

    Everything that varies between fits of the same shape (data, start
    values, fixed globals) is an argument, so a second fit reuses the
    compiled programs.
    """
    if local:
        model_fn, guide_fn = partial(_local_model, structure=structure), partial(_local_guide, structure=structure)
    else:
        model_fn = partial(model, structure=structure, subsample_size=subsample_size)
        guide_fn = partial(guide, structure=structure, subsample_size=subsample_size)
    return compiled_svi(model_fn, guide_fn, settings)


class ChunkProgram(Protocol):
    """What ``drive_svi`` runs: a fit in compiled chunks of steps over some state it does not look into."""

    def start(self, key: jax.Array, init: Params) -> Any: ...

    def compile(self, state: Any, scale: jnp.ndarray) -> None: ...

    def run(self, state: Any, scale: jnp.ndarray) -> tuple[Any, jnp.ndarray]:
        """One chunk: the new state and each step's loss times ``scale``."""
        ...

    def params(self, state: Any) -> Params: ...

    def blocks_read(self) -> int | None:
        """Series blocks read from disk so far (None: the fit holds its data in memory)."""
        ...


@dataclass(frozen=True)
class SVIChunks:
    """A ``ChunkProgram`` over NumPyro's SVI on one set of arguments held in memory (``compiled_svi``)."""

    svi: SVI
    init_state: Callable
    run_chunk: Callable
    args: tuple

    def start(self, key: jax.Array, init: Params) -> Any:
        return self.init_state(key, init, self.args)

    def compile(self, state: Any, scale: jnp.ndarray) -> None:
        self.run_chunk.lower(state, self.args, scale).compile()

    def run(self, state: Any, scale: jnp.ndarray) -> tuple[Any, jnp.ndarray]:
        return self.run_chunk(state, self.args, scale)

    def params(self, state: Any) -> Params:
        return {k: np.asarray(v) for k, v in self.svi.get_params(state).items()}

    def blocks_read(self) -> int | None:
        return None


def drive_svi(program: ChunkProgram, init: Params, n_observed: int, settings: FitSettings, key: jax.Array,
              on_progress: Callable[[FitProgress], None], *, series_per_step: int | None = None, min_steps: int = 0) -> FitResult:
    """Run compiled chunks of SVI steps until the loss trend converges or the step cap is reached.

    Every model of the project (store-day, panel, the panel streamed from disk) is fitted through this one
    loop. ``series_per_step`` is only reported in the progress (``FitProgress.series_per_step``); the fit
    is not called converged before ``min_steps``.
    """
    scale = jnp.float32(1.0 / max(n_observed, 1))

    t0 = time.perf_counter()
    state = program.start(key, init)
    program.compile(state, scale)
    compile_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    chunks: list[np.ndarray] = []
    window = settings.window_chunks * settings.chunk_steps
    calm = 0
    converged = False
    warned_rising = False
    while len(chunks) * settings.chunk_steps < settings.max_steps:
        state, losses = program.run(state, scale)
        losses = np.asarray(losses)
        chunks.append(losses)
        step = len(chunks) * settings.chunk_steps
        if not np.all(np.isfinite(losses)):
            bad = step - settings.chunk_steps + int(np.argmin(np.isfinite(losses)))
            raise FitDivergedError(f"the ELBO became non-finite at step {bad}; refusing to use this fit")
        trend = loss_trend(np.concatenate(chunks[-settings.window_chunks :]), window, settings.chunk_steps)
        rising = trend.rising(settings.tolerance)
        if rising and not warned_rising:
            log.warning(
                "the loss is rising at step %d (%.2e a chunk, standard error %.1e): not converged while it does; "
                "a lower learning rate may help",
                step, -trend.improvement, trend.standard_error,
            )  # fmt: skip
            warned_rising = True
        calm = calm + 1 if trend.improvement < settings.tolerance and not rising else 0
        converged = calm >= settings.patience and step >= min_steps
        stop = "converged" if converged else "max_steps" if step >= settings.max_steps else None
        seconds = time.perf_counter() - t0
        on_progress(
            FitProgress(step, settings.max_steps, float(losses.mean()), trend.improvement, seconds, series_per_step, stop, program.blocks_read())
        )
        if converged:
            break
    params = program.params(state)
    losses = np.concatenate(chunks)
    return FitResult(params, losses, len(losses), converged, compile_seconds, time.perf_counter() - t0)


class SiteOrderedELBO(ELBO):
    """The ELBO of NumPyro's Trace_ELBO (log p - log q at each sample site of one guide draw), with the
    sites visited in the order of their names.

    Trace_ELBO visits them in the order of a Python set, which changes with each process's string hash
    seed: the same fit then traces to a different program in each process, so that JAX's persistent
    compilation cache misses, and rounds differently, so that one seed gives slightly different numbers.
    """

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        def particle_elbo(key: jax.Array) -> jax.Array:
            model_key, guide_key = jax.random.split(key)
            guide_log_probs, guide_trace = compute_log_probs(handlers.seed(guide, guide_key), args, kwargs, param_map)
            replayed = handlers.replay(handlers.seed(model, model_key), guide_trace)
            model_log_probs, _ = compute_log_probs(replayed, args, kwargs, param_map)
            elbo = jnp.array(0.0)
            for name in sorted(set(model_log_probs) | set(guide_log_probs)):
                elbo = elbo + model_log_probs.get(name, 0.0) - guide_log_probs.get(name, 0.0)
            return elbo

        if self.num_particles == 1:
            elbo = particle_elbo(rng_key)
        else:
            elbo = jnp.mean(jax.vmap(particle_elbo)(jax.random.split(rng_key, self.num_particles)))
        return {"loss": -elbo, "mutable_state": None}


def compiled_svi(model_fn, guide_fn, settings: FitSettings):
    """SVI with its jitted init and chunk programs (Adam with a halving step size, clipped gradients)."""

    def step_size(step):
        return settings.learning_rate * 0.5 ** (step / settings.learning_rate_half_life)

    optimizer = ClippedAdam(step_size=step_size, clip_norm=settings.clip_norm)
    svi = SVI(model_fn, guide_fn, optimizer, SiteOrderedELBO(num_particles=settings.num_particles))

    @jax.jit
    def init_state(key, init, args):
        return svi.init(key, *args, init_params=init)

    @jax.jit
    def run_chunk(state, args, scale):
        def body(state, _):
            state, loss = svi.update(state, *args)
            return state, loss * scale

        return jax.lax.scan(body, state, None, length=settings.chunk_steps)

    return svi, init_state, run_chunk


def _run_svi(
    args: tuple,
    init: Params,
    n_observed: int,
    settings: FitSettings,
    key: jax.Array,
    on_progress: Callable[[FitProgress], None],
    subsample_size: int | None,
    structure: ModelStructure,
    local: bool,
) -> FitResult:
    return drive_svi(SVIChunks(*_svi_program(structure, settings, subsample_size, local), args), init, n_observed, settings, key, on_progress)


def fit_global(
    inputs: ModelInputs,
    structure: ModelStructure,
    settings: FitSettings,
    key: jax.Array,
    on_progress: Callable[[FitProgress], None] = log_progress,
) -> FitResult:
    """Fit every latent variable on all stores with history."""
    if inputs.sales is None:
        raise ValueError("fit_global needs sales; got inputs without them")
    n_stores = inputs.observed.shape[0]
    subsample = settings.subsample_size if settings.subsample_size and settings.subsample_size < n_stores else None
    init = warm_start(inputs, structure, settings.init_scale)
    n_obs = int(np.asarray(inputs.observed).sum())
    # With stores subsampled, the loss of one step estimates the full loss.
    return _run_svi((inputs,), init, n_obs, settings, key, on_progress, subsample, structure, local=False)


def fit_local(
    inputs: ModelInputs,
    structure: ModelStructure,
    global_params: Params,
    settings: FitSettings,
    key: jax.Array,
    on_progress: Callable[[FitProgress], None] = log_progress,
) -> FitResult:
    """Fit only the store-level variables of the given stores, globals held fixed.

    All stores in ``inputs`` are fitted in one vectorised program; the
    globals are fixed at their posterior medians from ``global_params``.
    Returns store-level parameters only.
    """
    if inputs.sales is None:
        raise ValueError("fit_local needs sales; got inputs without them")
    fixed = point_estimate(global_params, Site.GLOBAL)
    init = local_start(inputs, structure, fixed, settings.init_scale)
    n_obs = int(np.asarray(inputs.observed).sum())
    local = replace(settings, subsample_size=None)
    return _run_svi((inputs, fixed), init, n_obs, local, key, on_progress, None, structure, local=True)
