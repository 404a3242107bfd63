"""ReadShardSet: a materialized set read back in a Beam job, split by record ranges (initial
splits at shard boundaries, dynamic splits through the range tracker), checked like the reader."""

from __future__ import annotations

import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from datarax_beam import from_source
from datarax_beam.runners import build_options, make_runner, materialize, options
from datarax_beam.shards import SHARDSET_FILE
from datarax_beam.shards.writer import write_shardset
from datarax_beam.sources import ArrayRecordSourceModule, MemorySource
from datarax_beam.transforms import ReadShardSet

N = 50


def beam_pipeline() -> beam.Pipeline:
    opts = build_options(options.in_process())
    return beam.Pipeline(runner=make_runner(opts), options=opts)


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    data = {"x": np.arange(2 * N, dtype=np.float32).reshape(N, 2), "s": np.array([f"r{i}" for i in range(N)], object)}
    out = str(tmp_path_factory.mktemp("set") / "out")
    return materialize(from_source(MemorySource(data=data), 8), out, num_shards=3, options=options.in_process())


def test_round_trips_a_materialized_set_as_records_in_several_splits(materialized):
    expected = ArrayRecordSourceModule(materialized.path).get_batch(np.arange(N))
    with beam_pipeline() as p:
        records = p | ReadShardSet(materialized.path, records_per_split=7, batch_size=4)
        assert_that(records | beam.Map(lambda r: (r[0], r[1]["x"].tolist(), r[1]["s"])),
                    equal_to([(i, expected["x"][i].tolist(), expected["s"][i]) for i in range(N)]))
        chunks = p | "Chunks" >> ReadShardSet(materialized.path, output="chunks", records_per_split=7, batch_size=4)
        # a chunk never crosses a split: splits start at shard boundaries (17, 34) and every 7 records
        starts = chunks | beam.Map(lambda c: int(c.indices[0])) | beam.combiners.ToList()
        assert_that(starts, lambda got: {0, 7, 14, 17, 24, 31, 34, 41, 48} <= set(got[0]), label="Splits")


def test_initial_splits_cut_at_shards_and_cover_every_record_once(materialized):
    source = ReadShardSet(materialized.path, records_per_split=10)._source
    bundles = [(b.start_position, b.stop_position) for b in source.split(1 << 20)]
    assert bundles == [(0, 10), (10, 17), (17, 27), (27, 34), (34, 44), (44, 50)]
    assert [(b.start_position, b.stop_position) for b in source.split(1 << 20, 12, 20)] == [(12, 17), (17, 20)]
    by_size = ReadShardSet(materialized.path)._source  # records per split from the bundle size
    assert len(list(by_size.split(desired_bundle_size=1))) == N  # under one record's bytes: one each
    assert len(list(by_size.split(desired_bundle_size=64 << 20))) == 3  # one per shard


def test_a_dynamic_split_while_reading_stops_the_primary_at_the_split_point(materialized):
    source = ReadShardSet(materialized.path, output="chunks", batch_size=4)._source
    tracker = source.get_range_tracker(0, 20)
    reading = source.read(tracker)
    first = next(reading)
    assert first.indices.tolist() == [0, 1, 2, 3]
    assert tracker.try_split(9) is not None  # the runner hands [9, 20) to another worker
    rest = [c.indices.tolist() for c in reading]
    assert rest == [[4, 5, 6, 7], [8]]


def test_an_uncommitted_directory_is_refused_when_built(tmp_path):
    write_shardset(str(tmp_path / "d"), {"x": np.arange(3, dtype=np.int32)}, num_shards=1)
    os.remove(tmp_path / "d" / SHARDSET_FILE)
    with pytest.raises(FileNotFoundError, match=r"has no shardset.json: it is not a committed shard set"):
        ReadShardSet(str(tmp_path / "d"))


def test_a_shard_edited_after_the_commit_fails_the_read_naming_it(tmp_path):
    d = str(tmp_path / "d")
    shardset = write_shardset(d, {"x": np.arange(30, dtype=np.int32)}, num_shards=2)
    transform = ReadShardSet(d)
    with open(shardset.shard_paths[1], "r+b") as f:  # same size, other bytes
        data = bytearray(f.read())
        data[-1] ^= 0xFF
        f.seek(0)
        f.write(bytes(data))
    with pytest.raises(Exception, match=r"Shard .*data-00001-of-00002.array_record' has SHA-256 .*but shardset.json"):
        with beam_pipeline() as p:
            _ = p | transform


@pytest.mark.parametrize("kwargs, error, message", [
    ({"output": "rows"}, ValueError, r"unknown `output` 'rows'"),
    ({"records_per_split": 0}, ValueError, r"`records_per_split` must be an int >= 1, got 0"),
    ({"batch_size": 0}, ValueError, r"`batch_size` must be an int >= 1, got 0"),
    ({"verify": "yes"}, TypeError, r"`verify` must be a bool, got 'yes'"),
])
def test_arguments_are_checked_when_built(materialized, kwargs, error, message):
    with pytest.raises(error, match=message):
        ReadShardSet(materialized.path, **kwargs)


def test_a_path_of_another_type_is_refused():
    with pytest.raises(TypeError, match=r"`path` must be a shard-set directory, got int"):
        ReadShardSet(3)


def test_an_empty_set_reads_as_no_records(tmp_path):
    d = str(tmp_path / "empty")
    write_shardset(d, {"x": np.zeros(0, dtype=np.int32)}, num_shards=2)
    with beam_pipeline() as p:
        assert_that(p | ReadShardSet(d), equal_to([]))
