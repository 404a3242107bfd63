"""Remote shard sets read by byte ranges into a bounded local cache (``cache_bytes``)."""

import os
import pickle

import numpy as np
import pytest

from datarax_beam import from_source
from datarax_beam.shards.writer import write_shardset
from datarax_beam.sources import ArrayRecordSourceConfig, ArrayRecordSourceModule, _ranges
from datarax_beam.testing import assert_same

from ..runners.conftest import PrefixFS  # registers the testfs:// scheme with Beam

N = 3000
MIB = 1 << 20


def _data(n=N, offset=0):
    rng = np.random.default_rng(offset)
    return {"id": np.arange(n, dtype=np.int64) + offset,
            "x": rng.random((n, 256), dtype=np.float32),  # ~1 KiB a record: 3 MB in all
            "t": np.array([f"r{i + offset}" for i in range(n)], dtype=object)}


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("ranges") / "set")
    write_shardset(d, _data(), num_shards=3)
    return d


def _reader(path, cache, **kw):
    return ArrayRecordSourceModule(PrefixFS.PREFIX + path, ArrayRecordSourceConfig(
        cache_dir=str(cache), cache_bytes=MIB, **kw))


def test_an_epoch_reads_the_same_records_with_at_most_cache_bytes_on_disk(tmp_path, remote):
    reader = _reader(remote, tmp_path / "cache", shuffle=True, seed=3)
    local = ArrayRecordSourceModule(remote, ArrayRecordSourceConfig(shuffle=True, seed=3))
    got = list(from_source(reader, batch_size=100))
    assert_same(got, list(from_source(local, batch_size=100)))
    cache = reader._shards.files.ranged[0].cache
    index = sum(os.path.getsize(os.path.join(remote, f)) - s.index.footer_offset + _ranges.PAGE
                for f, s in zip(sorted(os.listdir(remote))[:3], reader._shards.files.ranged, strict=True))
    assert cache.bytes <= MIB and cache.peak <= MIB + 4 * 100 * 2 * _ranges.PAGE
    assert cache.disk_bytes() <= MIB + index + 3 * _ranges.PAGE  # holes given back to the disk
    total = sum(os.path.getsize(os.path.join(remote, f)) for f in os.listdir(remote))
    assert total > 2 * MIB  # the set does not fit: the bound was exercised


def test_only_what_is_read_is_fetched(tmp_path, remote):
    reader = _reader(remote, tmp_path / "cache")
    assert reader.get_batch([5, 1500])["id"].tolist() == [5, 1500]
    cache = reader._shards.files.ranged[0].cache
    assert cache.bytes <= 4 * _ranges.PAGE  # two records: a page or two each
    assert reader._shards.files.ranged[2].path is None  # shard 2 was never opened


def test_index_matches_the_cpp_reader(remote):
    from array_record.python.array_record_module import ArrayRecordReader

    path = os.path.join(remote, "data-00001-of-00003.array_record")
    with open(path, "rb") as f:
        blob = f.read()
    index = _ranges.Index(len(blob), lambda offset, n: blob[offset : offset + n])
    reader = ArrayRecordReader(path, "readahead_buffer_size:0")
    assert index.num_records == reader.num_records() == 1000 and index.group == 1
    assert len(index.starts) == 1000 and np.all(np.diff(index.starts) > 0)
    assert index.ends[-1] == index.footer_offset < len(blob)


@pytest.mark.parametrize("compression", ["uncompressed", "snappy", "brotli"])
def test_other_compressions(tmp_path, compression):
    d = str(tmp_path / "set")
    write_shardset(d, _data(200), num_shards=1, compression=compression)
    reader = _reader(d, tmp_path / "cache")
    assert reader.get_batch(np.arange(200))["id"].tolist() == list(range(200))


def test_a_regenerated_set_is_read_afresh(tmp_path):
    d = str(tmp_path / "set")
    write_shardset(d, _data(300), num_shards=2)
    assert _reader(d, tmp_path / "cache").get_batch([7])["id"].tolist() == [7]
    write_shardset(d, _data(300, offset=1000), num_shards=2)
    assert _reader(d, tmp_path / "cache").get_batch([7])["id"].tolist() == [1007]


def test_a_remote_shard_of_another_size_is_refused(tmp_path):
    d = str(tmp_path / "set")
    write_shardset(d, _data(300), num_shards=2)
    with open(os.path.join(d, "data-00001-of-00002.array_record"), "ab") as f:
        f.write(b"\0" * 65536)
    reader = _reader(d, tmp_path / "cache")
    with pytest.raises(OSError, match="data-00001-of-00002.array_record' has .* bytes, but shardset.json says"):
        reader.get_batch([299])


def test_a_missing_page_fails_loudly_never_reads_other_records(tmp_path, remote):
    """The sparse file without the fetched pages: Riegeli's chunk hashes catch the zeros."""
    from array_record.python.array_record_module import ArrayRecordReader

    shard = _reader(remote, tmp_path / "cache")._shards.files.ranged[0]
    reader = ArrayRecordReader(shard.local_path(), "readahead_buffer_size:0")
    assert reader.num_records() == 1000  # the index is there ...
    with pytest.raises(RuntimeError):
        reader.read([10])                # ... the record's chunk is not


def test_pickles_for_beam_workers(tmp_path, remote):
    reader = _reader(remote, tmp_path / "cache")
    reader.get_batch([0])
    clone = pickle.loads(pickle.dumps(reader))
    assert_same(clone.get_batch(np.arange(0, N, 7)), reader.get_batch(np.arange(0, N, 7)))


def test_bad_cache_bytes():
    with pytest.raises(ValueError, match="`cache_bytes` must be >= 1048576, got 10"):
        ArrayRecordSourceConfig(cache_bytes=10)
