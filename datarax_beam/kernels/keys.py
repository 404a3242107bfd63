"""Per-record PRNG keys: a function of (operator base key, epoch, global record index).

Never of batch position, bundle, worker or runner: that is what makes offline equal online.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def record_key(base_key_data: jax.Array, epoch: jax.Array, index: jax.Array) -> jax.Array:
    """``fold_in(fold_in(base, epoch), index)`` as a typed key; traceable and vmappable."""
    key = jax.random.wrap_key_data(jnp.asarray(base_key_data, dtype=jnp.uint32))
    key = jax.random.fold_in(key, epoch)
    return jax.random.fold_in(key, index)


@functools.cache
def _batched_keys():
    return jax.jit(jax.vmap(record_key, in_axes=(None, None, 0)))


def record_keys(base_key_data: np.ndarray, epoch: int, indices: np.ndarray) -> jax.Array:
    """Keys for many records at once (used by the per-record, non-jitted path)."""
    return _batched_keys()(base_key_data, np.int32(epoch), np.asarray(indices, dtype=np.int32))


@functools.cache
def _batched_key_data():
    return jax.jit(jax.vmap(lambda b, e, i: jax.random.key_data(record_key(b, e, i)), in_axes=(None, None, 0)))


def record_key_data(base_key_data: np.ndarray, epoch: int, indices: np.ndarray,
                    batch: int | None = None) -> np.ndarray:
    """``key_data(record_key(base, epoch, i))`` for each index: ``(n, 2)`` uint32, host side.

    What a host operator gets as ``keys``: exactly the key a JAX operator of the same stream gets.
    Computed in padded pieces of ``batch`` indices so that one compilation serves every size.
    """
    indices = np.asarray(indices, dtype=np.int32)
    n = len(indices)
    size = batch or max(n, 1)
    padded = np.zeros(-(-n // size) * size, np.int32)
    padded[:n] = indices
    fn = _batched_key_data()
    base, epoch = jax.device_put((np.asarray(base_key_data, np.uint32), np.int32(epoch)))
    parts = [jax.device_get(fn(base, epoch, jax.device_put(padded[s : s + size])))
             for s in range(0, len(padded), size)]  # explicit transfers, both ways
    if not parts:
        return np.zeros((0, *np.shape(base_key_data)), np.uint32)
    return np.concatenate(parts)[:n].astype(np.uint32, copy=False)
