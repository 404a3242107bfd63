"""Quiet DirectRunner workers: the command rewrite, when it applies, bundles that end without
waiting for Beam's state sampler, and a real 2-worker
``materialize`` whose stderr holds none of Beam's noise but still shows a user's warning."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import python_urns
from apache_beam.portability.api import beam_runner_api_pb2

from datarax_beam.runners import options as opts
from datarax_beam.runners.quiet import QUIET_WORKER, FnApiRunner, quiet_workers, wants_quiet

NOISE = ("apitools not found", "Discarding unparseable args", "Logging handler created",
         "No semi_persistent_directory", "Worker: severity")


def test_only_beams_subprocess_worker_command_is_replaced(monkeypatch):
    monkeypatch.setenv("DATARAX_BEAM_ZYGOTE", "0")  # (forked workers: tests/runners/test_zygote.py)
    proto = beam_runner_api_pb2.Pipeline()
    envs = proto.components.environments
    envs["beam"].urn = python_urns.SUBPROCESS_SDK
    envs["beam"].payload = f"{sys.executable} -m apache_beam.runners.worker.sdk_worker_main".encode()
    envs["custom"].urn = python_urns.SUBPROCESS_SDK
    envs["custom"].payload = b"/opt/my_worker --flag"
    envs["embedded"].urn = python_urns.EMBEDDED_PYTHON
    assert quiet_workers(proto) == 1
    assert envs["beam"].payload.decode().endswith(f" -m {QUIET_WORKER}")
    assert envs["custom"].payload == b"/opt/my_worker --flag" and envs["embedded"].payload == b""


def test_quiet_unless_the_job_asks_for_info_or_debug():
    assert wants_quiet(opts.build_options(opts.multi_process(2)))  # build_options: WARNING
    assert wants_quiet(PipelineOptions([]))
    assert not wants_quiet(PipelineOptions(["--default_sdk_harness_log_level=INFO"]))
    assert not wants_quiet(PipelineOptions(["--default_sdk_harness_log_level=10"]))
    assert not wants_quiet(PipelineOptions(["--default_sdk_harness_log_level=LOUD"]))
    assert isinstance(opts.make_runner(opts.build_options(opts.multi_process(2))), FnApiRunner)


_PERIODS: list[int] = []


def _record_period(x):
    from apache_beam.runners.worker import statesampler

    _PERIODS.append(statesampler.get_current_tracker().sampling_period_ms)
    return x


def test_in_process_bundles_do_not_wait_for_beams_state_sampler():
    # Beam's sampler sleeps up to 200 ms between samples and a bundle's end waits for it
    from apache_beam.runners.worker.statesampler import StateSampler

    from datarax_beam._beam_worker import STATE_SAMPLING_MS

    init = StateSampler.__init__
    saved = init.__defaults__
    try:
        init.__defaults__ = (200,)  # Beam's own, as in a fresh process
        flags = opts.build_options(opts.in_process())
        with beam.Pipeline(runner=opts.make_runner(flags), options=flags) as p:
            _ = p | beam.Create([1, 2]) | beam.Map(_record_period)
    finally:
        init.__defaults__ = saved
    assert _PERIODS and set(_PERIODS) == {STATE_SAMPLING_MS}


SCRIPT = '''
import logging, sys
import numpy as np
from datarax_beam import from_source, materialize
from datarax_beam.operators import ElementOperator, ElementOperatorConfig
from datarax_beam.runners import options
from datarax_beam.sources import MemorySource


def double(element, key):  # traced in each worker: its warning must still show
    logging.getLogger("user_op").warning("tracing double")
    return element.update_data({"x": element.data["x"] * 2})


data = {"x": np.arange(64, dtype=np.float32)}
pipeline = from_source(MemorySource(data=data), batch_size=16) >> ElementOperator(
    ElementOperatorConfig(), fn=double)
out = materialize(pipeline, sys.argv[1], num_shards=2, options=options.multi_process(2))
print(out.num_records)
'''


def test_two_worker_materialize_prints_no_beam_noise(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(SCRIPT))
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "out")], capture_output=True,
                          text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "64\n"
    noisy = [line for line in done.stderr.splitlines() if any(n in line for n in NOISE)]
    assert noisy == [], done.stderr
    lines = done.stderr.splitlines()
    assert lines and set(lines) == {"WARNING:user_op:tracing double"}, done.stderr
