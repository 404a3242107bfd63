"""Remote shards read by byte ranges into a bounded local cache, for the unmodified C++ reader.

array_record's reader opens local files only, and reads exactly three regions of one: the
postscript (the last 64 KiB block), the footer (the chunk offsets) and, for the records asked
for, their chunks (with ``readahead_buffer_size:0`` each chunk on its own). So a remote shard is
mirrored by a *sparse* local file of the same size in which only those regions are present:

* the postscript and the footer are fetched when the shard is opened; the footer is parsed here
  (a Riegeli simple chunk of ``ArrayRecordFooter`` protos, see ``docs/format.md``) to learn
  where each chunk lies;
* before a read, the 4 KiB pages covering the chunks of the asked-for records are fetched with
  ranged reads (`datarax_beam.shards.fs.RangeReader`), runs of pages in one request;
* pages are kept in an LRU of at most ``max_bytes``; evicted pages are given back to the file
  system with ``fallocate(PUNCH_HOLE)``, so the bound holds on disk. Pages of reads in flight are
  pinned (the cache may exceed the bound by those).

Riegeli checks every chunk's hashes when it decodes it, so a page that is missing reads as
zeros and fails loudly; it never decodes to other records. Each process keeps its own files
(removed at exit): pages of one process are never punched out under another's reader.
"""

from __future__ import annotations

import atexit
import collections
import ctypes
import os
import shutil
import struct
import threading
import uuid
from collections.abc import Callable

import numpy as np

BLOCK = 1 << 16
BLOCK_HEADER = 24
CHUNK_HEADER = 40
PAGE = 4096
_MAGIC = 0x71930E704FDAE05E
_PUNCH_HOLE = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE


class FormatError(OSError):
    """A remote shard's ArrayRecord index cannot be parsed."""


# -- the ArrayRecord index ----------------------------------------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise FormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _unblock(data: bytes, start: int) -> bytes:
    """File bytes ``[start, start + len(data))`` without the 24-byte block headers."""
    out, pos, end = [], start, start + len(data)
    while pos < end:
        if pos % BLOCK == 0:
            pos += BLOCK_HEADER
            continue
        stop = min(end, (pos // BLOCK + 1) * BLOCK)
        out.append(data[pos - start : stop - start])
        pos = stop
    return b"".join(out)


_CODECS = {ord("z"): "zstd", ord("b"): "brotli", ord("s"): "snappy"}


def _decompress(kind: int, data: bytes) -> bytes:
    if kind == 0:
        return data
    if kind not in _CODECS:
        raise FormatError(f"unknown Riegeli compression {kind:#x} in a shard's index")
    import pyarrow as pa

    size, pos = _varint(data, 0)
    return pa.Codec(_CODECS[kind]).decompress(data[pos:], decompressed_size=size).to_pybytes()


def _records(chunk: bytes) -> list[bytes]:
    """The records of a Riegeli simple chunk (header + data, block headers removed)."""
    if len(chunk) < CHUNK_HEADER + 1:
        raise FormatError("truncated chunk")
    _, data_size, _, type_and_count, _ = struct.unpack_from("<QQQQQ", chunk)
    kind, count = type_and_count & 0xFF, type_and_count >> 8
    if kind != ord("r"):
        raise FormatError(f"expected a simple chunk ('r'), got chunk type {kind:#x}")
    data = chunk[CHUNK_HEADER : CHUNK_HEADER + data_size]
    compression = data[0]
    sizes_size, pos = _varint(data, 1)
    sizes_raw = _decompress(compression, data[pos : pos + sizes_size])
    values = _decompress(compression, data[pos + sizes_size :])
    out, p, v = [], 0, 0
    for _ in range(count):
        n, p = _varint(sizes_raw, p)
        out.append(values[v : v + n])
        v += n
    return out


def _fields(message: bytes) -> dict[int, int]:
    """The varint fields of a small proto message (all ArrayRecord index messages have only those
    at the top level, except the footer metadata's one nested message)."""
    out, pos = {}, 0
    while pos < len(message):
        key, pos = _varint(message, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            out[number], pos = _varint(message, pos)
        elif wire == 2:
            length, pos = _varint(message, pos)
            out[number] = message[pos : pos + length]
            pos += length
        else:
            raise FormatError(f"unexpected wire type {wire} in an ArrayRecord index message")
    return out


class Index:
    """Where the chunks of a shard lie: ``[starts[c], ends[c])``, ``group`` records per chunk."""

    def __init__(self, size: int, read: Callable[[int, int], bytes]):
        if size < BLOCK or size % BLOCK:
            raise FormatError(f"an ArrayRecord file is a multiple of 64 KiB, this one has {size} bytes")
        self.size = size
        self.tail = read(size - BLOCK, BLOCK)
        post = _fields(_records(_unblock(self.tail, size - BLOCK))[0])
        if post.get(2) != _MAGIC or 1 not in post:
            raise FormatError("not an ArrayRecord file (no postscript magic)")
        self.footer_offset = int(post[1])
        self.footer = read(self.footer_offset, size - BLOCK - self.footer_offset)
        records = _records(_unblock(self.footer, self.footer_offset))
        meta = _fields(_fields(records[0]).get(1, b""))
        if meta.get(1) != 1:
            raise FormatError(f"unknown ArrayRecord version {meta.get(1)}")
        footers = [_fields(r) for r in records[1:]]
        self.num_records = int(meta.get(3, 0))
        self.starts = np.array([f.get(1, 0) for f in footers], dtype=np.int64)
        self.ends = np.append(self.starts[1:], self.footer_offset).astype(np.int64)
        self.group = int(footers[0].get(3, 1)) if footers else 1

    def pages(self, positions: np.ndarray) -> np.ndarray:
        """The pages holding the chunks of records at ``positions``."""
        chunks = np.unique(np.asarray(positions, dtype=np.int64) // self.group)
        first, last = self.starts[chunks] // PAGE, (self.ends[chunks] - 1) // PAGE
        return np.unique(np.concatenate([np.arange(a, b + 1) for a, b in zip(first.tolist(), last.tolist(), strict=True)]))


# -- the bounded page cache ---------------------------------------------------------------------
_FALLOCATE = None


def _punch(fd: int, offset: int, length: int) -> None:
    global _FALLOCATE
    if _FALLOCATE is None:
        fallocate = ctypes.CDLL(None, use_errno=True).fallocate
        fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
        _FALLOCATE = fallocate
    if length > 0 and _FALLOCATE(fd, _PUNCH_HOLE, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot give cached pages back to the file system ({os.strerror(err)}); "
                           f"use cache_bytes=None (whole-shard copies) on this file system")


class PageCache:
    """An LRU of 4 KiB pages of sparse shard files, at most ``max_bytes`` unpinned on disk."""

    def __init__(self, directory: str, max_bytes: int):
        self.directory = os.path.join(directory, "ranges", f"{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.makedirs(self.directory, exist_ok=True)
        atexit.register(shutil.rmtree, self.directory, True)
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
        self.lru: collections.OrderedDict[tuple[int, int], None] = collections.OrderedDict()
        self.pins: collections.Counter[tuple[int, int]] = collections.Counter()
        self.fds: dict[int, int] = {}
        self.limits: dict[int, int] = {}  # per file: where its (permanent) index begins
        self.bytes = self.peak = 0

    def add_file(self, name: str, size: int, index_offset: int) -> tuple[int, str]:
        """A new sparse file of ``size`` bytes whose bytes from ``index_offset`` on are never
        evicted (the footer and postscript)."""
        path = os.path.join(self.directory, f"{uuid.uuid4().hex[:8]}-{name}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(fd, size)
        with self.lock:
            key = len(self.fds)
            self.fds[key], self.limits[key] = fd, index_offset
        return key, path

    def pin(self, file: int, pages: np.ndarray) -> np.ndarray:
        """Pins ``pages`` of ``file``; returns those not present (the caller fetches them)."""
        with self.lock:
            missing = []
            for p in pages.tolist():
                self.pins[(file, p)] += 1
                if (file, p) in self.lru:
                    self.lru.move_to_end((file, p))
                else:
                    missing.append(p)
            return np.asarray(missing, dtype=np.int64)

    def stored(self, file: int, pages: np.ndarray) -> None:
        """Records pages just written to ``file`` (pinned by the caller), then trims the cache."""
        with self.lock:
            for p in pages.tolist():
                if (file, p) not in self.lru:
                    self.lru[(file, p)] = None
                    self.bytes += PAGE
            self.peak = max(self.peak, self.bytes)
            self._trim()

    def unpin(self, file: int, pages: np.ndarray) -> None:
        with self.lock:
            for p in pages.tolist():
                self.pins[(file, p)] -= 1
                if self.pins[(file, p)] <= 0:
                    del self.pins[(file, p)]
            self._trim()

    def _trim(self) -> None:
        victims: list[tuple[int, int]] = []
        for key in self.lru:
            if self.bytes - PAGE * len(victims) <= self.max_bytes:
                break
            if key not in self.pins:
                victims.append(key)
        for key in victims:
            del self.lru[key]
        self.bytes -= PAGE * len(victims)
        runs: list[list[int]] = []  # [file, first page, end page): one fallocate per run
        for file, page in sorted(victims):
            if runs and runs[-1][0] == file and runs[-1][2] == page:
                runs[-1][2] += 1
            else:
                runs.append([file, page, page + 1])
        for file, first, end in runs:  # bytes from the index start on stay (a page may hold both)
            start = first * PAGE
            _punch(self.fds[file], start, min(end * PAGE, self.limits[file]) - start)

    def disk_bytes(self) -> int:
        """Bytes the cache's files occupy on disk (allocated blocks)."""
        return sum(os.fstat(fd).st_blocks * 512 for fd in self.fds.values())


class RangedShard:
    """One remote shard mirrored in a sparse local file; `prepare` fetches what a read needs."""

    def __init__(self, remote: str, name: str, size: int, cache: PageCache):
        self.remote, self.name, self.size, self.cache = remote, name, size, cache
        self.lock = threading.Lock()
        self.index: Index | None = None
        self.file: int | None = None
        self.path: str | None = None
        self._ranges = None

    def _read(self, offset: int, length: int) -> bytes:
        if self._ranges is None:
            from datarax_beam.shards import fs  # Beam's FileSystems: remote paths only

            self._ranges = fs.RangeReader(self.remote)
        return self._ranges.read(offset, length)

    def local_path(self) -> str:
        """The sparse file, with the postscript and footer in place (fetched once)."""
        with self.lock:
            if self.path is None:
                from datarax_beam.shards import fs

                actual = fs.size(self.remote)
                if actual != self.size:
                    raise OSError(f"Shard {self.remote!r} has {actual} bytes, but shardset.json says "
                                  f"{self.size}: the shard set changed since it was committed")
                index = Index(self.size, self._read)
                self.file, path = self.cache.add_file(self.name, self.size, index.footer_offset)
                fd = self.cache.fds[self.file]
                os.pwrite(fd, index.tail, self.size - BLOCK)
                os.pwrite(fd, index.footer, index.footer_offset)
                self.index, self.path = index, path
            return self.path

    def prepare(self, positions: np.ndarray) -> np.ndarray:
        """Fetches and pins the pages of the chunks of ``positions``; returns them for `release`."""
        self.local_path()
        pages = self.index.pages(positions)
        missing = self.cache.pin(self.file, pages)
        if len(missing):
            fd = self.cache.fds[self.file]
            runs = np.split(missing, np.flatnonzero(np.diff(missing) != 1) + 1)
            for run in runs:
                start = int(run[0]) * PAGE
                length = min(int(run[-1] + 1) * PAGE, self.index.footer_offset) - start
                os.pwrite(fd, self._read(start, length), start)
            self.cache.stored(self.file, missing)
        return pages

    def release(self, pages: np.ndarray) -> None:
        self.cache.unpin(self.file, pages)

    def __getstate__(self):
        return {"remote": self.remote, "name": self.name, "size": self.size,
                "cache": (os.path.dirname(os.path.dirname(self.cache.directory)), self.cache.max_bytes)}

    def __setstate__(self, state):
        self.__init__(state["remote"], state["name"], state["size"], shared_cache(*state["cache"]))


_CACHES: dict[tuple[str, int], PageCache] = {}
_CACHES_LOCK = threading.Lock()


def shared_cache(directory: str, max_bytes: int) -> PageCache:
    """One page cache per (directory, bound) in a process, shared by its readers."""
    with _CACHES_LOCK:
        key = (os.path.abspath(directory), int(max_bytes))
        if key not in _CACHES:
            _CACHES[key] = PageCache(*key)
        return _CACHES[key]
