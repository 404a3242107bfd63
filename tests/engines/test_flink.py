"""`materialize` on Apache Flink (an embedded cluster, parallelism 2) through Beam's portable Flink
job server: the same shard bytes, shardset.json and dead letters as the in-process DirectRunner."""

from __future__ import annotations

import pytest

from .compare import JOBS, LOOPBACK_JOBS, assert_same_output

pytestmark = pytest.mark.engines


@pytest.mark.parametrize("job", LOOPBACK_JOBS)
def test_loopback_workers_commit_what_the_direct_runner_commits(flink_loopback, reference, job):
    assert_same_output(flink_loopback, reference, job)


@pytest.mark.parametrize("job", JOBS)
def test_external_worker_processes_commit_what_the_direct_runner_commits(flink_external, reference, job):
    assert_same_output(flink_external, reference, job)


def test_external_workers_are_separate_processes(flink_external):
    # SDK worker processes started by the pool (one per Flink slot), none of them the submitting process
    assert len(flink_external["workers"]) >= 2, flink_external["workers"]
