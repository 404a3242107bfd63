"""The kernel builder: an operator chain becomes batched host and jitted JAX segments.

`ChainKernel` is the single place where operators run, online (`datarax_beam.dag`) and offline
(the Beam operator DoFn), so both cut a chain the same way and give the same records, bit for bit.
The chain is cut into segments: each host operator (`datarax_beam.operators.HostOperator`) is a
host segment, run batched over columns in a thread pool (`datarax_beam.kernels.host`); each run
of consecutive JAX operators is one ``jax.jit(jax.vmap(...))`` per input signature, padded to
``pad_to`` records so XLA compiles once (`datarax_beam.kernels.segments`). Features keep their
dtypes: untouched features pass through as they are, and 64-bit features a JAX segment reads are
narrowed (x64 off) only where every value survives (`datarax_beam.kernels.device`).
"""

from __future__ import annotations

import hashlib
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.core.operator import OperatorModule
from datarax_beam.kernels.device import to_device, to_host
from datarax_beam.kernels.errors import OperatorError, PerRecordPathWarning, trace_error_operator
from datarax_beam.kernels.host import HostSegment, _Pool, default_threads
from datarax_beam.kernels.segments import JaxSegment


class Dispatched:
    """A batch whose JAX work is dispatched (asynchronously) but not waited for.

    ``host()`` waits and returns numpy columns (what the shard writer needs); ``device()`` returns
    numeric features as ``jax.Array``s left on the device (what online training needs).
    """

    def __init__(self, batch: Mapping[str, Any], indices: np.ndarray, per_record: int = 0):
        self.batch, self.indices, self.per_record = dict(batch), indices, per_record

    def host(self) -> dict[str, Any]:
        return to_host(self.batch)

    def device(self) -> dict[str, Any]:
        return to_device(self.batch)


class _Call:
    """Bookkeeping of one kernel call: the operators running, whether any ran per record."""

    def __init__(self):
        self.operators: tuple = ()
        self.per_record = False


class ChainKernel:
    """Runs an operator chain over columnar batches.

    Args:
      operators: the chain, applied in order to every record.
      pad_to: fixed batch size for JAX segments; batches are cut into pieces of this size and
        the last piece is padded (by repeating its last record), so one compilation serves all.
      threads: the thread pool size for host operators whose ``threads`` is None (default: the
        usable cores, at most 8).
      online: calls return numeric features as ``jax.Array``s on the device (except 64-bit ones
        while JAX's x64 is off: they stay numpy, exact, as the shards hold them), and an operator
        error names the record (`OperatorError`). Otherwise
        calls return numpy columns with the dtypes computed (untouched features keep theirs) and
        errors propagate unchanged (the Beam DoFn re-runs a failing batch record by record).

    Attributes:
      compile_count: XLA compilations so far (one per JAX segment and input signature).
      records_per_record_path: records that went through an operator on the per-record path.

    Example:
      >>> import numpy as np
      >>> from datarax_beam.operators import ElementOperator, ElementOperatorConfig
      >>> op = ElementOperator(ElementOperatorConfig(), fn=lambda e, k: e.update_data({"x": e.data["x"] + 1}))
      >>> k = ChainKernel([op], pad_to=4)
      >>> k({"x": np.arange(6, dtype=np.float32)}, np.arange(6))["x"].tolist()
      [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
      >>> k.compile_count
      1
    """

    def __init__(self, operators: Sequence[OperatorModule], *, pad_to: int | None = None,
                 threads: int | None = None, online: bool = False):
        for i, op in enumerate(operators):
            if not isinstance(op, OperatorModule):
                raise TypeError(f"Chain entry {i} must be an operator, got {type(op).__name__}")
        if pad_to is not None and (
            isinstance(pad_to, bool) or not isinstance(pad_to, (int, np.integer)) or pad_to < 1
        ):
            raise ValueError(f"`pad_to` must be a positive int, got {pad_to!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"`threads` must be an int >= 1 or None, got {threads!r}")
        self.operators = tuple(operators)
        self.pad_to = None if pad_to is None else int(pad_to)
        self.online = bool(online)
        self.compile_count = 0
        self.records_per_record_path = 0
        self._warned: set[int] = set()
        self._pool = _Pool(threads or default_threads())
        weakref.finalize(self, self._pool.shutdown)
        self.segments = self._cut()

    def _cut(self) -> list:
        segments, run = [], []
        for op in self.operators:
            if op.on_host:
                if run:
                    segments.append(JaxSegment(run, self.pad_to, self))
                    run = []
                segments.append(HostSegment(op, self._pool, self.pad_to))
            else:
                run.append(op)
        if run:
            segments.append(JaxSegment(run, self.pad_to, self))
        return segments

    def __getstate__(self):
        raise TypeError("A ChainKernel holds compiled functions and a thread pool and is never "
                        "pickled: build it where it runs (e.g. in DoFn.setup())")

    # -- batches ----------------------------------------------------------------------------
    def __call__(self, batch: Mapping[str, Any], indices: np.ndarray, epoch: int = 0) -> dict[str, Any]:
        """Applies the chain to every record of ``batch`` (columns) with these global indices."""
        if self.online:
            return self._online(batch, indices, epoch)
        return self.dispatch(batch, indices, epoch).host()

    def dispatch(self, batch: Mapping[str, Any], indices: np.ndarray, epoch: int = 0) -> Dispatched:
        """Runs host segments and dispatches JAX segments without waiting for their results."""
        return self._run(batch, indices, epoch, _Call())

    def _run(self, batch, indices, epoch, call: _Call) -> Dispatched:
        indices = np.asarray(indices, dtype=np.int64)
        n = len(indices)
        if batch and n != cols.num_rows(batch):
            raise ValueError(f"Got {len(indices)} indices for a batch of {cols.num_rows(batch)} records")
        if not self.operators or n == 0:
            return Dispatched(batch, indices)
        for segment in self.segments:
            call.operators = segment.operators
            batch = segment.run(batch, indices, int(epoch), call)
        if call.per_record:
            self.records_per_record_path += n
        return Dispatched(batch, indices, n if call.per_record else 0)

    def _online(self, batch, indices, epoch) -> dict[str, Any]:
        try:
            return self.dispatch(batch, indices, epoch).device()
        except Exception as exc:  # noqa: BLE001 - located and re-raised, never swallowed
            if trace_error_operator(exc) is not None:
                raise  # the chain's bug, the same for every record
            self._locate(batch, np.asarray(indices, dtype=np.int64), epoch)
            raise

    def _locate(self, batch, indices, epoch) -> None:
        """Re-runs a failed batch record by record; raises `OperatorError` for the first record
        that fails alone (returns when none does: the error was not one record's)."""
        for i, index in enumerate(indices):
            call = _Call()
            try:
                self._run({k: v[i : i + 1] for k, v in batch.items()}, indices[i : i + 1], epoch, call).host()
            except Exception as exc:  # noqa: BLE001 - re-raised with the record's index
                if trace_error_operator(exc) is not None:
                    raise
                names = [op.name for op in call.operators]
                who = repr(names[0]) if len(names) == 1 else f"one of {names} (one jitted segment)"
                text = str(exc)
                if len(text) > 2000:  # XLA callback errors embed a whole traceback: keep both ends
                    text = text[:500] + " ... " + text[-1500:]
                raise OperatorError(
                    f"Operator {who} failed on record {int(index)} (epoch {int(epoch)}): "
                    f"{type(exc).__name__}: {text}", int(index), ", ".join(names)
                ) from exc

    def _warn_per_record(self, op: OperatorModule, need) -> None:
        if id(op) in self._warned:
            return
        self._warned.add(id(op))
        warnings.warn(
            f"Operator {op.name!r} runs per record, eagerly (slow): it uses the value of "
            f"{need.kind} feature {need.feature!r} ({need.use}), which JAX cannot trace. Make it "
            f"a HostOperator (batched on the host), or pad ragged features to a fixed shape first.",
            PerRecordPathWarning, stacklevel=5,
        )

    def fingerprint(self) -> str:
        """Identifies the chain (operators' code, configs and seeds), for shard-set metadata."""
        h = hashlib.sha256()
        for op in self.operators:
            h.update(op.fingerprint().encode())
        return h.hexdigest()[:16]
