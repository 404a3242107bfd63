"""Staged and in-process readers return exactly what the source's get_batch returns."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from datarax_beam.sources import MemorySource
from datarax_beam.testing import assert_same
from datarax_beam.transforms import staging


def _source(n=40):
    return MemorySource(data={
        "image": np.arange(n * 6, dtype=np.float32).reshape(n, 2, 3),
        "label": np.arange(n, dtype=np.int64),
        "text": [f"t{i}" * (i % 3) for i in range(n)],
        "raw": [bytes(range(i % 5)) for i in range(n)],
        "ragged": [np.ones(i % 4, np.float32) * i for i in range(n)],
    })


INDEX_SETS = [np.arange(5, 17), np.array([39, 0, 7, 7, 12]), np.array([], dtype=np.int64)]


def test_staged_reader_matches_get_batch(tmp_path):
    src = _source()
    reader = staging.index_reader(src, str(tmp_path / "staged"))
    assert isinstance(reader, staging.StagedMemoryReader)
    assert len(pickle.dumps(reader)) < 1000  # the data is not in the pickle
    reader = pickle.loads(pickle.dumps(reader))
    reader.setup()
    for idx, batch in zip(INDEX_SETS[:2], reader.read_batches(INDEX_SETS[:2]), strict=True):
        assert list(batch) == list(src.columns)
        assert_same(batch, src.get_batch(idx))
    assert sorted(os.listdir(tmp_path / "staged")) == [  # files named by column position
        "column-00000.npy", "column-00001.npy", "objects.blob", "objects.offsets.npy", "staged.json"]


@pytest.mark.parametrize("name", ["../../ESCAPED", "n" * 300, "a\x00b", "/abs", "con", ".."])
def test_feature_names_never_become_file_names(tmp_path, name):
    src = MemorySource(data={name: np.arange(6, dtype=np.int64), "t": [f"t{i}" for i in range(6)]})
    directory = tmp_path / "a" / "b" / "staged"
    reader = staging.index_reader(src, str(directory))
    reader = pickle.loads(pickle.dumps(reader))
    reader.setup()
    assert_same(next(reader.read_batches([np.arange(6)])), src.get_batch(np.arange(6)))
    assert sorted(os.listdir(tmp_path)) == ["a"] and sorted(os.listdir(tmp_path / "a")) == ["b"]
    assert "column-00000.npy" in os.listdir(directory)


def test_in_process_reader_shares_by_token():
    src = _source()
    reader = staging.index_reader(src, "unused", in_process_token="tok-1")
    try:
        assert isinstance(reader, staging.InProcessReader)
        reader = pickle.loads(pickle.dumps(reader))
        reader.setup()
        for idx, batch in zip(INDEX_SETS, reader.read_batches(INDEX_SETS), strict=True):
            assert_same(batch, src.get_batch(idx))
    finally:
        staging.unregister_in_process("tok-1")
    with pytest.raises(RuntimeError, match="in_memory"):
        staging.InProcessReader("tok-1").setup()


def test_other_random_access_sources_travel_as_they_are():
    class Squares(MemorySource):
        def _read(self, indices):
            return {"x": indices.astype(np.int64) ** 2}

    src = Squares(data={"x": np.zeros(10)})
    reader = staging.index_reader(src, "unused")
    assert isinstance(reader, staging.SourceIndexReader)
    reader.setup()
    assert next(reader.read_batches([np.array([3, 4])]))["x"].tolist() == [9, 16]


def test_shared_memory_dir_only_where_there_is_room(tmp_path):
    made = staging.shared_memory_dir(10, root=str(tmp_path))
    assert made is not None and os.path.dirname(made) == str(tmp_path) and os.path.isdir(made)
    assert staging.shared_memory_dir(1 << 62, root=str(tmp_path)) is None  # no room: the temp dir is used
    assert staging.shared_memory_dir(10, root=str(tmp_path / "absent")) is None


def test_source_nbytes_counts_numeric_columns_exactly():
    src = MemorySource(data={"x": np.zeros((10, 4), np.float32), "s": np.array(["a"] * 10, dtype=object)})
    assert staging.source_nbytes(src) == 160 + 64 * 10


def test_save_array_makes_the_directory_it_writes_into(tmp_path):
    path = str(tmp_path / "staged" / "order.npy")  # the staging directory does not exist yet
    staging.save_array(path, np.arange(5))
    np.testing.assert_array_equal(np.load(path), np.arange(5))
