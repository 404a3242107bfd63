"""The shard writer: chunks -> ArrayRecord parts under temp names -> committed shard set.

Records reach the writer with their output positions. Shard ``s`` holds the contiguous output
positions of `readers.plan_tasks`. Two paths:

* chunks already carrying their shard (random-access sources) are encoded and written by
  `WriteChunksFn` in the fused read -> transform -> write stage — no GroupByKey of the payload;
* chunks from sequential/streaming readers are numbered with the total count (a side input),
  optionally permuted, grouped by shard, and each group is written sorted by position.

Both emit `PartInfo`s (tiny). `FinalizeShardsFn` sees all of them in one element: it renames each
shard's part to ``data-SSSSS-of-NNNNN.array_record`` (a rename that already happened on a retry is
not an error), merges schemas, writes ``shardset.json`` last — the commit marker — and deletes the
temp directory. All I/O goes through `FileSystems`, so gs://, s3:// and test schemes work.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from datarax_beam.shards import shardset as ss
from datarax_beam.shards.codec import Schema, encode_batch
from datarax_beam.transforms.commit import Commit, FinalizeShardsFn, PartInfo
from datarax_beam.transforms.readers import NAMESPACE, Chunk, plan_tasks


def output_permutation(seed: int, n: int) -> np.ndarray:
    """The global shuffle of ``materialize(shuffle=True)``: output position j holds record
    ``order[perm[j]]``. A function of (seed, n) only, so it is the same on every runner."""
    return np.random.default_rng([int(seed), 0x5348554646]).permutation(n)


class _Part:
    """An open ArrayRecord temp file; written locally, uploaded at close for remote paths."""

    def __init__(self, tmp_dir: str, shard: int, num_shards: int, start: int, compression: str):
        from array_record.python.array_record_module import ArrayRecordWriter

        self.shard, self.start, self.stop, self.schema = shard, start, start, None
        name = f"{ss.shard_name(shard, num_shards)}.{start}.{uuid.uuid4().hex}"
        self.path = ss.join(tmp_dir, name)
        self.remote = "://" in tmp_dir
        if self.remote:
            self.local = os.path.join(tempfile.mkdtemp(prefix="datarax-part-"), name)
        else:
            os.makedirs(tmp_dir, exist_ok=True)
            self.local = self.path
        self.writer = ArrayRecordWriter(self.local, ss.writer_options(compression))

    def write(self, schema: Schema, records: list[bytes]) -> int:
        self.schema = schema if self.schema is None else self.schema.merge(schema)
        write = self.writer.write
        for rec in records:
            write(rec)
        self.stop += len(records)
        return sum(map(len, records))

    def close(self) -> PartInfo:
        self.writer.close()
        size = os.path.getsize(self.local)
        if self.remote:
            with open(self.local, "rb") as src, FileSystems.create(self.path) as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
            shutil.rmtree(os.path.dirname(self.local), ignore_errors=True)
        schema = None if self.schema is None else self.schema.to_json()
        return PartInfo(self.shard, self.start, self.stop, self.path, size, schema)


class _WriterBase(beam.DoFn):
    def __init__(self, tmp_dir: str, num_shards: int, compression: str):
        self._tmp_dir, self._num_shards, self._compression = tmp_dir, num_shards, compression
        self._records = Metrics.counter(NAMESPACE, "records_written")
        self._bytes = Metrics.counter(NAMESPACE, "bytes_written")
        self._encoded = Metrics.counter(NAMESPACE, "record_bytes_encoded")

    def _open(self, shard: int, start: int) -> _Part:
        return _Part(self._tmp_dir, shard, self._num_shards, start, self._compression)

    def _close(self, part: _Part) -> PartInfo:
        info = part.close()
        self._records.inc(info.stop - info.start)
        self._bytes.inc(info.num_bytes)
        return info


class WriteChunksFn(_WriterBase):
    """Writes chunks that arrive in position order per shard (the fused path) as parts.

    A part stays open while chunks continue it; a new shard or a gap closes it. Beam's fusion
    keeps a shard's chunks in one bundle, so each shard is normally one part.
    """

    def start_bundle(self):
        self._part: _Part | None = None

    def process(self, chunk: Chunk):
        n = len(chunk.positions)
        if n == 0:
            return
        start = int(chunk.positions[0])
        part = self._part
        if part is not None and (part.shard != chunk.shard or part.stop != start):
            yield self._close(part)
            part = None
        if part is None:
            part = self._part = self._open(chunk.shard, start)
        schema = Schema.infer(chunk.columns)
        self._encoded.inc(part.write(schema, encode_batch(schema, chunk.columns)))

    def finish_bundle(self):
        if self._part is not None:
            info, self._part = self._close(self._part), None
            yield GlobalWindows.windowed_value(info)


class AssignShardsFn(beam.DoFn):
    """Encodes an unassigned chunk and splits it by output shard (total count as side input)."""

    def __init__(self, num_shards: int, shuffle: bool, seed: int):
        self._num_shards, self._shuffle, self._seed = num_shards, shuffle, seed
        self._cache: tuple[int, np.ndarray | None, np.ndarray] | None = None

    def _plan(self, n: int):
        if self._cache is None or self._cache[0] != n:
            inverse = None
            if self._shuffle:
                inverse = np.empty(n, dtype=np.int64)
                inverse[output_permutation(self._seed, n)] = np.arange(n)
            stops = np.array([t.stop for t in plan_tasks(n, self._num_shards)], dtype=np.int64)
            self._cache = (n, inverse, stops)
        return self._cache

    def process(self, chunk: Chunk, total: int):
        _, inverse, stops = self._plan(int(total))
        out_pos = chunk.positions if inverse is None else inverse[chunk.positions]
        shards = np.searchsorted(stops, out_pos, side="right")
        schema = Schema.infer(chunk.columns)
        records = encode_batch(schema, chunk.columns)
        schema_json = schema.to_json()
        for shard in np.unique(shards):
            sel = np.flatnonzero(shards == shard)
            yield int(shard), (out_pos[sel], [records[i] for i in sel], schema_json)


class WriteGroupFn(_WriterBase):
    """Writes one shard's grouped records sorted by output position."""

    def process(self, item):
        shard, pieces = item
        pieces = list(pieces)
        positions = np.concatenate([p[0] for p in pieces])
        records = [r for p in pieces for r in p[1]]
        schema = Schema.from_json(pieces[0][2])
        for p in pieces[1:]:
            schema = schema.merge(Schema.from_json(p[2]))
        order = np.argsort(positions, kind="stable")
        start = int(positions[order[0]])
        if not np.array_equal(positions[order], np.arange(start, start + len(order))):
            raise RuntimeError(f"Shard {shard} received non-contiguous output positions")
        part = self._open(int(shard), start)
        self._encoded.inc(part.write(schema, [records[i] for i in order]))
        yield self._close(part)


class WriteShards(beam.PTransform):
    """Writes chunks as a committed shard set; outputs ``shardset.json``'s text once.

    Args:
      commit: where and how to commit (`Commit`); ``commit.shard_sizes`` set means the chunks
        already carry their shard and contiguous positions (the fused, no-shuffle path).
      shuffle/seed: the global shuffle for chunks that still need shard assignment.
      total: a singleton PCollection of the record count (needed when not pre-assigned).
    """

    def __init__(self, commit: Commit, *, shuffle: bool = False, seed: int = 0, statistics=None):
        super().__init__()
        self._commit, self._shuffle, self._seed = commit, shuffle, seed
        self._statistics = statistics  # singleton PCollection of statistics JSON to record, or None

    def expand(self, chunks):
        c = self._commit
        if c.shard_sizes is not None:
            parts = chunks | "WriteParts" >> beam.ParDo(WriteChunksFn(c.tmp_dir, c.num_shards, c.compression))
        else:
            total = (chunks | "Sizes" >> beam.Map(lambda ch: len(ch.indices))
                     | "Total" >> beam.CombineGlobally(sum))
            parts = (
                chunks
                | "AssignShards" >> beam.ParDo(
                    AssignShardsFn(c.num_shards, self._shuffle, self._seed), beam.pvalue.AsSingleton(total))
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteGroups" >> beam.ParDo(WriteGroupFn(c.tmp_dir, c.num_shards, c.compression))
            )
        return (
            parts
            | "AllParts" >> beam.combiners.ToList()
            | "Commit" >> beam.ParDo(FinalizeShardsFn(c), **(
                {} if self._statistics is None else {"statistics": beam.pvalue.AsSingleton(self._statistics)}))
        )
