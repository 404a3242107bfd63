"""Reading a shard set on a non-local Beam filesystem (a `testfs://` scheme standing in for gs://)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from datarax_beam.shards.writer import write_shardset
from datarax_beam.sources import ArrayRecordSourceConfig, ArrayRecordSourceModule
from datarax_beam.testing import assert_same

from ..runners.conftest import PrefixFS  # registers the testfs:// scheme with Beam

DATA = {"x": np.arange(60, dtype=np.float32).reshape(30, 2), "t": np.array([f"r{i}" for i in range(30)], object)}


@pytest.fixture
def remote_set(tmp_path):
    write_shardset(str(tmp_path / "set"), DATA, num_shards=3)
    return PrefixFS.PREFIX + str(tmp_path / "set")


def test_remote_shard_set_is_cached_locally_and_reads_the_same(tmp_path, remote_set):
    cache = tmp_path / "cache"
    reader = ArrayRecordSourceModule(remote_set, ArrayRecordSourceConfig(cache_dir=str(cache)))
    assert all(p.startswith(str(cache)) for p in reader.paths)
    assert_same(reader.get_batch(np.arange(30)), DATA)
    mtimes = [os.path.getmtime(p) for p in reader.paths]
    again = ArrayRecordSourceModule(remote_set, ArrayRecordSourceConfig(cache_dir=str(cache)))
    assert [os.path.getmtime(p) for p in again.paths] == mtimes  # reused, not copied again
    assert again.get_state()["fingerprint"] == reader.get_state()["fingerprint"]


def test_remote_shard_that_does_not_match_its_metadata_is_refused(tmp_path, remote_set):
    shard = os.path.join(remote_set[len(PrefixFS.PREFIX):], "data-00001-of-00003.array_record")
    with open(shard, "ab") as f:
        f.write(b"garbage")
    with pytest.raises(OSError, match="data-00001-of-00003.array_record' has .* bytes, but shardset.json says"):
        ArrayRecordSourceModule(remote_set, ArrayRecordSourceConfig(cache_dir=str(tmp_path / "c")))


def test_remote_directory_without_shardset_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a committed shard set"):
        ArrayRecordSourceModule(PrefixFS.PREFIX + str(tmp_path / "empty"))
