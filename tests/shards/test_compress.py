"""Record-level compression: round trips, thread-count independence, corrupt input."""

import pickle

import numpy as np
import pytest

from datarax_beam.shards.compress import (
    RecordCompressor,
    check_compression,
    decompress,
    decompress_one,
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


@pytest.mark.parametrize("threads", [2, 3, 8])
def test_bytes_do_not_depend_on_threads(threads):
    recs = records()
    one = RecordCompressor("zstd", threads=1).compress(recs)
    many = RecordCompressor("zstd", threads=threads)
    assert many.compress(recs) == one
    pending = [many.submit(recs[:100]), many.submit(recs[100:])]  # several batches in flight
    assert [r for p in pending for r in p.result()] == one
    many.close()


def test_uncompressed_passes_through():
    recs = records(10)
    c = RecordCompressor("uncompressed", threads=2)
    assert c.compress(recs) == recs and decompress("uncompressed", recs) == recs


def test_pickles_without_its_pool():
    c = RecordCompressor("zstd", threads=2)
    c.compress(records())
    clone = pickle.loads(pickle.dumps(c))
    assert clone.threads == 2 and clone.compress([bytes(100)]) == c.compress([bytes(100)])


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="Unknown compression 'lz4'"):
        check_compression("lz4")
    with pytest.raises(ValueError, match="Unknown compression 'snappy'"):
        RecordCompressor("snappy")
    with pytest.raises(ValueError, match="`threads` must be an int >= 1, got 0"):
        RecordCompressor("zstd", threads=0)
    with pytest.raises(ValueError, match="lacks its 1-byte compression tag"):
        decompress_one(b"")
    with pytest.raises(ValueError, match="unknown compression tag 7"):
        decompress_one(b"\x07abc")
    good = RecordCompressor("zstd").compress([bytes(500)])[0]
    with pytest.raises(ValueError, match="zstd frame is corrupt"):
        decompress_one(good[:-3])
