"""Shared fixtures for the Beam tests: the reference pipeline, its online output, a test
filesystem scheme, and helpers to read a shard set back.

Each materialized output is made once per session and reused, to keep the suite fast.
"""

from __future__ import annotations

import flax.nnx as nnx
import jax
import numpy as np
import pytest

from datarax_beam import OperatorNode, from_source
from datarax_beam.operators import ElementOperator, ElementOperatorConfig
from datarax_beam.shards import decode_batch, load_shardset
from datarax_beam.shards.reader import read_shard
from datarax_beam.sources import MemorySource

from .testfs import PrefixFS  # noqa: F401  (registers the testfs:// scheme; re-exported)

NUM_RECORDS = 1000
BATCH = 64


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
    shardset = load_shardset(path)
    records = []
    for shard in shardset.shard_paths:
        local = shard[len(PrefixFS.PREFIX):] if shard.startswith(PrefixFS.PREFIX) else shard
        records.extend(read_shard(local, shardset.compression))
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
