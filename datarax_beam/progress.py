"""Progress of long work on stderr: records done / total, records/s, ETA and failed records.

Shown (with tqdm) for `materialize`, the online statistics pass and the reader's first copy of a
remote shard set. On by default when stderr is a terminal; off when it is not, with
``materialize(..., progress=False)``, ``datarax-beam materialize --no-progress``,
``set_enabled(False)`` or the environment variable ``DATARAX_BEAM_PROGRESS=0``. Reporting
progress never fails or slows the work it reports on: its own errors are logged at DEBUG and
dropped, and it does no I/O per record.

How a Beam job's counts reach the driver, on every runner and filesystem: each shard writer
DoFn instance counts the records it writes and fails in a `Reporter`, which at most every
``interval`` seconds (1 s on local disk, 10 s elsewhere) overwrites one tiny JSON file,
``<job temp dir>/progress/<random>.json``, through Beam's ``FileSystems``. The driver's
`JobProgress` polls and sums those files in a thread. This works where the driver cannot ask the
runner -- DirectRunner runs the whole job inside ``Pipeline.run()`` -- and wherever workers can
write the output directory, which a job needs anyway (local worker processes, Flink, Spark,
Dataflow). Where the runner also reports Beam metrics while the job runs (`JobProgress.attach`),
the display shows the larger of the two counts. When the job has committed, the display ends on
the shard set's exact counts. A retried bundle may be counted twice while the job runs.

Example:
  >>> from datarax_beam import progress
  >>> sum(len(b) for b in progress.track([[1, 2], [3]], total=3, desc="demo", enabled=False))
  3
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_LOG = logging.getLogger(__name__)

ENV_VAR = "DATARAX_BEAM_PROGRESS"
#: Sub-directory of a job's temp directory holding the writers' progress files.
PROGRESS_DIR = "progress"
UNIT = " records"
#: Longest wait (seconds) for the display's lock or poll thread; past it, progress is skipped.
LOCK_TIMEOUT = 2.0

_default: bool | None = None


def _format(total: int | None) -> str:
    """tqdm's layout, always as records/s (tqdm's own turns slow rates into "s/ records")."""
    if total is None:
        return "{desc}: {n_fmt}{unit} [{elapsed}, {rate_noinv_fmt}{postfix}]"
    return "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"


def set_enabled(value: bool | None) -> None:
    """Turns progress displays on or off everywhere (None: on when stderr is a terminal)."""
    global _default
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"`progress` must be True, False or None, got {value!r}")
    _default = value


def is_enabled(progress: bool | None = None, stream=None) -> bool:
    """Whether to show progress: ``progress`` if given, else `set_enabled`'s value, else
    ``DATARAX_BEAM_PROGRESS`` (0/1), else whether ``stream`` (stderr) is a terminal."""
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"`progress` must be True, False or None, got {progress!r}")
    for value in (progress, _default):
        if value is not None:
            return value
    env = os.environ.get(ENV_VAR, "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    try:
        return bool((stream or sys.stderr).isatty())
    except (AttributeError, ValueError, OSError):  # closed or replaced streams
        return False


_TQDM = None


def _tqdm_class():
    """tqdm with a lock of its own (a thread lock, not tqdm's default process-shared one) and no
    monitor thread: a display of ours shares no lock with other code or processes."""
    global _TQDM
    if _TQDM is None:
        from tqdm import tqdm

        class _Tqdm(tqdm):
            monitor_interval = 0

        _Tqdm.set_lock(threading.RLock())
        _TQDM = _Tqdm
    return _TQDM


class _SafeStream:
    """The display's stream, whose write errors are recorded instead of raised: tqdm holds its
    lock while it writes and does not release it when a write raises."""

    def __init__(self, stream):
        self.stream, self.broken = stream, False

    def write(self, text):
        if not self.broken:
            try:
                return self.stream.write(text)
            except Exception:  # noqa: BLE001 - a closed or failing terminal
                _LOG.debug("progress display cannot write; turning it off", exc_info=True)
                self.broken = True
        return 0

    def flush(self):
        if not self.broken:
            try:
                self.stream.flush()
            except Exception:  # noqa: BLE001
                self.broken = True

    def __getattr__(self, name):  # fileno, isatty, encoding, ...
        return getattr(self.stream, name)


class Bar:
    """A tqdm bar of records with a failed-records count; does nothing when disabled.

    Errors of the display are logged at DEBUG and dropped (the bar then turns itself off).
    """

    def __init__(self, total: int | None = None, desc: str = "", *, enabled: bool | None = None,
                 unit: str = UNIT, stream=None, failed: bool = True, mininterval: float = 0.2):
        self.n, self.failed, self._show_failed = 0, 0, failed
        self._tqdm = None
        self._lock = threading.Lock()
        if not is_enabled(enabled, stream):
            return
        self._stream = _SafeStream(stream or sys.stderr)
        try:
            self._tqdm = _tqdm_class()(total=total, desc=desc, unit=unit, file=self._stream,
                              dynamic_ncols=True, mininterval=mininterval, smoothing=0.1, leave=True,
                              bar_format=_format(total))
            if failed:
                self._tqdm.set_postfix_str("0 failed", refresh=False)
        except Exception:  # noqa: BLE001 - a display must never break the work
            _LOG.debug("progress display unavailable", exc_info=True)
            self._tqdm = None

    @property
    def active(self) -> bool:
        return self._tqdm is not None

    def _safe(self, fn: Callable[[Any], None]) -> None:
        if not self._lock.acquire(timeout=LOCK_TIMEOUT):  # a stuck display: skip, never wait
            _LOG.debug("progress display busy; update dropped")
            return
        try:
            if self._tqdm is not None:
                fn(self._tqdm)
                if self._stream.broken:
                    self._tqdm = None
        except Exception:  # noqa: BLE001
            _LOG.debug("progress display failed; turning it off", exc_info=True)
            self._tqdm = None
        finally:
            self._lock.release()

    def update(self, n: int, failed: int = 0) -> None:
        """Adds ``n`` records done (``failed`` of them failed)."""
        self.set(self.n + n, self.failed + failed)

    def set(self, n: int, failed: int | None = None, total: int | None = None) -> None:
        """Sets the counts (they never go down) and, optionally, the total."""
        def apply(bar):
            if total is not None:
                bar.total, bar.bar_format = total, _format(total)
            if failed is not None and failed > self.failed:
                self.failed = failed
                if self._show_failed:
                    bar.set_postfix_str(f"{failed:,} failed", refresh=False)
            if n > self.n:
                bar.update(n - self.n)
                self.n = n
            else:
                bar.refresh()

        if self._tqdm is None:
            self.n, self.failed = max(self.n, n), max(self.failed, failed or 0)
        else:
            self._safe(apply)

    def close(self) -> None:
        def close(bar):
            bar.close()

        self._safe(close)
        self._tqdm = None

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(iterable: Iterable, total: int | None = None, desc: str = "", *, enabled: bool | None = None,
          count: Callable[[Any], int] = len, stream=None) -> Iterator:
    """Yields ``iterable``'s items while a `Bar` counts ``count(item)`` records for each."""
    with Bar(total, desc, enabled=enabled, stream=stream, failed=False) as bar:
        for item in iterable:
            yield item
            if bar.active:
                try:
                    bar.update(int(count(item)))
                except Exception:  # noqa: BLE001 - e.g. an item without a length
                    _LOG.debug("progress count failed", exc_info=True)


# -- a Beam job ------------------------------------------------------------------------------
def progress_dir(tmp_dir: str) -> str:
    from datarax_beam.shards.shardset import join

    return join(tmp_dir, PROGRESS_DIR)


def _write(path: str, data: bytes) -> None:
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(path, "application/json", CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)


class Reporter:
    """Worker side: counts one writer's records and now and then writes the totals to a file.

    Picklable and cheap: it travels inside a DoFn, starts from zero wherever it is unpickled
    (each DoFn instance has its own file) and writes at most once per ``interval`` seconds.

    Args:
      tmp_dir: the job's temp directory (any Beam filesystem path); files go to its
        ``progress/`` sub-directory, which the commit removes with the rest.
      interval: least seconds between writes (default: 1 on local disk, 10 elsewhere).
    """

    def __init__(self, tmp_dir: str, interval: float | None = None):
        self.directory = progress_dir(tmp_dir)
        self.interval = (10.0 if "://" in tmp_dir else 1.0) if interval is None else float(interval)
        self._reset()

    def _reset(self) -> None:
        self.written = self.failed = 0
        self._path: str | None = None
        self._last = float("-inf")
        self._dirty = False

    def __getstate__(self):
        return {"directory": self.directory, "interval": self.interval}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    def add(self, written: int, failed: int = 0) -> None:
        """Counts records written and failed; writes the file if ``interval`` has passed."""
        self.written += int(written)
        self.failed += int(failed)
        self._dirty = True
        if time.monotonic() - self._last >= self.interval:
            self.flush()

    def flush(self) -> None:
        """Writes the counts now (call at the end of a bundle)."""
        if not self._dirty:
            return
        self._last, self._dirty = time.monotonic(), False
        try:
            if self._path is None:
                from datarax_beam.shards.shardset import join

                self._path = join(self.directory, f"{uuid.uuid4().hex}.json")
            _write(self._path, json.dumps({"written": self.written, "failed": self.failed}).encode())
        except Exception:  # noqa: BLE001 - progress must never fail a job
            _LOG.debug("could not write progress file %s", self._path, exc_info=True)


def read_reports(tmp_dir: str) -> tuple[int, int] | None:
    """(written, failed) summed over the writers' progress files; None if none is readable."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    from datarax_beam.shards.shardset import join

    try:
        matches = FileSystems.match([join(progress_dir(tmp_dir), "*.json")])[0].metadata_list
    except Exception:  # noqa: BLE001 - not there yet, or already removed by the commit
        return None
    written = failed = 0
    found = False
    for m in matches:
        try:
            with FileSystems.open(m.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                d = json.loads(f.read())
            written, failed, found = written + int(d["written"]), failed + int(d["failed"]), True
        except Exception:  # noqa: BLE001 - being rewritten, or removed meanwhile
            continue
    return (written, failed) if found else None


def live_counts(result) -> tuple[int, int] | None:
    """(records_written, records_failed) from a running job's Beam metrics (attempted values),
    or None where the runner does not report them."""
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.runners.portability import portable_runner

    from datarax_beam.transforms.readers import NAMESPACE

    if isinstance(result, portable_runner.PipelineResult):
        # its metrics() keeps the first answer for good; ask the job service afresh instead
        from apache_beam.portability.api import beam_job_api_pb2

        response = result._job_service.GetJobMetrics(
            beam_job_api_pb2.GetJobMetricsRequest(job_id=result._job_id))
        metrics = portable_runner.PortableMetrics(response)
    else:
        metrics = result.metrics()
    query = metrics.query(MetricsFilter().with_namespace(NAMESPACE))
    out = {"records_written": 0, "records_failed": 0}
    seen = False
    for c in query.get("counters", []):
        name = c.key.metric.name
        if name in out:
            value = c.attempted if c.attempted is not None else c.committed
            out[name] += int(value or 0)
            seen = True
    return (out["records_written"], out["records_failed"]) if seen else None


class JobProgress:
    """Driver side: a bar of a Beam job's records, fed from the writers' files (and live metrics).

    Use as a context manager around running the job; `attach` the `PipelineResult` when
    ``run()`` returns while the job still runs; `finish` with the committed shard set.

    Args:
      tmp_dir: the job's temp directory (where `Reporter`s write).
      total: records the job will write or fail (None when unknown: iterator sources).
      enabled: see `is_enabled`.
      interval: seconds between polls.
    """

    def __init__(self, tmp_dir: str, total: int | None = None, *, enabled: bool | None = None,
                 interval: float = 1.0, desc: str = "materialize", stream=None):
        self.tmp_dir, self.total, self.interval = tmp_dir, total, float(interval)
        self._want = is_enabled(enabled, stream) and self.interval > 0
        self._desc, self._stream = desc, stream
        self._result = None
        self._bar: Bar | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> JobProgress:
        if self._want:
            # polls are already spaced by `interval`: each one redraws
            self._bar = Bar(self.total, self._desc, enabled=True, stream=self._stream, mininterval=0)
            self._thread = threading.Thread(target=self._loop, name="datarax-progress", daemon=True)
            self._thread.start()
        return self

    def attach(self, result) -> None:
        """Also polls ``result``'s Beam metrics while the job runs."""
        self._result = result

    def poll(self) -> tuple[int, int] | None:
        """The counts now: the larger of the writers' files and the live metrics."""
        counts = [c for c in (read_reports(self.tmp_dir), self._live()) if c is not None]
        if not counts:
            return None
        return max(c[0] for c in counts), max(c[1] for c in counts)

    def _live(self) -> tuple[int, int] | None:
        result = self._result
        if result is None:
            return None
        try:
            return live_counts(result)
        except Exception:  # noqa: BLE001 - the runner does not report metrics while running
            _LOG.debug("no live metrics from %s", type(result).__name__, exc_info=True)
            self._result = None
            return None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()

    def refresh(self) -> None:
        try:
            counts = self.poll()
            if counts is not None and self._bar is not None:
                written, failed = counts
                self._bar.set(written + failed, failed)
        except Exception:  # noqa: BLE001
            _LOG.debug("progress poll failed", exc_info=True)

    def finish(self, shardset) -> None:
        """Ends the display on the committed shard set's exact counts (None: the job failed)."""
        if self._bar is None or shardset is None:
            return
        self._stop_thread()
        try:
            done = int(shardset.num_records) + int(shardset.num_failed)
            self._bar.set(done, int(shardset.num_failed), total=done if self.total is None else None)
        except Exception:  # noqa: BLE001
            _LOG.debug("progress finish failed", exc_info=True)

    def _stop_thread(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=LOCK_TIMEOUT)  # a daemon thread: never hold the job up
            self._thread = None

    def __exit__(self, *exc) -> None:
        self._stop_thread()
        if self._bar is not None:
            self._bar.close()

