"""Read + validate + summarize + encode the shared Rossmann train.csv/store.csv, one fresh process per repeat.

Goals: <= 10 s in all, <= 2 GB peak memory.
"""

from __future__ import annotations

import time

import common

FIELDS = [
    ("read_validate_s", "read+validate", ".2f"),
    ("summarize_s", "summarize", ".2f"),
    ("encode_s", "encode", ".2f"),
    ("total_s", "total s", ".2f"),
    ("peak_rss_gb", "peak RSS GB", ".2f"),
]


def child(args) -> dict:
    from tasks.data.summary import summarize

    train, stores = common.rossmann_files(args.data)
    t0 = time.perf_counter()
    inputs, encoded, seconds = common.read_encode(train, stores, None, common.fit_config(None))
    total = time.perf_counter() - t0
    t0 = time.perf_counter()
    summarize(inputs.train, inputs.stores, inputs.future)
    seconds["summarize_s"] = time.perf_counter() - t0
    history = encoded.history
    return {
        **seconds,
        "total_s": total + seconds["summarize_s"],
        "peak_rss_gb": common.peak_rss_gb(),
        "train_rows": inputs.train.height,
        "stores": history.n_stores,
        "days": history.n_days,
    }


def main() -> None:
    args = common.parser(__doc__.splitlines()[0], repeats=3, fit=False).parse_args()
    parent = common.repeated(__file__, args, child, FIELDS)
    if parent is None:
        return
    machine, runs, med = parent
    print(f"data: {runs[0]['train_rows']} train rows, {runs[0]['stores']} stores x {runs[0]['days']} days")
    common.show(f"median of {len(runs)}", med, FIELDS)
    goals = [
        common.goal("total seconds", med["total_s"], med["total_s"] <= 10, "<= 10 s"),
        common.goal("peak RSS GB", med["peak_rss_gb"], med["peak_rss_gb"] <= 2, "<= 2 GB"),
    ]
    common.result("ingest_validate_encode", args, machine, repeats=runs, median=med, goals=goals)


if __name__ == "__main__":
    main()
