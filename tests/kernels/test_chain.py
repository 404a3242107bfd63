import flax.nnx as nnx
import jax
import numpy as np
import pytest

from datarax_beam.core import columns as cols
from datarax_beam.kernels import ChainKernel, OperatorError, PerRecordPathWarning
from datarax_beam.kernels.segments import run_per_record
from datarax_beam.operators import ElementOperator, ElementOperatorConfig, HostOperator


def add_index(element, key):
    """Adds the record's global index (a traced scalar inside the kernel) to "x"."""
    return element.update_data({"x": element.data["x"] + element.metadata.index})


def stochastic_op(seed=0):
    def noise(element, key):
        return element.update_data({"x": element.data["x"] + jax.random.uniform(key)})

    return ElementOperator(
        ElementOperatorConfig(stochastic=True, stream_name="augment"),
        fn=noise,
        rngs=nnx.Rngs(augment=seed),
    )


def test_chain_applies_operators_in_order():
    double = ElementOperator(ElementOperatorConfig(), fn=lambda e, k: e.update_data({"x": e.data["x"] * 2}))
    inc = ElementOperator(ElementOperatorConfig(), fn=lambda e, k: e.update_data({"x": e.data["x"] + 1}))
    k = ChainKernel([double, inc], pad_to=4)
    out = k({"x": np.arange(3, dtype=np.float32)}, np.arange(3))
    assert out["x"].tolist() == [1.0, 3.0, 5.0] and isinstance(out["x"], np.ndarray)


def test_metadata_index_is_the_global_index():
    k = ChainKernel([ElementOperator(ElementOperatorConfig(), fn=add_index)], pad_to=2)
    out = k({"x": np.zeros(3, np.int32)}, np.array([10, 20, 30]))
    assert out["x"].tolist() == [10, 20, 30]


def test_one_compilation_for_split_and_padded_batches_and_epochs():
    k = ChainKernel([stochastic_op()], pad_to=4)
    for epoch in range(2):
        k({"x": np.zeros(10, np.float32)}, np.arange(10), epoch)  # 4 + 4 + 2 (padded)
        k({"x": np.zeros(3, np.float32)}, np.arange(3), epoch)
    assert k.compile_count == 1
    k({"x": np.zeros((3, 2), np.float32)}, np.arange(3))  # a new feature shape compiles again
    assert k.compile_count == 2


def test_result_does_not_depend_on_padding_or_batch_position():
    batch = {"x": np.zeros(7, np.float32)}
    idx = np.arange(100, 107)
    whole = ChainKernel([stochastic_op()], pad_to=8)(batch, idx)["x"]
    pieces = ChainKernel([stochastic_op()], pad_to=3)(batch, idx)["x"]
    np.testing.assert_array_equal(whole, pieces)
    reversed_ = ChainKernel([stochastic_op()], pad_to=3)(batch, idx[::-1])["x"]
    np.testing.assert_array_equal(reversed_[::-1], whole)


def test_epoch_changes_the_keys():
    k = ChainKernel([stochastic_op()], pad_to=4)
    batch, idx = {"x": np.zeros(4, np.float32)}, np.arange(4)
    assert not np.array_equal(k(batch, idx, 0)["x"], k(batch, idx, 1)["x"])


def test_per_record_path_for_text_matches_the_jitted_path():
    op = stochastic_op()
    numeric = {"x": np.arange(5, dtype=np.float32)}
    with_text = {**numeric, "t": cols.object_column(["a", "b", "c", "d", "e"])}
    jitted = ChainKernel([op], pad_to=4)
    a = jitted(numeric, np.arange(5), 1)
    b = run_per_record([op], with_text, np.arange(5), 1)
    hybrid = jitted(with_text, np.arange(5), 1)  # text only passes through: jitted
    np.testing.assert_array_equal(hybrid["x"], a["x"])
    assert hybrid["t"].tolist() == ["a", "b", "c", "d", "e"] and jitted.compile_count == 2
    np.testing.assert_array_equal(b["x"], a["x"])
    assert b["x"].dtype == a["x"].dtype == np.float32
    assert b["t"].dtype == object and b["t"].tolist() == ["a", "b", "c", "d", "e"]


def test_text_rename_stays_jitted():
    def rename(element, key):
        return element.replace_data({"text": element.data["sentence"], "label": element.data["label"]})

    k = ChainKernel([ElementOperator(ElementOperatorConfig(), fn=rename)], pad_to=2)
    out = k({"sentence": cols.object_column(["hi", "yo"]), "label": np.array([1, 0])}, np.arange(2))
    assert sorted(out) == ["label", "text"]
    assert out["text"].dtype == object and out["text"].tolist() == ["hi", "yo"]
    # an untouched feature keeps its dtype (it used to be narrowed to int32)
    assert out["label"].dtype == np.int64 and out["label"].tolist() == [1, 0]
    assert k.compile_count == 1 and k.records_per_record_path == 0  # moving text is jitted


def test_empty_chain_and_empty_batch_pass_through_unchanged():
    batch = {"x": np.arange(3, dtype=np.int64)}
    out = ChainKernel([])(batch, np.arange(3))
    assert out["x"].dtype == np.int64 and out["x"].tolist() == [0, 1, 2]
    k = ChainKernel([stochastic_op()], pad_to=2)
    empty = k({"x": np.zeros(0, np.float32)}, np.arange(0))
    assert empty["x"].shape == (0,) and k.compile_count == 0


def test_bad_arguments():
    with pytest.raises(TypeError, match=r"Chain entry 1 must be an operator, got function"):
        ChainKernel([stochastic_op(), lambda e, k: e])
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match=r"`pad_to` must be a positive int, got"):
            ChainKernel([], pad_to=bad)
    assert ChainKernel([], pad_to=np.int64(3)).pad_to == 3
    k = ChainKernel([stochastic_op()])
    with pytest.raises(ValueError, match=r"Got 2 indices for a batch of 3 records"):
        k({"x": np.zeros(3, np.float32)}, np.arange(2))


def test_fingerprint_identifies_the_chain():
    a = ChainKernel([stochastic_op(0)]).fingerprint()
    assert a == ChainKernel([stochastic_op(0)]).fingerprint()
    assert a != ChainKernel([stochastic_op(1)]).fingerprint()
    assert a != ChainKernel([stochastic_op(0), stochastic_op(0)]).fingerprint()


# -- text features inside the jitted chain --------------------------------------------------
TEXT_BATCH = {"sentence": np.array(["a", "Bb", "ccc"], dtype=object), "raw": np.array([b"x", b"y", b"z"], dtype=object),
              "label": np.arange(3)}


def _op(fn):
    return ElementOperator(ElementOperatorConfig(), fn=fn)


def test_moved_and_dropped_text_stays_on_the_jitted_path_and_equals_per_record():
    def fn(e, k):
        d = dict(e.data)
        d["text"] = d.pop("sentence")  # rename
        del d["raw"]                   # drop
        d["label"] = d["label"] + 1
        return e.replace_data(d)

    kernel = ChainKernel([_op(fn)], pad_to=2)
    out = kernel(TEXT_BATCH, np.arange(3))
    assert kernel.compile_count == 1 and sorted(out) == ["label", "text"]
    assert out["text"].tolist() == ["a", "Bb", "ccc"] and out["label"].tolist() == [1, 2, 3]
    reference = run_per_record([_op(fn)], TEXT_BATCH, np.arange(3), 0)
    assert sorted(reference) == sorted(out) and reference["label"].tolist() == out["label"].tolist()


@pytest.mark.parametrize("fn", [
    lambda e, k: e.update_data({"t": e.data["sentence"].lower()}),
    lambda e, k: e.update_data({"t": e.data["sentence"] + "!"}),
    lambda e, k: e.update_data({"n": np.int32(len(e.data["raw"]))}),
    lambda e, k: e.update_data({"t": "yes" if e.data["sentence"] == "a" else "no"}),
    lambda e, k: e.update_data({"t": e.data["sentence"].lower()}) if isinstance(e.data["sentence"], str) else e,
])
def test_operators_that_use_text_values_fall_back_to_per_record(fn):
    kernel = ChainKernel([_op(fn)], pad_to=2)
    with pytest.warns(PerRecordPathWarning, match=r"Operator '<lambda>' runs per record.*feature '(sentence|raw)'"):
        out = kernel(TEXT_BATCH, np.arange(3))
    assert kernel.compile_count == 0 and kernel.records_per_record_path == 3
    expected = run_per_record([_op(fn)], TEXT_BATCH, np.arange(3), 0)
    for key in expected:
        assert list(out[key]) == list(expected[key]), key
    assert kernel(TEXT_BATCH, np.arange(3)).keys() == expected.keys()  # cached decision, same result
    assert kernel.records_per_record_path == 6


def test_a_genuine_operator_error_surfaces_from_the_per_record_path():
    with pytest.raises(KeyError, match="nope"):
        ChainKernel([_op(lambda e, k: e.update_data({"t": e.data["nope"]}))])(TEXT_BATCH, np.arange(3))


# -- online: device outputs, errors naming the record ----------------------------------------
def test_online_kernel_returns_device_arrays_and_untouched_columns():
    k = ChainKernel([_op(lambda e, k: e.update_data({"x": e.data["x"] + 1}))], pad_to=4, online=True)
    ids = np.array([2**40, 3, 4])
    out = k({"x": np.zeros(3, np.float32), "label": np.arange(3, dtype=np.int32), "id": ids,
             "t": TEXT_BATCH["sentence"]}, np.arange(3))
    assert isinstance(out["x"], jax.Array) and out["x"].tolist() == [1.0, 1.0, 1.0]
    assert isinstance(out["label"], jax.Array) and out["label"].dtype == np.int32
    assert out["id"] is ids and out["t"] is TEXT_BATCH["sentence"]


def _failing_host(batch, keys):
    if 13 in batch["i"]:
        raise ValueError("corrupt image")
    return batch


def _callback_fault(e, k):
    def host(i):
        if i == 13:
            raise ValueError("bad record")
        return np.float32(0)

    zero = jax.pure_callback(host, jax.ShapeDtypeStruct((), np.float32), e.metadata.index, vmap_method="sequential")
    return e.update_data({"x": e.data["x"] + zero})


@pytest.mark.parametrize("ops,who", [
    (lambda: [HostOperator(_failing_host, name="decode")], "Operator 'decode'"),
    (lambda: [_op(lambda e, k: e), ElementOperator(ElementOperatorConfig(), fn=_callback_fault, name="guard")],
     r"Operator one of \['<lambda>', 'guard'\] \(one jitted segment\)"),
])
def test_online_errors_name_the_record_the_operator_and_the_error(ops, who):
    k = ChainKernel(ops(), pad_to=8, online=True)
    batch = {"i": np.arange(10, 18), "x": np.zeros(8, np.float32)}
    with pytest.raises(OperatorError, match=rf"(?s){who} failed on record 13 \(epoch 2\): .*(corrupt image|bad record)") as info:
        k(batch, np.arange(10, 18), 2)
    assert info.value.index == 13 and isinstance(info.value.__cause__, Exception)
    assert k({"i": np.arange(3), "x": np.zeros(3, np.float32)}, np.arange(3))["i"].tolist() == [0, 1, 2]


def test_online_trace_errors_are_not_blamed_on_a_record():
    k = ChainKernel([_op(lambda e, k: e.update_data({"t": e.data["nope"]}))], online=True)
    with pytest.raises(KeyError, match="nope"):
        k(TEXT_BATCH, np.arange(3))
