"""The iteration rule: one cursor per source, one live iterator, no silently empty epochs.

Each `iter()` of a pipeline (or source) yields the rest of the current epoch from the cursor. A
random-access source holds the cursor, so pipelines built on it share it; a newer `iter()`,
`set_state` or `nnx.update` makes an older iterator stale (an error if it is used again).
"""

import warnings

import flax.nnx as nnx
import numpy as np
import pytest

from datarax_beam import from_source
from datarax_beam.core.data_source import (
    DataSourceModule,
    EmptyEpochError,
    EpochLimitError,
    StaleIteratorError,
)
from datarax_beam.shards.writer import write_shardset
from datarax_beam.sources import ArrayRecordSourceConfig, ArrayRecordSourceModule
from datarax_beam.testing import IteratorSource


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("iteration") / "set")
    write_shardset(d, {"x": np.arange(100, dtype=np.int32)}, num_shards=2)
    return d


def _reader(d, **kw):
    return ArrayRecordSourceModule(d, ArrayRecordSourceConfig(**kw))


def _xs(batches):
    return [int(v) for b in batches for v in np.asarray(b["x"])]


def test_every_pass_over_a_pipeline_is_a_full_new_epoch(shard_dir):
    p = from_source(_reader(shard_dir, shuffle=True), batch_size=10)
    epochs = [_xs(p) for _ in range(3)]
    assert [len(e) for e in epochs] == [100, 100, 100]
    assert all(sorted(e) == list(range(100)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]  # a new order each epoch


def test_a_new_pipeline_over_the_same_reader_continues_with_the_next_epoch(shard_dir):
    reader = _reader(shard_dir, shuffle=True)
    epochs = [_xs(from_source(reader, 10)) for _ in range(3)]
    assert [len(e) for e in epochs] == [100, 100, 100] and epochs[0] != epochs[1] != epochs[2]
    assert reader.get_state()["epoch"] == 3


def test_past_num_epochs_is_an_error_not_an_empty_epoch(shard_dir):
    p = from_source(_reader(shard_dir, num_epochs=1), batch_size=10)
    assert len(_xs(p)) == 100
    for _ in range(2):
        with pytest.raises(EpochLimitError, match=r"num_epochs=1 epoch\(s\) and epoch 1 was asked for"):
            for _batch in p:
                pass


def test_the_readers_cursor_is_the_pipelines(shard_dir):
    reader = _reader(shard_dir)
    p = from_source(reader, batch_size=10)
    it = iter(p)
    next(it), next(it)
    assert reader.get_state() == p.get_state() and reader.get_state()["position"] == 20
    assert [e.metadata.index for _, e in zip(range(3), reader, strict=False)] == [20, 21, 22]


def test_a_second_iter_makes_the_first_stale(shard_dir):
    p = from_source(_reader(shard_dir), batch_size=10)
    first = iter(p)
    assert _xs([next(first)]) == list(range(10))
    second = iter(p)
    with pytest.raises(StaleIteratorError, match="replaced by a newer iter"):
        next(first)
    assert _xs([next(second)]) == list(range(10, 20))  # the newest continues from the cursor
    other = from_source(p.source, batch_size=5)  # another pipeline on the same source: same cursor
    assert _xs([next(iter(other))]) == list(range(20, 25))
    with pytest.raises(StaleIteratorError):
        next(second)


def test_peeking_a_batch_consumes_it(shard_dir):
    p = from_source(_reader(shard_dir), batch_size=10)
    assert _xs([next(iter(p))]) == list(range(10))
    assert _xs(p) == list(range(10, 100))  # the rule: iter() continues the epoch
    assert _xs(p) == list(range(100))


@pytest.mark.parametrize("move", ["set_state", "nnx_update", "direct"])
def test_moving_the_cursor_under_a_live_iterator_is_an_error(shard_dir, move):
    p = from_source(_reader(shard_dir), batch_size=10)
    it = iter(p)
    next(it)
    if move == "set_state":
        p.set_state({**p.get_state(), "position": 50})
    elif move == "nnx_update":
        other = from_source(_reader(shard_dir), batch_size=10)
        other.set_state({**other.get_state(), "position": 70})
        nnx.update(p, nnx.state(other))
    else:
        next(p.source)
    with pytest.raises(StaleIteratorError, match="call iter\\(\\) again"):
        next(it)
    assert len(_xs(p)) == {"set_state": 50, "nnx_update": 30, "direct": 89}[move]


def test_breaking_after_the_last_batch_moves_to_the_next_epoch(shard_dir):
    p = from_source(_reader(shard_dir), batch_size=10)
    for i, _batch in enumerate(p):
        if i == 9:  # the last batch: the loop never sees StopIteration
            break
    assert p.get_state()["epoch"] == 1 and p.get_state()["position"] == 0
    assert len(_xs(p)) == 100  # a full epoch, not an empty one


def test_a_saved_cursor_at_the_end_of_its_epoch_continues_with_the_next(shard_dir):
    p = from_source(_reader(shard_dir), batch_size=10)
    p.set_state({**p.get_state(), "epoch": 4, "position": 100})
    assert len(_xs(p)) == 100 and p.get_state()["epoch"] == 6


def test_an_epoch_too_small_for_the_hosts_is_an_error(tmp_path):
    d = str(tmp_path / "tiny")
    write_shardset(d, {"x": np.arange(5, dtype=np.int32)})
    reader = ArrayRecordSourceModule(d, ArrayRecordSourceConfig(shard_index=0, shard_count=2))
    with pytest.raises(EmptyEpochError, match=r"has 5 records: no batch of 4 for host 0 of 2 with drop_remainder"):
        iter(from_source(reader, 4).batch(4, drop_remainder=True))


def test_iterator_source_pipelines_follow_the_same_rule():
    p = from_source(IteratorSource({"x": np.arange(7)}), batch_size=3)
    first = iter(p)
    next(first)
    second = iter(p)
    with pytest.raises(StaleIteratorError):
        next(first)
    assert _xs(second) == [3, 4, 5, 6] and p.get_state() == {"epoch": 1, "position": 0}
    for i, _batch in enumerate(p):
        if i == 2:
            break
    assert p.get_state() == {"epoch": 2, "position": 0}  # the last batch ended the epoch


def test_an_iterator_source_that_does_not_restart_is_an_error():
    class Stream(DataSourceModule):
        def __init__(self):
            super().__init__(name="oneshot")
            self.it = iter([{"x": i} for i in range(4)])

        def __iter__(self):
            return self.it  # never restarts: the second epoch would be empty

    p = from_source(Stream(), batch_size=2)
    assert _xs(p) == [0, 1, 2, 3]
    with pytest.raises(EmptyEpochError, match="Epoch 1 of Stream 'oneshot' yields no batch of 2"):
        list(p)


def test_no_deprecated_variable_value_access(shard_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        reader = _reader(shard_dir, shuffle=True)
        p = from_source(reader, batch_size=30)
        next(iter(p))
        state = p.get_state()
        p.set_state(state)
        list(p)
        next(reader)
        nnx.update(reader, nnx.state(reader))
        reader.get_state()
