"""Fixtures of the engine tests: the engines environment, the job servers, the worker pool, and
one driver run per runner configuration (shared by the tests that check its jobs).

The jobs (``scenarios.py``) are submitted by ``driver.py`` from ``.venv-engines``: Apache Beam
2.62.0, the release whose Flink and Spark job servers Maven Central serves (see
requirements-engines.txt). The job servers and the worker pool are started once per session, on
free ports, and stopped at its end; their logs go to files under the session's temp directory,
and a failing engine test shows their tails. Deselect these tests with ``-m "not engines"``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess

import pytest

from datarax_beam.runners import options
from datarax_beam.runners.jobserver import JobServer, WorkerPool, tail

from .compare import JOBS, LOOPBACK_JOBS, started_workers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

_LOGS: list[tuple[str, str]] = []  # (what, log path) shown when an engine test fails


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and item.get_closest_marker("engines") is not None:
        for what, path in _LOGS:
            report.sections.append((f"{what}: tail of {path}", tail(path, 60)))


def _engines_env():
    spec = importlib.util.spec_from_file_location("_engines_env", os.path.join(ROOT, "tools", "engines_env.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def engine_python() -> str:
    """The interpreter of ``.venv-engines`` (built here if `make test` has not built it)."""
    return _engines_env().ensure()


@pytest.fixture(scope="session")
def engine_versions(engine_python) -> dict[str, str]:
    """The engines environment's Beam release and its newest Flink line (the job servers' versions)."""
    code = ("import json, importlib.metadata as m; "
            "from apache_beam.options.pipeline_options import FlinkRunnerOptions as F; "
            "print(json.dumps({'beam_version': m.version('apache-beam'), "
            "'flink_version': F.PUBLISHED_FLINK_VERSIONS[-1]}))")
    out = subprocess.run([engine_python, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def engines_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("engines")


def _server(runner, versions, engines_dir):
    server = JobServer(runner, beam_version=versions["beam_version"],
                       flink_version=versions["flink_version"] if runner == "flink" else None,
                       log_path=str(engines_dir / f"{runner}-job-server.log"))
    _LOGS.append((server.what, server.log_path))
    return server


@pytest.fixture(scope="session")
def flink_server(engine_versions, engines_dir):
    with _server("flink", engine_versions, engines_dir) as server:
        yield server


@pytest.fixture(scope="session")
def spark_server(engine_versions, engines_dir):
    with _server("spark", engine_versions, engines_dir) as server:
        yield server


@pytest.fixture(scope="session")
def worker_pool(engine_python, engines_dir):
    """Beam's worker pool in the engines environment; its workers import `scenarios` from here."""
    pool = WorkerPool(engine_python, env={"PYTHONPATH": HERE, "JAX_PLATFORMS": "cpu"},
                      log_path=str(engines_dir / "worker-pool.log"))
    _LOGS.append((pool.what, pool.log_path))
    with pool:
        yield pool


def run_driver(engine_python, engines_dir, name: str, flags: list[str], jobs=JOBS) -> dict:
    """Runs ``jobs`` with ``flags`` in one driver process; returns ``{"out": dir, "results": ...}``."""
    out = engines_dir / name
    out.mkdir()
    spec = {"jobs": list(jobs), "out": str(out), "data": str(engines_dir / "data"), "options": flags}
    (out / "spec.json").write_text(json.dumps(spec))
    log = out / "driver.log"
    with open(log, "w") as f:
        code = subprocess.run([engine_python, os.path.join(HERE, "driver.py"), str(out / "spec.json")],
                              stdout=f, stderr=subprocess.STDOUT, cwd=HERE,
                              env={**os.environ, "PYTHONPATH": HERE, "JAX_PLATFORMS": "cpu"}).returncode
    assert code == 0, f"driver {name} exited with status {code}; {log}:\n{tail(str(log), 60)}"
    results = json.loads((out / "results.json").read_text())
    return {"name": name, "out": str(out), "results": results, "log": str(log)}


def _external(pool, run) -> dict:
    """``run()``'s result, with ``"workers"``: the ids of the SDK worker processes the pool started
    for it (the pool is shared by the runs; its log lists every worker it starts)."""
    before = started_workers(pool.log_path)
    result = run()
    return {**result, "workers": started_workers(pool.log_path) - before}


@pytest.fixture(scope="session")
def reference(engine_python, engines_dir):
    """The jobs on the DirectRunner in the driver's process (the shards engines must equal)."""
    return run_driver(engine_python, engines_dir, "direct", options.in_process())


@pytest.fixture(scope="session")
def flink_loopback(engine_python, engines_dir, flink_server, reference):
    return run_driver(engine_python, engines_dir, "flink-loopback",
                      options.flink_local(flink_server.endpoint, parallelism=2, environment="LOOPBACK"),
                      LOOPBACK_JOBS)


@pytest.fixture(scope="session")
def flink_external(engine_python, engines_dir, flink_server, worker_pool, reference):
    return _external(worker_pool, lambda: run_driver(
        engine_python, engines_dir, "flink-external",
        options.flink_local(flink_server.endpoint, parallelism=2, environment="EXTERNAL",
                            worker_pool=worker_pool.endpoint)))


@pytest.fixture(scope="session")
def spark_loopback(engine_python, engines_dir, spark_server, reference):
    return run_driver(engine_python, engines_dir, "spark-loopback",
                      options.spark_local(spark_server.endpoint, environment="LOOPBACK"), LOOPBACK_JOBS)


@pytest.fixture(scope="session")
def spark_external(engine_python, engines_dir, spark_server, worker_pool, reference):
    return _external(worker_pool, lambda: run_driver(
        engine_python, engines_dir, "spark-external",
        options.spark_local(spark_server.endpoint, environment="EXTERNAL", worker_pool=worker_pool.endpoint)))
