"""Faults: transient DoFn failures retried by the runner, jobs that die before the commit, and the
same on a non-local filesystem. The committed output always has every record exactly once and is
byte-identical to a fault-free run.

Which local runner retries: Beam's DirectRunner runs batch jobs on the FnApiRunner, which does
*not* retry a failed bundle — the job fails (and nothing is committed; re-running gives the right
result, tested below). The BundleBasedDirectRunner retries a failed bundle up to 4 times
(``TransformExecutor._MAX_RETRY_PER_BUNDLE``), as Dataflow/Flink/Spark do, so retry tests run on it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from datarax_beam.runners import materialize, options
from datarax_beam.shards import SHARDSET_FILE, load_shardset
from datarax_beam.transforms import commit as commit_mod
from datarax_beam.transforms import writer as writer_mod

from ..runners.conftest import PrefixFS
from .helpers import Fault, errors, pipeline, shard_bytes, source

RETRYING = ["--runner=BundleBasedDirectRunner"]
SHARDS = 2


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return materialize(pipeline(), str(tmp_path_factory.mktemp("clean") / "out"), num_shards=SHARDS)


def _same(path, clean):
    shardset = load_shardset(path)
    assert shard_bytes(path) == shard_bytes(clean.path)
    assert shardset.num_records == clean.num_records and shardset.num_failed == 0
    assert errors(path) == []
    # no temp files, no lock, no leftovers: exactly the set's files
    names = sorted(os.listdir(path.split("://")[-1]))
    assert names == sorted([SHARDSET_FILE] + [s.name for s in shardset.shards])


def test_operator_fault_is_retried_by_the_runner(tmp_path, clean):
    # record 70 raises on its first two evaluations: the batch and its per-record retry, so the
    # bundle fails (on_error="raise"); the runner's retry of the bundle then succeeds
    fault = Fault(tmp_path / "f", [70], times=2)
    out = str(tmp_path / "out")
    materialize(pipeline(fault), out, num_shards=SHARDS, options=RETRYING, on_error="raise")
    assert fault.seen(70) == 3  # failed twice, then passed once: the bundle ran again
    _same(out, clean)


@pytest.fixture
def writer_fault(tmp_path):
    fault = Fault(tmp_path / "w", [1], times=1)  # shard 1's first part dies after being written
    writer_mod._after_part_written = lambda info: fault.check(info.shard)
    yield fault
    writer_mod._after_part_written = None


def test_writer_fault_is_retried_by_the_runner(tmp_path, clean, writer_fault):
    out = str(tmp_path / "out")
    materialize(pipeline(), out, num_shards=SHARDS, options=RETRYING)
    assert writer_fault.seen(1) == 2  # the orphan part of the failed attempt was not committed
    _same(out, clean)


def test_writer_fault_without_retries_fails_then_rerun_is_correct(tmp_path, clean, writer_fault):
    out = str(tmp_path / "out")
    with pytest.raises(Exception, match="bad record 1"):  # FnApiRunner: no bundle retries
        materialize(pipeline(), out, num_shards=SHARDS)
    with pytest.raises(FileNotFoundError, match="not a committed shard set"):
        load_shardset(out)
    materialize(pipeline(), out, num_shards=SHARDS)  # same directory, now fault-free
    _same(out, clean)


@pytest.mark.parametrize("scheme", ["", PrefixFS.PREFIX], ids=["local", "testfs"])
def test_job_dying_before_commit_keeps_the_old_set(tmp_path, clean, scheme):
    out = scheme + str(tmp_path / "out")
    local = str(tmp_path / "out")
    old = materialize(pipeline(src=source(150)), out, num_shards=SHARDS)  # an older set, to be replaced
    old_bytes, old_files = shard_bytes(out), sorted(os.listdir(local))

    def die(shardset):
        # the new shards are in place under other names; the old set is still whole and readable
        assert load_shardset(out) == old and shard_bytes(out) == old_bytes
        raise SystemError("worker lost before the commit")

    commit_mod._before_marker = die
    try:
        with pytest.raises(Exception, match="worker lost"):
            materialize(pipeline(), out, num_shards=SHARDS, overwrite=True)
    finally:
        commit_mod._before_marker = None
    assert load_shardset(out) == old and shard_bytes(out) == old_bytes  # the failed rerun lost nothing
    assert sorted(os.listdir(local)) == old_files  # and left nothing behind
    materialize(pipeline(), out, num_shards=SHARDS, overwrite=True)
    _same(out, clean)


def test_process_killed_before_commit(tmp_path, clean):
    out = str(tmp_path / "out")
    script = textwrap.dedent(f"""
        import os, sys
        os.environ["JAX_PLATFORMS"] = "cpu"
        sys.path[:0] = [{os.getcwd()!r}, {os.path.dirname(__file__)!r}]
        from datarax_beam.runners import materialize
        from datarax_beam.transforms import commit
        import helpers
        commit._before_marker = lambda s: os._exit(9)  # SIGKILL-like: no cleanup runs
        materialize(helpers.pipeline(), {out!r}, num_shards={SHARDS})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr[-2000:]
    left = sorted(os.listdir(out))  # renamed shards, its temp directory and its lock
    assert ".datarax-lock" in left and any(n.startswith(".datarax-tmp-") for n in left)
    assert "data-00000-of-00002.array_record" in left and SHARDSET_FILE not in left
    with pytest.raises(FileNotFoundError, match="not a committed shard set"):
        load_shardset(out)
    # its process is gone: the lock is stale, and the next job cleans up after it
    materialize(pipeline(), out, num_shards=SHARDS)
    _same(out, clean)
    assert options.in_process()  # the default runner did all of the above
