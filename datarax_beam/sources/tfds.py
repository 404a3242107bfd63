"""TensorFlow Datasets sources, read without TensorFlow.

`TFDSEagerSource` reads a split by index through TFDS's random-access data source
(``builder.as_data_source``, ArrayRecord files), so it shuffles globally and splits into index
ranges across Beam workers. `TFDSStreamingSource` reads the same files sequentially, one TFDS
file shard after another (``n_shards`` / ``iter_shard(i)``). Records are dicts of numpy arrays
(mnist: ``image`` ``(28, 28, 1)`` uint8, ``label`` int64); TFDS ``Text`` features are bytes.

TensorFlow is not needed. A dataset prepared only as TFRecord files cannot be read by index;
the eager source then raises an error saying so, and the streaming source reads it through
``tf.data`` when TensorFlow is installed (``pip install 'datarax_beam[tensorflow]'``).
``tensorflow_datasets`` is imported only when a source opens its dataset.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import flax.nnx as nnx
import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.core.data_source import RandomAccessSource
from datarax_beam.sources._common import (
    TENSORFLOW_EXTRA,
    DatasetUnavailableError,
    Handle,
    ShardedStreamingSource,
    check_common,
    select_keys,
)

#: `from_tfds` picks the eager (random-access) source for splits up to this many bytes.
EAGER_MAX_BYTES = 1 << 30


@dataclasses.dataclass(frozen=True)
class TFDSEagerConfig:
    """Config of `TFDSEagerSource`.

    Attributes:
      name: the TFDS name, e.g. ``"mnist"`` or ``"imagenet2012/subset:5.0.0"``.
      split: a TFDS split, slices included (``"train[:10%]"``).
      data_dir: where the prepared dataset lives (TFDS's default when None).
      shuffle: visit records in a new seeded permutation each epoch.
      seed: the shuffle seed.
      include_keys / exclude_keys: features to keep / drop.
      download: prepare the dataset (as ArrayRecord) when it is not in ``data_dir`` yet.
      try_gcs: look for a prepared copy on TFDS's public GCS bucket.
      builder_kwargs: extra arguments of ``tfds.builder`` (e.g. ``config``).
    """

    name: str
    split: str = "train"
    data_dir: str | None = None
    shuffle: bool = False
    seed: int = 0
    include_keys: Sequence[str] | None = None
    exclude_keys: Sequence[str] | None = None
    download: bool = True
    try_gcs: bool = False
    builder_kwargs: Mapping[str, Any] | None = None

    def __post_init__(self):
        check_common(self)


@dataclasses.dataclass(frozen=True)
class TFDSStreamingConfig(TFDSEagerConfig):
    """Config of `TFDSStreamingSource`: `TFDSEagerConfig` plus reading options.

    Attributes:
      shuffle_buffer_size: with ``shuffle``, shards are read in a seeded order per epoch and
        records are shuffled through a buffer of this many records.
      read_batch_size: records fetched per read inside a shard.
    """

    shuffle_buffer_size: int = 1000
    read_batch_size: int = 256

    def __post_init__(self):
        super().__post_init__()
        for field in ("shuffle_buffer_size", "read_batch_size"):
            value = getattr(self, field)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{field}` must be a positive int, got {value!r}")


def _import_tfds():
    import tensorflow_datasets as tfds  # lazy: heavy, optional at import time

    return tfds


class _Opened:
    """An open split: its builder, and its data source (None when only TFRecord exists)."""

    def __init__(self, builder: Any, data_source: Any, keep: list[str]):
        self.builder = builder
        self.data_source = data_source
        self.keep = keep


def _tfrecord_error(config: TFDSEagerConfig, source: str, detail: str) -> Exception:
    return NotImplementedError(
        f"TFDS dataset {config.name!r} (split {config.split!r}) is only available in TFRecord "
        f"format, which cannot be read without TensorFlow. {source} "
        f"[TFDS: {detail.splitlines()[0] if detail else 'no random-access format'}]"
    )


def _open(config: TFDSEagerConfig, *, allow_tfrecord: bool = False) -> _Opened:
    """Builds (and if needed prepares) the dataset and opens its random-access data source."""
    tfds = _import_tfds()
    kwargs = dict(config.builder_kwargs or {})
    where = config.data_dir or "TFDS's default data_dir"
    try:
        builder = tfds.builder(config.name, data_dir=config.data_dir, try_gcs=config.try_gcs, **kwargs)
    except tfds.core.registered.DatasetNotFoundError as err:
        raise DatasetUnavailableError(
            f"TFDS dataset {config.name!r} could not be found: it is not in TFDS's catalog nor "
            f"prepared in {where}. ({str(err).splitlines()[0]})"
        ) from None
    if not builder.is_prepared():
        if not config.download:
            raise DatasetUnavailableError(
                f"TFDS dataset {config.name!r} is not prepared in {where} and could not be "
                f"downloaded because download=False."
            )
        try:  # generate ArrayRecord files, the random-access format
            builder = tfds.builder(
                config.name, data_dir=config.data_dir, try_gcs=config.try_gcs,
                file_format="array_record", **kwargs,
            )
            builder.download_and_prepare()
        except (OSError, tfds.download.DownloadError) as err:
            raise DatasetUnavailableError(
                f"TFDS dataset {config.name!r} is not prepared in {where} and could not be "
                f"downloaded: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            ) from None
    keep = select_keys(list(builder.info.features.keys()), config, f"TFDS dataset {config.name!r}")
    try:
        data_source = builder.as_data_source(split=config.split)
    except NotImplementedError as err:
        if allow_tfrecord and importlib.util.find_spec("tensorflow") is not None:
            return _Opened(builder, None, keep)
        hint = (
            f"Install the optional extra ({TENSORFLOW_EXTRA}) and read it with "
            f"TFDSStreamingSource / from_tfds(..., eager=False), or prepare it again with "
            f"file_format='array_record'."
        )
        raise _tfrecord_error(config, hint, str(err)) from None
    return _Opened(builder, data_source, keep)


def _read_records(data_source: Any, keys: list[int]) -> list[Any]:
    try:
        return list(data_source.__getitems__(keys))
    except TypeError:
        # tfds.testing.mock_data attaches an unbound ``__getitems__`` to its fake ArrayRecord
        # reader; reading one by one gives the same records (a real error re-raises here).
        return [data_source[k] for k in keys]


class TFDSEagerSource(RandomAccessSource):
    """A TFDS split read by index (``__len__``, ``__getitem__``, ``get_batch(indices)``).

    Pickles as its config only; the data source reopens lazily after unpickling, so a Beam DoFn
    can carry it to workers and read index ranges with ``get_batch``.

    Example:
      >>> src = TFDSEagerSource(TFDSEagerConfig(name="mnist", split="train"))  # doctest: +SKIP
      >>> src.get_batch([0, 1])["image"].shape  # doctest: +SKIP
      (2, 28, 28, 1)
    """

    stable_batches = True  # (never writes to an array it returned)

    def __init__(self, config: TFDSEagerConfig, *, name: str | None = None, rngs: nnx.Rngs | None = None):
        if not isinstance(config, TFDSEagerConfig):
            raise TypeError(f"`config` must be a TFDSEagerConfig, got {type(config).__name__}")
        super().__init__(config, name=name or f"tfds:{config.name}:{config.split}", rngs=rngs)
        self._handle = Handle(_open(config))
        self._length = len(self._handle.value.data_source)

    @property
    def _opened(self) -> _Opened:
        if self._handle.value is None:
            self._handle.value = _open(self.config)
        return self._handle.value

    @property
    def info(self) -> Any:
        """The dataset's ``tfds.core.DatasetInfo``."""
        return self._opened.builder.info

    def __len__(self) -> int:
        return self._length

    def _read(self, indices: np.ndarray) -> dict[str, Any]:
        opened = self._opened
        records = _read_records(opened.data_source, [int(i) for i in indices])
        return {k: cols.stack_values([r[k] for r in records]) for k in opened.keep}

    def source_info(self) -> dict[str, Any]:
        return {"source": "tfds", "name": self.config.name, "split": self.config.split}

    def fingerprint(self) -> str:
        info = self.info
        return f"tfds:{info.full_name}:{self.config.split}:{self._length}:{','.join(self._opened.keep)}"


class TFDSStreamingSource(ShardedStreamingSource):
    """A TFDS split read sequentially, one file shard after another.

    ``n_shards`` is the number of TFDS files the split spans (one when only TFRecord files and
    TensorFlow are available); ``iter_shard(i)`` yields shard ``i``'s records in stored order,
    and iterating the source visits shard 0, 1, ... (a seeded shard order plus a buffer shuffle
    with ``shuffle=True``). Record indices are global positions in the split.

    Example:
      >>> src = TFDSStreamingSource(TFDSStreamingConfig(name="mnist", split="train"))  # doctest: +SKIP
      >>> src.n_shards, next(src.iter_shard(0))["label"]  # doctest: +SKIP
      (1, 4)
    """

    def __init__(self, config: TFDSStreamingConfig, *, name: str | None = None, rngs: nnx.Rngs | None = None):
        if not isinstance(config, TFDSStreamingConfig):
            raise TypeError(f"`config` must be a TFDSStreamingConfig, got {type(config).__name__}")
        super().__init__(config, name=name or f"tfds:{config.name}:{config.split}", rngs=rngs)
        self._handle = Handle(_open(config, allow_tfrecord=True))
        self._lengths = self._compute_lengths(self._handle.value)

    @property
    def _opened(self) -> _Opened:
        if self._handle.value is None:
            self._handle.value = _open(self.config, allow_tfrecord=True)
        return self._handle.value

    def _compute_lengths(self, opened: _Opened) -> list[int] | None:
        if opened.data_source is None:
            return None  # TFRecord via tf.data: one shard of unknown length
        total = len(opened.data_source)
        try:
            lengths = [int(fi.take) for fi in opened.builder.info.splits[self.config.split].file_instructions]
        except Exception:  # split metadata unavailable (e.g. mocked): one shard
            lengths = []
        return lengths if lengths and sum(lengths) == total and min(lengths) >= 0 else [total]

    @property
    def n_shards(self) -> int:
        return 1 if self._lengths is None else len(self._lengths)

    def shard_lengths(self) -> list[int] | None:
        return None if self._lengths is None else list(self._lengths)

    def __len__(self) -> int:
        if self._lengths is None:
            raise TypeError("The length of a TFRecord split read through tf.data is unknown")
        return int(sum(self._lengths))

    def _shard_records(self, shard: int) -> Iterator[dict[str, Any]]:
        opened = self._opened
        if opened.data_source is None:  # the TensorFlow path
            tfds = _import_tfds()
            ds = opened.builder.as_dataset(split=self.config.split, shuffle_files=False)
            for rec in tfds.as_numpy(ds):
                yield {k: rec[k] for k in opened.keep}
            return
        start = int(sum(self._lengths[:shard]))
        stop = start + int(self._lengths[shard])
        step = int(self.config.read_batch_size)
        for lo in range(start, stop, step):
            for rec in _read_records(opened.data_source, list(range(lo, min(lo + step, stop)))):
                yield {k: cols.stack_values([rec[k]])[0] for k in opened.keep}

    def source_info(self) -> dict[str, Any]:
        return {"source": "tfds", "name": self.config.name, "split": self.config.split}

    def fingerprint(self) -> str:
        info = self._opened.builder.info
        return f"tfds:{info.full_name}:{self.config.split}:{self._lengths}:{','.join(self._opened.keep)}"


def from_tfds(
    name: str,
    split: str = "train",
    *,
    eager: bool | None = None,
    data_dir: str | None = None,
    eager_max_bytes: int = EAGER_MAX_BYTES,
    **config_kwargs: Any,
) -> TFDSEagerSource | TFDSStreamingSource:
    """Opens a TFDS split, picking the eager or the streaming source.

    The rule when ``eager`` is None: the split is read eagerly — a `TFDSEagerSource`: random
    access, ``len()``, a global shuffle without a buffer, index ranges across Beam workers —
    when it is stored in a random-access format (ArrayRecord) and its size recorded in the
    dataset's metadata (``info.splits[split].num_bytes``) is at most ``eager_max_bytes`` (1 GiB
    by default). Otherwise it is a `TFDSStreamingSource`, read in order shard by shard: larger
    splits, splits whose size is unknown, and TFRecord-only datasets (which cannot be read by
    index at all).

    TFDS decodes features itself: images arrive as ``uint8`` arrays (no `DecodeImage` needed),
    ``Text`` as bytes.

    Args:
      name: the TFDS name.
      split: the split (slices allowed).
      eager: force the eager (True) or the streaming (False) source.
      data_dir: where the prepared dataset lives.
      eager_max_bytes: the size threshold of the rule above.
      **config_kwargs: other fields of `TFDSEagerConfig` / `TFDSStreamingConfig`.

    Returns:
      a `TFDSEagerSource` or a `TFDSStreamingSource`.

    Example:
      >>> src = from_tfds("mnist", "test", data_dir="/data/tfds")  # doctest: +SKIP
    """
    if eager is None:
        probe = TFDSStreamingSource(TFDSStreamingConfig(name=name, split=split, data_dir=data_dir))
        opened = probe._opened
        try:
            num_bytes = int(opened.builder.info.splits[split].num_bytes)
        except Exception:
            num_bytes = 0
        eager = opened.data_source is not None and 0 < num_bytes <= eager_max_bytes
    if eager:
        extra = {k: v for k, v in config_kwargs.items() if k not in ("shuffle_buffer_size", "read_batch_size")}
        return TFDSEagerSource(TFDSEagerConfig(name=name, split=split, data_dir=data_dir, **extra))
    return TFDSStreamingSource(TFDSStreamingConfig(name=name, split=split, data_dir=data_dir, **config_kwargs))


__all__ = [
    "EAGER_MAX_BYTES",
    "TFDSEagerConfig",
    "TFDSEagerSource",
    "TFDSStreamingConfig",
    "TFDSStreamingSource",
    "from_tfds",
]
