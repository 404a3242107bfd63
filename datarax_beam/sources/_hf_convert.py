"""Hugging Face values -> datarax_beam columns (internal).

Batches are read with HF's ``numpy`` format. Numeric columns stay numpy arrays; text (numpy
``<U``/``S`` arrays or python str) becomes a 1-D object column of ``str``/``bytes``; ragged
values become object columns of arrays. ``Image`` features are read undecoded
(``Image(decode=False)``: ``{"bytes", "path"}``) and become the encoded file's bytes, for
`datarax_beam.operators.image.DecodeImage`; nothing is decoded eagerly. (A PIL image that still
arrives, e.g. inside another feature type, becomes a uint8 array.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from datarax_beam.core import columns as cols


def to_value(value: Any) -> Any:
    """One HF value as a datarax_beam feature value."""
    if isinstance(value, np.str_):
        return str(value)
    if isinstance(value, np.bytes_):
        return bytes(value)
    if isinstance(value, (str, bytes)):
        return value
    if hasattr(value, "mode") and hasattr(value, "getdata"):  # a PIL image
        return np.asarray(value)
    if isinstance(value, np.ndarray) and value.dtype == object:
        return cols.stack_values([to_value(v) for v in value]) if value.ndim == 1 else value
    if isinstance(value, (list, tuple)):
        return cols.stack_values([to_value(v) for v in value])
    return value


def to_column(values: Any) -> np.ndarray:
    """One HF column (numpy-formatted) as a datarax_beam column."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind in cols.NUMERIC_KINDS:
            return values
        if values.dtype.kind == "U":
            return cols.object_column([str(v) for v in values])
        if values.dtype.kind == "S":
            return cols.object_column([bytes(v) for v in values])
    return cols.stack_values([to_value(v) for v in values])


def image_bytes(value: Any, feature: str) -> bytes:
    """One undecoded HF image (``{"bytes": b or None, "path": p}``) as the encoded file's bytes."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, Mapping):
        data = value.get("bytes")
        if data is not None:
            return bytes(data)
        path = value.get("path")
        if path:
            try:
                with open(path, "rb") as f:
                    return f.read()
            except OSError as err:
                raise OSError(f"Image feature {feature!r}: cannot read the image file {path!r}: {err}") from None
    raise TypeError(f"Image feature {feature!r}: expected encoded bytes or a path, got {value!r:.80}")


def to_columns(batch: Mapping[str, Any], keep: list[str], images: frozenset[str] = frozenset()) -> dict[str, np.ndarray]:
    """A numpy-formatted HF batch as datarax_beam columns (only the ``keep`` features).

    ``images`` names the (undecoded) ``Image`` features: they become object columns of bytes.
    """
    return {k: cols.object_column([image_bytes(v, k) for v in batch[k]]) if k in images else to_column(batch[k])
            for k in keep}


def image_features(features: Any) -> frozenset[str]:
    """Names of the top-level ``datasets.Image`` features (``features`` may be None: unknown)."""
    if not features:
        return frozenset()
    import datasets

    return frozenset(k for k, f in features.items() if isinstance(f, datasets.Image))


def undecoded_images(ds: Any) -> tuple[Any, frozenset[str]]:
    """``ds`` with its ``Image`` features cast to ``decode=False`` (no PIL decode), and their names."""
    import datasets

    names = image_features(getattr(ds, "features", None))
    for name in sorted(names):
        if ds.features[name].decode:
            ds = ds.cast_column(name, datasets.Image(decode=False))
    return ds, names


def rows(columns: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Splits columns into per-record dicts."""
    n = cols.num_rows(columns)
    return [{k: v[i] for k, v in columns.items()} for i in range(n)]


def is_saved_to_disk(path: str) -> bool:
    """True for a directory written by ``Dataset.save_to_disk``/``DatasetDict.save_to_disk``."""
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, f)) for f in ("state.json", "dataset_dict.json")
    )


def is_local_files(files: Any) -> bool:
    """True when ``data_files`` (a path, a glob, a list or a dict of them) all name local files."""
    import glob

    if files is None:
        return False
    if isinstance(files, Mapping):
        return bool(files) and all(is_local_files(v) for v in files.values())
    if isinstance(files, (str, os.PathLike)):
        path = os.fspath(files)
        return os.path.exists(path) or (any(c in path for c in "*?[") and bool(glob.glob(path)))
    files = list(files)
    return bool(files) and all(is_local_files(f) for f in files)
