"""Staging a random-access source so Beam workers read it by index without pickling its data.

A `MemorySource` is written once, by the driver, to the job's temp directory through Beam's
`FileSystems`: numeric columns as ``column-NNNNN.npy`` (named by the column's position, never by
the feature's name, which may hold ``/``, ``..`` or NUL), text/bytes/ragged columns with the record
codec as a blob plus offsets. Workers open it in ``DoFn.setup()`` — memory-mapped on local disk,
read once per worker elsewhere — and gather rows by index. Other random-access sources (TFDS, HF,
ArrayRecord readers) travel inside the reader DoFn, with only what their constructor set (see
`datarax_beam.core.data_source.DataSourceModule.__getstate__`).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from apache_beam.io.filesystems import FileSystems

from datarax_beam.core import columns as cols
from datarax_beam.core.data_source import RandomAccessSource
from datarax_beam.shards import shardset as ss
from datarax_beam.shards.codec import Schema, decode_batch, encode_batch
from datarax_beam.sources.memory import MemorySource

MANIFEST = "staged.json"


def write_bytes(path: str, data: bytes) -> None:
    """Writes a whole file through `FileSystems` (local or any registered scheme)."""
    with FileSystems.create(path) as f:
        f.write(data)


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path) as f:
        return f.read()


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _load_npy(path: str) -> np.ndarray:
    if "://" not in path:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    return np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)


def save_array(path: str, arr: np.ndarray) -> None:
    """Writes ``arr`` as ``.npy``: straight to a local file (one pass, no copy in memory), through
    `FileSystems` elsewhere."""
    if "://" not in path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)  # as FileSystems.create does
        with open(path, "wb") as f:
            np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
        return
    write_bytes(path, _npy_bytes(arr))


class IndexReader:
    """The picklable, worker-side handle of a random-access source: ``read(indices)``.

    Subclasses open heavy state in `setup` (called from ``DoFn.setup()``), never in ``__init__``.
    """

    def setup(self) -> None:
        """Opens files or handles (once per DoFn instance)."""

    def read_batches(self, chunks: Iterable[np.ndarray]) -> Iterator[dict[str, Any]]:
        raise NotImplementedError


class SourceIndexReader(IndexReader):
    """Reads through the source's own `read_batches` hook (the source travels pickled)."""

    def __init__(self, source: RandomAccessSource):
        self.source = source

    def read_batches(self, chunks):
        return self.source.read_batches(chunks)


class StagedMemoryReader(IndexReader):
    """Reads a `MemorySource` staged by `stage_memory_source` (nothing large is pickled)."""

    def __init__(self, directory: str):
        self.directory = directory
        self._numeric: dict[str, np.ndarray] | None = None

    def setup(self) -> None:
        if self._numeric is not None:
            return
        manifest = json.loads(read_bytes(ss.join(self.directory, MANIFEST)).decode("utf-8"))
        self._names = manifest["names"]
        self._numeric = {self._names[i]: _load_npy(ss.join(self.directory, column_file(i)))
                         for i in manifest["numeric"]}
        self._schema = Schema.from_json(manifest["object_schema"]) if manifest["object"] else None
        if self._schema is not None:
            self._offsets = _load_npy(ss.join(self.directory, "objects.offsets.npy"))
            self._blob = read_bytes(ss.join(self.directory, "objects.blob"))

    def read_batches(self, chunks):
        self.setup()
        for idx in chunks:
            yield self._read(np.asarray(idx, dtype=np.int64))

    def _read(self, idx: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, arr in self._numeric.items():
            # Sorted contiguous ranges are a slice (no gather); anything else is one fancy-index.
            if len(idx) and idx[-1] - idx[0] + 1 == len(idx) and np.all(np.diff(idx) == 1):
                out[k] = np.array(arr[idx[0] : idx[-1] + 1])
            else:
                out[k] = np.asarray(arr[idx])
        if self._schema is not None:
            blob, off = self._blob, self._offsets
            records = [blob[off[i] : off[i + 1]] for i in idx]
            out.update(decode_batch(self._schema, records))
        return {k: out[k] for k in self._names}


def column_file(position: int) -> str:
    """The staged file of the column at ``position``: named by position, never by the feature's
    name (which may hold ``/``, ``..``, NUL or 300 characters)."""
    return f"column-{position:05d}.npy"


def stage_memory_source(source: MemorySource, directory: str) -> StagedMemoryReader:
    """Writes ``source``'s columns under ``directory`` once; returns the reader workers use."""
    columns = source.columns
    names = list(columns)
    numeric = [i for i, k in enumerate(names) if cols.is_numeric_column(columns[k])]
    objects = {k: v for i, (k, v) in enumerate(columns.items()) if i not in numeric}
    if not FileSystems.exists(directory):
        FileSystems.mkdirs(directory)
    for i in numeric:
        save_array(ss.join(directory, column_file(i)), columns[names[i]])
    schema_json = None
    if objects:
        schema = Schema.infer(objects)
        records = encode_batch(schema, objects)
        offsets = np.zeros(len(records) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in records], out=offsets[1:])
        save_array(ss.join(directory, "objects.offsets.npy"), offsets)
        write_bytes(ss.join(directory, "objects.blob"), b"".join(records))
        schema_json = schema.to_json()
    manifest = {"names": names, "numeric": numeric, "object": sorted(objects),
                "object_schema": schema_json, "length": len(source)}
    write_bytes(ss.join(directory, MANIFEST), json.dumps(manifest).encode("utf-8"))
    return StagedMemoryReader(directory)


#: Sources shared with workers that run inside the driver process, by token (see `InProcessReader`).
_IN_PROCESS: dict[str, MemorySource] = {}


class InProcessReader(IndexReader):
    """Reads a `MemorySource` registered in this process by token: nothing is copied or staged.

    Only valid when every worker runs in the driver process (DirectRunner ``in_memory``);
    `materialize` registers the source for the duration of the job.
    """

    def __init__(self, token: str):
        self.token = token

    def setup(self) -> None:
        source = _IN_PROCESS.get(self.token)
        if source is None:
            raise RuntimeError(
                f"In-process source {self.token!r} is not registered in this process: this reader "
                f"only works with DirectRunner --direct_running_mode=in_memory"
            )
        self._columns = source.columns

    def read_batches(self, chunks):
        for idx in chunks:
            idx = np.asarray(idx, dtype=np.int64)
            if len(idx) and idx[-1] - idx[0] + 1 == len(idx) and np.all(np.diff(idx) == 1):
                yield {k: v[idx[0] : idx[-1] + 1] for k, v in self._columns.items()}
            else:
                yield cols.take(self._columns, idx)


def register_in_process(token: str, source: MemorySource) -> None:
    _IN_PROCESS[token] = source


def unregister_in_process(token: str) -> None:
    _IN_PROCESS.pop(token, None)


#: Where memory sources are staged for worker processes on this machine, when it has room.
SHARED_MEMORY = "/dev/shm"
#: Room left free in `SHARED_MEMORY` besides the staged data.
SHARED_MEMORY_HEADROOM = 1 << 30


def source_nbytes(source: MemorySource) -> int:
    """About how many bytes staging ``source`` writes (numeric columns exactly, others estimated)."""
    total = 0
    for column in source.columns.values():
        if cols.is_numeric_column(column):
            total += column.nbytes
        else:
            total += 64 * len(column)
    return total


def shared_memory_dir(nbytes: int, root: str = SHARED_MEMORY) -> str | None:
    """A new directory in shared memory (tmpfs) to stage ``nbytes`` in, or None where there is
    none or it lacks ``nbytes`` + `SHARED_MEMORY_HEADROOM` of free space. The caller removes it.

    Staging a `MemorySource` for worker processes on this machine there costs one copy in memory
    instead of a write to disk (measured: 1.25 GB in 0.9 s vs 2.7 s, ~11% of a 400k-record job).
    """
    import shutil
    import tempfile

    try:
        if not os.path.isdir(root) or shutil.disk_usage(root).free < nbytes + SHARED_MEMORY_HEADROOM:
            return None
        return tempfile.mkdtemp(prefix="datarax-stage-", dir=root)
    except OSError:  # not writable
        return None


def is_plain_memory_source(source: RandomAccessSource) -> bool:
    return isinstance(source, MemorySource) and type(source)._read is MemorySource._read


def index_reader(source: RandomAccessSource, staging_dir: str, *, in_process_token: str | None = None) -> IndexReader:
    """The worker-side reader for ``source``.

    Memory sources are shared by token when workers run in this process (``in_process_token``),
    staged under ``staging_dir`` otherwise; other sources travel pickled (they hold handles).
    """
    if is_plain_memory_source(source):
        if in_process_token is not None:
            register_in_process(in_process_token, source)
            return InProcessReader(in_process_token)
        return stage_memory_source(source, staging_dir)
    return SourceIndexReader(source)
