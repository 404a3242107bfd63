"""Test helpers for sources and pipelines (usable by users testing their own sources).

`assert_restores_at_every_step` is the one check every stateful iterable in this library passes:
checkpoint before step k, restore into a fresh object, and the rest of the output is identical.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.core.data_source import DataSourceModule
from datarax_beam.core.element import Element


def to_comparable(value: Any) -> Any:
    """Turns batches/elements into nested dicts of numpy arrays and lists for comparison."""
    if isinstance(value, Element):
        return to_comparable(value.data)
    if isinstance(value, Mapping):
        return {k: to_comparable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_comparable(v) for v in value]
    arr = np.asarray(value)
    if arr.dtype == object:
        return [to_comparable(v) for v in arr.tolist()] if arr.ndim else value
    return arr


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Asserts two batches (or elements) are exactly equal, feature by feature."""
    a, b = to_comparable(a), to_comparable(b)
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), f"{where}: keys {sorted(a)} != {b!r:.200}"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), f"{where}: array vs {type(b).__name__}"
        assert a.shape == b.shape and a.dtype == b.dtype, f"{where}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: {a!r:.200} != {b!r:.200}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _run(obj: Any, epochs: int) -> list[Any]:
    out = []
    for _ in range(epochs):
        out.extend(iter(obj))
    return out


def assert_restores_at_every_step(
    make: Callable[[], Any], *, epochs: int = 2, max_steps: int | None = None
) -> int:
    """Checks that restoring a checkpoint taken before any step continues identically.

    Args:
      make: builds a fresh, identically configured object with ``get_state``/``set_state`` whose
        ``iter()`` yields one epoch (a source, a pipeline, a reader).
      epochs: how many epochs the reference run covers.
      max_steps: check only the first ``max_steps`` steps (for long sources).

    Returns:
      the number of steps checked.
    """
    ref = make()
    states, outputs = [], []
    for _ in range(epochs):
        it = iter(ref)
        while True:
            state = ref.get_state()
            try:
                item = next(it)
            except StopIteration:
                break
            states.append(state)
            outputs.append(to_comparable(item))
    assert outputs, "the reference run produced nothing"
    steps = len(states) if max_steps is None else min(max_steps, len(states))
    first_epoch = states[0].get("epoch", 0) if isinstance(states[0], Mapping) else 0
    for k in range(steps):
        fresh = make()
        fresh.set_state(states[k])
        state_epoch = states[k].get("epoch", first_epoch) if isinstance(states[k], Mapping) else first_epoch
        remaining_epochs = epochs - (state_epoch - first_epoch)
        rest = _run(fresh, remaining_epochs)
        assert len(rest) == len(outputs) - k, (
            f"restored at step {k} (state {states[k]}): got {len(rest)} items, expected {len(outputs) - k}"
        )
        for j, (x, y) in enumerate(zip(rest, outputs[k:], strict=True)):
            assert_same(x, y, f"restored at step {k}, item {k + j}")
    return steps


def collect(iterable: Iterable[Any]) -> list[Any]:
    """Materializes an iterable into comparable values."""
    return [to_comparable(x) for x in iterable]


class IteratorSource(DataSourceModule):
    """An iterator-only source over in-memory columns, for tests and examples.

    It is read sequentially (never by index), like a custom or streaming source.

    Args:
      columns: a dict of equal-length arrays or lists; record ``i`` is ``{k: v[i]}``.
      name: the source name (error messages name it).
      fail_at: raise ``error`` when the iteration reaches this position.
      error: the exception raised at ``fail_at``.
      n_shards: also expose the streaming-shard contract (``n_shards``, ``iter_shard(i)``) with
        this many contiguous shards, so Beam reads the shards in parallel.

    Example:
      >>> [r["x"] for r in IteratorSource({"x": [1, 2, 3]})]
      [1, 2, 3]
    """

    def __init__(self, columns: Mapping[str, Any], *, name: str = "records", fail_at: int | None = None,
                 error: Exception | None = None, n_shards: int | None = None):
        super().__init__(name=name)
        self.columns = dict(columns)
        self.length = cols.num_rows(self.columns)
        self.fail_at = fail_at
        self.error = error if error is not None else ConnectionError("stream reset by peer")
        if n_shards is not None:
            self.n_shards = int(n_shards)

    def _rows(self, lo: int, hi: int):
        for i in range(lo, hi):
            if i == self.fail_at:
                raise self.error
            yield {k: v[i] for k, v in self.columns.items()}

    def __iter__(self):
        return self._rows(0, self.length)

    def iter_shard(self, shard: int):
        bounds = np.linspace(0, self.length, self.n_shards + 1).astype(int)
        return self._rows(int(bounds[shard]), int(bounds[shard + 1]))
