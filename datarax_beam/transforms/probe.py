"""Fixing the shard set's schema before the job writes: the chain's output on the first batch.

`materialize` runs the operator chain once on the driver, on the first batch of the job's output
order (through the same `ChainKernel`, padded to the same batch size, keyed by the same global
indices), and `datarax_beam.shards.fit.infer_schema` turns its output into the schema every
worker then encodes against. When the chain needs full-pass statistics that are not given, the
probe binds *provisional* statistics computed over that batch alone: they give the right output
types and shapes, and the job computes the real ones.

A record of the first batch that fails (read or operators) is skipped, as in the job; if every
record of a batch fails, the next batch is tried, up to `PROBE_BATCHES`. A declared schema
(``materialize(schema=...)``) skips the probe.

Rule, documented in ``docs/reliability.md``: a numeric feature whose records in the first batch
share one shape is a fixed-shape ``tensor``; a feature that is really variable-shaped but happens
to be uniform there needs ``schema=`` (its other records would not fit).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from apache_beam.internal import pickler

from datarax_beam.core import columns as cols
from datarax_beam.core.operator import OperatorModule
from datarax_beam.dag.order import epoch_records
from datarax_beam.dag.pipeline import Pipeline
from datarax_beam.kernels import ChainKernel
from datarax_beam.kernels.errors import trace_error_operator
from datarax_beam.operators.statistics import bind_statistics
from datarax_beam.shards.codec import Schema
from datarax_beam.shards.fit import infer_schema
from datarax_beam.statistics import compute_over_batches
from datarax_beam.transforms.dead_letter import (
    ErrorPolicy,
    check_budget,
    describe,
    keep,
    per_record,
)
from datarax_beam.transforms.readers import Chunk

#: Batches tried on the driver when every record of the batches before failed.
PROBE_BATCHES = 8


class SchemaProbeFailed(RuntimeError):
    """No record of the first batches came through the chain, so no schema could be fixed."""


class _NoRecords(Exception):
    """Every record of the probed batch failed before a statistics consumer."""

    def __init__(self, failures):
        super().__init__(len(failures))
        self.failures = failures


def _random_access_batches(pipeline: Pipeline, order: np.ndarray, batch_size: int,
                           policy: ErrorPolicy) -> Iterator[Chunk]:
    source = pipeline.source
    for start in range(0, len(order), batch_size):
        positions = np.arange(start, min(start + batch_size, len(order)), dtype=np.int64)
        indices = np.asarray(order[positions], dtype=np.int64)
        try:
            yield Chunk(-1, positions, indices, source.get_batch(indices))
        except Exception:  # noqa: BLE001 - find the bad records, keep the good ones (as the job does)
            columns, good, failures = per_record(lambda _, idx: source.get_batch(idx), {}, indices,
                                                 positions, "read", policy)
            yield keep(Chunk(-1, positions, indices, columns), good, failures)


def _iterator_batches(pipeline: Pipeline, batch_size: int) -> Iterator[Chunk]:
    source = pipeline.source
    state = source.get_state()
    try:
        stream = epoch_records(source, 0, pipeline.shuffle_node)
        position = 0
        while batch := [r for _, r in zip(range(batch_size), stream, strict=False)]:
            n = len(batch)
            yield Chunk(-1, np.arange(position, position + n, dtype=np.int64),
                        np.array([i for i, _ in batch], dtype=np.int64),
                        cols.columns_from_records([e.data for _, e in batch]))
            position += n
    finally:
        source.set_state(state)  # the job reads the source from its start


def _apply(operators: Sequence[OperatorModule], chunk: Chunk, batch_size: int,
           policy: ErrorPolicy) -> tuple[dict[str, Any], Chunk]:
    """The chain's output on a chunk's records, and the chunk without the records that failed."""
    kernel = ChainKernel(operators, pad_to=batch_size)
    if not len(chunk.indices):
        return {}, chunk
    try:
        return kernel(chunk.columns, chunk.indices, 0), chunk
    except Exception as exc:  # noqa: BLE001 - as ApplyOperatorsFn: find the bad records, keep the good ones
        if trace_error_operator(exc) is not None:
            raise  # the chain's bug: every record would fail the same way (the job fails too)
        out, good, failures = per_record(lambda c, idx: kernel(c, idx, 0), chunk.columns, chunk.indices,
                                         chunk.positions, "operators", policy)
        return out, keep(chunk, good, failures)


def _bound_on(pipeline: Pipeline, chunk: Chunk, batch_size: int, policy: ErrorPolicy) -> list[OperatorModule]:
    """The chain with the given statistics bound, and the missing ones computed over ``chunk``."""

    def provisional(prefix, specs):
        out, kept = _apply(prefix, chunk, batch_size, policy)
        if not len(kept.indices):
            raise _NoRecords(kept.failures)
        return compute_over_batches(specs, [(out, kept.indices)])

    # a copy made as the job's workers get theirs: nothing the probe runs (an operator caching a
    # table built from the provisional statistics on itself) changes the pipeline's operators
    own = pickler.loads(pickler.dumps(tuple(pipeline.operators)))
    operators, _ = bind_statistics(own, pipeline._given_statistics, provisional)
    return operators


def probe_schema(pipeline: Pipeline, order: np.ndarray | None, batch_size: int, policy: ErrorPolicy,
                 max_failed_fraction: float) -> Schema:
    """The schema of the chain's output on the first batch that yields a record (see module doc).

    Args:
      order: the job's output order (source indices) for random-access sources; None for
        iterator sources (read from their start, as the job reads them).

    Raises:
      RecordError: ``on_error="raise"`` and a record of the probed batches failed.
      FailureBudgetExceeded: the probe read the whole source and too many records failed.
      SchemaProbeFailed: every record of the first `PROBE_BATCHES` batches failed.
    """
    if order is not None:
        batches = _random_access_batches(pipeline, order, batch_size, policy)
        total = len(order)
    else:
        batches = _iterator_batches(pipeline, batch_size)
        total = None
    tried, failures = 0, []
    for _, chunk in zip(range(PROBE_BATCHES), batches, strict=False):
        tried += len(chunk.indices) + len(chunk.failures)
        kept, out = chunk, {}
        if len(chunk.indices):
            try:
                operators = _bound_on(pipeline, chunk, batch_size, policy)
            except _NoRecords as e:
                failures.extend(e.failures)  # the chunk's read failures included
                continue
            out, kept = _apply(operators, chunk, batch_size, policy)
        failures.extend(kept.failures)
        if len(kept.indices):
            return infer_schema(out)
    if order is None and tried < PROBE_BATCHES * batch_size:
        total = tried  # the iterator ended: the probe saw every record
    if not tried:
        return Schema(())  # an empty source: an empty shard set
    failures.sort(key=lambda e: e["position"])
    if total == tried:
        check_budget(len(failures), total, max_failed_fraction, failures)
        return Schema(())  # every record failed, and the budget allows it: an empty shard set
    first = "; ".join(describe(e, short=True) for e in failures[:3])
    raise SchemaProbeFailed(
        f"All {tried} records of the first {PROBE_BATCHES} batches failed (of "
        f"{total if total is not None else 'an unknown number of'} records), so the shard set's "
        f"schema cannot be fixed from the chain's output; nothing was written. First failures: "
        f"{first}. Pass materialize(schema=...) to run the job anyway (it fails if more than "
        f"max_failed_fraction={max_failed_fraction} of the records fail)"
    )
