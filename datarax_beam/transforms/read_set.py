"""`ReadShardSet`: a splittable Beam read of a committed shard set.

So a downstream Beam job consumes what an upstream one materialized. The set is a Beam
`BoundedSource` over its global record indices ``0..n-1`` (shard order, the numbering of
`ArrayRecordSourceModule`): ``split`` cuts it at shard boundaries and every ``records_per_split``
records (default: from the runner's desired bundle size and the set's bytes per record), and
``read`` claims records through an `OffsetRangeTracker`, so runners that rebalance work (Dataflow,
Flink) can split a range while it is read. Each worker process opens the set once (a small
cache keyed by path and job id) through the train-time reader, which verifies every shard's
SHA-256 against ``shardset.json`` when it first opens it and decodes with the set's schema.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io import iobase
from apache_beam.io.range_trackers import OffsetRangeTracker
from apache_beam.metrics import Metrics

from datarax_beam.shards.shardset import ShardSet, load_shardset
from datarax_beam.sources import _paths
from datarax_beam.transforms.readers import NAMESPACE, Chunk
from datarax_beam.transforms.records import check_batch_size, chunk_records

OUTPUTS = ("records", "chunks")
_LOCK = threading.Lock()


@functools.lru_cache(maxsize=8)
def _open(path: str, job_id: str | None, verify: bool):
    """The process's reader of a set (verified once per process, not once per split)."""
    from datarax_beam.sources.array_record import ArrayRecordSourceConfig, ArrayRecordSourceModule

    config = ArrayRecordSourceConfig(shard_index=0, shard_count=1, read_threads=0, prefetch_batches=0,
                                     verify=verify)
    return ArrayRecordSourceModule(path, config)


def _reader(path: str, job_id: str | None, verify: bool):
    with _LOCK:
        return _open(path, job_id, verify)


class _ShardSetSource(iobase.BoundedSource):
    """Records ``[start, stop)`` of a committed shard set, read in chunks of ``batch_size``."""

    def __init__(self, shardset: ShardSet, batch_size: int, records_per_split: int | None, verify: bool,
                 output: str):
        self._path, self._job_id = shardset.path, shardset.job_id
        self._ends = np.cumsum([s.num_records for s in shardset.shards]).astype(np.int64)
        self._bytes = int(shardset.total_bytes)
        self._batch_size, self._per_split, self._verify = batch_size, records_per_split, verify
        self._output = output
        self._records = Metrics.counter(NAMESPACE, "records_read")

    @property
    def _n(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def estimate_size(self) -> int:
        return self._bytes

    def _range(self, start, stop) -> tuple[int, int]:
        return (0 if start is None else int(start)), (self._n if stop is None else int(stop))

    def split(self, desired_bundle_size, start_position=None, stop_position=None):
        start, stop = self._range(start_position, stop_position)
        per = self._per_split
        if per is None:
            per = max(1, int(desired_bundle_size * self._n // max(self._bytes, 1)))
        bytes_per_record = self._bytes / max(self._n, 1)
        cuts = sorted({start, stop, *(int(e) for e in self._ends if start < e < stop)})
        for a, b in zip(cuts[:-1], cuts[1:], strict=False):  # within one shard
            for lo in range(a, b, per):
                hi = min(lo + per, b)
                yield iobase.SourceBundle(weight=(hi - lo) * bytes_per_record, source=self,
                                          start_position=lo, stop_position=hi)

    def get_range_tracker(self, start_position, stop_position):
        return OffsetRangeTracker(*self._range(start_position, stop_position))

    def read(self, range_tracker):
        reader = _reader(self._path, self._job_id, self._verify)
        pos = range_tracker.start_position()
        while True:
            hi = min(pos + self._batch_size, range_tracker.stop_position())
            claimed = pos
            while claimed < hi and range_tracker.try_claim(claimed):
                claimed += 1
            if claimed == pos:
                return
            indices = np.arange(pos, claimed, dtype=np.int64)
            chunk = Chunk(-1, indices, indices, reader.get_batch(indices))
            self._records.inc(len(indices))
            if self._output == "chunks":
                yield chunk
            else:
                yield from chunk_records(chunk)
            if claimed < hi:  # the tracker stopped short: the rest was split off
                return
            pos = claimed

    def default_output_coder(self):
        return beam.coders.PickleCoder()


class ReadShardSet(beam.PTransform):
    """Reads a committed shard set as records ``(index, features)`` (or `Chunk`s).

    ``index`` is the record's global index in the set (shard order), as `ArrayRecordSourceModule`
    numbers it, so ``ReadShardSet(a) | ApplyChain(...) | WriteShardSet(b)`` keeps the order.

    Args:
      path: a committed shard-set directory (local or any Beam filesystem URL). A directory
        without ``shardset.json`` is refused when the transform is built.
      output: ``"records"`` or ``"chunks"`` (up to ``batch_size`` records as columns).
      batch_size: records decoded per read call (and per chunk).
      records_per_split: records per initial split (at most one shard each); default: from
        the runner's desired bundle size and the set's bytes per record.
      verify: check each shard's SHA-256 against ``shardset.json`` when a worker first opens it.

    Raises:
      FileNotFoundError: ``path`` is not a committed shard set.
      ShardSetError: its ``shardset.json`` is invalid.

    Example:
      >>> import apache_beam as beam, numpy as np, tempfile
      >>> from datarax_beam.shards.writer import write_shardset
      >>> from datarax_beam.runners import options
      >>> d, flags = tempfile.mkdtemp(), options.build_options(options.in_process())
      >>> _ = write_shardset(d, {"x": np.arange(6, dtype=np.int32)}, num_shards=2)
      >>> with beam.Pipeline(runner=options.make_runner(flags), options=flags) as p:
      ...     _ = (p | ReadShardSet(d) | beam.Map(lambda r: int(r[1]["x"]) * r[0])
      ...            | beam.CombineGlobally(sum) | beam.Map(print))
      55
    """

    def __init__(self, path: Any, *, output: str = "records", batch_size: int = 1024,
                 records_per_split: int | None = None, verify: bool = True):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"ReadShardSet: unknown `output` {output!r}; expected one of {OUTPUTS}")
        if records_per_split is not None:
            check_batch_size(records_per_split, "records_per_split")
        if not isinstance(verify, bool):
            raise TypeError(f"ReadShardSet: `verify` must be a bool, got {verify!r}")
        if not isinstance(path, str) and not hasattr(path, "__fspath__"):
            raise TypeError(f"ReadShardSet: `path` must be a shard-set directory, got {type(path).__name__}")
        path = os.fspath(path)
        self._shardset = _paths.checked(load_shardset(path))
        self._source = _ShardSetSource(self._shardset, check_batch_size(batch_size), records_per_split,
                                       verify, output)

    @property
    def shardset(self) -> ShardSet:
        """The committed `ShardSet` read (checked when the transform was built)."""
        return self._shardset

    def expand(self, pbegin):
        return pbegin | "ReadShards" >> beam.io.Read(self._source)
