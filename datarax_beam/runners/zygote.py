"""Warm local workers: DirectRunner ``multi_processing`` workers forked from a preloaded zygote.

A worker process that Beam starts spends ~4.5 s of CPU importing Beam, JAX and Flax before its
first record (measured on the 2-core machine: as much as a CPU-bound chain's work on 50k
records), and every worker of every job pays it again: 8 workers pay 36 CPU-seconds per job.
Here the imports happen once per driver, in a *zygote* process, and each worker is a ``fork()``
of it, ready in milliseconds (the pattern of multiprocessing's forkserver with preloading).

How: `quiet.FnApiRunner` makes the job's worker command `_zygote_client.py` (standard library
only), which hands the zygote its standard streams, environment, working directory and
arguments over a Unix socket. The zygote forks a child that becomes the worker
(`datarax_beam._beam_worker`: Beam's worker, unchanged) and sends its exit status back, so the
client exits as the worker did and Beam sees an ordinary worker process. A client that dies
takes its worker with it (the zygote kills the child when the connection closes); the zygote
exits with the driver (its stdin is a pipe from the driver).

The zygote forks with no JAX backend and no thread of its own started: each worker initializes
JAX itself, after taking its share of the cores (`datarax_beam._beam_worker.pin_cores`). Its
workers share compiled programs through a cache directory of the zygote's (a later job's worker
loads the chain an earlier one compiled: `datarax_beam._beam_worker.use_compile_cache`). A
zygote is kept per environment, executable, working directory and ``sys.path`` of the driver:
when one of them changes, a fresh zygote starts. ``DATARAX_BEAM_ZYGOTE=0`` turns it off (Beam
then starts each worker process itself).

Example:
  >>> from datarax_beam.runners import zygote
  >>> zygote.enabled({"DATARAX_BEAM_ZYGOTE": "0"})
  False
"""

from __future__ import annotations

import atexit
import hashlib
import importlib
import json
import os
import selectors
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
import warnings
from collections.abc import Mapping

#: Imported once in the zygote, so no worker imports them again.
PRELOAD = (
    "numpy",
    "jax",
    "jax.numpy",
    "flax.nnx",
    "zstandard",
    "array_record.python.array_record_module",
    "apache_beam.runners.worker.sdk_worker_main",
    "datarax_beam",
    "datarax_beam.transforms",
    "datarax_beam.runners",
)
SWITCH = "DATARAX_BEAM_ZYGOTE"
CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_zygote_client.py")

#: The zygote's program: its logging is set up before Beam's import can (as a worker's).
_SERVE = ("import sys; from datarax_beam import _beam_worker; _beam_worker.setup_logging(); "
          "from datarax_beam.runners import zygote; zygote.serve(int(sys.argv[1]), sys.argv[2])")

_lock = threading.Lock()
_zygote: _Zygote | None = None


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether local workers are forked from a zygote (unless ``DATARAX_BEAM_ZYGOTE=0``);
    only where ``fork`` and Unix sockets exist."""
    return environ.get(SWITCH, "1") != "0" and hasattr(os, "fork") and hasattr(socket, "AF_UNIX")


class _Zygote:
    def __init__(self, key: str):
        self.key, self.owner = key, os.getpid()
        self.dir = tempfile.mkdtemp(prefix="datarax-zygote-")
        self.path = os.path.join(self.dir, "socket")
        self.compile_cache = os.path.join(self.dir, "xla")  # its workers' compiled programs
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)  # bound now: clients queue until the zygote has preloaded
        listener.listen(128)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _SERVE, str(listener.fileno()), self.compile_cache],
                stdin=subprocess.PIPE, pass_fds=[listener.fileno()], start_new_session=True)
        finally:
            listener.close()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if os.getpid() != self.owner:  # a fork of the driver: the zygote is not its own
            return
        if self.process.stdin is not None:
            self.process.stdin.close()  # the zygote's cue to kill its workers and exit
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _key() -> str:
    state = [sys.executable, os.getcwd(), sys.path, sorted(os.environ.items())]
    return hashlib.sha256(json.dumps(state).encode("utf-8", "surrogateescape")).hexdigest()


def start() -> str:
    """Starts this driver's zygote if none runs for its current environment (it preloads in
    the background); returns the Unix socket path its clients connect to."""
    global _zygote
    key = _key()
    with _lock:
        if _zygote is None or _zygote.key != key or not _zygote.alive():
            if _zygote is not None:
                _zygote.stop()
            else:
                atexit.register(stop)
            _zygote = _Zygote(key)
        return _zygote.path


def stop() -> None:
    """Stops this driver's zygote (at exit, or to free its memory)."""
    global _zygote
    with _lock:
        if _zygote is not None:
            _zygote.stop()
            _zygote = None


def command() -> str:
    """The shell command of a worker forked from this driver's zygote (started if needed)."""
    return f"{shlex.quote(sys.executable)} {shlex.quote(CLIENT)} {shlex.quote(start())}"


# --- the zygote process -----------------------------------------------------------------------


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the client closed its connection")
        data += chunk
    return data


def _request(conn: socket.socket) -> tuple[list[int], dict]:
    conn.settimeout(30)
    _, fds, _, _ = socket.recv_fds(conn, 1, 3)
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise ConnectionError(f"the client sent {len(fds)} file descriptors, not 3")
    (size,) = struct.unpack("!I", _recv_exact(conn, 4))
    request = json.loads(_recv_exact(conn, size))
    conn.settimeout(None)
    return fds, request


def _child(conn: socket.socket, fds: list[int], request: dict, compile_cache: str | None) -> None:
    """In the forked child: become the worker; never returns."""
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        sys.argv = [sys.argv[0], *request["argv"]]

        def orphaned():  # the client is gone (its connection closed): so is the worker
            try:
                while conn.recv(1):
                    pass
            except OSError:
                pass
            os._exit(1)

        threading.Thread(target=orphaned, name="datarax-zygote-client", daemon=True).start()
        from datarax_beam import _beam_worker

        _beam_worker.main(sys.argv, compile_cache)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported on the worker's stderr, then its exit status
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(listener_fd: int, compile_cache: str | None = None) -> None:
    """The zygote: preload, then fork a worker per client until stdin closes; the workers share
    compiled programs through ``compile_cache`` (`datarax_beam._beam_worker.use_compile_cache`)."""
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # the worker imports what it needs itself
    listener = socket.socket(fileno=listener_fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(sys.stdin, selectors.EVENT_READ, "driver")
    selector.register(wake_r, selectors.EVENT_READ, "child")
    children: dict[int, socket.socket] = {}  # pid -> its client's connection
    while True:
        for key, _ in selector.select():
            if key.data == "driver":  # the driver closed our stdin (or exited)
                for pid in children:
                    _kill(pid)
                return
            if key.data == "child":
                os.read(wake_r, 4096)
                _reap(children, selector)
            elif key.data == "accept":
                conn, _ = listener.accept()
                try:
                    fds, request = _request(conn)
                except (OSError, ValueError):
                    conn.close()
                    continue
                with warnings.catch_warnings():  # (3.12+: "multi-threaded": only native helpers)
                    warnings.simplefilter("ignore", DeprecationWarning)
                    pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    selector.close()
                    for fd in (wake_r, wake_w):
                        os.close(fd)
                    listener.close()
                    for other in children.values():
                        other.close()
                    _child(conn, fds, request, compile_cache)
                for fd in fds:
                    os.close(fd)
                children[pid] = conn
                selector.register(conn, selectors.EVENT_READ, pid)
            else:  # a client's connection closed before its worker exited: kill the worker
                pid = key.data
                selector.unregister(key.fileobj)
                _kill(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(children: dict[int, socket.socket], selector: selectors.BaseSelector) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        try:
            selector.unregister(conn)
        except KeyError:
            pass  # unregistered when its client went away
        try:
            conn.sendall(struct.pack("!i", os.waitstatus_to_exitcode(status)))
        except OSError:
            pass  # the client is gone
        conn.close()

