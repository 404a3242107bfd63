"""One job at a time per output directory: a lock file, checked at start and at commit.

``output_dir/.datarax-lock`` (JSON) names the job holding the directory: its id, host, process,
start time, a heartbeat the driver refreshes every `HEARTBEAT_S` seconds, its temp directory and
the final file names it may create. A job that finds a live lock is refused with an error naming
the holder (`OutputDirLocked`); the commit step checks that the lock is still its own before it
renames anything and again before it writes ``shardset.json``, so of two jobs that raced at
start at most one commits.

Creating the lock is atomic on local disk (a hard link of a complete file, which fails if the
name exists). Other filesystems have no create-if-absent in Beam's API: the job writes the lock,
reads it back and the commit-time check settles what remains of the race.

**Stale locks.** A killed job leaves its lock. It is stale, and the next job takes the directory
over, when its process is gone (same host: the pid is not running, or runs another program), or
when its heartbeat is older than `STALE_AFTER_S` (any host). Taking over deletes the dead job's
temp directory and the files it had renamed into place but not committed, using only the names
its lock lists (validated: plain names inside the directory); nothing is globbed or listed.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from apache_beam.io.filesystems import FileSystems

from datarax_beam.shards import shardset as ss
from datarax_beam.shards.validate import SHARD_NAME
from datarax_beam.transforms import files

LOCK_FILE = ".datarax-lock"
TMP_PREFIX = ".datarax-tmp-"
#: How often a running job refreshes its lock's heartbeat.
HEARTBEAT_S = 30.0
#: A lock whose heartbeat is older than this is stale (its job died), on any host.
STALE_AFTER_S = 600.0

_TMP_NAME = re.compile(re.escape(TMP_PREFIX) + r"[0-9a-f]{12}")
_ERRORS_NAME = re.compile(ss.ERRORS_DIR + r"/errors-[0-9]{5,}-of-[0-9]{5,}(-[0-9a-f]{12})?\.jsonl")


class OutputDirLocked(RuntimeError):
    """Another job holds the output directory (or took it over while this one ran)."""


def lock_path(output_dir: str) -> str:
    return ss.join(output_dir, LOCK_FILE)


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> int | None:
    """The start time (clock ticks since boot) of process ``pid``, None if unknown or gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int, start: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    now_start = _process_start(pid)
    return start is None or now_start is None or now_start == start


def _read(output_dir: str) -> dict[str, Any] | None:
    """The lock's content; None when there is no lock; ``{"corrupt": ...}`` when unreadable."""
    path = lock_path(output_dir)
    if not files.exists(path):
        return None
    try:
        info = json.loads(files.read_bytes(path).decode("utf-8"))
        if not isinstance(info, dict) or not isinstance(info.get("job_id"), str):
            raise ValueError("not a lock object")
        return info
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        try:
            age = time.time() - FileSystems.last_updated(path)
        except (OSError, ValueError):
            age = 0.0
        return {"corrupt": f"{type(e).__name__}: {e}", "age": age}


def _describe(info: dict[str, Any]) -> str:
    if "corrupt" in info:
        return f"an unreadable lock ({info['corrupt']})"
    started = datetime.datetime.fromtimestamp(float(info.get("started", 0)), datetime.UTC)
    beat = time.time() - float(info.get("heartbeat", 0))
    return (f"job {info['job_id']} (pid {info.get('pid')} on host {info.get('host')!r}, started "
            f"{started:%Y-%m-%d %H:%M:%S} UTC, last heartbeat {beat:.0f} s ago)")


def stale_reason(info: dict[str, Any], now: float | None = None) -> str | None:
    """Why a lock is stale (its job is dead), or None while its job may be running."""
    now = time.time() if now is None else now
    if "corrupt" in info:
        return f"unreadable for {info['age']:.0f} s" if info["age"] > STALE_AFTER_S else None
    try:
        beat = float(info.get("heartbeat", 0))
        pid = int(info.get("pid", -1))
        start = info.get("pid_start")
        start = None if start is None else int(start)
    except (TypeError, ValueError):
        return "its fields are malformed"
    if info.get("host") == socket.gethostname() and info.get("boot_id") == _boot_id() and pid > 0:
        if not _alive(pid, start):
            return f"its process {pid} on this host is gone"
    if now - beat > STALE_AFTER_S:
        return f"its last heartbeat is {now - beat:.0f} s old (stale after {STALE_AFTER_S:.0f} s)"
    return None


def _own_names(output_dir: str, info: dict[str, Any]) -> tuple[str | None, list[str]]:
    """The dead job's temp directory and final files, each validated to lie inside ``output_dir``."""
    tmp = info.get("tmp_dir")
    tmp_path = ss.join(output_dir, tmp) if isinstance(tmp, str) and _TMP_NAME.fullmatch(tmp) else None
    names = info.get("names") if isinstance(info.get("names"), list) else []
    paths = []
    for name in names:
        if isinstance(name, str) and (SHARD_NAME.fullmatch(name) or _ERRORS_NAME.fullmatch(name)):
            directory, _, base = name.rpartition("/")
            paths.append(ss.join(ss.join(output_dir, directory), base) if directory else ss.join(output_dir, base))
    return tmp_path, paths


def remove_uncommitted(output_dir: str, tmp_dir: str | None, paths: Iterable[str],
                       committed: Callable[[], set[str]]) -> None:
    """Deletes a job's temp directory and those of its final files the committed set does not list."""
    if tmp_dir is not None:
        files.delete_dir(tmp_dir)
    keep = committed()
    for path in paths:
        if path not in keep:
            files.delete(path)


class JobLock:
    """The lock this job holds on ``output_dir`` (see the module docstring)."""

    def __init__(self, output_dir: str, job_id: str, tmp_dir: str):
        self.output_dir, self.job_id, self.tmp_dir = output_dir, job_id, tmp_dir
        self.names: list[str] = []
        self._started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _content(self) -> bytes:
        info = {"job_id": self.job_id, "host": socket.gethostname(), "boot_id": _boot_id(),
                "pid": os.getpid(), "pid_start": _process_start(os.getpid()), "started": self._started,
                "heartbeat": time.time(), "tmp_dir": self.tmp_dir.rstrip("/").rsplit("/", 1)[-1],
                "names": self.names}
        return json.dumps(info, indent=1).encode("utf-8")

    def _create(self) -> bool:
        path = lock_path(self.output_dir)
        data = self._content()
        if files.is_local(path):
            tmp = f"{path}.{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
            try:
                os.link(tmp, path)  # atomic, and fails if a lock exists
                return True
            except FileExistsError:
                return False
            finally:
                os.remove(tmp)
        if files.exists(path):
            return False
        files.write_bytes(path, data)
        info = _read(self.output_dir)
        return info is not None and info.get("job_id") == self.job_id

    def acquire(self, committed: Callable[[], set[str]]) -> JobLock:
        """Takes the directory, or raises `OutputDirLocked` naming the job that holds it.

        ``committed()`` lists the paths of the committed set (kept when a stale lock's files
        are cleaned up)."""
        for _ in range(3):
            info = _read(self.output_dir)
            if info is not None:
                reason = stale_reason(info)
                if reason is None:
                    raise OutputDirLocked(
                        f"Output directory {self.output_dir!r} is in use by {_describe(info)}. Wait "
                        f"for it to finish; if it was killed, its lock counts as stale once its "
                        f"heartbeat is {STALE_AFTER_S:.0f} s old (at once on its own host), or "
                        f"delete {lock_path(self.output_dir)!r} by hand"
                    )
                tmp, paths = _own_names(self.output_dir, info)
                remove_uncommitted(self.output_dir, tmp, paths, committed)
                again = _read(self.output_dir)  # still the same dead job's lock?
                if again is not None and again.get("job_id") == info.get("job_id"):
                    files.delete(lock_path(self.output_dir))
            if self._create():
                self._start_heartbeat()
                return self
        raise OutputDirLocked(f"Output directory {self.output_dir!r}: another job took the lock while "
                              f"this one started; {_describe(_read(self.output_dir) or {'job_id': '?'})}")

    def update(self, names: Iterable[str]) -> None:
        """Records the final file names this job may create (relative to the directory)."""
        self.names = list(names)
        self._rewrite()

    def _rewrite(self) -> bool:
        info = _read(self.output_dir)
        if info is None or info.get("job_id") != self.job_id:
            return False
        files.write_bytes(lock_path(self.output_dir), self._content())
        return True

    def _start_heartbeat(self) -> None:
        def beat():
            while not self._stop.wait(HEARTBEAT_S):
                try:
                    if not self._rewrite():
                        return  # taken over: the commit-time check fails the job
                except OSError:
                    continue  # a transient filesystem error: try again at the next beat

        self._thread = threading.Thread(target=beat, name="datarax-lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stops the heartbeat and removes the lock if it is still this job's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        info = _read(self.output_dir)
        if info is not None and info.get("job_id") == self.job_id:
            files.delete(lock_path(self.output_dir))


def check(output_dir: str, job_id: str) -> None:
    """Raises `OutputDirLocked` unless ``output_dir``'s lock is still job ``job_id``'s (commit)."""
    info = _read(output_dir)
    if info is None:
        raise OutputDirLocked(f"Job {job_id} lost its lock on {output_dir!r} (the lock file is gone); "
                              f"nothing is committed")
    if info.get("job_id") != job_id:
        raise OutputDirLocked(f"Job {job_id} lost its lock on {output_dir!r}: it is now held by "
                              f"{_describe(info)}; nothing is committed")
