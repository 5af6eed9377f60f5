"""The negative binomial (NB2) on the log-mean scale, with fast exact-where-needed draws.

``NegativeBinomialLogMean`` is the likelihood of the model. Its log-density
is written on the log scale: one log-gamma per observation where the generic
form computes three, and no exp(-r) to under/overflow.

Drawing millions of counts on a CPU with JAX's rejection samplers is slow, so
draws use normal transforms where they are accurate to well under one unit of
sales, and the exact samplers elsewhere:
- the gamma mixing variable: Wilson-Hilferty's cube-normal transform for
  shape >= 10 (relative quantile error < 1e-3); below, the same transform at
  shape a + n >= 10, brought down to shape a by the exact identity
  Gamma(a) = Gamma(a + n) * prod_{i<n} U_i^(1 / (a + i)) (no rejection loop:
  the mixture's wide components put many draws below 10);
- the Poisson count: the rounded normal for rate >= 100 (skewness <= 0.1,
  and the Poisson part is then a small share of the NB variance), exact below.
``draw_counts`` applies the exact samplers only to the elements that need
them (gathered on the host), so a few small values do not slow a whole array.
Counts of a small mean (below ``INVERSION_MAX_MEAN``: most of a store x product
panel's cells, where the exact samplers' loops took 16 s per 7M draws) are drawn
exactly by inverting the NB's CDF instead: one uniform, and the pmf's recurrence
p(k+1) = p(k) (k + r) / (k + 1) * mu / (r + mu) summed until it passes the uniform.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import gammaln
from numpyro.distributions import constraints
from numpyro.distributions.util import promote_shapes

NORMAL_GAMMA_MIN_SHAPE = 10.0
NORMAL_POISSON_MIN_RATE = 100.0
INVERSION_MAX_MEAN = 10.0
# Values 0 .. 7 in one compiled pass over every element (most small means end there: 1-4% of an M5-like
# chunk's draws go on), 32 more for the draws beyond, in blocks; the few beyond those go on, on the host.
INVERSION_TERMS = 8
INVERSION_MORE_TERMS = 32
CONTINUE_BLOCK = 1 << 15
# Arrays with fewer small means than this share keep the gamma-Poisson path for every element: the draws of
# a store-level forecast (Rossmann's, where only a wide draw's few cells fall below) stay those it always had.
INVERSION_MIN_SHARE = 0.5


def gamma_wilson_hilferty(key: jax.Array, shape_param: jnp.ndarray) -> jnp.ndarray:
    z = jax.random.normal(key, jnp.shape(shape_param))
    c = 1.0 / (9.0 * shape_param)
    return shape_param * jnp.maximum(1.0 - c + z * jnp.sqrt(c), 0.0) ** 3


def poisson_normal(key: jax.Array, rate: jnp.ndarray) -> jnp.ndarray:
    return jnp.maximum(jnp.round(rate + jnp.sqrt(rate) * jax.random.normal(key, jnp.shape(rate))), 0.0)


BOOST_STEPS = int(NORMAL_GAMMA_MIN_SHAPE)


def gamma_boosted(key: jax.Array, shape_param: jnp.ndarray) -> jnp.ndarray:
    """Gamma(shape) draws: Wilson-Hilferty at shape + n >= 10, times U_i^(1/(shape + i)) for i < n."""
    a = jnp.maximum(shape_param, 1e-6)
    n = jnp.ceil(jnp.maximum(NORMAL_GAMMA_MIN_SHAPE - a, 0.0))
    key_gamma, key_uniform = jax.random.split(key)
    u = jax.random.uniform(key_uniform, (BOOST_STEPS, *jnp.shape(a)), minval=jnp.finfo(jnp.float32).tiny)
    step = jnp.arange(BOOST_STEPS, dtype=a.dtype).reshape((BOOST_STEPS,) + (1,) * jnp.ndim(a))
    log_factor = jnp.sum(jnp.where(step < n, jnp.log(u) / (a + step), 0.0), axis=0)
    return gamma_wilson_hilferty(key_gamma, a + n) * jnp.exp(log_factor)


def _poisson(key, rate):
    exact = jax.random.poisson(key, rate).astype(rate.dtype)
    return jnp.where(rate >= NORMAL_POISSON_MIN_RATE, poisson_normal(key, rate), exact)


class NegativeBinomialLogMean(dist.Distribution):
    """NB2 with mean exp(log_mean) and concentration r: variance mu + mu^2 / r."""

    arg_constraints = {"log_mean": constraints.real, "concentration": constraints.positive}
    support = constraints.nonnegative_integer

    def __init__(self, log_mean, concentration, *, validate_args=None):
        self.log_mean, self.concentration = promote_shapes(log_mean, concentration)
        batch_shape = jax.lax.broadcast_shapes(jnp.shape(log_mean), jnp.shape(concentration))
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    @property
    def mean(self):
        return jnp.broadcast_to(jnp.exp(self.log_mean), self.batch_shape)

    def sample(self, key, sample_shape=()):
        shape = sample_shape + self.batch_shape
        key_gamma, key_poisson = jax.random.split(key)
        gamma = gamma_boosted(key_gamma, jnp.broadcast_to(self.concentration, shape))
        return _poisson(key_poisson, gamma * jnp.exp(self.log_mean - jnp.log(self.concentration)))

    def log_prob(self, value):
        return _nb_log_prob_unnormalised(value, self.log_mean, jnp.log(self.concentration)) - gammaln(value + 1.0)


class NegativeBinomialScaleMixture(dist.Distribution):
    """A scale mixture of NB2s with a common mean: leptokurtic, still negative binomial.

    Component k (weights softmax(``component_logits``), the last axis) has log
    concentration ``log_r + component_offsets[k]``; all have mean
    exp(log_mean), so the mixture does too. A single NB fitted to peaked,
    heavy-tailed counts widens its centre to reach its tails; the mixture
    need not.
    """

    arg_constraints = {
        "log_mean": constraints.real,
        "log_r": constraints.real,
        "component_offsets": constraints.real_vector,
        "component_logits": constraints.real_vector,
    }
    support = constraints.nonnegative_integer

    def __init__(self, log_mean, log_r, component_offsets, component_logits, *, validate_args=None):
        self.log_mean, self.log_r = promote_shapes(log_mean, log_r)
        self.component_offsets = jnp.asarray(component_offsets)
        self.component_logits = jnp.asarray(component_logits)
        batch_shape = jax.lax.broadcast_shapes(
            jnp.shape(log_mean), jnp.shape(log_r), jnp.shape(self.component_offsets)[:-1], jnp.shape(self.component_logits)[:-1]
        )
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    @property
    def mean(self):
        return jnp.broadcast_to(jnp.exp(self.log_mean), self.batch_shape)

    def sample(self, key, sample_shape=()):
        shape = sample_shape + self.batch_shape
        key_component, key_counts = jax.random.split(key)
        component = jax.random.categorical(key_component, self.component_logits, shape=shape)
        offsets = jnp.broadcast_to(self.component_offsets, shape + self.component_offsets.shape[-1:])
        log_r = self.log_r + jnp.take_along_axis(offsets, component[..., None], axis=-1)[..., 0]
        return NegativeBinomialLogMean(jnp.broadcast_to(self.log_mean, shape), jnp.exp(log_r)).sample(key_counts)

    def log_prob(self, value):
        log_weights = jax.nn.log_softmax(self.component_logits, axis=-1)
        n_components = self.component_offsets.shape[-1]
        parts = [
            log_weights[..., k] + _nb_log_prob_unnormalised(value, self.log_mean, self.log_r + self.component_offsets[..., k])
            for k in range(n_components)
        ]
        return jax.nn.logsumexp(jnp.stack(parts), axis=0) - gammaln(value + 1.0)


def _mixture_components(u: jnp.ndarray, log_weights: jnp.ndarray, offsets: jnp.ndarray, draws_last: bool = False) -> tuple[jnp.ndarray, ...]:
    """The component of each element given its uniform ``u`` (``log_weights`` and ``offsets`` [D, K]; the
    draws on ``u``'s first axis, or its last with ``draws_last``): its offset, and where its weight's
    interval begins and how wide it is."""
    extra = (1,) * (u.ndim - 1)

    def per_draw(values: jnp.ndarray) -> jnp.ndarray:  # [D] against u's draws axis
        return values if draws_last else values.reshape(-1, *extra)

    cumulative = jnp.cumsum(jnp.exp(log_weights), axis=-1)
    offset, lower, width = jnp.zeros(u.shape), jnp.zeros(u.shape), jnp.ones(u.shape)
    for k in range(offsets.shape[-1]):
        start = per_draw(cumulative[:, k - 1]) if k else 0.0
        above_previous = u >= start
        last = k == offsets.shape[-1] - 1
        end = 1.0 if last else per_draw(cumulative[:, k])
        chosen = above_previous & (True if last else u < end)
        offset = jnp.where(chosen, per_draw(offsets[:, k]), offset)
        lower = jnp.where(chosen, start, lower)
        width = jnp.where(chosen, end - start, width)
    return offset, lower, width


def mixture_concentration(
    key: jax.Array, core_concentration: jnp.ndarray, log_weights: jnp.ndarray, offsets: jnp.ndarray, shape: tuple[int, ...],
    draws_last: bool = False,
) -> jnp.ndarray:
    """Each draw's concentration under the scale mixture: a component per element of ``shape`` ([D, s, T], or
    [s, T, D] with ``draws_last``), chosen with the draw's weights; ``core_concentration`` broadcasts to
    ``shape``, ``log_weights`` and ``offsets`` are [D, K]. One uniform per element and a comparison per
    component: cheaper than a categorical sampler's K Gumbel draws."""
    offset, _, _ = _mixture_components(jax.random.uniform(key, shape), log_weights, offsets, draws_last)
    return core_concentration * jnp.exp(offset)


def mixture_concentration_and_uniform(
    key: jax.Array, core_concentration: jnp.ndarray, log_weights: jnp.ndarray, offsets: jnp.ndarray, shape: tuple[int, ...],
    draws_last: bool = False,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``mixture_concentration``, and a uniform per element independent of its component (where the
    element's uniform lies within its component's interval, rescaled): ``draw_counts`` inverts the CDF with
    it, so that one uniform serves both (drawing them is a third of a forecast's arithmetic on a CPU). Its
    resolution is the float32 uniform's divided by the component's weight: ~2e-6 for a weight of 0.05."""
    u = jax.random.uniform(key, shape)
    offset, lower, width = _mixture_components(u, log_weights, offsets, draws_last)
    within = jnp.clip((u - lower) / width, 0.0, 1.0 - 2.0**-24)
    return core_concentration * jnp.exp(offset), within


def _nb_log_prob_unnormalised(value, log_mean, log_r):
    """NB2 log-density without its -log(value!) term."""
    r = jnp.exp(log_r)
    log_r_plus_mu = jnp.logaddexp(log_r, log_mean)
    return gammaln(value + r) - gammaln(r) + r * (log_r - log_r_plus_mu) + value * (log_mean - log_r_plus_mu)


_gamma_wh_jit = jax.jit(gamma_wilson_hilferty)
_poisson_normal_jit = jax.jit(poisson_normal)
_gamma_boosted_jit = jax.jit(gamma_boosted)
_poisson_exact_jit = jax.jit(lambda key, rate: jax.random.poisson(key, rate).astype(rate.dtype))
_rate_jit = jax.jit(lambda gamma, log_mean, r: gamma * jnp.exp(log_mean - jnp.log(r)))


def _padded(values: np.ndarray) -> np.ndarray:
    """Pad to the next power of two, so that subsets of any size reuse a few compiled shapes."""
    size = 1 << max(int(values.size - 1).bit_length(), 4)
    return np.pad(values, (0, size - values.size), constant_values=values[0])


def _redraw_exact(key: jax.Array, draws: np.ndarray, params: np.ndarray, needs_exact: np.ndarray, exact_fn) -> np.ndarray:
    """``draws`` with the elements flagged in ``needs_exact`` drawn again by the exact sampler."""
    where = np.flatnonzero(needs_exact)
    if not where.size:
        return draws
    draws = np.array(draws)  # a writable copy, only when something changes
    draws.flat[where] = np.asarray(exact_fn(key, jnp.asarray(_padded(params.ravel()[where]))))[: where.size]
    return draws


def _inversion_terms(u, r, q, count, pmf, cdf, first: int, terms: int):
    """``terms`` more values of the inversion, from the value ``first`` whose pmf and cdf are held: pmf(k + 1)
    = pmf(k) (k + r) / (k + 1) q. Unrolled, so that XLA fuses every term into one pass over the elements (a
    loop reads and writes the whole arrays once per term)."""
    for k in range(first, first + terms):
        pmf = pmf * ((k + r) * (q / (k + 1.0)))
        cdf = cdf + pmf
        count = count + (u > cdf)
    return count, pmf, cdf


def _ratio_and_zero_pmf(log_mean, r):
    """q = mu / (r + mu), the pmf's ratio, and pmf(0) = (r / (r + mu))^r."""
    log_r = jnp.log(r)
    log_total = jnp.logaddexp(log_r, log_mean)
    return jnp.exp(log_mean - log_total), jnp.exp(r * (log_r - log_total))


@jax.jit
def _nb_inversion(u: jnp.ndarray, log_mean: jnp.ndarray, r: jnp.ndarray) -> tuple[jnp.ndarray, ...]:
    """NB counts by inversion of the uniforms ``u`` over the values 0 .. INVERSION_TERMS - 1: the count, and
    the last value's pmf and cdf (for the draws whose uniform lies beyond: count == INVERSION_TERMS). An element
    of a large mean (not ``_small_means``) gets count -1: another sampler draws it, and its inversion, which
    would mostly go beyond, is not carried on."""
    q, pmf = _ratio_and_zero_pmf(log_mean, r)
    count, pmf, cdf = _inversion_terms(u, r, q, (u > pmf).astype(jnp.int32), pmf, pmf, 0, INVERSION_TERMS - 1)
    return jnp.where(_small_means(log_mean), count, -1), pmf, cdf


def _small_means(log_mean: jnp.ndarray) -> jnp.ndarray:
    """The elements the inversion draws: a mean below INVERSION_MAX_MEAN (compared in the means' float32)."""
    return log_mean < np.log(INVERSION_MAX_MEAN)


@jax.jit
def _count_small_means(log_mean: jnp.ndarray) -> jnp.ndarray:
    return jnp.sum(_small_means(log_mean), dtype=jnp.int32)


_uniform_jit = jax.jit(jax.random.uniform, static_argnames="shape")


@jax.jit
def _nb_inversion_more(u, log_mean, r, pmf, cdf) -> tuple[jnp.ndarray, ...]:
    """The inversion carried on over INVERSION_MORE_TERMS values past the first pass's, for the draws beyond it."""
    count = jnp.full(u.shape, INVERSION_TERMS, jnp.int32)
    q, _ = _ratio_and_zero_pmf(log_mean, r)
    return _inversion_terms(u, r, q, count, pmf, cdf, INVERSION_TERMS - 1, INVERSION_MORE_TERMS)


def _padded_blocks(size: int, *arrays: np.ndarray):
    """(block number, start, stop, the arrays' elements start .. stop - 1 padded to ``size`` with their last)
    for 1-D arrays of any length: a jitted function of them compiles once, not once per length."""
    for number, start in enumerate(range(0, arrays[0].size, size)):
        stop = min(start + size, arrays[0].size)
        yield number, start, stop, [jnp.asarray(np.pad(a[start:stop], (0, size - (stop - start)), mode="edge")) for a in arrays]


def _continue_inversion(counts: np.ndarray, u: np.ndarray, log_mean: np.ndarray, r: np.ndarray, pmf: np.ndarray, cdf: np.ndarray) -> None:
    """The draws the first pass left beyond its values (``counts`` == INVERSION_TERMS, 1-D, set in place)
    carried on by ``_nb_inversion_more`` in padded blocks of ``CONTINUE_BLOCK`` (one compiled shape), and
    the few still beyond by ``_inversion_tail``."""
    for _, start, stop, part in _padded_blocks(CONTINUE_BLOCK, u, log_mean, r, pmf, cdf):
        more, last_pmf, last_cdf = (np.asarray(a)[: stop - start] for a in _nb_inversion_more(*part))
        beyond = np.flatnonzero(more >= INVERSION_TERMS + INVERSION_MORE_TERMS)
        tail = more.astype(np.float32)
        if beyond.size:
            rows = start + beyond
            values = tail[beyond]
            mean = np.exp(log_mean[rows].astype(np.float64))
            _inversion_tail(values, u[rows], r[rows].astype(np.float64), mean, last_pmf[beyond], last_cdf[beyond])
            tail[beyond] = values
        counts[start:stop] = tail


TAIL_TERMS = 512  # values per pass of the tail's inversion
TAIL_BATCH = 4096  # draws per pass: bounds its [draws, values] arrays


def _inversion_tail(counts: np.ndarray, u: np.ndarray, r: np.ndarray, mean: np.ndarray, pmf: np.ndarray, cdf: np.ndarray) -> None:
    """Carry the inversion on, in float64, for the draws whose uniform lies beyond the first values (``counts``
    in place): ``TAIL_TERMS`` values at a time, the pmf's recurrence as a cumulative product. A small
    concentration (the scale mixture's widest component) makes tails of thousands of values."""
    q = mean / (r + mean)
    for batch in range(0, counts.size, TAIL_BATCH):
        rows = np.arange(batch, min(batch + TAIL_BATCH, counts.size))
        held_value = counts[rows].astype(np.float64) - 1.0  # the value whose pmf and cdf are held
        held_pmf, held_cdf = pmf[rows].astype(np.float64), cdf[rows].astype(np.float64)
        steps = np.arange(TAIL_TERMS, dtype=np.float64)[None, :]
        while rows.size:
            k = held_value[:, None] + steps  # the ratio's k: pmf(k + 1) = pmf(k) (k + r) / (k + 1) q
            terms = held_pmf[:, None] * np.cumprod((k + r[rows, None]) / (k + 1.0) * q[rows, None], axis=1)
            cumulative = held_cdf[:, None] + np.cumsum(terms, axis=1)
            passed = u[rows, None] <= cumulative
            found = passed.any(axis=1)
            # once the pmf underflows, rounding can keep the cdf just below a uniform near 1: stop there
            stalled = ~found & (terms[:, -1] <= 0.0)
            counts[rows[found]] = held_value[found] + 1.0 + passed[found].argmax(axis=1)
            counts[rows[stalled]] = held_value[stalled] + TAIL_TERMS
            going = ~found & ~stalled
            rows, held_value = rows[going], held_value[going] + TAIL_TERMS
            held_pmf, held_cdf = terms[going, -1], cumulative[going, -1]


def _draws_by_inversion(u: jnp.ndarray, log_mean: jnp.ndarray, r: jnp.ndarray) -> np.ndarray:
    """Counts [shape] (float32) of the small means' elements; -1 at the others."""
    count, pmf, cdf = _nb_inversion(u, log_mean, r)
    counts = np.asarray(count)
    beyond = np.flatnonzero(counts >= INVERSION_TERMS)
    counts = counts.astype(np.float32)
    if beyond.size:
        tail = counts.ravel()[beyond]
        picked = (np.asarray(a).ravel()[beyond] for a in (u, log_mean, r, pmf, cdf))
        _continue_inversion(tail, *picked)
        counts.flat[beyond] = tail
    return counts


def _gamma_poisson(key: jax.Array, log_mean: jnp.ndarray, r: jnp.ndarray) -> np.ndarray:
    """NB draws as Poisson(Gamma): normal transforms where accurate, the exact samplers where not."""
    keys = jax.random.split(key, 4)
    gamma = np.asarray(_gamma_wh_jit(keys[0], r))
    r_host = np.asarray(r)
    gamma = _redraw_exact(keys[1], gamma, r_host, r_host < NORMAL_GAMMA_MIN_SHAPE, _gamma_boosted_jit)
    rate = _rate_jit(jnp.asarray(gamma), log_mean, r)
    counts = np.asarray(_poisson_normal_jit(keys[2], rate))
    rate_host = np.asarray(rate)
    return _redraw_exact(keys[3], counts, rate_host, rate_host < NORMAL_POISSON_MIN_RATE, _poisson_exact_jit)


def draw_counts(key: jax.Array, log_mean: jnp.ndarray, concentration: jnp.ndarray, uniform: jnp.ndarray | None = None) -> np.ndarray:
    """Draws of NB(exp(log_mean), concentration) for whole arrays, as a numpy array.

    The same law as ``NegativeBinomialLogMean.sample``: elements of a mean below ``INVERSION_MAX_MEAN`` by
    inversion, the others as a Poisson of a gamma, whose exact samplers run only on the elements that need
    them. An array with less than ``INVERSION_MIN_SHARE`` of small means is drawn as before the inversion
    existed, every element as a Poisson of a gamma (the same law). ``uniform``: the inversion's uniforms, one
    per element and independent of everything else (``mixture_concentration_and_uniform``'s); drawn here if
    not given.
    """
    shape = jax.lax.broadcast_shapes(jnp.shape(log_mean), jnp.shape(concentration))
    log_mean = jnp.broadcast_to(log_mean, shape)
    r = jnp.broadcast_to(concentration, shape)
    n_small = int(_count_small_means(log_mean))  # a scalar: the chunk's means stay where they are
    if n_small < INVERSION_MIN_SHARE * log_mean.size:
        return _gamma_poisson(key, log_mean, r)
    if uniform is None:
        uniform = _uniform_jit(jax.random.fold_in(key, 4), shape)
    counts = _draws_by_inversion(jnp.broadcast_to(uniform, shape), log_mean, r)
    if n_small == log_mean.size:
        return counts
    large = np.flatnonzero(counts < 0)
    counts.flat[large] = _sampled_in_blocks(key, np.asarray(log_mean).ravel()[large], np.asarray(r).ravel()[large])
    return counts


# The few large means of an array drawn by inversion are drawn in blocks of this many elements: one compiled
# shape, where padding each subset to its own power of two compiled the samplers again for most new sizes
# (about a second each time, for a few milliseconds of draws).
LARGE_BLOCK = 1 << 14
_sample_jit = jax.jit(lambda key, log_mean, r: NegativeBinomialLogMean(log_mean, r).sample(key))


def _sampled_in_blocks(key: jax.Array, log_mean: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``NegativeBinomialLogMean(log_mean, r).sample`` over 1-D arrays, in padded blocks of ``LARGE_BLOCK``."""
    out = np.empty(log_mean.size, np.float32)
    for number, start, stop, (block_mean, block_r) in _padded_blocks(LARGE_BLOCK, log_mean, r):
        out[start:stop] = np.asarray(_sample_jit(jax.random.fold_in(key, number), block_mean, block_r))[: stop - start]
    return out
