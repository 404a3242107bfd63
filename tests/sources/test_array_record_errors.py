"""ArrayRecordSourceModule: bad input is refused with a message naming what is wrong."""

import json
import os
import re
import subprocess
import sys

import flax.nnx as nnx
import numpy as np
import pytest

from datarax_beam import from_source
from datarax_beam.shards import SHARDSET_FILE, SchemaError
from datarax_beam.shards.writer import write_shard_file, write_shardset
from datarax_beam.sources import ArrayRecordSourceConfig, ArrayRecordSourceModule

N = 40


@pytest.fixture
def shard_dir(tmp_path):
    d = str(tmp_path / "set")
    write_shardset(d, {"x": np.arange(N * 64, dtype=np.float32).reshape(N, 64)}, num_shards=2)
    return d


def _shard(d, i=1):
    return os.path.join(d, f"data-{i:05d}-of-00002.array_record")


def test_missing_path(tmp_path):
    missing = str(tmp_path / "nope.array_record")
    with pytest.raises(FileNotFoundError, match=f"ArrayRecord file '{missing}' does not exist"):
        ArrayRecordSourceModule(missing)
    with pytest.raises(FileNotFoundError, match="matches no ArrayRecord files"):
        ArrayRecordSourceModule(str(tmp_path / "*.array_record"))
    with pytest.raises(ValueError, match="empty list"):
        ArrayRecordSourceModule([])
    with pytest.raises(ValueError, match="needs `path`"):
        ArrayRecordSourceModule()


def test_directory_without_shardset_json_is_refused(shard_dir):
    os.remove(os.path.join(shard_dir, SHARDSET_FILE))
    with pytest.raises(FileNotFoundError, match="has no shardset.json: it is not a committed shard set"):
        ArrayRecordSourceModule(shard_dir)


UNCHECKED = ArrayRecordSourceConfig(verify=False)


def _checksum_refuses(shard_dir, path):
    with pytest.raises(OSError, match=f"Shard '{path}' has SHA-256 .*the file was replaced or edited"):
        ArrayRecordSourceModule(shard_dir).get_batch([0, N - 1])


def test_truncated_shard_names_the_file(shard_dir):
    path = _shard(shard_dir)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    _checksum_refuses(shard_dir, path)
    reader = ArrayRecordSourceModule(shard_dir, UNCHECKED)
    assert reader.get_batch([0])["x"].shape == (1, 64)  # the intact shard still reads
    with pytest.raises(OSError, match=f"shard '{path}'.*truncated or corrupt"):
        list(from_source(reader, batch_size=8))


def test_corrupt_shard_names_the_file(shard_dir):
    path = _shard(shard_dir, 0)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    for i in range(64, len(data) - 64):
        data[i] ^= 0x5A
    with open(path, "wb") as f:
        f.write(bytes(data))
    _checksum_refuses(shard_dir, path)
    with pytest.raises(OSError, match=f"shard '{path}'"):
        ArrayRecordSourceModule(shard_dir, UNCHECKED).get_batch([3])


def test_replaced_shard_with_other_count_names_the_file(shard_dir):
    path = _shard(shard_dir)
    write_shard_file(path, [b"x" * 256] * 3)
    _checksum_refuses(shard_dir, path)
    with pytest.raises(OSError, match=f"Shard '{path}' holds 3 records but shardset.json says 20"):
        ArrayRecordSourceModule(shard_dir, UNCHECKED).get_batch([N - 1])


def test_records_that_do_not_match_the_schema_name_the_shard(shard_dir):
    path = _shard(shard_dir)
    write_shard_file(path, [b"short"] * 20)
    _checksum_refuses(shard_dir, path)
    with pytest.raises(SchemaError, match=f"has 5 bytes, expected 256 .*{path}"):
        ArrayRecordSourceModule(shard_dir, UNCHECKED).get_batch([N - 1])


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["schema"].update(codec="datarax_beam.record/v9"),
         r"`schema.codec` must be one of \['datarax_beam.record/v1'\], got 'datarax_beam.record/v9'"),
        (lambda m: m.update(format_version=7), "has format_version 7; this version of datarax_beam reads 2"),
    ],
)
def test_unknown_codec_or_format_version(shard_dir, edit, message):
    meta_path = os.path.join(shard_dir, SHARDSET_FILE)
    with open(meta_path) as f:
        meta = json.load(f)
    edit(meta)
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    with pytest.raises(SchemaError, match=message):
        ArrayRecordSourceModule(shard_dir)


def test_bad_config():
    with pytest.raises(ValueError, match="`shard_index` 2 must be smaller than `shard_count` 2"):
        ArrayRecordSourceConfig(shard_index=2, shard_count=2)
    with pytest.raises(ValueError, match="Set both `shard_index` and `shard_count`"):
        ArrayRecordSourceConfig(shard_index=0)
    with pytest.raises(ValueError, match="`prefetch_batches` must be >= 0, got -1"):
        ArrayRecordSourceConfig(prefetch_batches=-1)
    with pytest.raises(TypeError, match="`shuffle` must be a bool, got 1"):
        ArrayRecordSourceConfig(shuffle=1)
    with pytest.raises(TypeError, match="`config` must be an ArrayRecordSourceConfig, got dict"):
        ArrayRecordSourceModule("x", {"shuffle": True})


def test_state_from_a_different_shard_set_is_refused(tmp_path, shard_dir):
    other = str(tmp_path / "other")
    write_shardset(other, {"x": np.zeros((N + 1, 64), np.float32)}, num_shards=2)
    theirs = ArrayRecordSourceModule(other)
    ours = ArrayRecordSourceModule(shard_dir)
    with pytest.raises(ValueError, match="saved from a different shard set"):
        ours.set_state(theirs.get_state())
    # the same through nnx.state / nnx.update of a pipeline (the checkpoint path)
    pipeline = from_source(ours, batch_size=4)
    nnx.update(pipeline, nnx.state(from_source(theirs, batch_size=4)))
    with pytest.raises(ValueError, match=f"shard set '{shard_dir}' has .*different shard set"):
        list(pipeline)


def test_bad_state_values(shard_dir):
    reader = ArrayRecordSourceModule(shard_dir, ArrayRecordSourceConfig(shard_index=1, shard_count=2))
    fp = reader.get_state()["fingerprint"]
    ok = reader.get_state()
    with pytest.raises(ValueError, match="`position` 41 is out of range for an epoch of 40 records"):
        reader.set_state({**ok, "position": 41})
    with pytest.raises(KeyError, match="missing `fingerprint`"):
        reader.set_state({"epoch": 0, "position": 1, "shuffle": 0})
    assert fp == ok["fingerprint"] and reader.get_state() == ok


def test_import_does_not_pull_in_apache_beam(shard_dir):
    code = (
        "import sys, datarax_beam.sources as s; from datarax_beam import from_source; "
        f"r = s.ArrayRecordSourceModule({shard_dir!r}, s.ArrayRecordSourceConfig(shuffle=True)); "
        "m = s.Mixture([r, s.ArrayRecordSourceModule(" + repr(shard_dir) + ")], [1, 1]); "
        "assert sum(len(b['x']) for b in from_source(m, 8)) == 80; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'apache_beam'); "
        "assert not bad, bad"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def _store(path, index, stored):
    """Rewrites shard ``path`` with its record ``index`` stored as ``stored`` (a writer's bug)."""
    from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

    from datarax_beam.shards import writer_options

    reader = ArrayRecordReader(path)
    records = reader.read_all()
    reader.close()
    records[index] = stored
    writer = ArrayRecordWriter(path, writer_options("zstd"))
    for r in records:
        writer.write(r)
    writer.close()


@pytest.mark.parametrize("stored, message", [
    (b"\x07abc", "A stored record has unknown compression tag 7; expected 0 (raw) or 1 (zstd)"),
    (b"\x01\x28\xb5\x2f\xfd\x00", "A stored record's zstd frame is corrupt"),
    (b"", "A stored record is empty: it lacks its 1-byte compression tag"),
])
def test_a_corrupt_stored_record_names_the_shard_and_the_record(shard_dir, stored, message):
    path = _shard(shard_dir, 1)
    _store(path, 5, stored)
    # verify=False: the checksum would catch this edit; a record stored wrong by a writer would not
    reader = ArrayRecordSourceModule(shard_dir, ArrayRecordSourceConfig(verify=False))
    assert reader.get_batch([N // 2 + 4, N // 2 + 6])["x"].shape == (2, 64)  # its neighbours read
    expected = "^" + re.escape(f"Shard '{path}', record 5: {message}")
    with pytest.raises(ValueError, match=expected):
        reader.get_batch([0, N // 2 + 5])
    with pytest.raises(ValueError, match=expected):
        list(from_source(reader, batch_size=8))  # on the read-ahead threads too
