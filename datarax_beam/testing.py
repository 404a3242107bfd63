"""Test helpers for sources and pipelines (usable by users testing their own sources).

* `assert_restores_at_every_step`: the one check every stateful iterable in this library passes:
  checkpoint before step k, restore into a fresh object, and the rest of the output (and of the
  states) is identical.
* `run_hosts` / `assert_resumes_on_other_host_counts`: simulate hosts in one process (one object
  per ``shard_index``) and check that a checkpoint taken on N hosts resumes on M hosts with no
  record skipped or repeated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
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


def _run(obj: Any, epochs: int) -> tuple[list[Any], list[Any]]:
    """``epochs`` passes of ``iter(obj)``: the items, and the state before each of them."""
    items, states = [], []
    for _ in range(epochs):
        it = iter(obj)
        while True:
            state = obj.get_state()
            try:
                item = next(it)
            except StopIteration:
                break
            states.append(state)
            items.append(to_comparable(item))
    return items, states


def assert_restores_at_every_step(
    make: Callable[[], Any], *, epochs: int = 2, max_steps: int | None = None
) -> int:
    """Checks that restoring a checkpoint taken before any step continues identically.

    The reference run records the state before every step. For each step ``k``, a fresh object
    restored from state ``k`` must yield exactly the reference's items from ``k`` on, pass
    through the same states, and end in the same final state.

    Args:
      make: builds a fresh, identically configured object with ``get_state``/``set_state`` whose
        ``iter()`` yields the rest of one epoch (a source, a pipeline, a reader).
      epochs: how many epochs the reference run covers.
      max_steps: check only the first ``max_steps`` steps (for long sources).

    Returns:
      the number of steps checked.
    """
    ref = make()
    outputs, states = _run(ref, epochs)
    final = ref.get_state()
    assert outputs, "the reference run produced nothing"
    steps = len(states) if max_steps is None else min(max_steps, len(states))
    first_epoch = states[0].get("epoch", 0) if isinstance(states[0], Mapping) else 0
    for k in range(steps):
        fresh = make()
        fresh.set_state(states[k])
        state_epoch = states[k].get("epoch", first_epoch) if isinstance(states[k], Mapping) else first_epoch
        rest, rest_states = _run(fresh, epochs - (state_epoch - first_epoch))
        assert len(rest) == len(outputs) - k, (
            f"restored at step {k} (state {states[k]}): got {len(rest)} items, expected {len(outputs) - k}"
        )
        for j, (x, y) in enumerate(zip(rest, outputs[k:], strict=True)):
            assert_same(x, y, f"restored at step {k}, item {k + j}")
        assert rest_states == states[k:], f"restored at step {k}: the states differ from the reference's"
        assert fresh.get_state() == final, f"restored at step {k}: final state {fresh.get_state()} != {final}"
    return steps


def run_hosts(hosts: Sequence[Any], steps: int | None = None) -> list[list[Any]]:
    """Steps simulated hosts in lockstep: ``out[s][i]`` is host ``i``'s item of global step ``s``.

    Each host is an iterable with one cursor (a pipeline or a source, e.g. built with
    ``shard_index=i, shard_count=len(hosts)``); ``steps=None`` runs to the end of the epoch. A
    host whose part of the epoch ended has ``None`` in the remaining steps.
    """
    iterators = [iter(h) for h in hosts]
    done = [False] * len(hosts)
    out: list[list[Any]] = []
    while steps is None or len(out) < steps:
        row = []
        for i, it in enumerate(iterators):
            item = None if done[i] else next(it, None)
            done[i] = item is None
            row.append(item)
        if all(done):
            break
        out.append(row)
    if steps is not None and len(out) < steps:
        raise AssertionError(f"the hosts ran out after {len(out)} of {steps} steps")
    return out


def assert_resumes_on_other_host_counts(
    make: Callable[[int, int], Any],
    ids: Callable[[Any], Sequence[int]],
    *,
    before: int,
    after: int,
    steps: int | None,
    epochs: int = 1,
) -> list[int]:
    """Checks an elastic restore: a checkpoint taken on ``before`` hosts resumes on ``after``.

    ``before`` simulated hosts (``make(i, before)``) take ``steps`` global steps of the current
    epoch (``None``: all of it); every host's state must then be the same. ``after`` fresh hosts
    restore it and read ``epochs`` epochs (the first from the restored position). Concatenated
    step by step in host order, everything read must be exactly what one host (``make(0, 1)``)
    reads from the same start: no record skipped or repeated, in the same global order.

    Args:
      make: ``make(index, count)`` builds host ``index`` of ``count`` (same data and seed).
      ids: the record ids of one item (e.g. ``lambda b: b["id"].tolist()``).

    Returns:
      the ids read, in global order.
    """
    first = [make(i, before) for i in range(before)]
    start = first[0].get_state()
    taken = run_hosts(first, steps)
    states = [h.get_state() for h in first]
    assert all(st == states[0] for st in states), f"hosts disagree on the state: {states}"
    second = [make(i, after) for i in range(after)]
    for h in second:
        h.set_state(states[0])
    resumed = [row for _ in range(epochs) for row in run_hosts(second)]

    def flat(rows):
        return [int(x) for row in rows for item in row if item is not None for x in ids(item)]

    got = flat(taken) + flat(resumed)
    one = make(0, 1)
    one.set_state(start)
    reference = flat([row for _ in range(epochs + (steps is None)) for row in run_hosts([one])])
    first_diff = next((j for j, (a, b) in enumerate(zip(got, reference, strict=False)) if a != b), None)
    assert got == reference, (
        f"{before} -> {after} hosts after {steps} steps: read {len(got)} records, expected "
        f"{len(reference)}; first difference at {first_diff}"
    )
    return got


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
