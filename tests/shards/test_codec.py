"""Record codec round-trips and the documented byte layout."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from datarax_beam.core.columns import object_column
from datarax_beam.shards import (
    Schema,
    SchemaError,
    ShardSet,
    decode_batch,
    decode_record,
    encode_batch,
)
from datarax_beam.shards.shardset import ShardInfo
from datarax_beam.testing import assert_same


def _batch(n=6):
    return {
        "image": np.arange(n * 6, dtype=np.float32).reshape(n, 2, 3),
        "label": np.arange(n, dtype=np.int32),
        "flag": np.array([i % 2 == 0 for i in range(n)]),
        "score": np.linspace(0, 1, n).astype(np.float64),
        "text": object_column(["", "a", "héllo", "日本", "x" * 300, "z"][:n]),
        "raw": object_column([b"", b"\x00\xff", b"abc", bytes(range(256)), b"q", b"r"][:n]),
        "ragged": object_column([np.arange(i, dtype=np.int64).reshape(-1, 1) for i in range(n)]),
    }


def test_round_trip_all_kinds():
    batch = _batch()
    schema = Schema.infer(batch)
    kinds = {f.name: f.kind for f in schema.features}
    assert kinds == {"flag": "tensor", "image": "tensor", "label": "tensor", "score": "tensor",
                     "text": "string", "raw": "bytes", "ragged": "ragged"}
    records = encode_batch(schema, batch)
    decoded = decode_batch(schema, records)
    assert_same(decoded, batch)
    assert_same(decode_record(schema, records[3]), {k: v[3] for k, v in batch.items()})
    assert Schema.from_json(schema.to_json()) == schema


def test_byte_layout_matches_docs():
    batch = {"x": np.array([[1.5, 2.0]], np.float32), "s": object_column(["hi"]),
             "r": object_column([np.array([7, 8, 9], np.int16)])}
    schema = Schema.infer(batch)  # features sorted by name: r, s, x
    (rec,) = encode_batch(schema, batch)
    fixed = np.array([1.5, 2.0], "<f4").tobytes()
    ragged = struct.pack("<II", 1, 3) + np.array([7, 8, 9], "<i2").tobytes()
    string = struct.pack("<I", 2) + b"hi"
    assert rec == fixed + ragged + string


def test_fixed_only_batch_decodes_with_one_frombuffer():
    batch = {"x": np.random.default_rng(0).random((100, 4, 4)).astype(np.float32)}
    schema = Schema.infer(batch)
    records = encode_batch(schema, batch)
    assert all(len(r) == 64 for r in records)
    manual = np.frombuffer(b"".join(records), "<f4").reshape(100, 4, 4)
    np.testing.assert_array_equal(manual, batch["x"])
    np.testing.assert_array_equal(decode_batch(schema, records)["x"], batch["x"])


def test_schema_errors_name_the_feature():
    schema = Schema.infer({"x": np.zeros((2, 3), np.float32)})
    with pytest.raises(SchemaError, match="'x'"):
        encode_batch(schema, {"x": np.zeros((2, 4), np.float32)})
    with pytest.raises(SchemaError, match="changes between records"):
        schema.merge(Schema.infer({"x": np.zeros((2, 4), np.float32)}))
    with pytest.raises(SchemaError, match="unsupported type"):
        Schema.infer({"o": object_column([object()])})


def test_shardset_json_round_trip():
    schema = Schema.infer(_batch())
    s = ShardSet(path="/x", shards=(ShardInfo("data-00000-of-00001.array_record", 6, 100, "ab" * 32),),
                 schema=schema, seed=3, shuffle=True, fingerprint="f", versions={"datarax_beam": "0"},
                 job_id="0" * 32)
    back = ShardSet.loads(s.dumps(), "/x")
    assert back == s and back.num_records == 6 and back.total_bytes == 100
    with pytest.raises(SchemaError, match="not a datarax_beam shard set"):
        ShardSet.loads("{}", "/x")


def test_encoding_never_casts_silently():
    schema = Schema.infer({"x": np.zeros((2, 2), np.float32), "i": np.zeros(2, np.int32)})
    with pytest.raises(SchemaError, match=r"Feature 'x': expected <f4\[2\] per record, got <f8\[2\]"):
        encode_batch(schema, {"x": np.full((2, 2), 1e300), "i": np.zeros(2, np.int32)})
    with pytest.raises(SchemaError, match=r"Feature 'i': expected <i4\[\] per record, got <i8\[\]"):
        encode_batch(schema, {"x": np.zeros((2, 2), np.float32), "i": np.array([2**40, 1])})
    ragged = Schema.infer({"r": object_column([np.zeros(1, np.int32), np.zeros(2, np.int32)])})
    with pytest.raises(SchemaError, match=r"Feature 'r': expected ragged <i4 ndim=1, got <i8\[3\]"):
        encode_batch(ragged, {"r": object_column([np.zeros(3, np.int64)])})


def test_mixed_value_types_name_the_feature():
    # str and numbers in one column used to raise "generator raised StopIteration"
    with pytest.raises(SchemaError, match=r"Feature 't' mixes values of different types .*'<i8\[\]', 'str'"):
        Schema.infer({"t": object_column(["a", np.int64(3)])})


def test_a_block_of_tensors_encodes_the_same_bytes():
    from datarax_beam.shards.codec import FixedRecords

    batch = {"a": np.arange(12, dtype=np.float32).reshape(6, 2), "b": np.arange(6, dtype=np.int64)}
    schema = Schema.infer(batch)
    block = encode_batch(schema, batch, block=True)
    assert isinstance(block, FixedRecords) and list(block) == encode_batch(schema, batch)
    np.testing.assert_array_equal(decode_batch(schema, list(block))["a"], batch["a"])
    text = {"t": np.array(["x", "y"], dtype=object)}  # variable features: a list as always
    assert encode_batch(Schema.infer(text), text, block=True) == encode_batch(Schema.infer(text), text)


def test_a_block_views_a_jax_arrays_memory_and_copies_anything_writable():
    import jax.numpy as jnp

    from datarax_beam.shards.codec import FixedRecords, frozen_buffer

    schema = Schema.infer({"a": np.zeros((3, 2), np.float32)})
    device = np.asarray(jnp.arange(6, dtype=jnp.float32).reshape(3, 2))  # a kernel's output
    block = encode_batch(schema, {"a": device}, block=True)
    assert isinstance(block.blob, memoryview) and block.blob.readonly  # no copy
    assert list(block) == [device[i].tobytes() for i in range(3)] and block[1] == device[1].tobytes()
    assert isinstance(block[0], bytes) and list(block[1:]) == list(block)[1:]
    host = np.arange(6, dtype=np.float32).reshape(3, 2)  # a source's or host operator's array
    block = encode_batch(schema, {"a": host}, block=True)
    host[:] = -1  # written to after the hand-over: the block keeps the values it was given
    assert isinstance(block.blob, bytes) and block[2] == np.array([4, 5], np.float32).tobytes()
    # a view of a JAX array that is not contiguous is copied too
    assert isinstance(frozen_buffer(np.asarray(jnp.zeros((4, 4), jnp.uint8))[:, :2]), bytes)
    view = FixedRecords(frozen_buffer(device.reshape(3, -1).view(np.uint8)), 8)
    assert list(view) == [device[i].tobytes() for i in range(3)]
