"""`WriteShardSet`: indexed records (or chunks) -> a committed ArrayRecord shard set.

The write `materialize` does, as a transform for any Beam pipeline (anchor:
``apache_beam.io.fileio.WriteToFiles``: temp files, then one finalize step wired in
``expand()``). Records go to shards by their index: output position ``j`` holds the record of
index ``j`` (``shuffle=True``: of index ``output_permutation(seed, n)[j]``), shard ``i`` a
contiguous range of positions — the layout `materialize` writes, so the same records give
byte-identical shards. Steps:

1. records -> chunks per bundle (`records.ToChunksFn`); the indices are checked to be exactly
   ``0..n-1`` (`_DenseIndices`, a combine whose output, the count ``n``, every writer waits for);
2. the schema: declared (``schema=``), or inferred from the ``batch_size`` records of smallest
   index by `shards.fit.infer_schema` — the rule `materialize` applies to its first batch, and
   a function of the data alone, so every runner and bundling infers the same schema;
3. each record is encoded against it (a misfit is a dead letter of stage ``encode``), assigned
   to its shard, grouped by shard and written sorted as a temp part (`writer.AssignShardsFn`,
   `writer.WriteGroupFn`);
4. one commit step takes the output directory's lock (`lock.JobLock`), names the shards so a set
   committed there stays readable until this one replaces it, and commits (`commit.finalize`:
   failure budget, dead letters under ``errors/``, ``shardset.json`` last), then releases it.

The lock: `materialize` holds it from before the job starts to after the commit. A transform in
a user's pipeline has no step that runs after a failed job, so `WriteShardSet` holds it for its
commit step, which cleans up after itself when it fails. A job that dies before its commit leaves
its temp directory (``output_dir/.datarax-tmp-<job>``), which is safe to delete.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import apache_beam as beam
import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.shards import shardset as ss
from datarax_beam.shards.codec import Schema, SchemaError
from datarax_beam.shards.compress import group_size_for
from datarax_beam.shards.fit import infer_schema
from datarax_beam.shards.shardset import COMPRESSIONS, ERRORS_DIR
from datarax_beam.shards.validate import validate_schema
from datarax_beam.transforms import files
from datarax_beam.transforms.commit import (
    TMP_PREFIX,
    Commit,
    FinalizeShardsFn,
    committed_or_none,
    committed_paths,
    errors_path,
    finalize,
    plan_names,
)
from datarax_beam.transforms.dead_letter import (
    MAX_FAILED_FRACTION,
    ErrorPolicy,
    FailureBudgetExceeded,
    RecordError,
    check_fraction,
    check_on_error,
    concat_records,
)
from datarax_beam.transforms.lock import JobLock, OutputDirLocked, remove_uncommitted
from datarax_beam.transforms.readers import Chunk
from datarax_beam.transforms.records import ToChunksFn, check_batch_size
from datarax_beam.transforms.settings import (
    as_schema,
    check_output_dir,
    default_num_shards,
    refuse_committed,
    versions,
)
from datarax_beam.transforms.writer import AssignShardsFn, WriteChunksFn, WriteGroupFn

DEFAULT_BATCH_SIZE = 256


def _positions(chunk: Chunk) -> np.ndarray:
    failed = np.array([f["position"] for f in chunk.failures], dtype=np.int64)
    return np.concatenate([np.asarray(chunk.positions, np.int64), failed])


class _DenseIndices(beam.CombineFn):
    """The number of records, once their indices are checked to be exactly ``0..n-1``."""

    def create_accumulator(self):
        return []

    def add_input(self, acc, chunk):
        acc.append(_positions(chunk))
        return acc

    def merge_accumulators(self, accs):
        return [a for acc in accs for a in acc]

    def extract_output(self, acc):
        got = np.sort(np.concatenate(acc)) if acc else np.zeros(0, np.int64)
        n = len(got)
        expected = np.arange(n, dtype=np.int64)
        if not np.array_equal(got, expected):
            dup = got[1:][got[1:] == got[:-1]]
            missing = np.setdiff1d(expected, got)
            what = (f"index {int(dup[0])} occurs more than once" if len(dup) else
                    f"index {int(missing[0])} is missing (the largest is {int(got[-1])})")
            raise ValueError(
                f"WriteShardSet needs each record's index to be its place in the output, exactly "
                f"0..n-1 once each; of the {n} records, {what}. Number the records (e.g. with "
                f"their row number) before writing"
            )
        return n


def _smallest(parts: list[tuple[np.ndarray, dict]], k: int) -> tuple[np.ndarray, dict]:
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return np.zeros(0, np.int64), {}
    indices = np.concatenate([p[0] for p in parts])
    columns = concat_records([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    keep = np.argsort(indices, kind="stable")[:k]
    return indices[keep], cols.take(columns, keep)


class _FirstRecords(beam.CombineFn):
    """The schema inferred from the ``k`` records of smallest index (`infer_schema`), as JSON."""

    def __init__(self, k: int):
        self._k = k

    def create_accumulator(self):
        return np.zeros(0, np.int64), {}

    def add_input(self, acc, chunk):
        return _smallest([acc, (np.asarray(chunk.indices, np.int64), chunk.columns)], self._k)

    def merge_accumulators(self, accs):
        return _smallest(list(accs), self._k)

    def extract_output(self, acc):
        try:
            schema = infer_schema(acc[1])
        except SchemaError as e:
            raise SchemaError(f"{e} (WriteShardSet infers the schema from the {self._k} records of "
                              f"smallest index; declare it with WriteShardSet(schema=...))") from None
        validate_schema(schema.to_json())
        return schema.to_json()


def _resolve(num_shards: int | None, total: int) -> int:
    return num_shards or default_num_shards(total)


class _AssignFn(AssignShardsFn):
    """`AssignShardsFn` with the shard count and the schema fixed at run time (side inputs)."""

    def __init__(self, commit: Commit, shuffle: bool, seed: int, policy: ErrorPolicy):
        super().__init__(commit, shuffle, seed, policy)
        self._given_shards = commit.num_shards

    def setup(self):
        self._schema = None if self._schema_json is None else Schema.from_json(self._schema_json)

    def process(self, chunk, total, schema=None):
        self._num_shards = _resolve(self._given_shards, int(total))
        if schema is not None and self._schema is None:
            self._schema = Schema.from_json(schema)
        yield from super().process(chunk, total)


class _WriteGroupsFn(WriteGroupFn):
    def __init__(self, commit: Commit, policy: ErrorPolicy):
        super().__init__(commit, policy)
        self._given_shards = commit.num_shards

    def setup(self):  # records arrive encoded: no schema needed here
        pass

    def process(self, item, total, schema=None):
        self._num_shards = _resolve(self._given_shards, int(total))
        if schema is not None:  # inferred at run time: it fixes the files' group size too
            self._group_size = group_size_for(Schema.from_json(schema).record_nbytes)
        yield from super().process(item)


#: Failures of the commit step that a retry would meet again: it cleans up before raising them.
_FINAL = (FailureBudgetExceeded, FileExistsError, RecordError, SchemaError, ValueError)


class _CommitFn(beam.DoFn):
    """Takes the output directory's lock, commits the parts, releases the lock; yields
    ``shardset.json``'s text."""

    def __init__(self, commit: Commit, overwrite: bool):
        self._commit, self._overwrite = commit, overwrite

    def process(self, parts, total=None, schema=None, statistics=None):
        c = self._commit
        out = c.output_dir
        if total is not None:
            c = c._replace(num_shards=_resolve(c.num_shards, int(total)))
        if schema is not None:
            c = c._replace(schema=schema)
        if statistics:
            c = c._replace(statistics=dict(statistics))
        files.mkdirs(out)
        try:
            job_lock = JobLock(out, c.job_id, c.tmp_dir).acquire(lambda: committed_paths(out))
        except OutputDirLocked:
            files.delete_dir(c.tmp_dir)  # this job's own temp directory: nobody else uses it
            raise
        planned: list[str] = []
        try:
            refuse_committed(out, self._overwrite)
            names, replaced = plan_names(c.num_shards, committed_or_none(out), c.job_id[:12])
            planned = [ss.join(out, n) for n in names] + [errors_path(out, n) for n in names]
            job_lock.update(list(names) + [f"{ERRORS_DIR}/{ss.errors_name(n)}" for n in names])
            shardset = finalize(parts, c._replace(shard_names=names, replaced=replaced))
        except _FINAL:
            remove_uncommitted(out, c.tmp_dir, planned, lambda: committed_paths(out))
            raise
        finally:
            job_lock.release()
        yield shardset.dumps()


class WriteShardSet(beam.PTransform):
    """Writes indexed records (or chunks) as a committed ArrayRecord shard set.

    Input: ``(index, features)`` pairs, where ``index`` is the record's place in the output
    (exactly ``0..n-1``, each once), ``features`` a dict of values; ``(index, DeadLetter)`` pairs
    and chunks from `ApplyChain` (their failed records go to ``errors/``). Output: a PCollection
    holding the committed ``shardset.json`` text once (``ShardSet.loads(text, output_dir)``).
    Read the set back with `ArrayRecordSourceModule(output_dir)` or `ReadShardSet(output_dir)`.

    Args:
      output_dir: a local path or any Beam filesystem URL (gs://, s3://, ...).
      num_shards: shard files (default: one per 65,536 records, from the count at run time).
      shuffle, seed: globally shuffle the records across and within shards (seeded; the
        permutation `materialize(shuffle=True)` applies).
      schema: the shard set's schema (a `Schema` or its JSON form). Default: inferred from the
        ``batch_size`` records of smallest index by the rule `materialize` applies to its first
        batch — deterministic on any runner; declare it when a feature's shape varies but
        happens to be uniform there.
      compression: ``zstd``, ``brotli``, ``snappy`` or ``uncompressed``.
      on_error: ``"dead_letter"`` (default): a record that does not fit the schema is recorded
        under ``output_dir/errors/`` instead of written; ``"raise"``: the job fails on it.
      max_failed_fraction: the failure budget: past this fraction of failed records the commit
        fails, naming the counts, and nothing is committed.
      overwrite: replace a committed set in ``output_dir`` (atomically, at commit).
      batch_size: records per chunk (when given records) and the records the schema is inferred
        from.
      statistics: full-pass statistics to record in ``shardset.json`` (a dict, or a singleton
        PCollection of one).
      fingerprint: recorded in ``shardset.json`` (e.g. the operator chain's).

    Raises:
      FileExistsError: ``output_dir`` is committed and ``overwrite`` is False (at construction,
        and again at commit).

    Example:
      >>> import apache_beam as beam, numpy as np, tempfile
      >>> from datarax_beam.runners import options
      >>> out, flags = tempfile.mkdtemp(), options.build_options(options.in_process())
      >>> with beam.Pipeline(runner=options.make_runner(flags), options=flags) as p:
      ...     _ = (p | beam.Create([(i, {"x": np.float32(i)}) for i in range(10)])
      ...            | WriteShardSet(out, num_shards=2))
      >>> from datarax_beam.sources import ArrayRecordSourceModule
      >>> len(ArrayRecordSourceModule(out))
      10
    """

    def __init__(self, output_dir: str, *, num_shards: int | None = None, shuffle: bool = False, seed: int = 0,
                 schema: Any = None, compression: str = "zstd", on_error: str = "dead_letter",
                 max_failed_fraction: float = MAX_FAILED_FRACTION, overwrite: bool = False,
                 batch_size: int = DEFAULT_BATCH_SIZE, statistics: Any = None, fingerprint: str = "",
                 extra: Mapping[str, Any] | None = None):
        super().__init__()
        output_dir = check_output_dir(output_dir, "WriteShardSet")
        if num_shards is not None:
            check_batch_size(num_shards, "num_shards")
        for name, value in (("shuffle", shuffle), ("overwrite", overwrite)):
            if not isinstance(value, bool):
                raise TypeError(f"WriteShardSet: `{name}` must be a bool, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"WriteShardSet: `seed` must be an int, got {seed!r}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"WriteShardSet: unknown compression {compression!r}; expected one of {COMPRESSIONS}")
        check_on_error(on_error)
        check_fraction(max_failed_fraction)
        if not isinstance(fingerprint, str):
            raise TypeError(f"WriteShardSet: `fingerprint` must be a str, got {fingerprint!r}")
        if statistics is not None and not isinstance(statistics, (Mapping, beam.pvalue.PCollection)):
            raise TypeError(f"WriteShardSet: `statistics` must be a dict or a singleton PCollection, got "
                            f"{type(statistics).__name__}")
        self._batch_size = check_batch_size(batch_size)
        declared = None if schema is None else as_schema(schema).to_json()
        refuse_committed(output_dir, overwrite)
        job_id = uuid.uuid4().hex
        static = dict(statistics) if isinstance(statistics, Mapping) else None
        self._commit = Commit(
            output_dir, ss.join(output_dir, TMP_PREFIX + job_id[:12]), num_shards, compression, int(seed),
            shuffle, fingerprint, versions(), dict(extra or {"writer": "WriteShardSet"}), None,
            schema=declared, statistics=static, on_error=on_error, job_id=job_id,
            max_failed_fraction=float(max_failed_fraction),
            schema_note="" if declared is None else " (the schema declared with WriteShardSet(schema=...))")
        self._policy = ErrorPolicy(on_error, False, {"source": "WriteShardSet"})
        self._statistics = statistics if isinstance(statistics, beam.pvalue.PCollection) else None
        self._overwrite = overwrite
        self._locked_by_driver = False

    @classmethod
    def planned(cls, commit: Commit, policy: ErrorPolicy, *, statistics=None, overwrite: bool = False,
                locked_by_driver: bool = True) -> WriteShardSet:
        """The write of a planned `materialize` job: ``commit`` names the shards (and, with
        ``commit.shard_sizes``, the chunks arrive with their shard and contiguous positions —
        the fused path); the driver holds the lock unless ``locked_by_driver`` is False."""
        self = cls.__new__(cls)
        beam.PTransform.__init__(self)
        if commit.schema is None:
            raise ValueError("A planned write needs the shard set's schema fixed in `commit.schema`")
        self._commit, self._policy, self._statistics = commit, policy, statistics
        self._overwrite, self._locked_by_driver = overwrite, locked_by_driver
        self._batch_size = DEFAULT_BATCH_SIZE
        return self

    def expand(self, pcoll):
        c, policy = self._commit, self._policy
        side = {} if self._statistics is None else {"statistics": beam.pvalue.AsSingleton(self._statistics)}
        if c.shard_sizes is not None:  # planned, fused: chunks carry their shard
            parts = pcoll | "WriteParts" >> beam.ParDo(WriteChunksFn(c, policy))
            if self._locked_by_driver:  # commit once, every part a list side input (cheaper than ToList)
                return (pcoll.pipeline | "Once" >> beam.Impulse()
                        | "Commit" >> beam.ParDo(FinalizeShardsFn(c), parts=beam.pvalue.AsList(parts), **side))
            return (parts | "AllParts" >> beam.combiners.ToList()
                    | "Commit" >> beam.ParDo(_CommitFn(c, self._overwrite), **side))
        chunks = pcoll | "Chunks" >> beam.ParDo(ToChunksFn(self._batch_size, "WriteShardSet"))
        if self._locked_by_driver:  # positions numbered by the job's reader: count them
            count = (chunks | "Sizes" >> beam.Map(lambda ch: len(ch.indices) + len(ch.failures))
                     | "Total" >> beam.CombineGlobally(sum))
        else:
            count = chunks | "CheckIndices" >> beam.CombineGlobally(_DenseIndices())
        total = beam.pvalue.AsSingleton(count)
        inferred = {}
        if c.schema is None:
            schema_pc = chunks | "InferSchema" >> beam.CombineGlobally(_FirstRecords(self._batch_size))
            inferred = {"schema": beam.pvalue.AsSingleton(schema_pc)}
        parts = (
            chunks
            | "AssignShards" >> beam.ParDo(_AssignFn(c, c.shuffle, c.seed, policy), total, **inferred)
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteGroups" >> beam.ParDo(_WriteGroupsFn(c, policy), total, **inferred)
            | "AllParts" >> beam.combiners.ToList()
        )
        if self._locked_by_driver:
            return parts | "Commit" >> beam.ParDo(FinalizeShardsFn(c), **side)
        return parts | "Commit" >> beam.ParDo(_CommitFn(c, self._overwrite), total=total, **inferred, **side)
