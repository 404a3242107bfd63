"""Checkpointing the reader's and the pipeline's state with Orbax (``orbax.checkpoint``)."""

import flax.nnx as nnx
import numpy as np
import orbax.checkpoint as ocp
import pytest

from datarax_beam import from_source
from datarax_beam.shards.writer import write_shardset
from datarax_beam.sources import ArrayRecordSourceConfig, ArrayRecordSourceModule, Mixture
from datarax_beam.sources.array_record import ReaderCursor
from datarax_beam.testing import assert_same, collect


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("orbax")
    out = []
    for j, n in enumerate((40, 25)):
        out.append(str(root / f"set{j}"))
        write_shardset(out[-1], {"x": np.arange(n, dtype=np.int64) + 100 * j}, num_shards=2)
    return out


def _pipeline(sets, kind):
    config = ArrayRecordSourceConfig(shuffle=True, seed=7)
    if kind == "reader":
        return from_source(ArrayRecordSourceModule(sets[0], config), batch_size=6)
    return from_source(Mixture([ArrayRecordSourceModule(d, config) for d in sets], [2, 1], seed=1), 6)


def _advance(pipeline, steps):
    it = iter(pipeline)
    for _ in range(steps):
        next(it)


@pytest.mark.parametrize("kind", ["reader", "mixture"])
def test_standard_save_of_nnx_state_resumes_exactly(tmp_path, sets, kind):
    pipeline = _pipeline(sets, kind)
    _advance(pipeline, 3)
    with ocp.CheckpointManager(str(tmp_path / "ckpt")) as manager:
        manager.save(3, args=ocp.args.Composite(data=ocp.args.StandardSave(nnx.state(pipeline))))
        manager.wait_until_finished()
    expected = collect(pipeline) + collect(pipeline)
    fresh = _pipeline(sets, kind)
    with ocp.CheckpointManager(str(tmp_path / "ckpt")) as manager:
        restored = manager.restore(3, args=ocp.args.Composite(data=ocp.args.StandardRestore(nnx.state(fresh))))
    nnx.update(fresh, restored.data)
    assert fresh.get_state() == {**fresh.get_state(), "epoch": 0, "position": 18}
    assert_same(collect(fresh) + collect(fresh), expected)


def test_json_save_of_get_state(tmp_path, sets):
    pipeline = _pipeline(sets, "reader")
    _advance(pipeline, 2)
    with ocp.CheckpointManager(str(tmp_path / "ckpt")) as manager:
        manager.save(2, args=ocp.args.Composite(data=ocp.args.JsonSave(pipeline.get_state())))
        manager.wait_until_finished()
        state = manager.restore(2, args=ocp.args.Composite(data=ocp.args.JsonRestore())).data
    assert state == pipeline.get_state() and all(type(v) is int for v in state.values())
    fresh = _pipeline(sets, "reader")
    fresh.set_state(state)
    assert_same(collect(fresh), collect(pipeline))


def test_the_reader_cursor_alone(tmp_path, sets):
    reader = ArrayRecordSourceModule(sets[0], ArrayRecordSourceConfig(shuffle=True))
    for _ in range(5):
        next(reader)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "cursor", nnx.state(reader, ReaderCursor))
    checkpointer.wait_until_finished()
    fresh = ArrayRecordSourceModule(sets[0], ArrayRecordSourceConfig(shuffle=True))
    nnx.update(fresh, checkpointer.restore(tmp_path / "cursor", nnx.state(fresh, ReaderCursor)))
    assert fresh.get_state() == reader.get_state()
    assert [e.metadata.index for e in fresh] == [e.metadata.index for e in reader]


def test_a_checkpoint_of_other_data_is_refused(tmp_path, sets):
    theirs = _pipeline(sets, "reader")
    _advance(theirs, 1)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "theirs", nnx.state(theirs))
    checkpointer.wait_until_finished()
    ours = from_source(ArrayRecordSourceModule(sets[1], ArrayRecordSourceConfig(shuffle=True, seed=7)), 6)
    nnx.update(ours, checkpointer.restore(tmp_path / "theirs", nnx.state(ours)))
    with pytest.raises(ValueError, match="saved from a different shard set"):
        next(iter(ours))
