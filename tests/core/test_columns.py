import jax.numpy as jnp
import numpy as np
import pytest

from datarax_beam.core import columns as cols


def test_stack_values_numeric_same_shape():
    out = cols.stack_values([np.ones((2, 3), np.float32), jnp.zeros((2, 3), jnp.float32)])
    assert out.shape == (2, 2, 3) and out.dtype == np.float32
    ints = cols.stack_values([1, 2, 3])
    assert ints.dtype.kind == "i" and ints.tolist() == [1, 2, 3]


def test_stack_values_text_and_ragged_become_object_columns():
    text = cols.stack_values(["a", "bb", np.str_("c")])
    assert text.dtype == object and text.shape == (3,)
    assert text.tolist() == ["a", "bb", "c"] and all(type(v) is str for v in text)
    raw = cols.stack_values([b"x", b"yz"])
    assert raw.dtype == object and raw.tolist() == [b"x", b"yz"]
    ragged = cols.stack_values([np.zeros(2), np.zeros(3)])
    assert ragged.dtype == object and ragged.shape == (2,) and ragged[1].shape == (3,)


def test_object_column_never_broadcasts():
    col = cols.object_column([np.zeros(2), np.zeros(2)])
    assert col.shape == (2,) and col.dtype == object


def test_stack_values_mixed_dtypes_promote():
    out = cols.stack_values([np.int32(1), np.float32(2.5)])
    assert out.dtype == np.result_type(np.int32, np.float32)
    np.testing.assert_array_equal(out, [1.0, 2.5])


def test_columns_from_records_and_errors():
    got = cols.columns_from_records([{"x": 1, "t": "a"}, {"x": 2, "t": "b"}])
    assert got["x"].tolist() == [1, 2] and got["t"].tolist() == ["a", "b"]
    assert cols.columns_from_records([]) == {}
    with pytest.raises(ValueError, match=r"Record 1 has features \['y'\], expected \['x'\]"):
        cols.columns_from_records([{"x": 1}, {"y": 2}])
    with pytest.raises(TypeError, match=r"Record 1 must be a dict of features, got int"):
        cols.columns_from_records([{"x": 1}, 3])


def test_num_rows_take_concat():
    batch = {"x": np.arange(5), "t": cols.object_column(list("abcde"))}
    assert cols.num_rows(batch) == 5 and cols.num_rows({}) == 0
    taken = cols.take(batch, np.array([4, 0]))
    assert taken["x"].tolist() == [4, 0] and taken["t"].tolist() == ["e", "a"]
    joined = cols.concat([cols.take(batch, np.arange(2)), {"x": np.arange(0), "t": np.empty(0, object)},
                          cols.take(batch, np.arange(2, 5))])
    assert joined["x"].tolist() == list(range(5)) and joined["t"].tolist() == list("abcde")
    assert cols.concat([]) == {}


def test_concat_of_differing_shapes_becomes_object():
    out = cols.concat([{"v": np.zeros((1, 2))}, {"v": np.zeros((1, 3))}])
    assert out["v"].dtype == object and out["v"].shape == (2,)


def test_is_numeric_column():
    assert cols.is_numeric_column(np.zeros(2)) and cols.is_numeric_column(jnp.zeros(2))
    assert cols.is_numeric_column(np.zeros(2, bool))
    assert not cols.is_numeric_column(cols.object_column(["a"]))
    assert not cols.is_numeric_column(np.array(["a"]))
    assert not cols.is_numeric_column([1, 2])


def test_only_read_only_views_of_bytes_or_jax_memory_are_frozen():
    assert cols.is_frozen(np.frombuffer(b"abcdefgh", np.uint8).reshape(2, 4)[:, 1:])
    assert cols.is_frozen(np.asarray(jnp.arange(4.0)))
    fresh = np.zeros(4)
    assert not cols.is_frozen(fresh)
    view = fresh.view()
    view.flags.writeable = False  # read-only, but its owner is not
    assert not cols.is_frozen(view)
    owner = np.zeros(4)
    owner.flags.writeable = False  # an owner may make itself writable again
    assert not cols.is_frozen(owner)
    refillable = bytearray(8)
    assert not cols.is_frozen(np.frombuffer(refillable, np.uint8))
    assert not cols.is_frozen(np.frombuffer(memoryview(refillable).toreadonly(), np.uint8))
    assert not cols.is_frozen(cols.object_column([b"a", b"b"]))
