"""`runners.jobserver`: classpath cache, process lifecycle and the errors that name what is missing.

The job servers themselves run in tests/engines (Flink and Spark jobs); these tests use stand-in
executables for ``java``/``mvn`` to reach the error paths quickly.
"""

from __future__ import annotations

import os
import socket
import stat

import pytest

from datarax_beam.runners import jobserver
from datarax_beam.runners.jobserver import JobServer, WorkerPool, resolve_classpath


def _script(path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def _cached(cache, tmp_path, runner="spark", **versions):
    """A cache entry for ``runner`` listing one existing jar, as a finished Maven run leaves it."""
    jar = tmp_path / "a.jar"
    jar.write_bytes(b"")
    work = jobserver.classpath_dir(runner, cache=str(cache), **versions)
    os.makedirs(work)
    with open(os.path.join(work, "classpath.txt"), "w") as f:
        f.write(str(jar))
    return str(jar)


def test_unknown_runner_and_missing_tools_are_named(tmp_path):
    with pytest.raises(ValueError, match="`runner` must be one of \\['flink', 'spark'\\], got 'storm'"):
        JobServer("storm")
    with pytest.raises(FileNotFoundError, match="Maven \\(`no-such-mvn`\\) is needed"):
        resolve_classpath("spark", beam_version="2.62.0", mvn="no-such-mvn", cache=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="Java \\(`no-such-java`\\) is needed"):
        JobServer("spark", beam_version="2.62.0", java="no-such-java").start()
    with pytest.raises(ValueError, match="`flink_version` is needed for beam_version='2.1.0'"):
        resolve_classpath("flink", beam_version="2.1.0", cache=str(tmp_path))


def test_a_maven_failure_names_its_log_and_quotes_it(tmp_path):
    mvn = _script(tmp_path / "mvn", "echo 'Could not find artifact org.apache.beam:beam-runners-spark-3'; exit 1")
    with pytest.raises(RuntimeError, match=r"(?s)exit status 1.*maven\.log.*Could not find artifact") as err:
        resolve_classpath("spark", beam_version="2.62.0", mvn=mvn, cache=str(tmp_path / "cache"))
    work = jobserver.classpath_dir("spark", beam_version="2.62.0", cache=str(tmp_path / "cache"))
    assert str(err.value).count(work) == 1
    assert sorted(os.listdir(work)) == ["maven.log", "pom.xml"]  # no classpath.txt: nothing cached


def test_a_resolved_classpath_is_reused_without_maven(tmp_path):
    cache = tmp_path / "cache"
    jar = _cached(cache, tmp_path, beam_version="2.62.0")
    assert resolve_classpath("spark", beam_version="2.62.0", mvn="no-such-mvn", cache=str(cache)) == [jar]
    os.unlink(jar)  # a jar gone from ~/.m2: resolve again
    with pytest.raises(FileNotFoundError, match="no-such-mvn"):
        resolve_classpath("spark", beam_version="2.62.0", mvn="no-such-mvn", cache=str(cache))


def test_a_server_that_exits_or_never_listens_fails_with_its_log(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("DATARAX_BEAM_CACHE", str(cache))
    _cached(cache, tmp_path, beam_version="2.62.0")
    dies = _script(tmp_path / "java-dies", "echo 'Error: Could not find or load main class'; exit 1")
    server = JobServer("spark", beam_version="2.62.0", java=dies, log_path=str(tmp_path / "dies.log"))
    with pytest.raises(RuntimeError, match="(?s)spark job server exited with status 1 before listening.*main class"):
        server.start()
    hangs = _script(tmp_path / "java-hangs", "echo starting; exec sleep 60")
    server = JobServer("spark", beam_version="2.62.0", java=hangs, log_path=str(tmp_path / "hangs.log"),
                       startup_timeout=1)
    with pytest.raises(TimeoutError, match="(?s)did not listen on port .* within 1 s.*starting"):
        server.start()
    assert not server.running  # stopped, not left behind
    with pytest.raises(RuntimeError, match="not started"):
        _ = JobServer("spark", beam_version="2.62.0").endpoint


def test_worker_pool_starts_listens_and_stops(tmp_path):
    pool = WorkerPool(log_path=str(tmp_path / "pool.log"))
    with pool:
        host, port = pool.endpoint.split(":")
        with socket.create_connection((host, int(port)), timeout=10):
            pass
        assert pool.running
    assert not pool.running
    assert "worker_pool_main" in pool.log_tail()


def test_tail_and_free_port(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert jobserver.tail(str(log), 2) == "line 98\nline 99"
    assert jobserver.tail(str(tmp_path / "missing.log")) == ""
    assert 0 < jobserver.free_port() < 65536
