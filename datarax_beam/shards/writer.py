"""Writing one shard file (local path) and a whole shard set without Beam.

The Beam writer (`datarax_beam.transforms`) and the benchmarks' hand-written baseline both use
`write_shard_file`; `write_shardset` is the plain-Python writer for tests and small jobs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.shards.checksum import sha256_file
from datarax_beam.shards.codec import Schema, encode_batch
from datarax_beam.shards.shardset import (
    SHARDSET_FILE,
    ShardInfo,
    ShardSet,
    shard_name,
    writer_options,
)
from datarax_beam.version import __version__


def write_shard_file(path: str, records: Iterable[bytes], compression: str = "zstd") -> tuple[int, int]:
    """Writes records to an ArrayRecord file at a local ``path``; returns (records, file bytes)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    writer = ArrayRecordWriter(path, writer_options(compression))
    count = 0
    try:
        for rec in records:
            writer.write(rec)
            count += 1
    finally:
        writer.close()
    return count, os.path.getsize(path)


def write_shardset(
    directory: str,
    batch: Mapping[str, Any],
    *,
    num_shards: int = 1,
    compression: str = "zstd",
    fingerprint: str = "",
    seed: int = 0,
    statistics: Mapping[str, Any] | None = None,
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
        count, size = write_shard_file(tmp, records, compression)
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


