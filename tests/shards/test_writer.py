"""`ShardFileWriter`: batches compress ahead of the one written, within bounds, and the file's
bytes do not depend on how far ahead."""

import os

import pytest

from datarax_beam.shards import writer as writer_mod
from datarax_beam.shards.compress import RecordCompressor
from datarax_beam.shards.reader import read_shard
from datarax_beam.shards.writer import ShardFileWriter


def records(n=2000):
    return [bytes(200 + i % 5) if i % 3 else os.urandom(120) for i in range(n)]


def write(path, recs, batch, threads=2):
    compressor = RecordCompressor("zstd", threads)
    w = ShardFileWriter(path, compressor=compressor)
    pending = []
    try:
        for s in range(0, len(recs), batch):
            w.write(recs[s : s + batch])
            pending.append((len(w._pending), w._pending_bytes))
    finally:
        count = w.close()
        compressor.close()
    return count, pending


@pytest.mark.parametrize("ahead", [1, 2, 4])
def test_bytes_do_not_depend_on_how_far_ahead_batches_compress(tmp_path, monkeypatch, ahead):
    recs = records()
    monkeypatch.setattr(writer_mod, "LOOKAHEAD_BATCHES", 1)
    write(str(tmp_path / "one"), recs, 300)
    monkeypatch.setattr(writer_mod, "LOOKAHEAD_BATCHES", ahead)
    count, pending = write(str(tmp_path / "ahead"), recs, 300)
    assert count == len(recs)
    assert open(tmp_path / "ahead", "rb").read() == open(tmp_path / "one", "rb").read()
    assert read_shard(str(tmp_path / "ahead"), "zstd") == recs
    assert max(n for n, _ in pending) == ahead  # never more than that many batches pending


def test_pending_bytes_are_bounded_but_one_batch_always_goes_ahead(tmp_path, monkeypatch):
    recs = records(1200)
    monkeypatch.setattr(writer_mod, "LOOKAHEAD_BATCHES", 8)
    monkeypatch.setattr(writer_mod, "LOOKAHEAD_BYTES", 100 * 250)  # about one batch of 100
    _, pending = write(str(tmp_path / "a"), recs, 100)
    assert all(n == 1 for n, _ in pending)  # the byte bound, not the batch bound, held
    monkeypatch.setattr(writer_mod, "LOOKAHEAD_BYTES", 1)  # smaller than any batch
    count, pending = write(str(tmp_path / "b"), recs, 100)
    assert count == len(recs) and all(n == 1 for n, _ in pending)
    assert open(tmp_path / "a", "rb").read() == open(tmp_path / "b", "rb").read()


def test_a_failing_compression_fails_the_write_or_close(tmp_path, monkeypatch):
    def broken(recs):
        raise MemoryError("no memory for zstd")

    monkeypatch.setattr("datarax_beam.shards.compress._compress_all", broken)
    compressor = RecordCompressor("zstd", 2)  # on the pool: raised where the batch is written
    w = ShardFileWriter(str(tmp_path / "x"), compressor=compressor)
    w.write(records(300))
    with pytest.raises(MemoryError, match="no memory for zstd"):
        w.close()
    compressor.close()


def test_a_failing_write_fails_close_and_the_writer_still_closes(tmp_path):
    w = ShardFileWriter(str(tmp_path / "x"), "uncompressed")
    w.write([b"fine", "not bytes"])  # written on the writing thread: ArrayRecordWriter refuses str
    with pytest.raises(TypeError):
        w.close()
    assert w._thread._shutdown  # its own writing thread is gone too
