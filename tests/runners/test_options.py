"""Runner option helpers, the explicit runner choice, and the lazy `materialize` export."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

from datarax_beam import logs
from datarax_beam.runners import build_options, make_runner, options
from datarax_beam.runners.options import in_process_single_worker
from datarax_beam.runners.quiet import wants_quiet


def test_default_is_direct_in_process_on_fnapi_runner_not_prism():
    opts = build_options(None)
    assert opts.get_all_options()["runner"] == "DirectRunner"
    assert in_process_single_worker(opts)
    assert isinstance(make_runner(opts), FnApiRunner)
    assert isinstance(make_runner(build_options(["--some_flag=1"])), FnApiRunner)


def test_multi_process_and_portable_flags():
    mp = build_options(options.multi_process(2)).get_all_options()
    assert (mp["direct_running_mode"], mp["direct_num_workers"]) == ("multi_processing", 2)
    assert not in_process_single_worker(build_options(options.multi_process(2)))
    port = build_options(options.portable())
    assert make_runner(port) is None
    assert port.get_all_options()["job_endpoint"] == "embed"
    assert port.get_all_options()["environment_type"] == "LOOPBACK"
    with pytest.raises(ValueError, match="workers"):
        options.multi_process(0)
    with pytest.raises(ValueError, match="multi_processing"):
        make_runner(PipelineOptions(["--runner=DirectRunner", "--direct_num_workers=2"]))
    with pytest.raises(TypeError, match="list of Beam flags"):
        build_options("--runner=DirectRunner")


def test_cluster_helpers():
    df = options.dataflow("proj", "europe-west4", "gs://b/tmp")
    assert "--runner=DataflowRunner" in df and "--setup_file=./setup.py" in df
    assert "--flink_master=host:8081" in options.flink("host:8081")
    assert "--spark_master_url=spark://h:7077" in options.spark("spark://h:7077", setup_file="./setup.py")


def test_import_does_not_pull_in_beam():
    code = ("import sys, datarax_beam, datarax_beam.sources; "
            "assert 'apache_beam' not in sys.modules, 'beam imported'; "
            "m = datarax_beam.materialize; assert 'apache_beam' not in sys.modules; print(m.__name__)")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"}, cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "materialize"


def test_worker_processes_log_warnings_only_unless_asked():
    assert build_options(options.multi_process(2)).get_all_options()["default_sdk_harness_log_level"] == "WARN"
    asked = build_options(options.multi_process(2) + ["--default_sdk_harness_log_level=INFO"])
    assert asked.get_all_options()["default_sdk_harness_log_level"] == "INFO"


def test_worker_log_levels_are_names_the_java_job_servers_read():
    # Flink's and Spark's job servers parse --default_sdk_harness_log_level as Java's LogLevel
    # (OFF, ERROR, WARN, INFO, DEBUG, TRACE) and fail the job on WARNING or 20 (seen on Flink)
    assert [options.harness_log_level(v) for v in ("WARNING", "warn", 30, "INFO", 10, "ERROR")] == [
        "WARN", "WARN", "WARN", "INFO", "DEBUG", "ERROR"]
    assert options.harness_log_level("CRITICAL") == "50" and options.harness_log_level(25) == "25"
    with pytest.raises(ValueError, match="Unknown `log_level` 'LOUD'"):
        options.harness_log_level("LOUD")
    assert logs.check_level("WARN") == logging.WARNING  # so the default keeps local workers quiet
    assert wants_quiet(build_options(options.multi_process(2)))


def test_local_engine_helpers():
    flink = options.flink_local("localhost:8099")
    assert flink == ["--runner=FlinkRunner", "--flink_master=[local]", "--parallelism=2",
                     "--environment_type=LOOPBACK", "--sdk_worker_parallelism=2",
                     "--environment_cache_millis=60000", "--job_endpoint=localhost:8099"]
    ext = options.flink_local("localhost:8099", parallelism=3, environment="EXTERNAL", worker_pool="localhost:5000")
    assert "--environment_type=EXTERNAL" in ext and "--environment_config=localhost:5000" in ext
    assert "--parallelism=3" in ext and "--sdk_worker_parallelism=3" in ext
    assert not any(f.startswith("--job_endpoint") for f in options.flink_local())  # Beam starts its own
    spark = options.spark_local("localhost:8099", environment="EXTERNAL", worker_pool="localhost:5000")
    assert spark[:2] == ["--runner=SparkRunner", "--spark_master_url=local[2]"]
    assert "--environment_config=localhost:5000" in spark and "--job_endpoint=localhost:8099" in spark
    assert options.spark_local(master="local[4]", extra_flag="1")[-1] == "--extra_flag=1"
    opts = build_options(flink)
    assert make_runner(opts) is None and not in_process_single_worker(opts)  # staged, not shared


@pytest.mark.parametrize("kwargs,match", [
    ({"environment": "DOCKER"}, "`environment` must be one of"),
    ({"environment": "EXTERNAL"}, "needs `worker_pool`"),
    ({"environment": "EXTERNAL", "worker_pool": 5000}, "needs `worker_pool`.*5000"),
    ({"worker_pool": "localhost:5000"}, "only used with environment='EXTERNAL'"),
    ({"parallelism": 0}, "`parallelism` must be an int >= 1, got 0"),
    ({"parallelism": True}, "`parallelism` must be an int >= 1, got True"),
])
def test_local_engine_helpers_name_the_bad_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        options.flink_local("localhost:8099", **kwargs)
    with pytest.raises(ValueError, match=match):
        options.spark_local("localhost:8099", **kwargs)


def test_worker_processes_on_one_machine_share_its_compression_threads(monkeypatch):
    from datarax_beam.runners.options import (
        build_options,
        local_worker_processes,
        shared_writer_threads,
    )

    monkeypatch.setattr("datarax_beam.runners.options._available_cores", lambda: list(range(16)))
    assert [shared_writer_threads(build_options(options.multi_process(w))) for w in (1, 2, 8, 16, 32)] == [
        4, 4, 2, 1, 1]
    # one thread per core of a worker's set: one core each, compressed on the writing thread
    assert shared_writer_threads(build_options(options.multi_process(1, cores_per_worker=1))) == 1
    assert local_worker_processes(build_options(options.multi_process(2)))
    assert not local_worker_processes(build_options(options.in_process()))
