"""Record-level compression: round trips, thread-count independence, corrupt input."""

import pickle

import numpy as np
import pytest

from datarax_beam.shards.compress import (
    RecordCompressor,
    StoredRecordError,
    check_compression,
    decompress,
    decompress_one,
    default_threads,
    riegeli_options,
)


def records(n=300):
    rng = np.random.default_rng(0)
    # compressible (zeros, repeated text), incompressible (random) and tiny records
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            out.append(bytes(200 + i))
        elif kind == 1:
            out.append(rng.bytes(64))
        else:
            out.append(b"x" * (i % 5))
    return out


def test_round_trip_and_tags():
    recs = records()
    stored = RecordCompressor("zstd").compress(recs)
    assert decompress("zstd", stored) == recs
    assert stored[0][0] == 1 and len(stored[0]) < len(recs[0])  # zeros: a zstd frame
    assert stored[1][0] == 0 and stored[1][1:] == recs[1]  # random bytes: stored raw
    assert recs[5] == b"" and stored[5] == b"\x00"  # an empty record stays one tag byte
    assert RecordCompressor("zstd").compress([]) == []  # a batch whose records all failed


@pytest.mark.parametrize("threads", [2, 3, 8])
def test_bytes_do_not_depend_on_threads(threads):
    recs = records()
    one = RecordCompressor("zstd", threads=1).compress(recs)
    many = RecordCompressor("zstd", threads=threads)
    assert many.compress(recs) == one
    pending = [many.submit(recs[:100]), many.submit(recs[100:])]  # several batches in flight
    assert [r for p in pending for r in p.result()] == one
    many.close()


@pytest.mark.parametrize("compression", ["uncompressed", "brotli", "snappy"])
def test_other_compressions_pass_records_through(compression):
    recs = records(10)
    c = RecordCompressor(compression, threads=2)
    assert c.compress(recs) == recs and decompress(compression, recs) == recs


def test_riegeli_options_and_default_threads():
    assert riegeli_options("zstd") == "group_size:1,uncompressed"  # records compressed by us
    assert riegeli_options("brotli") == "group_size:1,brotli"  # riegeli compresses chunks
    assert riegeli_options("uncompressed") == "group_size:1,uncompressed"
    assert 1 <= default_threads() <= 4


def test_pickles_without_its_pool():
    c = RecordCompressor("zstd", threads=2)
    c.compress(records())
    clone = pickle.loads(pickle.dumps(c))
    assert clone.threads == 2 and clone.compress([bytes(100)]) == c.compress([bytes(100)])


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="Unknown compression 'lz4'"):
        check_compression("lz4")
    with pytest.raises(ValueError, match="Unknown compression 'lz4'"):
        RecordCompressor("lz4")
    with pytest.raises(ValueError, match="`threads` must be an int >= 1, got 0"):
        RecordCompressor("zstd", threads=0)
    with pytest.raises(ValueError, match="lacks its 1-byte compression tag"):
        decompress_one(b"")
    with pytest.raises(ValueError, match="unknown compression tag 7"):
        decompress_one(b"\x07abc")
    good = RecordCompressor("zstd").compress([bytes(500)])[0]
    with pytest.raises(ValueError, match="zstd frame is corrupt"):
        decompress_one(good[:-3])


def test_decompress_names_the_shard_and_the_record():
    stored = RecordCompressor("zstd").compress([bytes(500), bytes(600), bytes(700)])
    bad = stored[1][:-3]
    with pytest.raises(StoredRecordError, match=r"^Shard 'x.array_record', record 41: A stored record's zstd "
                                                r"frame is corrupt"):
        decompress("zstd", [stored[0], bad, stored[2]], "Shard 'x.array_record'", [40, 41, 42])
    with pytest.raises(StoredRecordError, match=r"^A shard, record 2: .*unknown compression tag 9"):
        decompress("zstd", [stored[0], stored[1], b"\x09xyz"])


def test_a_frame_declaring_a_huge_size_is_refused_before_allocating():
    import struct

    frame = RecordCompressor("zstd").compress([bytes(500)])[0][1:]
    # rewrite the frame header: 8-byte content size field declaring 1 TiB
    header = bytes([frame[4] & 0x3F | 0xC0])
    single_segment = frame[4] & 0x20
    window = b"" if single_segment else frame[5:6]
    size_bytes = {0: 1 if single_segment else 0, 1: 2, 2: 4, 3: 8}[frame[4] >> 6]
    rest = frame[5 + len(window) + size_bytes:]
    bomb = b"\x01" + frame[:4] + header + window + struct.pack("<Q", 1 << 40) + rest
    with pytest.raises(StoredRecordError, match="declares 1099511627776 content size in"):
        decompress_one(bomb)
    no_size = b"\x01" + frame[:4] + bytes([frame[4] & 0x1F]) + b"\x58" + rest  # no size, a window
    with pytest.raises(StoredRecordError, match="declares no content size"):
        decompress_one(no_size)


def test_a_fixed_size_block_stores_the_same_bytes_as_its_records():
    from datarax_beam.shards.codec import FixedRecords

    rng = np.random.default_rng(1)
    rows = [bytes(96) if i % 3 else rng.bytes(96) for i in range(300)]  # compressible and not
    block = FixedRecords(b"".join(rows), 96)
    assert len(block) == 300 and list(block) == rows and block[7] == rows[7] and block[-1] == rows[-1]
    assert list(block[10:250]) == rows[10:250] and block[10:250].nbytes == 240 * 96
    for threads in (1, 2):
        c = RecordCompressor("zstd", threads=threads)
        assert c.compress(block) == c.compress(rows)  # tasks of slices of the one buffer
        assert c.compress(block[5:200]) == c.compress(rows[5:200])
    assert RecordCompressor("uncompressed").compress(block) == rows


def test_group_size_grows_as_records_shrink_up_to_one_4k_chunk():
    from datarax_beam.shards.compress import GROUP_BYTES, MAX_GROUP_SIZE, group_size_for

    assert [group_size_for(b) for b in (None, 0, 1, 16, 40, 1000, 2048, 2049, 3136)] == [
        1, 1, MAX_GROUP_SIZE, 256, 64, 4, 2, 1, 1]
    for b in range(1, 5000, 37):
        g = group_size_for(b)
        assert g & (g - 1) == 0 and (g == 1 or g * b <= GROUP_BYTES) and g <= MAX_GROUP_SIZE


def test_switch_interval_is_shared_by_nested_blocks_and_restored():
    import sys

    from datarax_beam.shards.compress import switch_interval

    before = sys.getswitchinterval()
    with switch_interval(0.002):
        with switch_interval(0.0005):  # joins the first: one setting for all
            assert sys.getswitchinterval() == 0.002
        assert sys.getswitchinterval() == 0.002
    assert sys.getswitchinterval() == before
    try:
        with switch_interval(0.002):
            raise KeyError("boom")
    except KeyError:
        pass
    assert sys.getswitchinterval() == before


def test_an_in_process_job_restores_the_switch_interval(tmp_path):
    import sys

    import numpy as np

    from datarax_beam import from_source, materialize
    from datarax_beam.sources import MemorySource

    before = sys.getswitchinterval()
    materialize(from_source(MemorySource(data={"x": np.arange(8, dtype=np.float32)}), 4), str(tmp_path / "o"))
    assert sys.getswitchinterval() == before
