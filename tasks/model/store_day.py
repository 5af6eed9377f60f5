"""The hierarchical negative-binomial model of daily store sales.

    log mu[s,t] = offset + level[s, block(t)] + day[t]
                  + b[s,0] + date_pooled[t] . b[s,date] + store_day_pooled[s,t] . b[s,sd]
                  + date_global[t] . g[date] + store_day_global[s,t] . g[sd]
    b[s]        = pooled_mean + z[s] @ store_shift + pooled_scale * pooled_raw[s]   (non-centred)
    sales[s,t]  ~ sum_k w[k] NegativeBinomial2(mu[s,t], r[s] * e^offset[k]),  log r[s] pooled across stores

The likelihood is a scale mixture of negative binomials over the dispersion
(``DISPERSION_COMPONENTS`` components with a common mean, offset[0] = 0, the
others lower): store-day residuals are peaked with heavy tails (Pearson
kurtosis ~11 on Rossmann), and a single NB widened its centre to reach its
tails, so that its 50% intervals covered ~60%.

``day[t]`` is a shock shared by all stores on day t (weather, paydays, what
the calendar features miss), N(0, scale[t]) with log scale[t] = log day_scale
+ shock_x[t] . day_scale_coef (``SHOCK_COVARIATES``: mostly-closed days, days
near a state holiday or in the Christmas season, the season): fitted on
history days, drawn from its prior on forecast days. One scale for all days
was set by the holidays' and Sundays' shocks (three times an ordinary day's)
and made forecast intervals on ordinary days too wide. On history days it is projected off the
span of the calendar features (``day_basis``), so that it cannot absorb a
weekday, promo or season effect that a forecast needs. It keeps common daily shocks out of the
store-level dispersion, and gives the predictive the heavier tails of a
negative binomial mixed over a shared log-normal shock.

``b[s,0]`` is the store's level at the anchor (the last history day); the
level walks backwards from it over blocks of ``block_days`` days, so that a
store's recent weeks count more than its level two years ago, and walks
forwards from it (prior draws) over a forecast horizon. Unobserved days
(closed, missing) are masked out of the likelihood.

One function serves fitting (``sales`` given) and prediction (``sales``
None). Site names live in ``Site``; nothing else spells them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from tasks.data.features import Feature, Scope
from tasks.model.negbin import NegativeBinomialScaleMixture


class Site:
    """Sample-site and plate names, grouped by what they belong to."""

    POOLED_MEAN = "pooled_mean"
    POOLED_SCALE = "pooled_scale"
    STORE_SHIFT = "store_shift"
    GLOBAL_COEF = "global_coef"
    LEVEL_SCALE = "level_scale"
    DAY_SCALE = "day_scale"
    DAY_SCALE_COEF = "day_scale_coef"
    DAY_RAW = "day_effect_raw"
    DAY_RAW_FUTURE = "day_effect_raw_future"
    DISPERSION_MEAN = "log_dispersion_mean"
    DISPERSION_SCALE = "log_dispersion_scale"
    TAIL_LOGIT = "dispersion_tail_logit"
    TAIL_GAP = "dispersion_tail_gap"

    POOLED_RAW = "pooled_raw"
    DISPERSION_RAW = "log_dispersion_raw"
    LEVEL_STEPS_PAST = "level_steps_past"
    LEVEL_STEPS_FUTURE = "level_steps_future"

    SALES = "sales"
    EXPECTED_SALES = "expected_sales"
    CONCENTRATION = "concentration"
    COMPONENT_LOG_WEIGHTS = "dispersion_component_log_weights"
    COMPONENT_OFFSETS = "dispersion_component_offsets"
    STORES_PLATE = "stores"

    GLOBAL = (
        POOLED_MEAN,
        POOLED_SCALE,
        STORE_SHIFT,
        GLOBAL_COEF,
        LEVEL_SCALE,
        DAY_SCALE,
        DAY_SCALE_COEF,
        DAY_RAW,
        DISPERSION_MEAN,
        DISPERSION_SCALE,
        TAIL_LOGIT,
        TAIL_GAP,
    )
    STORE = (POOLED_RAW, DISPERSION_RAW, LEVEL_STEPS_PAST)
    POSITIVE = (POOLED_SCALE, LEVEL_SCALE, DAY_SCALE, DISPERSION_SCALE, TAIL_GAP)


INTERCEPT = "intercept"


# How store-level variables are pooled. "partial": drawn from a population shifted by the store's
# attributes (the model). "complete": no store-level variation at all (a store is its attributes).
# "none": each store's coefficients on their own wide prior, nothing learnt from other stores.
# "seed_like": partial pooling from one population for all stores (no store attributes shift it),
# with neither the level walk nor the day shocks: the seed's model, the new-store reference.
POOLING = ("partial", "complete", "none", "seed_like")
UNPOOLED_SCALE_INTERCEPT = 2.0
UNPOOLED_SCALE_EFFECT = 1.0


@dataclass(frozen=True)
class ModelStructure:
    """Static shape of the model: which columns are pooled, how time is blocked.

    Hashable, so that it can be a static argument of compiled functions.
    """

    date_pooled: tuple[int, ...]
    date_global: tuple[int, ...]
    store_day_pooled: tuple[int, ...]
    store_day_global: tuple[int, ...]
    n_store_features: int
    n_past_blocks: int
    n_history_days: int
    block_days: int
    log_offset: float  # the model reads it from ModelInputs.log_offset: a constant in a program would change with each night's data
    n_future_blocks: int
    pooled_names: tuple[str, ...]
    global_names: tuple[str, ...]
    store_feature_names: tuple[str, ...]
    pooling: str = "partial"  # POOLING: the model; the others are the evaluation's comparisons

    @property
    def n_pooled(self) -> int:
        return 1 + len(self.date_pooled) + len(self.store_day_pooled)

    @property
    def n_global(self) -> int:
        return len(self.date_global) + len(self.store_day_global)

    @property
    def has_level_walk(self) -> bool:
        return self.pooling in ("partial", "none")

    @property
    def has_day_shocks(self) -> bool:
        return self.pooling != "seed_like"

    @property
    def uses_store_attributes(self) -> bool:
        return self.pooling in ("partial", "complete")

    @property
    def varies_by_store(self) -> bool:
        """Whether a store's coefficients and dispersion have a store-level draw of their own."""
        return self.pooling != "complete"

    @classmethod
    def from_features(
        cls, features: tuple[Feature, ...], n_history_days: int, block_days: int, log_offset: float, pooling: str = "partial"
    ) -> ModelStructure:
        """The structure for a history of ``n_history_days`` days ending at the anchor."""
        if pooling not in POOLING:
            raise ValueError(f"pooling must be one of {POOLING}, got {pooling!r}")
        if block_days < 1:
            raise ValueError(f"block_days must be >= 1, got {block_days}")
        if n_history_days < 1:
            raise ValueError(f"n_history_days must be >= 1, got {n_history_days}")
        n_past_blocks = (n_history_days - 1) // block_days

        def split(scope: Scope, pooled: bool) -> tuple[tuple[int, ...], tuple[str, ...]]:
            in_scope = [f for f in features if f.scope is scope]
            chosen = [(i, f.name) for i, f in enumerate(in_scope) if f.pooled is pooled]
            return tuple(i for i, _ in chosen), tuple(name for _, name in chosen)

        dp, dp_names = split(Scope.DATE, True)
        dg, dg_names = split(Scope.DATE, False)
        sp, sp_names = split(Scope.STORE_DAY, True)
        sg, sg_names = split(Scope.STORE_DAY, False)
        z_names = tuple(f.name for f in features if f.scope is Scope.STORE)
        return cls(
            date_pooled=dp,
            date_global=dg,
            store_day_pooled=sp,
            store_day_global=sg,
            n_store_features=len(z_names),
            n_past_blocks=n_past_blocks,
            n_history_days=n_history_days,
            block_days=block_days,
            log_offset=log_offset,
            n_future_blocks=0,
            pooled_names=(INTERCEPT, *dp_names, *sp_names),
            global_names=(*dg_names, *sg_names),
            store_feature_names=z_names,
            pooling=pooling,
        )


class ModelInputs(NamedTuple):
    """Arrays the model sees; a pytree, so it passes through jit unchanged.

    ``block`` is each day's time block relative to the anchor: 0 for the last
    ``block_days`` days of history, -1 for the block before, 1 for the first
    block after the anchor. ``day`` is each day's index among the history
    days (0 = first history day), -1 for days after the anchor. ``sales`` is
    None when predicting. ``log_offset`` is the structure's, passed as data
    so that histories of one shape share one compiled program.
    """

    date_x: jnp.ndarray  # [T, F_date]
    store_day_x: jnp.ndarray  # [S, T, F_store_day]
    store_z: jnp.ndarray  # [S, F_store]
    block: jnp.ndarray  # int32 [T]
    day: jnp.ndarray  # int32 [T]
    day_basis: jnp.ndarray | None  # [n_history_days, K] orthonormal; None when no history day is modelled
    observed: jnp.ndarray  # bool [S, T]
    sales: jnp.ndarray | None  # float32 [S, T]
    log_offset: jnp.ndarray  # float32 scalar
    shock_x: jnp.ndarray | None = None  # [T, SHOCK_COVARIATES]: each day's shock-scale covariates (read after the anchor)
    history_shock_x: jnp.ndarray | None = None  # [n_history_days, SHOCK_COVARIATES]: the same for every history day


def time_blocks(day_offsets: np.ndarray, block_days: int) -> np.ndarray:
    """Signed block index of days given as offsets from the anchor day (anchor = 0)."""
    offsets = np.asarray(day_offsets, dtype=np.int64)
    past = -((-offsets) // block_days)  # 0 for offsets -block_days+1..0
    future = (offsets - 1) // block_days + 1
    return np.where(offsets <= 0, past, future).astype(np.int32)


def _level(steps_past: jnp.ndarray, steps_future: jnp.ndarray | None, block: jnp.ndarray, n_past: int) -> jnp.ndarray:
    """Level of each store on each day [S, T], zero at the anchor block."""
    backwards = -jnp.cumsum(steps_past[:, ::-1], axis=1)[:, ::-1]  # blocks -n_past..-1
    parts = [backwards, jnp.zeros((steps_past.shape[0], 1), steps_past.dtype)]
    if steps_future is not None:
        parts.append(jnp.cumsum(steps_future, axis=1))
    path = jnp.concatenate(parts, axis=1)
    return path[:, block + n_past]


PRIOR_SCALE_INTERCEPT = 1.0
PRIOR_SCALE_EFFECT = 0.5
PRIOR_POOLED_SCALE_INTERCEPT = 1.0
PRIOR_POOLED_SCALE_EFFECT = 0.25
PRIOR_LEVEL_SCALE = 0.1
PRIOR_DAY_SCALE = 0.1
PRIOR_DAY_SCALE_COEF = dist.Normal(0.0, 1.0)
DAY_SHOCK = dist.Normal(0.0, 1.0)

PRIOR_DISPERSION_LOC = 3.0
PRIOR_DISPERSION_SCALE = 2.0
DISPERSION_COMPONENTS = 3  # the likelihood mixes NB2s of this many concentrations (at least 2)
PRIOR_TAIL_LOGIT = dist.Normal(-2.0, 1.5)  # log odds of each wider component against the narrowest
PRIOR_TAIL_GAP = dist.HalfNormal(2.0)  # log concentration of each component below the next narrower one


# The scale of the shock shared by all stores on a day varies with the kind of day: an
# ordinary spring day's shock is a few percent, one next to a holiday or in the Christmas season
# several times that. log scale[t] = log day_scale + shock_x[t] . day_scale_coef, with covariates:
# closed: most stores closed (Sundays, national holidays), few stores pin the shock down;
# irregular: near a state holiday, or from December to Epiphany (and not closed);
# year_sin, year_cos: the season (first yearly harmonic).
SHOCK_COVARIATES = ("closed", "irregular", "year_sin", "year_cos")
HOLIDAY_SHARE = 0.02  # a day is a holiday when at least this share of the stores with a row has one
DAYS_BEFORE_HOLIDAY = 3
DAYS_AFTER_HOLIDAY = 2


def shock_covariates(dates: np.ndarray, present: np.ndarray, is_open: np.ndarray, holiday: np.ndarray) -> np.ndarray:
    """Shock-scale covariates [T, SHOCK_COVARIATES] of a panel's days, from its calendar: who has a row,
    is open, has a state holiday."""
    dates = np.asarray(dates, dtype="datetime64[D]")
    n_present = np.maximum(present.sum(axis=0), 1)
    closed = (is_open & present).sum(axis=0) / n_present < 0.5
    is_holiday = (holiday & present).sum(axis=0) / n_present >= HOLIDAY_SHARE
    near = np.zeros(dates.shape, bool)
    for day in dates[is_holiday]:
        gap = (day - dates).astype(np.int64)  # > 0: the holiday comes later
        near |= (gap <= DAYS_BEFORE_HOLIDAY) & (gap >= -DAYS_AFTER_HOLIDAY)
    month = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day_of_month = (dates - dates.astype("datetime64[M]")).astype(np.int64) + 1
    season = (month == 12) | ((month == 1) & (day_of_month <= 6))
    irregular = (near | season) & ~closed
    phase = 2.0 * np.pi * (dates - dates.astype("datetime64[Y]")).astype(np.float64) / 365.25
    return np.stack([closed, irregular, np.sin(phase), np.cos(phase)], axis=1).astype(np.float32)


def model(inputs: ModelInputs, structure: ModelStructure, subsample_size: int | None = None) -> None:
    st = structure
    n_stores, n_days = inputs.observed.shape
    n_future = st.n_future_blocks

    prior_loc = jnp.zeros(st.n_pooled)
    prior_scale = jnp.full(st.n_pooled, PRIOR_SCALE_EFFECT).at[0].set(PRIOR_SCALE_INTERCEPT)
    pooled_mean = numpyro.sample(Site.POOLED_MEAN, dist.Normal(prior_loc, prior_scale).to_event(1))
    spread = jnp.full(st.n_pooled, PRIOR_POOLED_SCALE_EFFECT).at[0].set(PRIOR_POOLED_SCALE_INTERCEPT)
    pooled_scale = numpyro.sample(Site.POOLED_SCALE, dist.HalfNormal(spread).to_event(1))
    store_shift = numpyro.sample(
        Site.STORE_SHIFT,
        dist.Normal(0.0, PRIOR_SCALE_EFFECT).expand([st.n_store_features, st.n_pooled]).to_event(2),
    )
    global_coef = numpyro.sample(Site.GLOBAL_COEF, dist.Normal(0.0, PRIOR_SCALE_EFFECT).expand([st.n_global]).to_event(1))
    level_scale = numpyro.sample(Site.LEVEL_SCALE, dist.HalfNormal(PRIOR_LEVEL_SCALE))
    day_scale = numpyro.sample(Site.DAY_SCALE, dist.HalfNormal(PRIOR_DAY_SCALE))
    day_scale_coef = numpyro.sample(Site.DAY_SCALE_COEF, PRIOR_DAY_SCALE_COEF.expand([len(SHOCK_COVARIATES)]).to_event(1))

    def shock_scale(shock_x: jnp.ndarray | None) -> jnp.ndarray:
        return day_scale if shock_x is None else day_scale * jnp.exp(shock_x @ day_scale_coef)

    # Every variant samples the same sites, so that one guide and one saved state fit them all; a variant
    # without day shocks or a level walk leaves those sites out of its mean.
    day_raw = numpyro.sample(Site.DAY_RAW, DAY_SHOCK.expand([st.n_history_days]).to_event(1))
    day_raw_future = None
    if n_future:
        day_raw_future = numpyro.sample(Site.DAY_RAW_FUTURE, DAY_SHOCK.expand([n_days]).to_event(1))
    day_effect = jnp.zeros(n_days)
    if st.has_day_shocks:
        history_shock = shock_scale(inputs.history_shock_x) * day_raw
        if inputs.day_basis is not None:
            history_shock = history_shock - inputs.day_basis @ (inputs.day_basis.T @ history_shock)
        day_effect = history_shock[jnp.maximum(inputs.day, 0)]
        if day_raw_future is not None:
            # Days after the anchor have no fitted shock: draw it from its prior.
            day_effect = jnp.where(inputs.day >= 0, day_effect, shock_scale(inputs.shock_x) * day_raw_future)
    dispersion_mean = numpyro.sample(Site.DISPERSION_MEAN, dist.Normal(PRIOR_DISPERSION_LOC, PRIOR_DISPERSION_SCALE))
    dispersion_scale = numpyro.sample(Site.DISPERSION_SCALE, dist.HalfNormal(1.0))
    n_tails = DISPERSION_COMPONENTS - 1
    tail_logit = numpyro.sample(Site.TAIL_LOGIT, PRIOR_TAIL_LOGIT.expand([n_tails]).to_event(1))
    tail_gap = numpyro.sample(Site.TAIL_GAP, PRIOR_TAIL_GAP.expand([n_tails]).to_event(1))
    component_logits = jnp.concatenate([jnp.zeros(1), tail_logit])  # [K]
    component_offsets = -jnp.concatenate([jnp.zeros(1), jnp.cumsum(tail_gap)])  # [K] log concentration vs the core
    if inputs.sales is None:
        numpyro.deterministic(Site.COMPONENT_LOG_WEIGHTS, jax.nn.log_softmax(component_logits))
        numpyro.deterministic(Site.COMPONENT_OFFSETS, component_offsets)

    date_x = inputs.date_x
    date_global = date_x[:, np.array(st.date_global, dtype=np.int32)] @ global_coef[: len(st.date_global)]

    with numpyro.plate(Site.STORES_PLATE, n_stores, subsample_size=subsample_size, dim=-2) as idx:
        pooled_raw = numpyro.sample(Site.POOLED_RAW, dist.Normal(0.0, 1.0).expand([1, st.n_pooled]).to_event(1))
        dispersion_raw = numpyro.sample(Site.DISPERSION_RAW, dist.Normal(0.0, 1.0))
        steps_past = numpyro.sample(
            Site.LEVEL_STEPS_PAST, dist.Normal(0.0, 1.0).expand([1, st.n_past_blocks]).to_event(1)
        )
        steps_future = None
        if n_future:
            steps_future = numpyro.sample(
                Site.LEVEL_STEPS_FUTURE, dist.Normal(0.0, 1.0).expand([1, n_future]).to_event(1)
            )

        store_day_x = inputs.store_day_x[idx]
        z = inputs.store_z[idx]
        store_level = jnp.zeros((store_day_x.shape[0], n_days))
        if st.has_level_walk:
            store_level = _level(
                level_scale * steps_past[:, 0, :],
                None if steps_future is None else level_scale * steps_future[:, 0, :],
                inputs.block,
                st.n_past_blocks,
            )
        if st.pooling == "none":
            unpooled = jnp.full(st.n_pooled, UNPOOLED_SCALE_EFFECT).at[0].set(UNPOOLED_SCALE_INTERCEPT)
            coef = unpooled * pooled_raw[:, 0, :]
        else:
            coef = jnp.broadcast_to(pooled_mean, pooled_raw[:, 0, :].shape)  # [s, P]
            if st.uses_store_attributes:
                coef = coef + z @ store_shift
            if st.varies_by_store:
                coef = coef + pooled_scale * pooled_raw[:, 0, :]
        n_dp = len(st.date_pooled)
        log_mu = (
            inputs.log_offset
            + coef[:, :1]
            + coef[:, 1 : 1 + n_dp] @ date_x[:, np.array(st.date_pooled, dtype=np.int32)].T
            + jnp.einsum("stf,sf->st", store_day_x[..., np.array(st.store_day_pooled, dtype=np.int32)], coef[:, 1 + n_dp :])
            + (date_global + day_effect)[None, :]
            + store_day_x[..., np.array(st.store_day_global, dtype=np.int32)] @ global_coef[len(st.date_global) :]
            + store_level
        )
        log_concentration = jnp.broadcast_to(dispersion_mean, dispersion_raw.shape)  # [s, 1]
        if st.varies_by_store:
            log_concentration = dispersion_mean + dispersion_scale * dispersion_raw
        observed = inputs.observed[idx]
        sales = None if inputs.sales is None else inputs.sales[idx]
        likelihood = NegativeBinomialScaleMixture(log_mu, log_concentration, component_offsets, component_logits)
        with numpyro.plate("days", n_days, dim=-1):
            if sales is None:
                # Forecasts draw the counts outside the model (tasks.forecast.draws): the mean, each store's
                # core concentration and the mixture's weights and offsets are all they need.
                numpyro.deterministic(Site.EXPECTED_SALES, jnp.exp(log_mu))
                numpyro.deterministic(Site.CONCENTRATION, jnp.exp(log_concentration))
            numpyro.sample(Site.SALES, likelihood.mask(observed), obs=sales)


def model_inputs(
    panel_dates: np.ndarray,
    date_x: np.ndarray,
    store_day_x: np.ndarray,
    store_z: np.ndarray,
    observed: np.ndarray,
    sales: np.ndarray | None,
    anchor: np.datetime64,
    block_days: int,
    n_history_days: int,
    log_offset: float,
    day_basis: np.ndarray | None = None,
    shock_x: np.ndarray | None = None,
    history_shock_x: np.ndarray | None = None,
) -> ModelInputs:
    """Model inputs from panel arrays, with days and time blocks counted from ``anchor``.

    The history is the ``n_history_days`` days ending at ``anchor``;
    ``day_basis`` comes from ``calendar_basis`` on the whole history.
    """
    offsets = (np.asarray(panel_dates, dtype="datetime64[D]") - np.datetime64(anchor, "D")).astype(np.int64)
    if offsets.size and offsets.min() < -(n_history_days - 1):
        raise ValueError(
            f"panel starts {-offsets.min()} days before the anchor {anchor}, before the {n_history_days}-day history"
        )
    day = np.where(offsets <= 0, n_history_days - 1 + offsets, -1).astype(np.int32)
    return ModelInputs(
        date_x=jnp.asarray(date_x, jnp.float32),
        store_day_x=jnp.asarray(store_day_x, jnp.float32),
        store_z=jnp.asarray(store_z, jnp.float32),
        block=jnp.asarray(time_blocks(offsets, block_days)),
        day=jnp.asarray(day),
        day_basis=None if day_basis is None else jnp.asarray(day_basis, jnp.float32),
        observed=jnp.asarray(observed, bool),
        sales=None if sales is None else jnp.asarray(sales, jnp.float32),
        log_offset=jnp.asarray(log_offset, jnp.float32),
        shock_x=None if shock_x is None else jnp.asarray(shock_x, jnp.float32),
        history_shock_x=None if history_shock_x is None else jnp.asarray(history_shock_x, jnp.float32),
    )


def calendar_basis(date_x: np.ndarray, store_day_x: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Orthonormal basis [T, K] of what the calendar explains day by day.

    Columns: a constant, the date features, and each store-day feature's
    mean over the stores observed that day (promo and holidays fall on the
    same dates for most stores). Day shocks are kept orthogonal to it.
    K is the design's column count whatever its rank (columns past the rank
    are zero), so that histories whose calendars differ in rank (a holiday
    that falls inside one window only) have one shape.
    """
    weight = observed.astype(np.float64)
    per_day = (store_day_x * weight[..., None]).sum(axis=0) / np.maximum(weight.sum(axis=0), 1.0)[:, None]
    design = np.concatenate([np.ones((date_x.shape[0], 1)), date_x, per_day], axis=1)
    u, singular, _ = np.linalg.svd(design, full_matrices=False)
    rank = int((singular > singular[0] * 1e-6).sum())
    basis = np.zeros(design.shape, np.float32)
    basis[:, :rank] = u[:, :rank]
    return basis
