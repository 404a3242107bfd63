"""`ApplyChain`: an operator chain as a composite transform over records (or chunks).

The records of each bundle are grouped into chunks of ``batch_size``; `ApplyOperators` runs the
chain on them through `ChainKernel` — the builder the online pipeline uses, built in the DoFn's
``setup()``, padded to ``batch_size`` so XLA compiles once per worker. A stochastic operator's key
for a record comes from (its seed, its stream, the epoch, the record's *global index*), never
from the batch or bundle it ran in, so the outputs equal online iteration record for record.

Operators that need full-pass statistics get them as tf.Transform's ``AnalyzeAndTransformDataset``
does: given (``statistics=``), or computed by an analysis branch over the same input (one branch
per pass of `analysis_plan`, block-wise by global index, so bit-identical to online analysis).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import apache_beam as beam

from datarax_beam.core.operator import OperatorModule
from datarax_beam.dag.nodes import OperatorNode
from datarax_beam.operators.statistics import StatisticsOperator, analysis_plan, bind_statistics
from datarax_beam.statistics import Statistics
from datarax_beam.transforms.dead_letter import ErrorPolicy, check_on_error
from datarax_beam.transforms.operators import ApplyOperators
from datarax_beam.transforms.records import ToChunksFn, check_batch_size, chunk_records
from datarax_beam.transforms.statistics import AnalyzeStatistics, add_statistics

#: Prefix of the counters of statistics analysis branches (``analysis_records_read``, ...), so
#: ``records_read``/``kernel_compilations`` count the main read -> transform -> write path only.
ANALYSIS = "analysis_"
OUTPUTS = ("records", "chunks")


def check_operators(operators: Any, where: str = "ApplyChain") -> list[OperatorModule]:
    """The chain as a list of operators (`OperatorNode`s are unwrapped)."""
    if isinstance(operators, (OperatorModule, OperatorNode)) or not isinstance(operators, Sequence):
        raise TypeError(f"{where}: `operators` must be a list of operators, got {type(operators).__name__}")
    out = []
    for i, op in enumerate(operators):
        op = op.operator if isinstance(op, OperatorNode) else op
        if not isinstance(op, OperatorModule):
            raise TypeError(f"{where}: `operators[{i}]` must be an operator (e.g. ElementOperator), got "
                            f"{type(op).__name__}")
        out.append(op)
    return out


def statistics_branches(p, operators: Sequence[OperatorModule], given: Mapping | None, batch_size: int,
                        read_for_analysis: Callable[[str], Any], policy: ErrorPolicy, label: str = ""):
    """Adds one analysis branch per pass of `analysis_plan` (the passes online analysis makes).

    Each branch reads with ``read_for_analysis(label)`` (chunks keyed by global index), runs the
    operators before the pass and analyzes their output (`AnalyzeStatistics`); a pass covers every
    consumer whose analyzed features the operators between them leave alone. Statistics in
    ``given`` and those of bound consumers are not analyzed again.

    Returns ``(operators, statistics JSON or None, statistics side input or None)``: when every
    statistic is known, the operators are bound here and no branch is added.
    """
    operators = list(operators)
    given = Statistics(given or {})
    known = set(given)
    for op in operators:  # already bound consumers keep their statistics (as online)
        if isinstance(op, StatisticsOperator) and op.is_bound:
            known.update(op.bound_statistics)
    stats_pc = None
    for k, specs in analysis_plan(operators, known):
        if stats_pc is None:
            stats_pc = p | f"{label}GivenStatistics" >> beam.Create([given.to_json()])
        needs = any(isinstance(op, StatisticsOperator) and not op.is_bound for op in operators[:k])
        new = (
            read_for_analysis(f"{label}AnalyzeRead{k}")
            | f"{label}AnalyzeOperators{k}" >> ApplyOperators(operators[:k], batch_size, epoch=0,
                                                              statistics=stats_pc if needs else None,
                                                              policy=policy, prefix=ANALYSIS)
            | f"{label}Analyze{k}" >> AnalyzeStatistics(specs)
        )
        stats_pc = add_statistics(stats_pc, new, f"{label}Statistics{k}")
    if stats_pc is not None:
        return operators, None, stats_pc

    def not_given(prefix, specs):
        raise KeyError(f"Statistics {[s.name for s in specs]} are missing")

    operators, _ = bind_statistics(operators, given, not_given)
    return operators, (given.to_json() if len(given) else None), None


class ApplyChain(beam.PTransform):
    """Runs an operator chain on indexed records, batched and jitted per bundle as `materialize`.

    Input: ``(index, features)`` pairs — ``index`` is the record's global index (0, 1, ... in the
    order the data is meant to be read: it keys stochastic operators, so results equal online
    iteration), ``features`` a dict of values (numbers, arrays, str, bytes) — or `Chunk`s.
    Output: the transformed records as ``(index, features)`` pairs (``output="records"``), or as
    chunks (``output="chunks"``: cheaper to pass on to `WriteShardSet`).

    Args:
      operators: the chain: operators (``ElementOperator``, ...) or `OperatorNode`s.
      batch_size: records per kernel call (the fixed padded batch: XLA compiles once per worker).
      statistics: full-pass statistics for operators that need them: a dict (``Statistics`` or
        its JSON form, e.g. ``pipeline.statistics``), a singleton PCollection of such a dict, or
        None: whatever is missing is computed over this transform's input, as online analysis
        computes it (the records' indices must then be ``0..n-1``).
      on_error: ``"raise"`` (default): the job fails on the first record the chain raises on,
        naming its index. ``"dead_letter"``: such a record comes out as
        ``(index, DeadLetter(entry))`` instead (in chunks: in ``Chunk.failures``), which
        `WriteShardSet` records under ``errors/``.
      check_finite: with ``"dead_letter"``, also treat records with NaN/Inf outputs as failed.
      output: ``"records"`` or ``"chunks"``.
      source_info: copied into dead-letter entries (default ``{"source": "ApplyChain"}``).
      epoch: whose keys stochastic operators use (0: the first online epoch, as `materialize`).

    Example:
      >>> import apache_beam as beam, numpy as np, tempfile
      >>> from datarax_beam.operators import ElementOperator, ElementOperatorConfig
      >>> from datarax_beam.runners import options
      >>> from datarax_beam.sources import ArrayRecordSourceModule
      >>> from datarax_beam.transforms import WriteShardSet
      >>> double = ElementOperator(ElementOperatorConfig(),
      ...                          fn=lambda e, k: e.update_data({"x": e.data["x"] * 2}))
      >>> out, flags = tempfile.mkdtemp(), options.build_options(options.in_process())
      >>> with beam.Pipeline(runner=options.make_runner(flags), options=flags) as p:
      ...     _ = (p | beam.Create([(i, {"x": np.float32(i)}) for i in range(5)])
      ...            | ApplyChain([double], batch_size=4)
      ...            | WriteShardSet(out))
      >>> ArrayRecordSourceModule(out).get_batch(np.arange(5))["x"].tolist()
      [0.0, 2.0, 4.0, 6.0, 8.0]
    """

    def __init__(self, operators: Sequence[Any], batch_size: int, *, statistics: Any = None,
                 on_error: str = "raise", check_finite: bool = False, output: str = "records",
                 source_info: Mapping[str, Any] | None = None, epoch: int = 0):
        super().__init__()
        self._operators = check_operators(operators)
        self._batch_size = check_batch_size(batch_size)
        check_on_error(on_error)
        if not isinstance(check_finite, bool):
            raise TypeError(f"ApplyChain: `check_finite` must be a bool, got {check_finite!r}")
        if output not in OUTPUTS:
            raise ValueError(f"ApplyChain: unknown `output` {output!r}; expected one of {OUTPUTS}")
        if statistics is not None and not isinstance(statistics, (Mapping, beam.pvalue.PCollection)):
            raise TypeError(f"ApplyChain: `statistics` must be a dict of statistics or a singleton "
                            f"PCollection of one, got {type(statistics).__name__}")
        self._statistics, self._output, self._epoch = statistics, output, int(epoch)
        info = dict(source_info) if source_info is not None else {"source": "ApplyChain"}
        self._policy = ErrorPolicy(on_error, check_finite, info)

    def expand(self, pcoll):
        chunks = pcoll | "Chunks" >> beam.ParDo(ToChunksFn(self._batch_size, "ApplyChain"))
        bs, policy = self._batch_size, self._policy
        if isinstance(self._statistics, beam.pvalue.PCollection):
            operators, stats_pc = self._operators, self._statistics
        else:
            analysis_policy = policy._replace(check_finite=False)  # statistics see every record
            operators, _, stats_pc = statistics_branches(pcoll.pipeline, self._operators, self._statistics, bs,
                                                         lambda label: chunks, analysis_policy, "ApplyChain")
        out = chunks | "Operators" >> ApplyOperators(operators, bs, epoch=self._epoch, statistics=stats_pc,
                                                     policy=policy)
        if self._output == "records":
            out = out | "Records" >> beam.FlatMap(chunk_records)
        return out
