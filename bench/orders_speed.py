"""Speed of the order optimiser: M5's 30,490 series x 1,000 joint draws x a 14-day protection interval.

Goal (issue 12): orders in 10 s or less on this CPU. The draws (negative-binomial, intermittent like M5's
items: means 0.2 to 5 a day) are made beforehand, series block by block as the replenish flow sees them
from the forecast (``--block`` series at a time), and are not timed; the timed part is ``order_at`` on every
block: the lead-time stock run per draw, the protection-interval sums, the critical-ratio order statistic and
the exact cost of the candidate pack counts. Medians over --repeats runs in one process, peak RSS printed.

    python bench/orders_speed.py [--series 30490] [--draws 1000] [--lead 7] [--review 7] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import common
import numpy as np

from tasks.inventory.orders import InventoryPolicy, order_at


def _policy(rng: np.random.Generator, n_series: int, n_periods: int) -> InventoryPolicy:
    return InventoryPolicy(
        on_hand=rng.integers(0, 15, n_series).astype(float),
        lead_time=np.full(n_series, float(ARGS.lead)),
        review_period=np.full(n_series, float(ARGS.review)),
        pack_size=rng.choice([1.0, 6.0, 10.0], n_series),
        min_order=np.zeros(n_series),
        lost_sale_cost=np.full(n_series, 3.0),
        leftover_cost=np.ones(n_series),
        open_orders=np.where(rng.random((n_series, n_periods)) < 0.05, 6.0, 0.0),
    )


def main() -> None:
    rng = np.random.default_rng(0)
    n_periods = ARGS.lead + ARGS.review
    blocks = []
    for start in range(0, ARGS.series, ARGS.block):
        size = min(ARGS.block, ARGS.series - start)
        means = rng.uniform(0.2, 5.0, (1, size, 1))
        draws = rng.negative_binomial(1.5, 1.5 / (1.5 + means), size=(ARGS.draws, size, n_periods)).astype(np.float32)
        blocks.append((draws, _policy(rng, size, n_periods)))
    print(f"{ARGS.series:,} series x {ARGS.draws:,} draws x {n_periods} periods (lead {ARGS.lead}, review {ARGS.review}), "
          f"blocks of {ARGS.block:,} series; draws made: {sum(d.nbytes for d, _ in blocks) / 2**30:.2f} GiB float32")
    seconds = []
    for repeat in range(ARGS.repeats):
        t0 = time.perf_counter()
        units = 0.0
        for draws, policy in blocks:
            units += float(order_at(draws, policy, 0).quantity.sum())
        seconds.append(time.perf_counter() - t0)
        print(f"  run {repeat + 1}: {seconds[-1]:.2f} s ({units:,.0f} units ordered)")
    median = float(np.median(seconds))
    print(f"orders for {ARGS.series:,} series: median {median:.2f} s over {ARGS.repeats} runs "
          f"(min {min(seconds):.2f}, max {max(seconds):.2f}); peak RSS {common.peak_rss_gb():.2f} GB")
    print(f"goal <= 10 s: {'met' if median <= 10.0 else 'NOT met'}")
    common.print_machine(common.machine_info())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=30_490)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--lead", type=int, default=7)
    parser.add_argument("--review", type=int, default=7)
    parser.add_argument("--block", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    ARGS = parser.parse_args()
    main()
