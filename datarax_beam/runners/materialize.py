"""`materialize`: run a pipeline as a Beam job and commit its output as an ArrayRecord shard set.

A thin driver over the `transforms.job.Materialize` transform: validate the arguments -> plan
the shards -> fix the schema (declared, or the chain's output on the first batch,
`transforms.probe`) -> lock the output directory (`transforms.lock`) -> name the shards so a
committed set there stays intact -> ``p | Materialize`` (read >> `ApplyChain` >> `WriteShardSet`)
-> run -> read back the committed ``shardset.json``. Whatever fails, this job's temp files and
uncommitted shards are removed and the lock released.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, WorkerOptions
from apache_beam.runners.runner import PipelineState

from datarax_beam import logs
from datarax_beam.dag.pipeline import Pipeline
from datarax_beam.progress import JobProgress, is_enabled
from datarax_beam.runners import zygote
from datarax_beam.runners.options import (
    build_options,
    harness_log_level,
    in_process_single_worker,
    local_worker_processes,
    make_runner,
    runner_name,
    shared_writer_threads,
)
from datarax_beam.serving.next_to import export_next_to, transform_target
from datarax_beam.shards import shardset as ss
from datarax_beam.shards.codec import Schema
from datarax_beam.shards.compress import switch_interval
from datarax_beam.shards.shardset import ERRORS_DIR, ShardSet
from datarax_beam.transforms import files
from datarax_beam.transforms.commit import (
    TMP_PREFIX,
    Commit,
    committed_or_none,
    committed_paths,
    errors_path,
    plan_names,
    read_committed,
)
from datarax_beam.transforms.dead_letter import MAX_FAILED_FRACTION, ErrorPolicy
from datarax_beam.transforms.job import Job, Materialize, check_args, fix_schema, plan
from datarax_beam.transforms.lock import JobLock, remove_uncommitted
from datarax_beam.transforms.readers import NAMESPACE
from datarax_beam.transforms.settings import (
    as_schema,
    check_output_dir,
    default_num_shards,
    refuse_committed,
    versions,
)
from datarax_beam.transforms.staging import (
    is_plain_memory_source,
    shared_memory_dir,
    source_nbytes,
    unregister_in_process,
)

__all__ = ["Materialized", "as_schema", "counters", "default_num_shards", "materialize", "run"]


class Materialized(NamedTuple):
    """The committed shard set and the Beam `PipelineResult` (for metrics)."""

    shardset: ShardSet
    result: Any


def run(
    pipeline: Pipeline,
    output_dir: str,
    *,
    num_shards: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    options: PipelineOptions | list[str] | None = None,
    compression: str = "zstd",
    overwrite: bool = False,
    batch_size: int | None = None,
    on_error: str = "dead_letter",
    check_finite: bool = False,
    max_failed_fraction: float = MAX_FAILED_FRACTION,
    schema: Schema | Mapping[str, Any] | None = None,
    progress: bool | None = None,
    log_level: str | int | None = None,
    export_transform: bool | str | os.PathLike = False,
    writer_threads: int | None = None,
) -> Materialized:
    """Like `materialize`, but also returns the Beam `PipelineResult` (metrics, state)."""
    declared = check_args(pipeline, output_dir, num_shards, compression, batch_size, on_error, check_finite,
                          max_failed_fraction, schema)
    if writer_threads is not None and (isinstance(writer_threads, bool) or not isinstance(writer_threads, int)
                                       or writer_threads < 1):
        raise ValueError(f"`writer_threads` must be an int >= 1 or None, got {writer_threads!r}")
    output_dir = check_output_dir(output_dir, "materialize")
    opts = build_options(options)
    is_enabled(progress)  # checks its type
    if log_level is not None:  # the workers' level too (the runner reads it when it is made)
        opts.view_as(WorkerOptions).default_sdk_harness_log_level = harness_log_level(log_level)
    refuse_committed(output_dir, overwrite)
    if local_worker_processes(opts) and zygote.enabled():
        zygote.start()  # workers' imports run there while the driver plans and probes
    transform_dir = transform_target(pipeline, output_dir, export_transform)  # refused before the job
    source = pipeline.source
    bs = batch_size or pipeline.batch_size
    extra = {"source_info": source.source_info(), "batch_size": bs, "epoch": 0}
    policy = ErrorPolicy(on_error, check_finite, extra["source_info"])
    job = plan(pipeline, num_shards, shuffle, seed)
    # fixed before anything is written: declared, or the chain's output on the first batch
    schema, note = fix_schema(pipeline, job, declared, bs, policy, max_failed_fraction)

    job_id = uuid.uuid4().hex
    tmp_dir = ss.join(output_dir, TMP_PREFIX + job_id[:12])
    files.mkdirs(output_dir)
    job_lock = JobLock(output_dir, job_id, tmp_dir).acquire(lambda: committed_paths(output_dir))
    single = in_process_single_worker(opts)
    token = uuid.uuid4().hex if single else None
    local = local_worker_processes(opts)  # worker processes sharing this machine
    if writer_threads is None and local:
        writer_threads = shared_writer_threads(opts)
    staging_dir = None  # a memory source they read goes to shared memory (removed at the end)
    if local and job.tasks is not None and is_plain_memory_source(source):
        staging_dir = shared_memory_dir(source_nbytes(source))
    planned: list[str] = []
    try:
        refuse_committed(output_dir, overwrite)  # again, now that this job holds the directory
        names, replaced = plan_names(job.num_shards, committed_or_none(output_dir), job_id[:12])
        planned = [ss.join(output_dir, n) for n in names] + [errors_path(output_dir, n) for n in names]
        job_lock.update(list(names) + [f"{ERRORS_DIR}/{ss.errors_name(n)}" for n in names])
        files.mkdirs(tmp_dir)
        commit = Commit(output_dir, tmp_dir, job.num_shards, compression, int(seed), bool(shuffle),
                        pipeline.fingerprint(), versions(), extra, job.shard_sizes,
                        schema=schema.to_json(), on_error=on_error, job_id=job_id, shard_names=names,
                        replaced=replaced, max_failed_fraction=float(max_failed_fraction),
                        schema_note=note, writer_threads=writer_threads)
        p = beam.Pipeline(runner=make_runner(opts), options=opts)
        _ = p | "Materialize" >> Materialize.of_job(pipeline, Job(job, commit, policy, bs, single, token, staging_dir))
        total = sum(job.shard_sizes) if job.shard_sizes else None
        try:
            # (in-process, this thread writes: compression threads hand batches back sooner)
            with logs.level(log_level), switch_interval(), \
                    JobProgress(tmp_dir, total, enabled=progress) as display:
                result = p.run()
                display.attach(result)  # live Beam metrics, where the runner reports them
                state = result.wait_until_finish()
                shardset = read_committed(output_dir) if state == PipelineState.DONE else None
                display.finish(shardset)
        finally:
            if token is not None:
                unregister_in_process(token)
        if state != PipelineState.DONE:
            raise RuntimeError(f"The {runner_name(opts)} job ended in state {state}; nothing was committed")
    except BaseException:
        remove_uncommitted(output_dir, tmp_dir, planned, lambda: committed_paths(output_dir))
        raise
    finally:
        job_lock.release()
        if staging_dir is not None:
            shutil.rmtree(staging_dir, ignore_errors=True)
    if transform_dir is not None:  # the committed set's transform, for serving (docs/serving.md)
        export_next_to(pipeline, shardset, transform_dir)
    return Materialized(shardset, result)


def materialize(
    pipeline: Pipeline,
    output_dir: str,
    *,
    num_shards: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    options: PipelineOptions | list[str] | None = None,
    compression: str = "zstd",
    overwrite: bool = False,
    batch_size: int | None = None,
    on_error: str = "dead_letter",
    check_finite: bool = False,
    max_failed_fraction: float = MAX_FAILED_FRACTION,
    schema: Schema | Mapping[str, Any] | None = None,
    progress: bool | None = None,
    log_level: str | int | None = None,
    export_transform: bool | str | os.PathLike = False,
    writer_threads: int | None = None,
) -> ShardSet:
    """Runs ``pipeline`` on Apache Beam and commits its output as an ArrayRecord shard set.

    Records are written in the pipeline's first-epoch order (shuffle off), so decoding the shards
    in order equals iterating the pipeline online. Shard ``i`` holds a contiguous range of that
    order; with ``shuffle=True`` the order is first permuted by a seeded global permutation.

    The shard set's schema is fixed before the job writes: from the operator chain's output on
    the first batch (run on the driver), or ``schema``. One job at a time may write to
    ``output_dir`` (a lock file, checked at start and at commit); a committed set there stays
    readable until this job's ``shardset.json`` replaces it. See ``docs/reliability.md``.

    Args:
      pipeline: ``from_source(source, batch_size) >> OperatorNode(op) ...``.
      output_dir: a local path or any Beam filesystem URL (gs://, s3://, ...); taken literally
        (``run[1]`` is a name, not a pattern).
      num_shards: shard files to write (default: one per 65,536 records; 1 for iterator sources).
      shuffle: globally shuffle records across and within shards (seeded, runner-independent).
      seed: the shuffle seed.
      options: Beam `PipelineOptions` or argv flags (see `datarax_beam.runners.options`);
        default: DirectRunner in this process.
      compression: ``zstd`` (records compressed one by one on the writers' threads; see
        ``docs/format.md``), ``brotli`` or ``snappy`` (ArrayRecord's chunk compression: one
        thread per writer) or ``uncompressed``.
      overwrite: replace an existing committed shard set in ``output_dir`` (at commit).
      batch_size: the kernel's padded batch size (default: the pipeline's batch size).
      on_error: ``"dead_letter"`` (default): a record whose read, operators or encoding raises,
        or that does not fit the shard set's schema, is not written but recorded in
        ``output_dir/errors/`` (JSON lines) and counted (``ShardSet.num_failed``, counter
        ``records_failed``); its shard is one record shorter. ``"raise"``: the job fails on the
        first bad record, naming its index and stage, and nothing is committed.
      check_finite: also treat records with NaN or Inf in a float feature as bad (the statistics
        analysis is not affected: it sees every record).
      max_failed_fraction: the failure budget: when more than this fraction of the records
        failed, the job fails before committing, naming the counts (``1.0``: never).
      schema: the shard set's schema (a `Schema`, e.g. ``Schema.infer(example_columns)``, or its
        JSON form) instead of the one fixed from the first batch; records that do not fit it
        are dead letters of stage ``encode``.
      progress: show records done / total, records/s, ETA and failed records on stderr
        (default: when stderr is a terminal; see `datarax_beam.progress`).
      log_level: Beam's messages shown, in this process and the workers: None or ``"WARNING"``
        (default) drops known noise; ``"INFO"``/``"DEBUG"`` shows everything
        (see `datarax_beam.logs`).
      export_transform: ``True``: after the commit, export the chain's deterministic part with the
        job's statistics to ``output_dir/transform/`` for serving (``load_transform(output_dir)``;
        ``docs/serving.md``); a local directory: export it there. A host operator that cannot be
        exported is refused before the job runs.
      writer_threads: threads compressing records in each writer (default: ``min(4, cores)``
        of the worker's machine, divided among the worker processes when they share this one);
        the shards' bytes are the same for any value.

    Returns:
      the committed `ShardSet` (path, record count, shard paths and checksums, schema, job id,
      failed records).

    Raises:
      FileExistsError: ``output_dir`` is committed and ``overwrite`` is False.
      OutputDirLocked: another job is writing to ``output_dir`` (the error names it).
      FailureBudgetExceeded: more records failed than ``max_failed_fraction`` allows.
      ExportError: ``export_transform`` and an operator that cannot be exported (named).
      RuntimeError: the Beam job failed (no ``shardset.json`` is written); with
        ``on_error="raise"`` its message names the first bad record's index and stage.

    Example:
      >>> import tempfile, numpy as np
      >>> from datarax_beam import from_source
      >>> from datarax_beam.sources import MemorySource
      >>> src = MemorySource(data={"x": np.arange(10, dtype=np.float32)})
      >>> materialize(from_source(src, 4), tempfile.mkdtemp(), num_shards=2).num_records
      10
    """
    return run(pipeline, output_dir, num_shards=num_shards, shuffle=shuffle, seed=seed,
               options=options, compression=compression, overwrite=overwrite,
               batch_size=batch_size, on_error=on_error, check_finite=check_finite,
               max_failed_fraction=max_failed_fraction, schema=schema,
               progress=progress, log_level=log_level,
               export_transform=export_transform, writer_threads=writer_threads).shardset


def counters(result: Any) -> dict[str, int]:
    """The job's ``datarax_beam`` counters, summed over steps: ``{"records_written": ..., ...}``.

    Gauges (``worker_bundles``, ``worker_kernel_compilations``) are included with their latest
    value.
    """
    out: dict[str, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    for c in query["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(value or 0)
    for g in query.get("gauges", []):
        value = g.committed if g.committed is not None else g.attempted
        if value is not None and value.value is not None:
            out[g.key.metric.name] = int(value.value)
    return out
