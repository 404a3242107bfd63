"""`DataSourceModule`: the base of every source, an NNX module with the iterator protocol.

Two kinds of source exist:

* **iterator sources** implement ``__iter__``/``__next__`` only (the guide's CSV example). They
  may yield plain dicts or `Element`s. Pipelines read them sequentially and number the records
  0, 1, 2, ... within each epoch.
* **random-access sources** (`RandomAccessSource`) also implement ``__len__``, ``__getitem__`` and
  ``get_batch(indices)``. Pipelines and the Beam readers read them by index, so they can be
  shuffled globally and split over workers without moving data around.

Iteration state is a small dict of ints (``get_state()``/``set_state()``), kept in `SourceCursor`
variables so ``nnx.state(source, SourceCursor)`` selects exactly the checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import flax.nnx as nnx
import numpy as np

from datarax_beam.core.element import Element, RecordMetadata


class SourceCursor(nnx.Variable):
    """Iteration state of a source or pipeline: a python int (epoch, position, ...).

    Read and write it with `get_cursor` / `set_cursor`, which work on every supported Flax
    version (``Variable.value`` is deprecated in recent Flax).
    """


def get_cursor(variable: nnx.Variable) -> int:
    """The int held by a `SourceCursor`."""
    get = getattr(variable, "get_value", None)
    return int(get() if get is not None else variable.value)


def set_cursor(variable: nnx.Variable, value: int) -> None:
    """Stores ``value`` in a `SourceCursor`."""
    setter = getattr(variable, "set_value", None)
    if setter is not None:
        setter(int(value))
    else:
        variable.value = int(value)


class DataSourceModule(nnx.Module, pytree=False):
    """Base class of all data sources.

    Subclasses may call ``super().__init__(name=...)`` without a config and keep any attributes
    they like (numpy arrays included): sources are not JAX pytrees, so the guide's custom sources
    work as written.

    Example:
      >>> class Count(DataSourceModule):
      ...     def __init__(self, n):
      ...         super().__init__(name="count")
      ...         self.n, self.i = n, 0
      ...     def __iter__(self):
      ...         self.i = 0
      ...         return self
      ...     def __next__(self):
      ...         if self.i >= self.n:
      ...             raise StopIteration
      ...         self.i += 1
      ...         return {"x": self.i - 1}
      >>> [d["x"] for d in Count(3)]
      [0, 1, 2]
    """

    def __init_subclass__(cls, **kwargs):
        # Sources hold host data (numpy arrays, file handles): keep them out of pytree checks.
        kwargs.setdefault("pytree", False)
        super().__init_subclass__(**kwargs)

    def __init__(self, config: Any = None, *, name: str | None = None, rngs: nnx.Rngs | None = None):
        self.config = config
        self.name = name or type(self).__name__
        self.rngs = rngs

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement __next__")

    @property
    def is_random_access(self) -> bool:
        """True when the source can be read by index (``__len__`` + ``get_batch``)."""
        return False

    def get_state(self) -> dict[str, int]:
        """The iteration state as a small dict of ints ({} for stateless sources)."""
        return {}

    def set_state(self, state: Mapping[str, int]) -> None:
        """Restores the state returned by `get_state`."""
        if state:
            raise ValueError(f"{type(self).__name__} has no iteration state, got {dict(state)!r}")

    def source_info(self) -> dict[str, Any]:
        """A small JSON-able description of the source (recorded in metadata)."""
        return {"source": type(self).__name__, "name": self.name}

    def fingerprint(self) -> str:
        """A string that changes when the source's content or order changes."""
        return f"{type(self).__name__}:{self.name}"


class RandomAccessSource(DataSourceModule):
    """A source readable by index, with an optional per-epoch global shuffle.

    Subclasses implement ``__len__`` and ``_read(indices) -> dict of stacked columns``. The epoch
    order is a permutation derived from (``config.seed``, epoch) when ``config.shuffle`` is set,
    so it is the same on every machine and runner.
    """

    def __init__(self, config: Any = None, *, name: str | None = None, rngs: nnx.Rngs | None = None):
        super().__init__(config, name=name, rngs=rngs)
        self.epoch = SourceCursor(0)
        self.position = SourceCursor(0)

    @property
    def is_random_access(self) -> bool:
        return True

    def __len__(self) -> int:
        raise NotImplementedError

    def _read(self, indices: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError

    # -- random access -----------------------------------------------------------------------
    def get_batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, Any]:
        """Reads the records at ``indices`` as a dict of stacked columns.

        Numeric features come back as arrays with a leading batch axis; text and bytes as numpy
        object arrays.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            bad = idx[(idx < 0) | (idx >= n)][0]
            raise IndexError(f"Record index {int(bad)} is out of range for a source of length {n}")
        return self._read(idx)

    def read_batches(self, chunks: Iterable[np.ndarray]) -> Iterator[dict[str, Any]]:
        """Reads a stream of index chunks, yielding one columnar batch per chunk, in order.

        Pipelines and Beam readers read through this hook, so a source may override it to
        prefetch (the ArrayRecord reader overlaps reads with the consumer here).
        """
        for idx in chunks:
            yield self.get_batch(idx)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"Source index must be an int, got {type(index).__name__} instead")
        n = len(self)
        i = int(index) + n if index < 0 else int(index)
        batch = self.get_batch([i])
        return {k: v[0] for k, v in batch.items()}

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The order in which records are visited in ``epoch``."""
        n = len(self)
        if getattr(self.config, "shuffle", False):
            seed = int(getattr(self.config, "seed", 0))
            return np.random.default_rng([seed, int(epoch)]).permutation(n)
        return np.arange(n, dtype=np.int64)

    # -- iteration ---------------------------------------------------------------------------
    def _cached_epoch_order(self, epoch: int) -> np.ndarray:
        """`epoch_order`, computed once per epoch rather than once per record."""
        cache = self.__dict__.get("_order_cache")
        if cache is None:
            cache = self.__dict__["_order_cache"] = _OrderCache()
        if cache.epoch != epoch or cache.order is None:
            cache.epoch, cache.order = epoch, self.epoch_order(epoch)
        return cache.order

    def __iter__(self) -> Iterator[Element]:
        return self

    def __next__(self) -> Element:
        pos, epoch = get_cursor(self.position), get_cursor(self.epoch)
        if pos >= len(self):
            set_cursor(self.epoch, epoch + 1)
            set_cursor(self.position, 0)
            raise StopIteration
        index = int(self._cached_epoch_order(epoch)[pos])
        set_cursor(self.position, pos + 1)
        meta = RecordMetadata(index=index, epoch=epoch, source_info=self.source_info())
        return Element(data=self[index], metadata=meta)

    def get_state(self) -> dict[str, int]:
        return {"epoch": get_cursor(self.epoch), "position": get_cursor(self.position)}

    def set_state(self, state: Mapping[str, int]) -> None:
        epoch, position = _require_ints(state, ("epoch", "position"), type(self).__name__)
        if not 0 <= position <= len(self):
            raise ValueError(
                f"State `position` {position} is out of range for a source of length {len(self)}"
            )
        set_cursor(self.epoch, epoch)
        set_cursor(self.position, position)


class _OrderCache:
    """Holds the current epoch's order outside NNX state (a plain object, not a Variable)."""

    def __init__(self):
        self.epoch: int | None = None
        self.order: np.ndarray | None = None


def _require_ints(state: Mapping[str, Any], keys: Sequence[str], owner: str) -> list[int]:
    """Validates a state dict of exactly ``keys``, each a non-negative int; returns the values."""
    if not isinstance(state, Mapping):
        raise TypeError(
            f"{owner} state must be a dict with keys {list(keys)}, got "
            f"{type(state).__name__}: {state!r:.100} instead"
        )
    unknown = sorted(str(k) for k in state if k not in keys)
    if unknown:
        raise KeyError(f"{owner} state has unknown keys {unknown} (expected exactly {list(keys)})")
    out = []
    for key in keys:
        if key not in state:
            raise KeyError(f"{owner} state is missing `{key}` (got keys {sorted(state)})")
        value = state[key]
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{owner} state `{key}` must be a non-negative int, got {value!r}")
        out.append(int(value))
    return out
