"""Reading shard sets back without Beam: every compression round-trips, errors name the record."""

import os
import re

import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from datarax_beam.shards import load_shardset, writer_options
from datarax_beam.shards.compress import StoredRecordError
from datarax_beam.shards.reader import read_columns, read_records, read_shard
from datarax_beam.shards.writer import write_shard_file, write_shardset
from datarax_beam.sources import ArrayRecordSourceModule


def batch(n=30):
    return {"x": np.repeat(np.arange(n, dtype=np.float32)[:, None], 16, axis=1),  # compressible
            "noise": np.random.default_rng(0).random((n, 3)).astype(np.float32),
            "s": np.array([f"r{i}" for i in range(n)], dtype=object)}


@pytest.mark.parametrize("compression", ["zstd", "brotli", "snappy", "uncompressed"])
def test_every_compression_reads_back(tmp_path, compression):
    d = str(tmp_path / "set")
    shardset = write_shardset(d, batch(), num_shards=3, compression=compression)
    assert load_shardset(d).compression == compression
    got = read_columns(d)
    np.testing.assert_array_equal(got["x"], batch()["x"])
    assert list(got["s"]) == list(batch()["s"])
    assert read_columns(shardset, [29, 0, 15])["s"].tolist() == ["r29", "r0", "r15"]
    with ArrayRecordSourceModule(d) as reader:  # the train-time reader agrees
        np.testing.assert_array_equal(reader.get_batch(np.arange(30))["noise"], batch()["noise"])
    stored = ArrayRecordReader(shardset.shard_paths[0]).read_all()
    if compression == "zstd":  # tagged records; the compressible ones are zstd frames
        assert {r[0] for r in stored} == {1} and len(stored[0]) < len(read_records(shardset, [0])[0])
    else:  # the payload itself (riegeli (de)compressed the chunks)
        assert stored == read_records(shardset, range(10))


def test_bytes_do_not_depend_on_threads_or_batches(tmp_path):
    records = [bytes(100 + i % 7) if i % 2 else os.urandom(50) for i in range(3000)]
    sizes = []
    paths = []
    for threads, size in ((1, 1024), (2, 1024), (4, 100), (2, 5000)):
        path = str(tmp_path / f"{threads}-{size}.array_record")
        sizes.append(write_shard_file(path, records, threads=threads, batch=size))
        paths.append(path)
    blobs = [open(p, "rb").read() for p in paths]
    assert all(b == blobs[0] for b in blobs) and len(set(sizes)) == 1
    assert read_shard(paths[0], "zstd") == records
    # stored records written as they are: the same file again
    stored = ArrayRecordReader(paths[0]).read_all()
    write_shard_file(str(tmp_path / "copy"), stored, stored=True)
    assert open(tmp_path / "copy", "rb").read() == blobs[0]


def test_errors_name_the_shard_and_the_record(tmp_path):
    d = str(tmp_path / "set")
    shardset = write_shardset(d, batch(), num_shards=2)
    path = shardset.shard_paths[1]
    records = ArrayRecordReader(path).read_all()
    records[4] = b"\x02" + records[4][1:]
    writer = ArrayRecordWriter(path, writer_options("zstd"))
    for r in records:
        writer.write(r)
    writer.close()
    expected = "^" + re.escape(f"Shard '{path}', record 4: A stored record has unknown compression tag 2")
    with pytest.raises(StoredRecordError, match=expected):
        read_columns(d)
    with pytest.raises(StoredRecordError, match=expected):
        read_records(d, [0, 19])  # global index 19 is record 4 of shard 1
    assert read_columns(d, [18, 20])["s"].tolist() == ["r18", "r20"]
    with pytest.raises(IndexError, match="Record index 30 is out of range for a shard set of 30 records"):
        read_records(d, [0, 30])


@pytest.mark.parametrize("compression", ["zstd", "uncompressed"])
def test_small_fixed_records_are_grouped_into_chunks_and_read_back_by_index(tmp_path, compression):
    from datarax_beam.shards.compress import GROUP_BYTES, group_size_for

    n = 1000
    data = {"id": np.arange(n, dtype=np.int64), "x": np.random.default_rng(1).random((n, 2)).astype(np.float32)}
    shardset = write_shardset(str(tmp_path / "set"), data, num_shards=2, compression=compression)
    assert load_shardset(str(tmp_path / "set")).schema.record_nbytes == 16
    group = group_size_for(16)
    assert group == 256 and group * 16 <= GROUP_BYTES  # a random read fetches one 4 KiB chunk
    reader = ArrayRecordReader(shardset.shard_paths[0])
    assert f"group_size:{group}" in reader.writer_options_string()
    order = np.random.default_rng(2).permutation(n)
    got = read_columns(shardset, order)
    np.testing.assert_array_equal(got["id"], order)
    np.testing.assert_array_equal(got["x"], data["x"][order])
    with ArrayRecordSourceModule(str(tmp_path / "set")) as source:
        np.testing.assert_array_equal(source.get_batch(order[:100])["id"], order[:100])


def test_records_of_varying_size_keep_one_per_chunk(tmp_path):
    shardset = write_shardset(str(tmp_path / "set"), batch(), num_shards=1)
    assert shardset.schema.record_nbytes is None
    assert "group_size:1," in ArrayRecordReader(shardset.shard_paths[0]).writer_options_string()
