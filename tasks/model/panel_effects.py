"""Posterior draws of the panel model's effects per product (or per store): what a data scientist reads.

A product's effect of a coefficient (its price elasticity, its promotion lift) is the population mean,
its attributes' shift and its groups' effects on the product side, for a store of average effect:
the coefficient of a new series of that product in a typical store.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from tasks.data.panel_encode import Dimensions
from tasks.forecast.panel_draws import draw_globals
from tasks.model.panel import PRODUCT_SIDE, STORE_SIDE, PanelSite
from tasks.model.panel_state import FittedPanel


@dataclass(frozen=True)
class EffectDraws:
    coefficient: str
    side: str
    keys: tuple  # the products' (stores') keys, in code order
    draws: np.ndarray  # [D, n_keys]

    def summary(self, levels: tuple[float, float] = (0.05, 0.95)) -> dict[str, np.ndarray]:
        low, high = np.quantile(self.draws, levels, axis=0)
        return {"mean": self.draws.mean(axis=0), "low": low, "high": high}


def side_effects(fitted: FittedPanel, dims: Dimensions, coefficient: str, side: str, key: jax.Array, num_draws: int = 1000) -> EffectDraws:
    """Draws [D, n_keys] of ``coefficient`` per product (``side='product'``) or per store (``'store'``)."""
    structure = fitted.structure
    if coefficient not in structure.coef_names:
        raise ValueError(f"no coefficient {coefficient!r}; the model has {list(structure.coef_names)}")
    if side not in (STORE_SIDE, PRODUCT_SIDE):
        raise ValueError(f"side must be {STORE_SIDE!r} or {PRODUCT_SIDE!r}, got {side!r}")
    c = structure.coef_names.index(coefficient)
    latent = {k: np.asarray(v) for k, v in draw_globals(fitted.params, structure, key, num_draws, 1).items() if k != "future_shocks"}
    groups = dims.product_groups if side == PRODUCT_SIDE else dims.store_groups
    attributes = dims.product_attributes if side == PRODUCT_SIDE else dims.store_attributes
    attr_site = PanelSite.PRODUCT_ATTR if side == PRODUCT_SIDE else PanelSite.STORE_ATTR
    n_keys = groups.shape[1]
    value = np.repeat(latent[PanelSite.COEF_MEAN][:, None, c], n_keys, axis=1)
    if attributes.shape[1]:
        value = value + np.einsum("ka,da->dk", attributes, latent[attr_site][:, :, c])
    for site_side, level, _, pooled in structure.group_sites():
        if site_side != side or not pooled[c]:
            continue
        scale = latent[PanelSite.group_scale(site_side, level)][:, c]
        raw = latent[PanelSite.group_raw(site_side, level)][:, :, c]
        value = value + scale[:, None] * raw[:, groups[level]]
    keys = fitted.encoding.product_keys if side == PRODUCT_SIDE else fitted.encoding.store_keys
    return EffectDraws(coefficient=coefficient, side=side, keys=tuple(keys), draws=value)


def price_elasticities(fitted: FittedPanel, dims: Dimensions, price_names: tuple[str, ...], key: jax.Array, num_draws: int = 1000) -> list[EffectDraws]:
    """Each price covariate's elasticity per product (per store when the panel has no product key)."""
    side = STORE_SIDE if fitted.encoding.product_keys == (None,) else PRODUCT_SIDE
    names = [name for name in price_names if name in fitted.structure.coef_names]
    keys = jax.random.split(key, max(len(names), 1))
    return [side_effects(fitted, dims, name, side, k, num_draws) for name, k in zip(names, keys, strict=False)]
