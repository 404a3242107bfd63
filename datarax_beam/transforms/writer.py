"""The shard writer: chunks -> ArrayRecord parts under temp names -> committed shard set.

The shard set's schema is fixed before the job starts (`Commit.schema`). Every chunk is encoded
against it on the worker that holds it (`datarax_beam.shards.fit.encode_fitting`): a record that
does not fit is a dead-letter entry of stage ``encode`` naming the feature and what was expected;
the others are written. Records reach the writer with their output positions. Shard ``s`` holds
the contiguous output positions of `readers.plan_tasks`. Two paths:

* chunks already carrying their shard (random-access sources) are encoded and written by
  `WriteChunksFn` in the fused read -> transform -> write stage — no GroupByKey of the payload;
* chunks from sequential/streaming readers are numbered with the total count (a side input),
  optionally permuted, grouped by shard, and each group is written sorted by position.

Both emit `PartInfo`s (tiny: path, range, size, SHA-256). A record that failed on the way (see
`dead_letter`) is not written; its position stays in its part as a dead-letter entry, so shards
are planned before failures are known and a shard is simply shorter by its failed records.
`commit.FinalizeShardsFn` sees all parts in one element and commits. All I/O goes through
`FileSystems`, so gs://, s3:// and test schemes work.

A writer uses more than one core: a pool of `writer_threads` compresses a chunk's records (zstd
releases the GIL) while the thread that runs the DoFn writes the previous chunk and goes on
reading and transforming the next; one more thread hashes (and uploads) finished parts. The
bytes written do not depend on any of it (`datarax_beam.shards.compress`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from concurrent import futures

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from datarax_beam.progress import Reporter
from datarax_beam.shards import shardset as ss
from datarax_beam.shards.checksum import sha256_file
from datarax_beam.shards.codec import Schema, SchemaError
from datarax_beam.shards.compress import RecordCompressor, default_threads
from datarax_beam.shards.fit import encode_fitting
from datarax_beam.shards.writer import ShardFileWriter, writing_thread
from datarax_beam.transforms import dead_letter, files
from datarax_beam.transforms.commit import Commit, FinalizeShardsFn, PartInfo
from datarax_beam.transforms.dead_letter import DEFAULT_POLICY, ErrorPolicy, failure, keep
from datarax_beam.transforms.readers import NAMESPACE, Chunk, plan_tasks


def output_permutation(seed: int, n: int) -> np.ndarray:
    """The global shuffle of ``materialize(shuffle=True)``: output position j holds record
    ``order[perm[j]]``. A function of (seed, n) only, so it is the same on every runner."""
    return np.random.default_rng([int(seed), 0x5348554646]).permutation(n)


#: Records per write of `WriteGroupFn` (compressed as one batch on the writer's threads).
_WRITE_BATCH = 1024

#: Test-only fault injection: called with each `PartInfo` after its file is written and before
#: the writer reports it (a worker dying there leaves an orphan temp part). None in production.
_after_part_written = None


def encode_chunk(chunk: Chunk, schema: Schema, policy: ErrorPolicy, note: str = "",
                 block: bool = False) -> tuple[list[bytes], Chunk]:
    """(encoded records that fit ``schema``, the chunk with the misfits moved to its failures).

    ``note`` is appended to each misfit's message (where the schema came from); ``block``: the
    records may be one `FixedRecords` buffer (written here, never pickled)."""
    if not len(chunk.indices):
        return [], chunk._replace(columns={})
    records, good, problems = encode_fitting(schema, chunk.columns, block)
    if problems:
        failures = [failure(policy, chunk.indices[r], chunk.positions[r], "encode", SchemaError(p + note))
                    for r, p in sorted(problems.items())]
        chunk = keep(chunk, good, failures)
    return records, chunk


class _Part:
    """An open ArrayRecord temp file covering output positions ``[start, stop)`` (its records
    plus its failed records); written locally, uploaded at close for remote paths.

    `write` hands a batch to ``compressor``'s threads and ``writing``'s thread
    (`ShardFileWriter`); `close` returns a future of its `PartInfo`: the rest of the file is
    written, closed, hashed (and uploaded) on ``finisher`` while the worker goes on with the next
    part.
    """

    def __init__(self, tmp_dir: str, shard: int, num_shards: int, start: int, compression: str,
                 compressor: RecordCompressor, finisher: futures.ThreadPoolExecutor, group_size: int = 1,
                 writing: futures.ThreadPoolExecutor | None = None):
        self.shard, self.start, self.stop = shard, start, start
        self.failures: list[dict] = []
        name = f"{ss.shard_name(shard, num_shards)}.{start}.{uuid.uuid4().hex}"
        self.path = ss.join(tmp_dir, name)
        self.remote = not files.is_local(tmp_dir)
        if self.remote:
            self.local = os.path.join(tempfile.mkdtemp(prefix="datarax-part-"), name)
        else:
            os.makedirs(tmp_dir, exist_ok=True)
            self.local = self.path
        self.writer = ShardFileWriter(self.local, compression, compressor, group_size, writing)
        self._finisher = finisher

    def write(self, records: list[bytes]) -> int:
        """Stores codec records (compressed while the caller goes on); returns their codec bytes."""
        return self.writer.write(records)

    def close(self) -> futures.Future:
        """A future of the `PartInfo`: what is pending is written, the file closed and hashed
        on the finisher thread (the caller goes on with the next part meanwhile)."""
        return self._finisher.submit(self._finish)

    def _finish(self) -> PartInfo:
        self.writer.close()
        size = os.path.getsize(self.local)
        digest = sha256_file(self.local)
        if self.remote:
            files.upload(self.local, self.path)
            shutil.rmtree(os.path.dirname(self.local), ignore_errors=True)
        errors = None
        if self.failures:
            errors = self.path + ".errors.jsonl"
            files.write_bytes(errors, dead_letter.dumps(sorted(self.failures, key=lambda f: f["position"])))
        return PartInfo(self.shard, self.start, self.stop, self.path, size, digest, len(self.failures), errors)


class _WriterBase(beam.DoFn):
    """Shared by the writers, per DoFn instance: a compression pool, a thread that writes
    records (parts one after the other) and a thread that closes and hashes finished parts;
    parts are reported once their files are hashed."""

    def __init__(self, commit: Commit, policy: ErrorPolicy = DEFAULT_POLICY):
        self._tmp_dir, self._num_shards, self._compression = commit.tmp_dir, commit.num_shards, commit.compression
        self._threads, self._group_size = commit.writer_threads, commit.group_size
        self._schema_json, self._note, self._policy = commit.schema, commit.schema_note, policy
        self._records = Metrics.counter(NAMESPACE, "records_written")
        self._failed = Metrics.counter(NAMESPACE, "records_failed")
        self._bytes = Metrics.counter(NAMESPACE, "bytes_written")
        self._encoded = Metrics.counter(NAMESPACE, "record_bytes_encoded")
        self._progress = Reporter(commit.tmp_dir)  # records done, for the driver's progress display

    def setup(self):
        self._schema = Schema.from_json(self._schema_json)

    def _start_threads(self):
        # here, not in setup(): subclasses that override setup() still get them
        if getattr(self, "_compressor", None) is None:
            self._compressor = RecordCompressor(self._compression, self._threads or default_threads())
            self._finisher = futures.ThreadPoolExecutor(1, thread_name_prefix="datarax_beam-finish")
            self._writing = writing_thread()

    def teardown(self):
        if getattr(self, "_compressor", None) is not None:
            self._finisher.shutdown(wait=True)  # (closing a part waits for its writes)
            self._writing.shutdown(wait=True)
            self._compressor.close()
            self._compressor = None

    def start_bundle(self):
        self._start_threads()
        self._closing: list[futures.Future] = []

    def _encode(self, chunk: Chunk) -> tuple[list[bytes], Chunk]:
        return encode_chunk(chunk, self._schema, self._policy, self._note, block=True)

    def _open(self, shard: int, start: int) -> _Part:
        return _Part(self._tmp_dir, shard, self._num_shards, start, self._compression, self._compressor, self._finisher,
                     self._group_size, self._writing)

    def _close(self, part: _Part) -> None:
        self._closing.append(part.close())

    def _closed(self, wait: bool):
        """The `PartInfo`s of parts whose files are complete (all of them with ``wait``)."""
        done = [f for f in self._closing if wait or f.done()]
        self._closing = [f for f in self._closing if f not in done]
        for f in done:
            info = f.result()
            if _after_part_written is not None:
                _after_part_written(info)
            self._records.inc(info.stop - info.start - info.num_failed)
            self._failed.inc(info.num_failed)
            self._bytes.inc(info.num_bytes)
            yield info

    def finish_bundle(self):
        self._progress.flush()
        for info in self._closed(wait=True):
            yield GlobalWindows.windowed_value(info)


class WriteChunksFn(_WriterBase):
    """Writes chunks that arrive in position order per shard (the fused path) as parts.

    A part stays open while chunks continue it; a new shard or a gap closes it. Beam's fusion
    keeps a shard's chunks in one bundle, so each shard is normally one part. Failed records are
    not written; their positions still belong to the part (its dead-letter entries), so shards
    are shorter by their failed records and nothing moves.
    """

    def start_bundle(self):
        super().start_bundle()
        self._part: _Part | None = None

    def process(self, chunk: Chunk):
        yield from self._closed(wait=False)
        records, chunk = self._encode(chunk)
        lo, hi = chunk.span()
        if lo == hi:
            return
        part = self._part
        if part is not None and (part.shard != chunk.shard or part.stop != lo):
            self._close(part)
            part = None
        if part is None:
            part = self._part = self._open(chunk.shard, lo)
        self._encoded.inc(part.write(records))
        part.failures.extend(chunk.failures)
        part.stop = hi
        self._progress.add(len(records), len(chunk.failures))

    def finish_bundle(self):
        if self._part is not None:
            self._close(self._part)
            self._part = None
        yield from super().finish_bundle()


class AssignShardsFn(beam.DoFn):
    """Encodes an unassigned chunk and splits it by output shard (total count as side input).

    The total counts failed records too: shards are planned over every record read, and a
    record that failed leaves its shard one shorter (as on the fused path).
    """

    def __init__(self, commit: Commit, shuffle: bool, seed: int, policy: ErrorPolicy = DEFAULT_POLICY):
        self._num_shards, self._shuffle, self._seed = commit.num_shards, shuffle, seed
        self._schema_json, self._note, self._policy = commit.schema, commit.schema_note, policy
        self._cache: tuple[int, np.ndarray | None, np.ndarray] | None = None

    def setup(self):
        self._schema = Schema.from_json(self._schema_json)

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
        records, chunk = encode_chunk(chunk, self._schema, self._policy, self._note)
        out_pos = chunk.positions if inverse is None else inverse[chunk.positions]
        shards = np.searchsorted(stops, out_pos, side="right")
        failures = [dict(f, position=int(f["position"] if inverse is None else inverse[f["position"]]))
                    for f in chunk.failures]
        failed_shards = np.searchsorted(stops, [f["position"] for f in failures], side="right")
        for shard in np.unique(np.concatenate([shards, failed_shards]).astype(np.int64)):
            sel = np.flatnonzero(shards == shard)
            fails = [f for f, s in zip(failures, failed_shards, strict=True) if s == shard]
            yield int(shard), (out_pos[sel], [records[i] for i in sel], fails)


class WriteGroupFn(_WriterBase):
    """Writes one shard's grouped records sorted by output position, as one part."""

    def process(self, item):
        yield from self._closed(wait=False)
        shard, pieces = item
        events = []  # (position, record or None, failure or None)
        for positions, records, failures in pieces:
            events.extend((p, r, None) for p, r in zip(positions.tolist(), records, strict=True))
            events.extend((f["position"], None, f) for f in failures)
        events.sort(key=lambda e: e[0])
        start = events[0][0]
        if [e[0] for e in events] != list(range(start, start + len(events))):
            raise RuntimeError(f"Shard {shard} received non-contiguous output positions")
        part = self._open(int(shard), start)
        records = [record for _, record, _ in events if record is not None]
        part.failures.extend(entry for _, record, entry in events if record is None)
        for a in range(0, len(records), _WRITE_BATCH):  # batches: compressed while one is written
            self._encoded.inc(part.write(records[a : a + _WRITE_BATCH]))
        part.stop = start + len(events)
        self._progress.add(sum(e[1] is not None for e in events), sum(e[1] is None for e in events))
        self._close(part)


class WriteShards(beam.PTransform):
    """Writes chunks as a committed shard set; outputs ``shardset.json``'s text once.

    Args:
      commit: where and how to commit (`Commit`, with the fixed schema); ``commit.shard_sizes``
        set means the chunks already carry their shard and contiguous positions (the fused,
        no-shuffle path).
      shuffle/seed: the global shuffle for chunks that still need shard assignment.
      statistics: a singleton PCollection of statistics JSON to record, or None.
      policy: what a misfit record does (`ErrorPolicy`).
    """

    def __init__(self, commit: Commit, *, shuffle: bool = False, seed: int = 0, statistics=None,
                 policy: ErrorPolicy = DEFAULT_POLICY):
        super().__init__()
        if commit.schema is None:
            raise ValueError("WriteShards needs the shard set's schema fixed in `commit.schema`")
        self._commit, self._shuffle, self._seed, self._policy = commit, shuffle, seed, policy
        self._statistics = statistics

    def expand(self, chunks):
        c = self._commit
        if c.shard_sizes is not None:
            parts = chunks | "WriteParts" >> beam.ParDo(WriteChunksFn(c, self._policy))
        else:
            total = (chunks | "Sizes" >> beam.Map(lambda ch: len(ch.indices) + len(ch.failures))
                     | "Total" >> beam.CombineGlobally(sum))
            parts = (
                chunks
                | "AssignShards" >> beam.ParDo(
                    AssignShardsFn(c, self._shuffle, self._seed, self._policy), beam.pvalue.AsSingleton(total))
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteGroups" >> beam.ParDo(WriteGroupFn(c, self._policy))
            )
        # The commit runs once (on an Impulse) with every part as a list side input: empty when
        # nothing was written. Cheaper to build and run than a ToList combine of the parts.
        side = {"parts": beam.pvalue.AsList(parts)}
        if self._statistics is not None:
            side["statistics"] = beam.pvalue.AsSingleton(self._statistics)
        return chunks.pipeline | "Once" >> beam.Impulse() | "Commit" >> beam.ParDo(FinalizeShardsFn(c), **side)
