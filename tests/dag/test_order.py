import numpy as np
import pytest

from datarax_beam.dag.order import buffer_shuffle, shuffle_indices, shuffle_rng


@pytest.mark.parametrize("buffer_size", [1, 3, 10, 50])
def test_buffer_shuffle_yields_every_item_once(buffer_size):
    out = list(buffer_shuffle(range(20), buffer_size, shuffle_rng(0, 0)))
    assert sorted(out) == list(range(20))


def test_buffer_of_one_keeps_the_order_and_larger_buffers_shuffle():
    assert list(buffer_shuffle(range(10), 1, shuffle_rng(0, 0))) == list(range(10))
    assert list(buffer_shuffle(range(10), 4, shuffle_rng(0, 0))) != list(range(10))


def test_shuffle_is_a_function_of_seed_and_epoch():
    def run(seed, epoch):
        return shuffle_indices(np.arange(30), 8, shuffle_rng(seed, epoch)).tolist()

    assert run(1, 0) == run(1, 0)
    assert run(1, 0) != run(1, 1)
    assert run(1, 0) != run(2, 0)


@pytest.mark.parametrize("buffer_size", [5, 30, 100])
def test_shuffle_indices_is_a_permutation(buffer_size):
    order = np.arange(100, 130)
    out = shuffle_indices(order, buffer_size, shuffle_rng(0, 3))
    assert out.dtype.kind == "i" and sorted(out.tolist()) == order.tolist()
    assert out.tolist() != order.tolist()


def test_shuffle_indices_matches_buffer_shuffle_for_small_buffers():
    a = shuffle_indices(np.arange(25), 4, shuffle_rng(7, 1)).tolist()
    b = [int(i) for i in buffer_shuffle(np.arange(25), 4, shuffle_rng(7, 1))]
    assert a == b


def test_iterator_source_error_names_the_record_position_online():
    from datarax_beam import from_source
    from datarax_beam.testing import IteratorSource

    flaky = IteratorSource({"x": list(range(10))}, name="flaky", fail_at=5, error=OSError("disk gone"))
    with pytest.raises(RuntimeError, match="Source 'flaky' raised while reading the record at position 5.*OSError: disk gone"):
        list(from_source(flaky, batch_size=2))
