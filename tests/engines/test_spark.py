"""`materialize` on Apache Spark (``local[2]``) through Beam's portable Spark job server: the same
shard bytes, shardset.json and dead letters as the in-process DirectRunner."""

from __future__ import annotations

import pytest

from .compare import JOBS, LOOPBACK_JOBS, assert_same_output

pytestmark = pytest.mark.engines


@pytest.mark.parametrize("job", LOOPBACK_JOBS)
def test_loopback_workers_commit_what_the_direct_runner_commits(spark_loopback, reference, job):
    assert_same_output(spark_loopback, reference, job)


@pytest.mark.parametrize("job", JOBS)
def test_external_worker_processes_commit_what_the_direct_runner_commits(spark_external, reference, job):
    assert_same_output(spark_external, reference, job)


def test_external_workers_are_separate_processes(spark_external):
    # SDK worker processes started by the pool (one per executor thread of local[2])
    assert len(spark_external["workers"]) >= 2, spark_external["workers"]
