"""`DataSourceModule`: the base of every source, an NNX module with the iterator protocol.

Two kinds of source exist:

* **iterator sources** implement ``__iter__``/``__next__`` only (the guide's CSV example). They
  may yield plain dicts or `Element`s. Pipelines read them sequentially and number the records
  0, 1, 2, ... within each epoch.
* **random-access sources** (`RandomAccessSource`) also implement ``__len__``, ``__getitem__`` and
  ``get_batch(indices)``. Pipelines and the Beam readers read them by index, so they can be
  shuffled globally and split over workers without moving data around.

Iteration state is a small dict of ints (``get_state()``/``set_state()``), kept in `SourceCursor`
variables so ``nnx.state(source, SourceCursor)`` selects exactly the checkpoint. A random-access
source's cursor ``{"epoch", "position"}`` counts records of the epoch's *global* order (all hosts
together, `datarax_beam.core.hosts`); pipelines built on the source read and advance it, and
each pass (``iter()``) yields the rest of the current epoch (see `datarax_beam.dag.pipeline`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import flax.nnx as nnx
import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.core.element import Element, RecordMetadata
from datarax_beam.core.hosts import HostShard, Steps, host_steps


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
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_init(cls.__dict__["__init__"])

    def __init__(self, config: Any = None, *, name: str | None = None, rngs: nnx.Rngs | None = None):
        self.config = config
        self.name = name or type(self).__name__
        self.rngs = rngs
        _record_init(self)

    # -- what travels with a source ----------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """What a pickled source carries (to Beam workers): the attributes its
        constructor set, with their current values (configuration, handles that reopen lazily,
        cursor variables). Attributes created later — caches a method stores on ``self`` or in
        ``self.__dict__`` — stay behind; the method that created them creates them again.

        So the data a custom source caches while the driver reads it (the first batch that fixes
        the schema, its length) is not shipped with the job. Keep a cache out of what travels by
        creating it outside ``__init__`` (``self.__dict__.setdefault("_cache", {})``).
        """
        state = super().__getstate__()
        keys = state.get(_INIT_KEYS)
        if keys is None:  # an instance built without running __init__ (unpickled, copied)
            return state
        return {k: v for k, v in state.items() if k in keys}

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


_INIT_KEYS = "_source_init_keys"


def _record_init(source: DataSourceModule) -> None:
    """Remembers which attributes exist once construction is done (the outermost ``__init__``
    finishes last, so its record is the final one)."""
    attributes = vars(source)
    attributes[_INIT_KEYS] = frozenset(attributes) | {_INIT_KEYS}


def _recording_init(init):
    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        _record_init(self)

    return __init__


class RandomAccessSource(DataSourceModule):
    """A source readable by index, with an optional per-epoch global shuffle.

    Subclasses implement ``__len__`` and ``_read(indices) -> dict of stacked columns``. The epoch
    order is a permutation derived from (``config.seed``, epoch) when ``config.shuffle`` is set,
    so it is the same on every machine and runner.
    """

    #: Whether the source never writes again to an array ``_read`` returned (a view of data it
    #: holds fixed, or a new array). Otherwise (the default: a source may fill one buffer per
    #: call) `get_batch` copies every array column whose memory may change
    #: (`columns.is_frozen`), since a batch is still in use -- being compressed, read by JAX,
    #: kept by a user -- while the next one is read.
    stable_batches = False

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
        batch = self._read(idx)
        if self.stable_batches:
            return batch
        return {k: v.copy() if isinstance(v, np.ndarray) and not cols.is_frozen(v) else v
                for k, v in batch.items()}

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
    def host_shard(self) -> HostShard:
        """This process's part of every epoch (see `datarax_beam.core.hosts`); one host here."""
        return HostShard()

    @property
    def num_epochs(self) -> int | None:
        """Epochs the source serves (``config.num_epochs`` when it has one; None: unbounded)."""
        return getattr(self.config, "num_epochs", None)

    def epoch_size(self, epoch: int) -> int:
        """Records in the global order of ``epoch`` (all hosts together)."""
        return len(self.epoch_order(epoch))

    def check_epoch(self, epoch: int) -> None:
        """Raises `EpochLimitError` when ``epoch`` is past `num_epochs`."""
        limit = self.num_epochs
        if limit is not None and epoch >= limit:
            raise EpochLimitError(
                f"{type(self).__name__} {self.name!r} serves num_epochs={limit} epoch(s) and epoch "
                f"{epoch} was asked for: each iter() reads one epoch, so iterate at most {limit} time(s), "
                f"or set num_epochs=None for an unbounded number of epochs"
            )

    def check_state(self) -> None:
        """Validates the cursor as `set_state` would: state applied with ``nnx.update`` is checked
        here, at the next read."""
        self.set_state(self.get_state())

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
        """The next record of this host's part of the epoch (the global-step rule, one record
        per host per step), read ahead in chunks of `ITER_CHUNK` through `read_batches`."""
        run = _iteration(self)
        key = (get_cursor(self.epoch), get_cursor(self.position))
        if run.stop_at == key:  # the last record of the epoch was returned: end this pass
            run.stop_at = None
            raise StopIteration
        if run.live is None or run.live[0] != key:
            epoch, order, steps = start_epoch(self, self._cached_epoch_order, 1, drop=False)
            run.live, run.stop_at = [None, self._elements(epoch, order, steps)], None
        item = next(run.live[1], None)
        if item is None:  # this host's part of the epoch is done, the last global step is not
            run.live = None
            set_cursor(self.epoch, key[0] + 1)
            set_cursor(self.position, 0)
            raise StopIteration
        element, epoch, end, last = item
        nxt = (epoch + 1, 0) if last else (epoch, end)
        set_cursor(self.epoch, nxt[0])
        set_cursor(self.position, nxt[1])
        run.live[0] = nxt
        if last:
            run.live, run.stop_at = None, nxt
        return element

    def _elements(self, epoch: int, order: np.ndarray, steps: Steps) -> Iterator[tuple]:
        info = self.source_info()
        cuts = range(0, len(steps), ITER_CHUNK)
        chunks = [order[steps.lo[c : c + ITER_CHUNK]] for c in cuts]
        for c, idx, batch in zip(cuts, chunks, self.read_batches(iter(chunks)), strict=True):
            ends = steps.end[c : c + ITER_CHUNK].tolist()
            for j, index in enumerate(idx.tolist()):
                meta = RecordMetadata(index=index, epoch=epoch, source_info=info)
                element = Element(data={k: v[j] for k, v in batch.items()}, metadata=meta)
                yield element, epoch, ends[j], steps.is_last(c + j)

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


#: Records read per batch when a random-access source is iterated directly (record by record).
ITER_CHUNK = 256


class EpochLimitError(RuntimeError):
    """An iteration asked for an epoch past the source's ``num_epochs``."""


class EmptyEpochError(RuntimeError):
    """An epoch would yield nothing on this host (too few records for the batch or host count)."""


class StaleIteratorError(RuntimeError):
    """An iterator was used after a newer ``iter()``, `set_state` or ``nnx.update`` moved its cursor."""


def start_epoch(source: RandomAccessSource, order_of, batch: int, drop: bool) -> tuple[int, np.ndarray, Steps]:
    """Validates ``source``'s cursor and returns (epoch, global order, this host's steps from it).

    A cursor at the end of its epoch (all of this host's steps done) moves to the next epoch
    first; an epoch past ``num_epochs`` raises `EpochLimitError` and an epoch with no step for
    this host `EmptyEpochError`, so a loop over epochs never spins on silently empty ones.
    ``order_of(epoch)`` gives the global order (a pipeline's may add its own shuffle).
    """
    source.check_state()
    epoch, position = get_cursor(source.epoch), get_cursor(source.position)
    host = source.host_shard()
    for attempt in range(2):
        source.check_epoch(epoch)
        order = order_of(epoch)
        if position > len(order):
            raise ValueError(
                f"State `position` {position} is out of range for epoch {epoch} of "
                f"{type(source).__name__} {source.name!r}, which has {len(order)} records"
            )
        steps = host_steps(len(order), position, batch, host, drop)
        if len(steps):
            return epoch, order, steps
        if position == 0 or attempt:
            raise EmptyEpochError(
                f"Epoch {epoch} of {type(source).__name__} {source.name!r} has {len(order)} "
                f"records: no batch of {batch} for {host}"
                + (" with drop_remainder" if drop else "")
                + "; use fewer hosts, a smaller batch, or more data"
            )
        epoch, position = epoch + 1, 0  # the saved cursor had finished its epoch
        set_cursor(source.epoch, epoch)
        set_cursor(source.position, 0)
    raise AssertionError("unreachable")


class _Iteration:
    """A source's open record stream (direct iteration), outside NNX state; copies start fresh."""

    def __init__(self):
        self.live: list | None = None  # [cursor key after the last record, element stream]
        self.stop_at: tuple[int, int] | None = None
        self.owner: object | None = None  # the live pipeline iterator reading this cursor

    def __deepcopy__(self, memo):
        return _Iteration()

    def __reduce__(self):
        return (_Iteration, ())


def _iteration(source: DataSourceModule) -> _Iteration:
    run = source.__dict__.get("_iteration")
    if run is None:
        run = source.__dict__["_iteration"] = _Iteration()
    return run


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
