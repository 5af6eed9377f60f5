"""Defaults for Prefect and MLflow in a process that runs flows, set before Prefect is imported.

The ecosystem's own variables win when set (``PREFECT_HOME``,
``PREFECT_API_URL``, ``MLFLOW_TRACKING_URI`` and the rest): this only fills
in what is missing. With no ``PREFECT_API_URL``, flows run against Prefect's
temporary local server, whose database lives under ``$BHM_HOME/prefect`` so
that it is reused (a new database costs 16-19 s to start, an existing one 6-7 s).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from tasks.ops.home import BHM_HOME_ENV, DEFAULT_BHM_HOME, bhm_home

__all__ = ["BHM_HOME_ENV", "DEFAULT_BHM_HOME", "bhm_home", "configure"]

# The temporary server's 20 s default start-up timeout is too short on a busy 2-core machine.
EPHEMERAL_STARTUP_TIMEOUT_SECONDS = "120"


def configure(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Fill in the defaults that are not set; returns what was set."""
    defaults = {
        "PREFECT_HOME": str(bhm_home(environ) / "prefect"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        # The pure modules log under "tasks": show their progress in the Prefect UI too.
        "PREFECT_LOGGING_EXTRA_LOGGERS": "tasks",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # No telemetry from a batch job (its first write also races the new database: "database is locked").
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    applied = {key: value for key, value in defaults.items() if not environ.get(key)}
    environ.update(applied)
    # Prefect creates its home folder but not the folders above it.
    Path(environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
    return applied
