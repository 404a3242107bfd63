"""Apache Beam transforms.

The public composites — for any Beam pipeline, and what `datarax_beam.materialize` is built
from: `ApplyChain` (indexed records -> transformed records, jitted per bundle),
`WriteShardSet` (indexed records -> a committed shard set), `ReadShardSet` (a committed shard
set -> records, split by record ranges) and `Materialize` (a whole job on a `PBegin`). The rest
are their parts: readers per source kind, the operator DoFn, the shard writer and commit.
"""

from datarax_beam.transforms.chain import ApplyChain
from datarax_beam.transforms.commit import Commit, FinalizeShardsFn, PartInfo, plan_names
from datarax_beam.transforms.dead_letter import FailureBudgetExceeded
from datarax_beam.transforms.job import Materialize
from datarax_beam.transforms.lock import OutputDirLocked
from datarax_beam.transforms.operators import ApplyOperators, ApplyOperatorsFn
from datarax_beam.transforms.read_set import ReadShardSet
from datarax_beam.transforms.readers import (
    NAMESPACE,
    Chunk,
    ReadIndexRanges,
    ReadSequential,
    ReadStreamShards,
    ShardTask,
    plan_tasks,
)
from datarax_beam.transforms.records import DeadLetter
from datarax_beam.transforms.staging import IndexReader, index_reader, stage_memory_source
from datarax_beam.transforms.write_set import WriteShardSet
from datarax_beam.transforms.writer import WriteChunksFn, WriteShards, output_permutation

__all__ = [
    "NAMESPACE",
    "ApplyChain",
    "ApplyOperators",
    "ApplyOperatorsFn",
    "Chunk",
    "Commit",
    "DeadLetter",
    "FailureBudgetExceeded",
    "FinalizeShardsFn",
    "IndexReader",
    "Materialize",
    "OutputDirLocked",
    "PartInfo",
    "ReadIndexRanges",
    "ReadSequential",
    "ReadShardSet",
    "ReadStreamShards",
    "ShardTask",
    "WriteChunksFn",
    "WriteShardSet",
    "WriteShards",
    "index_reader",
    "output_permutation",
    "plan_names",
    "plan_tasks",
    "stage_memory_source",
]
