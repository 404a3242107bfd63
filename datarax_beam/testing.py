"""Test helpers for sources and pipelines (usable by users testing their own sources).

`assert_restores_at_every_step` is the one check every stateful iterable in this library passes:
checkpoint before step k, restore into a fresh object, and the rest of the output is identical.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

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
