"""Beam full-pass statistics: equal to numpy and to online, identical across runners and chunkings."""

from __future__ import annotations

import numpy as np
import pytest

from datarax_beam import from_source
from datarax_beam.operators import ElementOperator, ElementOperatorConfig
from datarax_beam.operators.statistics import Normalize, VocabularyLookup
from datarax_beam.runners import materialize, options
from datarax_beam.shards import load_shardset
from datarax_beam.shards.reader import read_columns
from datarax_beam.sources import MemorySource, MemorySourceConfig
from datarax_beam.statistics import load_statistics
from datarax_beam.testing import IteratorSource

N = 2300  # three statistics blocks, the last one partial
RNG = np.random.default_rng(5)
X = RNG.normal(2.0, 3.0, (N, 4, 2)).astype(np.float32)
WORD = np.array([f"w{int(i)}" for i in RNG.integers(0, 9, N)], dtype=object)


def make_pipeline(source=None, batch_size=64):
    source = source if source is not None else MemorySource(MemorySourceConfig(), {"x": X, "word": WORD})
    scale = ElementOperator(ElementOperatorConfig(), fn=lambda e, k: e.update_data({"x": e.data["x"] * 3 + 1}))
    return (from_source(source, batch_size=batch_size)
            >> Normalize("x", "raw", axes=(0,))
            >> scale
            >> Normalize("x", "scaled", axes="all")
            >> VocabularyLookup("word", top_k=5, output="word_id"))


def read_all(shardset):
    return read_columns(shardset)


def assert_same_statistics(a, b):
    assert set(a) == set(b)
    for name in a:
        for key in a[name]:
            np.testing.assert_array_equal(np.asarray(a[name][key]), np.asarray(b[name][key]), err_msg=f"{name}.{key}")


@pytest.fixture(scope="module")
def online():
    p = make_pipeline()
    batches = list(p)
    return p.statistics, {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in ("x", "word_id")}


@pytest.fixture(scope="module")
def inproc(tmp_path_factory):
    return materialize(make_pipeline(), str(tmp_path_factory.mktemp("s") / "out"), num_shards=3,
                       options=options.in_process())


def test_statistics_equal_numpy(inproc):
    stats = load_statistics(inproc.path)
    x = X.astype(np.float64)
    np.testing.assert_allclose(stats["raw"]["mean"], x.mean((0, 1)), rtol=1e-12)
    np.testing.assert_allclose(stats["raw"]["std"], x.std((0, 1)), rtol=1e-12)
    assert stats["scaled"]["count"] == X.size
    values, counts = np.unique(WORD, return_counts=True)
    top = sorted(zip(values, counts, strict=True), key=lambda vc: (-vc[1], vc[0]))[:5]
    assert stats["word_vocab"]["vocabulary"] == [v for v, _ in top]


def test_offline_statistics_and_output_equal_online(inproc, online):
    stats, columns = online
    assert_same_statistics(inproc.statistics, stats)
    assert_same_statistics(load_statistics(inproc.path), stats)
    data = read_all(inproc)
    np.testing.assert_array_equal(data["x"], columns["x"])
    np.testing.assert_array_equal(data["word_id"], columns["word_id"])


@pytest.mark.parametrize("runner", ["multi", "portable"])
def test_identical_across_runners(tmp_path, inproc, runner):
    opts = options.multi_process(2) if runner == "multi" else options.portable()
    other = materialize(make_pipeline(), str(tmp_path / "out"), num_shards=3, options=opts)
    assert_same_statistics(load_statistics(other.path), load_statistics(inproc.path))


@pytest.mark.parametrize("source,batch_size", [(None, 7), ("rows", 100)])
def test_identical_across_chunk_sizes_and_source_kinds(tmp_path, inproc, source, batch_size):
    pipeline = make_pipeline(IteratorSource({"x": X, "word": WORD}, name="rows") if source == "rows" else None, batch_size=batch_size)
    other = materialize(pipeline, str(tmp_path / "out"), num_shards=2, options=options.in_process())
    assert_same_statistics(load_statistics(other.path), load_statistics(inproc.path))
    np.testing.assert_array_equal(read_all(other)["x"], read_all(inproc)["x"])


def test_given_statistics_are_used_and_recorded(tmp_path, inproc):
    held_out = MemorySource(MemorySourceConfig(), {"x": X[:50], "word": WORD[:50]})
    pipeline = make_pipeline(held_out).with_statistics(load_statistics(inproc.path))
    shardset = materialize(pipeline, str(tmp_path / "out"), options=options.in_process())
    assert_same_statistics(load_statistics(shardset.path), load_statistics(inproc.path))
    np.testing.assert_array_equal(read_all(shardset)["x"], read_all(inproc)["x"][:50])
    assert load_shardset(shardset.path).statistics is not None


def test_analysis_branches_count_under_their_own_counters(tmp_path):
    from datarax_beam.runners import counters, run

    result = run(make_pipeline(), str(tmp_path / "out"), num_shards=2, options=options.in_process()).result
    c = counters(result)
    assert c["records_read"] == N and c["records_written"] == N and c["records_transformed"] == N
    # the passes of `analysis_plan`, as online: two consumers share one pass, a third needs another
    assert c["analysis_records_read"] == 2 * N
    assert c["records_analyzed"] == 2 * N
    # The analysis prefixes (the first is empty; text passes through) compile once per branch;
    # the full chain is one JAX segment (compiled once) and the host-side vocabulary lookup:
    # nothing runs per record.
    assert c["analysis_kernel_compilations"] == 1 and c["kernel_compilations"] == 1
    assert c.get("records_per_record_path", 0) == 0


@pytest.mark.parametrize("chunking", ["whole", "pieces"])
def test_a_block_analyzed_twice_fails_the_analysis(chunking):
    """Chunks covering a block twice (indices that repeat) are refused, whole or in pieces."""
    import apache_beam as beam

    from datarax_beam.statistics import BLOCK_SIZE, StatSpec
    from datarax_beam.transforms.readers import Chunk
    from datarax_beam.transforms.statistics import AnalyzeStatistics

    idx = np.arange(BLOCK_SIZE, dtype=np.int64)
    if chunking == "pieces":
        idx = idx[: BLOCK_SIZE // 2]
    chunk = Chunk(0, idx, idx, {"v": np.ones(len(idx), np.float32)})
    flags = options.build_options(options.in_process())
    match = "accumulated twice" if chunking == "whole" else "read more than once"
    with pytest.raises(Exception, match=match):
        with beam.Pipeline(runner=options.make_runner(flags), options=flags) as p:
            _ = p | beam.Create([chunk, chunk]) | AnalyzeStatistics([StatSpec(feature="v", name="v")])
