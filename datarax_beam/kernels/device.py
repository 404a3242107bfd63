"""Where columns live: device outputs converted once where they are read, and dtype narrowing.

A JAX segment's outputs stay on the device as a `Deferred` column (its padded pieces); they are
converted once: to numpy for host operators and the shard writer (``host_column``), or to one
``jax.Array`` for online batches (``device_column``). Features keep their dtype: only where a JAX
segment reads a 64-bit feature while JAX runs with 32-bit types (x64 off, the default) is it
narrowed, by `narrow`, which refuses values that would not survive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.kernels.errors import NarrowingError


class Deferred:
    """A column a JAX segment computed in padded pieces: ``[(array, records used), ...]``."""

    __slots__ = ("pieces",)

    def __init__(self, pieces: Sequence[tuple[jax.Array, int]]):
        self.pieces = list(pieces)

    def __len__(self) -> int:
        return sum(m for _, m in self.pieces)

    def host(self) -> np.ndarray:
        parts = [np.asarray(a)[:m] if m < len(a) else np.asarray(a) for a, m in self.pieces]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def device(self) -> jax.Array:
        parts = [jax.lax.slice_in_dim(a, 0, m) if m < len(a) else a for a, m in self.pieces]
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts)


def host_column(column: Any) -> Any:
    """The column as numpy (a device array is copied to the host once)."""
    if isinstance(column, Deferred):
        return column.host()
    if isinstance(column, jax.Array):
        return np.asarray(column)
    return column


def device_column(column: Any) -> Any:
    """A numeric column as a ``jax.Array``, put on the device once, where JAX holds its dtype;
    otherwise unchanged: text, bytes, ragged, and 64-bit numbers while JAX's x64 is off (numpy,
    exact: the same values and dtype the shards hold; JAX narrows them only if they are used)."""
    if isinstance(column, Deferred):
        return column.device()
    if isinstance(column, np.ndarray) and cols.is_numeric_column(column) and representable(column.dtype):
        return jax.device_put(column)
    return column


def representable(dtype: Any) -> bool:
    """Whether JAX holds this numeric dtype as is (64-bit types only with x64 on)."""
    return narrowed_dtype(dtype) == np.dtype(dtype)


def to_host(batch: Mapping[str, Any]) -> dict[str, Any]:
    return {k: host_column(v) for k, v in batch.items()}


def to_device(batch: Mapping[str, Any]) -> dict[str, Any]:
    return {k: device_column(v) for k, v in batch.items()}


def narrowed_dtype(dtype: Any) -> np.dtype:
    """The dtype JAX computes with for ``dtype`` (int64 -> int32, float64 -> float32 with x64 off)."""
    return np.dtype(jax.dtypes.canonicalize_dtype(dtype))


def narrow(name: str, column: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``column`` cast to `narrowed_dtype`; raises `NarrowingError` for a value that would not
    survive: an integer outside the narrower range, a finite float that would become inf, or a
    non-zero one that would become 0. Other floats round to the nearest float32, as in JAX."""
    target = narrowed_dtype(column.dtype)
    if target == column.dtype:
        return column
    if column.dtype.kind in "iu":
        info = np.iinfo(target)
        bad = (column < info.min) | (column > info.max)
    elif column.dtype.kind == "c":
        parts = (column.real, column.imag)
        bad = np.logical_or.reduce([_lost_floats(p, np.dtype(np.float32)) for p in parts])
    else:
        bad = _lost_floats(column, target)
    if bad.any():
        pos = tuple(np.argwhere(bad)[0])
        value = column[pos].item()
        raise NarrowingError(
            f"Feature {name!r} of record {int(indices[pos[0]])} holds {value!r}, which does not "
            f"survive narrowing {column.dtype} to {target}: a JAX operator reads this feature and "
            f"JAX runs with 64-bit types off. Enable them (jax.config.update('jax_enable_x64', "
            f"True)), or convert the feature with a HostOperator first"
        )
    return column.astype(target)


def _lost_floats(values: np.ndarray, target: np.dtype) -> np.ndarray:
    with np.errstate(over="ignore", under="ignore"):
        cast = values.astype(target)
    return (np.isfinite(values) & ~np.isfinite(cast)) | ((values != 0) & (cast == 0))
