"""Scaling: time per record and peak RSS of one `materialize` job of N records, in this process.

Run it once per size in a fresh process (``run_all.py`` does), so the peak RSS is this job's:

    python benchmarks/scaling.py --records 1000000

The data is a **generated random-access source**, not an in-memory array: 1M 28x28 float32
records are 3.1 GB, which a `MemorySource` would have to hold (and the operating system would
count in RSS). `GeneratedImages` makes record ``i`` on demand as row ``i % 1024`` of block
``default_rng([seed, i // 1024]).random((1024, 28, 28))`` -- a pure function of the index, so it
is random-access, deterministic and splittable like a TFDS/HF/ArrayRecord source, and holds
nothing. The job (normalize, zstd, one shard per 65,536 records, in-process DirectRunner) then
streams chunks of 1024 records from reader to writer; if memory stayed near flat from 10k to 1M,
no stage buffers the data set.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from datarax_beam.core.data_source import RandomAccessSource  # noqa: E402

BLOCK = 1024
BATCH = 1024
MEAN, STD = 0.5, 0.25


class GeneratedImages(RandomAccessSource):
    """``n`` random 28x28 float32 images made on demand from their index (see module doc)."""

    stable_batches = True  # every read returns a new array: nothing to copy

    def __init__(self, n: int, seed: int = 0):
        super().__init__(None, name="generated_images")
        self.n, self.seed = int(n), int(seed)

    def __len__(self) -> int:
        return self.n

    def _block(self, b: int) -> np.ndarray:
        cache = self.__dict__.setdefault("_cache", {})
        if b not in cache:
            cache.clear()  # reads are contiguous: keep one block
            cache[b] = np.random.default_rng([self.seed, b]).random((BLOCK, 28, 28), dtype=np.float32)
        return cache[b]

    def _read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        out = np.empty((len(indices), 28, 28), np.float32)
        blocks = indices // BLOCK
        for b in np.unique(blocks):
            sel = blocks == b
            out[sel] = self._block(int(b))[indices[sel] % BLOCK]
        return {"image": out}

    def fingerprint(self) -> str:
        return f"GeneratedImages:{self.n}:{self.seed}"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args(argv)
    from datarax_beam import OperatorNode, from_source
    from datarax_beam.operators import ElementOperator, ElementOperatorConfig
    from datarax_beam.runners import materialize

    def normalize(element, key):
        return element.update_data({"image": (element.data["image"] - MEAN) / STD})

    def pipeline(n: int):
        op = ElementOperator(ElementOperatorConfig(), fn=normalize)
        return from_source(GeneratedImages(n), BATCH) >> OperatorNode(op)

    work = tempfile.mkdtemp(prefix="bench-scaling-")
    try:
        materialize(pipeline(BATCH), os.path.join(work, "warm"))  # imports, first compile
        baseline = peak_rss_mib()
        start = time.perf_counter()
        shardset = materialize(pipeline(args.records), os.path.join(work, "out"))
        seconds = time.perf_counter() - start
        assert shardset.num_records == args.records, shardset.num_records
        size = shardset.total_bytes
    finally:
        shutil.rmtree(work, ignore_errors=True)
    row = {"records": args.records, "seconds": seconds, "us_per_record": 1e6 * seconds / args.records,
           "peak_rss_mib": peak_rss_mib(), "rss_after_warmup_mib": baseline, "bytes": size}
    print(f"scaling: {args.records:,} records in {seconds:.1f} s = {row['us_per_record']:.1f} us/record, "
          f"peak RSS {row['peak_rss_mib']:,.0f} MiB (after warm-up {baseline:,.0f} MiB)")
    return row


if __name__ == "__main__":
    main()
