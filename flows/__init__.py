"""Prefect flows: the wiring of the stages in ``tasks``.

Importing this package, as the CLI and a deployment's worker do before any flow runs, points JAX at its
persistent compilation cache (``tasks/ops/compile_cache.py``), so that a run loads the programs an
earlier run compiled.
"""

from tasks.ops import compile_cache

compile_cache.enable()
