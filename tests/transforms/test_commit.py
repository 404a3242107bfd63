"""Finalize: retried duplicates are dropped, split shards are joined, gaps fail, the budget and the
lock are checked before anything moves, checksums and the job id are recorded, marker last."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

from datarax_beam.shards import SHARDSET_FILE, Schema, load_shardset
from datarax_beam.shards.checksum import sha256_file
from datarax_beam.shards.compress import group_size_for
from datarax_beam.shards.reader import read_shard
from datarax_beam.shards.shardset import ShardInfo, ShardSet
from datarax_beam.shards.writer import write_shard_file
from datarax_beam.transforms import dead_letter
from datarax_beam.transforms.commit import Commit, PartInfo, finalize, plan_names
from datarax_beam.transforms.dead_letter import FailureBudgetExceeded
from datarax_beam.transforms.lock import OutputDirLocked
from datarax_beam.transforms.writer import output_permutation

SCHEMA = Schema.infer({"x": np.zeros((1, 2), np.int32)})
JOB = uuid.uuid4().hex
GROUP = group_size_for(SCHEMA.record_nbytes)


def _part(tmp, shard, start, stop, tag="", failed=()):
    path = os.path.join(tmp, f"part-{shard}-{start}{tag}")
    records = [np.array([i, i], "<i4").tobytes() for i in range(start, stop) if i not in failed]
    _, size = write_shard_file(path, records, group_size=GROUP)  # as the job's writers (8-byte records)
    errors = None
    if failed:
        errors = path + ".errors.jsonl"
        entries = [{"index": i, "position": i, "stage": "operators", "error_type": "ValueError",
                    "message": f"bad {i}", "source": {}} for i in failed]
        with open(errors, "wb") as f:
            f.write(dead_letter.dumps(entries))
    return PartInfo(shard, start, stop, path, size, sha256_file(path), len(failed), errors)


def _commit(out, tmp, sizes, **kw):
    return Commit(out, tmp, len(sizes), "zstd", 0, False, "fp", {"datarax_beam": "x"}, {}, sizes,
                  schema=SCHEMA.to_json(), job_id=JOB, locked=False, **kw)


def _records(path):
    return [int(np.frombuffer(b, "<i4")[0]) for b in read_shard(path, "zstd")]


def test_duplicates_split_parts_and_empty_shards(tmp_path):
    out, tmp = str(tmp_path / "out"), str(tmp_path / "out" / ".datarax-tmp-x")
    os.makedirs(tmp)
    parts = [_part(tmp, 0, 0, 4), _part(tmp, 0, 0, 4, "-retry"),  # a retried bundle's twin
             _part(tmp, 1, 4, 6), _part(tmp, 1, 6, 8, failed=(7,))]  # a shard split over bundles
    shardset = finalize(parts, _commit(out, tmp, (4, 4, 0), max_failed_fraction=1.0))
    assert [_records(p) for p in shardset.shard_paths] == [[0, 1, 2, 3], [4, 5, 6], []]
    assert sorted(os.listdir(out)) == [
        "data-00000-of-00003.array_record", "data-00001-of-00003.array_record",
        "data-00002-of-00003.array_record", "errors", SHARDSET_FILE]  # temp directory removed
    assert load_shardset(out) == shardset and shardset.num_records == 7 and shardset.num_failed == 1
    assert shardset.job_id == JOB
    for info, path in zip(shardset.shards, shardset.shard_paths, strict=True):  # checksums of the final files
        assert info.sha256 == sha256_file(path) and info.num_bytes == os.path.getsize(path)
    assert [s.num_failed for s in shardset.shards] == [0, 1, 0]
    assert shardset.error_paths == [os.path.join(out, "errors", "errors-00001-of-00003.jsonl")]
    # the joined shard holds the parts' stored records unchanged: the file one part would be
    one_part = _part(str(tmp_path), 1, 4, 8, failed=(7,))
    with open(shardset.shard_paths[1], "rb") as f, open(one_part.path, "rb") as g:
        assert f.read() == g.read()


def test_missing_records_fail_without_marker(tmp_path):
    out, tmp = str(tmp_path / "out"), str(tmp_path / "out" / ".tmp")
    os.makedirs(tmp)
    with pytest.raises(RuntimeError, match="no part starts at output position 2"):
        finalize([_part(tmp, 0, 0, 2), _part(tmp, 0, 3, 4)], _commit(out, tmp, (4,)))
    assert not os.path.exists(os.path.join(out, SHARDSET_FILE))


def test_failure_budget_is_checked_before_anything_moves(tmp_path):
    out, tmp = str(tmp_path / "out"), str(tmp_path / "out" / ".tmp")
    os.makedirs(tmp)
    parts = [_part(tmp, 0, 0, 10, failed=(1, 2)), _part(tmp, 1, 10, 20)]
    with pytest.raises(FailureBudgetExceeded, match=r"2 of 20 records failed \(10.0%\), more than "
                                                   r"max_failed_fraction=0.05 allows.*Record 1 .*bad 1"):
        finalize(parts, _commit(out, tmp, (10, 10), max_failed_fraction=0.05))
    assert os.listdir(out) == [".tmp"]  # nothing renamed, no marker
    shardset = finalize(parts, _commit(out, tmp, (10, 10), max_failed_fraction=0.1))  # 10% is within
    assert shardset.num_failed == 2


def test_commit_refused_without_the_lock(tmp_path):
    out, tmp = str(tmp_path / "out"), str(tmp_path / "out" / ".tmp")
    os.makedirs(tmp)
    with pytest.raises(OutputDirLocked, match=f"Job {JOB} lost its lock .*nothing is committed"):
        finalize([_part(tmp, 0, 0, 2)], _commit(out, tmp, (2,))._replace(locked=True))
    assert os.listdir(out) == [".tmp"]


def test_plan_names_never_reuse_the_replaced_sets_files(tmp_path):
    assert plan_names(2, None, "abc") == (
        ("data-00000-of-00002.array_record", "data-00001-of-00002.array_record"), ())
    old = ShardSet(str(tmp_path), (ShardInfo("data-00000-of-00002.array_record", 1, 1, "0" * 64, 1),
                                   ShardInfo("data-00001-of-00002-0123456789ab.array_record", 1, 1, "0" * 64)),
                   SCHEMA, job_id=JOB)
    names, replaced = plan_names(2, old, "fedcba987654")
    assert names == ("data-00000-of-00002-fedcba987654.array_record", "data-00001-of-00002.array_record")
    assert replaced == (*old.shard_paths, os.path.join(str(tmp_path), "errors", "errors-00000-of-00002.jsonl"))
    assert plan_names(3, old, "x")[0][0] == "data-00000-of-00003.array_record"  # other names: plain


def test_output_permutation_depends_on_seed_and_size_only():
    a = output_permutation(1, 100)
    assert sorted(a.tolist()) == list(range(100))
    assert np.array_equal(a, output_permutation(1, 100))
    assert not np.array_equal(a, output_permutation(2, 100))
