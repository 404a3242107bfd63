"""The reader's open shard files: lazy opening, checksum verification, reads grouped by shard.

Records come back as codec bytes: a shard set's ``zstd`` records are decompressed here, on the
thread that read them (the prefetch threads; zstd releases the GIL). Plain files without a
shard set are returned as stored. Kept outside NNX state (nothing here is checkpointed) and
picklable for Beam workers, which reopen (and re-verify) the files lazily.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent import futures
from typing import Any

import numpy as np

from datarax_beam.shards.compress import RECORD_LEVEL, decompress
from datarax_beam.sources import _paths
from datarax_beam.sources._prefetch import Prefetcher

_READER_OPTIONS = "readahead_buffer_size:0"
_HASH_BLOCK = 1 << 22


class ShardIntegrityError(OSError):
    """A shard file's content differs from what ``shardset.json`` recorded for it."""


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a local file (hashlib releases the GIL, so threads hash in parallel)."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


class Shards:
    """Open ArrayRecord readers of a `_paths.Files` list, and batched reads by global index.

    Args:
      files: the files and their shard-set metadata.
      threads, depth: the read-ahead pool (`Prefetcher`).
      verify: check each shard's SHA-256 against ``shardset.json`` when it is first opened.
    """

    def __init__(self, files: _paths.Files, threads: int, depth: int, verify: bool = True):
        self.files = files
        self.verify = verify
        self.compression = files.shardset.compression if files.shardset is not None else "uncompressed"
        self.prefetcher = Prefetcher(threads, depth)
        self._reset()
        counts = files.counts
        if counts is None:  # plain files: open them now to count their records
            counts = tuple(self.reader(i).num_records() for i in range(len(files.paths)))
        self.counts = np.asarray(counts, dtype=np.int64)
        self.ends = np.cumsum(self.counts)
        self.starts = self.ends - self.counts

    def _reset(self) -> None:
        n = len(self.files.paths)
        self.readers: list[Any] = [None] * n
        self.order: tuple[int, np.ndarray] | None = None  # (epoch, its global order)
        self.locks = [threading.Lock() for _ in range(n)]

    def reader(self, i: int):
        if self.readers[i] is None:
            with self.locks[i]:
                if self.readers[i] is None:
                    self.readers[i] = self._open(i)
        return self.readers[i]

    def _open(self, i: int):
        from array_record.python.array_record_module import ArrayRecordReader

        path = self.files.paths[i]
        expected = self.files.sha256[i] if self.files.sha256 is not None else None
        if self.files.ranged is not None:  # a sparse local mirror; Riegeli checks each chunk
            path, expected = self.files.ranged[i].local_path(), None
        if self.verify and expected is not None:
            actual = file_sha256(path)
            if actual != expected:
                raise ShardIntegrityError(
                    f"Shard {path!r} has SHA-256 {actual[:16]}..., but shardset.json records "
                    f"{expected[:16]}...: the file was replaced or edited after the set was "
                    f"committed (ArrayRecordSourceConfig(verify=False) skips this check)"
                )
        try:
            reader = ArrayRecordReader(path, _READER_OPTIONS, file_reader_buffer_size=32768)
            n = reader.num_records()
        except RuntimeError as e:  # what the C++ reader raises for unreadable files
            raise OSError(f"Cannot open ArrayRecord shard {path!r} (truncated or corrupt?): {e}") from e
        count = self.files.counts[i] if self.files.counts is not None else None
        if count is not None and n != count:
            try:
                reader.close()
            except RuntimeError as e:  # the file's footer or index is unreadable
                raise OSError(
                    f"Cannot read ArrayRecord shard {path!r} (truncated or corrupt?): {e}"
                ) from e
            raise OSError(
                f"Shard {path!r} holds {n} records but shardset.json says {count}: the file "
                f"was truncated or replaced"
            )
        return reader

    def open_all(self, shards: list[int]) -> None:
        """Opens (and verifies) the shards not open yet, hashing several at once on threads."""
        missing = [s for s in shards if self.readers[s] is None]
        if len(missing) > 1:
            workers = min(len(missing), os.cpu_count() or 2)
            with futures.ThreadPoolExecutor(workers, thread_name_prefix="datarax_beam-open") as pool:
                list(pool.map(self.reader, missing))

    def shard_of(self, indices: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.ends, indices, side="right")

    def read(self, indices: np.ndarray, out: list | None = None, slots: np.ndarray | None = None) -> list:
        """Record bytes at global ``indices``, read with one call per shard touched.

        With ``out`` and ``slots``, record ``k`` goes to ``out[slots[k]]`` (a mixture gathers the
        records of several sets into one list this way) and ``out`` is returned.
        """
        shard = self.shard_of(indices)
        local = indices - self.starts[shard]
        if out is None and len(indices) and shard[0] == shard[-1] and (shard == shard[0]).all():
            return self._read_shard(int(shard[0]), local)
        if out is None:
            out, slots = [None] * len(indices), np.arange(len(indices))
        order = np.argsort(shard, kind="stable")
        cuts = np.flatnonzero(np.diff(shard[order])) + 1
        groups = np.split(order, cuts)
        self.open_all([int(shard[g[0]]) for g in groups])
        for group in groups:
            records = self._read_shard(int(shard[group[0]]), local[group])
            for slot, rec in zip(slots[group].tolist(), records, strict=True):
                out[slot] = rec
        return out

    def _read_shard(self, s: int, pos: np.ndarray) -> list[bytes]:
        reader = self.reader(s)
        if self.files.ranged is None:
            return self._read_local(reader, s, pos)
        pages = self.files.ranged[s].prepare(pos)  # fetched and pinned while the C++ reader reads
        try:
            return self._read_local(reader, s, pos)
        finally:
            self.files.ranged[s].release(pages)

    def _read_local(self, reader, s: int, pos: np.ndarray) -> list[bytes]:
        try:
            first = int(pos[0])
            if len(pos) > 1 and int(pos[-1]) - first == len(pos) - 1 and (np.diff(pos) == 1).all():
                records = reader.read(first, first + len(pos))
            else:
                records = reader.read(pos.tolist())
        except RuntimeError as e:  # what the C++ reader raises for corrupt data
            raise OSError(
                f"Cannot read records from ArrayRecord shard {self.files.paths[s]!r} (truncated or "
                f"corrupt?): {e or type(e).__name__}"
            ) from e
        if self.compression in RECORD_LEVEL:
            records = decompress(self.compression, records, f"Shard {self.files.paths[s]!r}", pos)
        return records

    def close(self) -> None:
        self.prefetcher.close()
        for i, lock in enumerate(self.locks):
            with lock:
                if self.readers[i] is not None:
                    self.readers[i].close()
                    self.readers[i] = None

    def __getstate__(self):  # picklable for Beam: reopen (and re-verify) files lazily
        return {"files": self.files, "counts": self.counts, "prefetcher": self.prefetcher,
                "verify": self.verify}

    def __setstate__(self, state):
        self.files, self.prefetcher, self.counts = state["files"], state["prefetcher"], state["counts"]
        self.verify = state["verify"]
        self.compression = self.files.shardset.compression if self.files.shardset is not None else "uncompressed"
        self._reset()
        self.ends = np.cumsum(self.counts)
        self.starts = self.ends - self.counts
