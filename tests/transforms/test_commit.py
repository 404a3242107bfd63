"""Finalize: retried duplicates are dropped, split shards are joined, gaps fail, marker last."""

from __future__ import annotations

import os

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordReader

from datarax_beam.shards import SHARDSET_FILE, Schema, load_shardset
from datarax_beam.shards.writer import write_shard_file
from datarax_beam.transforms.commit import Commit, PartInfo, finalize, prepare_output_dir
from datarax_beam.transforms.writer import output_permutation

SCHEMA = Schema.infer({"x": np.zeros((1, 2), np.int32)}).to_json()


def _part(tmp, shard, start, stop, tag=""):
    path = os.path.join(tmp, f"part-{shard}-{start}{tag}")
    records = [np.array([i, i], "<i4").tobytes() for i in range(start, stop)]
    _, size = write_shard_file(path, records)
    return PartInfo(shard, start, stop, path, size, SCHEMA)


def _commit(out, tmp, sizes):
    return Commit(out, tmp, len(sizes), "zstd", 0, False, "fp", {"datarax_beam": "x"}, {}, sizes)


def _records(path):
    r = ArrayRecordReader(path)
    try:
        return [int(np.frombuffer(b, "<i4")[0]) for b in r.read_all()]
    finally:
        r.close()


def test_duplicates_split_parts_and_empty_shards(tmp_path):
    out, tmp = str(tmp_path / "out"), str(tmp_path / "out" / ".datarax-tmp-x")
    os.makedirs(tmp)
    parts = [_part(tmp, 0, 0, 4), _part(tmp, 0, 0, 4, "-retry"),  # a retried bundle's twin
             _part(tmp, 1, 4, 6), _part(tmp, 1, 6, 8)]             # a shard split over bundles
    shardset = finalize(parts, _commit(out, tmp, (4, 4, 0)))
    assert [_records(p) for p in shardset.shard_paths] == [[0, 1, 2, 3], [4, 5, 6, 7], []]
    assert sorted(os.listdir(out)) == [
        "data-00000-of-00003.array_record", "data-00001-of-00003.array_record",
        "data-00002-of-00003.array_record", SHARDSET_FILE]
    assert load_shardset(out) == shardset and shardset.num_records == 8


def test_missing_records_fail_without_marker(tmp_path):
    out, tmp = str(tmp_path / "out"), str(tmp_path / "out" / ".tmp")
    os.makedirs(tmp)
    with pytest.raises(RuntimeError, match="no part starts at output position 2"):
        finalize([_part(tmp, 0, 0, 2), _part(tmp, 0, 3, 4)], _commit(out, tmp, (4,)))
    assert not os.path.exists(os.path.join(out, SHARDSET_FILE))


def test_prepare_output_dir(tmp_path):
    out = str(tmp_path / "o")
    prepare_output_dir(out, overwrite=False)  # creates it
    open(os.path.join(out, "data-00000-of-00001.array_record"), "wb").close()  # a failed job's
    open(os.path.join(out, "notes.txt"), "w").close()
    prepare_output_dir(out, overwrite=False)
    assert os.listdir(out) == ["notes.txt"]  # only our own stale files are removed
    open(os.path.join(out, SHARDSET_FILE), "w").close()
    with pytest.raises(FileExistsError):
        prepare_output_dir(out, overwrite=False)
    prepare_output_dir(out, overwrite=True)
    assert os.listdir(out) == ["notes.txt"]


def test_output_permutation_depends_on_seed_and_size_only():
    a = output_permutation(1, 100)
    assert sorted(a.tolist()) == list(range(100))
    assert np.array_equal(a, output_permutation(1, 100))
    assert not np.array_equal(a, output_permutation(2, 100))
