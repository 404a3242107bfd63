"""WriteShardSet on its own: the commit, dead letters and failure budget, the schema it infers,
the index check, the lock, and its arguments."""

from __future__ import annotations

import json
import os

import apache_beam as beam
import numpy as np
import pytest

from datarax_beam.runners import build_options, make_runner, options
from datarax_beam.shards import SHARDSET_FILE, Schema, load_shardset
from datarax_beam.sources import ArrayRecordSourceModule
from datarax_beam.transforms import (
    DeadLetter,
    WriteShardSet,
)
from datarax_beam.transforms.lock import LOCK_FILE, JobLock
from datarax_beam.transforms.settings import RECORDS_PER_SHARD, default_num_shards


def beam_pipeline() -> beam.Pipeline:
    opts = build_options(options.in_process())
    return beam.Pipeline(runner=make_runner(opts), options=opts)


def write(records, out, **kwargs):
    with beam_pipeline() as p:
        _ = p | beam.Create(records) | WriteShardSet(str(out), **kwargs)


def rows(n, start=0):
    return [(i, {"x": np.full(2, i, np.float32), "id": np.int64(i)}) for i in range(start, n)]


def leftovers(out):
    return sorted(n for n in os.listdir(out) if n.startswith(".datarax"))


def test_commits_a_set_in_index_order_with_shardset_json_last(tmp_path):
    out = tmp_path / "out"
    write(list(reversed(rows(25))), out, num_shards=3, batch_size=4, fingerprint="mine")
    shardset = load_shardset(str(out))
    assert [s.num_records for s in shardset.shards] == [9, 8, 8]
    assert shardset.fingerprint == "mine" and shardset.extra == {"writer": "WriteShardSet"}
    assert shardset.schema == Schema.infer({"x": np.zeros((1, 2), np.float32), "id": np.zeros(1, np.int64)})
    reader = ArrayRecordSourceModule(str(out))
    np.testing.assert_array_equal(reader.get_batch(np.arange(25))["id"], np.arange(25))
    assert leftovers(out) == []  # no temp directory, no lock


def test_dead_letters_and_misfits_go_to_errors_and_shards_keep_positions(tmp_path):
    records = rows(12)
    records[3] = (3, DeadLetter({"index": 3, "position": 3, "stage": "operators", "error_type": "ValueError",
                                 "message": "bad", "source": {}}))
    records[8] = (8, {"x": np.zeros(5, np.float32), "id": np.int64(8)})  # x has another shape
    out = tmp_path / "out"
    write(records, out, num_shards=2, batch_size=4, max_failed_fraction=0.5)
    shardset = load_shardset(str(out))
    assert shardset.num_failed == 2 and [s.num_records for s in shardset.shards] == [5, 5]
    entries = [json.loads(line) for path in shardset.error_paths for line in open(path)]
    assert [(e["index"], e["stage"]) for e in entries] == [(3, "operators"), (8, "encode")]
    assert "feature 'x': expected <f4[2], got <f4[5]" in entries[1]["message"]
    reader = ArrayRecordSourceModule(str(out))
    assert reader.get_batch(np.arange(10))["id"].tolist() == [0, 1, 2, 4, 5, 6, 7, 9, 10, 11]


def test_past_the_failure_budget_nothing_is_committed_and_nothing_is_left(tmp_path):
    records = [(i, DeadLetter({"index": i, "position": i, "stage": "read", "error_type": "OSError",
                               "message": "gone", "source": {}})) if i % 2 else (i, r) for i, r in rows(10)]
    out = tmp_path / "out"
    with pytest.raises(Exception, match=r"5 of 10 records failed .*max_failed_fraction=0.1"):
        write(records, out, num_shards=2)
    assert not (out / SHARDSET_FILE).exists() and leftovers(out) == []
    write(rows(4), out, num_shards=1)  # the directory is free again at once
    assert load_shardset(str(out)).num_records == 4


def test_raise_fails_on_the_first_misfit(tmp_path):
    records = rows(6) + [(6, {"x": "text", "id": np.int64(6)})]
    with pytest.raises(Exception, match=r"Record 6 .*failed in stage 'encode'"):
        write(records, tmp_path / "out", on_error="raise")


def test_schema_is_inferred_from_the_records_of_smallest_index_whatever_the_bundles(tmp_path):
    # Records 0..3 hold x of shape (2,); record 5 another: it is the misfit, on any bundling.
    records = rows(8)
    records[5] = (5, {"x": np.zeros(3, np.float32), "id": np.int64(5)})
    for batch_size in (4, 3):
        out = tmp_path / f"out{batch_size}"
        write(list(reversed(records)), out, num_shards=2, batch_size=batch_size, max_failed_fraction=0.5)
        shardset = load_shardset(str(out))
        assert shardset.schema.to_json()["features"][1]["shape"] == [2]
        assert shardset.num_failed == 1


def test_a_declared_schema_is_used(tmp_path):
    schema = Schema.infer({"x": np.zeros((1, 2), np.float64), "id": np.zeros(1, np.int64)})
    write(rows(3), tmp_path / "out", schema=schema, max_failed_fraction=1.0)
    shardset = load_shardset(str(tmp_path / "out"))
    assert shardset.schema == schema and shardset.num_failed == 3  # float32 x does not fit float64


@pytest.mark.parametrize("indices, message", [
    ([0, 1, 1, 2], r"of the 4 records, index 1 occurs more than once"),
    ([0, 1, 3], r"of the 3 records, index 2 is missing \(the largest is 3\)"),
    ([1, 2], r"of the 2 records, index 0 is missing"),
])
def test_indices_must_be_0_to_n_minus_1(tmp_path, indices, message):
    out = tmp_path / "out"
    with pytest.raises(Exception, match=message):
        write([(i, {"id": np.int64(i)}) for i in indices], out)
    assert not (out / SHARDSET_FILE).exists()


def test_an_empty_input_commits_an_empty_set(tmp_path):
    write([], tmp_path / "out", num_shards=2)
    shardset = load_shardset(str(tmp_path / "out"))
    assert shardset.num_records == 0 and len(shardset.shards) == 2


def test_default_shard_count_comes_from_the_record_count():
    assert default_num_shards(0) == 1 and default_num_shards(RECORDS_PER_SHARD + 1) == 2


def test_a_committed_directory_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    write(rows(3), out)
    with pytest.raises(FileExistsError, match=r"already holds a committed shard set .*overwrite=True"):
        WriteShardSet(str(out))
    write(rows(5), out, overwrite=True, num_shards=1)
    assert load_shardset(str(out)).num_records == 5
    assert sorted(os.listdir(out)) == ["data-00000-of-00001-" + load_shardset(str(out)).job_id[:12] + ".array_record",
                                       SHARDSET_FILE]


def test_a_directory_another_job_holds_is_refused_at_commit_and_left_clean(tmp_path):
    out = tmp_path / "out"
    os.makedirs(out)
    holder = JobLock(str(out), "f" * 32, str(out / ".datarax-tmp-ffffffffffff")).acquire(lambda: set())
    try:
        with pytest.raises(Exception, match=r"is in use by job f{32}"):
            write(rows(3), out)
        assert leftovers(out) == [LOCK_FILE]
    finally:
        holder.release()


@pytest.mark.parametrize("kwargs, error, message", [
    ({"output_dir": 3}, TypeError, r"`output_dir` must be a path string .*got int"),
    ({"num_shards": 0}, ValueError, r"`num_shards` must be an int >= 1, got 0"),
    ({"shuffle": "yes"}, TypeError, r"`shuffle` must be a bool, got 'yes'"),
    ({"seed": 1.5}, TypeError, r"`seed` must be an int, got 1.5"),
    ({"compression": "lz4"}, ValueError, r"unknown compression 'lz4'"),
    ({"on_error": "ignore"}, ValueError, r"Unknown `on_error` 'ignore'"),
    ({"max_failed_fraction": 2}, ValueError, r"`max_failed_fraction` must be a number in \[0, 1\], got 2"),
    ({"schema": "x:int"}, TypeError, r"`schema` must be a datarax_beam Schema or its JSON dict, got str"),
    ({"batch_size": -1}, ValueError, r"`batch_size` must be an int >= 1, got -1"),
    ({"statistics": [1]}, TypeError, r"`statistics` must be a dict or a singleton PCollection, got list"),
])
def test_arguments_are_checked_when_built(tmp_path, kwargs, error, message):
    args = {"output_dir": str(tmp_path / "out"), **kwargs}
    with pytest.raises(error, match=message):
        WriteShardSet(args.pop("output_dir"), **args)
