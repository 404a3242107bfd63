"""Committing a shard set: temp parts -> final shard names -> ``shardset.json`` (written last).

`FinalizeShardsFn` receives every `PartInfo` once and, in order:

1. keeps exactly one part per planned range of output positions (retried bundles' twins are
   dropped) and checks that every planned position is covered once, written or dead-lettered;
2. applies the failure budget: past ``max_failed_fraction`` it raises with the counts, before
   anything in the output directory changes;
3. checks the output directory's lock is still this job's (`lock.check`);
4. renames each shard's part to its final name (a rename that already happened on a retry is not
   an error; a shard split over several parts is joined) and writes its dead letters;
5. checks the lock again and writes ``shardset.json`` — the commit marker — validated exactly as
   a reader will validate it;
6. deletes the files of the set it replaced (``overwrite=True``) and its temp directory.

The final names never collide with the files of the set being replaced (`plan_names`), so that
set stays complete and readable until step 5 replaces its ``shardset.json`` (atomically on local
disk; object stores replace an object whole). Everything goes through Beam's `FileSystems`,
without globbing any path (`files`), so the same code commits to local disk, gs://, s3:// or a
scheme registered by tests.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from typing import NamedTuple

import apache_beam as beam

from datarax_beam.shards import shardset as ss
from datarax_beam.shards.checksum import sha256_file
from datarax_beam.shards.codec import Schema, SchemaError
from datarax_beam.shards.compress import group_size_for
from datarax_beam.shards.shardset import ERRORS_DIR, SHARDSET_FILE, ShardInfo, ShardSet
from datarax_beam.transforms import dead_letter, files, lock

TMP_PREFIX = lock.TMP_PREFIX


class PartInfo(NamedTuple):
    """One written temp file: output positions ``[start, stop)`` of ``shard``.

    ``num_failed`` of those positions failed: the file holds the other records, in order, and
    ``errors`` (a JSON-lines temp file) holds the failed ones' dead-letter entries. ``sha256`` is
    the hex SHA-256 of the file.
    """

    shard: int
    start: int
    stop: int
    path: str
    num_bytes: int
    sha256: str
    num_failed: int = 0
    errors: str | None = None

    @property
    def num_written(self) -> int:
        return self.stop - self.start - self.num_failed


class Commit(NamedTuple):
    """What the writers and the finalize step need besides the parts (all small and JSON-able).

    Attributes:
      schema: the shard set's record schema (`Schema.to_json`), fixed before the job writes.
      schema_note: appended to the message of each record that does not fit it.
      job_id: this job's id (32 hex digits), recorded in ``shardset.json``.
      locked: check at commit that the output directory's lock is still ``job_id``'s (off only
        in tests of this step alone).
      shard_names: the final file name of each shard (`plan_names`).
      replaced: paths of the committed set this job replaces, deleted once it has committed.
      max_failed_fraction: the failure budget (see `dead_letter.check_budget`).
      writer_threads: threads compressing records in each writer (None: `default_threads`
        of the worker's machine). The shards' bytes do not depend on it.
    """

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
    schema: dict | None = None
    statistics: dict | None = None  # full-pass statistics (JSON form) the chain used
    on_error: str = "dead_letter"
    job_id: str = ""
    shard_names: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()
    max_failed_fraction: float = dead_letter.MAX_FAILED_FRACTION
    schema_note: str = ""
    locked: bool = True
    writer_threads: int | None = None

    def name(self, shard: int) -> str:
        return self.shard_names[shard] if self.shard_names else ss.shard_name(shard, self.num_shards)

    @property
    def group_size(self) -> int:
        """Records per riegeli chunk of every shard file (`group_size_for` the schema's record
        size): fixed by the schema, so every writer and the join of parts agree."""
        return group_size_for(Schema.from_json(self.schema).record_nbytes if self.schema else None)


def plan_names(num_shards: int, replacing: ShardSet | None, tag: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(final shard names, paths of ``replacing`` to delete after the commit).

    A shard is named ``data-SSSSS-of-NNNNN.array_record`` unless the set being replaced holds
    that name; then ``data-SSSSS-of-NNNNN-<tag>.array_record``. So the old set's files are never
    overwritten before the new ``shardset.json`` is in place."""
    taken = {s.name for s in replacing.shards} if replacing is not None else set()
    names = tuple(ss.shard_name(i, num_shards) if ss.shard_name(i, num_shards) not in taken
                  else ss.shard_name(i, num_shards, tag) for i in range(num_shards))
    replaced = () if replacing is None else tuple(replacing.shard_paths + replacing.error_paths)
    return names, replaced


def errors_path(output_dir: str, shard_file: str) -> str:
    return ss.join(ss.join(output_dir, ERRORS_DIR), ss.errors_name(shard_file))


def _local_copy(path: str) -> tuple[str, str | None]:
    if files.is_local(path):
        return path, None
    tmp = tempfile.mkdtemp(prefix="datarax-fin-")
    local = os.path.join(tmp, "part")
    files.download(path, local)
    return local, tmp


def _write_local_then_put(dest: str, records: Iterable[bytes], compression: str,
                          group_size: int) -> tuple[int, str]:
    """Writes stored records (other shard files', unchanged) as a shard file locally, then to
    ``dest``; returns (size, sha256)."""
    from datarax_beam.shards.writer import write_shard_file

    tmp = tempfile.mkdtemp(prefix="datarax-fin-")
    try:
        local = os.path.join(tmp, "shard")
        _, size = write_shard_file(local, records, compression, stored=True, threads=1, group_size=group_size)
        digest = sha256_file(local)
        files.upload(local, dest + ".tmp" if files.is_local(dest) else dest)
        if files.is_local(dest):
            os.replace(dest + ".tmp", dest)
        return size, digest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _concat(parts: list[PartInfo], dest: str, compression: str, group_size: int) -> tuple[int, str]:
    """Rewrites a shard's parts as one file (a runner split the shard over bundles): their
    stored records, unchanged, so the file is the one a single part would have been."""
    from array_record.python.array_record_module import ArrayRecordReader

    def records():
        for part in parts:
            local, tmp = _local_copy(part.path)
            reader = ArrayRecordReader(local)
            try:
                yield from reader.read_all()
            finally:
                reader.close()
                if tmp:
                    shutil.rmtree(tmp, ignore_errors=True)

    return _write_local_then_put(dest, records(), compression, group_size)


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


def read_entries(path: str | None) -> list[dict]:
    return [] if path is None else dead_letter.loads(files.read_bytes(path))


#: Test-only fault injection: called after the shards are renamed, before ``shardset.json``.
_before_marker = None


def finalize(parts: Iterable[PartInfo], commit: Commit) -> ShardSet:
    """Commits the parts (see the module docstring); returns the committed `ShardSet`."""
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

    failed = sum(p.num_failed for ps in chosen_by_shard.values() for p in ps)
    if failed:
        with_errors = [p for ps in chosen_by_shard.values() for p in ps if p.errors][:3]
        examples = sorted((e for p in with_errors for e in read_entries(p.errors)), key=lambda e: e["position"])
        dead_letter.check_budget(failed, sum(sizes), commit.max_failed_fraction, examples)
    if commit.locked:
        lock.check(commit.output_dir, commit.job_id)

    infos, group_size = [], commit.group_size  # (parsed from the schema once, not per shard)
    for shard in range(commit.num_shards):
        chosen = chosen_by_shard[shard]
        name = commit.name(shard)
        dest = ss.join(commit.output_dir, name)
        failures = [e for p in chosen for e in read_entries(p.errors)]
        if failures:
            write_errors(commit.output_dir, name, failures)
        if len(chosen) == 1:
            part = chosen[0]
            if files.exists(part.path) or not files.exists(dest):  # else: renamed by an earlier try
                files.rename(part.path, dest)
            size, digest = part.num_bytes, part.sha256
        elif chosen:
            size, digest = _concat(chosen, dest, commit.compression, group_size)
        else:
            size, digest = _write_local_then_put(dest, [], commit.compression, group_size)
        infos.append(ShardInfo(name, sum(p.num_written for p in chosen), size, digest, len(failures)))
    shardset = ShardSet(
        path=commit.output_dir, shards=tuple(infos), schema=Schema.from_json(commit.schema),
        compression=commit.compression, seed=commit.seed, shuffle=commit.shuffle,
        fingerprint=commit.fingerprint, num_failed=failed, statistics=commit.statistics,
        versions=commit.versions, extra=commit.extra, job_id=commit.job_id,
    ).validate()
    if _before_marker is not None:
        _before_marker(shardset)
    if commit.locked:
        lock.check(commit.output_dir, commit.job_id)
    write_marker(shardset)
    keep = set(shardset.shard_paths + shardset.error_paths)
    for path in commit.replaced:
        if path not in keep:
            files.delete(path)
    files.delete_dir(commit.tmp_dir)
    return shardset


def write_errors(output_dir: str, shard_file: str, entries: list[dict]) -> None:
    """``errors/errors-...jsonl`` of one shard: one JSON object per failed record, sorted by
    position (``docs/reliability.md``)."""
    files.mkdirs(ss.join(output_dir, ERRORS_DIR))
    data = dead_letter.dumps(sorted(entries, key=lambda e: e["position"]))
    files.write_bytes(errors_path(output_dir, shard_file), data)


def write_marker(shardset: ShardSet) -> None:
    """Writes ``shardset.json`` (atomically on local disk: temp file + rename)."""
    files.write_bytes(ss.join(shardset.path, SHARDSET_FILE), shardset.dumps().encode("utf-8"))


class FinalizeShardsFn(beam.DoFn):
    """Receives the list of all `PartInfo`s once, commits, and yields ``shardset.json``'s text.

    The parts come as the side input ``parts`` of a single element (`WriteShards` runs it on an
    ``Impulse``), or as the element itself (a list, e.g. after ``ToList``)."""

    def __init__(self, commit: Commit):
        self._commit = commit

    def process(self, element, parts: list | None = None, statistics: dict | None = None):
        if parts is None:
            parts = element
        commit = self._commit
        if statistics:
            commit = commit._replace(statistics=statistics)
        yield finalize(parts, commit).dumps()


def is_committed(output_dir: str) -> bool:
    return files.exists(ss.join(output_dir, SHARDSET_FILE))


def read_committed(output_dir: str) -> ShardSet:
    return ShardSet.loads(files.read_bytes(ss.join(output_dir, SHARDSET_FILE)), output_dir)


def committed_or_none(output_dir: str) -> ShardSet | None:
    """The committed set in ``output_dir``; None when there is none or it cannot be read (then
    none of its files is known, and none is kept)."""
    if not is_committed(output_dir):
        return None
    try:
        return read_committed(output_dir)
    except (SchemaError, OSError):
        return None


def committed_paths(output_dir: str) -> set[str]:
    shardset = committed_or_none(output_dir)
    return set() if shardset is None else set(shardset.shard_paths + shardset.error_paths)
