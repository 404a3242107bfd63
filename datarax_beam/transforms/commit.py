"""Committing a shard set: temp parts -> final shard names -> ``shardset.json`` (written last).

Everything goes through Beam's `FileSystems`, so the same code commits to local disk, gs://,
s3:// or a scheme registered by tests. ``shardset.json`` is the commit marker: a directory
without it is not a shard set, whatever else it holds.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from datarax_beam.shards import shardset as ss
from datarax_beam.shards.codec import Schema
from datarax_beam.shards.shardset import ERRORS_DIR, SHARDSET_FILE, ShardInfo, ShardSet
from datarax_beam.transforms import dead_letter, reconcile
from datarax_beam.transforms.dead_letter import ErrorPolicy
from datarax_beam.transforms.readers import NAMESPACE

TMP_PREFIX = ".datarax-tmp-"


class PartInfo(NamedTuple):
    """One written temp file: output positions ``[start, stop)`` of ``shard``.

    ``num_failed`` of those positions failed: the file holds the other records, in order, and
    ``errors`` (a JSON-lines temp file) holds the failed ones' dead-letter entries.
    ``index_path`` (a temp ``.npy``) has the written records' source indices when the commit
    cannot derive them from the position.
    """

    shard: int
    start: int
    stop: int
    path: str
    num_bytes: int
    schema: dict | None
    num_failed: int = 0
    errors: str | None = None
    index_path: str | None = None

    @property
    def num_written(self) -> int:
        return self.stop - self.start - self.num_failed


class Commit(NamedTuple):
    """What the finalize step needs besides the parts (all small and JSON-able)."""

    output_dir: str
    tmp_dir: str
    num_shards: int
    compression: str
    seed: int
    shuffle: bool
    fingerprint: str
    versions: dict
    extra: dict
    shard_sizes: tuple[int, ...] | None  # expected records per shard, when known up front
    statistics: dict | None = None  # full-pass statistics (JSON form) the chain used
    on_error: str = "dead_letter"
    order_path: str | None = None  # staged source indices in output order (None: identity)


def _local_copy(path: str) -> tuple[str, str | None]:
    if "://" not in path:
        return path, None
    tmp = tempfile.mkdtemp(prefix="datarax-fin-")
    local = os.path.join(tmp, "part")
    with FileSystems.open(path) as src, open(local, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 22)
    return local, tmp


def _write_local_then_put(dest: str, records: Iterable[bytes], compression: str) -> int:
    from datarax_beam.shards.writer import write_shard_file

    tmp = tempfile.mkdtemp(prefix="datarax-fin-")
    try:
        local = os.path.join(tmp, "shard")
        _, size = write_shard_file(local, records, compression)
        with open(local, "rb") as src, FileSystems.create(dest) as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
        return size
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _concat(parts: list[PartInfo], dest: str, compression: str,
            replaced: dict[str, list[bytes]] | None = None) -> int:
    """Rewrites a shard's parts as one file (a runner split the shard over bundles, or the
    schema check replaced some parts' records: ``replaced[path]``)."""
    from array_record.python.array_record_module import ArrayRecordReader

    def records():
        for part in parts:
            if replaced and part.path in replaced:
                yield from replaced[part.path]
                continue
            local, tmp = _local_copy(part.path)
            reader = ArrayRecordReader(local)
            try:
                yield from reader.read_all()
            finally:
                reader.close()
                if tmp:
                    shutil.rmtree(tmp, ignore_errors=True)

    return _write_local_then_put(dest, records(), compression)


def _shard_parts(parts: list[PartInfo], shard: int, start: int, stop: int) -> list[PartInfo]:
    """The parts that tile ``[start, stop)`` in order; duplicates from retries are dropped."""
    by_start: dict[int, PartInfo] = {}
    for p in sorted(parts, key=lambda p: (p.start, p.path)):
        by_start.setdefault(p.start, p)
    chosen, pos = [], start
    while pos < stop:
        part = by_start.get(pos)
        if part is None or part.stop <= pos:
            raise RuntimeError(
                f"Shard {shard}: no part starts at output position {pos} (expected records "
                f"[{start}, {stop}), got parts {[(p.start, p.stop) for p in parts]})"
            )
        chosen.append(part)
        pos = part.stop
    if pos != stop:
        raise RuntimeError(f"Shard {shard}: parts end at position {pos}, expected {stop}")
    return chosen


#: Test-only fault injection: called after the shards are renamed, before ``shardset.json``.
_before_marker = None


def finalize(parts: Iterable[PartInfo], commit: Commit) -> ShardSet:
    return _finalize(parts, commit)[0]


def _finalize(parts: Iterable[PartInfo], commit: Commit) -> tuple[ShardSet, int]:
    """`finalize`, plus the number of records the schema check failed.

    Renames parts to final shard names, writes dead letters to ``errors/``, writes
    ``shardset.json`` last, removes temp files.

    Every planned output position must be covered exactly once by the parts kept (duplicates
    from retried bundles are dropped): by a written record or by a failed record's entry.
    """
    parts = [PartInfo(*p) for p in parts]
    per_shard: dict[int, list[PartInfo]] = {i: [] for i in range(commit.num_shards)}
    for p in parts:
        per_shard[p.shard].append(p)
    if commit.shard_sizes is not None:
        sizes = list(commit.shard_sizes)
    else:  # contiguous shards of the observed total (see readers.plan_tasks)
        total = sum(stop - start for _, start, stop in {(p.shard, p.start, p.stop) for p in parts})
        base, extra = divmod(total, commit.num_shards)
        sizes = [base + (1 if i < extra else 0) for i in range(commit.num_shards)]
    chosen_by_shard, start = {}, 0
    for shard in range(commit.num_shards):
        chosen_by_shard[shard] = _shard_parts(per_shard[shard], shard, start, start + sizes[shard])
        start += sizes[shard]
    chosen_all = [p for ps in chosen_by_shard.values() for p in ps]
    policy = ErrorPolicy(commit.on_error, source=commit.extra.get("source_info"))
    replaced, schema_failures = reconcile.violations(chosen_all, commit, policy)
    schema: Schema | None = None
    infos, num_failed = [], 0
    for shard in range(commit.num_shards):
        chosen = chosen_by_shard[shard]
        failures = [e for p in chosen for e in reconcile.read_entries(p.errors)]
        failures += schema_failures.get(shard, [])
        if failures:
            write_errors(commit.output_dir, shard, commit.num_shards, failures)
            num_failed += len(failures)
        name = ss.shard_name(shard, commit.num_shards)
        dest = ss.join(commit.output_dir, name)
        for p in chosen:
            if p.schema is not None and p.path not in replaced:
                s = Schema.from_json(p.schema)
                schema = s if schema is None else schema.merge(s)
        written = sum(len(replaced[p.path]) if p.path in replaced else p.num_written for p in chosen)
        if any(p.path in replaced for p in chosen):  # rewritten without the misfits
            size = _concat(chosen, dest, commit.compression, replaced)
        elif len(chosen) == 1:
            if FileSystems.exists(chosen[0].path) or not FileSystems.exists(dest):
                FileSystems.rename([chosen[0].path], [dest])
            size = chosen[0].num_bytes
        elif chosen:
            size = _concat(chosen, dest, commit.compression)
        else:
            size = _write_local_then_put(dest, [], commit.compression)
        infos.append(ShardInfo(name, written, size))
    shardset = ShardSet(
        path=commit.output_dir, shards=tuple(infos), schema=schema or Schema(()),
        compression=commit.compression, seed=commit.seed, shuffle=commit.shuffle,
        fingerprint=commit.fingerprint, num_failed=num_failed, statistics=commit.statistics,
        versions=commit.versions, extra=commit.extra,
    )
    if _before_marker is not None:
        _before_marker(shardset)
    write_marker(shardset)
    remove(commit.tmp_dir)
    return shardset, sum(map(len, schema_failures.values()))


def errors_name(shard: int, num_shards: int) -> str:
    return f"errors-{shard:05d}-of-{num_shards:05d}.jsonl"


def write_errors(output_dir: str, shard: int, num_shards: int, entries: list[dict]) -> None:
    """``output_dir/errors/errors-SSSSS-of-NNNNN.jsonl``: one JSON object per failed record."""
    directory = ss.join(output_dir, ERRORS_DIR)
    if not FileSystems.exists(directory):
        FileSystems.mkdirs(directory)
    data = dead_letter.dumps(sorted(entries, key=lambda e: e["position"]))
    with FileSystems.create(ss.join(directory, errors_name(shard, num_shards))) as f:
        f.write(data)


def write_marker(shardset: ShardSet) -> None:
    """Writes ``shardset.json`` (atomically on local disk: temp file + rename)."""
    path = ss.join(shardset.path, SHARDSET_FILE)
    data = shardset.dumps().encode("utf-8")
    if "://" in path:
        with FileSystems.create(path) as f:
            f.write(data)
        return
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def remove(path: str) -> None:
    if FileSystems.exists(path):
        FileSystems.delete([path])


class FinalizeShardsFn(beam.DoFn):
    """Receives the list of all `PartInfo`s once, commits, and yields ``shardset.json``'s text."""

    def __init__(self, commit: Commit):
        self._commit = commit
        self._failed = Metrics.counter(NAMESPACE, "records_failed")

    def process(self, parts, statistics: dict | None = None):
        commit = self._commit
        if statistics:
            commit = commit._replace(statistics=statistics)
        shardset, schema_failed = _finalize(parts, commit)
        self._failed.inc(schema_failed)  # writers counted the other failures
        yield shardset.dumps()


def is_committed(output_dir: str) -> bool:
    return FileSystems.exists(ss.join(output_dir, SHARDSET_FILE))


def read_committed(output_dir: str) -> ShardSet:
    with FileSystems.open(ss.join(output_dir, SHARDSET_FILE)) as f:
        return ShardSet.loads(f.read(), output_dir)


def prepare_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuses a committed directory unless ``overwrite``; then un-commits it and clears our files.

    The marker is removed first, so a job that fails after this point leaves no committed set.
    """
    if is_committed(output_dir):
        if not overwrite:
            raise FileExistsError(
                f"{output_dir!r} already holds a committed shard set ({SHARDSET_FILE}); pass "
                f"overwrite=True to replace it"
            )
        remove(ss.join(output_dir, SHARDSET_FILE))
    if not FileSystems.exists(output_dir):
        FileSystems.mkdirs(output_dir)
        return
    prefix = ss.join(output_dir, "")
    patterns = [prefix + "data-*-of-*.array_record", prefix + TMP_PREFIX + "*/**",
                ss.join(ss.join(output_dir, ERRORS_DIR), "errors-*-of-*.jsonl")]
    stale = [m.path for r in FileSystems.match(patterns) for m in r.metadata_list]
    if stale:
        FileSystems.delete(stale)
    # a dead job's temp directory (its files are gone now; local disks keep the directories)
    tmp_dirs = {prefix + p[len(prefix):].split("/")[0] for p in stale if p[len(prefix):].startswith(TMP_PREFIX)}
    for d in sorted(tmp_dirs):
        if FileSystems.exists(d):
            FileSystems.delete([d])
