"""The project's home folder, ``$BHM_HOME`` (default ``~/.bhm``): the demo data, the local MLflow
database and artifacts, Prefect's local server and the compilation cache live under it.

Pure and import-light (no Prefect, no MLflow, no JAX): ``flows/environment.py`` reads it before Prefect
is imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

BHM_HOME_ENV = "BHM_HOME"
DEFAULT_BHM_HOME = "~/.bhm"


def bhm_home(environ: Mapping[str, str] = os.environ) -> Path:
    """``$BHM_HOME`` (default ``~/.bhm``) as an absolute path; not created."""
    return Path(environ.get(BHM_HOME_ENV) or DEFAULT_BHM_HOME).expanduser().resolve()
