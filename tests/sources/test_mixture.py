"""`Mixture`: weights, epochs and exhaustion, determinism, host sharding, exact and elastic resume."""

import doctest
import pickle

import flax.nnx as nnx
import numpy as np
import pytest

from datarax_beam import from_source
from datarax_beam.core.data_source import EpochLimitError
from datarax_beam.shards.writer import write_shardset
from datarax_beam.sources import (
    ArrayRecordSourceConfig,
    ArrayRecordSourceModule,
    MemorySource,
    MemorySourceConfig,
    Mixture,
)
from datarax_beam.sources import mixture as mixture_module
from datarax_beam.testing import assert_restores_at_every_step, assert_resumes_on_other_host_counts

SIZES = (30, 12)  # ids 0..29 in set a, 1000..1011 in set b


def _columns(j):
    n = SIZES[j]
    ids = np.arange(n, dtype=np.int64) + 1000 * j
    return {"id": ids, "v": np.stack([ids, -ids], axis=1).astype(np.float32),
            "t": np.array([f"s{j}-{i}" for i in range(n)], dtype=object)}


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    dirs = []
    for j in range(2):
        dirs.append(str(root / f"set{j}"))
        write_shardset(dirs[-1], _columns(j), num_shards=2)
    return dirs


def _readers(sets, shuffle=True):
    return [ArrayRecordSourceModule(d, ArrayRecordSourceConfig(shuffle=shuffle, seed=j))
            for j, d in enumerate(sets)]


def _ids(x):
    if hasattr(x, "metadata"):
        return [int(x.data["id"])]
    return np.asarray(x["id"]).tolist()


def test_docstring_example_runs():
    assert doctest.testmod(mixture_module).failed == 0


def test_first_exhausted_reads_the_scarcest_source_once_per_epoch(sets):
    m = Mixture(_readers(sets), [0.5, 0.5], seed=3)
    assert m.counts == (12, 12) and m.epoch_size(0) == 24
    epochs = [np.asarray(m.get_batch(m.epoch_order(e))["id"]) for e in range(3)]
    for ids in epochs:
        assert (ids >= 1000).sum() == 12 and sorted(ids[ids >= 1000]) == list(range(1000, 1012))
    # set a is read on, where the previous epoch stopped: 30 records over 2.5 epochs
    a = np.concatenate([ids[ids < 1000] for ids in epochs])
    order_a = np.concatenate([_readers(sets)[0].epoch_order(q) for q in range(2)])
    assert a.tolist() == order_a[:36].tolist()


def test_repeat_until_a_total(sets):
    m = Mixture(_readers(sets), [1, 3], exhaustion="repeat", num_records=40, seed=0)
    assert m.counts == (10, 30) and m.epoch_size(7) == 40
    ids = np.asarray(m.get_batch(m.epoch_order(0))["id"])
    b = ids[ids >= 1000]
    assert len(b) == 30 and sorted(b[:12]) == list(range(1000, 1012))  # b's epoch 0, then its epoch 1
    default = Mixture(_readers(sets), [1, 1], exhaustion="repeat")
    assert default.counts == (30, 30)  # every source read whole at least once per epoch


def test_weights_hold_exactly_and_seed_none_spreads_evenly(sets):
    m = Mixture(_readers(sets), [2, 1], seed=None)
    ids = np.asarray(m.get_batch(m.epoch_order(0))["id"])
    assert m.counts == (24, 12)
    b = np.cumsum(ids >= 1000)
    assert np.all(np.abs(b - np.arange(1, len(ids) + 1) / 3) <= 1)  # every prefix in proportion


def test_order_is_deterministic_and_seeded(sets):
    a, b = Mixture(_readers(sets), [1, 1], seed=4), Mixture(_readers(sets), [1, 1], seed=4)
    np.testing.assert_array_equal(a.epoch_order(2), b.epoch_order(2))
    assert a.epoch_order(0).tolist() != a.epoch_order(1).tolist()
    assert a.epoch_order(0).tolist() != Mixture(_readers(sets), [1, 1], seed=5).epoch_order(0).tolist()


def test_values_and_dtypes_survive_and_match_memory_sources(sets):
    fast = Mixture(_readers(sets, shuffle=False), [1, 1], seed=1)
    memory = Mixture([MemorySource(MemorySourceConfig(), _columns(j)) for j in range(2)], [1, 1], seed=1)
    assert fast._parts.raw is not None and memory._parts.raw is None
    order = fast.epoch_order(0)
    x, y = fast.get_batch(order), memory.get_batch(order)
    assert x["id"].dtype == np.int64 and x["v"].dtype == np.float32 and x["t"].dtype == object
    for k in ("id", "v"):
        np.testing.assert_array_equal(x[k], y[k])
    assert list(x["t"]) == list(y["t"]) and x["t"][0].startswith("s")
    np.testing.assert_array_equal(x["v"][:, 0], x["id"])


@pytest.mark.parametrize("exhaustion", ["first", "repeat"])
def test_pipeline_restores_at_every_step(sets, exhaustion):
    def make():
        return from_source(Mixture(_readers(sets), [1, 2], seed=0, exhaustion=exhaustion), batch_size=5)

    assert assert_restores_at_every_step(make, epochs=2) == {"first": 8, "repeat": 36}[exhaustion]  # 18 or 90 records per epoch


@pytest.mark.parametrize("before, after", [(1, 3), (4, 2), (2, 4), (3, 1)])
@pytest.mark.parametrize("exhaustion", ["first", "repeat"])
def test_elastic_resume(sets, before, after, exhaustion):
    def make(i, k):
        m = Mixture(_readers(sets), [1, 1], seed=2, exhaustion=exhaustion, shard_index=i, shard_count=k)
        return from_source(m, batch_size=2)

    got = assert_resumes_on_other_host_counts(make, _ids, before=before, after=after, steps=2, epochs=2)
    assert len(got) == 2 * make(0, 1).source.epoch_size(0)


def test_direct_iteration_and_host_sharding(sets):
    parts = [[e.data["id"].item() for e in Mixture(_readers(sets), [1, 1], shard_index=i, shard_count=3)]
             for i in range(3)]
    flat = sorted(x for p in parts for x in p)
    assert len(flat) == 24 and len(set(flat)) == 24
    assert [len(p) for p in parts] == [8, 8, 8]


def test_num_epochs_and_state(sets):
    m = Mixture(_readers(sets), [1, 1], num_epochs=1)
    p = from_source(m, batch_size=10)
    assert len(list(p)) == 3
    with pytest.raises(EpochLimitError, match="num_epochs=1"):
        list(p)
    state = m.get_state()
    assert set(state) == {"epoch", "position", "fingerprint"} and state["epoch"] == 1
    assert set(nnx.to_pure_dict(nnx.state(m))) == {"epoch", "position", "data_fingerprint"}


def test_state_from_another_mixture_is_refused(sets):
    saved = Mixture(_readers(sets), [1, 1], seed=0).get_state()
    for other in (Mixture(_readers(sets), [1, 2], seed=0), Mixture(_readers(sets), [1, 1], seed=1),
                  Mixture(_readers(sets, shuffle=False), [1, 1], seed=0),
                  Mixture(_readers(sets), [1, 1], seed=0, exhaustion="repeat")):
        with pytest.raises(ValueError, match="saved from other sources, weights, seed or exhaustion"):
            other.set_state(saved)
    m = Mixture(_readers(sets), [1, 1])
    with pytest.raises(ValueError, match="`position` 25 is out of range for an epoch of 24"):
        m.set_state({**m.get_state(), "position": 25})
    nnx.update(m, nnx.state(Mixture(_readers(sets), [3, 1])))
    with pytest.raises(ValueError, match="saved from other sources"):
        next(m)


@pytest.mark.parametrize("args, error, message", [
    (dict(weights=[1]), ValueError, r"`weights` has 1 entries for 2 sources"),
    (dict(weights=[1, -1]), ValueError, r"`weights` must be positive and finite, got \[1.0, -1.0\]"),
    (dict(weights=["a", 1]), TypeError, r"`weights` must be a sequence of numbers"),
    (dict(exhaustion="last"), ValueError, r"`exhaustion` must be one of \('first', 'repeat'\), got 'last'"),
    (dict(num_records=10), ValueError, r"`num_records` sets the epoch length with exhaustion='repeat' only"),
    (dict(seed=1.5), TypeError, r"`seed` must be an int or None, got 1.5"),
    (dict(shard_index=2, shard_count=2), ValueError, r"`shard_index` 2 must be in \[0, 2\)"),
])
def test_bad_arguments(sets, args, error, message):
    kw = {"weights": [1, 1], **args}
    with pytest.raises(error, match=message):
        Mixture(_readers(sets), **kw)


def test_bad_sources(sets):
    from datarax_beam.testing import IteratorSource

    with pytest.raises(TypeError, match=r"`sources\[1\]` must be a random-access source .* got IteratorSource"):
        Mixture([_readers(sets)[0], IteratorSource({"id": [1]})], [1, 1])
    with pytest.raises(ValueError, match=r"`sources\[0\]` \('memory'\) is empty"):
        Mixture([MemorySource(data=[]), _readers(sets)[0]], [1, 1])
    with pytest.raises(TypeError, match="non-empty list"):
        Mixture([], [])
    other = MemorySource(data={"id": np.arange(5, dtype=np.int32)})
    mixed = Mixture([MemorySource(data={"id": np.arange(5, dtype=np.int64)}), other], [1, 1])
    with pytest.raises(ValueError, match=r"feature 'id' is int64\[\] in source 'memory' but int32\[\] in 'memory'"):
        mixed.get_batch(mixed.epoch_order(0))
    renamed = Mixture([MemorySource(data={"x": np.arange(5)}), other], [1, 1])
    with pytest.raises(ValueError, match=r"different features: \['x'\] vs \['id'\]"):
        renamed.get_batch(renamed.epoch_order(0))


def test_pickles_for_beam_workers(sets):
    m = Mixture(_readers(sets), [1, 1], seed=0)
    order = m.epoch_order(0)
    clone = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(clone.get_batch(order)["id"], m.get_batch(order)["id"])
    assert clone.get_state() == m.get_state()


def test_a_mixture_materializes_like_it_reads_online(tmp_path, sets):
    from datarax_beam.runners import materialize

    def make():
        return from_source(Mixture(_readers(sets), [1, 1], seed=0), batch_size=8)

    online = [x for b in make() for x in np.asarray(b["id"]).tolist()]
    written = materialize(make(), str(tmp_path / "out"), num_shards=2)
    back = ArrayRecordSourceModule(str(tmp_path / "out"))
    assert written.num_records == 24 and back.get_batch(np.arange(24))["id"].tolist() == online
