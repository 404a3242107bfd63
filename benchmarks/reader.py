"""Train-time reader throughput: `ArrayRecordSourceModule` vs. the floor of work vs. Grain.

Writes N 28x28 float32 records as zstd ArrayRecord shards (cached under benchmarks/_work; each
shard's SHA-256 recorded, so the reader verifies them as it would in production), then reads one
shuffled epoch in batches of 256 with

* **reader**: ``ArrayRecordSourceModule`` (read_batches over its epoch order, what
  ``from_source`` does; the time includes opening and verifying the shards), and through
  ``from_source(reader, 256)`` for information;
* **(a) floor**: ``ArrayRecordDataSource.__getitems__`` + each record's zstd frame decompressed
  (the shards store records compressed one by one, ``docs/format.md``) + one ``np.frombuffer``
  per batch;
* **(b) grain**: ``grain.MapDataset.source(ArrayRecordDataSource).shuffle().map().batch(256)``
  (the map decompresses and ``np.frombuffer``s a record);
* **mixture**: a `Mixture` of two shard sets of N/2 records each (weights 1:1, one epoch of N
  records), compared with the reader over one set of N;
* **restore**: a fresh reader over ``--restore-records`` small records restored mid-epoch
  (epoch 3, half way) until its first batch — no replay, so it does not grow with the position.

and prints records/s and the ratios reader/(a) (goal >= 1.2), reader/(b) (goal >= 4),
mixture/reader (goal >= 0.9) and the restore time (goal < 1 s), all from the same run. Each
variant runs ``--repeats`` times interleaved; the best time counts, except for mixture/reader:
the median of the rounds' ratios (each round reads both back to back).

    python benchmarks/reader.py [--records 100000] [--repeats 2] [--shards 8] [--restore-records 1000000]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import shutil
import sys
import time
import uuid

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datarax_beam import from_source  # noqa: E402
from datarax_beam.shards import load_shardset  # noqa: E402
from datarax_beam.shards.compress import decompress, decompress_one  # noqa: E402
from datarax_beam.shards.writer import commit, write_shardset  # noqa: E402
from datarax_beam.sources import ArrayRecordSourceConfig, ArrayRecordSourceModule, Mixture  # noqa: E402

BATCH = 256
SHAPE = (28, 28)
WORK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_work")


def _sealed(directory: str, columns: dict, shards: int) -> None:
    """Writes a shard set whose shardset.json records each shard's SHA-256 and a job id."""
    write_shardset(directory, columns, num_shards=shards, compression="zstd")
    ss = load_shardset(directory)
    infos = []
    for info in ss.shards:
        with open(os.path.join(directory, info.name), "rb") as f:
            infos.append(dataclasses.replace(info, sha256=hashlib.sha256(f.read()).hexdigest()))
    commit(dataclasses.replace(ss, shards=tuple(infos), job_id=uuid.uuid4().hex))


def _cached(directory: str, n: int) -> bool:
    """Whether ``directory`` holds a usable cached set of ``n`` records (its first and last
    records read back: a set written by an older layout is written again)."""
    try:
        ss = load_shardset(directory)
        if ss.num_records != n or not all(s.sha256 for s in ss.shards):
            return False
        with ArrayRecordSourceModule(directory, ArrayRecordSourceConfig(prefetch_batches=0)) as reader:
            reader.get_batch(np.array([0, n - 1]))
        return True
    except (FileNotFoundError, OSError, ValueError):
        return False


def make_data(n: int, shards: int, name: str = "reader", start: int = 0) -> str:
    directory = os.path.join(WORK, f"{name}-{n}-{shards}-{start}")
    if _cached(directory, n):
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    rng = np.random.default_rng(start)
    images = rng.random((n, *SHAPE), dtype=np.float32)
    _sealed(directory, {"image": images}, shards)
    return directory


def make_small(n: int, shards: int) -> str:
    """``n`` small records (an int64 id and 4 floats) for the restore benchmark."""
    directory = os.path.join(WORK, f"restore-{n}-{shards}")
    if _cached(directory, n):
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    _sealed(directory, {"id": np.arange(n, dtype=np.int64), "x": np.zeros((n, 4), np.float32)}, shards)
    return directory


def open_reader(directory: str, threads: int, prefetch: int) -> ArrayRecordSourceModule:
    config = ArrayRecordSourceConfig(shuffle=True, read_threads=threads, prefetch_batches=prefetch)
    return ArrayRecordSourceModule(directory, config)


def run_reader(reader) -> int:
    """One shuffled epoch through ``read_batches`` (what `from_source` drives)."""
    order = reader.epoch_order(0)
    chunks = (order[s : s + BATCH] for s in range(0, len(order), BATCH))
    return sum(len(next(iter(batch.values()))) for batch in reader.read_batches(chunks))


def run_first_epoch(directory: str, threads: int, prefetch: int) -> int:
    """A fresh reader's first epoch: opening the shards and verifying their SHA-256 included."""
    reader = open_reader(directory, threads, prefetch)
    n = run_reader(reader)
    reader.close()
    return n


def run_pipeline(pipeline) -> int:
    return sum(len(b["image"]) for b in pipeline)


def open_mixture(directories: list[str], threads: int, prefetch: int) -> Mixture:
    config = ArrayRecordSourceConfig(shuffle=True)
    return Mixture([ArrayRecordSourceModule(d, config) for d in directories], [1, 1], seed=0,
                   read_threads=threads, prefetch_batches=prefetch)


def run_restore(directory: str, n: int) -> int:
    """A fresh reader and pipeline restored half way through epoch 3, until the first batch."""
    reader = ArrayRecordSourceModule(directory, ArrayRecordSourceConfig(shuffle=True, seed=0))
    pipeline = from_source(reader, BATCH)
    pipeline.set_state({**pipeline.get_state(), "epoch": 3, "position": n // 2})
    first = next(iter(pipeline))
    assert len(first["id"]) == BATCH
    reader.close()
    return n


def open_floor(directory: str):
    from array_record.python.array_record_data_source import ArrayRecordDataSource

    return ArrayRecordDataSource(load_shardset(directory).shard_paths)


def run_floor(ds) -> int:
    order = np.random.default_rng(0).permutation(len(ds))
    n = 0
    for s in range(0, len(order), BATCH):
        records = decompress("zstd", ds.__getitems__(order[s : s + BATCH].tolist()))
        batch = np.frombuffer(b"".join(records), dtype=np.float32).reshape(-1, *SHAPE)
        n += len(batch)
    return n


def open_grain(directory: str):
    import grain

    return (
        grain.MapDataset.source(open_floor(directory))
        .shuffle(seed=0)
        .map(lambda r: np.frombuffer(decompress_one(r), dtype=np.float32).reshape(SHAPE))
        .batch(BATCH)
    )


def run_grain(ds) -> int:
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
    parser.add_argument("--restore-records", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    directory = make_data(args.records, args.shards)
    halves = [make_data(args.records // 2, max(1, args.shards // 2), "half", start=1 + j) for j in range(2)]
    small = make_small(args.restore_records, args.shards)
    import jax.numpy as jnp

    jnp.zeros(1).block_until_ready()  # the restore times data, not JAX's start-up
    # Every variant but "first epoch" and "restore" reads steady-state epochs of an object
    # opened once (as training does after its first epoch); the first epoch of a fresh reader,
    # which opens the shards and verifies their checksums, is a row of its own.
    reader = open_reader(directory, args.threads, args.prefetch)
    pipeline = from_source(open_reader(directory, args.threads, args.prefetch), BATCH)
    floor_ds, grain_ds = open_floor(directory), open_grain(directory)
    mixture = open_mixture(halves, args.threads, args.prefetch)
    variants = {  # (the mixture right after the reader: their ratio is taken per round)
        "reader": lambda: timed(run_reader, reader),
        "mixture of two sets of N/2": lambda: timed(run_reader, mixture),
        "reader via from_source": lambda: timed(run_pipeline, pipeline),
        "(a) ArrayRecordDataSource.__getitems__ + np.frombuffer": lambda: timed(run_floor, floor_ds),
        "(b) grain MapDataset shuffle+batch": lambda: timed(run_grain, grain_ds),
        "reader, first epoch (opens + verifies shards)":
            lambda: timed(run_first_epoch, directory, args.threads, args.prefetch),
        "restore": lambda: timed(run_restore, small, args.restore_records),
    }
    for name in ("reader", "(a) ArrayRecordDataSource.__getitems__ + np.frombuffer", "mixture of two sets of N/2"):
        variants[name]()  # warm-up: open the files once, as a training job's first epoch does
    best: dict[str, float] = {}
    restore = float("inf")
    paired: list[float] = []  # mixture / reader per round: both read back to back
    for _ in range(args.repeats):
        rates: dict[str, float] = {}
        for name, run in variants.items():
            seconds, n = run()
            if name == "restore":
                restore = min(restore, seconds)
                continue
            expected = args.records // 2 * 2 if name.startswith("mixture") else args.records
            assert n == expected, f"{name} read {n} records, expected {expected}"
            rates[name] = n / seconds
            best[name] = max(best.get(name, 0.0), rates[name])
        paired.append(rates["mixture of two sets of N/2"] / rates["reader"])
    print(f"{args.records} records of {SHAPE} float32, zstd, {args.shards} shards, batches of {BATCH}, "
          f"read_threads={args.threads}, prefetch_batches={args.prefetch}, best of {args.repeats}")
    for name, rate in best.items():
        print(f"  {name:58s} {rate:12,.0f} records/s")
    floor = best["(a) ArrayRecordDataSource.__getitems__ + np.frombuffer"]
    grain_rate = best["(b) grain MapDataset shuffle+batch"]
    mixture_rate = best["mixture of two sets of N/2"]
    # The mixture's ratio is the median of the rounds' ratios: a slow spell of a shared machine
    # falls on both halves of a round, while the best of each may come from different rounds
    # (best-of ratios of the same code ranged 0.75-1.13 on one day; paired ones 0.9-1.0).
    ratios = {"vs_floor": best["reader"] / floor, "vs_grain": best["reader"] / grain_rate,
              "mixture_vs_reader": float(np.median(paired))}
    print(f"  reader / (a) floor = {ratios['vs_floor']:.2f}x  (goal >= 1.2)")
    print(f"  reader / (b) grain = {ratios['vs_grain']:.2f}x  (goal >= 4)")
    print(f"  mixture / reader   = {ratios['mixture_vs_reader']:.2f}x  (goal >= 0.9; median of {len(paired)} "
          f"rounds' ratios: {' '.join(f'{r:.2f}' for r in paired)})")
    print(f"  restore mid-epoch, {args.restore_records:,} records: {restore:.3f} s  (goal < 1 s)")
    return {**ratios, "reader": best["reader"], "floor": floor, "grain": grain_rate,
            "mixture": mixture_rate, "first_epoch": best["reader, first epoch (opens + verifies shards)"],
            "restore_seconds": restore, "restore_records": args.restore_records}


if __name__ == "__main__":
    main()
