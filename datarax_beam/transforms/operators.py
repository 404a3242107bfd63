"""The operator `DoFn`: runs the pipeline's operator chain on chunks through `ChainKernel`.

The kernel is the same builder the online pipeline uses, built in ``setup()`` (nothing jitted is
pickled) and padded to a fixed batch size, so XLA compiles once per worker and input signature,
however many bundles the worker processes. Keys come from (seed, stream, epoch, global index).

Host and device work overlap: ``process`` dispatches the kernel on a chunk (JAX runs it
asynchronously) and only then converts and emits the previous chunk, so one chunk is in flight
per bundle; ``finish_bundle`` emits the last one. Each chunk is converted to numpy once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from datarax_beam.core import columns as cols
from datarax_beam.core.operator import OperatorModule
from datarax_beam.kernels import ChainKernel, Dispatched
from datarax_beam.kernels.errors import trace_error_operator
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


@beam.typehints.with_output_types(Chunk)
class ApplyOperatorsFn(beam.DoFn):
    """Applies an operator chain to every `Chunk`.

    Counters (namespace ``datarax_beam``): ``kernel_compilations``, ``kernel_micro_secs``,
    ``records_transformed``, ``records_per_record_path`` (records an operator had to run on the
    per-record path, see `ChainKernel`), ``operator_bundles``; gauges ``worker_bundles`` and
    ``worker_kernel_compilations`` (cumulative for this DoFn instance, i.e. per worker: they
    survive bundles whose own metrics a runner discards, such as retried ones).

    Args:
      operators: the chain (pickled with the DoFn; each operator is small: config + base key).
      batch_size: the kernel's fixed padded batch size.
      epoch: the epoch whose keys to use (0, the first online epoch).
      policy: bad records (`ErrorPolicy`): when the chain raises on a batch, the batch's records
        run one by one through the same kernel (same padded shape, same compilation, so the good
        records' outputs are bit-identical) and those that still raise become dead letters;
        ``check_finite`` also turns records with NaN/Inf outputs into dead letters. An error
        raised while JAX traces the chain is a bug of the chain, not of a record: it fails the job.

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
        self._per_record_count = Metrics.counter(NAMESPACE, f"{prefix}records_per_record_path")
        self._worker_bundles = Metrics.gauge(NAMESPACE, f"{prefix}worker_bundles")
        self._worker_compiles = Metrics.gauge(NAMESPACE, f"{prefix}worker_kernel_compilations")

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_kernel"] = None  # never pickle jitted state
        state["_inflight"] = None
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
        self._inflight: tuple[Chunk, Dispatched | dict] | None = None

    def start_bundle(self):
        self._bundles.inc()
        self._bundles_seen += 1
        self._inflight = None

    def process(self, chunk: Chunk, statistics: dict | None = None):
        if self._kernel is None:
            self._kernel = self._build(statistics)
        start = time.perf_counter()
        try:
            pending = self._kernel.dispatch(chunk.columns, chunk.indices, self._epoch)
        except Exception as exc:  # noqa: BLE001 - find the bad records, keep the good ones
            if trace_error_operator(exc) is not None:
                raise  # the chain's bug: every record would fail the same way
            chunk, pending = self._per_record(chunk)
        self._micros.inc(int((time.perf_counter() - start) * 1e6))
        previous, self._inflight = self._inflight, (chunk, pending)
        if previous is not None:  # the next chunk is on its way: now finish this one
            yield self._finish(*previous)

    def finish_bundle(self):
        if self._inflight is not None:
            previous, self._inflight = self._inflight, None
            yield GlobalWindows.windowed_value(self._finish(*previous))
        self._worker_bundles.set(self._bundles_seen)
        if self._kernel is not None:
            self._worker_compiles.set(self._kernel.compile_count)

    def _finish(self, chunk: Chunk, pending: Dispatched | dict) -> Chunk:
        """Waits for a dispatched chunk, converts it to numpy once, counts and checks it."""
        start = time.perf_counter()
        if isinstance(pending, Dispatched):
            try:
                columns = pending.host()
                self._per_record_count.inc(pending.per_record)
            except Exception:  # noqa: BLE001 - an error the device raised late: same as above
                chunk, columns = self._per_record(chunk)
        else:
            columns = pending
        self._micros.inc(int((time.perf_counter() - start) * 1e6))
        kernel = self._kernel
        if kernel.compile_count != self._seen_compiles:
            self._compilations.inc(kernel.compile_count - self._seen_compiles)
            self._seen_compiles = kernel.compile_count
        if self._policy.check_finite:
            chunk, columns = self._drop_not_finite(chunk, columns)
        self._records.inc(len(chunk.indices))
        return chunk._replace(columns=columns)

    def _per_record(self, chunk: Chunk) -> tuple[Chunk, dict]:
        """Runs each record alone through the same kernel (same padded shape and compilation, so
        good records are bit-identical); those that still raise become dead letters."""
        counted = self._kernel.records_per_record_path

        def run_one(columns, idx):
            return self._kernel(columns, idx, self._epoch)

        columns, good, failures = per_record(run_one, chunk.columns, chunk.indices, chunk.positions,
                                             "operators", self._policy)
        self._per_record_count.inc(self._kernel.records_per_record_path - counted)
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
