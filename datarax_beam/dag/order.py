"""Record order within an epoch: the source's order, then an optional buffered shuffle.

The shuffle is a function of (seed, epoch) only, so a restored pipeline replays it exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np

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
