"""Beam pipeline options for the runners this library is tested and documented with.

Each helper returns a list of Beam argv flags; pass it (plus your own flags) as
``materialize(..., options=...)`` or to `build_options`.

* `in_process` — DirectRunner's FnApiRunner in this process (the default).
* `multi_process` — DirectRunner with ``workers`` SDK worker processes.
* `portable` — Beam's PortableRunner with its embedded job service and a LOOPBACK environment:
  the same serialized pipeline that Flink, Spark and Dataflow receive.
* `flink_local`, `spark_local` — Apache Flink (an embedded cluster) or Spark (``local[N]``) on
  this machine through Beam's portable job servers (`datarax_beam.runners.jobserver`), with the
  Python workers looping back into this process or in an external worker pool (separate
  processes, as on a cluster).
* `dataflow`, `flink`, `spark` — documented cluster runners; ``--setup_file`` ships this
  package (``setup.py`` at the repository root) to the workers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from datarax_beam import logs

DIRECT = "DirectRunner"


def in_process() -> list[str]:
    """DirectRunner, one worker, in this process."""
    return [f"--runner={DIRECT}", "--direct_running_mode=in_memory", "--direct_num_workers=1"]


def multi_process(workers: int = 2, *, cores_per_worker: int | None = None) -> list[str]:
    """DirectRunner with ``workers`` SDK worker processes (each builds its own kernel).

    Each worker is confined to its share of this machine's cores (`worker_core_sets`): an
    equal share by default, or ``cores_per_worker`` cores each (e.g. 1 to measure scaling with
    one core per worker). The workers are forked from a preloaded zygote
    (`datarax_beam.runners.zygote`), so they start without importing Beam, JAX and Flax again.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"`workers` must be an int >= 1, got {workers!r}")
    flags = [f"--runner={DIRECT}", "--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    if cores_per_worker is not None:
        _check_cores(cores_per_worker)
        flags.append(f"--local_worker_cores={cores_per_worker}")
    return flags


class LocalWorkerOptions(PipelineOptions):
    """``--local_worker_cores``: cores each local worker process may use (see `multi_process`)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--local_worker_cores", type=int, default=None,
                            help="cores each DirectRunner multi_processing worker may use "
                                 "(default: an equal share of this machine's)")


def _check_cores(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`cores_per_worker` (--local_worker_cores) must be an int >= 1, got {value!r}")
    return value


def worker_core_sets(workers: int, cores_per_worker: int | None = None,
                     cores: Sequence[int] | None = None) -> list[list[int]]:
    """The core set of each of ``workers`` local worker processes, from ``cores`` (default:
    those this process may run on).

    By default each worker gets an equal share, at least one core: ``len(cores) // workers``
    cores, contiguous (a share of a 16-core machine keeps its caches); with more workers than
    cores they share cores round-robin. ``cores_per_worker`` fixes the size of every set.

    Example:
      >>> worker_core_sets(2, cores=[0, 1, 2, 3])
      [[0, 1], [2, 3]]
      >>> worker_core_sets(3, cores=[0, 1]), worker_core_sets(1, 1, cores=[0, 1])
      ([[0], [1], [0]], [[0]])
    """
    pool = sorted(cores if cores is not None else _available_cores())
    if not pool:
        raise ValueError("No cores to share among the workers")
    each = _check_cores(cores_per_worker) if cores_per_worker is not None else max(1, len(pool) // workers)
    each = min(each, len(pool))
    return [[pool[(k * each + j) % len(pool)] for j in range(each)] for k in range(workers)]


def _available_cores() -> list[int]:
    import os

    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def portable() -> list[str]:
    """PortableRunner with the embedded job service; workers loop back into this process."""
    return ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"]


def dataflow(project: str, region: str, temp_location: str, *, setup_file: str = "./setup.py",
             **extra: str) -> list[str]:
    """Google Cloud Dataflow. ``temp_location`` is a gs:// path; ``setup_file`` installs us."""
    flags = ["--runner=DataflowRunner", f"--project={project}", f"--region={region}",
             f"--temp_location={temp_location}", f"--setup_file={setup_file}"]
    return flags + [f"--{k}={v}" for k, v in extra.items()]


def flink(flink_master: str = "localhost:8081", *, environment_type: str = "LOOPBACK",
          setup_file: str | None = None, **extra: str) -> list[str]:
    """Apache Flink via Beam's Flink job server (``--flink_master`` is the cluster's REST address).

    LOOPBACK runs the Python workers in the submitting process (a local cluster); use
    ``environment_type="DOCKER"`` or ``"PROCESS"`` plus ``setup_file`` for a real cluster.
    """
    flags = ["--runner=FlinkRunner", f"--flink_master={flink_master}", f"--environment_type={environment_type}"]
    if setup_file:
        flags.append(f"--setup_file={setup_file}")
    return flags + [f"--{k}={v}" for k, v in extra.items()]


def spark(spark_master_url: str = "local[2]", *, environment_type: str = "LOOPBACK",
          setup_file: str | None = None, **extra: str) -> list[str]:
    """Apache Spark via Beam's Spark job server (``--spark_master_url``, e.g. spark://host:7077)."""
    flags = ["--runner=SparkRunner", f"--spark_master_url={spark_master_url}",
             f"--environment_type={environment_type}"]
    if setup_file:
        flags.append(f"--setup_file={setup_file}")
    return flags + [f"--{k}={v}" for k, v in extra.items()]


ENVIRONMENTS = ("LOOPBACK", "EXTERNAL")
#: How long a local engine keeps an idle SDK worker for the job's next stage.
ENVIRONMENT_CACHE_MILLIS = 60_000


def _portable_workers(environment: str, worker_pool: str | None, parallelism: int) -> list[str]:
    """Flags of the Python worker environment of a portable runner on this machine."""
    if not isinstance(parallelism, int) or isinstance(parallelism, bool) or parallelism < 1:
        raise ValueError(f"`parallelism` must be an int >= 1, got {parallelism!r}")
    if environment not in ENVIRONMENTS:
        raise ValueError(f"`environment` must be one of {ENVIRONMENTS}, got {environment!r}")
    if environment == "EXTERNAL":
        if not isinstance(worker_pool, str) or ":" not in worker_pool:
            raise ValueError(
                f"environment='EXTERNAL' needs `worker_pool`, the host:port of a running Beam worker "
                f"pool (jobserver.WorkerPool().endpoint), got {worker_pool!r}")
        env = ["--environment_type=EXTERNAL", f"--environment_config={worker_pool}"]
    else:
        if worker_pool is not None:
            raise ValueError(f"`worker_pool` is only used with environment='EXTERNAL', got {worker_pool!r} "
                             f"with environment={environment!r}")
        env = ["--environment_type=LOOPBACK"]
    # one SDK worker per task slot / executor core, so `parallelism` workers run side by side; kept
    # between the job's stages instead of a new worker per stage (measured on Spark, EXTERNAL: 24
    # worker processes and 183 s for a 300-record job without, 2 and 29 s with)
    return env + [f"--sdk_worker_parallelism={parallelism}",
                  f"--environment_cache_millis={ENVIRONMENT_CACHE_MILLIS}"]


def flink_local(job_endpoint: str | None = None, *, parallelism: int = 2, environment: str = "LOOPBACK",
                worker_pool: str | None = None, **extra: str) -> list[str]:
    """Apache Flink on an embedded cluster (``--flink_master=[local]``) with ``parallelism`` slots.

    Args:
      job_endpoint: a running Flink job server (``JobServer("flink").endpoint``). None: Beam starts
        one itself from its ``beam-runners-flink-*-job-server`` jar, which it downloads.
      parallelism: Flink's parallelism, and the number of Python SDK workers.
      environment: ``"LOOPBACK"`` (workers are threads of the submitting process) or
        ``"EXTERNAL"`` (workers are processes of the worker pool at ``worker_pool``).
      worker_pool: ``host:port`` of a Beam worker pool (``jobserver.WorkerPool().endpoint``).
      **extra: more ``--key=value`` flags.

    Example:
      >>> flink_local("localhost:8099")[:3]
      ['--runner=FlinkRunner', '--flink_master=[local]', '--parallelism=2']
    """
    flags = ["--runner=FlinkRunner", "--flink_master=[local]", f"--parallelism={parallelism}"]
    flags += _portable_workers(environment, worker_pool, parallelism)
    if job_endpoint is not None:
        flags.append(f"--job_endpoint={job_endpoint}")
    return flags + [f"--{k}={v}" for k, v in extra.items()]


def spark_local(job_endpoint: str | None = None, *, master: str = "local[2]", environment: str = "LOOPBACK",
                worker_pool: str | None = None, parallelism: int = 2, **extra: str) -> list[str]:
    """Apache Spark in local mode (``local[2]``: two executor threads) via Beam's Spark job server.

    Args:
      job_endpoint: a running Spark job server (``JobServer("spark").endpoint``, whose own
        ``master`` then decides where jobs run). None: Beam starts one from its
        ``beam-runners-spark-3-job-server`` jar, which it downloads, with ``--spark_master_url``.
      master: the Spark master URL.
      environment, worker_pool: as for `flink_local`.
      parallelism: the number of Python SDK workers.
      **extra: more ``--key=value`` flags.

    Example:
      >>> spark_local("localhost:8099")[:2]
      ['--runner=SparkRunner', '--spark_master_url=local[2]']
    """
    flags = ["--runner=SparkRunner", f"--spark_master_url={master}"]
    flags += _portable_workers(environment, worker_pool, parallelism)
    if job_endpoint is not None:
        flags.append(f"--job_endpoint={job_endpoint}")
    return flags + [f"--{k}={v}" for k, v in extra.items()]


#: Log level of SDK worker processes unless the flags say otherwise. "WARN", not "WARNING": the
#: Java job servers of Flink and Spark parse the option too and know only Java's level names
#: (DEBUG, TRACE, INFO, WARN, ERROR, OFF); Python reads it as ``logging.WARN``.
WORKER_LOG_LEVEL = "WARN"

_HARNESS_NAMES = {logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARN", logging.ERROR: "ERROR"}


def harness_log_level(value: str | int) -> str:
    """``--default_sdk_harness_log_level``'s value for a `datarax_beam.logs` level: a name that Python
    SDK workers and the Java job servers both read (``"WARNING"`` -> ``"WARN"``, ``20`` ->
    ``"INFO"``); other numbers stay numbers, which only Python workers read.

    Example:
      >>> harness_log_level("warning"), harness_log_level(10), harness_log_level(25)
      ('WARN', 'DEBUG', '25')
    """
    level = logs.check_level(value)
    return _HARNESS_NAMES.get(level, str(level))


def build_options(options: PipelineOptions | Sequence[str] | None = None) -> PipelineOptions:
    """`PipelineOptions` from flags, an existing object, or None (DirectRunner in-process)."""
    if options is None:
        return PipelineOptions(in_process())
    if isinstance(options, PipelineOptions):
        return options
    if isinstance(options, str) or not isinstance(options, Sequence):
        raise TypeError(
            f"`options` must be PipelineOptions or a list of Beam flags, got {type(options).__name__}"
        )
    flags = list(options)
    if not any(f.startswith("--runner") for f in flags):
        flags = in_process() + flags
    if not any(f.startswith("--default_sdk_harness_log_level") for f in flags):
        # Local worker processes otherwise print a dozen INFO lines each; ask for them with
        # --default_sdk_harness_log_level=INFO.
        flags.append(f"--default_sdk_harness_log_level={WORKER_LOG_LEVEL}")
    return PipelineOptions(flags)


def runner_name(options: PipelineOptions) -> str:
    return options.view_as(StandardOptions).runner or DIRECT


def in_process_single_worker(options: PipelineOptions) -> bool:
    """True when every worker of the job runs in this process, on one thread (DirectRunner
    ``in_memory``): memory sources are then shared by reference instead of staged."""
    direct = options.view_as(DirectOptions)
    return (runner_name(options) in (DIRECT, "direct") and direct.direct_running_mode == "in_memory"
            and (direct.direct_num_workers or 1) == 1)


def local_worker_processes(options: PipelineOptions) -> bool:
    """True when the job's workers are processes on this machine (DirectRunner
    ``multi_processing``): a memory source can then be staged in shared memory."""
    direct = options.view_as(DirectOptions)
    return runner_name(options) in (DIRECT, "direct") and direct.direct_running_mode == "multi_processing"


def shared_writer_threads(options: PipelineOptions) -> int:
    """Compression threads per writer when ``direct_num_workers`` worker processes share this
    machine: `datarax_beam.shards.compress.default_threads` of a worker's core set
    (`worker_core_sets`)."""
    from datarax_beam.shards.compress import default_threads

    workers = options.view_as(DirectOptions).direct_num_workers or 1
    cores = worker_core_sets(workers, options.view_as(LocalWorkerOptions).local_worker_cores)[0]
    return default_threads(len(cores))


def make_runner(options: PipelineOptions):
    """The runner object to use, chosen explicitly.

    For DirectRunner this is its FnApiRunner (what DirectRunner itself runs batch pipelines on),
    so Beam never tries to download and start the Prism runner first. Other runners: None (Beam
    resolves ``--runner``).
    """
    name = runner_name(options)
    if name not in (DIRECT, "direct"):
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    from datarax_beam.runners.quiet import FnApiRunner  # workers start without Beam's log noise

    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode == "in_memory" and (direct.direct_num_workers or 1) != 1:
        raise ValueError(
            f"--direct_num_workers={direct.direct_num_workers} needs "
            f"--direct_running_mode=multi_processing (or multi_threading), got in_memory"
        )
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return FnApiRunner(provision_info=info)
