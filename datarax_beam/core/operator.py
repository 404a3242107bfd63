"""The operator base: a per-record transform that a kernel batches, jits and keys.

Users supply operators; `datarax_beam.kernels` does the machinery (batching, jit, PRNG keys),
the same way for the online pipeline and for the Beam DoFn.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import types
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
    Operators with ``on_host = True`` (`datarax_beam.operators.HostOperator`) run on the host
    instead, over whole batches (``apply_batch``).
    """

    #: Whether the kernel runs this operator on the host, batched (``apply_batch``).
    on_host = False

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

    #: Public attributes that do not change what the operator computes.
    _fingerprint_ignore = frozenset({"name", "config", "threads"})

    def fingerprint(self) -> str:
        """Changes when the operator's code, configuration, seed or public attributes change.

        Public attributes (e.g. a built-in operator's ``size``) count by value, functions by
        code and the values they use (`code_fingerprint`), other objects by type name.
        """
        h = hashlib.sha256()
        h.update(type(self).__qualname__.encode())
        h.update(repr(self.config).encode())
        if self._base_key is not None:
            h.update(self._base_key.tobytes())
        fp = _Fingerprint(h)
        for name, value in sorted(vars(self).items()):
            if not name.startswith("_") and name not in self._fingerprint_ignore:
                fp.put("attribute", name)
                fp.value(value)
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
    """Bytes that identify a function: its code (bytecode, constants, names, nested code) and the
    values it uses — closure cells, defaults and referenced module globals.

    Plain data (numbers, str, bytes, None, numpy/JAX arrays by content, tuples/lists/dicts/sets
    and dataclasses of those) counts by value; functions recursively (with a cycle guard);
    ``functools.partial`` by function and arguments; modules by name; other objects by type name.
    So ``lambda e, k: ... * m`` has a different fingerprint for ``m = 1`` and ``m = 3``.
    """
    h = hashlib.sha256()
    fp = _Fingerprint(h)
    fp.value(fn)
    call = vars(type(fn)).get("__call__")
    if not isinstance(fn, (types.FunctionType, types.MethodType)) and isinstance(call, types.FunctionType):
        fp.function(call, 0)  # a callable object: its class's __call__ too
    return h.digest()


class _Fingerprint:
    """Feeds a value's identifying bytes into a hash (see `code_fingerprint`)."""

    def __init__(self, h):
        self.h, self.seen = h, set()

    def put(self, *parts: Any) -> None:
        for p in parts:
            self.h.update(p if isinstance(p, bytes) else str(p).encode())
            self.h.update(b"\x00")

    def value(self, v: Any, depth: int = 0) -> None:  # noqa: C901 - one case per kind of value
        if depth > 32:
            self.put("deep")
        elif v is None or isinstance(v, (bool, int, float, complex, str)):
            self.put(type(v).__name__, repr(v))
        elif isinstance(v, bytes):
            self.put("bytes", hashlib.sha256(v).hexdigest())
        elif isinstance(v, (np.ndarray, np.generic, jax.Array)):
            arr = np.asarray(v)
            if arr.dtype == object:
                self.put("objects", arr.shape)
                self.items(arr.ravel(), depth)
            else:
                self.put("array", arr.dtype.str, arr.shape, hashlib.sha256(arr.tobytes()).hexdigest())
        elif isinstance(v, (tuple, list)):
            self.put(type(v).__name__, len(v))
            self.items(v, depth)
        elif isinstance(v, (set, frozenset)):
            self.put(type(v).__name__, len(v))
            self.items(sorted(v, key=repr), depth)
        elif isinstance(v, dict):
            self.put("dict", len(v))
            self.items([x for kv in v.items() for x in kv], depth)
        elif isinstance(v, functools.partial):
            self.put("partial")
            self.items((v.func, v.args, v.keywords), depth)
        elif isinstance(v, types.ModuleType):
            self.put("module", v.__name__)
        elif isinstance(v, type):
            self.put("class", v.__module__, v.__qualname__)
        elif dataclasses.is_dataclass(v):
            self.put("dataclass", type(v).__qualname__)
            self.value({f.name: getattr(v, f.name, None) for f in dataclasses.fields(v)}, depth + 1)
        elif isinstance(getattr(v, "__func__", v), types.FunctionType):  # a function or bound method
            self.function(getattr(v, "__func__", v), depth)
        else:
            self.put("object", type(v).__module__, type(v).__qualname__)

    def items(self, values, depth: int) -> None:
        for x in values:
            self.value(x, depth + 1)

    def function(self, fn: types.FunctionType, depth: int) -> None:
        self.put("function", fn.__qualname__)
        if id(fn) in self.seen:  # recursion (or mutual recursion): identified by name
            return
        self.seen.add(id(fn))
        names: list[str] = []

        def visit(c):
            self.put(c.co_code, repr(c.co_names))
            names.extend(c.co_names)
            for const in c.co_consts:
                if hasattr(const, "co_code"):
                    visit(const)
                else:  # by value: a frozenset's repr order varies between processes
                    self.value(const, depth + 1)

        visit(fn.__code__)
        self.value(fn.__defaults__, depth + 1)
        self.value(fn.__kwdefaults__, depth + 1)
        for cell in fn.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell (a name assigned later)
                contents = "<empty cell>"
            self.value(contents, depth + 1)
        scope = fn.__globals__
        for name in dict.fromkeys(names):
            if name in scope:
                self.put("global", name)
                self.value(scope[name], depth + 1)
