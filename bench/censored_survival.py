"""The censored likelihood's cost: log P(Y >= y) of the negative-binomial scale mixture and its gradient
in the log means and log concentrations, for a batch of censored cells (by default the shape of
``bench/censoring.py``'s fit: 36 series x 32 censored columns, 3 components, a grid of 256 terms, a
concentration per cell as where the dispersion moves with covariates). Prints the compile seconds and the
median milliseconds of one value-and-gradient over the repeats, in this process.

    python bench/censored_survival.py --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import common
import jax
import jax.numpy as jnp
import numpy as np

from tasks.model.censored import nb_mixture_log_survival


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--series", type=int, default=36)
    p.add_argument("--columns", type=int, default=32, help="censored cells per series")
    p.add_argument("--terms", type=int, default=256, help="the survival grid (tasks.model.censored.survival_terms)")
    p.add_argument("--calls", type=int, default=50, help="value-and-gradient calls timed per repeat")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    common.print_machine(common.machine_info())

    rng = np.random.default_rng(0)
    shape = (args.series, args.columns)
    value = jnp.asarray(rng.integers(0, args.terms, shape).astype(np.float32))
    log_mean = jnp.asarray(np.log(rng.uniform(5.0, 60.0, shape)).astype(np.float32))
    log_r = jnp.asarray(np.log(rng.uniform(1.0, 10.0, shape)).astype(np.float32))
    offsets, logits = jnp.asarray([0.0, -1.0, -2.0], jnp.float32), jnp.zeros(3, jnp.float32)

    def total(m: jax.Array, r: jax.Array) -> jax.Array:
        return nb_mixture_log_survival(value, m, r, offsets, logits, args.terms).sum()

    step = jax.jit(jax.value_and_grad(total, argnums=(0, 1)))
    start = time.perf_counter()
    jax.block_until_ready(step(log_mean, log_r))
    compile_s = time.perf_counter() - start
    per_call = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.calls):
            out = step(log_mean, log_r)
        jax.block_until_ready(out)
        per_call.append((time.perf_counter() - start) / args.calls * 1000.0)
    print(f"cells {args.series} x {args.columns}, {args.terms} terms: compile {compile_s:.2f} s, "
          f"value and gradient {statistics.median(per_call):.1f} ms (median of {args.repeats}; "
          f"{', '.join(f'{t:.1f}' for t in per_call)}), log survival summed {float(out[0]):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
