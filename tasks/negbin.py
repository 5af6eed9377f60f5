"""The negative binomial (NB2) on the log-mean scale, with fast exact-where-needed draws.

``NegativeBinomialLogMean`` is the likelihood of the model. Its log-density
is written on the log scale: one log-gamma per observation where the generic
form computes three, and no exp(-r) to under/overflow.

Drawing millions of counts on a CPU with JAX's rejection samplers is slow, so
draws use normal transforms where they are accurate to well under one unit of
sales, and the exact samplers elsewhere:
- the gamma mixing variable: Wilson-Hilferty's cube-normal transform for
  shape >= 10 (relative quantile error < 1e-3), exact draws below;
- the Poisson count: the rounded normal for rate >= 100 (skewness <= 0.1,
  and the Poisson part is then a small share of the NB variance), exact below.
``draw_counts`` applies the exact samplers only to the elements that need
them (gathered on the host), so a few small values do not slow a whole array.
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


def gamma_wilson_hilferty(key: jax.Array, shape_param: jnp.ndarray) -> jnp.ndarray:
    z = jax.random.normal(key, jnp.shape(shape_param))
    c = 1.0 / (9.0 * shape_param)
    return shape_param * jnp.maximum(1.0 - c + z * jnp.sqrt(c), 0.0) ** 3


def poisson_normal(key: jax.Array, rate: jnp.ndarray) -> jnp.ndarray:
    return jnp.maximum(jnp.round(rate + jnp.sqrt(rate) * jax.random.normal(key, jnp.shape(rate))), 0.0)


def _gamma(key, shape_param):
    exact = jax.random.gamma(key, jnp.maximum(shape_param, 1e-6))
    return jnp.where(shape_param >= NORMAL_GAMMA_MIN_SHAPE, gamma_wilson_hilferty(key, shape_param), exact)


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
        gamma = _gamma(key_gamma, jnp.broadcast_to(self.concentration, shape))
        return _poisson(key_poisson, gamma * jnp.exp(self.log_mean - jnp.log(self.concentration)))

    def log_prob(self, value):
        r = self.concentration
        log_r = jnp.log(r)
        log_r_plus_mu = jnp.logaddexp(log_r, self.log_mean)
        return (
            gammaln(value + r)
            - gammaln(r)
            - gammaln(value + 1.0)
            + r * (log_r - log_r_plus_mu)
            + value * (self.log_mean - log_r_plus_mu)
        )


_gamma_wh_jit = jax.jit(gamma_wilson_hilferty)
_poisson_normal_jit = jax.jit(poisson_normal)
_gamma_exact_jit = jax.jit(lambda key, a: jax.random.gamma(key, jnp.maximum(a, 1e-6)))
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


def draw_counts(key: jax.Array, log_mean: jnp.ndarray, concentration: jnp.ndarray) -> np.ndarray:
    """Draws of NB(exp(log_mean), concentration) for whole arrays, as a numpy array.

    The same law and samplers as ``NegativeBinomialLogMean.sample``, but the
    exact samplers run only on the elements that need them.
    """
    keys = jax.random.split(key, 4)
    shape = jax.lax.broadcast_shapes(jnp.shape(log_mean), jnp.shape(concentration))
    r = jnp.broadcast_to(concentration, shape)
    gamma = np.asarray(_gamma_wh_jit(keys[0], r))
    r_host = np.asarray(r)
    gamma = _redraw_exact(keys[1], gamma, r_host, r_host < NORMAL_GAMMA_MIN_SHAPE, _gamma_exact_jit)
    rate = _rate_jit(jnp.asarray(gamma), log_mean, concentration)
    counts = np.asarray(_poisson_normal_jit(keys[2], rate))
    rate_host = np.asarray(rate)
    return _redraw_exact(keys[3], counts, rate_host, rate_host < NORMAL_POISSON_MIN_RATE, _poisson_exact_jit)
