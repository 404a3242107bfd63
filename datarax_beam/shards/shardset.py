"""Shard-set metadata: ``shardset.json``, the commit marker of a materialized directory.

A directory is a committed shard set only when ``shardset.json`` exists; it is written last.
It is JSON only: nothing is ever unpickled from a shard set.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from collections.abc import Mapping
from typing import Any

from datarax_beam.shards.codec import Schema
from datarax_beam.shards.compress import riegeli_options
from datarax_beam.shards.validate import (
    COMPRESSIONS,
    FORMAT,
    FORMAT_VERSION,
    ShardSetError,
    validate_shardset,
)
from datarax_beam.statistics.analyzer import Statistics

SHARDSET_FILE = "shardset.json"
ERRORS_DIR = "errors"
#: Largest ``shardset.json`` read (statistics with big vocabularies stay far below).
MAX_SHARDSET_BYTES = 256 << 20

__all__ = ["COMPRESSIONS", "ERRORS_DIR", "FORMAT", "FORMAT_VERSION", "SHARDSET_FILE", "ShardInfo",
           "ShardSet", "ShardSetError", "errors_name", "join", "load_shardset", "shard_name",
           "writer_options"]


def shard_name(index: int, count: int, tag: str | None = None) -> str:
    """``data-00000-of-00008.array_record`` (``tag``: ``data-00000-of-00008-<tag>.array_record``,
    the name a job uses where the set it replaces still holds the plain name)."""
    return f"data-{index:05d}-of-{count:05d}{'' if tag is None else '-' + tag}.array_record"


def errors_name(shard: str) -> str:
    """The dead-letter file of shard file ``shard`` (inside ``errors/``):
    ``data-00000-of-00008.array_record`` -> ``errors-00000-of-00008.jsonl``."""
    return "errors-" + shard[len("data-"):-len(".array_record")] + ".jsonl"


def writer_options(compression: str, group_size: int = 1) -> str:
    """The ``ArrayRecordWriter`` options string of shards of a compression name (``zstd``:
    riegeli chunks ``uncompressed``, records compressed by `datarax_beam.shards.compress`)."""
    return riegeli_options(compression, group_size)


def join(directory: str, name: str) -> str:
    """Joins a local or URL-style (``gs://...``) path."""
    if "://" in directory:
        return directory.rstrip("/") + "/" + name
    return os.path.join(directory, name)


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """One shard file: its plain file name inside the set, record count, size and content hash.

    ``sha256`` is the hex SHA-256 of the whole file; readers key caches on it and verify it when
    they first open the file. ``num_failed`` records of this shard's planned range went to the
    dead-letter file ``errors/<errors_name(name)>`` instead.
    """

    name: str
    num_records: int
    num_bytes: int
    sha256: str | None = None
    num_failed: int = 0


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
      job_id: a unique id (32 hex digits) of the job that committed this set; a rerun gets a
        new one.
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

    @property
    def error_paths(self) -> list[str]:
        """The dead-letter files (JSON lines, see ``docs/reliability.md``), one per shard with
        failed records."""
        return [join(join(self.path, ERRORS_DIR), errors_name(s.name)) for s in self.shards if s.num_failed]

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

    def validate(self) -> ShardSet:
        """Checks this set against the format (as a reader will); returns it. Writers call this
        before committing, so nothing is committed that a reader would refuse."""
        validate_shardset(json.loads(self.dumps()), join(self.path, SHARDSET_FILE))
        return self

    def dumps(self) -> str:
        """``shardset.json``'s text: indented, each statistic's value on one line (Python's
        JSON encoder is pure Python with ``indent``: a 50,000-word vocabulary indented took
        longer than writing the rows it came from)."""
        d = self.to_json()
        stats = d["statistics"]
        if not stats:
            return json.dumps(d, indent=2)
        token = uuid.uuid4().hex  # stands in for each statistic's value, then is replaced
        d["statistics"] = {name: f"{token}{i}." for i, name in enumerate(stats)}
        text = json.dumps(d, indent=2)
        for i, value in enumerate(stats.values()):
            text = text.replace(f'"{token}{i}."', json.dumps(value), 1)
        return text

    @classmethod
    def from_json(cls, d: Mapping[str, Any], path: str) -> ShardSet:
        """Builds a `ShardSet` from parsed ``shardset.json``, validated whole first (see
        `datarax_beam.shards.validate`): a bad field raises `ShardSetError` naming it."""
        where = join(path, SHARDSET_FILE)
        validate_shardset(d, where)
        statistics = None
        if d["statistics"]:
            try:
                statistics = Statistics.from_json(d["statistics"])
            except (TypeError, ValueError, KeyError) as e:
                raise ShardSetError(f"{where}: `statistics` cannot be read: {type(e).__name__}: {e}") from None
        return cls(
            path=path,
            shards=tuple(ShardInfo(s["name"], s["num_records"], s["num_bytes"], s["sha256"], s["num_failed"])
                         for s in d["shards"]),
            schema=Schema.from_json(d["schema"]),
            compression=d["compression"],
            seed=d["seed"],
            shuffle=d["shuffle"],
            fingerprint=d["fingerprint"],
            num_failed=d["num_failed"],
            statistics=statistics,
            versions=dict(d["versions"]),
            extra=dict(d.get("extra", {})),
            job_id=d["job_id"],
        )

    @classmethod
    def loads(cls, text: str | bytes, path: str) -> ShardSet:
        """Parses and validates ``shardset.json``: JSON only, never unpickled or evaluated."""
        where = join(path, SHARDSET_FILE)
        if len(text) > MAX_SHARDSET_BYTES:
            raise ShardSetError(f"{where} has {len(text)} bytes; a shard set's metadata is at most "
                                f"{MAX_SHARDSET_BYTES}")
        try:
            if isinstance(text, bytes):
                text = text.decode("utf-8")
            d = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ShardSetError(f"{where} is not valid JSON: {e}") from None
        except RecursionError:
            raise ShardSetError(f"{where} is not valid shard-set JSON: it nests too deeply") from None
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
