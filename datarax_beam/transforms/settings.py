"""Settings shared by `materialize`, `Materialize` and `WriteShardSet`: argument checks, the
default shard count, the versions recorded in ``shardset.json``."""

from __future__ import annotations

import functools
import importlib.metadata
import os
from collections.abc import Mapping
from typing import Any

from datarax_beam.shards import shardset as ss
from datarax_beam.shards.codec import Schema
from datarax_beam.shards.validate import validate_schema
from datarax_beam.transforms import files
from datarax_beam.transforms.commit import is_committed
from datarax_beam.version import __version__

#: Records per shard aimed at when ``num_shards`` is not given.
RECORDS_PER_SHARD = 65_536


def default_num_shards(num_records: int | None) -> int:
    """One shard per `RECORDS_PER_SHARD` records (at least 1, at most 1024)."""
    if not num_records:
        return 1
    return max(1, min(1024, -(-num_records // RECORDS_PER_SHARD)))


def versions() -> dict[str, str]:
    """Library versions recorded in ``shardset.json``."""
    return dict(_versions())


@functools.cache
def _versions() -> dict[str, str]:
    # once per process: reading the packages' metadata took 13 ms of every job
    out = {"datarax_beam": __version__}
    for dist in ("apache-beam", "jax", "numpy", "array-record"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def as_schema(schema: Any) -> Schema:
    """A declared schema: a `Schema` or its JSON form (``shardset.json``'s ``schema``), validated
    by the rules a reader applies (`datarax_beam.shards.validate`)."""
    if isinstance(schema, Schema):
        validate_schema(schema.to_json())
        return schema
    if isinstance(schema, Mapping):
        validate_schema(dict(schema))
        return Schema.from_json(schema)
    raise TypeError(f"`schema` must be a datarax_beam Schema or its JSON dict, got {type(schema).__name__}")


def check_output_dir(output_dir: Any, where: str) -> str:
    if not isinstance(output_dir, (str, os.PathLike)):
        raise TypeError(f"{where}: `output_dir` must be a path string (local or scheme://), got "
                        f"{type(output_dir).__name__}")
    output_dir = os.fspath(output_dir)
    return os.path.abspath(output_dir) if files.is_local(output_dir) else output_dir


def refuse_committed(output_dir: str, overwrite: bool) -> None:
    if is_committed(output_dir) and not overwrite:
        raise FileExistsError(
            f"{output_dir!r} already holds a committed shard set ({ss.SHARDSET_FILE}); pass "
            f"overwrite=True to replace it"
        )
