"""Turning the reader's ``path`` argument into a list of ArrayRecord files (and a shard set).

Accepted forms: a shard-set directory (must hold ``shardset.json``), one ``.array_record`` file, a
glob pattern, or a list of files. A shard-set directory on a non-local Beam filesystem
(``gs://``, ``s3://``, ...) is copied shard by shard into a local cache first: array_record's
reader opens local files only. Files named explicitly decode with a shard set's schema when
their directory's ``shardset.json`` lists every one of them; otherwise they are raw records.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
from collections.abc import Sequence

from datarax_beam.progress import Bar
from datarax_beam.shards.codec import SchemaError
from datarax_beam.shards.shardset import SHARDSET_FILE, ShardInfo, ShardSet, load_shardset

_GLOB_CHARS = "*?["


@dataclasses.dataclass(frozen=True)
class Files:
    """The files a reader reads, in order, and the shard set describing them (if any).

    ``counts`` is known up front for shard sets (from ``shardset.json``) and ``None`` otherwise.
    """

    paths: tuple[str, ...]
    shardset: ShardSet | None
    counts: tuple[int, ...] | None
    sha256: tuple[str | None, ...] | None = None
    ranged: tuple | None = None  # per shard a `_ranges.RangedShard` (remote, read by ranges)

    def fingerprint(self, counts: Sequence[int]) -> int:
        """A small non-negative int identifying the data.

        It hashes the producer fingerprint, schema and job id of the shard set and each file's
        name, record count and content checksum (when ``shardset.json`` records them), so a
        regenerated or edited set gets a new fingerprint even with the same names and counts.
        """
        h = hashlib.sha256()
        if self.shardset is not None:
            h.update(self.shardset.fingerprint.encode())
            h.update(json.dumps(self.shardset.schema.to_json(), sort_keys=True).encode())
            h.update(f"job:{self.shardset.job_id};".encode())
        sums = self.sha256 or (None,) * len(self.paths)
        for path, count, digest in zip(self.paths, counts, sums, strict=True):
            h.update(f"{os.path.basename(path)}:{count}:{digest};".encode())
        return int(h.hexdigest()[:7], 16)


def resolve(path: str | os.PathLike | Sequence[str | os.PathLike], cache_dir: str | None = None,
            cache_bytes: int | None = None) -> Files:
    """Resolves any accepted path form; raises `FileNotFoundError` naming what is missing.

    A remote shard set is copied whole into ``cache_dir`` (``cache_bytes=None``) or read by byte
    ranges into a cache of at most ``cache_bytes`` (`datarax_beam.sources._ranges`).
    """
    if isinstance(path, (str, os.PathLike)):
        p = os.fspath(path)
        if "://" in p or os.path.isdir(p):
            shardset = checked(load_shardset(p))  # refuses a directory without shardset.json
            if "://" in p and cache_bytes is not None:
                return _ranged(shardset, cache_dir, cache_bytes)
            paths = shardset.shard_paths if "://" not in p else _fetch(shardset, cache_dir)
            return _of_shardset(paths, shardset, shardset.shards)
        if any(c in p for c in _GLOB_CHARS) and not os.path.exists(p):
            paths = sorted(f for f in glob.glob(p) if os.path.isfile(f))
            if not paths:
                raise FileNotFoundError(f"The pattern {p!r} matches no ArrayRecord files")
            return _files(paths)
        return _files([p])
    if isinstance(path, Sequence):
        paths = [os.fspath(x) if isinstance(x, (str, os.PathLike)) else x for x in path]
        bad = [x for x in paths if not isinstance(x, str)]
        if bad:
            raise TypeError(f"`path` list entries must be file paths, got {bad[0]!r}")
        if not paths:
            raise ValueError("`path` is an empty list; expected at least one ArrayRecord file")
        return _files(paths)
    raise TypeError(
        "`path` must be a shard-set directory, an .array_record file, a glob or a list of files, "
        f"got {type(path).__name__}"
    )


def _files(paths: list[str]) -> Files:
    for p in paths:
        if os.path.isdir(p):
            raise IsADirectoryError(f"{p!r} is a directory; pass it alone to read it as a shard set")
        if not os.path.exists(p):
            raise FileNotFoundError(f"ArrayRecord file {p!r} does not exist")
    shardset = _sibling_shardset(paths)
    if shardset is None:
        return Files(tuple(paths), None, None)
    infos = {s.name: s for s in shardset.shards}
    return _of_shardset(paths, shardset, [infos[os.path.basename(p)] for p in paths])


def _of_shardset(paths: Sequence[str], shardset: ShardSet, infos: Sequence[ShardInfo]) -> Files:
    sums = tuple(info.sha256 for info in infos)
    return Files(tuple(paths), shardset, tuple(info.num_records for info in infos),
                 sums if any(sums) else None)


def checked(shardset: ShardSet) -> ShardSet:
    """Refuses shard names that are not plain file names inside the set's directory.

    ``shardset.json`` is untrusted input: a name like ``../other/x.array_record`` or an absolute
    path would make the reader open a file outside the set.
    """
    for info in shardset.shards:
        name = info.name
        if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name
                or "\\" in name or "\0" in name or os.path.isabs(name)):
            raise SchemaError(
                f"{shardset.path!r}: shardset.json lists the shard name {name!r}, which is not a "
                f"plain file name inside the set's directory; refusing to open it"
            )
    return shardset


def _sibling_shardset(paths: list[str]) -> ShardSet | None:
    """The shard set of the files' common directory, if it lists every file."""
    dirs = {os.path.dirname(os.path.abspath(p)) for p in paths}
    if len(dirs) != 1:
        return None
    directory = dirs.pop()
    if not os.path.exists(os.path.join(directory, SHARDSET_FILE)):
        return None
    shardset = checked(load_shardset(directory))
    names = {s.name for s in shardset.shards}
    return shardset if all(os.path.basename(p) in names for p in paths) else None


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "datarax_beam")


def _ranged(shardset: ShardSet, cache_dir: str | None, cache_bytes: int) -> Files:
    from datarax_beam.sources import _ranges

    cache = _ranges.shared_cache(cache_dir or default_cache_dir(), cache_bytes)
    shards = tuple(_ranges.RangedShard(remote, info.name, info.num_bytes, cache)
                   for info, remote in zip(shardset.shards, shardset.shard_paths, strict=True))
    files = _of_shardset(shardset.shard_paths, shardset, shardset.shards)
    return dataclasses.replace(files, ranged=shards)


def _fetch(shardset: ShardSet, cache_dir: str | None) -> list[str]:
    """Local copies of a remote shard set's shards.

    A shard whose ``shardset.json`` entry records its SHA-256 is cached under that checksum
    (content-addressed: a regenerated set never reads a stale copy, and identical shards are
    shared); older sets are keyed on the set's path, job id, fingerprint and size. Each copy is
    written under a temporary name and renamed, so concurrent readers and interrupted copies
    never leave a partial shard behind under its real name.
    """
    from datarax_beam.shards import fs  # imports Beam's FileSystems: remote paths only

    root = cache_dir or default_cache_dir()
    key = f"{shardset.path}|{shardset.job_id}|{shardset.fingerprint}|{shardset.total_bytes}"
    legacy = os.path.join(root, hashlib.sha256(key.encode()).hexdigest()[:16])
    local = []
    bar = Bar(shardset.num_records, f"fetch {shardset.path}", failed=False)  # progress of the copy
    for info, remote in zip(shardset.shards, shardset.shard_paths, strict=True):
        if info.sha256:
            dest = os.path.join(root, "sha256", f"{info.sha256}.array_record")
        else:
            dest = os.path.join(legacy, info.name)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if not (os.path.exists(dest) and os.path.getsize(dest) == info.num_bytes):
            fs.copy_to_local(remote, dest)
            if os.path.getsize(dest) != info.num_bytes:
                size = os.path.getsize(dest)
                os.remove(dest)
                raise OSError(
                    f"Shard {remote!r} has {size} bytes, but shardset.json says "
                    f"{info.num_bytes}: the shard set changed or the copy is corrupt"
                )
        local.append(dest)
        bar.update(info.num_records)
    bar.close()
    return local
