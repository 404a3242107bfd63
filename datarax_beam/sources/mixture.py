"""`Mixture`: several random-access sources interleaved by weight, as one source.

Epoch ``e`` of a mixture is a global order of ``L`` records in which source ``j`` supplies
``c_j`` records (``c_j / L`` is its weight, exactly, by largest remainder). Source ``j``'s
records are the next ``c_j`` of *its* stream: its epoch orders one after another, so epoch
``e`` of the mixture reads positions ``[e * c_j, (e + 1) * c_j)`` of that stream. Where each
source's records go in the epoch is a seeded permutation (``seed``) or, with ``seed=None``, an
even spread (every prefix holds each source in proportion). Everything is a function of
(sources, weights, seed, epoch), so the state is the usual ``{"epoch", "position"}`` of the
global order and resumes exactly, on any host count (`datarax_beam.core.hosts`).

How long an epoch is (``exhaustion``):

* ``"first"`` (default): stop at the first exhausted — ``L`` is as large as it can be without
  any source supplying more than its length, so the source with the smallest length/weight is
  read once per epoch and the others partly (the next epoch continues where they stopped);
* ``"repeat"``: repeat each until a total — ``L = num_records`` (default: the smallest ``L``
  for which every source supplies at least its length); sources that run out start their next
  epoch (a new permutation when they shuffle), so their records repeat.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import flax.nnx as nnx
import jax
import numpy as np

from datarax_beam.core.data_source import (
    RandomAccessSource,
    SourceCursor,
    _require_ints,
    get_cursor,
    set_cursor,
)
from datarax_beam.core.hosts import HostShard
from datarax_beam.shards.codec import decode_batch
from datarax_beam.sources._prefetch import Prefetcher
from datarax_beam.sources.array_record import ArrayRecordSourceModule

EXHAUSTION = ("first", "repeat")


@dataclasses.dataclass(frozen=True)
class MixtureConfig:
    """How a `Mixture` interleaves and how long its epochs are (see the module docstring)."""

    weights: tuple[float, ...]
    seed: int | None = 0
    exhaustion: str = "first"
    num_records: int | None = None
    num_epochs: int | None = None
    shard_index: int | None = None
    shard_count: int | None = None
    drop_remainder: bool = False
    read_threads: int = 2
    prefetch_batches: int = 4

    def __post_init__(self):
        if self.exhaustion not in EXHAUSTION:
            raise ValueError(f"`exhaustion` must be one of {EXHAUSTION}, got {self.exhaustion!r}")
        if self.num_records is not None and self.exhaustion != "repeat":
            raise ValueError("`num_records` sets the epoch length with exhaustion='repeat' only, got "
                             f"exhaustion={self.exhaustion!r}")
        for name in ("seed", "num_records", "num_epochs", "shard_index", "shard_count"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
                raise TypeError(f"`{name}` must be an int or None, got {value!r}")
        for name in ("num_records", "num_epochs", "shard_count"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if (self.shard_index is None) != (self.shard_count is None):
            raise ValueError("Set both `shard_index` and `shard_count` or neither, got "
                             f"shard_index={self.shard_index!r}, shard_count={self.shard_count!r}")
        if self.shard_index is not None and not 0 <= self.shard_index < self.shard_count:
            raise ValueError(f"`shard_index` {self.shard_index} must be in [0, {self.shard_count})")


def _weights(weights: Any, k: int) -> tuple[float, ...]:
    try:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"`weights` must be a sequence of numbers, got {weights!r:.100}") from None
    if len(w) != k:
        raise ValueError(f"`weights` has {len(w)} entries for {k} sources")
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError(f"`weights` must be positive and finite, got {w.tolist()}")
    return tuple((w / w.sum()).tolist())


_FIELDS = tuple(f.name for f in dataclasses.fields(MixtureConfig))


def _config_and_sources(config: Any, sources: Any, args: tuple, fields: dict) -> tuple[MixtureConfig, Any]:
    """(config, sources) from `Mixture`'s arguments: ``(config, sources)``, or the earlier
    ``(sources, weights, seed, *, exhaustion=..., ...)``."""
    if isinstance(config, MixtureConfig):
        if args or fields:
            extra = [*(repr(a) for a in args), *fields]
            raise TypeError(f"Mixture(config, sources) takes its settings from the MixtureConfig; got also "
                            f"{', '.join(extra)}")
        return config, sources
    if config is not None:  # the earlier form: Mixture(sources, weights, seed, ...)
        if sources is not None:
            args = (sources, *args)
        sources = config
    if len(args) > 2:
        raise TypeError(f"Mixture(sources, weights, seed) takes at most 3 positional arguments, got {len(args) + 1}")
    for key, value in zip(("weights", "seed"), args, strict=False):
        if key in fields:
            raise TypeError(f"Mixture got `{key}` twice")
        fields[key] = value
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise TypeError(f"Mixture got unexpected argument(s) {unknown}; a MixtureConfig has {list(_FIELDS)}")
    if "weights" not in fields:
        raise TypeError("Mixture needs `weights` (one per source): Mixture(MixtureConfig(weights=...), sources)")
    return MixtureConfig(**fields), sources


def quotas(weights: Sequence[float], total: int) -> np.ndarray:
    """Records per source in an epoch of ``total``: proportional, by largest remainder."""
    exact = np.asarray(weights) * total
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    if short:
        counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts


class _Parts:
    """The component sources, outside NNX state (the mixture's cursor is the checkpoint)."""

    def __init__(self, sources: list[RandomAccessSource], threads: int, depth: int):
        self.sources = sources
        self.lengths = np.array([len(s) for s in sources], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.prefetcher = Prefetcher(threads, depth)
        self.order: tuple[int, np.ndarray] | None = None
        self.counts = np.zeros(len(sources), np.int64)  # records per source per epoch
        self.raw = _raw_schema(sources)

    def __getstate__(self):
        return {"sources": self.sources, "prefetcher": self.prefetcher, "counts": self.counts}

    def __setstate__(self, state):
        self.__init__(state["sources"], state["prefetcher"].threads, state["prefetcher"].depth)
        self.counts = state["counts"]


def _raw_schema(sources: Sequence[Any]):
    """The shared schema when every source is an ArrayRecord reader decoding the same schema:
    records of all of them are then decoded together, in one pass."""
    if not all(isinstance(s, ArrayRecordSourceModule) for s in sources):
        return None
    schemas = [s._schema for s in sources]
    if schemas[0] is None or any(sc is None or sc.to_json() != schemas[0].to_json() for sc in schemas):
        return None
    return schemas[0]


class Mixture(RandomAccessSource):
    """Interleaves random-access sources (shard sets, memory, ...) by weight, as one source.

    Args:
      config: a `MixtureConfig`: ``weights`` (one positive number per source, normalized to sum
        to 1); ``seed`` (where each source's records fall in an epoch; ``None`` spreads them
        evenly); ``exhaustion`` (``"first"`` or ``"repeat"``, module docstring) and
        ``num_records`` (the epoch length with ``"repeat"``); ``num_epochs``, ``shard_index``,
        ``shard_count``, ``drop_remainder``, ``read_threads``, ``prefetch_batches`` as for
        `ArrayRecordSourceConfig`.
      sources: the random-access sources (e.g. `ArrayRecordSourceModule`s); they must yield
        the same features. Their own cursor, host shard and ``num_epochs`` are not used: the
        mixture reads their epoch orders (with their shuffle settings) by index.

    Like every source, the config comes first: ``Mixture(MixtureConfig(weights=...), sources)``.
    The earlier form ``Mixture(sources, weights, seed=0, exhaustion=..., ...)`` (the config's
    fields as arguments) works too.

    Example:
      >>> import numpy as np
      >>> from datarax_beam.sources import MemorySource
      >>> a = MemorySource(data={"x": np.zeros(6, np.int32)})
      >>> b = MemorySource(data={"x": np.ones(3, np.int32)})
      >>> m = Mixture(MixtureConfig(weights=(2, 1), seed=None), [a, b])
      >>> len(m.epoch_order(0)), m.get_batch(m.epoch_order(0))["x"].tolist()
      (9, [0, 1, 0, 0, 1, 0, 0, 1, 0])
    """

    stable_batches = True  # (never writes to an array it returned)

    def __init__(self, config: MixtureConfig | Sequence[Any] | None = None, sources: Sequence[Any] | None = None,
                 *args: Any, name: str = "mixture", rngs: nnx.Rngs | None = None, **fields: Any):
        config, sources = _config_and_sources(config, sources, args, fields)
        sources = list(sources) if isinstance(sources, (list, tuple)) else sources
        if not isinstance(sources, list) or not sources:
            raise TypeError(f"`sources` must be a non-empty list of sources, got {sources!r:.100}")
        for j, s in enumerate(sources):
            if not getattr(s, "is_random_access", False):
                raise TypeError(
                    f"Mixture `sources[{j}]` must be a random-access source (with __len__ and "
                    f"get_batch, e.g. ArrayRecordSourceModule), got {type(s).__name__}"
                )
            if len(s) == 0:
                raise ValueError(f"Mixture `sources[{j}]` ({s.name!r}) is empty")
        config = dataclasses.replace(config, weights=_weights(config.weights, len(sources)))
        super().__init__(config, name=name, rngs=rngs)
        shard_index, shard_count = config.shard_index, config.shard_count
        if shard_count is None:
            shard_index, shard_count = jax.process_index(), jax.process_count()
        self._host = HostShard(shard_index, shard_count, config.drop_remainder)
        self._parts = _Parts(sources, config.read_threads, config.prefetch_batches)
        self._parts.counts = self._epoch_counts()
        self._fingerprint = self._make_fingerprint()
        self.data_fingerprint = SourceCursor(self._fingerprint)

    # -- the epoch ---------------------------------------------------------------------------
    def _epoch_counts(self) -> np.ndarray:
        w, n = np.asarray(self.config.weights), self._parts.lengths
        if self.config.exhaustion == "repeat":
            total = self.config.num_records
            if total is None:  # the smallest epoch in which every source is read whole
                total = int(np.ceil(np.max(n / w)))
                while np.any(quotas(w, total) < n):
                    total += 1
            return quotas(w, total)
        total = int(np.floor(np.min(n / w)))
        while total > 0 and np.any(quotas(w, total) > n):
            total -= 1
        if total == 0:
            raise ValueError(f"Mixture of sources of lengths {n.tolist()} with weights "
                             f"{list(self.config.weights)} has empty epochs")
        return quotas(w, total)

    @property
    def counts(self) -> tuple[int, ...]:
        """Records each source supplies per epoch."""
        return tuple(self._parts.counts.tolist())

    def epoch_size(self, epoch: int) -> int:
        return int(self._parts.counts.sum())

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Global indices (source ``j``'s local index + its offset) of ``epoch``, in order."""
        epoch = int(epoch)
        cached = self._parts.order
        if cached is not None and cached[0] == epoch:
            return cached[1]
        counts, parts = self._parts.counts, self._parts
        which = np.repeat(np.arange(len(counts)), counts)
        if self.config.seed is None:
            keys = np.concatenate([(np.arange(c) + 0.5) / c for c in counts])
            which = which[np.argsort(keys, kind="stable")]
        else:
            np.random.default_rng([int(self.config.seed), epoch, 0x6D1C]).shuffle(which)
        order = np.empty(len(which), dtype=np.int64)
        for j, (source, c) in enumerate(zip(parts.sources, counts.tolist(), strict=True)):
            order[which == j] = parts.offsets[j] + self._stream(source, epoch * c, c)
        order.setflags(write=False)
        self._parts.order = (epoch, order)
        return order

    @staticmethod
    def _stream(source: RandomAccessSource, start: int, count: int) -> np.ndarray:
        """Positions ``[start, start + count)`` of ``source``'s epoch orders, one after another."""
        n = len(source)
        out, pos = [], start
        while pos < start + count:
            q, offset = divmod(pos, n)
            take = min(n - offset, start + count - pos)
            out.append(np.asarray(source.epoch_order(q), dtype=np.int64)[offset : offset + take])
            pos += take
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        """The index space: all records of all sources, source after source."""
        return int(self._parts.offsets[-1])

    def host_shard(self) -> HostShard:
        return self._host

    def _read(self, indices: np.ndarray) -> dict[str, Any]:
        parts = self._parts
        which = np.searchsorted(parts.offsets, indices, side="right") - 1
        local = indices - parts.offsets[which]
        groups = [(j, np.flatnonzero(which == j)) for j in np.unique(which).tolist()]
        if parts.raw is not None:  # one decode over the records of all sources
            records: list[Any] = [None] * len(indices)
            for j, slots in groups:
                parts.sources[j]._shards.read(local[slots], records, slots)
            return decode_batch(parts.raw, records)
        batches = [(slots, parts.sources[j].get_batch(local[slots]), j) for j, slots in groups]
        return _merge(batches, len(indices), [s.name for s in parts.sources])

    def read_batches(self, chunks: Iterable[np.ndarray]) -> Iterator[dict[str, Any]]:
        return self._parts.prefetcher.map(self.get_batch, chunks)

    # -- description and state ---------------------------------------------------------------
    def _make_fingerprint(self) -> int:
        h = hashlib.sha256()
        for s in self._parts.sources:
            h.update(f"{s.fingerprint()}|{len(s)}|{getattr(s.config, 'shuffle', False)}|"
                     f"{getattr(s.config, 'seed', 0)};".encode())
        c = self.config
        h.update(f"{c.weights}|{c.seed}|{c.exhaustion}|{self.counts}".encode())
        return int(h.hexdigest()[:7], 16)

    def fingerprint(self) -> str:
        return f"mixture:{self._fingerprint:07x}"

    def source_info(self) -> dict[str, Any]:
        return {"source": "Mixture", "name": self.name,
                "sources": [s.source_info() for s in self._parts.sources], "counts": list(self.counts)}

    @property
    def sources(self) -> list[RandomAccessSource]:
        return list(self._parts.sources)

    def close(self) -> None:
        """Stops the read threads and closes the sources that can be (reading reopens them)."""
        self._parts.prefetcher.close()
        for source in self._parts.sources:
            if hasattr(source, "close"):
                source.close()

    def get_state(self) -> dict[str, int]:
        return {"epoch": get_cursor(self.epoch), "position": get_cursor(self.position),
                "fingerprint": get_cursor(self.data_fingerprint)}

    def set_state(self, state: Mapping[str, int]) -> None:
        epoch, position, fp = _require_ints(state, ("epoch", "position", "fingerprint"), "Mixture")
        if fp != self._fingerprint:
            raise ValueError(
                f"Mixture state has fingerprint {fp}, but this mixture has {self._fingerprint}: "
                f"it was saved from other sources, weights, seed or exhaustion"
            )
        if position > self.epoch_size(epoch):
            raise ValueError(f"Mixture state `position` {position} is out of range for an epoch "
                             f"of {self.epoch_size(epoch)} records")
        set_cursor(self.epoch, epoch)
        set_cursor(self.position, position)
        set_cursor(self.data_fingerprint, fp)


def _merge(batches: list[tuple[np.ndarray, Mapping[str, Any], int]], n: int, names: list[str]) -> dict[str, Any]:
    """Scatters per-source columnar batches back into one batch in index order."""
    first_slots, first, j0 = batches[0]
    out: dict[str, Any] = {}
    for _, batch, j in batches[1:]:
        if sorted(batch) != sorted(first):
            raise ValueError(f"Mixture sources {names[j0]!r} and {names[j]!r} have different features: "
                             f"{sorted(first)} vs {sorted(batch)}")
    for key, column in first.items():
        column = np.asarray(column) if not isinstance(column, np.ndarray) else column
        merged = np.empty((n,) + column.shape[1:], dtype=column.dtype)
        for slots, batch, j in batches:
            value = np.asarray(batch[key])
            if value.dtype != column.dtype or value.shape[1:] != column.shape[1:]:
                raise ValueError(
                    f"Mixture feature {key!r} is {column.dtype}{list(column.shape[1:])} in source "
                    f"{names[j0]!r} but {value.dtype}{list(value.shape[1:])} in {names[j]!r}"
                )
            merged[slots] = value
        out[key] = merged
    return out


__all__ = ["EXHAUSTION", "Mixture", "MixtureConfig", "quotas"]
