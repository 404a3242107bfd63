import jax
import numpy as np

from datarax_beam.kernels import record_key, record_keys

BASE = np.array([0, 42], dtype=np.uint32)


def data(key):
    return np.asarray(jax.random.key_data(key))


def test_record_key_is_a_function_of_base_epoch_and_index():
    k = data(record_key(BASE, 0, 5))
    np.testing.assert_array_equal(k, data(record_key(BASE, 0, 5)))
    assert not np.array_equal(k, data(record_key(BASE, 0, 6)))
    assert not np.array_equal(k, data(record_key(BASE, 1, 5)))
    assert not np.array_equal(k, data(record_key(np.array([0, 43], np.uint32), 0, 5)))


def test_record_key_is_fold_in_of_epoch_then_index():
    expected = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(BASE), 2), 7)
    np.testing.assert_array_equal(data(record_key(BASE, 2, 7)), data(expected))


def test_record_keys_match_record_key_for_any_index_order():
    indices = np.array([9, 0, 3])
    keys = record_keys(BASE, 1, indices)
    assert keys.shape == (3,) and jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key)
    for key, i in zip(keys, indices, strict=True):
        np.testing.assert_array_equal(data(key), data(record_key(BASE, 1, int(i))))
    # A record's key does not depend on its neighbours.
    np.testing.assert_array_equal(data(record_keys(BASE, 1, indices[1:])), data(keys[1:]))
