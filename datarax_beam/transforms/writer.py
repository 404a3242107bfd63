"""The shard writer: chunks -> ArrayRecord parts under temp names -> committed shard set.

Records reach the writer with their output positions. Shard ``s`` holds the contiguous output
positions of `readers.plan_tasks`. Two paths:

* chunks already carrying their shard (random-access sources) are encoded and written by
  `WriteChunksFn` in the fused read -> transform -> write stage — no GroupByKey of the payload;
* chunks from sequential/streaming readers are numbered with the total count (a side input),
  optionally permuted, grouped by shard, and each group is written sorted by position.

Both emit `PartInfo`s (tiny). A record that failed on the way (see `dead_letter`) is not written;
its position stays in its part as a dead-letter entry, so shards are planned before failures are
known and a shard is simply shorter by its failed records. `FinalizeShardsFn` sees all parts in one
element: it checks every planned position is covered exactly once, renames each shard's part to
``data-SSSSS-of-NNNNN.array_record`` (a rename that already happened on a retry is not an error),
checks the schema (`reconcile`), writes ``errors/`` and then ``shardset.json`` last — the commit
marker — and deletes the temp directory. All I/O goes through `FileSystems`, so gs://, s3:// and test schemes work.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from datarax_beam.core import columns as cols
from datarax_beam.shards import shardset as ss
from datarax_beam.shards.codec import Schema, encode_batch
from datarax_beam.transforms import dead_letter
from datarax_beam.transforms.commit import Commit, FinalizeShardsFn, PartInfo
from datarax_beam.transforms.dead_letter import (
    DEFAULT_POLICY,
    ErrorPolicy,
    failure,
    keep,
    per_record,
)
from datarax_beam.transforms.readers import NAMESPACE, Chunk, plan_tasks
from datarax_beam.transforms.staging import save_array, write_bytes


def output_permutation(seed: int, n: int) -> np.ndarray:
    """The global shuffle of ``materialize(shuffle=True)``: output position j holds record
    ``order[perm[j]]``. A function of (seed, n) only, so it is the same on every runner."""
    return np.random.default_rng([int(seed), 0x5348554646]).permutation(n)


#: Test-only fault injection: called with each `PartInfo` after its file is written and before
#: the writer reports it (a worker dying there leaves an orphan temp part). None in production.
_after_part_written = None


def encode_chunk(chunk: Chunk, policy: ErrorPolicy) -> tuple[Schema | None, list[bytes], Chunk]:
    """(schema, encoded records, chunk) for the chunk's good records.

    Encodes the whole chunk at once; only if that raises (a value of an unsupported type, a
    feature whose type differs between records) are records encoded one by one, and those that
    fail become dead-letter entries with stage ``encode``.
    """
    if not len(chunk.indices):
        return None, [], chunk
    try:
        schema = Schema.infer(chunk.columns)
        return schema, encode_batch(schema, chunk.columns), chunk
    except Exception:  # noqa: BLE001 - find the bad records, keep the good ones
        pass

    def encode_one(columns, _):
        encode_batch(Schema.infer(columns), columns)
        return {}

    _, good, failures = per_record(encode_one, chunk.columns, chunk.indices, chunk.positions, "encode", policy)
    columns = cols.take(chunk.columns, np.flatnonzero(good))
    chunk = keep(chunk, good, failures)._replace(columns=columns)
    if not len(chunk.indices):
        return None, [], chunk._replace(columns={})
    try:  # each good record encodes alone; together they may still disagree (e.g. str vs bytes)
        schema = Schema.infer(columns)
        return schema, encode_batch(schema, columns), chunk
    except Exception as e:  # noqa: BLE001
        rest = [failure(policy, i, p, "encode", e) for i, p in zip(chunk.indices, chunk.positions, strict=True)]
        return None, [], keep(chunk, np.zeros(len(chunk.indices), bool), rest)._replace(columns={})


class _Part:
    """An open ArrayRecord temp file of one schema, covering output positions ``[start, stop)``
    (its records plus its failed records); written locally, uploaded at close for remote paths."""

    def __init__(self, tmp_dir: str, shard: int, num_shards: int, start: int, compression: str):
        from array_record.python.array_record_module import ArrayRecordWriter

        self.shard, self.start, self.stop, self.schema = shard, start, start, None
        self.failures: list[dict] = []
        self.indices: list[int] | None = None  # kept only where the commit cannot derive them
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
        if self.schema is not None and schema != self.schema:
            raise RuntimeError(f"Part {self.path} mixes schemas")  # writers open a new part first
        self.schema = schema
        write = self.writer.write
        for rec in records:
            write(rec)
        return sum(map(len, records))

    def close(self) -> PartInfo:
        self.writer.close()
        size = os.path.getsize(self.local)
        if self.remote:
            with open(self.local, "rb") as src, FileSystems.create(self.path) as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
            shutil.rmtree(os.path.dirname(self.local), ignore_errors=True)
        errors = index_path = None
        if self.failures:
            errors = self.path + ".errors.jsonl"
            write_bytes(errors, dead_letter.dumps(sorted(self.failures, key=lambda f: f["position"])))
        if self.indices is not None and self.schema is not None:
            index_path = self.path + ".index.npy"
            save_array(index_path, np.asarray(self.indices, dtype=np.int64))
        schema = None if self.schema is None else self.schema.to_json()
        return PartInfo(self.shard, self.start, self.stop, self.path, size, schema,
                        len(self.failures), errors, index_path)


class _WriterBase(beam.DoFn):
    def __init__(self, tmp_dir: str, num_shards: int, compression: str, policy: ErrorPolicy = DEFAULT_POLICY):
        self._tmp_dir, self._num_shards, self._compression = tmp_dir, num_shards, compression
        self._policy = policy
        self._records = Metrics.counter(NAMESPACE, "records_written")
        self._failed = Metrics.counter(NAMESPACE, "records_failed")
        self._bytes = Metrics.counter(NAMESPACE, "bytes_written")
        self._encoded = Metrics.counter(NAMESPACE, "record_bytes_encoded")

    def _open(self, shard: int, start: int) -> _Part:
        return _Part(self._tmp_dir, shard, self._num_shards, start, self._compression)

    def _close(self, part: _Part) -> PartInfo:
        info = part.close()
        if _after_part_written is not None:
            _after_part_written(info)
        self._records.inc(info.stop - info.start - info.num_failed)
        self._failed.inc(info.num_failed)
        self._bytes.inc(info.num_bytes)
        return info


class WriteChunksFn(_WriterBase):
    """Writes chunks that arrive in position order per shard (the fused path) as parts.

    A part stays open while chunks continue it; a new shard, a gap or a chunk of another schema
    closes it. Beam's fusion keeps a shard's chunks in one bundle, so each shard is normally one
    part. Failed records are not written; their positions still belong to the part (its
    dead-letter entries), so shards are shorter by their failed records and nothing moves.
    """

    def start_bundle(self):
        self._part: _Part | None = None

    def process(self, chunk: Chunk):
        schema, records, chunk = encode_chunk(chunk, self._policy)
        lo, hi = chunk.span()
        if lo == hi:
            return
        part = self._part
        if part is not None and (part.shard != chunk.shard or part.stop != lo
                                 or (schema is not None and part.schema not in (None, schema))):
            yield self._close(part)
            part = None
        if part is None:
            part = self._part = self._open(chunk.shard, lo)
        if records:
            self._encoded.inc(part.write(schema, records))
        part.failures.extend(chunk.failures)
        part.stop = hi

    def finish_bundle(self):
        if self._part is not None:
            info, self._part = self._close(self._part), None
            yield GlobalWindows.windowed_value(info)


class AssignShardsFn(beam.DoFn):
    """Encodes an unassigned chunk and splits it by output shard (total count as side input).

    The total counts failed records too: shards are planned over every record read, and a
    record that failed leaves its shard one shorter (as on the fused path).
    """

    def __init__(self, num_shards: int, shuffle: bool, seed: int, policy: ErrorPolicy = DEFAULT_POLICY):
        self._num_shards, self._shuffle, self._seed = num_shards, shuffle, seed
        self._policy = policy
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
        schema, records, chunk = encode_chunk(chunk, self._policy)
        out_pos = chunk.positions if inverse is None else inverse[chunk.positions]
        shards = np.searchsorted(stops, out_pos, side="right")
        failures = [dict(f, position=int(f["position"] if inverse is None else inverse[f["position"]]))
                    for f in chunk.failures]
        failed_shards = np.searchsorted(stops, [f["position"] for f in failures], side="right")
        schema_json = None if schema is None else schema.to_json()
        for shard in np.unique(np.concatenate([shards, failed_shards]).astype(np.int64)):
            sel = np.flatnonzero(shards == shard)
            fails = [f for f, s in zip(failures, failed_shards, strict=True) if s == shard]
            yield int(shard), (out_pos[sel], [records[i] for i in sel], schema_json, fails, chunk.indices[sel])


class WriteGroupFn(_WriterBase):
    """Writes one shard's grouped records sorted by output position (one part per schema run);
    each part also stores its records' source indices (for the commit's schema check)."""

    def process(self, item):
        shard, pieces = item
        events = []  # (position, record, schema key, index) or (position, None, failure, None)
        schemas = {}
        for positions, records, schema_json, failures, indices in pieces:
            key = None if schema_json is None else json.dumps(schema_json, sort_keys=True)
            if key not in schemas:
                schemas[key] = None if schema_json is None else Schema.from_json(schema_json)
            events.extend(zip(positions.tolist(), records, [key] * len(records), indices.tolist(), strict=True))
            events.extend((f["position"], None, f, None) for f in failures)
        events.sort(key=lambda e: e[0])
        start = events[0][0]
        if [e[0] for e in events] != list(range(start, start + len(events))):
            raise RuntimeError(f"Shard {shard} received non-contiguous output positions")
        part, key = None, None
        for position, record, what, index in events:
            if part is None or (record is not None and part.schema is not None and what != key):
                if part is not None:
                    yield self._close(part)
                part = self._open(int(shard), position)
                part.indices = []
            if record is None:
                part.failures.append(what)
            else:
                key = what
                self._encoded.inc(part.write(schemas[key], [record]))
                part.indices.append(index)
            part.stop = position + 1
        yield self._close(part)


class WriteShards(beam.PTransform):
    """Writes chunks as a committed shard set; outputs ``shardset.json``'s text once.

    Args:
      commit: where and how to commit (`Commit`); ``commit.shard_sizes`` set means the chunks
        already carry their shard and contiguous positions (the fused, no-shuffle path).
      shuffle/seed: the global shuffle for chunks that still need shard assignment.
      total: a singleton PCollection of the record count (needed when not pre-assigned).
    """

    def __init__(self, commit: Commit, *, shuffle: bool = False, seed: int = 0, statistics=None,
                 policy: ErrorPolicy = DEFAULT_POLICY):
        super().__init__()
        self._commit, self._shuffle, self._seed, self._policy = commit, shuffle, seed, policy
        self._statistics = statistics  # singleton PCollection of statistics JSON to record, or None

    def expand(self, chunks):
        c = self._commit
        if c.shard_sizes is not None:
            parts = chunks | "WriteParts" >> beam.ParDo(
                WriteChunksFn(c.tmp_dir, c.num_shards, c.compression, self._policy))
        else:
            total = (chunks | "Sizes" >> beam.Map(lambda ch: len(ch.indices) + len(ch.failures))
                     | "Total" >> beam.CombineGlobally(sum))
            parts = (
                chunks
                | "AssignShards" >> beam.ParDo(
                    AssignShardsFn(c.num_shards, self._shuffle, self._seed, self._policy), beam.pvalue.AsSingleton(total))
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteGroups" >> beam.ParDo(
                    WriteGroupFn(c.tmp_dir, c.num_shards, c.compression, self._policy))
            )
        return (
            parts
            | "AllParts" >> beam.combiners.ToList()
            | "Commit" >> beam.ParDo(FinalizeShardsFn(c), **(
                {} if self._statistics is None else {"statistics": beam.pvalue.AsSingleton(self._statistics)}))
        )
