"""ArrayRecordSourceModule: path forms, decoding, shuffle, host sharding, epochs, restore."""

import glob
import os
import pickle

import flax.nnx as nnx
import numpy as np
import pytest

from datarax_beam import OperatorNode, from_source
from datarax_beam.shards.writer import write_shard_file, write_shardset
from datarax_beam.sources import ArrayRecordSourceConfig, ArrayRecordSourceModule
from datarax_beam.sources.array_record import RAW_KEY, EpochLimitError, ReaderCursor
from datarax_beam.testing import assert_restores_at_every_step, assert_same, collect

N = 23


def _data(n=N):
    return {
        "image": np.arange(n * 6, dtype=np.float32).reshape(n, 2, 3),
        "label": np.arange(n, dtype=np.int32),
        "text": np.array([f"r{i}" for i in range(n)], dtype=object),
    }


@pytest.fixture
def shard_dir(tmp_path):
    d = str(tmp_path / "set")
    write_shardset(d, _data(), num_shards=3, fingerprint="test-set")
    return d


def _reader(path, **kw):
    return ArrayRecordSourceModule(path, ArrayRecordSourceConfig(**kw))


def _labels(batches):
    return [int(x) for b in batches for x in np.asarray(b["label"]).reshape(-1)]


def test_random_access_decodes_with_the_schema(shard_dir):
    reader = ArrayRecordSourceModule(shard_dir)
    assert len(reader) == N
    assert_same(reader.get_batch(np.arange(N)), _data())
    assert_same(reader.get_batch([22, 0, 8, 8]), {k: v[[22, 0, 8, 8]] for k, v in _data().items()})
    assert reader[-1]["text"] == "r22" and reader[7]["image"].shape == (2, 3)
    assert reader.get_batch(range(8, 16))["label"].tolist() == list(range(8, 16))  # range read
    with pytest.raises(IndexError, match="Record index 23 is out of range for a source of length 23"):
        reader.get_batch([1, 23])


def test_guide_example_raw_file(tmp_path):
    path = str(tmp_path / "file.array_record")
    records = [f"record {i}".encode() for i in range(70)]
    write_shard_file(path, records, "uncompressed")  # a plain file: records as they are (no tags)
    # -- as in the guide, with datarax -> datarax_beam
    source = ArrayRecordSourceModule(path)
    pipeline = from_source(source, batch_size=32)
    # --
    batches = list(pipeline)
    assert [len(b[RAW_KEY]) for b in batches] == [32, 32, 6]
    assert [r for b in batches for r in b[RAW_KEY]] == records


def test_path_forms_and_argument_orders(shard_dir):
    files = sorted(glob.glob(os.path.join(shard_dir, "*.array_record")))
    expected = ArrayRecordSourceModule(shard_dir).get_batch(np.arange(N))
    config = ArrayRecordSourceConfig(shard_index=0, shard_count=1)
    for form in (files, os.path.join(shard_dir, "data-*.array_record")):
        assert_same(ArrayRecordSourceModule(form).get_batch(np.arange(N)), expected)
        assert len(ArrayRecordSourceModule(config, form)) == N  # upstream order (config, paths)
    one = ArrayRecordSourceModule(files[1])  # a single file of a shard set still decodes
    assert one.get_batch([0])["label"].tolist() == [8]
    raw = _reader(shard_dir, decode=False)
    assert isinstance(raw[0][RAW_KEY], bytes)


def test_works_with_operators(shard_dir, double_op):
    def double(element, key):
        return element.update_data({"label": element.data["label"] * 2})

    from datarax_beam.operators import ElementOperator, ElementOperatorConfig

    op = ElementOperator(ElementOperatorConfig(stochastic=False), fn=double)
    pipeline = from_source(ArrayRecordSourceModule(shard_dir), batch_size=5) >> OperatorNode(op)
    assert _labels(pipeline) == [2 * i for i in range(N)]


def test_shuffle_is_a_permutation_per_epoch(shard_dir):
    reader = _reader(shard_dir, shuffle=True, seed=3, num_epochs=None)
    pipeline = from_source(reader, batch_size=4)
    epochs = [_labels(pipeline) for _ in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(N))
    assert epochs[0] != epochs[1] != epochs[2]
    again = from_source(_reader(shard_dir, shuffle=True, seed=3, num_epochs=None), batch_size=7)
    assert [_labels(again) for _ in range(3)] == epochs  # order is independent of batch size
    other = from_source(_reader(shard_dir, shuffle=True, seed=4), batch_size=4)
    assert _labels(other) != epochs[0]
    assert [e.data["label"].item() for e in _reader(shard_dir, shuffle=True, seed=3)] == epochs[0]


@pytest.mark.parametrize("drop_remainder", [False, True])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_host_shards_are_disjoint_and_cover(shard_dir, drop_remainder, batch_size):
    for epoch in range(2):
        parts = []
        for i in range(4):
            r = _reader(shard_dir, shuffle=True, shard_index=i, shard_count=4,
                        drop_remainder=drop_remainder)
            r.set_state({**r.get_state(), "epoch": epoch})
            pipeline = from_source(r, batch_size=batch_size)
            parts.append(_labels(pipeline))
            assert len(parts[-1]) == r.epoch_length(batch_size)
        flat = [x for p in parts for x in p]
        assert len(flat) == len(set(flat))
        if drop_remainder:
            assert {len(p) for p in parts} == {N // 4} and len(flat) == 4 * (N // 4)
        else:
            assert sorted(flat) == list(range(N))
        # each global step takes the next 4 * batch_size records of the global order
        order = _reader(shard_dir, shuffle=True).epoch_order(epoch).tolist()
        g = 4 * batch_size
        assert parts[1][:batch_size] == order[batch_size : 2 * batch_size]
        assert parts[3][:batch_size] == order[3 * batch_size : g]
        if not drop_remainder:  # a partial last step is split evenly: host i its i-th quarter
            r = N % g
            assert parts[2][-((3 * r // 4) - (2 * r // 4)):] == order[N - r + 2 * r // 4 : N - r + 3 * r // 4]


def test_host_shard_defaults_to_the_jax_process(shard_dir):
    reader = ArrayRecordSourceModule(shard_dir)
    assert (reader.shard_index, reader.shard_count) == (0, 1)


def test_num_epochs_bounds_every_driver(shard_dir):
    reader = _reader(shard_dir, num_epochs=2)
    pipeline = from_source(reader, batch_size=10)
    assert [len(_labels(pipeline)) for _ in range(2)] == [N, N]
    with pytest.raises(EpochLimitError, match="serves num_epochs=2 epoch.* epoch 2 was asked for"):
        iter(pipeline)
    direct = _reader(shard_dir, num_epochs=2)
    assert [len(list(direct)) for _ in range(2)] == [N, N]
    with pytest.raises(EpochLimitError, match="num_epochs=2"):
        list(direct)
    assert direct.get_state()["epoch"] == 2
    forever = from_source(_reader(shard_dir), batch_size=10)  # the default: unbounded
    assert [len(_labels(forever)) for _ in range(4)] == [N] * 4


def test_restores_directly_at_every_step(shard_dir):
    steps = assert_restores_at_every_step(
        lambda: _reader(shard_dir, shuffle=True, num_epochs=None, prefetch_batches=2), epochs=2
    )
    assert steps == 2 * N


@pytest.mark.parametrize("prefetch", [0, 3])
def test_restores_through_from_source_at_every_step(shard_dir, prefetch):
    def make():
        reader = _reader(shard_dir, shuffle=True, seed=1, num_epochs=None, shard_index=1,
                         shard_count=2, prefetch_batches=prefetch, read_threads=2)
        return from_source(reader, batch_size=3)

    assert assert_restores_at_every_step(make, epochs=2) == 2 * 4


def test_nnx_state_is_the_checkpoint(shard_dir):
    def make():
        return from_source(_reader(shard_dir, shuffle=True, num_epochs=None), batch_size=4)

    pipeline = make()
    it = iter(pipeline)
    for _ in range(3):
        next(it)
    saved = nnx.to_pure_dict(nnx.state(pipeline))
    rest = collect(it) + collect(pipeline)
    fresh = make()
    state = nnx.state(fresh)
    nnx.replace_by_pure_dict(state, saved)
    nnx.update(fresh, state)
    assert_same(collect(fresh) + collect(fresh), rest)
    reader = pipeline.source
    cursors = nnx.state(reader, ReaderCursor)
    assert set(nnx.to_pure_dict(cursors)) == {"epoch", "position", "data_fingerprint", "shuffle_id"}


def test_state_dict_is_small_ints(shard_dir):
    reader = _reader(shard_dir, num_epochs=None)
    it = iter(reader)
    for _ in range(5):
        next(it)
    state = reader.get_state()
    assert set(state) == {"epoch", "position", "fingerprint", "shuffle"}
    assert all(isinstance(v, int) and 0 <= v < 2**31 for v in state.values())
    assert state["position"] == 5
    assert ArrayRecordSourceModule(shard_dir).get_state()["fingerprint"] == state["fingerprint"]


def test_reads_back_equal_to_the_online_pipeline(tmp_path, memory_source, noise_op):
    """Write what the online pipeline yields; reading the shards back gives the same batches."""
    online = from_source(memory_source(20, shuffle=True), batch_size=6) >> OperatorNode(noise_op())
    batches = list(online)
    from datarax_beam.core import columns as cols

    d = str(tmp_path / "out")
    write_shardset(d, cols.concat([{k: np.asarray(v) for k, v in b.items()} for b in batches]),
                   num_shards=3)
    back = from_source(ArrayRecordSourceModule(d), batch_size=6)
    assert_same(collect(back), collect(batches))


def test_pickles_for_beam_workers(shard_dir):
    reader = _reader(shard_dir, shuffle=True)
    reader.get_batch([0, 20])  # opens files and the pool
    clone = pickle.loads(pickle.dumps(reader))
    assert_same(clone.get_batch(np.arange(N)), reader.get_batch(np.arange(N)))
    reader.close()
    assert reader.get_batch([3])["label"].tolist() == [3]  # reopens lazily


def test_materialized_shard_set_reads_back_equal_to_online(tmp_path, memory_source, noise_op):
    from datarax_beam.runners import materialize

    online = from_source(memory_source(30, shuffle=True), batch_size=8) >> OperatorNode(noise_op())
    d = str(tmp_path / "mat")
    materialize(online, d, num_shards=3)
    back = from_source(ArrayRecordSourceModule(d), batch_size=8)
    assert_same(collect(back), collect(online))
