"""The online pipeline: ``from_source(source, batch_size) >> OperatorNode(op) ...``.

A `Pipeline` is an NNX module holding its iteration state (epoch, position) in `SourceCursor`
variables. Iterating it yields one epoch of batches (dicts of stacked arrays), continuing from
wherever the state says. Operators run through the same `ChainKernel` as the Beam DoFn, keyed by
each record's global source index, so results never depend on batch size or order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import flax.nnx as nnx
import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.core.data_source import (
    DataSourceModule,
    SourceCursor,
    _require_ints,
    get_cursor,
    set_cursor,
)
from datarax_beam.core.element import Element
from datarax_beam.core.operator import OperatorModule
from datarax_beam.dag.nodes import BatchNode, ShuffleNode, as_operator, check_positive_int
from datarax_beam.dag.order import epoch_records, shuffle_indices, shuffle_rng
from datarax_beam.kernels import ChainKernel
from datarax_beam.kernels.device import to_device
from datarax_beam.operators.statistics import bind_statistics
from datarax_beam.statistics import BLOCK_SIZE, Statistics, compute_over_batches, load_statistics


def zip_chunks(source, chunks):
    """(indices, columns) for each index chunk, read through the source's batch hook."""
    chunks = list(chunks)
    return zip(chunks, source.read_batches(iter(chunks)), strict=True)


class Pipeline(nnx.Module, pytree=False):
    """A source, an operator chain, an optional shuffle, and batching.

    Build it with `from_source`; ``>>``, `batch` and `shuffle` return new pipelines over the same
    source. State: ``get_state()`` -> ``{"epoch": e, "position": p}`` (records yielded so far in
    epoch ``e``); `set_state` restores it and the next iteration yields exactly what remained.
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

        return compute_over_batches(specs, batches())

    def fingerprint(self) -> str:
        """Identifies the operator chain (code, configs, seeds); statistics are recorded apart."""
        return ChainKernel(self.operators).fingerprint() if self.operators else "identity"

    # -- state -------------------------------------------------------------------------------
    def get_state(self) -> dict[str, int]:
        return {"epoch": get_cursor(self.epoch), "position": get_cursor(self.position)}

    def set_state(self, state: Mapping[str, int]) -> None:
        epoch, position = _require_ints(state, ("epoch", "position"), "Pipeline")
        if self.source.is_random_access and position > len(self.source):
            raise ValueError(
                f"Pipeline state `position` {position} is out of range for a source of length "
                f"{len(self.source)}"
            )
        set_cursor(self.epoch, epoch)
        set_cursor(self.position, position)

    # -- iteration ---------------------------------------------------------------------------
    def __len__(self) -> int:
        """Batches per epoch (random-access sources only)."""
        if not self.source.is_random_access:
            raise TypeError(f"The length of a pipeline over {type(self.source).__name__} is unknown")
        n, b = len(self.source.epoch_order(get_cursor(self.epoch))), self.batch_size
        return n // b if self.batch_node.drop_remainder else -(-n // b)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._iterate()

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """The global indices in the order epoch ``epoch`` visits them (random-access sources)."""
        order = self.source.epoch_order(epoch)
        if self.shuffle_node is not None:
            node = self.shuffle_node
            order = shuffle_indices(order, node.buffer_size, shuffle_rng(node.seed, epoch))
        return order

    def _iterate(self) -> Iterator[dict[str, Any]]:
        epoch = get_cursor(self.epoch)
        records = self._records_from(epoch, get_cursor(self.position))
        bs, drop = self.batch_size, self.batch_node.drop_remainder
        while True:
            chunk = next(records, None)
            if chunk is None:
                break
            data, indices = chunk
            if len(indices) < bs and drop:
                break
            out = self.kernel(data, indices, epoch)
            set_cursor(self.position, get_cursor(self.position) + len(indices))
            yield _to_jax(out)
        set_cursor(self.epoch, epoch + 1)
        set_cursor(self.position, 0)
        self._runtime.live = None

    def _records_from(self, epoch: int, position: int) -> Iterator[tuple[dict, np.ndarray]]:
        """Yields (columns, global indices) batches from ``position`` of ``epoch``."""
        bs = self.batch_size
        if self.source.is_random_access:
            order = self.epoch_indices(epoch)
            chunks = [order[start : start + bs] for start in range(position, len(order), bs)]
            yield from zip(self.source.read_batches(iter(chunks)), chunks, strict=True)
            return
        yield from self._iterator_batches(epoch, position)

    def _iterator_batches(self, epoch: int, position: int):
        live = self._runtime.live
        if live is not None and live[:2] == (epoch, position):
            stream = live[2]
        else:  # replay the epoch from its start and skip what was already yielded
            stream = self._iterator_records(epoch)
            for _ in range(position):
                if next(stream, None) is None:
                    break
        bs = self.batch_size
        while True:
            batch = [r for _, r in zip(range(bs), stream, strict=False)]
            if not batch:
                return
            position += len(batch)
            self._runtime.live = (epoch, position, stream)
            idx = np.array([i for i, _ in batch], dtype=np.int64)
            yield cols.columns_from_records([e.data for _, e in batch]), idx

    def _iterator_records(self, epoch: int) -> Iterator[tuple[int, Element]]:
        return epoch_records(self.source, epoch, self.shuffle_node)


class _Runtime:
    """What a pipeline builds while running (the jitted kernel, an iterator source's open stream).

    Kept outside NNX state, and dropped by copies and pickles: a copy rebuilds its kernel and
    replays an iterator source from its cursor, so copying a pipeline mid-epoch works.
    """

    def __init__(self):
        self.kernel: ChainKernel | None = None
        self.bound: list[OperatorModule] | None = None
        self.statistics: Statistics | None = None
        self.live: tuple[int, int, Iterator] | None = None

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
