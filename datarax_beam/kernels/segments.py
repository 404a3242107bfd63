"""JAX segments: consecutive JAX operators run as one ``jit(vmap)`` per batch signature.

A segment's batch is padded to ``pad_to`` records (cut into pieces of that size, the last padded
by repeating its last record), so XLA compiles once per input signature (per-record shapes,
dtypes, text kinds). Inputs that no computed output reads are not sent to the device, and outputs
that are the very value of an input (moved or untouched features) are copied from the input
column: they keep their dtype and never make a device round trip.

The per-record path is the last resort: when an operator uses the value of a text, bytes or
object (ragged) feature — which cannot be traced — the segment is cut there: the operators before
it stay jitted, that operator runs eagerly record by record (warned once, counted), the rest is
planned again. Any other error while tracing is the operator's bug and propagates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.core.element import Element, RecordMetadata
from datarax_beam.kernels import opaque as opq
from datarax_beam.kernels.device import Deferred, host_column, narrow, narrowed_dtype
from datarax_beam.kernels.errors import NarrowingError, mark_trace_error
from datarax_beam.kernels.keys import record_key_data, record_keys
from datarax_beam.kernels.trace import (
    CONSTANT,
    PASSED,
    Signature,
    TraceInfo,
    apply_ops,
    classify,
    trace_chain,
)


def signature(batch: Mapping[str, Any], size: int) -> Signature:
    features = []
    for name, col in batch.items():
        if isinstance(col, Deferred):
            col = col.pieces[0][0]
        if cols.is_numeric_column(col):
            features.append((name, "num", tuple(col.shape[1:]), narrowed_dtype(col.dtype).str))
        else:
            features.append((name, opq.text_kind(col)))
    return Signature(tuple(features), size)


class JaxSegment:
    """Runs consecutive JAX operators (see module doc); ``kernel`` receives warnings/counts."""

    def __init__(self, ops, pad_to: int | None, kernel):
        self.operators = tuple(ops)
        self._bases = tuple(op.base_key_data for op in self.operators)
        self._pad_to, self._kernel = pad_to, kernel
        self._steps: dict[tuple[int, Signature], _JitStep | _RecordStep] = {}

    def run(self, batch: Mapping[str, Any], indices: np.ndarray, epoch: int, call) -> dict[str, Any]:
        pos = 0
        while pos < len(self.operators):
            sig = signature(batch, self._pad_to or len(indices))
            step = self._steps.get((pos, sig))
            if step is None:
                step = self._steps[(pos, sig)] = self._plan(pos, sig)
            call.operators = step.operators
            batch = step.run(batch, indices, epoch, call)
            pos = step.stop
        return dict(batch)

    def _plan(self, pos: int, sig: Signature):
        stop = len(self.operators)
        while True:
            ops, info = self.operators[pos:stop], TraceInfo()
            try:
                compiled = trace_chain(ops, self._bases[pos:stop], sig, info)
            except opq.NeedsRecordPath as need:
                culprit = pos + max(info.failed_at, 0)
                if culprit == pos:
                    self._kernel._warn_per_record(self.operators[pos], need)
                    return _RecordStep(self.operators[pos], self._bases[pos], pos)
                stop = culprit  # jit the operators before it; it runs per record after them
                continue
            except Exception as exc:  # noqa: BLE001 - marked and re-raised unchanged
                mark_trace_error(exc, ops[max(info.failed_at, 0)].name)
                raise
            self._kernel.compile_count += 1
            return _JitStep(ops, stop, compiled, info, sig.size)


class _JitStep:
    """One compiled ``jit(vmap)`` of ``operators`` (positions ... ``stop`` - 1 of a segment)."""

    def __init__(self, ops, stop: int, compiled, info: TraceInfo, size: int):
        self.operators, self.stop, self._compiled, self._info = ops, stop, compiled, info
        self._size = size

    def run(self, batch, indices, epoch, call):
        n, size = len(indices), self._size
        live = []
        for name in self._info.live:
            col = batch[name]
            if isinstance(col, Deferred):
                col = col.device()
            elif isinstance(col, np.ndarray):
                col = narrow(name, col, indices)
            live.append(col)
        idx32 = np.asarray(indices).astype(np.int32)
        epoch32 = np.int32(epoch)
        pieces = []
        # Each piece goes to the device once, as the compiled call's argument: its C++ path
        # transfers host arrays itself, while `jax.device_put` runs ~0.3 ms of Python per call
        # under the GIL the writer's threads also need (0.8 s of a 100k-record in-process job).
        # Only this host -> device transfer is allowed here; device -> host stays guarded.
        with jax.transfer_guard_host_to_device("allow"):
            for start in range(0, n, size):
                m = min(size, n - start)
                args = [_pad(_rows(c, start, m), size) for c in live]
                pieces.append((self._compiled(args, _pad(idx32[start : start + m], size), epoch32), m))
        out = {}
        for name, kind, detail in self._info.outputs:
            if kind == PASSED:
                out[name] = batch[detail]
            elif kind == CONSTANT:
                out[name] = cols.object_column([detail] * n)
            else:
                out[name] = Deferred([(o[detail], m) for o, m in pieces])
        return out


def _rows(col, start: int, m: int):
    """Records ``start`` ... ``start + m - 1`` (a static slice of a device array: no transfer)."""
    if isinstance(col, np.ndarray):
        return col[start : start + m]
    return jax.lax.slice_in_dim(col, start, start + m)


def _pad(col, size: int):
    """Pads a piece to ``size`` records by repeating its last record."""
    m = len(col)
    if m == size:
        return col
    if isinstance(col, np.ndarray):
        return np.concatenate([col, np.repeat(col[-1:], size - m, axis=0)])
    last = jax.lax.slice_in_dim(col, m - 1, m)
    return jnp.concatenate([col, jnp.repeat(last, size - m, axis=0)])


class _RecordStep:
    """One operator run eagerly, record by record, on real values (the last resort).

    Numeric values reach the operator as JAX arrays of the dtypes the jitted path would use
    (a 64-bit value that does not survive narrowing raises `NarrowingError` when read), the index
    and epoch as int32 scalars; outputs are converted like JAX outputs, and passed-through values
    are copied from the input, so the result matches the jitted path's.
    """

    def __init__(self, op, base, pos: int):
        self.op, self.operators, self.stop, self._base = op, (op,), pos + 1, base

    def run(self, batch, indices, epoch, call):
        batch = {k: host_column(v) for k, v in batch.items()}
        call.per_record = True
        keys = None if self._base is None else record_keys(self._base, epoch, indices)
        records = []
        for i, index in enumerate(indices):
            data = {k: _record_value(k, col[i], int(index)) for k, col in batch.items()}
            meta = RecordMetadata(index=jnp.int32(index), epoch=jnp.int32(epoch))
            element = Element(data=data, metadata=meta)
            out = apply_ops((self.op,), element, [None if keys is None else keys[i]], TraceInfo()).data
            record = {}
            for name, kind, detail in classify(out, data):
                if kind == PASSED:
                    record[name] = batch[detail][i]
                elif kind == CONSTANT:
                    record[name] = detail
                else:
                    record[name] = _as_jax_output(out[name])
            records.append(record)
        return cols.columns_from_records(records)


def _record_value(name: str, value: Any, index: int) -> Any:
    if not isinstance(value, (np.ndarray, np.generic)) or value.dtype.kind not in cols.NUMERIC_KINDS:
        return value  # str, bytes, None, other objects: as they are
    try:
        return jnp.asarray(narrow(name, np.asarray(value)[None], np.array([index]))[0])
    except NarrowingError as err:  # raised only if the operator reads the value
        message = str(err)
        return opq.opaque("object", name, error=lambda *_: NarrowingError(message))


def _as_jax_output(value: Any) -> Any:
    if isinstance(value, (jax.Array, np.ndarray, np.generic, bool, int, float, complex)):
        return np.asarray(jnp.asarray(value))
    return value


class _NoCall:
    operators: tuple = ()
    per_record = False


def run_per_record(ops, batch: Mapping[str, Any], indices: np.ndarray, epoch: int = 0) -> dict[str, Any]:
    """The reference semantics of a chain: JAX operators one record at a time, eagerly, host
    operators batched (for tests: the jitted path must give the same records)."""
    indices = np.asarray(indices, dtype=np.int64)
    for op in ops:
        if op.on_host:
            keys = None if op.base_key_data is None else record_key_data(op.base_key_data, epoch, indices)
            batch = op.apply_batch({k: host_column(v) for k, v in batch.items()}, keys)
        else:
            batch = _RecordStep(op, op.base_key_data, 0).run(batch, indices, epoch, _NoCall())
    return dict(batch)
