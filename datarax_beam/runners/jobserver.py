"""Beam's portable Flink and Spark job servers, and an external Python worker pool, run locally.

`JobServer("flink")` resolves the job server's Java classpath with Maven from Maven Central (once
per machine: the jars stay in Maven's ``~/.m2`` and the classpath in this module's cache), starts
``java`` on free ports, waits until the job service accepts connections, and stops it on exit. Its
log goes to a file (`JobServer.log_tail` shows the end). Point Beam at it with
`datarax_beam.runners.options.flink_local` / `spark_local` (``job_endpoint=server.endpoint``).

`WorkerPool` starts ``python -m apache_beam.runners.worker.worker_pool_main``: Beam's EXTERNAL
environment, where every SDK worker is a separate Python process (as on a cluster), not a thread
of the submitting process (LOOPBACK).

The job server's version must equal the Beam SDK's that submits to it (``beam_version``, default:
the installed ``apache_beam``). Maven caches what it downloads in ``~/.m2/repository``; the
resolved classpath is cached under `cache_dir()` (``$DATARAX_BEAM_CACHE`` or
``~/.cache/datarax_beam``) ``/jobserver/<runner>-<versions>-<pom hash>/`` (`classpath_dir`). The
JVM flags assume Java 11 or newer (tested with 17).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import resources

#: Spark release the local Spark job server runs on (Beam tests its Spark 3 runner against 3.5;
#: 3.5 is the Spark 3 line that supports Java 17).
SPARK_VERSION = "3.5.0"

#: Seconds to wait for a server's port (a cold Maven cache is resolved before this clock starts).
STARTUP_TIMEOUT = 600.0

# Java 17 closes the JDK's internals that Spark and Flink (Kryo, netty) reflect into; these are the
# --add-opens of Spark's and Flink's own launch scripts.
_JAVA17_OPENS = [
    f"--add-opens=java.base/{pkg}=ALL-UNNAMED"
    for pkg in ("java.lang", "java.lang.invoke", "java.lang.reflect", "java.io", "java.net",
                "java.nio", "java.text", "java.time", "java.util", "java.util.concurrent",
                "java.util.concurrent.atomic", "sun.nio.ch", "sun.nio.cs", "sun.security.action",
                "sun.util.calendar")
]

_DRIVERS = {
    "flink": "org.apache.beam.runners.flink.FlinkJobServerDriver",
    "spark": "org.apache.beam.runners.spark.SparkJobServerDriver",
}


def cache_dir() -> str:
    """Where resolved classpaths live: ``$DATARAX_BEAM_CACHE`` or ``$XDG_CACHE_HOME/datarax_beam``
    (``~/.cache/datarax_beam``)."""
    if os.environ.get("DATARAX_BEAM_CACHE"):
        return os.environ["DATARAX_BEAM_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "datarax_beam")


def installed_beam_version() -> str:
    """The version of the installed Apache Beam SDK (which a job server must match)."""
    from importlib.metadata import version

    return version("apache-beam")


def default_flink_version() -> str:
    """The newest Flink line the installed SDK's FlinkRunner knows (``--flink_version`` default)."""
    from apache_beam.options.pipeline_options import FlinkRunnerOptions

    return FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS[-1]


def _check_runner(runner: str) -> str:
    if runner not in _DRIVERS:
        raise ValueError(f"`runner` must be one of {sorted(_DRIVERS)}, got {runner!r}")
    return runner


def _properties(runner: str, beam_version: str | None, flink_version: str | None,
                spark_version: str | None) -> dict[str, str]:
    installed = installed_beam_version()
    beam_version = beam_version or installed
    if runner == "flink":
        if flink_version is None and beam_version != installed:
            raise ValueError(
                f"`flink_version` is needed for beam_version={beam_version!r}: the Flink lines it "
                f"publishes are its SDK's FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS, and the "
                f"installed SDK is {installed}")
        return {"beam.version": beam_version, "flink.line": flink_version or default_flink_version()}
    return {"beam.version": beam_version, "spark.version": spark_version or SPARK_VERSION}


def _template(runner: str) -> bytes:
    return resources.files("datarax_beam.runners").joinpath(f"java/{runner}.pom.xml").read_bytes()


def classpath_dir(
    runner: str,
    *,
    beam_version: str | None = None,
    flink_version: str | None = None,
    spark_version: str | None = None,
    cache: str | None = None,
) -> str:
    """The cache directory of one job server's classpath: ``<cache>/jobserver/<runner>-<versions>-<pom
    hash>/`` (``pom.xml``, ``maven.log``, ``classpath.txt``); arguments as `resolve_classpath`."""
    _check_runner(runner)
    props = _properties(runner, beam_version, flink_version, spark_version)
    # a changed pom is a new cache entry
    digest = hashlib.sha256(_template(runner)).hexdigest()[:8]
    tag = "-".join([runner] + [props[k] for k in sorted(props)] + [digest])
    return os.path.join(cache or cache_dir(), "jobserver", tag)


def resolve_classpath(
    runner: str,
    *,
    beam_version: str | None = None,
    flink_version: str | None = None,
    spark_version: str | None = None,
    mvn: str = "mvn",
    cache: str | None = None,
) -> list[str]:
    """The jars of ``runner``'s job server, resolved by Maven once and cached.

    Args:
      runner: ``"flink"`` or ``"spark"``.
      beam_version: the Beam release (default: the installed SDK's).
      flink_version: the Flink line, e.g. ``"1.19"`` (default: the installed SDK's newest; needed
        when ``beam_version`` is not the installed SDK's).
      spark_version: the Spark release for the Spark job server (default `SPARK_VERSION`).
      mvn: the Maven executable.
      cache: the cache root (default `cache_dir()`).

    Returns:
      the classpath entries (absolute jar paths, in Maven's local repository).

    Raises:
      ValueError: an unknown runner, or no ``flink_version`` for another SDK's ``beam_version``.
      FileNotFoundError: Maven is not installed.
      RuntimeError: Maven could not resolve the artifacts (its log is named and quoted).
    """
    props = _properties(_check_runner(runner), beam_version, flink_version, spark_version)
    work = classpath_dir(runner, beam_version=beam_version, flink_version=flink_version,
                         spark_version=spark_version, cache=cache)
    listing = os.path.join(work, "classpath.txt")
    if os.path.exists(listing):
        with open(listing, encoding="utf-8") as f:
            jars = [p for p in f.read().strip().split(os.pathsep) if p]
        if jars and all(os.path.exists(p) for p in jars):
            return jars
    if shutil.which(mvn) is None:
        raise FileNotFoundError(
            f"Maven (`{mvn}`) is needed to fetch the {runner} job server's jars and is not on PATH")
    os.makedirs(work, exist_ok=True)
    pom = os.path.join(work, "pom.xml")
    with open(pom, "wb") as f:
        f.write(_template(runner))
    log_path = os.path.join(work, "maven.log")
    fd, partial = tempfile.mkstemp(prefix="classpath-", suffix=".txt", dir=work)
    os.close(fd)
    cmd = [mvn, "-B", "-f", pom, "dependency:build-classpath", f"-Dmdep.outputFile={partial}"]
    cmd += [f"-D{k}={v}" for k, v in props.items()]
    with open(log_path, "w", encoding="utf-8") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    if code != 0:
        os.unlink(partial)
        raise RuntimeError(
            f"Maven could not resolve the {runner} job server {props} (exit status {code}); "
            f"see {log_path}:\n{tail(log_path, 15)}")
    os.replace(partial, listing)  # complete listings only: a killed run leaves no classpath.txt
    with open(listing, encoding="utf-8") as f:
        return [p for p in f.read().strip().split(os.pathsep) if p]


def free_port() -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def tail(path: str | None, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file ('' when there is none)."""
    if not path or not os.path.exists(path):
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 200 * lines - 4096))
        text = f.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def _wait_for_port(port: int, proc: subprocess.Popen, what: str, log_path: str, timeout: float) -> None:
    """Returns once ``localhost:port`` accepts connections; raises if ``proc`` exits first or
    ``timeout`` seconds pass (naming the log and quoting its tail)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            s.settimeout(1.0)
            if s.connect_ex(("localhost", port)) == 0:
                return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before listening on "
                               f"port {port}; log {log_path}:\n{tail(log_path)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not listen on port {port} within {timeout:.0f} s; "
                               f"log {log_path}:\n{tail(log_path)}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.25)  # the pause between attempts; returns early if it exits


def _stop(proc: subprocess.Popen | None, grace: float = 20.0) -> None:
    """Stops a server started in its own process group (it and the workers it spawned)."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class _Server:
    """A child process in its own process group, logging to a file, listening on a port."""

    what = "server"

    def __init__(self, log_path: str | None, startup_timeout: float):
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix=f"datarax-{self.what.replace(' ', '-')}-", suffix=".log")
            os.close(fd)
        self.log_path = os.path.abspath(log_path)
        self.startup_timeout = float(startup_timeout)
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        """``localhost:<port>`` (after `start`)."""
        if self.port is None:
            raise RuntimeError(f"The {self.what} is not started; use it as a context manager or call start()")
        return f"localhost:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _launch(self, cmd: Sequence[str], env: dict[str, str] | None = None) -> None:
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(cmd[:3])} ...\n".encode())
            self._proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        try:
            _wait_for_port(self.port, self._proc, self.what, self.log_path, self.startup_timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stops the process and every worker it started (idempotent)."""
        _stop(self._proc)

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self):  # pragma: no cover - overridden
        raise NotImplementedError


class JobServer(_Server):
    """Beam's portable job server for Flink or Spark, running locally from Maven-resolved jars.

    Args:
      runner: ``"flink"`` (an embedded Flink cluster unless ``master`` names one) or ``"spark"``.
      beam_version: the job server's Beam release; it must equal the submitting SDK's (default: the
        installed ``apache_beam``).
      flink_version: the Flink line (default: the newest the installed SDK knows, e.g. ``"1.19"``;
        needed when ``beam_version`` is not the installed SDK's).
      spark_version: the Spark release of the Spark job server (default `SPARK_VERSION`).
      master: ``--flink-master`` (default ``[local]``: an embedded cluster in the job server) or
        ``--spark-master-url`` (default ``local[2]``).
      log_path: the job server's log file (default: a new temporary file).
      java, mvn: the executables.
      heap: the JVM's ``-Xmx``.
      startup_timeout: seconds to wait for the job port once java started.

    Example:
      >>> with JobServer("flink") as server:  # doctest: +SKIP
      ...     materialize(pipeline, "out", options=options.flink_local(job_endpoint=server.endpoint))
    """

    def __init__(
        self,
        runner: str,
        *,
        beam_version: str | None = None,
        flink_version: str | None = None,
        spark_version: str | None = None,
        master: str | None = None,
        log_path: str | None = None,
        java: str = "java",
        mvn: str = "mvn",
        heap: str = "1g",
        startup_timeout: float = STARTUP_TIMEOUT,
    ):
        self.runner = _check_runner(runner)
        self.what = f"{runner} job server"
        super().__init__(log_path, startup_timeout)
        self.beam_version = beam_version or installed_beam_version()
        self.flink_version, self.spark_version = flink_version, spark_version
        self.master = master or ("[local]" if runner == "flink" else "local[2]")
        self.java, self.mvn, self.heap = java, mvn, heap

    def classpath(self) -> list[str]:
        return resolve_classpath(self.runner, beam_version=self.beam_version, flink_version=self.flink_version,
                                 spark_version=self.spark_version, mvn=self.mvn)

    def start(self) -> JobServer:
        """Resolves the classpath (Maven, first time only), starts java and waits for the port."""
        if self.running:
            return self
        if shutil.which(self.java) is None:
            raise FileNotFoundError(f"Java (`{self.java}`) is needed to run the {self.what} and is not on PATH")
        jars = self.classpath()
        self.port = free_port()
        master_flag = "--flink-master" if self.runner == "flink" else "--spark-master-url"
        cmd = [self.java, f"-Xmx{self.heap}", *_JAVA17_OPENS,
               "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-Dspark.ui.enabled=false",
               "-cp", os.pathsep.join(jars), _DRIVERS[self.runner],
               "--job-host=localhost", f"--job-port={self.port}", "--artifact-port=0",
               "--expansion-port=0", f"{master_flag}={self.master}"]
        self._launch(cmd)
        return self


class WorkerPool(_Server):
    """Beam's external worker pool: each SDK worker a new ``python`` process (EXTERNAL environment).

    The pool starts workers with the ``python`` found on ``PATH``; the directory of ``python``
    is put first on it, so workers run in the same environment as the pool.

    Args:
      python: the interpreter of the pool and its workers (default: this one).
      env: extra environment variables (e.g. ``PYTHONPATH`` for modules the pipeline imports).
      log_path: the log file of the pool and its workers (default: a new temporary file).
      startup_timeout: seconds to wait for the pool's port.

    Example:
      >>> with WorkerPool() as pool:  # doctest: +SKIP
      ...     flags = options.flink_local(job_endpoint=..., environment="EXTERNAL", worker_pool=pool.endpoint)
    """

    what = "worker pool"

    def __init__(self, python: str | None = None, *, env: dict[str, str] | None = None,
                 log_path: str | None = None, startup_timeout: float = STARTUP_TIMEOUT):
        super().__init__(log_path, startup_timeout)
        self.python = python or sys.executable
        self.env = dict(env or {})

    def start(self) -> WorkerPool:
        if self.running:
            return self
        self.port = free_port()
        env = {**os.environ, **self.env}
        env["PATH"] = os.pathsep.join([os.path.dirname(os.path.abspath(self.python)), env.get("PATH", "")])
        self._launch([self.python, "-m", "apache_beam.runners.worker.worker_pool_main",
                      f"--service_port={self.port}"], env=env)
        return self
