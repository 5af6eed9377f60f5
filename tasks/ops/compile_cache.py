"""JAX's persistent compilation cache for the flows, so that a nightly run does not compile again.

Compiling a fit's chunk of SVI steps takes seconds to minutes (7 s for the tests' 6 stores, more for
the network); running it, less. JAX can keep each compiled program on disk and load it when the same
program (the same model, shapes and settings) is compiled again, in any later process. The folder is
``$BHM_COMPILE_CACHE`` when set (``off`` turns the cache off), else ``$BHM_HOME/jax-cache``; JAX's own
``JAX_COMPILATION_CACHE_DIR`` wins over both. JAX keeps the folder under ``CACHE_MAX_BYTES`` by
evicting the programs used longest ago. What a program computes does not change, only whether XLA
compiles it again. Pure: no Prefect, no MLflow.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

from tasks.ops.home import bhm_home

COMPILE_CACHE_ENV = "BHM_COMPILE_CACHE"
JAX_CACHE_DIR_ENV = "JAX_COMPILATION_CACHE_DIR"
JAX_CACHE_MAX_SIZE_ENV = "JAX_COMPILATION_CACHE_MAX_SIZE"
OFF = "off"
FOLDER_NAME = "jax-cache"
CACHE_MAX_BYTES = 2 * 1024**3


def cache_folder(environ: MutableMapping[str, str] = os.environ) -> Path | None:
    """The cache folder the environment asks for; None when it is turned off."""
    if environ.get(JAX_CACHE_DIR_ENV):
        return Path(environ[JAX_CACHE_DIR_ENV]).expanduser().resolve()
    chosen = environ.get(COMPILE_CACHE_ENV, "").strip()
    if chosen.lower() == OFF:
        return None
    if chosen:
        return Path(chosen).expanduser().resolve()
    return bhm_home(environ) / FOLDER_NAME


def enable(environ: MutableMapping[str, str] = os.environ) -> Path | None:
    """Point JAX at the cache folder (created if missing); returns it, or None when turned off.

    Before JAX is imported this only sets JAX's variables in ``environ``, which JAX reads when it is
    imported (and which processes started from this one inherit); after, it updates JAX's config,
    which takes effect if nothing has been compiled yet in this process.
    """
    folder = cache_folder(environ)
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    environ[JAX_CACHE_DIR_ENV] = str(folder)
    environ.setdefault(JAX_CACHE_MAX_SIZE_ENV, str(CACHE_MAX_BYTES))
    if "jax" in sys.modules:
        import jax

        jax.config.update("jax_compilation_cache_dir", str(folder))
        jax.config.update("jax_compilation_cache_max_size", int(environ[JAX_CACHE_MAX_SIZE_ENV]))
    return folder
