import flax.nnx as nnx
import jax
import numpy as np
import pytest

from datarax_beam import OperatorNode, Pipeline, from_source
from datarax_beam.core.data_source import DataSourceModule, SourceCursor, get_cursor
from datarax_beam.core.element import Element, RecordMetadata
from datarax_beam.operators import ElementOperator, ElementOperatorConfig
from datarax_beam.sources import MemorySource, MemorySourceConfig
from datarax_beam.testing import assert_restores_at_every_step


class Stream(DataSourceModule):
    """An iterator-only source of n records {"x", "label"}, like the guide's CSV source."""

    def __init__(self, n, with_metadata=False):
        super().__init__(name="stream")
        self.n, self.i, self.with_metadata = n, 0, with_metadata

    def __iter__(self):
        self.i = 0
        return self

    def __next__(self):
        if self.i >= self.n:
            raise StopIteration
        i, self.i = self.i, self.i + 1
        data = {"x": np.float32(i), "label": np.int32(i)}
        if self.with_metadata:  # global indices that are not 0..n-1
            return Element(data, metadata=RecordMetadata(index=1000 + i))
        return data


def per_record(pipeline, feature="x"):
    """One epoch as {label (= global index): value of ``feature``}."""
    out = {}
    for batch in pipeline:
        for label, value in zip(np.asarray(batch["label"]).tolist(), np.asarray(batch[feature]).tolist(), strict=True):
            out[label] = value
    return out


def labels(pipeline):
    return [np.asarray(b["label"]).tolist() for b in pipeline]


# -- building ------------------------------------------------------------------------------
def test_batches_are_dicts_of_stacked_jax_arrays(memory_source):
    batches = list(from_source(memory_source(10), batch_size=4))
    assert [sorted(b) for b in batches] == [["label", "x"]] * 3
    assert all(isinstance(b["x"], jax.Array) for b in batches)
    assert [b["x"].shape for b in batches] == [(4,), (4,), (2,)]
    assert batches[0]["x"].dtype == np.float32 and batches[0]["label"].dtype == np.int32


def test_rshift_accepts_nodes_and_operators_and_returns_a_new_pipeline(memory_source, double_op):
    base = from_source(memory_source(4), batch_size=4)
    p1 = base >> OperatorNode(double_op)
    p2 = base >> double_op >> OperatorNode(double_op)
    assert isinstance(p1, Pipeline) and base.operators == () and p1.operators == (double_op,)
    assert p2.operators == (double_op, double_op) and p1.source is base.source
    assert next(iter(p1))["x"].tolist() == [0.0, 2.0, 4.0, 6.0]
    assert next(iter(p2))["x"].tolist() == [0.0, 4.0, 8.0, 12.0]


def resize(element, key):
    return element


@pytest.mark.parametrize("stage, shown", [
    ("resize", "str: 'resize'$"),
    (None, "NoneType: None$"),
    (resize, r"function: <function resize.*; wrap a function as ElementOperator"),
])
def test_rshift_rejects_what_is_neither_operator_nor_node(memory_source, stage, shown):
    with pytest.raises(TypeError, match=rf"`>>` expects an OperatorNode or an operator, got {shown}"):
        from_source(memory_source(4)) >> stage


def test_from_source_rejects_non_sources():
    with pytest.raises(TypeError, match=r"`source` must be a DataSourceModule.*got list"):
        from_source([{"x": 1}])


@pytest.mark.parametrize("bad, error, message", [
    (0, ValueError, r"`batch_size` must be >= 1, got 0"),
    (-3, ValueError, r"`batch_size` must be >= 1, got -3"),
    (2.5, TypeError, r"`batch_size` must be an int >= 1, got 2.5"),
    ("4", TypeError, r"`batch_size` must be an int >= 1, got '4'"),
    (True, TypeError, r"`batch_size` must be an int >= 1, got True"),
])
def test_bad_batch_size(memory_source, bad, error, message):
    with pytest.raises(error, match=message):
        from_source(memory_source(4), batch_size=bad)
    with pytest.raises(error, match=message):
        from_source(memory_source(4)).batch(bad)


def test_bad_shuffle_arguments(memory_source):
    with pytest.raises(ValueError, match=r"`buffer_size` must be >= 1, got 0"):
        from_source(memory_source(4)).shuffle(0)
    with pytest.raises(TypeError, match=r"`seed` must be an int, got 0.5"):
        from_source(memory_source(4)).shuffle(4, seed=0.5)


# -- epochs and batching --------------------------------------------------------------------
def test_last_partial_batch_is_kept_unless_dropped(memory_source):
    p = from_source(memory_source(10), batch_size=4)
    assert labels(p) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] and len(p) == 3
    dropped = from_source(memory_source(10), batch_size=4).batch(4, drop_remainder=True)
    assert labels(dropped) == [[0, 1, 2, 3], [4, 5, 6, 7]] and len(dropped) == 2
    assert dropped.get_state() == {"epoch": 1, "position": 0}
    assert labels(p.batch(np.int64(5))) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_each_iteration_is_one_epoch_and_a_break_resumes(memory_source):
    p = from_source(memory_source(6), batch_size=2)
    assert len(labels(p)) == 3 and p.get_state() == {"epoch": 1, "position": 0}
    batch = next(iter(p))  # as `for batch in p: break`
    assert batch["label"].tolist() == [0, 1] and p.get_state() == {"epoch": 1, "position": 2}
    assert labels(p) == [[2, 3], [4, 5]] and p.get_state() == {"epoch": 2, "position": 0}


def test_shuffle_shuffles_records_each_epoch_once_with_a_new_order(memory_source):
    p = from_source(memory_source(12), batch_size=4).shuffle(12, seed=0)
    epochs = [labels(p) for _ in range(3)]
    for epoch in epochs:
        flat = [i for batch in epoch for i in batch]
        assert sorted(flat) == list(range(12)) and flat != list(range(12))
        # records, not whole batches, move: some batch is not a contiguous block of the input
        assert any(sorted(b) != list(range(min(b), min(b) + len(b))) for b in epoch)
    assert epochs[0] != epochs[1] != epochs[2]
    again = from_source(memory_source(12), batch_size=4).shuffle(12, seed=0)
    assert labels(again) == epochs[0]
    assert labels(from_source(memory_source(12), batch_size=4).shuffle(12, seed=1)) != epochs[0]


def test_small_buffer_shuffle_and_iterator_sources_shuffle_alike(memory_source):
    ra = labels(from_source(memory_source(15), batch_size=4).shuffle(3, seed=5))
    it = labels(from_source(Stream(15), batch_size=4).shuffle(3, seed=5))
    assert ra == it and sorted(sum(ra, [])) == list(range(15)) and sum(ra, []) != list(range(15))


def test_source_level_shuffle(memory_source):
    p = from_source(memory_source(10, shuffle=True, seed=2), batch_size=5)
    e0, e1 = sum(labels(p), []), sum(labels(p), [])
    assert sorted(e0) == sorted(e1) == list(range(10)) and e0 != e1 and e0 != list(range(10))
    np.testing.assert_array_equal(p.epoch_indices(0), e0)


# -- PRNG ----------------------------------------------------------------------------------
def test_per_record_randomness_is_independent_of_batch_size(memory_source, noise_op):
    by4 = per_record(from_source(memory_source(12), batch_size=4) >> noise_op(0))
    by6 = per_record(from_source(memory_source(12), batch_size=6) >> noise_op(0))
    assert sorted(by4) == list(range(12)) and by4 == by6
    assert len({v - k for k, v in by4.items()}) == 12  # every record drew its own noise


def test_per_record_randomness_is_independent_of_order(memory_source, noise_op):
    plain = per_record(from_source(memory_source(12), batch_size=4) >> noise_op(0))
    shuffled = per_record((from_source(memory_source(12), batch_size=5) >> noise_op(0)).shuffle(6, seed=3))
    assert plain == shuffled


def test_same_seed_same_outputs_other_seed_or_epoch_differs(memory_source, noise_op):
    a = from_source(memory_source(8), batch_size=4) >> noise_op(0)
    b = from_source(memory_source(8), batch_size=4) >> noise_op(0)
    c = from_source(memory_source(8), batch_size=4) >> noise_op(1)
    a0, b0, c0 = per_record(a), per_record(b), per_record(c)
    assert a0 == b0
    assert all(a0[i] != c0[i] for i in range(8))
    a1 = per_record(a)
    assert all(a0[i] != a1[i] for i in range(8))


def test_iterator_source_keys_use_the_records_global_index(noise_op):
    def ops():
        return noise_op(0)

    plain = per_record(from_source(Stream(6), batch_size=4) >> ops())
    indexed = from_source(Stream(6, with_metadata=True), batch_size=4) >> ops()
    assert per_record(indexed) != plain  # indices 1000.. rather than 0..

    def add_index(element, key):
        return element.update_data({"idx": element.metadata.index})

    op = ElementOperator(ElementOperatorConfig(), fn=add_index)
    assert per_record(from_source(Stream(3, with_metadata=True), batch_size=2) >> op, "idx") == {
        0: 1000, 1: 1001, 2: 1002}


# -- compilation ---------------------------------------------------------------------------
def test_chain_compiles_once_for_two_epochs_with_a_partial_last_batch(memory_source, noise_op, double_op):
    p = from_source(memory_source(10), batch_size=4) >> noise_op(0) >> double_op
    shapes = [b["x"].shape for _ in range(2) for b in p]
    assert shapes == [(4,), (4,), (2,)] * 2
    assert p.kernel.compile_count == 1


# -- text ----------------------------------------------------------------------------------
def test_text_features_rename_inside_the_jitted_chain():
    data = [{"sentence": f"sentence {i}", "label": i % 2} for i in range(5)]
    source = MemorySource(MemorySourceConfig(), data)

    def extract_fields(element, key=None):
        return element.update_data({"text": element.data["sentence"], "label": element.data["label"]})

    extractor = ElementOperator(ElementOperatorConfig(stochastic=False), fn=extract_fields)
    p = from_source(source, batch_size=2) >> OperatorNode(extractor)
    batches = list(p)
    assert [b["text"].tolist() for b in batches] == [["sentence 0", "sentence 1"], ["sentence 2", "sentence 3"], ["sentence 4"]]
    assert all(b["text"].dtype == object and all(type(t) is str for t in b["text"]) for b in batches)
    assert batches[0]["sentence"].tolist() == ["sentence 0", "sentence 1"]
    # Python ints are int64: kept exactly (numpy while x64 is off), as the shards keep them; this
    # used to be an int32 jax.Array (narrowed)
    assert batches[0]["label"].dtype == np.int64 and batches[0]["label"].tolist() == [0, 1]
    assert p.kernel.compile_count == 1  # text only moved between keys: one jitted chain


def test_text_passes_through_without_operators():
    source = MemorySource(MemorySourceConfig(), {"t": ["a", "b", "c"], "y": np.arange(3)})
    batch = next(iter(from_source(source, batch_size=3)))
    assert batch["t"].dtype == object and batch["t"].tolist() == ["a", "b", "c"]


# -- state ---------------------------------------------------------------------------------
def test_state_is_a_dict_of_ints_visible_through_nnx_state(memory_source):
    p = from_source(memory_source(10), batch_size=4)
    it = iter(p)
    next(it)
    state = p.get_state()
    assert state == {"epoch": 0, "position": 4} and all(type(v) is int for v in state.values())
    cursor = nnx.state(p, SourceCursor)  # the source's cursor, seen through the pipeline
    assert get_cursor(cursor["epoch"]) == 0 and get_cursor(cursor["position"]) == 4
    assert p.source.get_state() == state
    fresh = from_source(memory_source(10), batch_size=4)
    nnx.update(fresh, cursor)
    assert fresh.get_state() == state and labels(fresh) == [[4, 5, 6, 7], [8, 9]]


@pytest.mark.parametrize("variant", ["plain", "shuffled_stochastic", "source_shuffle_drop", "iterator"])
def test_pipeline_restores_at_every_step(memory_source, noise_op, variant):
    def make():
        if variant == "plain":
            return from_source(memory_source(7), batch_size=3)
        if variant == "shuffled_stochastic":
            return (from_source(memory_source(7), batch_size=3) >> noise_op(0)).shuffle(4, seed=1)
        if variant == "source_shuffle_drop":
            return from_source(memory_source(7, shuffle=True), batch_size=3).batch(3, drop_remainder=True)
        return (from_source(Stream(7), batch_size=3) >> noise_op(0)).shuffle(4, seed=1)

    steps = assert_restores_at_every_step(make, epochs=2)
    assert steps == (4 if variant == "source_shuffle_drop" else 6)


@pytest.mark.parametrize("state, error, message", [
    ({"epoch": 0}, KeyError, r"MemorySource state is missing `position`"),
    ({"epoch": 0, "position": 11}, ValueError, r"`position` 11 is out of range for a source of length 10"),
    ({"epoch": 0, "position": -1}, ValueError, r"`position` must be a non-negative int, got -1"),
    ({"epoch": "0", "position": 0}, ValueError, r"`epoch` must be a non-negative int, got '0'"),
    ({"epoch": 0, "position": 0, "buffer": 1}, KeyError, r"unknown keys \['buffer'\]"),
    ("epoch=0", TypeError, r"MemorySource state must be a dict.*got str"),
])
def test_bad_pipeline_state(memory_source, state, error, message):
    p = from_source(memory_source(10), batch_size=4)
    with pytest.raises(error, match=message):
        p.set_state(state)
    assert p.get_state() == {"epoch": 0, "position": 0}


def test_length_of_an_iterator_pipeline_is_unknown():
    with pytest.raises(TypeError, match=r"length of a pipeline over Stream is unknown"):
        len(from_source(Stream(3)))


@pytest.mark.parametrize("kind", ["memory", "iterator"])
def test_a_copy_taken_mid_epoch_continues_identically(memory_source, noise_op, kind):
    import copy

    source = memory_source(7) if kind == "memory" else Stream(7)
    p = (from_source(source, batch_size=3) >> noise_op(0)).shuffle(4, seed=1)
    next(iter(p))
    twin = copy.deepcopy(p)
    assert twin.get_state() == p.get_state() == {"epoch": 0, "position": 3}
    assert per_record(twin) == per_record(p)
    assert twin.get_state() == p.get_state() == {"epoch": 1, "position": 0}
