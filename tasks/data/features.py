"""The feature registry: every model feature's name, scope and pooling.

Scope says what a feature varies over, which decides the array it lives in:
``date`` features are the same for every store on a day ([T, F] array),
``store_day`` features vary by store and day ([S, T, F]), ``store`` features
are store attributes ([S, F]) that shift the population mean of the store
coefficients. ``pooled`` features get a per-store coefficient drawn from a
population; the others get one coefficient shared by all stores.

Every block of categories is coded as contrasts against a reference level
and the model has an intercept, so nothing is identified only by a prior.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from tasks import names as n


class Scope(str, Enum):
    DATE = "date"
    STORE_DAY = "store_day"
    STORE = "store"


@dataclass(frozen=True)
class Feature:
    name: str
    scope: Scope
    pooled: bool = False


# Weekday contrasts against Monday (ISO weekday 1).
WEEKDAY_FEATURES = tuple(f"weekday_{d}" for d in range(2, 8))
# A store open on a state holiday sells very differently from store to store
# (a station kiosk does well, a high-street shop a fifth of a normal day) and
# alike from one holiday to the next: the "any holiday" effect is per store,
# the holiday types (b, c against a) are shared contrasts.
STATE_HOLIDAY_FEATURE = "state_holiday"
HOLIDAY_TYPE_FEATURES = tuple(f"state_holiday_{level}" for level in n.STATE_HOLIDAY_LEVELS[2:])
STORE_TYPE_FEATURES = tuple(f"store_type_{level}" for level in n.STORE_TYPE_LEVELS[1:])
ASSORTMENT_FEATURES = tuple(f"assortment_{level}" for level in n.ASSORTMENT_LEVELS[1:])

PROMO_FEATURE = "promo"
SCHOOL_HOLIDAY_FEATURE = "school_holiday"
PROMO2_ACTIVE_FEATURE = "promo2_active"
BEFORE_CLOSURE_FEATURE = "before_closure"
AFTER_CLOSURE_FEATURE = "after_closure"
TWO_BEFORE_CLOSURE_FEATURE = "two_days_before_closure"
TWO_AFTER_CLOSURE_FEATURE = "two_days_after_closure"
# Rossmann's promo runs Monday to Friday; its lift differs by weekday (contrasts vs Monday).
PROMO_WEEKDAY_FEATURES = tuple(f"promo_weekday_{d}" for d in range(2, 6))
COMPETITION_ACTIVE_FEATURE = "competition_active"
# The year's end, day by day where the days differ: the rush before Christmas (Dec 16-21) and its last two
# days (Dec 22-23, a quarter above the rush), the short shopping days before the holidays' closures (Dec 24
# and Dec 31: open in the morning only, well below the pre-closure day they otherwise look like) and the
# rush before New Year (Dec 29-30). December of the day -> feature; the other days of December have none.
CHRISTMAS_RUSH_FEATURE = "christmas_rush"
CHRISTMAS_LAST_DAYS_FEATURE = "christmas_last_days"
CHRISTMAS_EVE_FEATURE = "christmas_eve"
NEW_YEAR_RUSH_FEATURE = "new_year_rush"
NEW_YEARS_EVE_FEATURE = "new_years_eve"
YEAR_END_FEATURES = {
    CHRISTMAS_RUSH_FEATURE: (16, 21),
    CHRISTMAS_LAST_DAYS_FEATURE: (22, 23),
    CHRISTMAS_EVE_FEATURE: (24, 24),
    NEW_YEAR_RUSH_FEATURE: (29, 30),
    NEW_YEARS_EVE_FEATURE: (31, 31),
}
LOG_COMPETITION_DISTANCE_FEATURE = "log_competition_distance"
COMPETITION_DISTANCE_MISSING_FEATURE = "competition_distance_missing"
PROMO2_PARTICIPANT_FEATURE = "promo2_participant"


def yearly_fourier_features(order: int) -> tuple[str, ...]:
    return tuple(f"year_{fn}_{k}" for k in range(1, order + 1) for fn in ("sin", "cos"))


def monthly_fourier_features(order: int) -> tuple[str, ...]:
    return tuple(f"month_{fn}_{k}" for k in range(1, order + 1) for fn in ("sin", "cos"))


STORE_DAY_POOLED_FEATURES = (PROMO_FEATURE, SCHOOL_HOLIDAY_FEATURE, PROMO2_ACTIVE_FEATURE, STATE_HOLIDAY_FEATURE)
STORE_DAY_GLOBAL_FEATURES = (
    *HOLIDAY_TYPE_FEATURES,
    BEFORE_CLOSURE_FEATURE,
    AFTER_CLOSURE_FEATURE,
    TWO_BEFORE_CLOSURE_FEATURE,
    TWO_AFTER_CLOSURE_FEATURE,
    *PROMO_WEEKDAY_FEATURES,
    COMPETITION_ACTIVE_FEATURE,
)
STORE_DAY_FEATURES = STORE_DAY_POOLED_FEATURES + STORE_DAY_GLOBAL_FEATURES


def registry(yearly_order: int, monthly_order: int) -> tuple[Feature, ...]:
    """All features in array order within each scope."""
    date = [Feature(name, Scope.DATE, pooled=True) for name in WEEKDAY_FEATURES]
    date += [Feature(name, Scope.DATE) for name in yearly_fourier_features(yearly_order)]
    date += [Feature(name, Scope.DATE) for name in monthly_fourier_features(monthly_order)]
    date += [Feature(name, Scope.DATE) for name in YEAR_END_FEATURES]
    store_day = [Feature(name, Scope.STORE_DAY, pooled=True) for name in STORE_DAY_POOLED_FEATURES]
    store_day += [Feature(name, Scope.STORE_DAY) for name in STORE_DAY_GLOBAL_FEATURES]
    store = [Feature(name, Scope.STORE) for name in STORE_TYPE_FEATURES + ASSORTMENT_FEATURES]
    store += [
        Feature(LOG_COMPETITION_DISTANCE_FEATURE, Scope.STORE),
        Feature(COMPETITION_DISTANCE_MISSING_FEATURE, Scope.STORE),
        Feature(PROMO2_PARTICIPANT_FEATURE, Scope.STORE),
    ]
    return tuple(date + store_day + store)


def names_in(features: tuple[Feature, ...], scope: Scope) -> tuple[str, ...]:
    return tuple(f.name for f in features if f.scope is scope)
