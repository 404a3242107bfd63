"""Writing one shard file (local path) and a whole shard set without Beam.

`ShardFileWriter` is the one way records reach a shard file: codec records in, stored records
(see `datarax_beam.shards.compress`) written; the Beam writer (`datarax_beam.transforms`) keeps
one open per part. `write_shard_file` writes a whole file; `write_shardset` is the plain-Python
writer of a whole set, for tests and small jobs.
"""

from __future__ import annotations

import collections
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent import futures
from typing import Any

import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.shards.checksum import sha256_file
from datarax_beam.shards.codec import Schema, encode_batch, records_nbytes
from datarax_beam.shards.compress import RecordCompressor, default_threads, group_size_for
from datarax_beam.shards.shardset import (
    SHARDSET_FILE,
    ShardInfo,
    ShardSet,
    shard_name,
    writer_options,
)
from datarax_beam.version import __version__

#: Most batches a writer has in flight (compressing, or waiting for the writing thread) ...
LOOKAHEAD_BATCHES = 4
#: ... and most codec bytes those batches may hold (large records: fewer batches in flight).
LOOKAHEAD_BYTES = 64 << 20


class ShardFileWriter:
    """An ArrayRecord shard file being written at a local ``path``.

    `write` takes codec records (`encode_batch`'s output) and stores them as ``compression``
    says: for ``zstd`` each batch is compressed on ``compressor``'s threads into riegeli chunks
    that are ``uncompressed``. Records reach the file on ``writer_thread``, batch after batch in
    order, so the caller goes on with its next batches meanwhile (at most `LOOKAHEAD_BATCHES`
    batches and `LOOKAHEAD_BYTES` codec bytes in flight). ``ArrayRecordWriter.write`` holds the
    GIL: on the calling thread it kept the caller's own Python work waiting (measured: the
    in-process job of docs/benchmarks.md ran 10% faster with a writing thread). The bytes of
    the file do not depend on the threads or on how records were split into batches.

    Args:
      path: a local file path.
      compression: one of `COMPRESSIONS`.
      compressor: a shared `RecordCompressor` of ``compression`` (its pool outlives this file);
        default: one of `default_threads` threads, closed with the file.
      group_size: records per riegeli chunk (`datarax_beam.shards.compress.group_size_for`).
      writer_thread: a shared single-thread executor that writes (a writer's files are then
        written one after the other); default: one of its own, shut down with the file.

    Example:
      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "x.array_record")
      >>> w = ShardFileWriter(path)
      >>> w.write([bytes(100), b"abc"])
      103
      >>> w.close()
      2
    """

    def __init__(self, path: str, compression: str = "zstd", compressor: RecordCompressor | None = None,
                 group_size: int = 1, writer_thread: futures.ThreadPoolExecutor | None = None):
        from array_record.python.array_record_module import ArrayRecordWriter

        if compressor is not None and compressor.compression != compression:
            raise ValueError(f"The compressor compresses {compressor.compression!r}, the file {compression!r}")
        self._owned = compressor is None
        self._compressor = compressor or RecordCompressor(compression, default_threads())
        self._own_thread = writer_thread is None
        self._thread = writer_thread or writing_thread()
        self._writer = ArrayRecordWriter(path, writer_options(compression, group_size))
        self._pending: collections.deque = collections.deque()  # (future of a batch written, codec bytes)
        self._pending_bytes = 0
        self.count = 0

    def write(self, records: Sequence[bytes]) -> int:
        """Stores codec records: starts compressing them and queues them for writing; waits
        while more than `LOOKAHEAD_BATCHES` batches (or `LOOKAHEAD_BYTES`) are in flight.
        Returns their codec bytes.

        Raises what compressing or writing an earlier batch raised."""
        nbytes = records_nbytes(records)
        batch = self._compressor.submit(records)
        self._pending.append((self._thread.submit(lambda: self._write(batch.result())), nbytes))
        self._pending_bytes += nbytes
        while len(self._pending) > 1 and (len(self._pending) > LOOKAHEAD_BATCHES
                                          or self._pending_bytes > LOOKAHEAD_BYTES):
            self._wait_oldest()
        return nbytes

    def write_stored(self, stored: Iterable[bytes]) -> None:
        """Writes records already in stored form (another shard file's, joined unchanged), on
        the calling thread once the batches in flight are written."""
        self._flush()
        self._write(stored)

    def _write(self, stored: Iterable[bytes]) -> None:
        write, count = self._writer.write, 0
        for rec in stored:
            write(rec)
            count += 1
        self.count += count

    def _wait_oldest(self) -> None:
        done, nbytes = self._pending.popleft()
        self._pending_bytes -= nbytes
        done.result()

    def _flush(self) -> None:
        while self._pending:
            self._wait_oldest()

    def close(self) -> int:
        """Writes what is in flight and closes the file; returns the records written.

        Raises what compressing or writing a batch raised (the file is closed all the same)."""
        try:
            self._flush()
        finally:
            futures.wait([f for f, _ in self._pending])  # after an error: the rest is done with
            self._pending.clear()
            try:
                self._writer.close()
            finally:
                if self._own_thread:
                    self._thread.shutdown(wait=True)
                if self._owned:
                    self._compressor.close()
        return self.count


def writing_thread() -> futures.ThreadPoolExecutor:
    """A thread that writes records to files, for `ShardFileWriter`'s ``writer_thread``."""
    return futures.ThreadPoolExecutor(1, thread_name_prefix="datarax_beam-write")


def write_shard_file(path: str, records: Iterable[bytes], compression: str = "zstd", *,
                     stored: bool = False, threads: int | None = None,
                     batch: int = 1024, group_size: int = 1) -> tuple[int, int]:
    """Writes records to an ArrayRecord file at a local ``path``; returns (records, file bytes).

    ``records`` are codec records, or with ``stored=True`` records in stored form (read from
    another shard of the same compression) that are written unchanged.
    """
    compressor = RecordCompressor(compression, threads or default_threads())
    writer = ShardFileWriter(path, compression, compressor, group_size)
    try:
        if stored:
            writer.write_stored(records)
        else:
            for piece in _batches(records, batch):
                writer.write(piece)
    finally:
        count = writer.close()
        compressor.close()
    return count, os.path.getsize(path)


def _batches(records: Iterable[bytes], size: int) -> Iterable[list[bytes]]:
    piece: list[bytes] = []
    for rec in records:
        piece.append(rec)
        if len(piece) == size:
            yield piece
            piece = []
    if piece:
        yield piece


def write_shardset(
    directory: str,
    batch: Mapping[str, Any],
    *,
    num_shards: int = 1,
    compression: str = "zstd",
    fingerprint: str = "",
    seed: int = 0,
    statistics: Mapping[str, Any] | None = None,
    threads: int | None = None,
) -> ShardSet:
    """Writes a columnar batch as ``num_shards`` contiguous shards plus ``shardset.json``.

    Example:
      >>> import tempfile, numpy as np
      >>> d = tempfile.mkdtemp()
      >>> write_shardset(d, {"x": np.arange(10, dtype=np.int32)}, num_shards=2).num_records
      10
    """
    os.makedirs(directory, exist_ok=True)
    n = cols.num_rows(batch)
    schema = Schema.infer(batch)
    infos = []
    for i, part in enumerate(np.array_split(np.arange(n), num_shards)):
        records = encode_batch(schema, cols.take(batch, part)) if len(part) else []
        name = shard_name(i, num_shards)
        tmp = os.path.join(directory, f".tmp-{name}")
        count, size = write_shard_file(tmp, records, compression, threads=threads,
                                       group_size=group_size_for(schema.record_nbytes))
        digest = sha256_file(tmp)
        os.replace(tmp, os.path.join(directory, name))
        infos.append(ShardInfo(name, count, size, digest))
    shardset = ShardSet(
        path=directory, shards=tuple(infos), schema=schema, compression=compression, seed=seed,
        fingerprint=fingerprint, statistics=statistics, versions={"datarax_beam": __version__},
        job_id=uuid.uuid4().hex,
    )
    commit(shardset)
    return shardset


def commit(shardset: ShardSet) -> None:
    """Validates ``shardset`` and writes ``shardset.json`` (atomically, last) to a local directory."""
    shardset.validate()
    path = os.path.join(shardset.path, SHARDSET_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(shardset.dumps())
    os.replace(tmp, path)


