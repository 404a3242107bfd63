"""Quiet logs: Beam's messages that do not concern a user are filtered where they arise.

At the default level (``WARNING``) warnings and errors are shown, less this known noise:

* ``apitools not found, and bigquery client libraries are not available ...`` -- logged through
  the root logger by Beam's BigQuery shim on every ``import apache_beam`` without the GCP extras
  (dropped by a filter on the root logger that `install` adds when ``datarax_beam`` is imported);
* from DirectRunner worker processes: ``Logging handler created.``, ``No semi_persistent_directory
  found ...`` and ``Discarding unparseable args: ['--pipeline_type_check',
  '--direct_runner_use_stacked_bundle']`` (the worker re-parses options the driver has already
  parsed), plus the driver's second copy of every line a worker logs. Workers start through
  `datarax_beam._beam_worker`, which sets their logging up before Beam's import can, and
  `datarax_beam.runners.quiet` arranges that.

``log_level="INFO"`` or ``"DEBUG"`` (`set_level`, ``materialize(..., log_level=...)``,
``datarax-beam materialize --verbose``, or the environment variable ``DATARAX_BEAM_LOG_LEVEL``)
filters nothing and starts Beam's own workers at that level.

This module never imports Beam: ``import datarax_beam`` stays light.

Example:
  >>> from datarax_beam import logs
  >>> logs.is_quiet()
  True
  >>> with logs.level("INFO"):
  ...     logs.is_quiet()
  False
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

#: Beginnings of the messages dropped while quiet.
NOISE = (
    "apitools not found, and bigquery client libraries are not available",
    "No semi_persistent_directory found",
    "Discarding unparseable args: ['--pipeline_type_check'",
)

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ENV_VAR = "DATARAX_BEAM_LOG_LEVEL"


def check_level(value: str | int) -> int:
    """The numeric level of ``"INFO"``, ``"warning"``, ``20``, ...; raises naming the value."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"`log_level` must be one of {LEVELS} or an int, got {value!r}")
    if isinstance(value, int):
        return value
    name = value.strip().upper()
    if name.isdecimal():
        return int(name)
    if name == "WARN":  # Java's name, which Flink's and Spark's job servers need (runners.options)
        name = "WARNING"
    if name not in LEVELS:
        raise ValueError(f"Unknown `log_level` {value!r}; expected one of {LEVELS}")
    return getattr(logging, name)


def _initial_level() -> int:
    try:
        return check_level(os.environ.get(ENV_VAR) or "WARNING")
    except (TypeError, ValueError):
        return logging.WARNING


_level = _initial_level()


def get_level() -> int:
    return _level


def set_level(value: str | int) -> None:
    """Sets the level of Beam's messages shown from now on (see the module docstring).

    At INFO or DEBUG the ``apache_beam`` and ``datarax_beam`` loggers are set to that level so
    their messages reach your handlers; at WARNING and above those loggers are left alone.
    """
    global _level
    _level = check_level(value)
    if _level < logging.WARNING:
        for name in ("apache_beam", "datarax_beam"):
            logging.getLogger(name).setLevel(_level)


@contextlib.contextmanager
def level(value: str | int | None) -> Iterator[None]:
    """`set_level` for the duration of a block (None: leave the level as it is)."""
    if value is None:
        yield
        return
    saved = _level
    loggers = {name: logging.getLogger(name).level for name in ("apache_beam", "datarax_beam")}
    set_level(value)
    try:
        yield
    finally:
        set_level(saved)
        for name, lvl in loggers.items():
            logging.getLogger(name).setLevel(lvl)


def is_quiet(value: str | int | None = None) -> bool:
    """True when the known noise is dropped: at level WARNING and above."""
    return (get_level() if value is None else check_level(value)) >= logging.WARNING


class NoiseFilter(logging.Filter):
    """Drops the records of `NOISE` while `is_quiet`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not is_quiet():
            return True
        try:
            return not record.getMessage().startswith(NOISE)
        except (TypeError, ValueError):  # a record whose arguments do not format: not ours
            return True


class WorkerCopyFilter(logging.Filter):
    """Drops the driver's copies of worker log lines (``Worker: severity: ...``) while quiet; the
    worker process has printed each of them on the same stderr already."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == "Worker: %s" and is_quiet())


_ROOT_FILTER = NoiseFilter()


def install() -> None:
    """Adds the noise filter to the root logger (once). Runs when this module is imported, which
    ``import datarax_beam`` does before anything imports Beam; it drops only `NOISE`."""
    root = logging.getLogger()
    if _ROOT_FILTER not in root.filters:
        root.addFilter(_ROOT_FILTER)


#: The driver's logger of worker log lines (Beam's local job service, used by DirectRunner's
#: worker processes).
WORKER_COPIES_LOGGER = "apache_beam.runners.portability.local_job_service"


@contextlib.contextmanager
def worker_copies_dropped() -> Iterator[None]:
    """While the block runs, the driver does not print its copies of worker log lines."""
    logger, f = logging.getLogger(WORKER_COPIES_LOGGER), WorkerCopyFilter()
    logger.addFilter(f)
    try:
        yield
    finally:
        logger.removeFilter(f)


install()
