"""`MemorySource`: records already in memory, read by index."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import flax.nnx as nnx
import jax
import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.core.data_source import RandomAccessSource

#: Feature name given to records when the data is a plain sequence of arrays.
DEFAULT_FEATURE = "data"


@dataclasses.dataclass(frozen=True)
class MemorySourceConfig:
    """Config of `MemorySource`.

    Attributes:
      shuffle: visit records in a new seeded permutation each epoch.
      seed: the shuffle seed; the permutation of epoch ``e`` depends only on (seed, e).
    """

    shuffle: bool = False
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.shuffle, bool):
            raise TypeError(f"`shuffle` must be a bool, got {self.shuffle!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise TypeError(f"`seed` must be an int, got {self.seed!r}")


class _Columns:
    """Holds the data outside NNX's state so ``nnx.state(source)`` stays small."""

    def __init__(self, columns: dict[str, np.ndarray], length: int):
        self.columns = columns
        self.length = length


class MemorySource(RandomAccessSource):
    """A random-access source over in-memory data.

    ``data`` may be a list of dicts (``[{"image": ..., "label": 3}, ...]``), a dict of
    equal-length arrays (``{"image": images, "label": labels}``), or a sequence of arrays (each
    record becomes ``{"data": array}``). It is stored as columns, so batches are gathered with
    one fancy-index per feature.

    Example:
      >>> src = MemorySource(MemorySourceConfig(), [{"x": i} for i in range(4)])
      >>> len(src), int(src[2]["x"]), src.get_batch([3, 1])["x"].tolist()
      (4, 2, [3, 1])
    """

    stable_batches = True  # (never writes to an array it returned)

    def __init__(
        self,
        config: MemorySourceConfig | None = None,
        data: Any = None,
        *,
        name: str = "memory",
        rngs: nnx.Rngs | None = None,
    ):
        config = MemorySourceConfig() if config is None else config
        if not isinstance(config, MemorySourceConfig):
            raise TypeError(f"`config` must be a MemorySourceConfig, got {type(config).__name__}")
        if data is None:
            raise ValueError("MemorySource needs `data` (a list of dicts, a dict of arrays, or a list of arrays)")
        super().__init__(config, name=name, rngs=rngs)
        columns, length = _to_columns(data)
        self._store = _Columns(columns, length)

    @property
    def columns(self) -> dict[str, np.ndarray]:
        """The data as a dict of columns (read-only by convention)."""
        return self._store.columns

    def __len__(self) -> int:
        return self._store.length

    def _read(self, indices: np.ndarray) -> dict[str, Any]:
        return cols.take(self._store.columns, indices)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for k in sorted(self.columns):
            v = self.columns[k]
            h.update(k.encode())
            if v.dtype != object:
                h.update(str(v.dtype).encode() + str(v.shape).encode())
                h.update(np.ascontiguousarray(v).data)
            else:
                h.update(repr(list(v)).encode())
        return f"memory:{h.hexdigest()[:16]}"


def _to_columns(data: Any) -> tuple[dict[str, np.ndarray], int]:
    if isinstance(data, Mapping):
        lengths = {}
        columns = {}
        for k, v in data.items():
            if not isinstance(k, str):
                raise TypeError(f"MemorySource `data`: feature names must be str, got {k!r}")
            if isinstance(v, (np.ndarray, jax.Array)):
                arr = np.asarray(v)
                if arr.ndim == 0:
                    raise ValueError(
                        f"MemorySource `data`: feature {k!r} must have a leading record axis, "
                        f"got the scalar {arr!r:.80}"
                    )
                columns[k] = arr if arr.dtype.kind in cols.NUMERIC_KINDS else cols.object_column(list(arr))
            elif isinstance(v, Sequence) and not isinstance(v, (str, bytes)):
                columns[k] = cols.stack_values(list(v))
            else:
                raise TypeError(
                    f"MemorySource `data`: feature {k!r} must be an array or a list of per-record "
                    f"values, got {type(v).__name__}: {v!r:.80}"
                )
            lengths[k] = len(columns[k])
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"MemorySource `data`: all features of a dict must have the same length, got "
                f"lengths {lengths}"
            )
        return columns, next(iter(lengths.values()), 0)
    if isinstance(data, (np.ndarray, jax.Array)):
        arr = np.asarray(data)
        return {DEFAULT_FEATURE: arr}, len(arr)
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        records = list(data)
        if not records:
            return {}, 0
        if all(isinstance(r, Mapping) for r in records):
            return cols.columns_from_records(records), len(records)
        if all(not isinstance(r, Mapping) for r in records):
            return {DEFAULT_FEATURE: cols.stack_values(records)}, len(records)
        kinds = sorted({type(r).__name__ for r in records})
        raise TypeError(
            f"MemorySource `data` mixes dict records and non-dict records (got types {kinds})"
        )
    try:
        records = list(data)  # any other iterable of elements
    except TypeError:
        raise TypeError(
            f"MemorySource `data` must be a list of dicts, a dict of arrays or a list of arrays, "
            f"got {type(data).__name__}"
        ) from None
    return _to_columns(records)
