"""Pipelines with injectable faults for the reliability tests.

Faults are plain Python, tracked through files under a test's ``tmp_path`` so that they behave
the same across retries, DoFn instances and processes (no mocks of Beam, JAX or array_record).
"""

from __future__ import annotations

import json
import os

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from datarax_beam import OperatorNode, from_source
from datarax_beam.operators import ElementOperator, ElementOperatorConfig
from datarax_beam.shards import SHARDSET_FILE, decode_batch, load_shardset
from datarax_beam.shards.reader import read_shard
from datarax_beam.shards.shardset import ERRORS_DIR
from datarax_beam.sources import MemorySource

N = 200
BATCH = 32


def source(n: int = N) -> MemorySource:
    rng = np.random.default_rng(0)
    return MemorySource(data={"x": rng.random((n, 4), dtype=np.float32), "label": np.arange(n, dtype=np.int32)})


class Fault:
    """Raises for chosen record indices the first ``times`` times each is seen (counted in
    ``state_dir`` files); ``times=None`` raises every time."""

    def __init__(self, state_dir: str, bad=(), times: int | None = None):
        self.state_dir, self.bad, self.times = str(state_dir), frozenset(int(i) for i in bad), times
        os.makedirs(self.state_dir, exist_ok=True)

    def seen(self, index: int) -> int:
        path = os.path.join(self.state_dir, f"seen-{index}")
        count = int(open(path).read()) if os.path.exists(path) else 0
        with open(path, "w") as f:
            f.write(str(count + 1))
        return count

    def check(self, index: int) -> None:
        index = int(index)
        if index in self.bad and (self.times is None or self.seen(index) < self.times):
            raise ValueError(f"bad record {index}")


def pipeline(fault: Fault | None = None, src=None, batch: int = BATCH):
    """normalize -> stochastic noise -> an operator that calls ``fault`` from inside the jitted
    chain (a host callback, so one record of a batch can fail)."""
    normalize = ElementOperator(ElementOperatorConfig(), fn=lambda e, k: e.update_data({"x": e.data["x"] * 2 - 1}))
    noise = ElementOperator(
        ElementOperatorConfig(stochastic=True, stream_name="augment"),
        fn=lambda e, k: e.update_data({"x": e.data["x"] + 0.1 * jax.random.normal(k, e.data["x"].shape)}),
        rngs=nnx.Rngs(augment=5),
    )

    def host(index):
        if fault is not None:
            fault.check(index)
        return np.float32(0)

    def guard(e, k):
        zero = jax.pure_callback(host, jax.ShapeDtypeStruct((), jnp.float32), e.metadata.index,
                                 vmap_method="sequential")
        return e.update_data({"x": e.data["x"] + zero})

    p = from_source(src if src is not None else source(), batch)
    return p >> OperatorNode(normalize) >> OperatorNode(noise) >> OperatorNode(ElementOperator(ElementOperatorConfig(), fn=guard))


def local(path: str) -> str:
    return path.split("://", 1)[1] if "://" in path else path


def read_all(path: str) -> dict[str, np.ndarray]:
    shardset = load_shardset(path)
    records = []
    for shard in shardset.shard_paths:
        records.extend(read_shard(local(shard), shardset.compression))
    return decode_batch(shardset.schema, records) if records else {}


def shard_bytes(path: str) -> list[bytes]:
    out = []
    for shard in load_shardset(path).shard_paths:
        with open(local(shard), "rb") as f:
            out.append(f.read())
    return out


def errors(path: str) -> list[dict]:
    directory = os.path.join(local(path), ERRORS_DIR)
    if not os.path.isdir(directory):
        return []
    out = []
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            out.extend(json.loads(line) for line in f if line.strip())
    return out


def marker(path: str) -> dict:
    with open(os.path.join(local(path), SHARDSET_FILE), encoding="utf-8") as f:
        return json.load(f)
