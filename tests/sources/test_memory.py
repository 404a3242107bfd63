import flax.nnx as nnx
import jax.numpy as jnp
import numpy as np
import pytest

from datarax_beam.core.data_source import EmptyEpochError, SourceCursor, get_cursor
from datarax_beam.sources import MemorySource, MemorySourceConfig
from datarax_beam.sources.memory import DEFAULT_FEATURE
from datarax_beam.testing import assert_restores_at_every_step


def test_list_of_dicts():
    src = MemorySource(MemorySourceConfig(), [{"image": jnp.ones((2, 2)), "label": i} for i in range(5)])
    assert len(src) == 5 and sorted(src.columns) == ["image", "label"]
    batch = src.get_batch([4, 0])
    assert batch["image"].shape == (2, 2, 2) and batch["label"].tolist() == [4, 0]


def test_dict_of_equal_length_arrays_and_lists():
    src = MemorySource(MemorySourceConfig(), {"x": np.arange(6).reshape(3, 2), "t": ["a", "b", "c"],
                                              "s": np.array(["p", "q", "r"]), "j": jnp.arange(3)})
    assert len(src) == 3
    row = src[1]
    assert row["x"].tolist() == [2, 3] and row["t"] == "b" and row["s"] == "q" and int(row["j"]) == 1
    assert src.columns["t"].dtype == object and src.columns["s"].dtype == object


@pytest.mark.parametrize("data", [
    [np.full((2,), i) for i in range(4)],
    np.arange(8).reshape(4, 2),
    (np.full((2,), i) for i in range(4)),
])
def test_sequence_of_arrays_becomes_one_feature(data):
    src = MemorySource(MemorySourceConfig(), data)
    assert len(src) == 4 and list(src.columns) == [DEFAULT_FEATURE]
    assert src.get_batch([3])[DEFAULT_FEATURE].shape == (1, 2)


def test_empty_data_and_default_config():
    src = MemorySource(data=[])
    assert len(src) == 0 and src.get_state() == {"epoch": 0, "position": 0}
    with pytest.raises(EmptyEpochError, match="Epoch 0 of MemorySource 'memory' has 0 records"):
        list(src)  # an error, not a silently empty epoch


def test_config_defaults_and_validation():
    assert MemorySourceConfig() == MemorySourceConfig(shuffle=False, seed=0)
    with pytest.raises(TypeError, match=r"`shuffle` must be a bool, got 1"):
        MemorySourceConfig(shuffle=1)
    with pytest.raises(TypeError, match=r"`seed` must be an int, got 'a'"):
        MemorySourceConfig(seed="a")
    with pytest.raises(TypeError, match=r"`seed` must be an int, got True"):
        MemorySourceConfig(seed=True)


def test_dict_data_with_unequal_lengths():
    with pytest.raises(ValueError, match=r"MemorySource `data`: all features of a dict must have the same length, got lengths \{'x': 3, 'y': 2\}"):
        MemorySource(MemorySourceConfig(), {"x": np.arange(3), "y": [1, 2]})


@pytest.mark.parametrize("data, error, message", [
    (None, ValueError, r"MemorySource needs `data`"),
    ([{"x": 1}, 2], TypeError, r"`data` mixes dict records and non-dict records \(got types \['dict', 'int'\]\)"),
    ([{"x": 1}, {"y": 2}], ValueError, r"Record 1 has features \['y'\], expected \['x'\]"),
    ({1: [1]}, TypeError, r"`data`: feature names must be str, got 1"),
    ({"x": np.array(3.0)}, ValueError, r"`data`: feature 'x' must have a leading record axis, got the scalar array\(3.\)"),
    ({"x": 3}, TypeError, r"`data`: feature 'x' must be an array or a list of per-record values, got int: 3"),
    (42, TypeError, r"MemorySource `data` must be a list of dicts, a dict of arrays or a list of arrays, got int"),
])
def test_bad_data(data, error, message):
    with pytest.raises(error, match=message):
        MemorySource(MemorySourceConfig(), data)


def test_bad_config():
    with pytest.raises(TypeError, match=r"`config` must be a MemorySourceConfig, got dict"):
        MemorySource({"shuffle": True}, [{"x": 1}])


def test_iteration_state_and_nnx_state_hold_no_data():
    src = MemorySource(MemorySourceConfig(), {"x": np.arange(1000)})
    it = iter(src)
    [next(it) for _ in range(3)]
    assert src.get_state() == {"epoch": 0, "position": 3}
    leaves = [v for _, v in nnx.to_flat_state(nnx.state(src))]
    assert len(leaves) == 2  # epoch and position; the data is not state
    cursor = nnx.state(src, SourceCursor)
    assert {k: get_cursor(v) for k, v in cursor.items()} == {"epoch": 0, "position": 3}


def test_shuffled_source_visits_every_record_once_per_epoch():
    src = MemorySource(MemorySourceConfig(shuffle=True, seed=4), {"x": np.arange(10)})
    e0 = [int(e.data["x"]) for e in src]
    e1 = [int(e.data["x"]) for e in src]
    assert sorted(e0) == sorted(e1) == list(range(10)) and e0 != e1 and e0 != list(range(10))
    assert [e.metadata.index for e in MemorySource(MemorySourceConfig(shuffle=True, seed=4), {"x": np.arange(10)})] == e0


@pytest.mark.parametrize("config", [MemorySourceConfig(), MemorySourceConfig(shuffle=True, seed=9)])
def test_memory_source_restores_at_every_step(config):
    data = [{"x": i, "t": f"r{i}"} for i in range(6)]
    assert assert_restores_at_every_step(lambda: MemorySource(config, data), epochs=2) == 12


def test_fingerprint_follows_the_content():
    def fp(data):
        return MemorySource(MemorySourceConfig(), data).fingerprint()

    assert fp({"x": np.arange(3)}) == fp({"x": np.arange(3)})
    assert fp({"x": np.arange(3)}) != fp({"x": np.arange(1, 4)})
    assert fp({"t": ["a", "b"]}) != fp({"t": ["a", "c"]})
