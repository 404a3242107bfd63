"""Apache Beam transforms.

The public composites — for any Beam pipeline, and what `datarax_beam.materialize` is built
from: `ApplyChain` (indexed records -> transformed records, jitted per bundle),
`WriteShardSet` (indexed records -> a committed shard set), `ReadShardSet` (a committed shard
set -> records, split by record ranges) and `Materialize` (a whole job on a `PBegin`). The rest
are their parts: readers per source kind, the operator DoFn, the shard writer and commit.

The names below load their module on first use (PEP 562). A Beam SDK worker imports these modules
from several threads at once (unpickling one stage's DoFns while decoding another stage's
elements), and CPython's import locks deadlock when two threads import two submodules of a package
whose ``__init__`` imports its submodules (each thread holds one submodule's lock and waits for the
package's); a package ``__init__`` that imports nothing cannot take part in that cycle.
"""

import importlib

_EXPORTS = {
    "ApplyChain": "chain",
    "Commit": "commit", "FinalizeShardsFn": "commit", "PartInfo": "commit", "plan_names": "commit",
    "FailureBudgetExceeded": "dead_letter",
    "Materialize": "job",
    "OutputDirLocked": "lock",
    "ApplyOperators": "operators", "ApplyOperatorsFn": "operators",
    "ReadShardSet": "read_set",
    "NAMESPACE": "readers", "Chunk": "readers", "ReadIndexRanges": "readers", "ReadSequential": "readers",
    "ReadStreamShards": "readers", "ShardTask": "readers", "plan_tasks": "readers",
    "DeadLetter": "records",
    "IndexReader": "staging", "index_reader": "staging", "stage_memory_source": "staging",
    "WriteShardSet": "write_set",
    "WriteChunksFn": "writer", "WriteShards": "writer", "output_permutation": "writer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
