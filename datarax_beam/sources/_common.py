"""Pieces shared by the TFDS and Hugging Face sources (internal).

* `DatasetUnavailableError`: the one error a source raises when its dataset cannot be found
  locally nor downloaded.
* `check_keys` / `select_keys`: include/exclude key filtering with errors that name the keys.
* `ShardedStreamingSource`: the base of the streaming sources. It reads shard after shard, keeps
  a resumable cursor ``{"epoch", "position", "shard_pos", "offset"}`` and, with ``shuffle``,
  visits the shards in a per-epoch seeded order and shuffles records through a buffer seeded by
  (seed, epoch, shard), so every record is seen exactly once per epoch and restores are exact.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import flax.nnx as nnx
import numpy as np

from datarax_beam.core.data_source import DataSourceModule, SourceCursor, _require_ints
from datarax_beam.core.data_source import get_cursor as _get
from datarax_beam.core.data_source import set_cursor as _put
from datarax_beam.core.element import Element, RecordMetadata

#: What the TFRecord-only error tells users to install.
TENSORFLOW_EXTRA = "pip install 'datarax_beam[tensorflow]'"


class DatasetUnavailableError(OSError):
    """A dataset is neither available locally nor downloadable (e.g. offline)."""


class Handle:
    """Holds an open dataset outside NNX state; pickles empty so a worker reopens it lazily."""

    def __init__(self, value: Any = None):
        self.value = value

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.value = None


def normalize_keys(value: Any, field: str) -> tuple[str, ...] | None:
    """Validates an include/exclude key list and returns it as a tuple (or None)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = (value,)
    keys = tuple(value)
    if not all(isinstance(k, str) for k in keys):
        raise TypeError(f"`{field}` must be a sequence of feature names (str), got {value!r}")
    return keys


def check_common(config: Any) -> None:
    """Validates the fields every dataset config shares."""
    if not isinstance(config.name, str) or not config.name:
        raise ValueError(f"`name` must be a non-empty str, got {config.name!r}")
    if not isinstance(config.split, str) or not config.split:
        raise ValueError(f"`split` must be a non-empty str such as 'train', got {config.split!r}")
    if not isinstance(config.shuffle, bool):
        raise TypeError(f"`shuffle` must be a bool, got {config.shuffle!r}")
    if not isinstance(config.seed, (int, np.integer)):
        raise TypeError(f"`seed` must be an int, got {config.seed!r}")
    object.__setattr__(config, "include_keys", normalize_keys(config.include_keys, "include_keys"))
    object.__setattr__(config, "exclude_keys", normalize_keys(config.exclude_keys, "exclude_keys"))


def select_keys(available: Sequence[str], config: Any, what: str) -> list[str]:
    """The features to keep, in the dataset's order, after include/exclude filtering."""
    include, exclude = config.include_keys, config.exclude_keys
    for field, keys in (("include_keys", include), ("exclude_keys", exclude)):
        missing = sorted(set(keys or ()) - set(available))
        if missing:
            raise KeyError(
                f"`{field}` names features {missing} that {what} does not have; "
                f"it has {sorted(available)}"
            )
    keep = [k for k in available if (include is None or k in include)]
    keep = [k for k in keep if not exclude or k not in exclude]
    if not keep:
        raise ValueError(
            f"include_keys={include} and exclude_keys={exclude} leave no feature of {what} "
            f"(it has {sorted(available)})"
        )
    return keep


def filter_record(record: Mapping[str, Any], keep: Sequence[str]) -> dict[str, Any]:
    return {k: record[k] for k in keep}


def buffer_shuffled(
    records: Iterator[Any], buffer_size: int, rng: np.random.Generator
) -> Iterator[Any]:
    """A deterministic buffer shuffle: each input item comes out exactly once."""
    buf: list[Any] = []
    for rec in records:
        buf.append(rec)
        if len(buf) >= buffer_size:
            j = int(rng.integers(len(buf)))
            buf[j], buf[-1] = buf[-1], buf[j]
            yield buf.pop()
    order = rng.permutation(len(buf))
    for j in order:
        yield buf[j]


class ShardedStreamingSource(DataSourceModule):
    """Base of sources read sequentially, shard by shard.

    Subclasses implement ``n_shards`` and ``_shard_records(i)`` (the records of shard ``i`` in
    stored order, as dicts of numpy values / str / bytes), and may implement
    ``shard_lengths()``. The config needs ``shuffle``, ``seed`` and ``shuffle_buffer_size``.

    Contract for parallel (Beam) readers: ``iter_shard(i)`` yields shard ``i``'s records in
    stored order; iterating the whole unshuffled source yields ``iter_shard(0)``, then
    ``iter_shard(1)``, ... The source pickles without open handles.
    """

    def __init__(self, config: Any, *, name: str | None = None, rngs: nnx.Rngs | None = None):
        super().__init__(config, name=name, rngs=rngs)
        self.epoch = SourceCursor(0)
        self.position = SourceCursor(0)
        self.shard_pos = SourceCursor(0)
        self.offset = SourceCursor(0)
        self._live = Handle()
        self._starts_cache = Handle()

    # -- to implement ------------------------------------------------------------------------
    @property
    def n_shards(self) -> int:
        raise NotImplementedError

    def _shard_records(self, shard: int) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def shard_lengths(self) -> list[int] | None:
        """Records per shard when known without reading the data, else None."""
        return None

    # -- shards ------------------------------------------------------------------------------
    def iter_shard(self, shard: int) -> Iterator[dict[str, Any]]:
        """Yields the records of ``shard`` (dicts of features) in stored order."""
        n = self.n_shards
        if not isinstance(shard, (int, np.integer)) or not 0 <= shard < n:
            raise IndexError(f"Shard {shard!r} is out of range for a source with {n} shards")
        return self._shard_records(int(shard))

    def shard_order(self, epoch: int) -> np.ndarray:
        """The order in which shards are read in ``epoch``."""
        n = self.n_shards
        if self.config.shuffle:
            return np.random.default_rng([int(self.config.seed), int(epoch)]).permutation(n)
        return np.arange(n, dtype=np.int64)

    def _stream(self, epoch: int, shard: int) -> Iterator[tuple[int, dict[str, Any]]]:
        records = enumerate(self._shard_records(shard))
        if not self.config.shuffle:
            return records
        rng = np.random.default_rng([int(self.config.seed), int(epoch), int(shard), 1])
        return buffer_shuffled(records, int(self.config.shuffle_buffer_size), rng)

    # -- iteration ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Element]:
        return self

    def __next__(self) -> Element:
        while True:
            epoch, sp, off = (_get(v) for v in (self.epoch, self.shard_pos, self.offset))
            order = self.shard_order(epoch)
            if sp >= len(order):
                self._set(epoch + 1, 0, 0, 0)
                self._live.value = None
                raise StopIteration
            shard = int(order[sp])
            live = self._live.value
            if live is not None and live[0] == (epoch, sp, off):
                stream = live[1]
            else:
                stream = self._stream(epoch, shard)
                for _ in range(off):  # resume inside the shard by replaying it
                    next(stream, None)
            item = next(stream, None)
            if item is None:
                _put(self.shard_pos, sp + 1)
                _put(self.offset, 0)
                self._live.value = None
                continue
            stored, record = item
            position = _get(self.position)
            _put(self.offset, off + 1)
            _put(self.position, position + 1)
            self._live.value = ((epoch, sp, off + 1), stream)
            meta = RecordMetadata(
                index=self._global_index(shard, stored, position),
                epoch=epoch,
                shard_id=shard,
                source_info=self.source_info(),
            )
            return Element(data=record, metadata=meta)

    def _global_index(self, shard: int, stored: int, position: int) -> int:
        lengths = self._starts()
        if lengths is not None:
            return int(lengths[shard]) + stored
        return position  # shard sizes unknown: number records by arrival

    def _starts(self) -> np.ndarray | None:
        if self._starts_cache.value is None:
            lengths = self.shard_lengths()
            if lengths is None:
                return None
            self._starts_cache.value = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        return self._starts_cache.value

    # -- state -------------------------------------------------------------------------------
    def _set(self, epoch: int, position: int, shard_pos: int, offset: int) -> None:
        for variable, value in zip(
            (self.epoch, self.position, self.shard_pos, self.offset),
            (epoch, position, shard_pos, offset),
            strict=True,
        ):
            _put(variable, value)

    def get_state(self) -> dict[str, int]:
        return {
            "epoch": _get(self.epoch),
            "position": _get(self.position),
            "shard_pos": _get(self.shard_pos),
            "offset": _get(self.offset),
        }

    def set_epoch(self, epoch: int) -> None:
        """Moves the cursor to the start of ``epoch`` (the order of a shuffled epoch depends on
        it, so a reader replaying epoch ``e`` from its start calls this first)."""
        self._set(int(epoch), 0, 0, 0)
        self._live.value = None

    def set_state(self, state: Mapping[str, int]) -> None:
        values = _require_ints(
            state, ("epoch", "position", "shard_pos", "offset"), type(self).__name__
        )
        if values[2] > self.n_shards:
            raise ValueError(
                f"State `shard_pos` {values[2]} is out of range for a source with "
                f"{self.n_shards} shards"
            )
        self._set(*values)
        self._live.value = None
