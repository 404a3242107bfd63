"""Host segments: one `HostOperator` run batched over columns, split over a thread pool.

A record-wise host operator's batch is cut into up to ``threads`` contiguous pieces that run at
once in the kernel's thread pool (worth it where the work releases the GIL: Pillow, tokenizers,
numpy); the pieces are concatenated in order, so results do not depend on the thread count.
Keys are the key data of exactly the key a JAX operator of the same stream gets for the record.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.core.operator import OperatorModule
from datarax_beam.kernels.device import host_column
from datarax_beam.kernels.keys import record_key_data


def default_threads() -> int:
    """The kernel's default thread count for host operators: the usable cores, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


class HostSegment:
    """Runs one host operator (an operator with ``on_host``, e.g. a `HostOperator`) over a batch."""

    def __init__(self, op: OperatorModule, pool: _Pool, key_batch: int | None):
        self.op, self.operators = op, (op,)
        self._pool, self._key_batch = pool, key_batch

    def run(self, batch: Mapping[str, Any], indices: np.ndarray, epoch: int, call=None) -> dict[str, Any]:
        batch = {k: host_column(v) for k, v in batch.items()}
        n = len(indices)
        keys = None
        if self.op.base_key_data is not None:
            keys = record_key_data(self.op.base_key_data, epoch, indices, self._key_batch)
        threads = self.op.threads if self.op.threads is not None else self._pool.threads
        pieces = min(threads, n) if self.op.record_wise else 1
        if pieces <= 1:
            return self.op.apply_batch(batch, keys)
        bounds = np.linspace(0, n, pieces + 1).astype(int)
        jobs = [({k: v[a:b] for k, v in batch.items()}, None if keys is None else keys[a:b])
                for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        results = list(self._pool.get().map(lambda job: self.op.apply_batch(*job), jobs))
        for r in results[1:]:
            if r.keys() != results[0].keys():
                raise ValueError(
                    f"Host operator {self.op.name!r} returned features {sorted(r)} for one piece of a "
                    f"batch and {sorted(results[0])} for another; a record-wise operator returns the "
                    f"same features for every record (or set record_wise=False)"
                )
        return cols.concat(results)


class _Pool:
    """A lazily started thread pool owned by one kernel (never pickled)."""

    def __init__(self, threads: int):
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None

    def get(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="datarax-host")
        return self._executor

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
