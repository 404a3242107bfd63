"""VocabularyLookup: strings, bytes, None, arrays of strings and integers; host or JAX form;
online equals offline (the vocabulary crosses Beam as JSON)."""

from __future__ import annotations

import numpy as np
import pytest

from datarax_beam import from_source
from datarax_beam.core import columns as cols
from datarax_beam.kernels import ChainKernel
from datarax_beam.operators import HostOperator
from datarax_beam.operators.statistics import VocabularyLookup
from datarax_beam.runners import materialize, options
from datarax_beam.shards.reader import read_columns
from datarax_beam.sources import MemorySource
from datarax_beam.statistics import compute_over_batches


def bind(op, column):
    stats = compute_over_batches(op.statistics_specs(), [({op.feature: column}, np.arange(len(column)))])
    return op.with_statistics(stats)


def obj(values):
    return cols.object_column(values)


def test_strings_with_none_map_none_and_unknown_to_oov():
    words = obj(["b", "a", None, "b", "c", "b", "a"])
    op = bind(VocabularyLookup("w", top_k=2, output="w_id"), words)
    assert isinstance(op, HostOperator)
    out = op.apply_batch({"w": obj(["a", None, "b", "zzz"])}, None)
    assert out["w_id"].dtype == np.int32 and out["w_id"].tolist() == [1, 2, 0, 2]
    assert out["w"].tolist() == ["a", None, "b", "zzz"]  # the input is kept
    assert op.bound_statistics["w_vocab"]["num_missing"] == 1


def test_arrays_of_strings_per_record_keep_their_shape():
    tokens = obj([np.array(["the", "cat"]), ["the", "dog", "the"], np.array([], dtype="<U1"), None])
    op = bind(VocabularyLookup("t"), tokens)
    assert op.bound_statistics["t_vocab"]["vocabulary"] == ["the", "cat", "dog"]
    out = op.apply_batch({"t": tokens}, None)["t"]
    assert [np.asarray(r).tolist() if r is not None else None for r in out] == [[0, 1], [0, 2, 0], [], 3]
    same = op.apply_batch({"t": obj([np.array(["cat", "x"]), np.array(["dog", "the"])])}, None)["t"]
    assert same.dtype == np.int32 and same.tolist() == [[1, 3], [2, 0]]  # equal shapes stack
    unicode = np.array([["the", "cat"], ["x", "the"]])  # a numpy <U column
    assert op.apply_batch({"t": unicode}, None)["t"].tolist() == [[0, 1], [3, 0]]


def test_bytes_and_the_per_record_form():
    op = bind(VocabularyLookup("b"), obj([b"x", b"y", b"y"]))
    assert op.apply_batch({"b": obj([b"y", b"x", "y"])}, None)["b"].tolist() == [0, 1, 2]  # str is not bytes
    from datarax_beam.core.element import Element

    assert int(op(Element({"b": b"x"})).data["b"]) == 1


def test_integers_run_in_jax_and_none_or_wide_ints_on_the_host():
    ints = np.array([7, 7, 3, 9, 3, 7])
    op = bind(VocabularyLookup("i"), ints)
    assert not isinstance(op, HostOperator)  # fused into the jitted segment
    out = ChainKernel([op], pad_to=4)({"i": np.array([7, 3, 9, 5, 7, 3])}, np.arange(6))
    assert out["i"].tolist() == [0, 1, 2, 3, 0, 1]
    with_none = bind(VocabularyLookup("i"), obj([7, None, 3, 7]))
    assert isinstance(with_none, HostOperator)
    assert with_none.apply_batch({"i": obj([3, None, 8])}, None)["i"].tolist() == [1, 2, 2]
    wide = bind(VocabularyLookup("i"), np.array([2**40, 5, 5], np.int64))
    assert isinstance(wide, HostOperator)
    assert wide.apply_batch({"i": np.array([2**40, 5, 6], np.int64)}, None)["i"].tolist() == [1, 0, 2]


def test_errors_name_the_feature_and_value():
    op = bind(VocabularyLookup("w", output="id"), obj(["a"]))
    with pytest.raises(TypeError, match="feature 'w' holds a dict"):
        op.apply_batch({"w": obj([{"k": 1}])}, None)
    with pytest.raises(KeyError, match="no feature 'w'; the records have \\['v'\\]"):
        op.apply_batch({"v": obj(["a"])}, None)
    with pytest.raises(TypeError, match="got float: 1.5"):
        bind(VocabularyLookup("w"), obj(["a", 1.5]))
    with pytest.raises(TypeError, match="`feature` must be a non-empty str"):
        VocabularyLookup("")


N = 300
COLOR = obj([None if i % 11 == 0 else ["red", "green", "blue"][i % 3] for i in range(N)])
CODE = obj([b"\xff\x00" if i % 2 else b"ok" for i in range(N)])
TOKENS = obj([np.array(["a", "b", "c"][: 1 + i % 3]) for i in range(N)])


def categorical_pipeline():
    src = MemorySource(data={"color": COLOR, "code": CODE, "tokens": TOKENS, "n": np.arange(N) % 4})
    return (from_source(src, batch_size=64)
            >> VocabularyLookup("color", output="color_id")
            >> VocabularyLookup("code", output="code_id")
            >> VocabularyLookup("tokens", output="token_ids")
            >> VocabularyLookup("n", output="n_id")
            >> HostOperator(lambda b, k: {k_: v for k_, v in b.items() if k_.endswith(("_id", "_ids"))}, name="ids_only"))


def test_online_equals_offline_with_none_bytes_and_token_arrays(tmp_path):
    # (the shard codec stores neither None nor arrays of strings: the raw columns are dropped)
    online = categorical_pipeline()
    batches = list(online)
    color = np.concatenate([np.asarray(b["color_id"]) for b in batches])
    assert (color[[i for i in range(N) if i % 11 == 0]] == 3).all()  # None -> out of vocabulary
    assert sorted(set(color.tolist())) == [0, 1, 2, 3]
    code = np.concatenate([np.asarray(b["code_id"]) for b in batches])
    assert sorted(set(code.tolist())) == [0, 1]  # bytes found in the vocabulary
    shardset = materialize(categorical_pipeline(), str(tmp_path / "out"), num_shards=2, options=options.in_process())
    offline = read_columns(shardset)
    np.testing.assert_array_equal(np.asarray(offline["color_id"]), color)
    np.testing.assert_array_equal(np.asarray(offline["code_id"]), code)
    online_tokens = [np.asarray(t).tolist() for b in batches for t in b["token_ids"]]
    assert [np.asarray(t).tolist() for t in offline["token_ids"]] == online_tokens
    assert online_tokens[:3] == [[0], [0, 1], [0, 1, 2]]
    assert shardset.statistics["color_vocab"]["num_missing"] == N // 11 + 1
