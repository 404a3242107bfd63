"""Shard planning and the index-range reader, run on the real (in-process) DirectRunner."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from datarax_beam.runners import build_options, make_runner, options
from datarax_beam.sources import MemorySource
from datarax_beam.transforms import ReadIndexRanges, ShardTask, plan_tasks
from datarax_beam.transforms.staging import SourceIndexReader, save_array


def test_plan_tasks_is_contiguous_like_array_split():
    tasks = plan_tasks(10, 4)
    assert tasks == [ShardTask(0, 0, 3), ShardTask(1, 3, 6), ShardTask(2, 6, 8), ShardTask(3, 8, 10)]
    assert [t.stop - t.start for t in plan_tasks(2, 3)] == [1, 1, 0]
    sizes = [len(p) for p in np.array_split(np.arange(1001), 7)]
    assert [t.stop - t.start for t in plan_tasks(1001, 7)] == sizes


def test_read_index_ranges_emits_chunks_with_positions_and_indices(tmp_path):
    src = MemorySource(data={"x": np.arange(10, dtype=np.int64) * 10})
    order = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    order_path = str(tmp_path / "order.npy")
    save_array(order_path, order)
    opts = build_options(options.in_process())
    with BeamTestPipeline(runner=make_runner(opts), options=opts) as p:
        chunks = p | ReadIndexRanges(SourceIndexReader(src), plan_tasks(10, 3), order_path, batch_size=3)
        rows = chunks | beam.Map(lambda c: (c.shard, c.positions.tolist(), c.indices.tolist(), c.columns["x"].tolist()))
        assert_that(rows, equal_to([
            (0, [0, 1, 2], [9, 8, 7], [90, 80, 70]), (0, [3], [6], [60]),
            (1, [4, 5, 6], [5, 4, 3], [50, 40, 30]),
            (2, [7, 8, 9], [2, 1, 0], [20, 10, 0]),
        ]))


def test_chunks_have_a_coder_that_sizes_them_without_pickling(monkeypatch):
    import pickle

    from datarax_beam.transforms.readers import Chunk, ChunkCoder

    chunk = Chunk(0, np.arange(4, dtype=np.int64), np.arange(4, dtype=np.int64),
                  {"x": np.zeros((4, 1000), np.float32), "s": ["a", "b", "c", "d"]})
    coder = beam.coders.registry.get_coder(Chunk)
    assert isinstance(coder, ChunkCoder)
    back = coder.decode(coder.encode(chunk))
    assert back.shard == 0 and back.columns["s"] == chunk.columns["s"]
    np.testing.assert_array_equal(back.columns["x"], chunk.columns["x"])
    monkeypatch.setattr(pickle, "dumps", lambda *a, **k: (_ for _ in ()).throw(AssertionError("pickled")))
    assert 16_000 <= coder.estimate_size(chunk) < 17_000  # the float columns' bytes, about
