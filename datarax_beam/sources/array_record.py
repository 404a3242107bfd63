"""`ArrayRecordSourceModule`: the train-time reader of materialized shards (no Beam imports).

The reader is a random-access source over all records of a shard set (global indices
``0..len-1`` across the shards, in shard order). Each epoch visits this host's part of a
permutation derived from (seed, epoch); batches are read grouped by shard, decoded with the
shard set's schema in one ``np.frombuffer``, and read ahead on a bounded thread pool.

Epochs: like every source and pipeline, ``iter(reader)`` (and ``iter(from_source(reader, b))``)
yields **one epoch** and continues from the saved position. ``num_epochs`` bounds how many epochs
the reader serves whoever drives it: once epoch ``num_epochs`` is reached, ``epoch_order`` is
empty and further iterations yield nothing (``num_epochs=None``: never).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import flax.nnx as nnx
import jax
import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.core.data_source import RandomAccessSource, SourceCursor, _require_ints
from datarax_beam.core.element import Element, RecordMetadata
from datarax_beam.shards.codec import SchemaError, decode_batch
from datarax_beam.sources import _paths
from datarax_beam.sources._prefetch import Prefetcher

#: Feature holding each record's undecoded bytes (files without ``shardset.json``, or
#: ``decode=False``).
RAW_KEY = "record"
#: Records read per batch when the reader is iterated directly (record by record).
ITER_CHUNK = 256
_READER_OPTIONS = "readahead_buffer_size:0"


@dataclasses.dataclass(frozen=True)
class ArrayRecordSourceConfig:
    """Config of `ArrayRecordSourceModule`.

    Attributes:
      shuffle: visit each epoch in a permutation derived from (seed, epoch) (no shuffle buffer).
      seed: the shuffle seed.
      num_epochs: epochs the reader serves (``None``: unbounded); see the module docstring.
      shard_index, shard_count: this host's part of every epoch; default
        ``jax.process_index()`` / ``jax.process_count()``. Parts are disjoint and cover the epoch.
      drop_remainder: give every host the same number of records (``len // shard_count``).
      read_threads: background threads reading and decoding batches.
      prefetch_batches: batches read ahead of the consumer (0: read synchronously).
      decode: decode records with the shard set's schema; otherwise raw bytes under `RAW_KEY`.
      cache_dir: where shards of a non-local shard set (``gs://...`` or any Beam filesystem) are
        copied before reading (default ``$XDG_CACHE_HOME/datarax_beam`` or ``~/.cache/...``).
    """

    shuffle: bool = False
    seed: int = 0
    num_epochs: int | None = 1
    shard_index: int | None = None
    shard_count: int | None = None
    drop_remainder: bool = False
    read_threads: int = 2
    prefetch_batches: int = 4
    decode: bool = True
    cache_dir: str | None = None

    def __post_init__(self):
        for name in ("shuffle", "drop_remainder", "decode"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` must be a bool, got {getattr(self, name)!r}")
        _check_int("seed", self.seed, 0, signed=True)
        _check_int("read_threads", self.read_threads, 0)
        _check_int("prefetch_batches", self.prefetch_batches, 0)
        for name in ("num_epochs", "shard_count"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        if self.shard_index is not None:
            _check_int("shard_index", self.shard_index, 0)
        if (self.shard_index is None) != (self.shard_count is None):
            raise ValueError(
                f"Set both `shard_index` and `shard_count` or neither, got shard_index="
                f"{self.shard_index!r}, shard_count={self.shard_count!r}"
            )
        if self.shard_index is not None and self.shard_index >= self.shard_count:
            raise ValueError(
                f"`shard_index` {self.shard_index} must be smaller than `shard_count` "
                f"{self.shard_count}"
            )


def _check_int(name: str, value: Any, low: int, signed: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int, got {value!r}")
    if not signed and value < low:
        raise ValueError(f"`{name}` must be >= {low}, got {value}")


class ReaderCursor(SourceCursor):
    """The reader's checkpointed ints: ``nnx.state(reader, ReaderCursor)`` selects them."""


class _Shards:
    """Open files and the read machinery, kept outside NNX state (not checkpointed)."""

    def __init__(self, files: _paths.Files, threads: int, depth: int):
        self.files = files
        self.readers: list[Any] = [None] * len(files.paths)
        self.lock = threading.Lock()
        self.prefetcher = Prefetcher(threads, depth)
        self.order_cache: tuple[int, np.ndarray] | None = None  # (epoch, this host's order)
        self.live: tuple[int, int, Iterator] | None = None  # direct iteration: (epoch, pos, stream)
        counts = files.counts
        if counts is None:  # plain files: open them now to count their records
            counts = tuple(self.reader(i).num_records() for i in range(len(files.paths)))
        self.counts = np.asarray(counts, dtype=np.int64)
        self.ends = np.cumsum(self.counts)
        self.starts = self.ends - self.counts

    def reader(self, i: int):
        if self.readers[i] is None:
            with self.lock:
                if self.readers[i] is None:
                    self.readers[i] = self._open(i)
        return self.readers[i]

    def _open(self, i: int):
        from array_record.python.array_record_module import ArrayRecordReader

        path = self.files.paths[i]
        try:
            reader = ArrayRecordReader(path, _READER_OPTIONS, file_reader_buffer_size=32768)
        except Exception as e:
            raise OSError(f"Cannot open ArrayRecord shard {path!r} (truncated or corrupt?): {e}") from e
        expected = self.files.counts[i] if self.files.counts is not None else None
        if expected is not None and reader.num_records() != expected:
            n = reader.num_records()
            reader.close()
            raise OSError(
                f"Shard {path!r} holds {n} records but shardset.json says {expected}: the file "
                f"was truncated or replaced"
            )
        return reader

    def read(self, indices: np.ndarray) -> list[bytes]:
        """Record bytes at global ``indices``, read with one call per shard touched."""
        shard = np.searchsorted(self.ends, indices, side="right")
        local = indices - self.starts[shard]
        out: list[Any] = [None] * len(indices)
        if len(indices) and shard[0] == shard[-1] and (shard == shard[0]).all():
            groups = [(int(shard[0]), np.arange(len(indices)))]
        else:
            order = np.argsort(shard, kind="stable")
            cuts = np.flatnonzero(np.diff(shard[order])) + 1
            groups = [(int(shard[g[0]]), g) for g in np.split(order, cuts)]
        for s, slots in groups:
            pos = local[slots]
            path = self.files.paths[s]
            try:
                reader = self.reader(s)
                first = int(pos[0])
                if len(pos) > 1 and int(pos[-1]) - first == len(pos) - 1 and (np.diff(pos) == 1).all():
                    records = reader.read(first, first + len(pos))
                else:
                    records = reader.read(pos.tolist())
            except OSError:
                raise
            except Exception as e:
                raise OSError(
                    f"Cannot read records from ArrayRecord shard {path!r} (truncated or corrupt?): "
                    f"{e or type(e).__name__}"
                ) from e
            if len(groups) == 1:
                return list(records)
            for slot, rec in zip(slots.tolist(), records, strict=True):
                out[slot] = rec
        return out

    def close(self) -> None:
        self.prefetcher.close()
        with self.lock:
            for r in self.readers:
                if r is not None:
                    r.close()
            self.readers = [None] * len(self.readers)

    def __getstate__(self):  # picklable for Beam: reopen files lazily after unpickling
        return {"files": self.files, "counts": self.counts, "prefetcher": self.prefetcher}

    def __setstate__(self, state):
        self.files, self.prefetcher, self.counts = state["files"], state["prefetcher"], state["counts"]
        self.readers, self.lock = [None] * len(self.files.paths), threading.Lock()
        self.order_cache = self.live = None
        self.ends = np.cumsum(self.counts)
        self.starts = self.ends - self.counts


class ArrayRecordSourceModule(RandomAccessSource):
    """Reads ArrayRecord shards (a materialized shard set, or plain files) as a source.

    Args:
      path: a shard-set directory (with ``shardset.json``), one ``.array_record`` file, a glob,
        or a list of files. ``ArrayRecordSourceModule(config, path)`` works too.
      config: an `ArrayRecordSourceConfig` (defaults: in order, one epoch, this JAX process's
        host shard).

    Records of a shard set decode to dicts of arrays using its schema; records of plain files
    come out as ``{RAW_KEY: bytes}``. State: ``get_state()`` is
    ``{"epoch", "position", "fingerprint"}`` — position counts records of this host's epoch
    already yielded; fingerprint identifies the data, so a state of another shard set is refused.

    Example:
      >>> import tempfile, numpy as np
      >>> from datarax_beam import from_source
      >>> from datarax_beam.shards.writer import write_shardset
      >>> d = tempfile.mkdtemp()
      >>> _ = write_shardset(d, {"x": np.arange(5, dtype=np.int32)}, num_shards=2)
      >>> reader = ArrayRecordSourceModule(d)
      >>> len(reader), [b["x"].tolist() for b in from_source(reader, batch_size=2)]
      (5, [[0, 1], [2, 3], [4]])
    """

    def __init__(
        self,
        path: Any = None,
        config: ArrayRecordSourceConfig | None = None,
        *,
        name: str = "array_record",
        rngs: nnx.Rngs | None = None,
    ):
        if isinstance(path, ArrayRecordSourceConfig):  # upstream order: (config, paths)
            path, config = config, path
        if path is None:
            raise ValueError("ArrayRecordSourceModule needs `path` (a shard-set directory or files)")
        config = ArrayRecordSourceConfig() if config is None else config
        if not isinstance(config, ArrayRecordSourceConfig):
            raise TypeError(f"`config` must be an ArrayRecordSourceConfig, got {type(config).__name__}")
        super().__init__(config, name=name, rngs=rngs)
        if config.shard_count is None:
            self.shard_index, self.shard_count = jax.process_index(), jax.process_count()
        else:
            self.shard_index, self.shard_count = config.shard_index, config.shard_count
        files = _paths.resolve(path, cache_dir=config.cache_dir)
        self._shards = _Shards(files, config.read_threads, config.prefetch_batches)
        self._schema = files.shardset.schema if files.shardset is not None and config.decode else None
        self._fingerprint = files.fingerprint(self._shards.counts.tolist())
        self._info = {"source": type(self).__name__, "name": self.name, "files": len(files.paths)}
        self.epoch = ReaderCursor(0)
        self.position = ReaderCursor(0)
        self.data_fingerprint = ReaderCursor(self._fingerprint)

    # -- description -------------------------------------------------------------------------
    @property
    def shardset(self):
        """The `ShardSet` read (``None`` for plain files)."""
        return self._shards.files.shardset

    @property
    def paths(self) -> tuple[str, ...]:
        return self._shards.files.paths

    def __len__(self) -> int:
        """All records of all files (indices for `get_batch`); see `epoch_length` for a host."""
        return int(self._shards.ends[-1]) if len(self._shards.ends) else 0

    def epoch_length(self) -> int:
        """Records this host visits per epoch."""
        n, k, i = len(self), self.shard_count, self.shard_index
        if self.config.drop_remainder:
            return n // k
        return (i + 1) * n // k - i * n // k

    def source_info(self) -> dict[str, Any]:
        return dict(self._info)

    def fingerprint(self) -> str:
        return f"array_record:{self._fingerprint:07x}"

    # -- reading -----------------------------------------------------------------------------
    def _read(self, indices: np.ndarray) -> dict[str, Any]:
        records = self._shards.read(indices)
        if self._schema is None:
            return {RAW_KEY: cols.object_column(records)}
        try:
            return decode_batch(self._schema, records)
        except SchemaError as e:
            involved = np.unique(np.searchsorted(self._shards.ends, indices, side="right"))
            names = [self.paths[s] for s in involved[:3].tolist()]
            raise SchemaError(f"{e} (reading shard {', '.join(names)})") from None

    def read_batches(self, chunks: Iterable[np.ndarray]) -> Iterator[dict[str, Any]]:
        """Reads index chunks ahead of the consumer on the thread pool; yields them in order."""
        self._check_fingerprint()
        return self._shards.prefetcher.map(self.get_batch, chunks)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """This host's global indices for ``epoch``, in visiting order (empty past num_epochs)."""
        self._check_fingerprint()
        epoch = int(epoch)
        if self.config.num_epochs is not None and epoch >= self.config.num_epochs:
            return np.zeros(0, dtype=np.int64)
        cached = self._shards.order_cache
        if cached is not None and cached[0] == epoch:
            return cached[1]
        n, k, i = len(self), self.shard_count, self.shard_index
        if self.config.shuffle:
            order = np.random.default_rng([int(self.config.seed), epoch]).permutation(n)
        else:
            order = np.arange(n, dtype=np.int64)
        if self.config.drop_remainder:
            per = n // k
            order = order[i * per : (i + 1) * per]
        else:
            order = order[i * n // k : (i + 1) * n // k]
        order.setflags(write=False)
        self._shards.order_cache = (epoch, order)
        return order

    # -- direct iteration: one epoch of Elements, read in batches ------------------------------
    def __next__(self) -> Element:
        epoch, pos = int(self.epoch.value), int(self.position.value)
        live = self._shards.live
        if live is None or live[:2] != (epoch, pos):
            live = (epoch, pos, self._records(epoch, pos))
        item = next(live[2], None)
        if item is None:
            self._shards.live = None
            if self.config.num_epochs is None or epoch < self.config.num_epochs:
                self.epoch.value, self.position.value = epoch + 1, 0
            raise StopIteration
        self.position.value = pos + 1
        self._shards.live = (epoch, pos + 1, live[2])
        return item

    def _records(self, epoch: int, pos: int) -> Iterator[Element]:
        order = self.epoch_order(epoch)
        chunks = [order[s : s + ITER_CHUNK] for s in range(pos, len(order), ITER_CHUNK)]
        for idx, batch in zip(chunks, self.read_batches(iter(chunks)), strict=True):
            for j, index in enumerate(idx.tolist()):
                meta = RecordMetadata(index=index, epoch=epoch, source_info=self._info)
                yield Element(data={k: v[j] for k, v in batch.items()}, metadata=meta)

    # -- state -------------------------------------------------------------------------------
    def get_state(self) -> dict[str, int]:
        return {"epoch": int(self.epoch.value), "position": int(self.position.value),
                "fingerprint": self._fingerprint}

    def set_state(self, state: Mapping[str, int]) -> None:
        epoch, position, fp = _require_ints(state, ("epoch", "position", "fingerprint"), "Reader")
        self._check_fingerprint(fp)
        if position > self.epoch_length():
            raise ValueError(
                f"Reader state `position` {position} is out of range for an epoch of "
                f"{self.epoch_length()} records on host shard {self.shard_index}/{self.shard_count}"
            )
        self.epoch.value, self.position.value = epoch, position
        self.data_fingerprint.value = fp
        self._shards.live = None

    def _check_fingerprint(self, fp: int | None = None) -> None:
        fp = int(self.data_fingerprint.value) if fp is None else int(fp)
        if fp != self._fingerprint:
            raise ValueError(
                f"Reader state has data fingerprint {fp}, but {self._where()} has "
                f"{self._fingerprint}: the state was saved from a different shard set"
            )

    def _where(self) -> str:
        ss = self.shardset
        return f"shard set {ss.path!r}" if ss is not None else f"files {list(self.paths)[:3]!r}"

    def close(self) -> None:
        """Closes the files and stops the read threads (reading again reopens them)."""
        self._shards.live = None
        self._shards.close()

    def __enter__(self) -> ArrayRecordSourceModule:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["RAW_KEY", "ArrayRecordSourceConfig", "ArrayRecordSourceModule", "ReaderCursor"]
