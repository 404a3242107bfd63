"""Elastic resume: a checkpoint taken on N hosts resumes on M hosts, nothing skipped or repeated.

Hosts are simulated in one process with ``shard_index``/``shard_count``; each global step takes
the next ``hosts * batch`` records of the epoch's global order (`datarax_beam.core.hosts`).
"""

import numpy as np
import pytest

from datarax_beam import from_source
from datarax_beam.core.hosts import HostShard, host_steps
from datarax_beam.shards.writer import write_shardset
from datarax_beam.sources import ArrayRecordSourceConfig, ArrayRecordSourceModule
from datarax_beam.testing import assert_resumes_on_other_host_counts, run_hosts

N = 37  # prime: every host count leaves a partial last step
BATCH = 2


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("elastic") / "set")
    write_shardset(d, {"id": np.arange(N, dtype=np.int64)}, num_shards=3)
    return d


def _pipeline(d, shuffle, batch=BATCH, drop=False, **kw):
    def make(i, k):
        config = ArrayRecordSourceConfig(shuffle=shuffle, seed=5, shard_index=i, shard_count=k,
                                         read_threads=1, prefetch_batches=1, **kw)
        return from_source(ArrayRecordSourceModule(d, config), batch_size=batch).batch(batch, drop)
    return make


def _ids(batch):
    return np.asarray(batch["id"]).tolist()


def _steps_on(k, batch=BATCH):
    return len(host_steps(N, 0, batch, HostShard(0, k)))


@pytest.mark.parametrize("shuffle", [False, True], ids=["ordered", "shuffled"])
@pytest.mark.parametrize("where", ["start", "mid", "boundary"])
@pytest.mark.parametrize("before", [1, 2, 3, 4])
@pytest.mark.parametrize("after", [1, 2, 3, 4])
def test_checkpoint_on_n_hosts_resumes_on_m(shard_dir, before, after, where, shuffle):
    steps = {"start": 0, "mid": _steps_on(before) // 2, "boundary": None}[where]
    got = assert_resumes_on_other_host_counts(
        _pipeline(shard_dir, shuffle), _ids, before=before, after=after, steps=steps, epochs=2)
    epochs = 3 if where == "boundary" else 2
    assert len(got) == epochs * N
    for e in range(epochs):  # each epoch: every record exactly once
        assert sorted(got[e * N : (e + 1) * N]) == list(range(N))


@pytest.mark.parametrize("before, after", [(4, 2), (2, 3), (3, 1)])
def test_other_per_host_batch_after_resume(shard_dir, before, after):
    """The global batch may change too (e.g. 4 hosts x 2 -> 2 hosts x 4 keeps it at 8)."""
    first = [_pipeline(shard_dir, True)(i, before) for i in range(before)]
    taken = run_hosts(first, 3)
    state = first[0].get_state()
    second = [_pipeline(shard_dir, True, batch=4)(i, after) for i in range(after)]
    for p in second:
        p.set_state(state)
    rest = run_hosts(second)
    ids = [x for rows in (taken, rest) for row in rows for b in row if b is not None for x in _ids(b)]
    order = ArrayRecordSourceModule(shard_dir, ArrayRecordSourceConfig(shuffle=True, seed=5)).epoch_order(0)
    assert ids == order.tolist()


@pytest.mark.parametrize("before, after", [(4, 2), (3, 4), (2, 1)])
def test_record_by_record_iteration_resumes_elastically(shard_dir, before, after):
    def make(i, k):
        config = ArrayRecordSourceConfig(shuffle=True, seed=1, shard_index=i, shard_count=k)
        return ArrayRecordSourceModule(shard_dir, config)

    got = assert_resumes_on_other_host_counts(
        make, lambda e: [e.metadata.index], before=before, after=after, steps=5, epochs=2)
    assert sorted(got[:N]) == list(range(N))


@pytest.mark.parametrize("before, after", [(4, 2), (2, 4), (3, 2)])
def test_drop_remainder_resumes_and_every_host_steps_alike(shard_dir, before, after):
    def run(hosts):
        rows = run_hosts(hosts)
        assert all(b is not None for row in rows for b in row)  # same number of full batches
        assert {len(_ids(b)) for row in rows for b in row} == {BATCH}
        return [x for row in rows for b in row for x in _ids(b)]

    first = [_pipeline(shard_dir, True, drop=True)(i, before) for i in range(before)]
    taken = [x for row in run_hosts(first, 2) for b in row for x in _ids(b)]
    state = first[0].get_state()
    second = [_pipeline(shard_dir, True, drop=True)(i, after) for i in range(after)]
    for p in second:
        p.set_state(state)
    rest = run(second)
    order = ArrayRecordSourceModule(shard_dir, ArrayRecordSourceConfig(shuffle=True, seed=5)).epoch_order(0)
    seen = taken + rest
    assert seen == order[: len(seen)].tolist()  # a prefix of the order; the partial tail is dropped
    assert N - len(seen) < after * BATCH
    assert all(p.get_state()["epoch"] == 1 for p in second)


def test_every_host_holds_the_same_state_after_each_step(shard_dir):
    hosts = [_pipeline(shard_dir, True)(i, 3) for i in range(3)]
    iterators = [iter(h) for h in hosts]
    steps = len(host_steps(N, 0, BATCH, HostShard(2, 3)))  # host 2 has the last record: 7 steps
    assert steps == _steps_on(3) + 1
    for step in range(steps):
        for it in iterators:
            next(it, None)  # hosts 0 and 1 end their part after step 6
        states = {tuple(sorted(h.get_state().items())) for h in hosts}
        assert len(states) == 1, f"step {step}: {states}"
    assert hosts[0].get_state()["epoch"] == 1


def test_equal_records_per_host(shard_dir):
    counts = []
    for i in range(4):
        reader = ArrayRecordSourceModule(
            shard_dir, ArrayRecordSourceConfig(shard_index=i, shard_count=4, drop_remainder=True))
        counts.append(sum(len(_ids(b)) for b in from_source(reader, batch_size=3)))
        assert reader.epoch_length(3) == counts[-1]
    assert counts == [N // 4] * 4
