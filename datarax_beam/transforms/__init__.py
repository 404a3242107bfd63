"""Apache Beam transforms: readers per source kind, the operator DoFn, the shard writer."""

from datarax_beam.transforms.commit import Commit, FinalizeShardsFn, PartInfo, plan_names
from datarax_beam.transforms.dead_letter import FailureBudgetExceeded
from datarax_beam.transforms.lock import OutputDirLocked
from datarax_beam.transforms.operators import ApplyOperators, ApplyOperatorsFn
from datarax_beam.transforms.readers import (
    NAMESPACE,
    Chunk,
    ReadIndexRanges,
    ReadSequential,
    ReadStreamShards,
    ShardTask,
    plan_tasks,
)
from datarax_beam.transforms.staging import IndexReader, index_reader, stage_memory_source
from datarax_beam.transforms.writer import WriteChunksFn, WriteShards, output_permutation

__all__ = [
    "NAMESPACE",
    "ApplyOperators",
    "ApplyOperatorsFn",
    "Chunk",
    "Commit",
    "FailureBudgetExceeded",
    "FinalizeShardsFn",
    "IndexReader",
    "OutputDirLocked",
    "PartInfo",
    "ReadIndexRanges",
    "ReadSequential",
    "ReadStreamShards",
    "ShardTask",
    "WriteChunksFn",
    "WriteShards",
    "index_reader",
    "output_permutation",
    "plan_names",
    "plan_tasks",
    "stage_memory_source",
]
