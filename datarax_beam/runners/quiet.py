"""DirectRunner's FnApiRunner with quiet worker processes (see `datarax_beam.logs`).

With ``--direct_running_mode=multi_processing`` Beam starts each worker as
``python -m apache_beam.runners.worker.sdk_worker_main``; this runner starts
``python -m datarax_beam._beam_worker`` instead (the same worker, with its logging set up before
Beam's import can), and while the job runs the driver does not repeat the workers' log lines
(they print them on the same stderr). At log level INFO or DEBUG
(``--default_sdk_harness_log_level``, set by ``materialize(..., log_level=...)``) nothing changes:
Beam's own workers run and every line is shown.

Quiet workers are also fast to start and sized to the machine: each is forked from a preloaded
zygote (`datarax_beam.runners.zygote`, unless ``DATARAX_BEAM_ZYGOTE=0``) and confined to its
share of the cores (`datarax_beam.runners.options.worker_core_sets`).
"""

from __future__ import annotations

import shlex
import sys

from apache_beam.options.pipeline_options import DirectOptions, WorkerOptions
from apache_beam.portability import python_urns
from apache_beam.runners.portability.fn_api_runner import fn_runner

from datarax_beam import logs
from datarax_beam._beam_worker import CORES, sample_states_often
from datarax_beam.runners import zygote
from datarax_beam.runners.options import LocalWorkerOptions, worker_core_sets

BEAM_WORKER = b" -m apache_beam.runners.worker.sdk_worker_main"
QUIET_WORKER = "datarax_beam._beam_worker"


def quiet_workers(pipeline_proto, options=None) -> int:
    """Points Beam's subprocess worker environments at `QUIET_WORKER` (forked from the zygote
    where it is enabled), each worker confined to its core set; returns how many."""
    changed = 0
    prefix = f"{CORES}={shlex.quote(_core_sets(options))} " if options is not None else ""
    for env in pipeline_proto.components.environments.values():
        if env.urn == python_urns.SUBPROCESS_SDK and env.payload.endswith(BEAM_WORKER):
            worker = zygote.command() if zygote.enabled() else f"{shlex.quote(sys.executable)} -m {QUIET_WORKER}"
            env.payload = (prefix + worker).encode()
            changed += 1
    return changed


def _core_sets(options) -> str:
    """``DATARAX_BEAM_WORKER_CORES`` for the job's ``--direct_num_workers`` workers."""
    workers = options.view_as(DirectOptions).direct_num_workers or 1
    sets = worker_core_sets(workers, options.view_as(LocalWorkerOptions).local_worker_cores)
    return ";".join(",".join(str(c) for c in s) for s in sets)


def wants_quiet(options) -> bool:
    """Whether the job's ``--default_sdk_harness_log_level`` (else `logs.get_level`) is
    WARNING or above."""
    level = options.view_as(WorkerOptions).default_sdk_harness_log_level
    try:
        return logs.is_quiet(level) if level else logs.is_quiet()
    except (TypeError, ValueError):  # an unknown level: Beam's own worker reports it
        return False


class FnApiRunner(fn_runner.FnApiRunner):
    """`fn_runner.FnApiRunner` whose worker processes start quietly unless the job's
    ``--default_sdk_harness_log_level`` is INFO or DEBUG. Bundles it runs in this process end
    without waiting for Beam's state sampler (`sample_states_often`; so do its workers')."""

    def run_via_runner_api(self, pipeline_proto, options):
        sample_states_often()  # (for an in-process run; a worker process does it as it starts)
        if not (wants_quiet(options) and quiet_workers(pipeline_proto, options)):
            return super().run_via_runner_api(pipeline_proto, options)
        with logs.worker_copies_dropped():
            return super().run_via_runner_api(pipeline_proto, options)
