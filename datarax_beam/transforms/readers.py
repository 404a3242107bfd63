"""Readers: one composite `PTransform` per source kind, emitting `Chunk`s of records.

* `ReadIndexRanges` — random-access sources. The driver plans shards as `ShardTask`s (a range of
  output positions; the record indices are ``order[start:stop]``, where ``order`` is the epoch's
  order, optionally permuted). Tasks are tiny, so they are created and redistributed cheaply;
  each worker then reads its shard's records by index through an `IndexReader`.
* `ReadSequential` — iterator-only sources, read in order by one worker, then redistributed.
* `ReadStreamShards` — streaming sources exposing ``n_shards``/``iter_shard(i)``, read one shard
  per element; global positions come from the per-shard record counts.

Every chunk carries its records' global source indices (they key the PRNG) and output positions
(they decide the shard and the order inside it).
"""

from __future__ import annotations

import pickle
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from datarax_beam.core import columns as cols
from datarax_beam.core.data_source import DataSourceModule
from datarax_beam.core.element import as_element
from datarax_beam.dag.nodes import ShuffleNode
from datarax_beam.dag.order import epoch_records, guarded
from datarax_beam.transforms.dead_letter import DEFAULT_POLICY, ErrorPolicy, per_record
from datarax_beam.transforms.staging import IndexReader, _load_npy

NAMESPACE = "datarax_beam"


class Chunk(NamedTuple):
    """A Beam element: contiguous records as columns plus their bookkeeping.

    Attributes:
      shard: the output shard (-1 while not yet assigned; for `ReadStreamShards`, the source shard).
      positions: int64 positions of the records (output order once assigned).
      indices: int64 global source indices (-1 where a streaming source gave none yet).
      columns: dict of stacked columns (see `datarax_beam.core.columns`).
      failures: dead-letter entries of records of this chunk that failed on the way (their
        positions are not in ``positions``; see `datarax_beam.transforms.dead_letter`).
    """

    shard: int
    positions: np.ndarray
    indices: np.ndarray
    columns: dict[str, Any]
    failures: tuple = ()

    def span(self) -> tuple[int, int]:
        """The output positions ``[lo, hi)`` this chunk accounts for (written or failed)."""
        lo = [int(self.positions[0]), int(self.positions[-1]) + 1] if len(self.positions) else []
        ends = lo + [f["position"] for f in self.failures] + [f["position"] + 1 for f in self.failures]
        return (min(ends), max(ends)) if ends else (0, 0)


class ChunkCoder(beam.coders.Coder):
    """Beam's coder of `Chunk`s: pickled, as by default, but sized from the columns' bytes.

    Beam samples the size of elements passing between transforms for its metrics, even inside a
    fused stage; its default coder sizes a chunk by pickling it: a copy of every sampled chunk's
    data (measured: 6% of an in-process 100k-record job). Registered for `Chunk`, which the
    readers and the operator and writer DoFns declare as their output type.
    """

    def encode(self, chunk: Chunk) -> bytes:
        return pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes) -> Chunk:
        return pickle.loads(encoded)

    def is_deterministic(self) -> bool:
        return False

    def estimate_size(self, chunk: Chunk) -> int:
        size = 64 + 16 * len(chunk.positions)  # the bookkeeping (positions, indices)
        for value in chunk.columns.values():
            nbytes = getattr(value, "nbytes", None)
            size += int(nbytes) if nbytes is not None else 64 * len(value)  # (lists: a guess)
        return size


beam.coders.registry.register_coder(Chunk, ChunkCoder)


class ShardTask(NamedTuple):
    """Output shard ``shard`` holds output positions ``[start, stop)``."""

    shard: int
    start: int
    stop: int


def plan_tasks(num_records: int, num_shards: int) -> list[ShardTask]:
    """Contiguous shards of output positions, sized like ``np.array_split``."""
    base, extra = divmod(num_records, num_shards)
    tasks, start = [], 0
    for i in range(num_shards):
        stop = start + base + (1 if i < extra else 0)
        tasks.append(ShardTask(i, start, stop))
        start = stop
    return tasks


def plan_block_tasks(num_records: int, num_tasks: int, block_size: int) -> list[ShardTask]:
    """About ``num_tasks`` contiguous tasks whose boundaries are multiples of ``block_size``."""
    blocks = -(-num_records // block_size)
    tasks = []
    for i, t in enumerate(plan_tasks(blocks, max(1, min(num_tasks, blocks)))):
        tasks.append(ShardTask(i, t.start * block_size, min(t.stop * block_size, num_records)))
    return tasks


@beam.typehints.with_output_types(Chunk)
class _ReadTaskFn(beam.DoFn):
    def __init__(self, reader: IndexReader, order_path: str | None, batch_size: int,
                 policy: ErrorPolicy = DEFAULT_POLICY, prefix: str = ""):
        self._reader, self._order_path, self._batch_size = reader, order_path, batch_size
        self._policy = policy
        self._records = Metrics.counter(NAMESPACE, f"{prefix}records_read")

    def setup(self):
        self._reader.setup()
        self._order = None if self._order_path is None else _load_npy(self._order_path)

    def _read_each(self, indices: np.ndarray, positions: np.ndarray):
        """A batch read raised: read its records one by one; failures become dead letters."""

        def read_one(_, idx):
            return next(iter(self._reader.read_batches([idx])))

        return per_record(read_one, {}, indices, positions, "read", self._policy)

    def process(self, task: ShardTask):
        positions = np.arange(task.start, task.stop, dtype=np.int64)
        indices = positions if self._order is None else np.asarray(self._order[task.start : task.stop], np.int64)
        bs = self._batch_size
        spans = [(s, min(s + bs, len(positions))) for s in range(0, len(positions), bs)]
        i = 0
        while i < len(spans):  # a fresh batch stream after each failed batch
            batches = self._reader.read_batches(indices[a:b] for a, b in spans[i:])
            for a, b in spans[i:]:
                i += 1
                try:
                    columns = next(batches)
                except StopIteration:
                    raise RuntimeError(f"The reader yielded no batch for records [{a}, {b}) of shard "
                                       f"{task.shard}") from None
                except Exception:  # noqa: BLE001 - find the bad records, keep the good ones
                    columns, good, failures = self._read_each(indices[a:b], positions[a:b])
                    self._records.inc(int(good.sum()))
                    yield Chunk(task.shard, positions[a:b][good], indices[a:b][good], columns,
                                tuple(failures))
                    break
                self._records.inc(b - a)
                yield Chunk(task.shard, positions[a:b], indices[a:b], columns)


class ReadIndexRanges(beam.PTransform):
    """Reads a random-access source shard by shard; no record data crosses a shuffle.

    Args:
      reader: the worker-side reader (see `datarax_beam.transforms.staging.index_reader`).
      tasks: the shard plan (`plan_tasks`).
      order_path: a staged ``.npy`` of source indices in output order; None means identity.
      batch_size: records per emitted chunk.
      spread: redistribute the tasks over workers (a Reshuffle of the tiny tasks); off only for
        single-worker runs, where it would add a stage and nothing else.
      policy: what a batch read that raises does: its records are re-read one by one and those
        that still raise become dead-letter entries (or fail the job, ``on_error="raise"``).
    """

    def __init__(self, reader: IndexReader, tasks: list[ShardTask], order_path: str | None,
                 batch_size: int, *, spread: bool = True, policy: ErrorPolicy = DEFAULT_POLICY,
                 prefix: str = ""):
        super().__init__()
        self._reader, self._tasks = reader, list(tasks)
        self._order_path, self._batch_size, self._spread = order_path, batch_size, spread
        self._policy, self._prefix = policy, prefix

    def expand(self, pbegin):
        tasks = pbegin | "ShardTasks" >> beam.Create(self._tasks, reshuffle=False)
        if self._spread:
            tasks = tasks | "SpreadTasks" >> beam.Reshuffle()
        return tasks | "ReadByIndex" >> beam.ParDo(
            _ReadTaskFn(self._reader, self._order_path, self._batch_size, self._policy, self._prefix))


def numbered_records(source: DataSourceModule, shuffle: ShuffleNode | None):
    """(index, element) pairs of epoch 0, numbered and shuffled exactly as the online pipeline."""
    return epoch_records(source, 0, shuffle)


def _chunks_of(records, batch_size: int, shard: int, first_position: int = 0):
    position = first_position
    while True:
        batch = [r for _, r in zip(range(batch_size), records, strict=False)]
        if not batch:
            return
        n = len(batch)
        yield Chunk(shard, np.arange(position, position + n, dtype=np.int64),
                    np.array([i for i, _ in batch], dtype=np.int64),
                    cols.columns_from_records([e.data for _, e in batch]))
        position += n


@beam.typehints.with_output_types(Chunk)
class _IterateFn(beam.DoFn):
    def __init__(self, source, shuffle, batch_size, prefix: str = ""):
        self._source, self._shuffle, self._batch_size = source, shuffle, batch_size
        self._records = Metrics.counter(NAMESPACE, f"{prefix}records_read")

    def process(self, _):
        for chunk in _chunks_of(numbered_records(self._source, self._shuffle), self._batch_size, -1):
            self._records.inc(len(chunk.indices))
            yield chunk


class ReadSequential(beam.PTransform):
    """Reads an iterator-only source in order on one worker, then redistributes the chunks."""

    def __init__(self, source: DataSourceModule, batch_size: int, shuffle: ShuffleNode | None = None,
                 prefix: str = ""):
        super().__init__()
        self._prefix = prefix
        self._source, self._batch_size, self._shuffle = source, batch_size, shuffle

    def expand(self, pbegin):
        return (
            pbegin
            | "Start" >> beam.Create([None])
            | "Iterate" >> beam.ParDo(_IterateFn(self._source, self._shuffle, self._batch_size, self._prefix))
            | "Redistribute" >> beam.Reshuffle()
        )


@beam.typehints.with_output_types(Chunk)
class _ReadStreamShardFn(beam.DoFn):
    def __init__(self, source, batch_size, prefix: str = ""):
        self._source, self._batch_size = source, batch_size
        self._records = Metrics.counter(NAMESPACE, f"{prefix}records_read")

    def setup(self):
        if hasattr(self._source, "set_epoch"):
            self._source.set_epoch(0)

    def process(self, shard: int):
        def records():
            for value in guarded(iter(self._source.iter_shard(shard)), self._source, f" of shard {shard}"):
                element = as_element(value)
                index = element.metadata.index if element.metadata is not None else -1
                yield int(index), element

        for chunk in _chunks_of(records(), self._batch_size, shard):
            self._records.inc(len(chunk.indices))
            yield chunk


def _globalize(chunk: Chunk, counts: dict[int, int]) -> Chunk:
    offset = sum(n for s, n in counts.items() if s < chunk.shard)
    positions = chunk.positions + offset
    indices = np.where(chunk.indices < 0, positions, chunk.indices)
    return Chunk(-1, positions, indices, chunk.columns)


class ReadStreamShards(beam.PTransform):
    """Reads a streaming source's shards in parallel (``n_shards``, ``iter_shard(i)``).

    The source's own (unshuffled) iteration must be its shards in order, so record ``j`` of shard
    ``i`` has the global position ``sum(len(shard k) for k < i) + j`` — the number the online
    pipeline gives it (the `ShardedStreamingSource` contract). Shuffled streams are read with
    `ReadSequential` instead.
    """

    def __init__(self, source: Any, batch_size: int, prefix: str = ""):
        super().__init__()
        self._prefix = prefix
        self._source, self._batch_size = source, batch_size

    def expand(self, pbegin):
        chunks = (
            pbegin
            | "Shards" >> beam.Create(list(range(int(self._source.n_shards))), reshuffle=False)
            | "SpreadShards" >> beam.Reshuffle()
            | "ReadShard" >> beam.ParDo(_ReadStreamShardFn(self._source, self._batch_size, self._prefix))
        )
        counts = (
            chunks
            | "ShardSizes" >> beam.Map(lambda c: (c.shard, len(c.indices)))
            | "SumPerShard" >> beam.CombinePerKey(sum)
            | "AsDict" >> beam.combiners.ToDict()
        )
        return chunks | "GlobalPositions" >> beam.Map(_globalize, beam.pvalue.AsSingleton(counts))


def is_sharded_stream(source: Any) -> bool:
    return hasattr(source, "n_shards") and callable(getattr(source, "iter_shard", None))
