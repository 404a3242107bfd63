"""`Materialize`: a whole `materialize` job as one transform on a `PBegin`.

    read ─► (statistics branches) ─► ApplyChain ─► WriteShardSet ─► shardset.json's text

`plan` decides, on the driver and before anything is written, the output order and the shards:
random-access sources get their shards as contiguous ranges of the output order (so one fused
stage reads, transforms and writes each shard, with no GroupByKey of record data); iterator
sources are read sequentially (or by source shard) and assigned to shards from the total count.
The schema is fixed before anything is written: declared, or the chain's output on the first
batch (`probe`). `datarax_beam.runners.materialize` is a thin driver over this transform: it
builds the options, takes the output directory's lock for the whole job, runs and reads back
the commit.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np

from datarax_beam.dag.pipeline import Pipeline
from datarax_beam.shards import shardset as ss
from datarax_beam.shards.codec import Schema
from datarax_beam.shards.shardset import COMPRESSIONS
from datarax_beam.shards.validate import validate_schema
from datarax_beam.statistics import BLOCK_SIZE
from datarax_beam.transforms import files
from datarax_beam.transforms.chain import ANALYSIS, ApplyChain, statistics_branches
from datarax_beam.transforms.commit import TMP_PREFIX, Commit
from datarax_beam.transforms.dead_letter import (
    MAX_FAILED_FRACTION,
    ErrorPolicy,
    check_fraction,
    check_on_error,
)
from datarax_beam.transforms.probe import probe_schema
from datarax_beam.transforms.readers import (
    ReadIndexRanges,
    ReadSequential,
    ReadStreamShards,
    ShardTask,
    is_sharded_stream,
    plan_block_tasks,
    plan_tasks,
)
from datarax_beam.transforms.settings import (
    RECORDS_PER_SHARD,
    as_schema,
    check_output_dir,
    default_num_shards,
    refuse_committed,
    versions,
)
from datarax_beam.transforms.staging import index_reader, save_array
from datarax_beam.transforms.write_set import WriteShardSet
from datarax_beam.transforms.writer import output_permutation

__all__ = ["ANALYSIS", "RECORDS_PER_SHARD", "Job", "Materialize", "Plan", "check_args",
           "default_num_shards", "plan"]


class Plan(NamedTuple):
    """The job's shards: ``order`` (source indices in output order; None for iterator sources),
    ``num_shards``, and for random-access sources the per-shard ``tasks``."""

    order: np.ndarray | None
    num_shards: int
    tasks: tuple[ShardTask, ...] | None

    @property
    def shard_sizes(self) -> tuple[int, ...] | None:
        return None if self.tasks is None else tuple(t.stop - t.start for t in self.tasks)


def plan(pipeline: Pipeline, num_shards: int | None, shuffle: bool, seed: int) -> Plan:
    source = pipeline.source
    if not source.is_random_access:
        return Plan(None, num_shards or 1, None)
    order = np.asarray(pipeline.epoch_indices(0), dtype=np.int64)
    n = len(order)
    shards = num_shards or default_num_shards(n)
    if shuffle:
        order = order[output_permutation(seed, n)]
    return Plan(order, shards, tuple(plan_tasks(n, shards)))


class Job(NamedTuple):
    """What the driver fixed before the job: the plan, the commit (schema, names, job id), the
    error policy, the kernel batch size, and how workers reach a memory source."""

    plan: Plan
    commit: Commit
    policy: ErrorPolicy
    batch_size: int
    single_worker: bool = False
    token: str | None = None
    staging_dir: str | None = None  # where a memory source is staged (default: the temp directory)


def check_args(pipeline, output_dir, num_shards, compression, batch_size, on_error, check_finite,
               max_failed_fraction, schema) -> Schema | None:
    """Validates `materialize`'s arguments; returns the declared schema (or None)."""
    if not isinstance(pipeline, Pipeline):
        raise TypeError(f"`pipeline` must be a datarax_beam Pipeline (from_source(...)), got {type(pipeline).__name__}")
    if not isinstance(output_dir, (str, os.PathLike)):
        raise TypeError(f"`output_dir` must be a path string (local or scheme://), got {type(output_dir).__name__}")
    for name, value in (("num_shards", num_shards), ("batch_size", batch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"`{name}` must be an int >= 1 or None, got {value!r}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"Unknown compression {compression!r}; expected one of {COMPRESSIONS}")
    check_on_error(on_error)
    if not isinstance(check_finite, bool):
        raise TypeError(f"`check_finite` must be a bool, got {check_finite!r}")
    check_fraction(max_failed_fraction)
    return None if schema is None else as_schema(schema)


def fix_schema(pipeline: Pipeline, job: Plan, declared: Schema | None, batch_size: int, policy: ErrorPolicy,
               max_failed_fraction: float) -> tuple[Schema, str]:
    """(the shard set's schema, the note misfits get): declared, or probed on the first batch."""
    if declared is not None:
        return declared, " (the schema declared with materialize(schema=...))"
    schema = probe_schema(pipeline, job.order, batch_size, policy, float(max_failed_fraction))
    validate_schema(schema.to_json())
    return schema, (" (the shard set's schema was fixed from the operator chain's output on the first "
                    "batch; declare another with materialize(schema=...))")


def _read(p, pipeline: Pipeline, job: Job):
    """(the main read's chunks, a function adding a read for a statistics analysis branch)."""
    source, commit, bs, spread = pipeline.source, job.commit, job.batch_size, not job.single_worker
    analysis_policy = job.policy._replace(check_finite=False)
    if job.plan.tasks is not None:
        staging = job.staging_dir or ss.join(commit.tmp_dir, "staged")
        order = job.plan.order
        n = len(order)
        order_path = None
        if not np.array_equal(order, np.arange(n)):
            order_path = ss.join(staging, "order.npy")
            save_array(order_path, order)
        reader = index_reader(source, staging, in_process_token=job.token)
        chunks = p | "Read" >> ReadIndexRanges(reader, list(job.plan.tasks), order_path, bs, spread=spread,
                                               policy=job.policy)

        def read_for_analysis(label):  # index order, one chunk per statistics block
            block_tasks = plan_block_tasks(n, job.plan.num_shards, BLOCK_SIZE)
            return p | label >> ReadIndexRanges(reader, block_tasks, None, BLOCK_SIZE, spread=spread,
                                                policy=analysis_policy, prefix=ANALYSIS)

        return chunks, read_for_analysis
    # Parallel shard reads reproduce the online numbering only for an unshuffled stream.
    shuffled = bool(getattr(source.config, "shuffle", False)) or pipeline.shuffle_node is not None

    def read_stream(label, shuffle_node=pipeline.shuffle_node, prefix=""):
        if is_sharded_stream(source) and not shuffled:
            return p | label >> ReadStreamShards(source, bs, prefix)
        return p | label >> ReadSequential(source, bs, shuffle_node, prefix)

    def read_for_analysis(label):  # statistics are over epoch 0 in index order: no shuffle
        return read_stream(label, None, ANALYSIS)

    return read_stream("Read"), read_for_analysis


class Materialize(beam.PTransform):
    """A whole `materialize` job as one transform applied to a pipeline's `PBegin`.

    ``p | Materialize(pipeline, output_dir, ...)`` adds the read of ``pipeline``'s source, the
    statistics branches its operators need, `ApplyChain` and `WriteShardSet` to ``p``, and
    outputs the committed ``shardset.json`` text once. The shards are byte-identical to
    ``materialize(pipeline, output_dir, ...)``'s; the plan and the schema (probed on the first
    batch unless declared) are fixed on the driver when the transform is applied. Unlike
    `materialize`, the output directory's lock is held for the commit step only (see
    `WriteShardSet`), and a memory source is always staged under the job's temp directory.

    Args: as `datarax_beam.runners.materialize` (without ``options``, ``progress``,
    ``log_level``).

    Example:
      >>> import apache_beam as beam, numpy as np, tempfile
      >>> from datarax_beam import from_source
      >>> from datarax_beam.sources import MemorySource
      >>> from datarax_beam.runners import options
      >>> src = MemorySource(data={"x": np.arange(10, dtype=np.float32)})
      >>> out, flags = tempfile.mkdtemp(), options.build_options(options.in_process())
      >>> with beam.Pipeline(runner=options.make_runner(flags), options=flags) as p:
      ...     _ = p | Materialize(from_source(src, 4), out, num_shards=2)
      >>> from datarax_beam.sources import ArrayRecordSourceModule
      >>> len(ArrayRecordSourceModule(out))
      10
    """

    def __init__(self, pipeline: Pipeline, output_dir: str, *, num_shards: int | None = None,
                 shuffle: bool = False, seed: int = 0, compression: str = "zstd", overwrite: bool = False,
                 batch_size: int | None = None, on_error: str = "dead_letter", check_finite: bool = False,
                 max_failed_fraction: float = MAX_FAILED_FRACTION,
                 schema: Schema | Mapping[str, Any] | None = None):
        super().__init__()
        self._declared = check_args(pipeline, output_dir, num_shards, compression, batch_size, on_error,
                                    check_finite, max_failed_fraction, schema)
        self._output_dir = check_output_dir(output_dir, "Materialize")
        refuse_committed(self._output_dir, overwrite)
        self._pipeline, self._num_shards, self._shuffle, self._seed = pipeline, num_shards, bool(shuffle), int(seed)
        self._compression, self._overwrite, self._batch_size = compression, bool(overwrite), batch_size
        self._on_error, self._check_finite = on_error, check_finite
        self._max_failed_fraction = float(max_failed_fraction)
        self._job: Job | None = None

    @classmethod
    def of_job(cls, pipeline: Pipeline, job: Job) -> Materialize:
        """The transform of a job the driver planned, whose lock the driver holds."""
        self = cls.__new__(cls)
        beam.PTransform.__init__(self)
        self._pipeline, self._job, self._overwrite = pipeline, job, False
        return self

    def _plan_job(self) -> Job:
        pipeline, out = self._pipeline, self._output_dir
        source = pipeline.source
        bs = self._batch_size or pipeline.batch_size
        extra = {"source_info": source.source_info(), "batch_size": bs, "epoch": 0}
        policy = ErrorPolicy(self._on_error, self._check_finite, extra["source_info"])
        job = plan(pipeline, self._num_shards, self._shuffle, self._seed)
        schema, note = fix_schema(pipeline, job, self._declared, bs, policy, self._max_failed_fraction)
        job_id = uuid.uuid4().hex
        tmp_dir = ss.join(out, TMP_PREFIX + job_id[:12])
        files.mkdirs(tmp_dir)  # a memory source is staged there as the graph is built
        commit = Commit(out, tmp_dir, job.num_shards, self._compression, self._seed, self._shuffle,
                        pipeline.fingerprint(), versions(), extra, job.shard_sizes, schema=schema.to_json(),
                        on_error=self._on_error, job_id=job_id,
                        max_failed_fraction=self._max_failed_fraction, schema_note=note)
        return Job(job, commit, policy, bs)

    def expand(self, pbegin):
        driver = self._job is not None
        job = self._job if driver else self._plan_job()
        p, pipeline = pbegin.pipeline, self._pipeline
        chunks, read_for_analysis = _read(p, pipeline, job)
        analysis_policy = job.policy._replace(check_finite=False)  # statistics see every record
        operators, statistics, stats_pc = statistics_branches(p, pipeline.operators, pipeline._given_statistics,
                                                              job.batch_size, read_for_analysis, analysis_policy)
        commit = job.commit._replace(statistics=statistics)
        policy = job.policy
        return (
            chunks
            | "Operators" >> ApplyChain(operators, job.batch_size, statistics=stats_pc, on_error=policy.on_error,
                                        check_finite=policy.check_finite, output="chunks",
                                        source_info=policy.source)
            | "Write" >> WriteShardSet.planned(commit, policy, statistics=stats_pc, overwrite=self._overwrite,
                                               locked_by_driver=driver)
        )
