"""Hugging Face ``datasets`` sources: map-style (random access) and iterable (streaming).

`HFEagerSource` reads a map-style ``datasets.Dataset`` by index, in batches, through HF's numpy
format, so it shuffles globally and splits into index ranges across Beam workers.
`HFStreamingSource` reads an ``IterableDataset`` sequentially, shard by shard (``n_shards`` /
``iter_shard(i)``). Numeric columns come out as numpy arrays, text stays ``str``, and ``Image``
features come out as the encoded file's bytes (PNG, JPEG, ...), never decoded eagerly: decode
them in the chain with `datarax_beam.operators.image.DecodeImage`, batched and threaded.

Where the data comes from (``config.name``):

* a Hub id (``"glue"`` with ``config_name="sst2"``) or a local directory laid out like a Hub
  repository (HF resolves a relative path such as ``"glue"`` to ``./glue`` when it exists, which
  is how an offline copy stands in for the Hub);
* a packaged builder with local files: ``name="parquet"`` / ``"json"`` / ``"csv"`` and
  ``data_files=...``;
* a directory written by ``save_to_disk`` (read with ``load_from_disk``);
* or a ``datasets.Dataset`` / ``IterableDataset`` handed in as ``dataset=``.

A dataset that is neither local nor downloadable raises `DatasetUnavailableError` naming it.
``datasets`` is imported only when a source opens its data.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import flax.nnx as nnx
import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.core.data_source import RandomAccessSource
from datarax_beam.sources import _hf_convert as conv
from datarax_beam.sources._common import (
    DatasetUnavailableError,
    Handle,
    ShardedStreamingSource,
    check_common,
    select_keys,
)

#: `from_hf` reads remote data of at most this many bytes map-style (local data always is).
EAGER_MAX_BYTES = 1 << 30


@dataclasses.dataclass(frozen=True)
class HFEagerConfig:
    """Config of `HFEagerSource`.

    Attributes:
      name: a Hub id, a local dataset directory, a packaged builder (``"parquet"``, ``"json"``,
        ``"csv"``, ...) used with ``data_files``, or a ``save_to_disk`` directory.
      split: the split (HF slices such as ``"train[:10%]"`` work for map-style data).
      config_name: the dataset's configuration (``load_dataset``'s second argument).
      data_dir / data_files: passed to ``load_dataset``.
      streaming: fetch the data with HF streaming (no full download or Arrow cache) and hold it
        in memory; for data larger than memory use `HFStreamingSource`.
      shuffle: visit records in a new seeded permutation each epoch.
      seed: the shuffle seed.
      include_keys / exclude_keys: features to keep / drop.
      cache_dir, revision: passed to ``load_dataset``.
      load_kwargs: any other ``load_dataset`` arguments.
    """

    name: str = "in_memory"
    split: str = "train"
    config_name: str | None = None
    data_dir: str | None = None
    data_files: Any = None
    streaming: bool = False
    shuffle: bool = False
    seed: int = 0
    include_keys: Sequence[str] | None = None
    exclude_keys: Sequence[str] | None = None
    cache_dir: str | None = None
    revision: str | None = None
    load_kwargs: Mapping[str, Any] | None = None

    def __post_init__(self):
        check_common(self)
        if not isinstance(self.streaming, bool):
            raise TypeError(f"`streaming` must be a bool, got {self.streaming!r}")


@dataclasses.dataclass(frozen=True)
class HFStreamingConfig(HFEagerConfig):
    """Config of `HFStreamingSource`: `HFEagerConfig` plus reading options.

    Attributes:
      shuffle_buffer_size: with ``shuffle``, shards are read in a seeded order per epoch and
        records are shuffled through a buffer of this many records.
      read_batch_size: records fetched per read inside a shard.
      num_shards: shards to cut a map-style dataset into when it is streamed (default: one per
        Arrow file).
    """

    streaming: bool = True
    shuffle_buffer_size: int = 1000
    read_batch_size: int = 256
    num_shards: int | None = None

    def __post_init__(self):
        super().__post_init__()
        for field in ("shuffle_buffer_size", "read_batch_size", "num_shards"):
            value = getattr(self, field)
            if field == "num_shards" and value is None:
                continue
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{field}` must be a positive int, got {value!r}")


def _import_datasets():
    import datasets  # lazy: heavy, optional at import time

    return datasets


def _describe(config: HFEagerConfig) -> str:
    what = f"Hugging Face dataset {config.name!r}"
    if config.config_name:
        what += f" (config {config.config_name!r})"
    return what + f", split {config.split!r}"


def load(config: HFEagerConfig, *, streaming: bool) -> Any:
    """Opens the split named by ``config``: a ``Dataset``, or an ``IterableDataset``."""
    datasets = _import_datasets()
    if conv.is_saved_to_disk(config.name):
        ds = datasets.load_from_disk(config.name)
        if isinstance(ds, datasets.DatasetDict):
            if config.split not in ds:
                raise ValueError(f"Unknown split {config.split!r} in {config.name!r}: it has {sorted(ds)}")
            ds = ds[config.split]
        return _to_iterable(ds, config) if streaming else ds
    kwargs = dict(config.load_kwargs or {})
    for field in ("data_dir", "data_files", "cache_dir", "revision"):
        if getattr(config, field) is not None:
            kwargs[field] = getattr(config, field)
    try:
        return datasets.load_dataset(
            config.name, config.config_name, split=config.split, streaming=streaming, **kwargs
        )
    except OSError as err:  # offline / not found / missing files: ConnectionError, FileNotFoundError
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DatasetUnavailableError(
            f"{_describe(config)} could not be downloaded and is not available locally "
            f"({type(err).__name__}: {reason}). Offline, point `name` at a local copy (a dataset "
            f"directory, a save_to_disk directory, or name='parquet'/'json'/'csv' with data_files=...)."
        ) from None


def _to_iterable(ds: Any, config: HFEagerConfig) -> Any:
    n = getattr(config, "num_shards", None) or max(1, len(ds.cache_files))
    return ds.to_iterable_dataset(num_shards=min(n, max(1, len(ds))))


class _Kept:
    """Holds a dataset handed in by the user (pickled with the source)."""

    def __init__(self, value: Any):
        self.value = value


class HFEagerSource(RandomAccessSource):
    """A map-style Hugging Face split read by index, in batches (``get_batch(indices)``).

    With ``config.streaming`` the split is streamed once and held in memory. Pickles as its
    config (and a dataset handed in, which HF pickles by file path when file-backed); the data
    reopens lazily after unpickling, so a Beam DoFn can read index ranges on workers.

    Example:
      >>> import datasets  # doctest: +SKIP
      >>> ds = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]})  # doctest: +SKIP
      >>> HFEagerSource(dataset=ds).get_batch([1])["label"]  # doctest: +SKIP
      array([1])
    """

    stable_batches = True  # (never writes to an array it returned)

    def __init__(
        self,
        config: HFEagerConfig | None = None,
        dataset: Any = None,
        *,
        name: str | None = None,
        rngs: nnx.Rngs | None = None,
    ):
        config = HFEagerConfig() if config is None else config
        if not isinstance(config, HFEagerConfig):
            raise TypeError(f"`config` must be an HFEagerConfig, got {type(config).__name__}")
        if dataset is not None and not _is_map_style(dataset):
            raise TypeError(
                f"`dataset` must be a datasets.Dataset, got {type(dataset).__name__}; "
                f"stream an IterableDataset with HFStreamingSource"
            )
        super().__init__(config, name=name or f"hf:{config.name}:{config.split}", rngs=rngs)
        self._given = _Kept(dataset)
        self._handle = Handle(self._open())
        self._length = self._handle.value[0]

    def _open(self) -> tuple[int, list[str], Any, frozenset[str]]:
        """(length, kept features, formatted Dataset or in-memory columns, image features)."""
        cfg, ds = self.config, self._given.value
        if ds is None and cfg.streaming:
            stream, images = conv.undecoded_images(load(cfg, streaming=True))
            parts, keep = [], None
            for batch in stream.with_format("numpy").iter(batch_size=1000):
                keep = keep or select_keys(list(batch), cfg, _describe(cfg))
                parts.append(conv.to_columns(batch, keep, images))
            if keep is None:
                raise ValueError(f"{_describe(cfg)} is empty")
            columns = cols.concat(parts)
            return cols.num_rows(columns), keep, columns, images
        if ds is None:
            ds = load(cfg, streaming=False)
        keep = select_keys(list(ds.column_names), cfg, _describe(cfg))
        ds, images = conv.undecoded_images(ds.select_columns(keep))
        return len(ds), keep, ds.with_format("numpy"), images

    @property
    def _opened(self) -> tuple[int, list[str], Any, frozenset[str]]:
        if self._handle.value is None:
            self._handle.value = self._open()
        return self._handle.value

    def __len__(self) -> int:
        return self._length

    def _read(self, indices: np.ndarray) -> dict[str, Any]:
        _, keep, data, images = self._opened
        if isinstance(data, dict):
            return cols.take(data, indices)
        return conv.to_columns(data[indices.tolist()], keep, images)

    def source_info(self) -> dict[str, Any]:
        return {"source": "hf", "name": self.config.name, "split": self.config.split}

    def fingerprint(self) -> str:
        cfg, ds = self.config, self._given.value
        ident = getattr(ds, "_fingerprint", None) if ds is not None else (
            f"{cfg.name}:{cfg.config_name}:{cfg.data_dir}:{cfg.data_files}:{cfg.revision}"
        )
        return f"hf:{ident}:{cfg.split}:{self._length}:{','.join(self._opened[1])}"


class HFStreamingSource(ShardedStreamingSource):
    """A Hugging Face split read sequentially, shard by shard (``load_dataset(streaming=True)``).

    ``n_shards`` is the ``IterableDataset``'s shard count (its data files); ``iter_shard(i)``
    yields shard ``i``'s records in stored order and iterating the source visits shard 0, 1, ...
    (a seeded shard order plus a buffer shuffle with ``shuffle=True``). Records are numbered by
    arrival within the epoch. Pickles without the open stream.

    Example:
      >>> cfg = HFStreamingConfig(name="json", data_files={"train": ["a.jsonl", "b.jsonl"]})  # doctest: +SKIP
      >>> HFStreamingSource(cfg).n_shards  # doctest: +SKIP
      2
    """

    def __init__(
        self,
        config: HFStreamingConfig | None = None,
        dataset: Any = None,
        *,
        name: str | None = None,
        rngs: nnx.Rngs | None = None,
    ):
        config = HFStreamingConfig() if config is None else config
        if not isinstance(config, HFStreamingConfig):
            raise TypeError(f"`config` must be an HFStreamingConfig, got {type(config).__name__}")
        super().__init__(config, name=name or f"hf:{config.name}:{config.split}", rngs=rngs)
        if dataset is not None and _is_map_style(dataset):
            dataset = _to_iterable(dataset, config)
        self._given = _Kept(dataset)
        self._handle = Handle(self._open())
        self._n_shards = int(self._handle.value.n_shards)

    def _open(self) -> Any:
        ds = self._given.value
        return conv.undecoded_images(load(self.config, streaming=True) if ds is None else ds)[0]

    @property
    def _iterable(self) -> Any:
        if self._handle.value is None:
            self._handle.value = self._open()
        return self._handle.value

    @property
    def n_shards(self) -> int:
        return self._n_shards

    def _shard_records(self, shard: int) -> Iterator[dict[str, Any]]:
        ds = self._iterable
        part = ds if self._n_shards == 1 else ds.shard(num_shards=self._n_shards, index=shard)
        keep, images = None, conv.image_features(getattr(part, "features", None))
        for batch in part.with_format("numpy").iter(batch_size=int(self.config.read_batch_size)):
            keep = keep or select_keys(list(batch), self.config, _describe(self.config))
            yield from conv.rows(conv.to_columns(batch, keep, images))

    def source_info(self) -> dict[str, Any]:
        return {"source": "hf", "name": self.config.name, "split": self.config.split}

    def fingerprint(self) -> str:
        cfg = self.config
        return (
            f"hf-stream:{cfg.name}:{cfg.config_name}:{cfg.data_dir}:{cfg.data_files}:"
            f"{cfg.revision}:{cfg.split}:{self._n_shards}"
        )


def _is_map_style(ds: Any) -> bool:
    datasets = _import_datasets()
    return isinstance(ds, datasets.Dataset)


def is_local(config: HFEagerConfig) -> bool:
    """True when the split is read from this machine's files, not downloaded.

    Local: a ``save_to_disk`` directory or a local directory laid out like a Hub repository
    (``name``), or a packaged builder (``"imagefolder"``, ``"parquet"``, ``"json"``, ``"csv"``, ...)
    whose ``data_dir`` is a local directory or whose ``data_files`` are all local files.
    """
    if os.path.isdir(config.name):
        return True
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    if config.name not in _PACKAGED_DATASETS_MODULES:
        return False
    if config.data_files is not None:
        return conv.is_local_files(config.data_files)
    return config.data_dir is not None and os.path.isdir(config.data_dir)


def _remote_size(config: HFEagerConfig) -> int | None:
    """Bytes of a remote split from the dataset's metadata (network or HF's cache), else None."""
    try:
        builder = _import_datasets().load_dataset_builder(config.name, config.config_name)
        return int(builder.info.splits[config.split].num_bytes) or None
    except Exception:  # noqa: BLE001 - any failure means "size unknown": stream
        return None


def from_hf(
    name: Any,
    split: str = "train",
    *,
    streaming: bool | None = None,
    eager_max_bytes: int = EAGER_MAX_BYTES,
    **config_kwargs: Any,
) -> HFEagerSource | HFStreamingSource:
    """Opens a Hugging Face split, picking the map-style (eager) or the streaming source.

    The rule when ``streaming`` is None:

    * a ``datasets.Dataset`` is read map-style and an ``IterableDataset`` streamed;
    * **local data is always map-style** (`HFEagerSource`: random access, ``len()``, a global
      shuffle, index ranges across Beam workers): a ``save_to_disk`` directory, a local dataset
      directory, or a packaged builder over local files — ``from_hf("imagefolder",
      data_dir="photos/")``, ``from_hf("parquet", data_files="train-*.parquet")``. HF converts it
      to Arrow once (in its cache) and memory-maps it, so its size does not matter;
    * **remote data** (a Hub id) is map-style when ``info.splits[split].num_bytes`` from its
      metadata is known and at most ``eager_max_bytes`` (1 GiB by default), and streamed
      (`HFStreamingSource`) when it is larger or its size is unknown, so nothing big is
      downloaded whole by surprise.

    ``streaming=True`` streams local data too (no Arrow conversion; read in order).
    ``Image`` features come out as the encoded bytes (decode them with
    `datarax_beam.operators.image.DecodeImage`).

    Args:
      name: anything `HFEagerConfig.name` accepts, or a ``Dataset``/``IterableDataset``/
        ``DatasetDict``.
      split: the split.
      streaming: force the streaming (True) or the map-style (False) source.
      eager_max_bytes: the size threshold for remote data.
      **config_kwargs: other fields of `HFEagerConfig` / `HFStreamingConfig`.

    Returns:
      an `HFEagerSource` or an `HFStreamingSource`.

    Example:
      >>> src = from_hf("imagefolder", data_dir="photos/")  # doctest: +SKIP
      >>> len(src)  # doctest: +SKIP
      1200
    """
    dataset = None
    if not isinstance(name, str):
        datasets = _import_datasets()
        dataset = name[split] if isinstance(name, (datasets.DatasetDict, datasets.IterableDatasetDict)) else name
        if streaming is None:
            streaming = not isinstance(dataset, datasets.Dataset)
        name = config_kwargs.pop("dataset_name", "in_memory")
    stream_only = ("shuffle_buffer_size", "read_batch_size", "num_shards")
    if streaming is None:
        probe = HFEagerConfig(name=name, split=split, **{k: v for k, v in config_kwargs.items() if k not in stream_only})
        if is_local(probe):
            streaming = False
        else:
            size = _remote_size(probe)
            streaming = size is None or size > eager_max_bytes
    if streaming:
        return HFStreamingSource(HFStreamingConfig(name=name, split=split, **config_kwargs), dataset)
    eager_kwargs = {k: v for k, v in config_kwargs.items() if k not in stream_only}
    return HFEagerSource(HFEagerConfig(name=name, split=split, **eager_kwargs), dataset)


__all__ = [
    "EAGER_MAX_BYTES",
    "HFEagerConfig",
    "HFEagerSource",
    "HFStreamingConfig",
    "HFStreamingSource",
    "from_hf",
]
