"""Hugging Face values -> datarax_beam columns (internal).

Batches are read with HF's ``numpy`` format. Numeric columns stay numpy arrays; text (numpy
``<U``/``S`` arrays or python str) becomes a 1-D object column of ``str``/``bytes``; PIL images
(which the numpy format already decodes) become uint8 arrays; ragged values become object
columns of arrays.
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


def to_columns(batch: Mapping[str, Any], keep: list[str]) -> dict[str, np.ndarray]:
    """A numpy-formatted HF batch as datarax_beam columns (only the ``keep`` features)."""
    return {k: to_column(batch[k]) for k in keep}


def rows(columns: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Splits columns into per-record dicts."""
    n = cols.num_rows(columns)
    return [{k: v[i] for k, v in columns.items()} for i in range(n)]


def is_saved_to_disk(path: str) -> bool:
    """True for a directory written by ``Dataset.save_to_disk``/``DatasetDict.save_to_disk``."""
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, f)) for f in ("state.json", "dataset_dict.json")
    )


def local_size(path: str) -> int | None:
    """Total bytes of the files under a local path, or None when it is not local."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    if not os.path.isdir(path):
        return None
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total
