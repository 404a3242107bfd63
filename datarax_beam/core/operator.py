"""The operator base: a per-record transform that a kernel batches, jits and keys.

Users supply operators; `datarax_beam.kernels` does the machinery (batching, jit, PRNG keys),
the same way for the online pipeline and for the Beam DoFn.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zlib
from typing import Any

import flax.nnx as nnx
import jax
import numpy as np

from datarax_beam.core.element import Element


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    """Configuration shared by all operators.

    Attributes:
      stochastic: whether the operator consumes randomness; it then receives a PRNG key derived
        from (its rngs seed, ``stream_name``, the epoch, the record's global index).
      stream_name: the name of the ``nnx.Rngs`` stream that seeds a stochastic operator.
    """

    stochastic: bool = False
    stream_name: str | None = None

    def __post_init__(self):
        if not isinstance(self.stochastic, bool):
            raise TypeError(f"`stochastic` must be a bool, got {self.stochastic!r}")
        if self.stochastic and not self.stream_name:
            raise ValueError(
                f"A stochastic operator needs a `stream_name` (the nnx.Rngs stream that seeds it), "
                f"got stream_name={self.stream_name!r}"
            )
        if not self.stochastic and self.stream_name is not None:
            raise ValueError(
                f"`stream_name`={self.stream_name!r} was given to a deterministic operator "
                f"(stochastic=False); set stochastic=True or drop stream_name"
            )


class OperatorModule(nnx.Module, pytree=False):
    """Base class of operators: ``apply(element, key) -> element`` on one record.

    ``apply`` must be a pure function of its inputs so it can run inside
    ``jax.jit(jax.vmap(...))``; randomness comes only from ``key`` (None when deterministic).
    """

    def __init_subclass__(cls, **kwargs):
        kwargs.setdefault("pytree", False)
        super().__init_subclass__(**kwargs)

    def __init__(self, config: OperatorConfig, *, rngs: nnx.Rngs | None = None, name: str | None = None):
        if not isinstance(config, OperatorConfig):
            raise TypeError(
                f"`config` must be an OperatorConfig (e.g. ElementOperatorConfig), got "
                f"{type(config).__name__} instead"
            )
        if config.stochastic and rngs is None:
            raise ValueError(
                f"Stochastic operator with stream_name={config.stream_name!r} needs `rngs` "
                f"(e.g. rngs=nnx.Rngs({config.stream_name}=0)), got rngs=None"
            )
        if rngs is not None and not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"`rngs` must be an nnx.Rngs, got {type(rngs).__name__} instead")
        self.config = config
        self.name = name or type(self).__name__
        self._base_key = _stream_base_key(rngs, config.stream_name) if config.stochastic else None

    @property
    def stochastic(self) -> bool:
        return self.config.stochastic

    @property
    def base_key_data(self) -> np.ndarray | None:
        """uint32 key data that, with epoch and record index, yields each record's key."""
        return self._base_key

    def apply(self, element: Element, key: jax.Array | None) -> Element:
        raise NotImplementedError(f"{type(self).__name__} must implement apply(element, key)")

    def __call__(self, element: Element, key: jax.Array | None = None) -> Element:
        return self.apply(element, key)

    def fingerprint(self) -> str:
        """Changes when the operator's code, configuration or seed changes."""
        h = hashlib.sha256()
        h.update(type(self).__qualname__.encode())
        h.update(repr(self.config).encode())
        if self._base_key is not None:
            h.update(self._base_key.tobytes())
        h.update(self._fingerprint_extra())
        return h.hexdigest()[:16]

    def _fingerprint_extra(self) -> bytes:
        return b""


def _stream_base_key(rngs: nnx.Rngs, stream_name: str) -> np.ndarray:
    """The operator's base key: the next key of its rngs stream, with the stream name folded in.

    Drawing the key advances the stream (as every NNX layer does at construction), so operators
    sharing one ``nnx.Rngs`` get independent keys, while rebuilding the same chain from a fresh
    ``nnx.Rngs`` with the same seed gives the same keys again.
    """
    try:
        stream = rngs[stream_name]
    except (KeyError, AttributeError):
        stream = None
    if stream is None:
        try:
            stream = rngs["default"]
        except (KeyError, AttributeError):
            raise ValueError(
                f"`rngs` has no stream named {stream_name!r} and no default stream; "
                f"create it with nnx.Rngs({stream_name}=seed)"
            ) from None
    key = stream()
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    key = jax.random.fold_in(key, zlib.crc32(stream_name.encode()) & 0x7FFFFFFF)
    return np.asarray(jax.random.key_data(key), dtype=np.uint32)


def code_fingerprint(fn: Any) -> bytes:
    """Bytes that identify a Python function's code (bytecode, constants, names, nested code)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return repr(fn).encode()
    parts: list[bytes] = []

    def visit(c):
        parts.append(c.co_code)
        parts.append(repr(c.co_names).encode())
        for const in c.co_consts:
            if hasattr(const, "co_code"):
                visit(const)
            else:
                parts.append(repr(const).encode())

    visit(code)
    return b"|".join(parts)
