"""JAX's persistent compilation cache: where it is, how to turn it off, and that a fit compiles to the
same program in every process (else the cache would never hit, and one seed would round differently)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tasks.ops import compile_cache

REPO = Path(__file__).resolve().parents[1]

# Lowers (traces, does not compile) one chunk of global-fit steps on a small demo and prints the hash
# of the program's text.
LOWER_FIT_CHUNK = """
import datetime as dt, hashlib, jax
from tasks.data.demo import generate_demo
from tasks.data.encode import build_spec, encode
from tasks.model.inference import FitSettings, _svi_program
from tasks.model.store_day import ModelStructure
from tasks.model.warm_start import warm_start
from tasks.pipeline import panel_inputs

demo = generate_demo(seed=0, n_stores=4, n_history_days=60, horizon=7, n_new_stores=0, n_gapped_stores=0)
encoded = encode(demo.train, demo.stores, demo.future, build_spec(demo.stores))
history = encoded.history
structure = ModelStructure.from_features(encoded.spec.features, history.n_days, 28, 8.0)
inputs = panel_inputs(history, history.dates[-1].astype(dt.date), structure, with_sales=True)
settings = FitSettings(max_steps=20, chunk_steps=10)
svi, init_state, run_chunk = _svi_program(structure, settings, None, False)
state = jax.eval_shape(init_state, jax.random.key(0), warm_start(inputs, structure, settings.init_scale), (inputs,))
text = run_chunk.lower(state, (inputs,), jax.numpy.float32(1.0)).as_text(debug_info=False)
print(hashlib.sha256(text.encode()).hexdigest())
"""


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "BHM_"))}
    return env | extra


def test_the_cache_folder_follows_the_environment(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert compile_cache.cache_folder({"BHM_HOME": str(home)}) == home.resolve() / "jax-cache"
    chosen = tmp_path / "elsewhere"
    assert compile_cache.cache_folder({"BHM_HOME": str(home), "BHM_COMPILE_CACHE": str(chosen)}) == chosen.resolve()
    assert compile_cache.cache_folder({"BHM_HOME": str(home), "BHM_COMPILE_CACHE": "off"}) is None
    jax_own = tmp_path / "jax-own"
    both = {"BHM_COMPILE_CACHE": "off", "JAX_COMPILATION_CACHE_DIR": str(jax_own)}
    assert compile_cache.cache_folder(both) == jax_own.resolve()  # JAX's own variable wins


def test_enable_before_jax_is_imported_sets_only_the_environment(tmp_path: Path) -> None:
    environ = {"BHM_HOME": str(tmp_path)}
    folder = compile_cache.enable(environ)
    assert folder == tmp_path.resolve() / "jax-cache" and folder.is_dir()
    assert environ["JAX_COMPILATION_CACHE_DIR"] == str(folder)
    assert environ["JAX_COMPILATION_CACHE_MAX_SIZE"] == str(compile_cache.CACHE_MAX_BYTES)
    off = {"BHM_HOME": str(tmp_path / "other"), "BHM_COMPILE_CACHE": "off"}
    assert compile_cache.enable(off) is None and "JAX_COMPILATION_CACHE_DIR" not in off
    assert not (tmp_path / "other").exists()


def test_a_flow_process_uses_the_cache_under_bhm_home_unless_turned_off(tmp_path: Path) -> None:
    show = "import flows, jax; print(jax.config.values['jax_compilation_cache_dir'])"
    on = subprocess.run([sys.executable, "-c", show], env=_child_env(BHM_HOME=str(tmp_path)), cwd=REPO,
                        capture_output=True, text=True, check=True)
    assert on.stdout.strip() == str(tmp_path.resolve() / "jax-cache")
    off = subprocess.run([sys.executable, "-c", show], env=_child_env(BHM_HOME=str(tmp_path), BHM_COMPILE_CACHE="off"),
                         cwd=REPO, capture_output=True, text=True, check=True)
    assert off.stdout.strip() == "None"


def test_a_fit_traces_to_the_same_program_whatever_the_string_hash_seed() -> None:
    """NumPyro's Trace_ELBO adds its sites in a set's order, which follows PYTHONHASHSEED; ours does not."""
    digests = set()
    for hash_seed in ("1", "2", "3"):
        done = subprocess.run([sys.executable, "-c", LOWER_FIT_CHUNK], env=_child_env(PYTHONHASHSEED=hash_seed),
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        digests.add(done.stdout.strip().splitlines()[-1])
    assert len(digests) == 1, digests
    assert len(next(iter(digests))) == len(hashlib.sha256().hexdigest())


def test_a_second_process_loads_the_program_the_first_one_compiled(tmp_path: Path) -> None:
    jit_once = (
        "import logging; logging.basicConfig()\n"  # JAX's debug lines reach stderr
        "import flows, jax, jax.numpy as jnp\n"
        "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)\n"
        "print(float(jax.jit(lambda x: (jnp.sin(x) * 2.0 + 1.0).sum())(jnp.arange(5.0))))\n"
    )
    env = _child_env(BHM_HOME=str(tmp_path), JAX_DEBUG_LOG_MODULES="jax._src.compiler")
    runs = [subprocess.run([sys.executable, "-c", jit_once], env=env, cwd=REPO, capture_output=True, text=True, check=True)
            for _ in range(2)]
    assert runs[0].stdout == runs[1].stdout
    logs = [run.stdout + run.stderr for run in runs]
    assert "CACHE MISS" in logs[0] and "cache hit" not in logs[0], logs[0][-3000:]
    assert "Persistent compilation cache hit" in logs[1], logs[1][-3000:]
    assert "Error reading persistent compilation cache" not in logs[1], logs[1][-3000:]
