"""The Beam graph of a `materialize` job: read -> (statistics branches) -> operators -> write.

`plan` decides, on the driver and before anything is written, the output order and the shards:
random-access sources get their shards as contiguous ranges of the output order (so one fused
stage reads, transforms and writes each shard, with no GroupByKey of record data); iterator
sources are read sequentially (or by source shard) and assigned to shards from the total count.
`build` adds the transforms to a Beam pipeline once the output directory is locked.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import apache_beam as beam
import numpy as np

from datarax_beam.dag.pipeline import Pipeline
from datarax_beam.operators.statistics import StatisticsOperator, analysis_plan, bind_statistics
from datarax_beam.shards import shardset as ss
from datarax_beam.statistics import BLOCK_SIZE, Statistics
from datarax_beam.transforms.commit import Commit
from datarax_beam.transforms.dead_letter import ErrorPolicy
from datarax_beam.transforms.operators import ApplyOperators
from datarax_beam.transforms.readers import (
    ReadIndexRanges,
    ReadSequential,
    ReadStreamShards,
    ShardTask,
    is_sharded_stream,
    plan_block_tasks,
    plan_tasks,
)
from datarax_beam.transforms.staging import index_reader, save_array
from datarax_beam.transforms.statistics import AnalyzeStatistics, add_statistics
from datarax_beam.transforms.writer import WriteShards, output_permutation

#: Prefix of the Beam counters of statistics analysis branches (``analysis_records_read``, ...),
#: so ``records_read``/``kernel_compilations`` count the main read -> transform -> write path only.
ANALYSIS = "analysis_"

#: Records per shard aimed at when ``num_shards`` is not given (random-access sources).
RECORDS_PER_SHARD = 65_536


def default_num_shards(num_records: int | None) -> int:
    if not num_records:
        return 1
    return max(1, min(1024, math.ceil(num_records / RECORDS_PER_SHARD)))


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


def _statistics_graph(p, pipeline: Pipeline, batch_size: int, read_for_analysis, policy: ErrorPolicy):
    """Adds one Beam analysis branch per pass of `analysis_plan` (the passes online analysis makes).

    Each branch reads the source again (index order, epoch 0, one chunk per statistics block),
    runs the operators before the pass, and analyzes their output (`AnalyzeStatistics`); a pass
    covers every consumer whose analyzed features the operators between them leave alone.
    Returns (operators, static statistics JSON or None, statistics side input or None): when
    every statistic is given, the operators are bound here and no branch is added.
    """
    operators = list(pipeline.operators)
    given = Statistics(pipeline._given_statistics or {})
    known = set(given)
    for op in operators:  # already bound consumers keep their statistics (as online)
        if isinstance(op, StatisticsOperator) and op.is_bound:
            known.update(op.bound_statistics)
    stats_pc = None
    # the passes online analysis makes (`analysis_plan`): one branch per pass, not per consumer
    for k, specs in analysis_plan(operators, known):
        if stats_pc is None:
            stats_pc = p | "GivenStatistics" >> beam.Create([given.to_json()])
        needs = any(isinstance(op, StatisticsOperator) and not op.is_bound for op in operators[:k])
        new = (
            read_for_analysis(f"AnalyzeRead{k}")
            | f"AnalyzeOperators{k}" >> ApplyOperators(operators[:k], batch_size, epoch=0,
                                                       statistics=stats_pc if needs else None,
                                                       policy=policy, prefix=ANALYSIS)
            | f"Analyze{k}" >> AnalyzeStatistics(specs)
        )
        stats_pc = add_statistics(stats_pc, new, f"Statistics{k}")
    if stats_pc is not None:
        return operators, None, stats_pc

    def not_given(prefix, specs):
        raise KeyError(f"Statistics {[s.name for s in specs]} are missing")

    operators, _ = bind_statistics(operators, given, not_given)
    return operators, (given.to_json() if len(given) else None), None


def build(p: beam.Pipeline, pipeline: Pipeline, job: Plan, commit: Commit, batch_size: int,
          policy: ErrorPolicy, *, single_worker: bool, token: str | None) -> None:
    """Adds the whole job to ``p``: read, statistics branches, operators, write and commit.

    The statistics branches never apply ``check_finite``: statistics are over every record, as
    online (NaN-aware statistics count NaNs; they do not drop records).
    """
    source = pipeline.source
    staging = ss.join(commit.tmp_dir, "staged")
    analysis_policy = policy._replace(check_finite=False)
    if job.tasks is not None:
        n = len(job.order)
        order_path = None
        if not np.array_equal(job.order, np.arange(n)):
            order_path = ss.join(staging, "order.npy")
            save_array(order_path, job.order)
        reader = index_reader(source, staging, in_process_token=token)
        chunks = p | "Read" >> ReadIndexRanges(reader, list(job.tasks), order_path, batch_size,
                                               spread=not single_worker, policy=policy)

        def read_for_analysis(label):  # index order, one chunk per statistics block
            block_tasks = plan_block_tasks(n, job.num_shards, BLOCK_SIZE)
            return p | label >> ReadIndexRanges(reader, block_tasks, None, BLOCK_SIZE, spread=not single_worker,
                                                policy=analysis_policy, prefix=ANALYSIS)
    else:
        # Parallel shard reads reproduce the online numbering only for an unshuffled stream.
        shuffled = bool(getattr(source.config, "shuffle", False)) or pipeline.shuffle_node is not None

        def read_stream(label, shuffle_node=pipeline.shuffle_node, prefix=""):
            if is_sharded_stream(source) and not shuffled:
                return p | label >> ReadStreamShards(source, batch_size, prefix)
            return p | label >> ReadSequential(source, batch_size, shuffle_node, prefix)

        chunks = read_stream("Read")

        def read_for_analysis(label):  # statistics are over epoch 0 in index order: no shuffle
            return read_stream(label, None, ANALYSIS)

    operators, statistics, stats_pc = _statistics_graph(p, pipeline, batch_size, read_for_analysis,
                                                        analysis_policy)
    commit = commit._replace(statistics=statistics)
    _ = (
        chunks
        | "Operators" >> ApplyOperators(operators, batch_size, epoch=0, statistics=stats_pc, policy=policy)
        | "Write" >> WriteShards(commit, shuffle=commit.shuffle, seed=commit.seed, statistics=stats_pc,
                                 policy=policy)
    )
