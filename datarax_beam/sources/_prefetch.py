"""Ordered, bounded read-ahead on a small thread pool (threads only: nothing forks after JAX)."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from typing import Any


class Prefetcher:
    """Maps a function over a stream of work items ahead of the consumer, in order.

    At most ``depth`` items are in flight (submitted but not yet consumed) and at most ``threads``
    run at once. The pool is created on first use and shared by all streams of one reader.
    Closing a stream early cancels what it had queued.
    """

    def __init__(self, threads: int, depth: int):
        self.threads = threads
        self.depth = depth
        self._pool: futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> futures.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = futures.ThreadPoolExecutor(
                    max_workers=self.threads, thread_name_prefix="datarax_beam-reader"
                )
            return self._pool

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """Yields ``fn(item)`` for every item, in order, computing up to ``depth`` ahead."""
        if self.depth < 1 or self.threads < 1:
            for item in items:
                yield fn(item)
            return
        pool = self._executor()
        pending: collections.deque[futures.Future] = collections.deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) > self.depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None

    def __getstate__(self):
        return {"threads": self.threads, "depth": self.depth}

    def __setstate__(self, state):
        self.__init__(state["threads"], state["depth"])
