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
from datarax_beam.runners.options import (
    build_options,
    in_process_single_worker,
    make_runner,
    runner_name,
)
from datarax_beam.shards import shardset as ss
from datarax_beam.shards.shardset import COMPRESSIONS, ShardSet
from datarax_beam.transforms.commit import TMP_PREFIX, Commit, prepare_output_dir, read_committed
from datarax_beam.transforms.operators import ApplyOperators
from datarax_beam.transforms.readers import (
    NAMESPACE,
    ReadIndexRanges,
    ReadSequential,
    ReadStreamShards,
    is_sharded_stream,
    plan_tasks,
)
from datarax_beam.transforms.staging import index_reader, save_array, unregister_in_process
from datarax_beam.transforms.writer import WriteShards, output_permutation
from datarax_beam.version import __version__

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


def _bound_chain(pipeline: Pipeline) -> tuple[list, dict | None]:
    """The operator chain with full-pass statistics bound, as the online kernel runs it.

    Missing statistics are computed by the pipeline (one pass over the source in this process);
    they are recorded in ``shardset.json`` so held-out data can be transformed identically.
    """
    if not hasattr(pipeline, "bound_operators"):
        return list(pipeline.operators), None
    operators = pipeline.bound_operators()
    stats = pipeline.statistics
    return operators, (stats.to_json() if len(stats) else None)


def _check(pipeline, output_dir, num_shards, compression, batch_size):
    if not isinstance(pipeline, Pipeline):
        raise TypeError(f"`pipeline` must be a datarax_beam Pipeline (from_source(...)), got {type(pipeline).__name__}")
    if not isinstance(output_dir, (str, os.PathLike)):
        raise TypeError(f"`output_dir` must be a path string (local or scheme://), got {type(output_dir).__name__}")
    for name, value in (("num_shards", num_shards), ("batch_size", batch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"`{name}` must be an int >= 1 or None, got {value!r}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"Unknown compression {compression!r}; expected one of {COMPRESSIONS}")


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
) -> Materialized:
    """Like `materialize`, but also returns the Beam `PipelineResult` (metrics, state)."""
    _check(pipeline, output_dir, num_shards, compression, batch_size)
    output_dir = os.fspath(output_dir)
    if "://" not in output_dir:
        output_dir = os.path.abspath(output_dir)
    opts = build_options(options)
    prepare_output_dir(output_dir, overwrite)
    tmp_dir = ss.join(output_dir, TMP_PREFIX + uuid.uuid4().hex[:12])
    staging = ss.join(tmp_dir, "staged")
    FileSystems.mkdirs(tmp_dir)
    source = pipeline.source
    bs = batch_size or pipeline.batch_size
    versions = _versions()
    extra = {"source_info": source.source_info(), "batch_size": bs, "epoch": 0}
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
        chunks = p | "Read" >> ReadIndexRanges(reader, tasks, order_path, bs, spread=not single)
        sizes = tuple(t.stop - t.start for t in tasks)
    else:
        shards = num_shards or 1
        # Parallel shard reads reproduce the online numbering only for an unshuffled stream.
        shuffled = bool(getattr(source.config, "shuffle", False)) or pipeline.shuffle_node is not None
        if is_sharded_stream(source) and not shuffled:
            chunks = p | "Read" >> ReadStreamShards(source, bs)
        else:
            chunks = p | "Read" >> ReadSequential(source, bs, pipeline.shuffle_node)
        sizes = None
    operators, statistics = _bound_chain(pipeline)
    commit = Commit(output_dir, tmp_dir, shards, compression, int(seed), bool(shuffle),
                    pipeline.fingerprint(), versions, extra, sizes, statistics)
    _ = (
        chunks
        | "Operators" >> ApplyOperators(operators, bs, epoch=0)
        | "Write" >> WriteShards(commit, shuffle=shuffle, seed=seed)
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

    Returns:
      the committed `ShardSet` (path, record count, shard paths, schema).

    Raises:
      FileExistsError: ``output_dir`` is committed and ``overwrite`` is False.
      RuntimeError: the Beam job failed (no ``shardset.json`` is written).

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
               batch_size=batch_size).shardset


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
