"""The operator `DoFn`: runs the pipeline's operator chain on chunks through `ChainKernel`.

The kernel is the same builder the online pipeline uses, built in ``setup()`` (nothing jitted is
pickled) and padded to a fixed batch size, so XLA compiles once per worker and input signature,
however many bundles the worker processes. Keys come from (seed, stream, epoch, global index).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from datarax_beam.core import columns as cols
from datarax_beam.core.operator import OperatorModule
from datarax_beam.kernels import ChainKernel
from datarax_beam.operators.statistics import StatisticsOperator, bind_statistics
from datarax_beam.statistics import Statistics
from datarax_beam.transforms.dead_letter import (
    DEFAULT_POLICY,
    ErrorPolicy,
    NotFiniteError,
    failure,
    keep,
    not_finite,
    per_record,
)
from datarax_beam.transforms.readers import NAMESPACE, Chunk


class ApplyOperatorsFn(beam.DoFn):
    """Applies an operator chain to every `Chunk`.

    Counters (namespace ``datarax_beam``): ``kernel_compilations``, ``kernel_micro_secs``,
    ``records_transformed``, ``operator_bundles``; gauges ``worker_bundles`` and
    ``worker_kernel_compilations`` (cumulative for this DoFn instance, i.e. per worker: they
    survive bundles whose own metrics a runner discards, such as retried ones).

    Args:
      operators: the chain (pickled with the DoFn; each operator is small: config + base key).
      batch_size: the kernel's fixed padded batch size.
      epoch: the epoch whose keys to use (0, the first online epoch).
      policy: bad records (`ErrorPolicy`): when the chain raises on a batch, the batch's records
        run one by one through the same kernel (same padded shape, same compilation, so the good
        records' outputs are bit-identical) and those that still raise become dead letters;
        ``check_finite`` also turns records with NaN/Inf outputs into dead letters.

    Operators that need full-pass statistics and are not bound yet get them from the
    ``statistics`` side input (a JSON dict) in the first ``process`` call; the kernel is built
    then, once per worker.
    """

    def __init__(self, operators: Sequence[OperatorModule], batch_size: int, epoch: int = 0,
                 policy: ErrorPolicy = DEFAULT_POLICY, prefix: str = ""):
        self._operators = tuple(operators)
        self._policy = policy
        self._batch_size = int(batch_size)
        self._epoch = int(epoch)
        self._kernel: ChainKernel | None = None
        self._compilations = Metrics.counter(NAMESPACE, f"{prefix}kernel_compilations")
        self._micros = Metrics.counter(NAMESPACE, f"{prefix}kernel_micro_secs")
        self._records = Metrics.counter(NAMESPACE, f"{prefix}records_transformed")
        self._bundles = Metrics.counter(NAMESPACE, f"{prefix}operator_bundles")
        self._worker_bundles = Metrics.gauge(NAMESPACE, f"{prefix}worker_bundles")
        self._worker_compiles = Metrics.gauge(NAMESPACE, f"{prefix}worker_kernel_compilations")

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_kernel"] = None  # never pickle jitted state
        return state

    def _needs_statistics(self) -> bool:
        return any(isinstance(op, StatisticsOperator) and not op.is_bound for op in self._operators)

    def _build(self, statistics: dict | None) -> ChainKernel:
        operators = self._operators
        if self._needs_statistics():
            if statistics is None:
                raise RuntimeError("The operator chain needs full-pass statistics, but none were provided")

            def missing(prefix, specs):
                raise KeyError(f"Statistics {[s.name for s in specs]} were not computed by the job")

            operators, _ = bind_statistics(operators, Statistics.from_json(statistics), missing)
        return ChainKernel(operators, pad_to=self._batch_size)

    def setup(self):
        self._kernel = None if self._needs_statistics() else self._build(None)
        self._seen_compiles = 0
        self._bundles_seen = 0

    def start_bundle(self):
        self._bundles.inc()
        self._bundles_seen += 1

    def finish_bundle(self):
        self._worker_bundles.set(self._bundles_seen)
        if self._kernel is not None:
            self._worker_compiles.set(self._kernel.compile_count)

    def process(self, chunk: Chunk, statistics: dict | None = None):
        if self._kernel is None:
            self._kernel = self._build(statistics)
        kernel = self._kernel
        start = time.perf_counter()
        try:
            columns = kernel(chunk.columns, chunk.indices, self._epoch)
        except Exception:  # noqa: BLE001 - find the bad records, keep the good ones
            chunk, columns = self._per_record(chunk)
        self._micros.inc(int((time.perf_counter() - start) * 1e6))
        if kernel.compile_count != self._seen_compiles:
            self._compilations.inc(kernel.compile_count - self._seen_compiles)
            self._seen_compiles = kernel.compile_count
        if self._policy.check_finite:
            chunk, columns = self._drop_not_finite(chunk, columns)
        self._records.inc(len(chunk.indices))
        yield chunk._replace(columns=columns)

    def _per_record(self, chunk: Chunk) -> tuple[Chunk, dict]:
        def run_one(columns, idx):
            return self._kernel(columns, idx, self._epoch)

        columns, good, failures = per_record(run_one, chunk.columns, chunk.indices, chunk.positions,
                                             "operators", self._policy)
        return keep(chunk, good, failures), columns

    def _drop_not_finite(self, chunk: Chunk, columns: dict) -> tuple[Chunk, dict]:
        bad = not_finite(columns)
        if not bad:
            return chunk, columns
        failures = [failure(self._policy, chunk.indices[r], chunk.positions[r], "check_finite",
                            NotFiniteError(f"Feature {name!r} holds NaN or Inf"))
                    for r, name in sorted(bad.items())]
        good = np.ones(len(chunk.indices), dtype=bool)
        good[list(bad)] = False
        return keep(chunk, good, failures), cols.take(columns, np.flatnonzero(good))



class ApplyOperators(beam.PTransform):
    """The composite form of `ApplyOperatorsFn` (a no-op copy when the chain is empty)."""

    def __init__(self, operators: Sequence[OperatorModule], batch_size: int, epoch: int = 0,
                 statistics=None, policy: ErrorPolicy = DEFAULT_POLICY, prefix: str = ""):
        super().__init__()
        self._fn = ApplyOperatorsFn(operators, batch_size, epoch, policy, prefix)
        self._statistics = statistics  # a singleton PCollection of statistics JSON, or None

    def expand(self, chunks):
        if self._statistics is None:
            return chunks | "Kernel" >> beam.ParDo(self._fn)
        return chunks | "Kernel" >> beam.ParDo(self._fn, statistics=beam.pvalue.AsSingleton(self._statistics))
