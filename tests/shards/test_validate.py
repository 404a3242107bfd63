"""``shardset.json`` is validated whole, once, on load: one error naming the field and the value."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from datarax_beam.core.columns import object_column
from datarax_beam.shards import SHARDSET_FILE, load_shardset
from datarax_beam.shards.checksum import sha256_file
from datarax_beam.shards.validate import ShardSetError, validate_schema
from datarax_beam.shards.writer import write_shardset


@pytest.fixture
def shard_dir(tmp_path):
    d = str(tmp_path / "set")
    write_shardset(d, {"x": np.arange(20, dtype=np.float32).reshape(10, 2),
                       "t": object_column([f"r{i}" for i in range(10)])}, num_shards=2)
    return d


def _edit(d, edit):
    path = os.path.join(d, SHARDSET_FILE)
    with open(path) as f:
        meta = json.load(f)
    edit(meta)
    with open(path, "w") as f:
        json.dump(meta, f)


def test_written_sets_are_version_2_with_checksums_and_a_job_id(shard_dir):
    shardset = load_shardset(shard_dir)
    with open(os.path.join(shard_dir, SHARDSET_FILE)) as f:
        meta = json.load(f)
    assert meta["format_version"] == 2 and len(meta["job_id"]) == 32
    for info, path in zip(shardset.shards, shardset.shard_paths, strict=True):
        assert info.sha256 == sha256_file(path)


def _set(key, value):
    def edit(m):
        target, *path = key
        obj = m
        for k in [target, *path][:-1]:
            obj = obj[k]
        obj[[target, *path][-1]] = value
    return edit


BIG = 10**30
CASES = [
    (_set(("shards", 0, "num_records"), -1), r"`shards\[0\].num_records` must be in \[0, 9007199254740992\], got -1"),
    (_set(("shards", 0, "num_records"), BIG), rf"`shards\[0\].num_records` must be in .*got {BIG}"),
    (_set(("shards", 0, "num_records"), 5.0), r"`shards\[0\].num_records` must be an integer, not a number, got 5.0"),
    (_set(("shards", 1, "num_bytes"), True), r"`shards\[1\].num_bytes` must be an integer, not a boolean, got True"),
    (_set(("num_records",), 11), r"`num_records` must equal the sum of shards\[\].num_records \(10\), got 11"),
    (_set(("total_bytes",), 1), r"`total_bytes` must equal the sum of shards\[\].num_bytes .*got 1"),
    (_set(("num_failed",), 3), r"`num_failed` must equal the sum of shards\[\].num_failed \(0\), got 3"),
    (_set(("shards",), []), r"`shards` must have 1 to \d+ entries, got a JSON array of 0 entries"),
    (_set(("schema",), None), r"`schema` must be an object, not null, got None"),
    (_set(("schema", "features"), []), r"`schema.features` is empty, but the set holds 10 records"),
    (_set(("schema", "features", 1, "dtype"), "float32"), r"`schema.features\[1\].dtype` must be a little-endian numpy dtype"),
    (_set(("schema", "features", 1, "dtype"), "|f4"), r"`schema.features\[1\].dtype` must be written '<f4', got '\|f4'"),
    (_set(("schema", "features", 1, "dtype"), "<i3"), r"`schema.features\[1\].dtype` is not a numpy dtype, got '<i3'"),
    (_set(("schema", "features", 1, "shape"), [-2]), r"`schema.features\[1\].shape\[0\]` must be in \[0, 2147483647\], got -2"),
    (_set(("schema", "features", 1, "shape"), [2**20, 2**20]), r"`schema.features\[1\].shape` makes a record of 4398046511104 bytes"),
    (_set(("schema", "features", 1, "shape"), "2"), r"`schema.features\[1\].shape` must be an array, not a string"),
    (_set(("schema", "features", 0, "name"), 7), r"`schema.features\[0\].name` must be a string, not an integer, got 7"),
    (_set(("schema", "features", 0, "name"), ""), r"`schema.features\[0\].name` must have 1 to 1024 characters, got ''"),
    (_set(("schema", "features", 0, "name"), "x"), r"`schema.features\[1\].name` repeats the name of features\[0\], got 'x'"),
    (_set(("schema", "features", 0, "kind"), "pickle"), r"`schema.features\[0\].kind` must be one of .*got 'pickle'"),
    (_set(("schema", "features", 1, "ndim"), 1), r"`schema.features\[1\].ndim` must not be set for a 'tensor' feature, got 1"),
    (_set(("schema", "codec"), "datarax_beam.record/v9"), r"`schema.codec` must be one of \['datarax_beam.record/v1'\], got 'datarax_beam.record/v9'"),
    (_set(("shards", 0, "name"), "../victim/data-00000-of-00001.array_record"),
     r"`shards\[0\].name` must be a shard name: a plain file name inside the shard set.*got '../victim/data-00000-of-00001.array_record'"),
    (_set(("shards", 0, "name"), "/etc/data-00000-of-00001.array_record"), r"`shards\[0\].name` must be a shard name: a plain file name"),
    (_set(("shards", 1, "name"), "data-00000-of-00002.array_record"), r"`shards\[1\].name` repeats the name of shards\[0\]"),
    (_set(("shards", 0, "sha256"), "XYZ"), r"`shards\[0\].sha256` must be 64 lowercase hex digits \(SHA-256\), got 'XYZ'"),
    (lambda m: m["shards"][0].pop("sha256"), r"`shards\[0\].sha256` is missing"),
    (_set(("job_id",), None), r"`job_id` must be a string, not null, got None"),
    (_set(("seed",), 2**70), r"`seed` must be in \[-9223372036854775808, 18446744073709551615\], got 1180591620717411303424"),
    (_set(("compression",), "lz4"), r"`compression` must be one of \['zstd', 'brotli', 'snappy', 'uncompressed'\], got 'lz4'"),
    (_set(("shuffle",), "yes"), r"`shuffle` must be true or false, not a string, got 'yes'"),
    (_set(("statistics",), [1]), r"`statistics` must be an object, not an array"),
    (_set(("unexpected",), 1), r"`unexpected` is not a field of this format"),
    (_set(("extra",), {"a": json.loads("[" * 40 + "]" * 40)}), r"`extra.a(\[0\])+` nests deeper than 16 levels"),
    (_set(("format_version",), 7), r"has format_version 7; this version of datarax_beam reads 2$"),
    (_set(("format_version",), 1), r"has format_version 1; this version of datarax_beam reads 2 \(written before shard checksums"),
    (_set(("format",), "other"), r"is not a datarax_beam shard set \(format='other'\)"),
]


@pytest.mark.parametrize("edit, message", CASES)
def test_every_bad_field_is_named_with_its_value(shard_dir, edit, message):
    _edit(shard_dir, edit)
    with pytest.raises(ShardSetError, match=message) as info:
        load_shardset(shard_dir)
    assert str(info.value).startswith(os.path.join(shard_dir, SHARDSET_FILE))


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "nests too deeply"),
    ("[1, 2]", "the document must hold a JSON object, not an array"),
    ("{not json", "is not valid JSON"),
])
def test_malformed_documents(shard_dir, text, message):
    with open(os.path.join(shard_dir, SHARDSET_FILE), "w") as f:
        f.write(text)
    with pytest.raises(ShardSetError, match=message):
        load_shardset(shard_dir)


def test_the_train_time_reader_refuses_names_outside_the_set(tmp_path, shard_dir):
    from datarax_beam.sources import ArrayRecordSourceModule

    victim = tmp_path / "victim"
    write_shardset(str(victim), {"x": np.zeros((4, 2), np.float32)})
    _edit(shard_dir, _set(("shards", 0, "name"), "../victim/data-00000-of-00001.array_record"))
    with pytest.raises(ShardSetError, match="must be a shard name: a plain file name"):
        ArrayRecordSourceModule(shard_dir)


def test_declared_schemas_follow_the_same_rules():
    validate_schema({"codec": "datarax_beam.record/v1", "features": [{"name": "n" * 300 + "\x00", "kind": "string"}]})
    with pytest.raises(ShardSetError, match=r"Field `schema.features\[0\].name` must have 1 to 1024 characters"):
        validate_schema({"codec": "datarax_beam.record/v1", "features": [{"name": "", "kind": "string"}]})


def test_validation_does_not_import_beam():
    code = ("import sys, datarax_beam.shards, datarax_beam.shards.validate; "
            "assert 'apache_beam' not in sys.modules, 'beam imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
