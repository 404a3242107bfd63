"""Shared fixtures for the Beam tests: the reference pipeline, its online output, a test
filesystem scheme, and helpers to read a shard set back.

Each materialized output is made once per session and reused, to keep the suite fast.
"""

from __future__ import annotations

import os

import flax.nnx as nnx
import jax
import numpy as np
import pytest
from apache_beam.io.filesystem import FileMetadata, FileSystem
from apache_beam.io.localfilesystem import LocalFileSystem

from datarax_beam import OperatorNode, from_source
from datarax_beam.operators import ElementOperator, ElementOperatorConfig
from datarax_beam.shards import decode_batch, load_shardset
from datarax_beam.sources import MemorySource

NUM_RECORDS = 1000
BATCH = 64


class PrefixFS(FileSystem):
    """``testfs:///abs/path`` -> ``/abs/path``: a non-local scheme, as gs:// would be."""

    PREFIX = "testfs://"

    def __init__(self, pipeline_options=None):
        super().__init__(pipeline_options)
        self._local = LocalFileSystem(pipeline_options)

    @classmethod
    def scheme(cls):
        return "testfs"

    def _p(self, path):
        assert path.startswith(self.PREFIX), path
        return path[len(self.PREFIX):]

    def _ps(self, paths):
        return [self._p(p) for p in paths]

    def join(self, basepath, *paths):
        return basepath.rstrip("/") + "/" + "/".join(p.strip("/") for p in paths)

    def split(self, path):
        head, tail = os.path.split(self._p(path))
        return self.PREFIX + head, tail

    def has_dirs(self):
        return True

    def mkdirs(self, path):
        self._local.mkdirs(self._p(path))

    def _list(self, dir_or_prefix):
        for m in self._local._list(self._p(dir_or_prefix)):
            yield FileMetadata(self.PREFIX + m.path, m.size_in_bytes, m.last_updated_in_seconds)

    def create(self, path, *args, **kwargs):
        return self._local.create(self._p(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return self._local.open(self._p(path), *args, **kwargs)

    def copy(self, source_file_names, destination_file_names):
        self._local.copy(self._ps(source_file_names), self._ps(destination_file_names))

    def rename(self, source_file_names, destination_file_names):
        self._local.rename(self._ps(source_file_names), self._ps(destination_file_names))

    def exists(self, path):
        return self._local.exists(self._p(path))

    def size(self, path):
        return self._local.size(self._p(path))

    def last_updated(self, path):
        return self._local.last_updated(self._p(path))

    def checksum(self, path):
        return self._local.checksum(self._p(path))

    def metadata(self, path):
        m = self._local.metadata(self._p(path))
        return FileMetadata(path, m.size_in_bytes, m.last_updated_in_seconds)

    def delete(self, paths):
        self._local.delete(self._ps(paths))

    def report_lineage(self, path, lineage):
        pass


def make_pipeline(source=None, n: int = NUM_RECORDS):
    """A deterministic (normalize) and a stochastic (noise) operator over 8x8 float32 images."""
    if source is None:
        rng = np.random.default_rng(0)
        source = MemorySource(data={
            "image": rng.integers(0, 255, size=(n, 8, 8)).astype(np.float32),
            "label": np.arange(n, dtype=np.int64) % 10,
        })
    normalize = ElementOperator(
        ElementOperatorConfig(), fn=lambda e, k: e.update_data({"image": e.data["image"] / 255.0 - 0.5}))
    noise = ElementOperator(
        ElementOperatorConfig(stochastic=True, stream_name="augment"),
        fn=lambda e, k: e.update_data(
            {"image": e.data["image"] + 0.1 * jax.random.normal(k, e.data["image"].shape)}),
        rngs=nnx.Rngs(augment=7),
    )
    return from_source(source, BATCH) >> OperatorNode(normalize) >> OperatorNode(noise)


def online_columns(pipeline) -> dict[str, np.ndarray]:
    batches = list(pipeline)
    return {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in batches[0]}


def read_all(path: str) -> dict[str, np.ndarray]:
    """Decodes every record of a committed shard set, in shard order."""
    from array_record.python.array_record_module import ArrayRecordReader

    shardset = load_shardset(path)
    records = []
    for shard in shardset.shard_paths:
        local = shard[len(PrefixFS.PREFIX):] if shard.startswith(PrefixFS.PREFIX) else shard
        reader = ArrayRecordReader(local)
        records.extend(reader.read_all())
        reader.close()
    return decode_batch(shardset.schema, records)


def shard_bytes(path: str) -> list[bytes]:
    shardset = load_shardset(path)
    out = []
    for shard in shardset.shard_paths:
        with open(shard, "rb") as f:
            out.append(f.read())
    return out


@pytest.fixture(scope="session")
def pipeline():
    return make_pipeline()


@pytest.fixture(scope="session")
def online(pipeline):
    return online_columns(pipeline)
