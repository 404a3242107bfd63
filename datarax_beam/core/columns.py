"""Columnar batches: a dict of feature name -> stacked values with a leading record axis.

Numeric features (bool, int, uint, float, complex) are stacked numpy arrays; everything else
(text, bytes, ragged arrays) is a 1-D numpy object array holding one value per record. The same
representation flows through sources, kernels, the Beam DoFns and the shard codec.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

NUMERIC_KINDS = frozenset("biufc")


def is_numeric_column(column: Any) -> bool:
    """True for a stacked numeric column (a jit-able feature)."""
    return isinstance(column, (np.ndarray, jax.Array)) and column.dtype.kind in NUMERIC_KINDS


def is_frozen(array: np.ndarray) -> bool:
    """Whether nobody can write to ``array``'s memory: it is a read-only view, through read-only
    views only, of memory that cannot change (a ``bytes`` object, or a JAX array's buffer).

    A batch handed on is still read after its producer moves on (the writer compresses it, JAX
    reads it asynchronously, a user keeps it), so an array that is not frozen may be refilled
    under its reader and is copied where it is handed on. A fresh array is writable, hence not
    frozen; so is a read-only view of a writable one.

    Example:
      >>> import jax.numpy as jnp
      >>> is_frozen(np.frombuffer(b"abcd", np.uint8)), is_frozen(np.asarray(jnp.zeros(2)))
      (True, True)
      >>> view = np.zeros(4).view(); view.flags.writeable = False
      >>> is_frozen(np.zeros(4)), is_frozen(view)
      (False, False)
    """
    base: Any = array
    while isinstance(base, np.ndarray):
        if base.flags.writeable or base.base is None:  # (an owner may make itself writable again)
            return False
        base = base.base
    if isinstance(base, memoryview):
        if not base.readonly:
            return False
        base = base.obj
    return isinstance(base, (bytes, jax.Array))


def object_column(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array holding ``values`` one per slot (never broadcast into 2-D)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def _as_value(value: Any) -> Any:
    if isinstance(value, (str, bytes)):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, jax.Array):
        return np.asarray(value)
    if isinstance(value, (bool, int, float, complex, np.generic)):
        return np.asarray(value)
    return value


def stack_values(values: Sequence[Any]) -> np.ndarray:
    """Stacks one feature's per-record values into a column.

    Numeric values of one shape are stacked; text, bytes, and numeric arrays of differing shapes
    become an object column.
    """
    vals = [_as_value(v) for v in values]
    if vals and all(isinstance(v, np.ndarray) and v.dtype.kind in NUMERIC_KINDS for v in vals):
        shapes = {v.shape for v in vals}
        if len(shapes) == 1:
            dtypes = {v.dtype for v in vals}
            dtype = np.result_type(*dtypes) if len(dtypes) > 1 else vals[0].dtype
            return np.stack(vals).astype(dtype, copy=False)
    return object_column(vals)


def columns_from_records(records: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Turns a list of feature dicts into a dict of columns; all records need the same keys."""
    if not records:
        return {}
    keys = list(records[0].keys())
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise TypeError(f"Record {i} must be a dict of features, got {type(rec).__name__}")
        if set(rec.keys()) != set(keys):
            raise ValueError(
                f"Record {i} has features {sorted(rec.keys())}, expected {sorted(keys)} "
                f"like record 0"
            )
    return {k: stack_values([rec[k] for rec in records]) for k in keys}


def num_rows(columns: Mapping[str, Any]) -> int:
    """The number of records in a columnar batch."""
    for v in columns.values():
        return len(v)
    return 0


def take(columns: Mapping[str, Any], indices: np.ndarray) -> dict[str, Any]:
    """Selects rows ``indices`` of every column."""
    return {k: v[indices] for k, v in columns.items()}


def concat(batches: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Concatenates columnar batches along the record axis."""
    batches = [b for b in batches if num_rows(b)]
    if not batches:
        return {}
    if len(batches) == 1:
        return dict(batches[0])
    out = {}
    for k in batches[0]:
        parts = [np.asarray(b[k]) if not isinstance(b[k], np.ndarray) else b[k] for b in batches]
        if all(p.dtype != object for p in parts) and len({p.shape[1:] for p in parts}) == 1:
            out[k] = np.concatenate(parts)
        else:
            out[k] = object_column([x for p in parts for x in p])
    return out
