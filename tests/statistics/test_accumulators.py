"""Accumulators: non-finite values are left out of moments and histograms and counted; vocabularies
count strings, bytes, ints and arrays of them, with None counted as missing."""

import json

import numpy as np
import pytest

from datarax_beam.statistics import Statistics, StatSpec, compute_over_batches
from datarax_beam.statistics.accumulators import Vocabulary, flatten_values


def _stats(spec, column):
    return compute_over_batches([spec], [({spec.feature: column}, np.arange(len(column)))])[spec.name]


def test_nan_and_inf_are_left_out_and_counted():
    x = np.array([1.0, np.nan, 3.0, np.inf, -np.inf, 5.0], np.float32)
    s = _stats(StatSpec("x", axes="all", histogram_range=(0.0, 10.0), histogram_bins=10), x)
    finite = np.array([1.0, 3.0, 5.0])
    assert s["count"] == 3 and s["nan_count"] == 1 and s["inf_count"] == 2
    assert s["mean"] == finite.mean() and s["std"] == finite.std()
    assert (s["min"], s["max"]) == (1.0, 5.0)
    assert s["histogram"].sum() == 3


def test_per_position_counts_and_an_all_nan_position():
    x = np.array([[1.0, np.nan], [3.0, np.nan], [np.nan, np.nan]])
    s = _stats(StatSpec("x"), x)
    assert s["count"].tolist() == [2, 0] and s["nan_count"].tolist() == [1, 3]
    assert s["mean"][0] == 2.0 and np.isnan(s["mean"][1]) and np.isnan(s["std"][1]) and np.isnan(s["min"][1])
    # strict JSON (no NaN literal) and back
    text = json.dumps(Statistics({"x": s}).to_json(), allow_nan=False)
    back = Statistics.from_json(json.loads(text))["x"]
    assert np.isnan(back["mean"][1]) and back["mean"][0] == 2.0


def test_finite_data_counts_zero_and_blocks_merge_identically():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 3))
    x[17, 1] = np.nan
    x[2500, 0] = np.inf
    spec = StatSpec("x")
    one = compute_over_batches([spec], [({"x": x}, np.arange(3000))])["x"]
    pieces = compute_over_batches([spec], [({"x": x[s:s + 7]}, np.arange(s, min(s + 7, 3000)))
                                           for s in range(0, 3000, 7)])["x"]
    for key in one:
        np.testing.assert_array_equal(np.asarray(pieces[key]), np.asarray(one[key]), err_msg=key)
    np.testing.assert_allclose(one["mean"], np.nanmean(np.where(np.isinf(x), np.nan, x), axis=0), rtol=1e-12)
    assert one["nan_count"].tolist() == [0, 1, 0] and one["inf_count"].tolist() == [1, 0, 0]
    clean = _stats(StatSpec("x"), rng.normal(size=(10, 2)))
    assert clean["nan_count"].tolist() == [0, 0] and clean["count"].tolist() == [10, 10]


def test_vocabulary_of_strings_with_none_and_arrays():
    column = np.empty(5, dtype=object)
    column[:] = ["b", None, np.array(["a", "b"]), ["c", "b"], np.str_("a")]
    s = _stats(StatSpec("w", vocabulary_top_k=0), column)
    assert s["vocabulary"] == ["b", "a", "c"] and s["vocabulary_counts"].tolist() == [3, 2, 1]
    assert s["num_missing"] == 1 and s["num_unique"] == 3
    assert all(type(v) is str for v in s["vocabulary"])
    unicode = np.array([["x", "y"], ["y", "y"]])  # a numpy <U column
    assert _stats(StatSpec("u", vocabulary_top_k=1), unicode)["vocabulary"] == ["y"]


def test_vocabulary_of_bytes_survives_json():
    column = np.array([b"\xff", b"a", b"a"], dtype=object)
    s = Statistics({"v": _stats(StatSpec("v", vocabulary_top_k=0), column)})
    back = Statistics.from_json(json.loads(json.dumps(s.to_json())))
    assert back["v"]["vocabulary"] == [b"a", b"\xff"]
    mixed = Statistics({"m": {"vocabulary": [b"a", "a", 3]}})
    assert Statistics.from_json(json.loads(json.dumps(mixed.to_json())))["m"]["vocabulary"] == [b"a", "a", 3]


def test_vocabulary_of_ints_with_none_and_bad_values():
    column = np.array([3, None, 3, np.int64(4)], dtype=object)
    s = _stats(StatSpec("i", vocabulary_top_k=0), column)
    assert s["vocabulary"] == [3, 4] and s["num_missing"] == 1
    assert all(type(v) is int for v in s["vocabulary"])
    with pytest.raises(TypeError, match="got float: 1.5"):
        Vocabulary.from_values(np.array(["a", 1.5], dtype=object))
    with pytest.raises(TypeError, match="got dtype float32"):
        Vocabulary.from_values(np.zeros(3, np.float32))


def test_flatten_values():
    column = np.empty(3, dtype=object)
    column[:] = ["a", np.array([["b", "c"]]), ("d",)]
    assert flatten_values(column) == ["a", "b", "c", "d"]


def test_vocabulary_order_count_then_value_for_one_and_mixed_types():
    words = np.array(["b", "c", "a", "c", "b"], dtype=object)
    assert _stats(StatSpec("w", vocabulary_top_k=0), words)["vocabulary"] == ["b", "c", "a"]
    mixed = np.array(["b", 3, "a", 3, b"z"], dtype=object)
    assert _stats(StatSpec("m", vocabulary_top_k=0), mixed)["vocabulary"] == [3, "a", "b", b"z"]
