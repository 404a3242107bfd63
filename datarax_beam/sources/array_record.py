"""`ArrayRecordSourceModule`: the train-time reader of materialized shards (no Beam imports).

The reader is a random-access source over all records of a shard set (global indices
``0..len-1`` across the shards, in shard order). Epoch ``e`` visits a *global order* (a
permutation derived from (seed, e), or index order) that every host computes alike; hosts take
their slices of it step by step (`datarax_beam.core.hosts`), so the state — records of the
global order consumed — is the same on every host and resumes on any host count. Batches are
read grouped by shard, decoded with the shard set's schema in one ``np.frombuffer``, and read
ahead on a bounded thread pool.

Epochs: like every source and pipeline, ``iter(reader)`` (and ``iter(from_source(reader, b))``)
yields the rest of the current epoch and continues from the saved position; ``num_epochs``
(default: unbounded) limits how many epochs are served, and asking for one more raises
`EpochLimitError` rather than yielding an empty epoch.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import flax.nnx as nnx
import jax
import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.core.data_source import (
    EpochLimitError,
    RandomAccessSource,
    SourceCursor,
    _require_ints,
    get_cursor,
    set_cursor,
)
from datarax_beam.core.hosts import HostShard, records_per_epoch
from datarax_beam.shards.codec import SchemaError, decode_batch
from datarax_beam.sources import _paths
from datarax_beam.sources._shards import ShardIntegrityError, Shards

#: Feature holding each record's undecoded bytes (files without ``shardset.json``, or
#: ``decode=False``).
RAW_KEY = "record"
_STATE_KEYS = ("epoch", "position", "fingerprint", "shuffle")


@dataclasses.dataclass(frozen=True)
class ArrayRecordSourceConfig:
    """Config of `ArrayRecordSourceModule`.

    Attributes:
      shuffle: visit each epoch in a permutation derived from (seed, epoch) (no shuffle buffer).
      seed: the shuffle seed.
      num_epochs: epochs the reader serves (``None``: unbounded); asking for more raises
        `EpochLimitError`.
      shard_index, shard_count: this host's part of every epoch; default
        ``jax.process_index()`` / ``jax.process_count()``. See `datarax_beam.core.hosts`.
      drop_remainder: give every host the same number of records per epoch (``len // count``).
      read_threads: background threads reading and decoding batches.
      prefetch_batches: batches read ahead of the consumer (0: read synchronously).
      decode: decode records with the shard set's schema; otherwise each record's codec bytes
        (decompressed) under `RAW_KEY`.
      verify: check each shard's SHA-256 against ``shardset.json`` when it is first opened.
      cache_dir: where shards of a non-local shard set (``gs://...`` or any Beam filesystem) are
        cached (default ``$XDG_CACHE_HOME/datarax_beam`` or ``~/.cache/...``).
      cache_bytes: ``None``: a remote shard is copied whole (and verified) on first use; an int:
        remote shards are read by byte ranges, keeping at most this many bytes of their records
        on disk per process (plus each open shard's index and the reads in flight).
    """

    shuffle: bool = False
    seed: int = 0
    num_epochs: int | None = None
    shard_index: int | None = None
    shard_count: int | None = None
    drop_remainder: bool = False
    read_threads: int = 2
    prefetch_batches: int = 4
    decode: bool = True
    verify: bool = True
    cache_dir: str | None = None
    cache_bytes: int | None = None

    def __post_init__(self):
        for name in ("shuffle", "drop_remainder", "decode", "verify"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` must be a bool, got {getattr(self, name)!r}")
        _check_int("seed", self.seed, 0, signed=True)
        _check_int("read_threads", self.read_threads, 0)
        _check_int("prefetch_batches", self.prefetch_batches, 0)
        for name, low in (("num_epochs", 1), ("shard_count", 1), ("cache_bytes", 1 << 20)):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), low)
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


def _config_and_path(args: tuple, config: Any, path: Any) -> tuple[Any, Any]:
    """(config, path) from ``ArrayRecordSourceModule``'s positional and keyword arguments: a
    positional `ArrayRecordSourceConfig` is the config, any other value the path; two positional
    values without a config are the earlier ``(path, config)``."""
    if len(args) > 2:
        raise TypeError(f"ArrayRecordSourceModule takes at most 2 positional arguments (config, path), "
                        f"got {len(args)}")
    if len(args) == 2:
        given = args if isinstance(args[0], ArrayRecordSourceConfig) else args[::-1]
    elif args:
        given = (args[0], None) if isinstance(args[0], ArrayRecordSourceConfig) else (None, args[0])
    else:
        given = (None, None)
    for name, value, keyword in (("config", given[0], config), ("path", given[1], path)):
        if value is not None and keyword is not None:
            raise TypeError(f"ArrayRecordSourceModule got `{name}` twice: {value!r:.100} and {keyword!r:.100}")
    return (config if given[0] is None else given[0]), (path if given[1] is None else given[1])


def shuffle_id(shuffle: bool, seed: int) -> int:
    """The state's ``shuffle`` entry: 0 for index order, else a small int of the seed."""
    if not shuffle:
        return 0
    return 1 + int(hashlib.sha256(f"seed:{int(seed)}".encode()).hexdigest()[:7], 16)


class ReaderCursor(SourceCursor):
    """The reader's checkpointed ints: ``nnx.state(reader, ReaderCursor)`` selects them."""


class ArrayRecordSourceModule(RandomAccessSource):
    """Reads ArrayRecord shards (a materialized shard set, or plain files) as a source.

    Args:
      config: an `ArrayRecordSourceConfig` (defaults: in order, unbounded epochs, this JAX
        process's host shard).
      path: a shard-set directory (with ``shardset.json``), one ``.array_record`` file, a glob,
        or a list of files.

    Like every source, the config comes first: ``ArrayRecordSourceModule(config, path)``. The
    path alone (``ArrayRecordSourceModule(path)``, as in the guide), the earlier order
    ``(path, config)`` and keywords work too: a positional `ArrayRecordSourceConfig` is the config
    and any other positional value the path.

    Records of a shard set decode to dicts of arrays using its schema; records of plain files
    come out as ``{RAW_KEY: bytes}``. State: ``get_state()`` is
    ``{"epoch", "position", "fingerprint", "shuffle"}`` — position counts records of the epoch's
    global order consumed by all hosts together; fingerprint identifies the data and shuffle the
    order, so a state of other data or another shuffle setting is refused.

    Example:
      >>> import tempfile, numpy as np
      >>> from datarax_beam import from_source
      >>> from datarax_beam.shards.writer import write_shardset
      >>> d = tempfile.mkdtemp()
      >>> _ = write_shardset(d, {"x": np.arange(5, dtype=np.int32)}, num_shards=2)
      >>> reader = ArrayRecordSourceModule(ArrayRecordSourceConfig(), d)
      >>> len(reader), [b["x"].tolist() for b in from_source(reader, batch_size=2)]
      (5, [[0, 1], [2, 3], [4]])
    """

    stable_batches = True  # (never writes to an array it returned)

    def __init__(
        self,
        *args: Any,
        config: ArrayRecordSourceConfig | None = None,
        path: Any = None,
        name: str = "array_record",
        rngs: nnx.Rngs | None = None,
    ):
        config, path = _config_and_path(args, config, path)
        if path is None:
            raise ValueError("ArrayRecordSourceModule needs `path` (a shard-set directory or files)")
        config = ArrayRecordSourceConfig() if config is None else config
        if not isinstance(config, ArrayRecordSourceConfig):
            raise TypeError(f"`config` must be an ArrayRecordSourceConfig, got {type(config).__name__}")
        super().__init__(config, name=name, rngs=rngs)
        if config.shard_count is None:
            index, count = jax.process_index(), jax.process_count()
        else:
            index, count = config.shard_index, config.shard_count
        self._host = HostShard(index, count, config.drop_remainder)
        files = _paths.resolve(path, cache_dir=config.cache_dir, cache_bytes=config.cache_bytes)
        self._shards = Shards(files, config.read_threads, config.prefetch_batches, config.verify)
        self._schema = files.shardset.schema if files.shardset is not None and config.decode else None
        self._fingerprint = files.fingerprint(self._shards.counts.tolist())
        self._shuffle = shuffle_id(config.shuffle, config.seed)
        self._info = {"source": type(self).__name__, "name": self.name, "files": len(files.paths)}
        self.epoch = ReaderCursor(0)
        self.position = ReaderCursor(0)
        self.data_fingerprint = ReaderCursor(self._fingerprint)
        self.shuffle_id = ReaderCursor(self._shuffle)

    # -- description -------------------------------------------------------------------------
    @property
    def shardset(self):
        """The `ShardSet` read (``None`` for plain files)."""
        return self._shards.files.shardset

    @property
    def paths(self) -> tuple[str, ...]:
        return self._shards.files.paths

    @property
    def shard_index(self) -> int:
        return self._host.index

    @property
    def shard_count(self) -> int:
        return self._host.count

    def host_shard(self) -> HostShard:
        return self._host

    def __len__(self) -> int:
        """All records of all files (the epoch's global order); see `epoch_length` for a host."""
        return int(self._shards.ends[-1]) if len(self._shards.ends) else 0

    def epoch_length(self, batch_size: int = 1) -> int:
        """Records this host visits per epoch when its steps take ``batch_size`` records."""
        return records_per_epoch(len(self), batch_size, self._host)

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
            involved = np.unique(self._shards.shard_of(indices))
            names = [self.paths[s] for s in involved[:3].tolist()]
            raise SchemaError(f"{e} (reading shard {', '.join(names)})") from None

    def read_batches(self, chunks: Iterable[np.ndarray]) -> Iterator[dict[str, Any]]:
        """Reads index chunks ahead of the consumer on the thread pool; yields them in order."""
        return self._shards.prefetcher.map(self.get_batch, chunks)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The global indices of ``epoch`` in visiting order (all hosts; each reads its slices)."""
        epoch = int(epoch)
        cached = self._shards.order
        if cached is not None and cached[0] == epoch:
            return cached[1]
        n = len(self)
        if self.config.shuffle:
            order = np.random.default_rng([int(self.config.seed), epoch]).permutation(n)
        else:
            order = np.arange(n, dtype=np.int64)
        order.setflags(write=False)
        self._shards.order = (epoch, order)
        return order

    # -- state -------------------------------------------------------------------------------
    def get_state(self) -> dict[str, int]:
        return {"epoch": get_cursor(self.epoch), "position": get_cursor(self.position),
                "fingerprint": get_cursor(self.data_fingerprint),
                "shuffle": get_cursor(self.shuffle_id)}

    def set_state(self, state: Mapping[str, int]) -> None:
        epoch, position, fp, shuffle = _require_ints(state, _STATE_KEYS, "Reader")
        if fp != self._fingerprint:
            raise ValueError(
                f"Reader state has data fingerprint {fp}, but {self._where()} has "
                f"{self._fingerprint}: the state was saved from a different shard set (or the set "
                f"was regenerated since)"
            )
        if shuffle != self._shuffle:
            saved = "shuffle off" if not shuffle else "shuffle on" if not self._shuffle else (
                "shuffle on and another seed")
            ours = f"shuffles with seed {self.config.seed}" if self._shuffle else "reads in index order"
            raise ValueError(
                f"Reader state was saved with {saved}, but this reader {ours}: the same position "
                f"in another order means other records"
            )
        if position > len(self):
            raise ValueError(
                f"Reader state `position` {position} is out of range for an epoch of "
                f"{len(self)} records"
            )
        set_cursor(self.epoch, epoch)
        set_cursor(self.position, position)
        set_cursor(self.data_fingerprint, fp)
        set_cursor(self.shuffle_id, shuffle)

    def _where(self) -> str:
        ss = self.shardset
        return f"shard set {ss.path!r}" if ss is not None else f"files {list(self.paths)[:3]!r}"

    def close(self) -> None:
        """Closes the files and stops the read threads (reading again reopens them)."""
        self._shards.close()

    def __enter__(self) -> ArrayRecordSourceModule:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = [
    "RAW_KEY",
    "ArrayRecordSourceConfig",
    "ArrayRecordSourceModule",
    "EpochLimitError",
    "ReaderCursor",
    "ShardIntegrityError",
]
