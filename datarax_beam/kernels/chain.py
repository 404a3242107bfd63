"""The kernel builder: an operator chain becomes one batched, jitted function.

`ChainKernel` is the single place where operators run, online (`datarax_beam.dag`) and offline
(the Beam operator DoFn). For numeric features the whole chain is one
``jax.jit(jax.vmap(chain))``; batches are padded to a fixed size so XLA compiles once per input
signature. Text and bytes features ride through that jitted chain as opaque placeholders as
long as operators only move or drop them (`datarax_beam.kernels.opaque`); chains that use their
values, and ragged features, run per record, eagerly. Both paths give identical results.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.core.element import Element, RecordMetadata
from datarax_beam.core.operator import OperatorModule
from datarax_beam.kernels import opaque as opq
from datarax_beam.kernels.keys import record_key, record_keys


class ChainKernel:
    """Runs an operator chain over columnar batches.

    Args:
      operators: the chain, applied in order to every record.
      pad_to: fixed batch size for the jitted path; batches are cut into pieces of this size and
        the last piece is padded (by repeating its last record), so one compilation serves all.

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

    def __init__(self, operators: Sequence[OperatorModule], *, pad_to: int | None = None):
        for i, op in enumerate(operators):
            if not isinstance(op, OperatorModule):
                raise TypeError(f"Chain entry {i} must be an operator, got {type(op).__name__}")
        if pad_to is not None and (
            isinstance(pad_to, bool) or not isinstance(pad_to, (int, np.integer)) or pad_to < 1
        ):
            raise ValueError(f"`pad_to` must be a positive int, got {pad_to!r}")
        self.operators = tuple(operators)
        self.pad_to = None if pad_to is None else int(pad_to)
        self.compile_count = 0
        self._base_keys = tuple(op.base_key_data for op in self.operators)
        self._jitted = jax.jit(self._batched, static_argnums=(3,))
        self._passthrough: dict[tuple, dict[str, str]] = {}  # text signature -> {out key: in key}
        self._per_record_only: set[tuple] = set()  # text signatures whose values operators use

    # -- the chain on one record (traced) ----------------------------------------------------
    def _apply(self, element: Element, keys: Sequence[Any]) -> Element:
        for op, key in zip(self.operators, keys, strict=True):
            element = op.apply(element, key)
            if not isinstance(element, Element):
                raise TypeError(
                    f"Operator {op.name!r} must return an Element, got {type(element).__name__}"
                )
        return element

    def _chain(self, data, index, epoch, text: tuple[tuple[str, str], ...]):
        meta = RecordMetadata(index=index, epoch=epoch)
        keys = [None if b is None else record_key(b, epoch, index) for b in self._base_keys]
        full = {**data, **{k: opq.opaque(kind, k) for k, kind in text}}
        out = self._apply(Element(data=full, metadata=meta), keys).data
        moved = {k: opq.source_key(v) for k, v in out.items() if opq.source_key(v) is not None}
        self._passthrough[text] = moved
        self.compile_count += 1  # runs at trace time only, once the trace succeeded
        return {k: v for k, v in out.items() if k not in moved}

    def _batched(self, data, index, epoch, text):
        return jax.vmap(lambda d, i, e: self._chain(d, i, e, text), in_axes=(0, 0, None))(data, index, epoch)

    # -- batches ----------------------------------------------------------------------------
    def __call__(self, batch: Mapping[str, Any], indices: np.ndarray, epoch: int = 0) -> dict[str, Any]:
        """Applies the chain to every record of ``batch`` (columns) with these global indices."""
        indices = np.asarray(indices, dtype=np.int64)
        n = len(indices)
        if n != cols.num_rows(batch) and batch:
            raise ValueError(f"Got {len(indices)} indices for a batch of {cols.num_rows(batch)} records")
        if not self.operators or n == 0:
            return cols.canonicalize(batch)
        numeric = {k: v for k, v in batch.items() if cols.is_numeric_column(v)}
        text = tuple(sorted((k, opq.text_kind(v)) for k, v in batch.items() if k not in numeric))
        if any(kind is None for _, kind in text) or text in self._per_record_only:
            return self._run_per_record(batch, indices, epoch)
        try:
            out = self._run_jitted(numeric, indices, epoch, text)
        except Exception:
            if not text or text in self._passthrough:
                raise  # not a tracing problem: the compiled chain itself failed on these values
            # Tracing failed: an operator used a text value (or has a bug). The per-record path
            # gives the real semantics, or raises the operator's real error.
            self._per_record_only.add(text)
            return self._run_per_record(batch, indices, epoch)
        for out_key, in_key in self._passthrough[text].items():
            out[out_key] = batch[in_key]
        return out

    def _run_jitted(self, batch, indices, epoch, text=()):
        size = self.pad_to or len(indices)
        outs = []
        for start in range(0, len(indices), size):
            piece = {k: v[start : start + size] for k, v in batch.items()}
            idx = indices[start : start + size]
            m = len(idx)
            if m < size:  # pad by repeating the last record: same shapes, one compilation
                fill = np.full(size - m, m - 1)
                take = np.concatenate([np.arange(m), fill])
                piece = {k: v[take] for k, v in piece.items()}
                idx = idx[take]
            out = self._jitted(piece, idx.astype(np.int32), np.int32(epoch), text)
            outs.append({k: np.asarray(v)[:m] for k, v in out.items()})
        return cols.concat(outs) if len(outs) > 1 else outs[0]

    def _run_per_record(self, batch, indices, epoch):
        keys_per_op = [
            None if b is None else record_keys(b, epoch, indices) for b in self._base_keys
        ]
        records = []
        for i, index in enumerate(indices):
            data = {k: v[i] for k, v in batch.items()}
            meta = RecordMetadata(index=int(index), epoch=int(epoch))
            keys = [None if ks is None else ks[i] for ks in keys_per_op]
            records.append(self._apply(Element(data=data, metadata=meta), keys).data)
        return cols.canonicalize(cols.columns_from_records(records))

    def fingerprint(self) -> str:
        """Identifies the chain (operators' code, configs and seeds), for shard-set metadata."""
        h = hashlib.sha256()
        for op in self.operators:
            h.update(op.fingerprint().encode())
        return h.hexdigest()[:16]
