"""Reading a shard set's records back without Beam or JAX (the CLI's ``inspect``, tests, tools).

A shard's records are stored as ``shardset.json``'s ``compression`` says (``docs/format.md``):
`read_shard` returns their codec bytes, decompressed, and `read_columns` decodes records of a
whole set by global index. The train-time reader (`datarax_beam.sources.ArrayRecordSourceModule`)
does the same on its read threads.

Example:
  >>> import tempfile, numpy as np
  >>> from datarax_beam.shards.writer import write_shardset
  >>> d = tempfile.mkdtemp()
  >>> _ = write_shardset(d, {"x": np.arange(5, dtype=np.int32)}, num_shards=2)
  >>> read_columns(d)["x"].tolist(), read_columns(d, [4, 0])["x"].tolist()
  ([0, 1, 2, 3, 4], [4, 0])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from datarax_beam.shards.codec import decode_batch
from datarax_beam.shards.compress import decompress
from datarax_beam.shards.shardset import ShardSet, load_shardset

_READER_OPTIONS = "readahead_buffer_size:0"


def read_shard(path: str, compression: str, indices: Sequence[int] | None = None) -> list[bytes]:
    """The codec bytes of the records of the shard file at local ``path`` (all, or ``indices``).

    Args:
      path: a local shard file.
      compression: its shard set's ``compression``.
      indices: record indices inside the file (default: every record, in order).

    Raises:
      StoredRecordError: a record cannot be decompressed (names the file and the record).
    """
    from array_record.python.array_record_module import ArrayRecordReader

    reader = ArrayRecordReader(path, _READER_OPTIONS)
    try:
        if indices is None:
            stored = reader.read_all()
        else:
            stored = reader.read([int(i) for i in indices]) if len(indices) else []
    finally:
        reader.close()
    positions = range(len(stored)) if indices is None else indices
    return decompress(compression, stored, f"Shard {path!r}", positions)


def read_records(shardset: ShardSet | str, indices: Sequence[int] | None = None) -> list[bytes]:
    """The codec bytes of a local shard set's records at global ``indices`` (shards in order;
    default: all of them)."""
    if not isinstance(shardset, ShardSet):
        shardset = load_shardset(shardset)
    counts = np.array([s.num_records for s in shardset.shards], dtype=np.int64)
    ends = np.cumsum(counts)
    if indices is None:
        return [r for p, n in zip(shardset.shard_paths, counts.tolist(), strict=True) if n
                for r in read_shard(p, shardset.compression)]
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(idx) and (idx.min() < 0 or idx.max() >= int(ends[-1])):
        bad = int(idx[(idx < 0) | (idx >= int(ends[-1]))][0])
        raise IndexError(f"Record index {bad} is out of range for a shard set of {int(ends[-1])} records")
    shard = np.searchsorted(ends, idx, side="right")
    out: list[Any] = [None] * len(idx)
    for s in np.unique(shard).tolist():
        slots = np.flatnonzero(shard == s)
        local = (idx[slots] - (ends[s] - counts[s])).tolist()
        for slot, rec in zip(slots.tolist(), read_shard(shardset.shard_paths[s], shardset.compression, local),
                             strict=True):
            out[slot] = rec
    return out


def read_columns(shardset: ShardSet | str, indices: Sequence[int] | None = None) -> dict[str, Any]:
    """Records of a local shard set decoded into columns (see `read_records`)."""
    if not isinstance(shardset, ShardSet):
        shardset = load_shardset(shardset)
    return decode_batch(shardset.schema, read_records(shardset, indices))


__all__ = ["read_columns", "read_records", "read_shard"]
