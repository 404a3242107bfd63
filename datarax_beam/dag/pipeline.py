"""The online pipeline: ``from_source(source, batch_size) >> OperatorNode(op) ...``.

A `Pipeline` is an NNX module whose iteration state is a cursor ``{"epoch", "position"}`` in
`SourceCursor` variables: over a random-access source, the source's own variables (one cursor
per source, shared by every pipeline built on it and by its direct iteration); over an iterator
source, the pipeline's. The iteration rule:

* each ``iter()`` yields the rest of the current epoch as batches (dicts of stacked arrays),
  from the cursor; after the last batch the cursor moves to the start of the next epoch;
* only the newest iterator is live: one made stale by a newer ``iter()``, `set_state`,
  ``nnx.update`` or direct iteration raises `StaleIteratorError` when used;
* an epoch past the source's ``num_epochs`` raises `EpochLimitError`, an epoch with no batch for
  this host `EmptyEpochError` — never a silently empty epoch.

Hosts read their slices of each global step (`datarax_beam.core.hosts`), so the cursor counts
records of the epoch's global order and resumes on any host count. Operators run through the
same `ChainKernel` as the Beam DoFn, keyed by each record's global source index, so results
never depend on batch size, order or host count.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Mapping
from typing import Any

import flax.nnx as nnx
import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.core.data_source import (
    DataSourceModule,
    EmptyEpochError,
    SourceCursor,
    StaleIteratorError,
    _iteration,
    _require_ints,
    get_cursor,
    set_cursor,
    start_epoch,
)
from datarax_beam.core.element import Element
from datarax_beam.core.hosts import host_steps
from datarax_beam.core.operator import OperatorModule
from datarax_beam.dag.nodes import BatchNode, ShuffleNode, as_operator, check_positive_int
from datarax_beam.dag.order import epoch_records, shuffle_indices, shuffle_rng
from datarax_beam.kernels import ChainKernel
from datarax_beam.kernels.device import to_device
from datarax_beam.operators.statistics import bind_statistics
from datarax_beam.progress import track
from datarax_beam.statistics import BLOCK_SIZE, Statistics, compute_over_batches, load_statistics


def zip_chunks(source, chunks):
    """(indices, columns) for each index chunk, read through the source's batch hook."""
    chunks = list(chunks)
    return zip(chunks, source.read_batches(iter(chunks)), strict=True)


class Pipeline(nnx.Module, pytree=False):
    """A source, an operator chain, an optional shuffle, and batching.

    Build it with `from_source`; ``>>``, `batch` and `shuffle` return new pipelines over the same
    source. State: ``get_state()`` -> ``{"epoch": e, "position": p, ...}`` (records of epoch
    ``e``'s global order consumed, by all hosts together); `set_state` restores it and the next
    iteration yields exactly what remained (module docstring: the iteration rule).
    """

    def __init__(
        self,
        source: DataSourceModule,
        operators: tuple[OperatorModule, ...] = (),
        batch: BatchNode | None = None,
        shuffle: ShuffleNode | None = None,
        statistics: Mapping[str, Mapping[str, Any]] | None = None,
    ):
        if not isinstance(source, DataSourceModule):
            raise TypeError(
                f"`source` must be a DataSourceModule (e.g. MemorySource), got {type(source).__name__}"
            )
        self.source = source
        self.operators = tuple(operators)
        self.batch_node = BatchNode(32) if batch is None else batch
        self.shuffle_node = shuffle
        self._given_statistics = None if statistics is None else dict(statistics)
        if source.is_random_access:  # the cursor is the source's own (the same variables)
            self.epoch, self.position = source.epoch, source.position
        else:
            self.epoch = SourceCursor(0)
            self.position = SourceCursor(0)
        self._runtime = _Runtime()

    # -- building ----------------------------------------------------------------------------
    def _replace(self, **changes) -> Pipeline:
        args = dict(source=self.source, operators=self.operators, batch=self.batch_node,
                    shuffle=self.shuffle_node, statistics=self._given_statistics)
        args.update(changes)
        return Pipeline(**args)

    def __rshift__(self, stage) -> Pipeline:
        return self._replace(operators=self.operators + (as_operator(stage),))

    def batch(self, batch_size: int, drop_remainder: bool = False) -> Pipeline:
        """Batches of ``batch_size`` records; the last partial batch is kept unless dropped."""
        return self._replace(batch=BatchNode(batch_size, drop_remainder))

    def shuffle(self, buffer_size: int, seed: int = 0) -> Pipeline:
        """Shuffles records (not batches) through a buffer; a new order every epoch."""
        return self._replace(shuffle=ShuffleNode(buffer_size, seed))

    def with_statistics(self, statistics: Mapping[str, Mapping[str, Any]] | str) -> Pipeline:
        """Uses these full-pass statistics instead of analyzing the source.

        ``statistics`` may be a `Statistics` mapping (e.g. ``shardset.statistics`` of a
        materialized training set, to normalize held-out data identically) or a path accepted by
        `datarax_beam.statistics.load_statistics`.
        """
        if isinstance(statistics, str):
            statistics = load_statistics(statistics)
        if not isinstance(statistics, Mapping):
            raise TypeError(f"`statistics` must be a mapping or a path, got {type(statistics).__name__}")
        return self._replace(statistics=statistics)

    @property
    def batch_size(self) -> int:
        return self.batch_node.batch_size

    @property
    def kernel(self) -> ChainKernel:
        """The compiled operator chain (built once per pipeline, padded to the batch size).

        An online kernel: it returns numeric features as ``jax.Array``s on the device, and an
        operator error names the record's global index (`datarax_beam.kernels.OperatorError`).
        """
        if self._runtime.kernel is None:
            self._runtime.kernel = ChainKernel(self.bound_operators(), pad_to=self.batch_size, online=True)
        return self._runtime.kernel

    def bound_operators(self) -> list[OperatorModule]:
        """The chain with statistics bound to the operators that need them.

        Missing statistics are computed here with one in-process pass per consumer over the
        records as they are just before it (epoch 0, index order), exactly as the Beam job does.
        """
        if self._runtime.bound is None:
            ops, stats = bind_statistics(self.operators, self._given_statistics, self._analyze)
            self._runtime.bound, self._runtime.statistics = ops, Statistics(stats)
        return self._runtime.bound

    @property
    def statistics(self) -> Statistics:
        """All statistics the chain uses (computed on first access when not given)."""
        self.bound_operators()
        return self._runtime.statistics

    def _analyze(self, prefix, specs) -> Statistics:
        kernel = ChainKernel(prefix, pad_to=self.batch_size)

        def batches():
            if self.source.is_random_access:
                n = len(self.source)
                chunks = (np.arange(s, min(s + BLOCK_SIZE, n)) for s in range(0, n, BLOCK_SIZE))
                for idx, data in zip_chunks(self.source, chunks):
                    yield kernel(data, idx, 0), idx
            else:
                stream = epoch_records(self.source, 0)
                while batch := [r for _, r in zip(range(BLOCK_SIZE), stream, strict=False)]:
                    idx = np.array([i for i, _ in batch], dtype=np.int64)
                    yield kernel(cols.columns_from_records([e.data for _, e in batch]), idx, 0), idx

        n = len(self.source) if self.source.is_random_access else None
        return compute_over_batches(specs, track(batches(), n, "statistics", count=lambda b: len(b[1])))

    def fingerprint(self) -> str:
        """Identifies the operator chain (code, configs, seeds); statistics are recorded apart."""
        return ChainKernel(self.operators).fingerprint() if self.operators else "identity"

    # -- state -------------------------------------------------------------------------------
    def get_state(self) -> dict[str, int]:
        """``{"epoch", "position"}`` (records of the epoch's global order consumed), plus what the
        source adds (the reader: ``fingerprint`` and ``shuffle``).

        Over a random-access source this is the source's own state: the cursor lives in the
        source, so every pipeline built on it and its direct iteration share one position.
        """
        if self.source.is_random_access:
            return self.source.get_state()
        return {"epoch": get_cursor(self.epoch), "position": get_cursor(self.position)}

    def set_state(self, state: Mapping[str, int]) -> None:
        if self.source.is_random_access:
            self.source.set_state(state)
        else:
            epoch, position = _require_ints(state, ("epoch", "position"), "Pipeline")
            set_cursor(self.epoch, epoch)
            set_cursor(self.position, position)
            self._runtime.live = None
        self._runtime.owner = None

    # -- iteration ---------------------------------------------------------------------------
    def __len__(self) -> int:
        """Batches this host yields per epoch (random-access sources only)."""
        if not self.source.is_random_access:
            raise TypeError(f"The length of a pipeline over {type(self.source).__name__} is unknown")
        n = self.source.epoch_size(get_cursor(self.source.epoch))
        return len(host_steps(n, 0, self.batch_size, self.source.host_shard(), self.batch_node.drop_remainder))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The rest of the current epoch, as batches; see the module docstring for the rule."""
        token = object()
        if self.source.is_random_access:
            run = _iteration(self.source)
            epoch, order, steps = start_epoch(self.source, self.epoch_indices, self.batch_size,
                                              self.batch_node.drop_remainder)
            run.owner, run.live, run.stop_at = token, None, None
            return self._iterate(token, run, epoch, order, steps)
        self._runtime.owner = token
        return self._iterate_stream(token)

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """The global indices in the order epoch ``epoch`` visits them (random-access sources).

        All hosts share this order; each reads its slices of it (`datarax_beam.core.hosts`).
        """
        order = self.source.epoch_order(epoch)
        if self.shuffle_node is not None:
            node = self.shuffle_node
            order = shuffle_indices(order, node.buffer_size, shuffle_rng(node.seed, epoch))
        return order

    def _check_live(self, token, owner, cursor, expected) -> None:
        if owner is not token:
            raise StaleIteratorError(
                "This iterator was replaced by a newer iter() over the same cursor (a pipeline's "
                "source holds one cursor shared by every pipeline built on it); use the newest "
                "iterator, or call iter() again"
            )
        now = (get_cursor(cursor[0]), get_cursor(cursor[1]))
        if now != expected:
            raise StaleIteratorError(
                f"The cursor moved to epoch {now[0]} position {now[1]} while this iterator stood at "
                f"epoch {expected[0]} position {expected[1]} (set_state, nnx.update or direct "
                f"iteration of the source); call iter() again to continue from the cursor"
            )

    def _iterate(self, token, run, epoch, order, steps) -> Iterator[dict[str, Any]]:
        source = self.source
        cursor = (source.epoch, source.position)
        expected = (epoch, get_cursor(source.position))
        chunks = [order[lo:hi] for lo, hi in zip(steps.lo.tolist(), steps.hi.tolist(), strict=True)]
        ends = steps.end.tolist()
        for j, (data, indices) in enumerate(zip(source.read_batches(iter(chunks)), chunks, strict=True)):
            self._check_live(token, run.owner, cursor, expected)
            out = self.kernel(data, indices, epoch)
            expected = (epoch + 1, 0) if steps.is_last(j) else (epoch, ends[j])
            set_cursor(source.epoch, expected[0])
            set_cursor(source.position, expected[1])
            yield _to_jax(out)
        if not steps.final:  # this host's part is done; the other hosts have one step left
            self._check_live(token, run.owner, cursor, expected)
            set_cursor(source.epoch, epoch + 1)
            set_cursor(source.position, 0)

    def _iterate_stream(self, token) -> Iterator[dict[str, Any]]:
        """An iterator source's epoch: read sequentially, one batch ahead to know the last one."""
        cursor = (self.epoch, self.position)
        epoch, position = get_cursor(self.epoch), get_cursor(self.position)
        bs, drop = self.batch_size, self.batch_node.drop_remainder
        stream = self._records_from(epoch, position)
        if not stream.has(bs if drop else 1):
            if position == 0:
                raise EmptyEpochError(
                    f"Epoch {epoch} of {type(self.source).__name__} {self.source.name!r} yields no "
                    f"{'full ' if drop else ''}batch of {bs} (an iterator source whose __iter__ does "
                    f"not restart, or too few records)"
                )
            epoch, position = epoch + 1, 0  # the saved cursor had finished its epoch
            set_cursor(self.epoch, epoch)
            set_cursor(self.position, 0)
            stream = self._records_from(epoch, 0)
            if not stream.has(bs if drop else 1):
                raise EmptyEpochError(f"Epoch {epoch} of {type(self.source).__name__} "
                                      f"{self.source.name!r} yields no batch of {bs}")
        expected = (epoch, position)
        while True:
            self._check_live(token, self._runtime.owner, cursor, expected)
            batch = stream.take(bs)
            idx = np.array([i for i, _ in batch], dtype=np.int64)
            data, indices = cols.columns_from_records([e.data for _, e in batch]), idx
            out = self.kernel(data, indices, epoch)
            position += len(batch)
            last = not stream.has(bs if drop else 1)
            expected = (epoch + 1, 0) if last else (epoch, position)
            set_cursor(self.epoch, expected[0])
            set_cursor(self.position, expected[1])
            self._runtime.live = None if last else (epoch, position, stream)
            yield _to_jax(out)
            if last:
                return

    def _records_from(self, epoch: int, position: int) -> _Records:
        """An iterator source's records of ``epoch`` from ``position`` (the open stream when it
        stands there, else a replay of the epoch that skips what was already yielded)."""
        live = self._runtime.live
        if live is not None and live[:2] == (epoch, position):
            return live[2]
        stream = _Records(epoch_records(self.source, epoch, self.shuffle_node))
        skipped = len(stream.take(position))
        if skipped < position:
            raise ValueError(
                f"Pipeline state `position` {position} is past the end of epoch {epoch} of "
                f"{type(self.source).__name__} {self.source.name!r}, which has {skipped} records"
            )
        return stream


class _Records:
    """An iterator of (index, element) pairs that can tell whether ``n`` more are left."""

    def __init__(self, iterator: Iterator[tuple[int, Element]]):
        self._it, self._buffer = iterator, collections.deque()

    def has(self, n: int) -> bool:
        while len(self._buffer) < n:
            item = next(self._it, None)
            if item is None:
                return False
            self._buffer.append(item)
        return True

    def take(self, n: int) -> list[tuple[int, Element]]:
        self.has(n)
        return [self._buffer.popleft() for _ in range(min(n, len(self._buffer)))]


class _Runtime:
    """What a pipeline builds while running (the jitted kernel, an iterator source's open stream).

    Kept outside NNX state, and dropped by copies and pickles: a copy rebuilds its kernel and
    replays an iterator source from its cursor, so copying a pipeline mid-epoch works.
    """

    def __init__(self):
        self.kernel: ChainKernel | None = None
        self.bound: list[OperatorModule] | None = None
        self.statistics: Statistics | None = None
        self.live: tuple[int, int, _Records] | None = None  # an iterator source's open stream
        self.owner: object | None = None  # the live iterator of an iterator-source pipeline

    def __deepcopy__(self, memo):
        return _Runtime()

    def __reduce__(self):
        return (_Runtime, ())


def _to_jax(batch: Mapping[str, Any]) -> dict[str, Any]:
    """Numeric features as ``jax.Array``s, each put on the device once (the online kernel already
    returns them so: this only converts what is still numpy)."""
    return to_device(batch)


def from_source(source: DataSourceModule, batch_size: int = 32) -> Pipeline:
    """Starts a pipeline over ``source`` that yields batches of ``batch_size`` records.

    Example:
      >>> from datarax_beam.sources import MemorySource, MemorySourceConfig
      >>> p = from_source(MemorySource(MemorySourceConfig(), [{"x": i} for i in range(5)]), batch_size=2)
      >>> [b["x"].tolist() for b in p]
      [[0, 1], [2, 3], [4]]
    """
    check_positive_int("batch_size", batch_size)
    return Pipeline(source, batch=BatchNode(int(batch_size)))


__all__ = ["Pipeline", "from_source"]
