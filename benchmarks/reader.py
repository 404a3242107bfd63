"""Train-time reader throughput: `ArrayRecordSourceModule` vs. the floor of work vs. Grain.

Writes N 28x28 float32 records as zstd ArrayRecord shards (cached under benchmarks/_work), then
reads one shuffled epoch in batches of 256 with

* **reader**: ``ArrayRecordSourceModule`` (read_batches over its epoch order, what
  ``from_source`` does), and through ``from_source(reader, 256)`` for information;
* **(a) floor**: ``ArrayRecordDataSource.__getitems__`` + one ``np.frombuffer`` per batch;
* **(b) grain**: ``grain.MapDataset.source(ArrayRecordDataSource).shuffle().map().batch(256)``.

and prints records/s and the ratios reader/(a) (goal >= 0.8) and reader/(b) (goal >= 3), all
from the same run. Each variant runs ``--repeats`` times interleaved; the best time counts.

    python benchmarks/reader.py [--records 100000] [--repeats 2] [--shards 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datarax_beam import from_source  # noqa: E402
from datarax_beam.shards import load_shardset  # noqa: E402
from datarax_beam.shards.writer import write_shardset  # noqa: E402
from datarax_beam.sources import ArrayRecordSourceConfig, ArrayRecordSourceModule  # noqa: E402

BATCH = 256
SHAPE = (28, 28)
WORK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_work")


def make_data(n: int, shards: int) -> str:
    directory = os.path.join(WORK, f"reader-{n}-{shards}")
    try:
        if load_shardset(directory).num_records == n:
            return directory
    except (FileNotFoundError, ValueError):
        pass
    shutil.rmtree(directory, ignore_errors=True)
    rng = np.random.default_rng(0)
    images = rng.random((n, *SHAPE), dtype=np.float32)
    write_shardset(directory, {"image": images}, num_shards=shards, compression="zstd")
    return directory


def run_reader(directory: str, threads: int, prefetch: int) -> int:
    config = ArrayRecordSourceConfig(shuffle=True, read_threads=threads, prefetch_batches=prefetch)
    reader = ArrayRecordSourceModule(directory, config)
    order = reader.epoch_order(0)
    chunks = (order[s : s + BATCH] for s in range(0, len(order), BATCH))
    n = 0
    for batch in reader.read_batches(chunks):
        n += len(batch["image"])
    reader.close()
    return n


def run_pipeline(directory: str, threads: int, prefetch: int) -> int:
    config = ArrayRecordSourceConfig(shuffle=True, read_threads=threads, prefetch_batches=prefetch)
    reader = ArrayRecordSourceModule(directory, config)
    n = sum(len(b["image"]) for b in from_source(reader, BATCH))
    reader.close()
    return n


def run_floor(directory: str) -> int:
    from array_record.python.array_record_data_source import ArrayRecordDataSource

    ds = ArrayRecordDataSource(load_shardset(directory).shard_paths)
    order = np.random.default_rng(0).permutation(len(ds))
    n = 0
    for s in range(0, len(order), BATCH):
        records = ds.__getitems__(order[s : s + BATCH].tolist())
        batch = np.frombuffer(b"".join(records), dtype=np.float32).reshape(-1, *SHAPE)
        n += len(batch)
    return n


def run_grain(directory: str) -> int:
    import grain
    from array_record.python.array_record_data_source import ArrayRecordDataSource

    source = ArrayRecordDataSource(load_shardset(directory).shard_paths)
    ds = (
        grain.MapDataset.source(source)
        .shuffle(seed=0)
        .map(lambda r: np.frombuffer(r, dtype=np.float32).reshape(SHAPE))
        .batch(BATCH)
    )
    return sum(len(b) for b in ds)


def timed(fn, *args) -> tuple[float, int]:
    start = time.perf_counter()
    n = fn(*args)
    return time.perf_counter() - start, n


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=ArrayRecordSourceConfig.read_threads)
    parser.add_argument("--prefetch", type=int, default=ArrayRecordSourceConfig.prefetch_batches)
    args = parser.parse_args(argv)
    directory = make_data(args.records, args.shards)
    variants = {
        "reader": lambda: timed(run_reader, directory, args.threads, args.prefetch),
        "reader via from_source": lambda: timed(run_pipeline, directory, args.threads, args.prefetch),
        "(a) ArrayRecordDataSource.__getitems__ + np.frombuffer": lambda: timed(run_floor, directory),
        "(b) grain MapDataset shuffle+batch": lambda: timed(run_grain, directory),
    }
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, run in variants.items():
            seconds, n = run()
            assert n == args.records, f"{name} read {n} records, expected {args.records}"
            best[name] = max(best.get(name, 0.0), n / seconds)
    print(f"{args.records} records of {SHAPE} float32, zstd, {args.shards} shards, batches of {BATCH}, "
          f"read_threads={args.threads}, prefetch_batches={args.prefetch}, best of {args.repeats}")
    for name, rate in best.items():
        print(f"  {name:58s} {rate:12,.0f} records/s")
    floor = best["(a) ArrayRecordDataSource.__getitems__ + np.frombuffer"]
    grain_rate = best["(b) grain MapDataset shuffle+batch"]
    ratios = {"vs_floor": best["reader"] / floor, "vs_grain": best["reader"] / grain_rate}
    print(f"  reader / (a) floor = {ratios['vs_floor']:.2f}x  (goal >= 0.8)")
    print(f"  reader / (b) grain = {ratios['vs_grain']:.2f}x  (goal >= 3)")
    return {**ratios, "reader": best["reader"], "floor": floor, "grain": grain_rate}


if __name__ == "__main__":
    main()
