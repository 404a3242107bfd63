"""Record order within an epoch: the source's order, then an optional buffered shuffle.

The shuffle is a function of (seed, epoch) only, so a restored pipeline replays it exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import numpy as np

from datarax_beam.core.element import Element, as_element

T = TypeVar("T")


def shuffle_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), 0x5EED])


def buffer_shuffle(items: Iterable[T], buffer_size: int, rng: np.random.Generator) -> Iterator[T]:
    """Streams ``items`` through a shuffle buffer; yields each item exactly once.

    With ``buffer_size`` >= the number of items this is a uniform permutation.
    """
    buffer: list[T] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        j = int(rng.integers(buffer_size))
        yield buffer[j]
        buffer[j] = item
    for j in rng.permutation(len(buffer)):
        yield buffer[j]


def shuffle_indices(order: np.ndarray, buffer_size: int, rng: np.random.Generator) -> np.ndarray:
    """`buffer_shuffle` over an index array (a full permutation when the buffer covers it)."""
    if buffer_size >= len(order):
        return order[rng.permutation(len(order))]
    return np.fromiter(buffer_shuffle(order, buffer_size, rng), dtype=np.int64, count=len(order))


def epoch_records(source: Any, epoch: int, shuffle: Any = None) -> Iterator[tuple[int, Element]]:
    """(global index, element) pairs of an iterator source's epoch, as every reader sees them.

    Records are numbered 0, 1, 2, ... unless the source's elements carry an index; a source
    that shuffles per epoch (``set_epoch``) replays ``epoch``; a pipeline ``shuffle`` node is
    applied with its (seed, epoch) buffer shuffle. The online pipeline, its analysis pass and the
    Beam readers all call this, so they agree record for record.
    """
    if hasattr(source, "set_epoch"):
        source.set_epoch(epoch)

    def numbered():
        for i, value in enumerate(guarded(iter(source), source, "")):
            element = as_element(value)
            index = element.metadata.index if element.metadata is not None else i
            yield int(index), element

    stream = numbered()
    if shuffle is not None:
        stream = buffer_shuffle(stream, shuffle.buffer_size, shuffle_rng(shuffle.seed, epoch))
    return iter(stream)


def guarded(iterator, source: Any, where: str):
    """Iterates ``iterator``; an exception names the source and the position of the record.

    An iterator that raised cannot be resumed, so records after it cannot be read: the job fails
    (with ``on_error`` either way) rather than silently writing a truncated shard set.
    """
    position = 0
    while True:
        try:
            value = next(iterator)
        except StopIteration:
            return
        except Exception as e:
            name = getattr(source, "name", type(source).__name__)
            raise RuntimeError(
                f"Source {name!r} raised while reading the record at position {position}{where} "
                f"(after {position} records): {type(e).__name__}: {e}"
            ) from e
        yield value
        position += 1
