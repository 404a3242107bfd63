"""Block-wise statistics: equal to numpy, identical across chunkings and orders."""

import json

import numpy as np
import pytest

from datarax_beam.statistics import Statistics, StatSpec, compute_over_batches, load_statistics

N = 2500
RNG = np.random.default_rng(0)
X = RNG.normal(3.0, 2.0, (N, 4, 3)).astype(np.float32)
LABEL = RNG.integers(0, 10, N)
WORDS = np.array([f"w{i % 7}" for i in range(N)], dtype=object)
SPECS = [
    StatSpec("x"),
    StatSpec("x", name="per_channel", axes=(0,)),
    StatSpec("x", name="scalar", axes="all", histogram_range=(-5.0, 11.0), quantiles=3),
    StatSpec("label", name="label_vocab", vocabulary_top_k=3),
    StatSpec("word", name="words", vocabulary_top_k=0),
]


def chunks(size, order=1):
    starts = list(range(0, N, size))[::order]
    for s in starts:
        sel = np.arange(s, min(s + size, N))
        yield {"x": X[sel], "label": LABEL[sel], "word": WORDS[sel]}, sel


def test_moments_match_numpy_in_float64():
    stats = compute_over_batches(SPECS, chunks(500))
    x = X.astype(np.float64)
    np.testing.assert_allclose(stats["x"]["mean"], x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats["x"]["std"], x.std(0), rtol=1e-12)
    np.testing.assert_allclose(stats["per_channel"]["var"], x.var((0, 1)), rtol=1e-12)
    np.testing.assert_array_equal(stats["scalar"]["min"], x.min())
    np.testing.assert_array_equal(stats["scalar"]["max"], x.max())
    assert stats["scalar"]["count"] == N * 12
    assert stats["x"]["mean"].dtype == np.float64


def test_quantiles_within_one_bin_of_numpy():
    stats = compute_over_batches(SPECS, chunks(500))["scalar"]
    width = 16.0 / 1024
    np.testing.assert_allclose(stats["quantiles"], np.quantile(X.astype(np.float64), [0.25, 0.5, 0.75]), atol=width)
    assert stats["histogram"].sum() == X.size


def test_bit_identical_across_chunk_sizes_and_orders():
    ref = compute_over_batches(SPECS, chunks(1024))
    for size, order in [(7, 1), (333, -1), (2500, 1)]:
        other = compute_over_batches(SPECS, chunks(size, order))
        for name in ref:
            for key, value in ref[name].items():
                np.testing.assert_array_equal(np.asarray(other[name][key]), np.asarray(value), err_msg=f"{name}.{key}")


def test_vocabulary_top_k_with_ties_broken_by_value():
    labels = np.array([3, 1, 2, 2, 1, 3, 0])
    stats = compute_over_batches([StatSpec("l", vocabulary_top_k=2)], [({"l": labels}, np.arange(7))])
    assert stats["l"]["vocabulary"] == [1, 2]  # 1, 2, 3 each twice: ties by value
    assert stats["l"]["vocabulary_counts"].tolist() == [2, 2]
    assert stats["l"]["num_unique"] == 4
    words = compute_over_batches(SPECS, chunks(500))["words"]
    assert words["vocabulary"][:2] == ["w0", "w1"] and sum(words["vocabulary_counts"]) == N


def test_json_round_trip_and_load(tmp_path):
    stats = compute_over_batches(SPECS, chunks(500))
    stats.save(str(tmp_path))
    loaded = load_statistics(str(tmp_path))
    for name in stats:
        for key, value in stats[name].items():
            np.testing.assert_array_equal(np.asarray(loaded[name][key]), np.asarray(value))
    (tmp_path / "shardset").mkdir()
    (tmp_path / "shardset" / "shardset.json").write_text(json.dumps({"statistics": stats.to_json()}))
    assert float(load_statistics(str(tmp_path / "shardset"))["x"]["mean"][0, 0]) == float(stats["x"]["mean"][0, 0])


def test_errors_name_the_field_and_value(tmp_path):
    with pytest.raises(KeyError, match="feature 'nope'.*features \\['x'\\]"):
        compute_over_batches([StatSpec("nope")], [({"x": X[:4]}, np.arange(4))])
    with pytest.raises(ValueError, match="histogram_range=\\(lo, hi\\).*got None"):
        StatSpec("x", quantiles=4)
    with pytest.raises(ValueError, match="axes.*got 'rows'"):
        StatSpec("x", axes="rows")
    with pytest.raises(ValueError, match="axis 5 is out of range for feature 'x'"):
        compute_over_batches([StatSpec("x", axes=(5,))], [({"x": X[:4]}, np.arange(4))])
    with pytest.raises(TypeError, match="feature 'word' has dtype object"):
        compute_over_batches([StatSpec("word")], [({"word": WORDS[:4]}, np.arange(4))])
    with pytest.raises(ValueError, match="empty dataset"):
        compute_over_batches([StatSpec("x")], [])
    with pytest.raises(FileNotFoundError, match="neither statistics.json nor shardset.json"):
        (tmp_path / "empty").mkdir()
        load_statistics(str(tmp_path / "empty"))
    with pytest.raises(KeyError, match="No statistics named 'y'; available: \\['x'\\]"):
        Statistics({"x": {}})["y"]
