"""Test-only crash points: with ``BHM_FAULT_POINT=<point>`` in its environment, a process kills itself
with SIGKILL when it reaches that point, as the kernel's OOM killer or a drained node would.

The points are the stage boundaries of the nightly flow where a crash could leave torn state:

- ``read``: the inputs are read and validated, nothing written yet;
- ``fit``: in the middle of the global fit (its first progress report);
- ``export``: the forecast file is written to its temporary name, not yet renamed into place;
- ``track``: the MLflow run has its metrics and the forecast artifact, not yet the fitted model;
- ``register``: a model version is registered, the champion alias not yet moved.

Unset (the normal case), ``reached`` does nothing. Pure: no Prefect, no MLflow.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import TypeVar

FAULT_ENV = "BHM_FAULT_POINT"
READ, FIT, EXPORT, TRACK, REGISTER = "read", "fit", "export", "track", "register"
POINTS = (READ, FIT, EXPORT, TRACK, REGISTER)

log = logging.getLogger(__name__)
T = TypeVar("T")


def armed() -> str | None:
    """The point named by ``BHM_FAULT_POINT``, or None; a ValueError for a name that is not a point."""
    point = os.environ.get(FAULT_ENV, "").strip()
    if not point:
        return None
    if point not in POINTS:
        raise ValueError(f"{FAULT_ENV}={point!r} is not a fault point; use one of {', '.join(POINTS)}")
    return point


def reached(point: str) -> None:
    """SIGKILL this process if ``BHM_FAULT_POINT`` names ``point``."""
    if point not in POINTS:
        raise ValueError(f"unknown fault point {point!r}")
    if armed() == point:
        print(f"{FAULT_ENV}={point}: killing process {os.getpid()} with SIGKILL", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def on_call(point: str, then: Callable[[T], None]) -> Callable[[T], None]:
    """A callback that first checks ``point`` (e.g. a fit's progress report), then calls ``then``."""

    def callback(value: T) -> None:
        reached(point)
        then(value)

    return callback
