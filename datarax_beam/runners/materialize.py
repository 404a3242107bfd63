"""`materialize`: run a pipeline as a Beam job and commit its output as an ArrayRecord shard set.

Flow: validate -> refuse/un-commit the output directory -> plan -> build the Beam graph
(`ReadIndexRanges` | `ReadSequential` | `ReadStreamShards`) >> `ApplyOperators` >> `WriteShards`
-> run -> read back the committed ``shardset.json``.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import uuid
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

from datarax_beam.dag.pipeline import Pipeline
from datarax_beam.operators.statistics import bind_statistics, statistics_consumers
from datarax_beam.runners.options import (
    build_options,
    in_process_single_worker,
    make_runner,
    runner_name,
)
from datarax_beam.shards import shardset as ss
from datarax_beam.shards.shardset import COMPRESSIONS, ShardSet
from datarax_beam.statistics import BLOCK_SIZE, Statistics
from datarax_beam.transforms.commit import TMP_PREFIX, Commit, prepare_output_dir, read_committed
from datarax_beam.transforms.dead_letter import ErrorPolicy, check_on_error
from datarax_beam.transforms.operators import ApplyOperators
from datarax_beam.transforms.readers import (
    NAMESPACE,
    ReadIndexRanges,
    ReadSequential,
    ReadStreamShards,
    is_sharded_stream,
    plan_block_tasks,
    plan_tasks,
)
from datarax_beam.transforms.staging import (
    index_reader,
    save_array,
    unregister_in_process,
    write_bytes,
)
from datarax_beam.transforms.statistics import AnalyzeStatistics, add_statistics
from datarax_beam.transforms.writer import WriteShards, output_permutation
from datarax_beam.version import __version__

#: Prefix of the Beam counters of statistics analysis branches (``analysis_records_read``, ...),
#: so ``records_read``/``kernel_compilations`` count the main read -> transform -> write path only.
ANALYSIS = "analysis_"

#: Records per shard aimed at when ``num_shards`` is not given (random-access sources).
RECORDS_PER_SHARD = 65_536


class Materialized(NamedTuple):
    """The committed shard set and the Beam `PipelineResult` (for metrics)."""

    shardset: ShardSet
    result: Any


def default_num_shards(num_records: int | None) -> int:
    if not num_records:
        return 1
    return max(1, min(1024, math.ceil(num_records / RECORDS_PER_SHARD)))


def _versions() -> dict[str, str]:
    out = {"datarax_beam": __version__}
    for dist in ("apache-beam", "jax", "numpy", "array-record"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _statistics_graph(p, pipeline: Pipeline, batch_size: int, read_for_analysis, policy: ErrorPolicy):
    """Adds one Beam analysis branch per operator that needs statistics not given.

    Each branch reads the source again (index order, epoch 0, one chunk per statistics block),
    runs the operators before the consumer, and analyzes their output (`AnalyzeStatistics`).
    Returns (operators, static statistics JSON or None, statistics side input or None): when
    every statistic is given, the operators are bound here and no branch is added.
    """
    operators = list(pipeline.operators)
    given = Statistics(pipeline._given_statistics or {})
    known = set(given)
    stats_pc = None
    for k in statistics_consumers(operators):
        missing = [s for s in operators[k].statistics_specs() if s.name not in known]
        if not missing:
            continue
        if stats_pc is None:
            stats_pc = p | "GivenStatistics" >> beam.Create([given.to_json()])
        needs = any(i in statistics_consumers(operators) for i in range(k))
        new = (
            read_for_analysis(f"AnalyzeRead{k}")
            | f"AnalyzeOperators{k}" >> ApplyOperators(operators[:k], batch_size, epoch=0,
                                                       statistics=stats_pc if needs else None,
                                                       policy=policy, prefix=ANALYSIS)
            | f"Analyze{k}" >> AnalyzeStatistics(missing)
        )
        stats_pc = add_statistics(stats_pc, new, f"Statistics{k}")
        known |= {s.name for s in missing}
    if stats_pc is not None:
        return operators, None, stats_pc

    def not_given(prefix, specs):
        raise KeyError(f"Statistics {[s.name for s in specs]} are missing")

    operators, _ = bind_statistics(operators, given, not_given)
    return operators, (given.to_json() if len(given) else None), None


def _check(pipeline, output_dir, num_shards, compression, batch_size, on_error, check_finite):
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
) -> Materialized:
    """Like `materialize`, but also returns the Beam `PipelineResult` (metrics, state)."""
    _check(pipeline, output_dir, num_shards, compression, batch_size, on_error, check_finite)
    output_dir = os.fspath(output_dir)
    if "://" not in output_dir:
        output_dir = os.path.abspath(output_dir)
    opts = build_options(options)
    prepare_output_dir(output_dir, overwrite)
    tmp_dir = ss.join(output_dir, TMP_PREFIX + uuid.uuid4().hex[:12])
    staging = ss.join(tmp_dir, "staged")
    FileSystems.mkdirs(tmp_dir)
    # a file in the temp directory, so a later run finds (by pattern) and removes a dead job's
    # directory on every filesystem, even when all its parts were already renamed
    write_bytes(ss.join(tmp_dir, "JOB"), b"datarax_beam materialize temp directory\n")
    source = pipeline.source
    bs = batch_size or pipeline.batch_size
    versions = _versions()
    extra = {"source_info": source.source_info(), "batch_size": bs, "epoch": 0}
    policy = ErrorPolicy(on_error, check_finite, extra["source_info"])
    single = in_process_single_worker(opts)
    token = uuid.uuid4().hex if single else None

    p = beam.Pipeline(runner=make_runner(opts), options=opts)
    if source.is_random_access:
        order = np.asarray(pipeline.epoch_indices(0), dtype=np.int64)
        n = len(order)
        shards = num_shards or default_num_shards(n)
        if shuffle:
            order = order[output_permutation(seed, n)]
        order_path = None
        if not np.array_equal(order, np.arange(n)):
            order_path = ss.join(staging, "order.npy")
            save_array(order_path, order)
        tasks = plan_tasks(n, shards)
        reader = index_reader(source, staging, in_process_token=token)
        chunks = p | "Read" >> ReadIndexRanges(reader, tasks, order_path, bs, spread=not single, policy=policy)
        sizes = tuple(t.stop - t.start for t in tasks)

        def read_for_analysis(label):  # index order, one chunk per statistics block
            block_tasks = plan_block_tasks(n, shards, BLOCK_SIZE)
            return p | label >> ReadIndexRanges(reader, block_tasks, None, BLOCK_SIZE, spread=not single,
                                                policy=policy, prefix=ANALYSIS)
    else:
        shards = num_shards or 1
        # Parallel shard reads reproduce the online numbering only for an unshuffled stream.
        shuffled = bool(getattr(source.config, "shuffle", False)) or pipeline.shuffle_node is not None

        def read_stream(label, shuffle_node=pipeline.shuffle_node, prefix=""):
            if is_sharded_stream(source) and not shuffled:
                return p | label >> ReadStreamShards(source, bs, prefix)
            return p | label >> ReadSequential(source, bs, shuffle_node, prefix)

        chunks = read_stream("Read")
        sizes = order_path = None

        def read_for_analysis(label):  # statistics are over epoch 0 in index order: no shuffle
            return read_stream(label, None, ANALYSIS)

    operators, statistics, stats_pc = _statistics_graph(p, pipeline, bs, read_for_analysis, policy)
    commit = Commit(output_dir, tmp_dir, shards, compression, int(seed), bool(shuffle),
                    pipeline.fingerprint(), versions, extra, sizes, statistics, on_error, order_path)
    _ = (
        chunks
        | "Operators" >> ApplyOperators(operators, bs, epoch=0, statistics=stats_pc, policy=policy)
        | "Write" >> WriteShards(commit, shuffle=shuffle, seed=seed, statistics=stats_pc, policy=policy)
    )
    try:
        result = p.run()
        state = result.wait_until_finish()
    finally:
        if token is not None:
            unregister_in_process(token)
    if state != PipelineState.DONE:
        raise RuntimeError(f"The {runner_name(opts)} job ended in state {state}; nothing was committed")
    return Materialized(read_committed(output_dir), result)


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
) -> ShardSet:
    """Runs ``pipeline`` on Apache Beam and commits its output as an ArrayRecord shard set.

    Records are written in the pipeline's first-epoch order (shuffle off), so decoding the shards
    in order equals iterating the pipeline online. Shard ``i`` holds a contiguous range of that
    order; with ``shuffle=True`` the order is first permuted by a seeded global permutation.

    Args:
      pipeline: ``from_source(source, batch_size) >> OperatorNode(op) ...``.
      output_dir: a local path or any Beam filesystem URL (gs://, s3://, ...).
      num_shards: shard files to write (default: one per 65,536 records; 1 for iterator sources).
      shuffle: globally shuffle records across and within shards (seeded, runner-independent).
      seed: the shuffle seed.
      options: Beam `PipelineOptions` or argv flags (see `datarax_beam.runners.options`);
        default: DirectRunner in this process.
      compression: ``zstd``, ``brotli``, ``snappy`` or ``uncompressed``.
      overwrite: replace an existing committed shard set in ``output_dir``.
      batch_size: the kernel's padded batch size (default: the pipeline's batch size).
      on_error: ``"dead_letter"`` (default): a record whose read, operators or encoding raises,
        or whose schema differs from the shard set's, is not written but recorded in
        ``output_dir/errors/`` (JSON lines) and counted (``ShardSet.num_failed``, counter
        ``records_failed``); its shard is one record shorter. ``"raise"``: the job fails on the
        first bad record, naming its index and stage, and nothing is committed. See
        ``docs/reliability.md``.
      check_finite: also treat records with NaN or Inf in a float feature as bad.

    Returns:
      the committed `ShardSet` (path, record count, shard paths, schema, failed records).

    Raises:
      FileExistsError: ``output_dir`` is committed and ``overwrite`` is False.
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
               batch_size=batch_size, on_error=on_error, check_finite=check_finite).shardset


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
