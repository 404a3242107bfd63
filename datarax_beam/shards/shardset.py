"""Shard-set metadata: ``shardset.json``, the commit marker of a materialized directory.

A directory is a committed shard set only when ``shardset.json`` exists; it is written last.
It is JSON only: nothing is ever unpickled from a shard set.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

from datarax_beam.shards.codec import Schema, SchemaError
from datarax_beam.statistics.analyzer import Statistics

SHARDSET_FILE = "shardset.json"
ERRORS_DIR = "errors"
FORMAT = "datarax_beam.shardset"
FORMAT_VERSION = 1
COMPRESSIONS = ("zstd", "brotli", "snappy", "uncompressed")


def shard_name(index: int, count: int) -> str:
    """``data-00000-of-00008.array_record``."""
    return f"data-{index:05d}-of-{count:05d}.array_record"


def writer_options(compression: str, group_size: int = 1) -> str:
    """The ``ArrayRecordWriter`` options string for a compression name."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"Unknown compression {compression!r}; expected one of {COMPRESSIONS}")
    return f"group_size:{group_size},{compression}"


def join(directory: str, name: str) -> str:
    """Joins a local or URL-style (``gs://...``) path."""
    if "://" in directory:
        return directory.rstrip("/") + "/" + name
    return os.path.join(directory, name)


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """One shard file: its plain file name inside the set, record count, size and content hash.

    ``sha256`` is the hex SHA-256 of the whole file (None only in sets written before it was
    recorded); readers key caches on it and verify it when they first open the file.
    """

    name: str
    num_records: int
    num_bytes: int
    sha256: str | None = None


@dataclasses.dataclass(frozen=True)
class ShardSet:
    """A committed set of shards: where, how many records, which schema.

    Attributes:
      path: the directory.
      shards: per shard file: name, record count, size in bytes.
      schema: the record schema (`Schema`) used by the codec.
      compression, seed, shuffle: how the shards were written.
      fingerprint: identifies the operator chain and source that produced the data.
      num_failed: records that went to the dead-letter output instead of the shards.
      statistics: full-pass statistics (`Statistics`), when the chain used any.
      versions: library versions of the writer.
      job_id: a unique id of the job that committed this set (a rerun gets a new one).
    """

    path: str
    shards: tuple[ShardInfo, ...]
    schema: Schema
    compression: str = "zstd"
    seed: int = 0
    shuffle: bool = False
    fingerprint: str = ""
    num_failed: int = 0
    statistics: Mapping[str, Any] | None = None
    versions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    job_id: str | None = None

    @property
    def num_records(self) -> int:
        return sum(s.num_records for s in self.shards)

    @property
    def total_bytes(self) -> int:
        return sum(s.num_bytes for s in self.shards)

    @property
    def shard_paths(self) -> list[str]:
        return [join(self.path, s.name) for s in self.shards]

    def __len__(self) -> int:
        return self.num_records

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "job_id": self.job_id,
            "num_records": self.num_records,
            "total_bytes": self.total_bytes,
            "num_failed": self.num_failed,
            "compression": self.compression,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "fingerprint": self.fingerprint,
            "schema": self.schema.to_json(),
            "shards": [dataclasses.asdict(s) for s in self.shards],
            "statistics": self.statistics.to_json() if hasattr(self.statistics, "to_json") else self.statistics,
            "versions": dict(self.versions),
            **({"extra": dict(self.extra)} if self.extra else {}),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any], path: str) -> ShardSet:
        if d.get("format") != FORMAT:
            raise SchemaError(f"{join(path, SHARDSET_FILE)} is not a datarax_beam shard set (format={d.get('format')!r})")
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise SchemaError(
                f"{join(path, SHARDSET_FILE)} has format_version {version!r}; this version of "
                f"datarax_beam reads {FORMAT_VERSION}"
            )
        return cls(
            path=path,
            shards=tuple(ShardInfo(str(s["name"]), int(s["num_records"]), int(s["num_bytes"]), s.get("sha256"))
                         for s in d["shards"]),
            schema=Schema.from_json(d["schema"]),
            compression=d.get("compression", "zstd"),
            seed=int(d.get("seed", 0)),
            shuffle=bool(d.get("shuffle", False)),
            fingerprint=str(d.get("fingerprint", "")),
            num_failed=int(d.get("num_failed", 0)),
            statistics=Statistics.from_json(d["statistics"]) if d.get("statistics") else None,
            versions=d.get("versions", {}),
            extra=d.get("extra", {}),
            job_id=d.get("job_id"),
        )

    @classmethod
    def loads(cls, text: str | bytes, path: str) -> ShardSet:
        """Parses ``shardset.json``: JSON only, never unpickled or evaluated."""
        try:
            if isinstance(text, bytes):
                text = text.decode("utf-8")
            d = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SchemaError(f"{join(path, SHARDSET_FILE)} is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise SchemaError(f"{join(path, SHARDSET_FILE)} must hold a JSON object, got {type(d).__name__}")
        return cls.from_json(d, path)


def load_shardset(path: str) -> ShardSet:
    """Reads ``path/shardset.json`` from a local directory (see transforms for other filesystems).

    Raises:
      FileNotFoundError: the directory has no ``shardset.json`` — it was never committed (the job
        failed or is still running), so its shards must not be read.
    """
    meta = join(path, SHARDSET_FILE)
    if "://" in path:
        from datarax_beam.shards import fs

        return ShardSet.loads(fs.read_bytes(meta), path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Shard-set directory {path!r} does not exist")
    if not os.path.exists(meta):
        raise FileNotFoundError(
            f"{path!r} has no {SHARDSET_FILE}: it is not a committed shard set (the job that wrote "
            f"it failed, was killed, or has not finished), so its files are not read"
        )
    with open(meta, "rb") as f:
        return ShardSet.loads(f.read(), path)
