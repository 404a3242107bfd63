"""Record-level compression: every record is compressed on its own, on a pool of threads.

ArrayRecord's own (riegeli chunk) compression runs inside ``ArrayRecordWriter.write``, which
holds the GIL: one thread compresses everything. Compressing records ourselves with ``zstandard``
(which releases the GIL) lets a writer use several cores, and a reader decompress on its read
threads, while the file stays a plain ArrayRecord file of ``uncompressed`` riegeli chunks.

Stored layout of one record (``compression="zstd"``, see ``docs/format.md``)::

    tag (1 byte) + payload
    tag 0x00: payload is the codec bytes as they are (compression would not make them smaller)
    tag 0x01: payload is one zstd frame (with its content size) of the codec bytes

Each record is compressed independently with fixed parameters, so the bytes do not depend on the
number of threads, the batch a record was in, the worker or the runner. The file's riegeli chunks
are then ``uncompressed``. With ``compression="uncompressed"`` records are the codec bytes,
untagged. ``"brotli"`` and ``"snappy"`` keep ArrayRecord's own chunk compression (records untagged,
compressed by riegeli inside ``ArrayRecordWriter.write``: one thread, as before).

Example:
  >>> c = RecordCompressor("zstd", threads=2)
  >>> records = [bytes(100), b"abc"]
  >>> stored = c.compress(records)
  >>> [s[0] for s in stored], decompress("zstd", stored) == records
  ([1, 0], True)
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Sequence
from concurrent import futures

import numpy as np

from datarax_beam.shards.codec import FixedRecords

#: What ``shardset.json``'s ``compression`` may say for sets of this format.
COMPRESSIONS = ("zstd", "brotli", "snappy", "uncompressed")
#: Compressions applied to each record by us (tagged frames); the others pass records through.
RECORD_LEVEL = ("zstd",)
#: zstd level of ``compression="zstd"`` (zstd's default: a good speed/size balance).
ZSTD_LEVEL = 3
#: The ArrayRecord writer options of ``compression="zstd"`` shards: one record per riegeli chunk
#: (random access without decoding neighbours), no riegeli-level compression.
WRITER_OPTIONS = "group_size:1,uncompressed"
#: Most compression threads a writer starts by default (see `default_threads`).
MAX_DEFAULT_THREADS = 4
#: Fewest records in a task handed to a compression thread. A batch is split into one task per
#: thread: each task takes the GIL back only to start and to return its records, so a busy
#: writer thread does not hold up many small tasks (measured: tasks of 64 records ran 25% slower).
_MIN_TASK_RECORDS = 64

#: Largest ratio of a zstd frame's declared content size to the frame's size: a zstd block
#: of at most 128 KiB costs at least 4 bytes. A frame declaring more is corrupt (and is refused
#: before anything that large is allocated).
_MAX_RATIO = 1 << 15

RAW = 0
ZSTD = 1
_TAGS = (b"\x00", b"\x01")

_local = threading.local()
_MULTI = False  # zstandard's C backend: compress a task's records in one call (`_compress_all`)
_MULTI_D = False  # ... and decompress a batch's frames in one call (`_decompress_all`)


def _compressor():
    global _MULTI
    c = getattr(_local, "compressor", None)
    if c is None:
        import zstandard

        c = _local.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        _MULTI = zstandard.backend == "cext"
    return c


def _decompressor():
    global _MULTI_D
    d = getattr(_local, "decompressor", None)
    if d is None:
        import zstandard

        d = _local.decompressor = zstandard.ZstdDecompressor()
        _MULTI_D = zstandard.backend == "cext"
    return d


class StoredRecordError(ValueError):
    """A stored record cannot be decompressed (unknown tag, corrupt or truncated zstd frame)."""


def check_compression(compression: str) -> str:
    if compression not in COMPRESSIONS:
        raise ValueError(f"Unknown compression {compression!r}; expected one of {COMPRESSIONS}")
    return compression


#: Most bytes of small records grouped into one riegeli chunk (see `group_size_for`).
GROUP_BYTES = 4096
#: Most records per riegeli chunk.
MAX_GROUP_SIZE = 256


def group_size_for(record_bytes: int | None) -> int:
    """Records per riegeli chunk for records of ``record_bytes`` codec bytes (None: sizes vary).

    One record per chunk (``group_size:1``) costs a chunk header and a footer entry per record:
    for a 40-byte record that is 3.7 us to write and doubles the file. Records of a fixed size
    under `GROUP_BYTES` / 2 are grouped: the largest power of two ``g`` (at most
    `MAX_GROUP_SIZE`) with ``g * record_bytes <= GROUP_BYTES``, so reading any one record still
    reads at most one 4 KiB chunk (measured on 45-byte records: writes 5x faster, random reads
    3x faster, the file half the size). Records whose size varies, or is unknown, keep one per
    chunk. The choice is made once per job from the schema, so every worker writes the same bytes.

    Example:
      >>> group_size_for(40), group_size_for(3136), group_size_for(None)
      (64, 1, 1)
    """
    if record_bytes is None or record_bytes <= 0:
        return 1
    g = 1
    while g * 2 <= MAX_GROUP_SIZE and g * 2 * record_bytes <= GROUP_BYTES:
        g *= 2
    return g


def riegeli_options(compression: str, group_size: int = 1) -> str:
    """The ``ArrayRecordWriter`` options of shards of ``compression``: riegeli chunks are
    ``uncompressed`` where records are compressed by us (``zstd``), else ``compression``."""
    chunks = "uncompressed" if check_compression(compression) in RECORD_LEVEL else compression
    return f"group_size:{group_size},{chunks}"


def default_threads(cores: int | None = None) -> int:
    """Compression threads of a writer by default: one per core, at most 4 (at least 1);
    ``cores``: the cores the writer's process may use (default: this machine's)."""
    return max(1, min(MAX_DEFAULT_THREADS, cores or os.cpu_count() or 1))


#: The interpreter's GIL switch interval while a writer runs (`switch_interval`); Python's is 5 ms.
SWITCH_INTERVAL = 0.001
_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved = 0.005


@contextlib.contextmanager
def switch_interval(seconds: float = SWITCH_INTERVAL):
    """Lowers the interpreter's GIL switch interval to ``seconds`` while the block runs.

    A writer's compression threads take the GIL only to pick a batch up and to hand it back,
    but the thread writing records (``ArrayRecordWriter.write`` holds the GIL) lets go of it
    only when the interval expires: at Python's 5 ms, every hand-over waited up to 5 ms and
    the writer then waited for its compressed batch. At 1 ms an in-process 100k-record job ran
    14% faster (median of 4, the benchmark of docs/benchmarks.md). Nested and concurrent blocks
    share one setting; the last to leave restores the interval found by the first.

    Example:
      >>> import sys
      >>> before = sys.getswitchinterval()
      >>> with switch_interval(0.002):
      ...     sys.getswitchinterval()
      0.002
      >>> sys.getswitchinterval() == before
      True
    """
    global _switch_users, _switch_saved
    with _switch_lock:
        if _switch_users == 0:
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(seconds, _switch_saved))
        _switch_users += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


def compress_one(record: bytes) -> bytes:
    """The stored form of one record under ``compression="zstd"``."""
    return _compress_all([record])[0]


def _compress_all(records: Sequence[bytes]) -> list[bytes]:
    """The stored forms of ``records``: compressed in one call that releases the GIL once (not
    once per record: a thread that takes the GIL back for every record waits behind a busy
    main thread for up to the switch interval each time)."""
    if not len(records):
        return []  # (multi_compress_to_buffer refuses an empty list)
    c = _compressor()
    if _MULTI and isinstance(records, FixedRecords):  # one buffer in, no object per record
        import zstandard

        n, size = len(records), records.size
        segments = np.empty((n, 2), dtype=np.uint64)
        segments[:, 0] = np.arange(n, dtype=np.uint64) * size
        segments[:, 1] = size
        data = records.buffer()
        result = c.multi_compress_to_buffer(zstandard.BufferWithSegments(data, segments.tobytes()), threads=1)
        zstd, raw = _TAGS[ZSTD], _TAGS[RAW]
        out = []
        for i in range(n):
            f = result[i]
            out.append(zstd + f if len(f) < size else raw + data[i * size : (i + 1) * size])
        return out
    if _MULTI:
        result = c.multi_compress_to_buffer(list(records), threads=1)
        frames = [result[i] for i in range(len(result))]
    else:  # a zstandard backend without it (cffi)
        frames = [c.compress(r) for r in records]
    zstd, raw = _TAGS[ZSTD], _TAGS[RAW]
    return [zstd + f if len(f) < len(r) else raw + r for r, f in zip(records, frames, strict=True)]


def decompress_one(stored: bytes) -> bytes:
    """The codec bytes of one stored record (``compression="zstd"``).

    Raises:
      StoredRecordError: the record is empty, has an unknown tag or a corrupt zstd frame.
    """
    if not stored:
        raise StoredRecordError("A stored record is empty: it lacks its 1-byte compression tag")
    tag = stored[0]
    if tag == ZSTD:
        import zstandard

        frame = memoryview(stored)[1:]
        try:
            size = zstandard.frame_content_size(frame)
            if not 0 <= size <= _MAX_RATIO * len(frame):
                raise StoredRecordError(
                    f"A stored record's zstd frame is corrupt: it declares "
                    f"{'no' if size < 0 else size} content size in {len(frame)} bytes")
            return _decompressor().decompress(frame)
        except zstandard.ZstdError as e:
            raise StoredRecordError(f"A stored record's zstd frame is corrupt: {e}") from None
    if tag == RAW:
        return bytes(memoryview(stored)[1:])
    raise StoredRecordError(f"A stored record has unknown compression tag {tag}; expected 0 (raw) or 1 (zstd)")


def decompress(compression: str, records: Sequence[bytes], where: str | None = None,
               positions: Sequence[int] | None = None) -> list[bytes]:
    """The codec bytes of stored records (on the calling thread; zstd releases the GIL).

    Args:
      compression: the shard set's ``compression``; only ``zstd`` records are ours to
        decompress (riegeli undid the others).
      records: stored records, as the ArrayRecord reader returns them.
      where, positions: name the shard and each record's index in it in errors.

    Raises:
      StoredRecordError: naming ``where`` and the record's position (or index in ``records``).
    """
    if check_compression(compression) not in RECORD_LEVEL:
        return list(records)
    fast = _decompress_all(records)
    if fast is not None:
        return fast
    out = []  # the error path (or no batch decompression): find and name the bad record
    for k, r in enumerate(records):
        try:
            out.append(decompress_one(r))
        except StoredRecordError as e:
            index = positions[k] if positions is not None else k
            raise StoredRecordError(f"{where or 'A shard'}, record {index}: {e}") from None
    return out


def _decompress_all(records: Sequence[bytes]) -> list[bytes] | None:
    """The codec bytes of well-formed stored records, their frames decompressed in one call that
    releases the GIL once (see `_compress_all`); None when a record is not well formed (the
    caller then finds and names it) or batch decompression is not available."""
    import zstandard

    _decompressor()
    if not _MULTI_D or not records:
        return None if records else []
    frames, zstd = [], []
    size_of, ratio = zstandard.frame_content_size, _MAX_RATIO
    try:
        for r in records:
            tag = r[0]
            if tag == ZSTD:
                frame = memoryview(r)[1:]
                if not 0 <= size_of(frame) <= ratio * len(frame):
                    return None
                frames.append(frame)
                zstd.append(True)
            elif tag == RAW:
                zstd.append(False)
            else:
                return None
        result = _decompressor().multi_decompress_to_buffer(frames, threads=1) if frames else ()
    except (IndexError, zstandard.ZstdError):  # an empty record; a corrupt frame
        return None
    payloads = iter([result[i].tobytes() for i in range(len(result))])
    return [next(payloads) if z else r[1:] for r, z in zip(records, zstd, strict=True)]


class RecordCompressor:
    """Compresses batches of records, in order, on ``threads`` threads.

    Args:
      compression: ``"zstd"``; any other of `COMPRESSIONS` passes records through (riegeli
        compresses them, or nothing does).
      threads: threads compressing at once (1: on the calling thread, no pool).

    `compress` returns the stored records; `submit` returns a future of them, so a writer can
    hand the next batch over before it writes the current one.
    """

    def __init__(self, compression: str = "zstd", threads: int = 1):
        self.compression = check_compression(compression)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"`threads` must be an int >= 1, got {threads!r}")
        self.threads = threads
        self._pool: futures.ThreadPoolExecutor | None = None

    def _executor(self) -> futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = futures.ThreadPoolExecutor(self.threads, thread_name_prefix="datarax_beam-compress")
        return self._pool

    def submit(self, records: Sequence[bytes]) -> _Batch:
        """Starts compressing ``records``; ``.result()`` gives the stored records in order."""
        if self.compression not in RECORD_LEVEL:
            return _Batch([], list(records))
        if self.threads == 1 or len(records) <= _MIN_TASK_RECORDS:
            return _Batch([], _compress_all(records))
        pool = self._executor()
        step = max(_MIN_TASK_RECORDS, -(-len(records) // self.threads))
        tasks = [pool.submit(_compress_all, records[s : s + step]) for s in range(0, len(records), step)]
        return _Batch(tasks, None)

    def compress(self, records: Sequence[bytes]) -> list[bytes]:
        return self.submit(records).result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __getstate__(self):
        return {"compression": self.compression, "threads": self.threads}

    def __setstate__(self, state):
        self.__init__(state["compression"], state["threads"])


class _Batch:
    """The pending result of `RecordCompressor.submit`."""

    def __init__(self, tasks: list[futures.Future], done: list[bytes] | None):
        self._tasks, self._done = tasks, done

    def result(self) -> list[bytes]:
        if self._done is None:
            out: list[bytes] = []
            for t in self._tasks:
                out.extend(t.result())
            self._done, self._tasks = out, []
        return self._done


__all__ = ["COMPRESSIONS", "RECORD_LEVEL", "WRITER_OPTIONS", "ZSTD_LEVEL", "RecordCompressor",
           "StoredRecordError", "check_compression", "compress_one", "group_size_for", "decompress", "decompress_one",
           "default_threads", "riegeli_options", "switch_interval"]
