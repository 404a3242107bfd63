"""What travels with a source: the attributes its constructor set (configuration, handles,
cursors), never a cache created later — not in pickles, so not into Beam jobs."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from datarax_beam import from_source
from datarax_beam.core.data_source import RandomAccessSource
from datarax_beam.runners import materialize, options
from datarax_beam.shards.writer import write_shardset
from datarax_beam.sources import ArrayRecordSourceModule, MemorySource
from datarax_beam.testing import IteratorSource, assert_same

N = 64


class CachingSource(RandomAccessSource):
    """Loads all its data on first read and keeps it in ``self.__dict__`` (8 MB here); logs which
    process built the cache to ``log_dir``."""

    def __init__(self, n: int, log_dir: str):
        super().__init__(name="caching")
        self.n, self.log_dir = n, log_dir

    def __len__(self):
        return self.n

    def _read(self, indices):
        if "_cache" not in self.__dict__:
            self.__dict__["_cache"] = np.arange(self.n * 16384, dtype=np.float64).reshape(self.n, 16384)
            with open(os.path.join(self.log_dir, f"built-{os.getpid()}"), "a") as f:
                f.write("x")
        return {"x": self._cache[indices, :4].astype(np.float32)}


def test_a_cache_created_after_construction_does_not_travel(tmp_path):
    src = CachingSource(N, str(tmp_path))
    empty = len(pickle.dumps(src))
    batch = src.get_batch(np.arange(5))
    next(iter(src))  # also moves the cursor and caches the epoch order
    assert "_cache" in vars(src) and "_order_cache" in vars(src)
    data = pickle.dumps(src)
    assert len(data) < empty + 200  # not the 8 MB cache, not the order
    back = pickle.loads(data)
    assert "_cache" not in vars(back) and back.get_state() == {"epoch": 0, "position": 1}  # cursors do
    assert_same(back.get_batch(np.arange(5)), batch)


def test_the_driver_cache_is_not_shipped_with_the_job(tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    src = CachingSource(N, str(log))
    shardset = materialize(from_source(src, 16), str(tmp_path / "out"), num_shards=2,
                           options=options.multi_process(2))
    assert shardset.num_records == N
    builders = {name.split("-")[1] for name in os.listdir(log)}
    # the driver built its cache reading the first batch (which fixes the schema); the worker
    # processes built their own: the driver's did not travel inside the job
    assert str(os.getpid()) in builders and len(builders) >= 2
    assert "_cache" in vars(src) and len(pickle.dumps(src)) < 2000


@pytest.fixture
def shard_dir(tmp_path):
    d = str(tmp_path / "set")
    write_shardset(d, {"x": np.arange(N, dtype=np.int32), "t": np.array([f"r{i}" for i in range(N)], object)},
                   num_shards=2)
    return d


@pytest.mark.parametrize("make", [
    lambda d: MemorySource(data={"x": np.arange(N, dtype=np.int32)}),
    lambda d: IteratorSource({"x": np.arange(N, dtype=np.int32)}),
    lambda d: ArrayRecordSourceModule(d),
], ids=["memory", "iterator", "array_record"])
def test_library_sources_survive_a_pickle_mid_epoch(shard_dir, make):
    src = make(shard_dir)
    it = iter(src)
    first = [next(it) for _ in range(5)]
    back = pickle.loads(pickle.dumps(src))
    assert back.get_state() == src.get_state()
    rest = [e.data if hasattr(e, "data") else e for e in iter(back)]
    if src.is_random_access:  # resumes where the original stopped
        assert len(rest) == N - 5 and int(np.asarray(rest[0]["x"])) == 5
    assert len(first) == 5
