"""How hosts split an epoch: the global-step rule that makes iteration state host-count free.

An epoch of a random-access source is a *global order*: every record index once, in a
permutation derived from (seed, epoch) or in index order, the same on every host. Reading
proceeds in **global steps**. Step ``s`` takes the next ``G = count * b`` records of the order
(``b``: the per-host batch, 1 when a source is iterated record by record) and host ``index``
takes the ``index``-th slice of ``b`` records::

    order:   | h0 h0 h1 h1 h2 h2 | h0 h0 h1 h1 h2 h2 | ...     (3 hosts, b = 2, G = 6)
    cursor:  0                   6                   12       records of the order consumed

After each step every host's cursor is the same number: the records of the global order that
all hosts together have consumed. A checkpoint taken on N hosts therefore resumes on M hosts
with any per-host batch: they continue at that position, no record skipped or repeated.

The last step of an epoch may be partial (``r < G`` records left):

* ``"keep"`` (the default): the ``r`` records are split as evenly as possible, host ``i`` takes
  ``[i*r//count, (i+1)*r//count)`` of them (hosts may differ by one record; a host whose share
  is empty skips the step);
* ``"equal"`` (a source's ``drop_remainder``): ``r - r % count`` records, ``r // count`` per host,
  so every host visits exactly ``len // count`` records per epoch;
* ``"drop"`` (a pipeline's ``batch(b, drop_remainder=True)``): the partial step is skipped on
  every host, so every host yields the same number of full batches.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class HostShard:
    """Which part of every epoch this process reads.

    Attributes:
      index: this host, ``0 <= index < count`` (e.g. ``jax.process_index()``).
      count: the number of hosts reading the epoch together.
      equal: give every host the same number of records per epoch (``len // count``); the
        last ``len % count`` records of the order are not read.
    """

    index: int = 0
    count: int = 1
    equal: bool = False

    def __post_init__(self):
        for name in ("index", "count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"HostShard `{name}` must be an int, got {value!r}")
        if self.count < 1:
            raise ValueError(f"HostShard `count` must be >= 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"HostShard `index` {self.index} must be in [0, {self.count})")

    def __str__(self) -> str:
        return f"host {self.index} of {self.count}"


class Steps(NamedTuple):
    """This host's steps from a position: slice ``[lo, hi)`` of the order, cursor after it.

    ``final`` says whether this host's last step is the epoch's last global step. When it is
    not (a partial last step with no share for this host), the host's epoch ends after its last
    step, when the other hosts still have one to do.
    """

    lo: np.ndarray
    hi: np.ndarray
    end: np.ndarray
    final: bool = True

    def __len__(self) -> int:
        return len(self.lo)

    def is_last(self, j: int) -> bool:
        """Whether step ``j`` is the epoch's last global step (the cursor then moves on)."""
        return self.final and j == len(self.lo) - 1


def host_steps(n: int, position: int, batch: int, host: HostShard, drop: bool = False) -> Steps:
    """This host's global steps over an epoch of ``n`` records, starting at ``position``.

    Args:
      n: records in the epoch's global order.
      position: records of the order already consumed (by all hosts together).
      batch: records per host per full step.
      host: this host's part (`HostShard`).
      drop: skip a final partial step on every host (a pipeline's ``drop_remainder``).

    Returns:
      `Steps`: for each step this host takes part in, the slice of the order it reads and the
      cursor value once the step is done (the same on every host).

    Example:
      >>> s = host_steps(10, 0, 2, HostShard(1, 2))
      >>> s.lo.tolist(), s.hi.tolist(), s.end.tolist()
      ([2, 6, 9], [4, 8, 10], [4, 8, 10])
    """
    k, i = host.count, host.index
    g = k * batch
    full = max(n - position, 0) // g
    starts = position + np.arange(full, dtype=np.int64) * g
    lo, hi, end = starts + i * batch, starts + (i + 1) * batch, starts + g
    r = max(n - position, 0) - full * g
    partial = bool(r) and not drop and not (host.equal and r < k)
    if partial:
        start = position + full * g
        if host.equal:
            share = r // k
            a, b = start + i * share, start + (i + 1) * share
        else:
            a, b = start + i * r // k, start + (i + 1) * r // k
        if b > a:
            return Steps(np.append(lo, a), np.append(hi, b), np.append(end, n), True)
        return Steps(lo, hi, end, False)
    return Steps(lo, hi, end, True)


def records_per_epoch(n: int, batch: int, host: HostShard, drop: bool = False) -> int:
    """Records this host reads in a whole epoch of ``n`` records (without listing the steps)."""
    full = n // (host.count * batch)
    tail = host_steps(n, full * host.count * batch, batch, host, drop)
    return full * batch + int((tail.hi - tail.lo).sum())


__all__ = ["HostShard", "Steps", "host_steps", "records_per_epoch"]
