import flax.nnx as nnx
import numpy as np
import pytest

from datarax_beam.core.data_source import (
    DataSourceModule,
    RandomAccessSource,
    SourceCursor,
    get_cursor,
)
from datarax_beam.core.element import Element
from datarax_beam.testing import assert_restores_at_every_step


class Count(DataSourceModule):
    """An iterator source as the guide writes them: no config, plain dicts, numpy attributes."""

    def __init__(self, n):
        super().__init__(name="count")
        self.n, self.i = n, 0
        self.table = np.arange(n)  # host arrays are fine: sources are not pytrees

    def __iter__(self):
        self.i = 0
        return self

    def __next__(self):
        if self.i >= self.n:
            raise StopIteration
        self.i += 1
        return {"x": int(self.table[self.i - 1])}


class Squares(RandomAccessSource):
    """The smallest random-access source: ``__len__`` + ``_read``."""

    def __init__(self, n, shuffle=False, seed=0):
        class Config:
            pass

        config = Config()
        config.shuffle, config.seed = shuffle, seed
        super().__init__(config, name="squares")
        self.n = n

    def __len__(self):
        return self.n

    def _read(self, indices):
        return {"sq": indices * indices}


def test_iterator_source_subclass_with_name_only():
    src = Count(3)
    assert [d["x"] for d in src] == [0, 1, 2]
    assert src.name == "count" and src.config is None
    assert not src.is_random_access
    assert src.get_state() == {}
    assert src.source_info() == {"source": "Count", "name": "count"}


def test_base_source_next_is_abstract():
    with pytest.raises(NotImplementedError, match="DataSourceModule must implement __next__"):
        next(DataSourceModule())


def test_stateless_source_rejects_nonempty_state():
    src = Count(2)
    src.set_state({})
    with pytest.raises(ValueError, match=r"Count has no iteration state, got \{'position': 1\}"):
        src.set_state({"position": 1})


def test_random_access_get_batch_getitem_and_len():
    src = Squares(5)
    assert src.is_random_access and len(src) == 5
    assert src.get_batch([4, 1])["sq"].tolist() == [16, 1]
    assert int(src[3]["sq"]) == 9 and int(src[-1]["sq"]) == 16
    chunks = [np.array([0, 1]), np.array([4])]
    assert [b["sq"].tolist() for b in src.read_batches(iter(chunks))] == [[0, 1], [16]]


def test_random_access_index_errors_name_the_value():
    src = Squares(5)
    with pytest.raises(IndexError, match=r"Record index 5 is out of range for a source of length 5"):
        src.get_batch([0, 5])
    with pytest.raises(IndexError, match=r"Record index -1 is out of range"):
        src[-6]
    with pytest.raises(TypeError, match=r"Source index must be an int, got str"):
        src["a"]


def test_iteration_yields_elements_with_metadata_and_counts_epochs():
    src = Squares(3)
    elements = list(src)
    assert all(isinstance(e, Element) for e in elements)
    assert [e.metadata.index for e in elements] == [0, 1, 2]
    assert [int(e.data["sq"]) for e in elements] == [0, 1, 4]
    assert elements[0].metadata.source_info == {"source": "Squares", "name": "squares"}
    assert src.get_state() == {"epoch": 1, "position": 0}
    assert [e.metadata.epoch for e in src] == [1, 1, 1]


def test_epoch_order_is_a_seeded_permutation_per_epoch():
    src = Squares(20, shuffle=True, seed=3)
    e0, e1 = src.epoch_order(0), src.epoch_order(1)
    assert sorted(e0.tolist()) == list(range(20)) and sorted(e1.tolist()) == list(range(20))
    assert e0.tolist() != e1.tolist() and e0.tolist() != list(range(20))
    np.testing.assert_array_equal(e0, Squares(20, shuffle=True, seed=3).epoch_order(0))
    assert e0.tolist() != Squares(20, shuffle=True, seed=4).epoch_order(0).tolist()
    assert Squares(4).epoch_order(7).tolist() == [0, 1, 2, 3]


def test_state_is_ints_and_visible_through_nnx_state():
    src = Squares(4)
    it = iter(src)
    next(it), next(it)
    state = src.get_state()
    assert state == {"epoch": 0, "position": 2} and all(type(v) is int for v in state.values())
    cursor = nnx.state(src, SourceCursor)
    assert {k: get_cursor(v) for k, v in cursor.items()} == {"epoch": 0, "position": 2}
    fresh = Squares(4)
    nnx.update(fresh, cursor)
    assert [e.metadata.index for e in fresh] == [2, 3]


@pytest.mark.parametrize("shuffle", [False, True])
def test_random_access_source_restores_at_every_step(shuffle):
    steps = assert_restores_at_every_step(lambda: Squares(5, shuffle=shuffle, seed=1), epochs=2)
    assert steps == 10


@pytest.mark.parametrize(
    "state, error, message",
    [
        ([0, 1], TypeError, r"Squares state must be a dict with keys \['epoch', 'position'\], got list"),
        ({"epoch": 0}, KeyError, r"Squares state is missing `position`"),
        ({"epoch": 0, "position": 1, "seed": 2}, KeyError, r"unknown keys \['seed'\]"),
        ({"epoch": -1, "position": 0}, ValueError, r"`epoch` must be a non-negative int, got -1"),
        ({"epoch": 0, "position": 1.5}, ValueError, r"`position` must be a non-negative int, got 1.5"),
        ({"epoch": True, "position": 0}, ValueError, r"`epoch` must be a non-negative int, got True"),
        ({"epoch": 0, "position": 6}, ValueError, r"`position` 6 is out of range for a source of length 5"),
    ],
)
def test_bad_set_state(state, error, message):
    src = Squares(5)
    with pytest.raises(error, match=message):
        src.set_state(state)
    assert src.get_state() == {"epoch": 0, "position": 0}


def test_numpy_ints_are_accepted_in_state():
    src = Squares(5)
    src.set_state({"epoch": np.int64(1), "position": np.int32(5)})
    assert src.get_state() == {"epoch": 1, "position": 5}
    # a cursor at the end of its epoch continues with the next epoch (never an empty pass)
    assert [e.metadata.epoch for e in src] == [2] * 5 and src.get_state() == {"epoch": 3, "position": 0}


def test_direct_iteration_computes_the_epoch_order_once_per_epoch():
    calls = []

    class Counted(Squares):
        def epoch_order(self, epoch):
            calls.append(epoch)
            return super().epoch_order(epoch)

    src = Counted(6, shuffle=True, seed=2)
    first = [e.metadata.index for e in src]
    second = [e.metadata.index for e in src]
    assert calls == [0, 1]
    assert first == src.epoch_order(0).tolist() and second == src.epoch_order(1).tolist()


class _OneBuffer(RandomAccessSource):
    """A source that fills the same array on every read (as a reader into a buffer might)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n
        raw = np.zeros(4 * 2 + 16, np.float32)  # 64-byte aligned: JAX on the CPU may alias it
        start = (-raw.ctypes.data % 64) // 4
        self.buffer = nnx.data(raw[start : start + 8].reshape(4, 2))

    def __len__(self):
        return self.n

    def _read(self, indices):
        self.buffer[: len(indices)] = np.asarray(indices, np.float32)[:, None]
        return {"x": self.buffer[: len(indices)]}


def test_batches_of_a_source_reusing_its_buffer_are_copied():
    from datarax_beam import from_source

    src = _OneBuffer(10)
    first = src.get_batch([0, 1])
    src.get_batch([5, 6])
    assert first["x"][:, 0].tolist() == [0, 1]
    batches = list(from_source(_OneBuffer(10), 4))  # every batch kept, then read
    assert np.concatenate([np.asarray(b["x"])[:, 0] for b in batches]).tolist() == list(range(10))


class _OneObjectBuffer(RandomAccessSource):
    """Fills the same object array, and hands out a read-only view of one numeric buffer."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n
        self.names = nnx.data(np.empty(4, dtype=object))
        self.values = nnx.data(np.zeros(4, np.int64))

    def __len__(self):
        return self.n

    def _read(self, indices):
        self.names[: len(indices)] = [f"r{i}" for i in indices]
        self.values[: len(indices)] = indices
        view = self.values[: len(indices)].view()
        view.flags.writeable = False  # read-only to the reader, still written by the source
        return {"name": self.names[: len(indices)], "value": view}


def test_object_columns_and_read_only_views_of_a_reused_buffer_are_copied():
    src = _OneObjectBuffer(10)
    first = src.get_batch([0, 1])
    src.get_batch([5, 6])
    assert first["name"].tolist() == ["r0", "r1"] and first["value"].tolist() == [0, 1]


def test_frozen_columns_are_not_copied():
    frozen = np.frombuffer(bytes(range(8)), np.uint8)

    class Frozen(RandomAccessSource):
        def __len__(self):
            return 8

        def _read(self, indices):
            return {"x": frozen[indices[0] : indices[-1] + 1]}

    assert np.shares_memory(Frozen().get_batch([2, 3])["x"], frozen)
