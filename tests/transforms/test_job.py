"""Materialize: a whole job as one transform on a PBegin, byte-identical to `materialize`."""

from __future__ import annotations

import apache_beam as beam
import flax.nnx as nnx
import jax
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from datarax_beam import OperatorNode, from_source
from datarax_beam.operators import ElementOperator, ElementOperatorConfig
from datarax_beam.operators.statistics import Normalize
from datarax_beam.runners import build_options, make_runner, materialize, options
from datarax_beam.shards import ShardSet, load_shardset
from datarax_beam.sources import MemorySource
from datarax_beam.testing import IteratorSource
from datarax_beam.transforms import Materialize

N = 120
X = np.random.default_rng(1).normal(size=(N, 2)).astype(np.float32)


def beam_pipeline() -> beam.Pipeline:
    opts = build_options(options.in_process())
    return beam.Pipeline(runner=make_runner(opts), options=opts)


def make_pipeline(source):
    noise = ElementOperator(
        ElementOperatorConfig(stochastic=True, stream_name="augment"),
        fn=lambda e, k: e.update_data({"x": e.data["x"] + jax.random.normal(k, e.data["x"].shape)}),
        rngs=nnx.Rngs(augment=2),
    )
    return from_source(source, 16) >> Normalize("x", "x_stats", axes=(0,)) >> OperatorNode(noise)


def same_shards(a: str, b: str) -> None:
    a, b = load_shardset(a), load_shardset(b)
    assert a.schema == b.schema and a.statistics == b.statistics
    assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards]


@pytest.mark.parametrize("source", [
    MemorySource(data={"x": X}),  # random access: the fused read -> transform -> write stage
    IteratorSource({"x": list(X)}),  # iterator only: read in order, grouped by shard
], ids=["random_access", "iterator"])
def test_materialize_transform_is_byte_identical_to_materialize(tmp_path, source):
    pipeline = make_pipeline(source)
    materialize(pipeline, str(tmp_path / "driver"), num_shards=3, shuffle=True, seed=4,
                options=options.in_process())
    with beam_pipeline() as p:
        committed = p | Materialize(pipeline, str(tmp_path / "transform"), num_shards=3, shuffle=True, seed=4)
        out = str(tmp_path / "transform")
        assert_that(committed | beam.Map(lambda text: ShardSet.loads(text, out).num_records), equal_to([N]))
    same_shards(str(tmp_path / "driver"), str(tmp_path / "transform"))


def test_a_committed_directory_is_refused_when_built(tmp_path):
    pipeline = from_source(MemorySource(data={"x": X}), 16)
    materialize(pipeline, str(tmp_path / "out"), options=options.in_process())
    with pytest.raises(FileExistsError, match=r"already holds a committed shard set"):
        Materialize(pipeline, str(tmp_path / "out"))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"pipeline": [1]}, TypeError, r"`pipeline` must be a datarax_beam Pipeline .*got list"),
    ({"output_dir": None}, TypeError, r"`output_dir` must be a path string .*got NoneType"),
    ({"num_shards": 0}, ValueError, r"`num_shards` must be an int >= 1 or None, got 0"),
    ({"compression": "gzip"}, ValueError, r"Unknown compression 'gzip'"),
    ({"schema": 5}, TypeError, r"`schema` must be a datarax_beam Schema or its JSON dict, got int"),
])
def test_arguments_are_checked_when_built(tmp_path, kwargs, error, message):
    args = {"pipeline": from_source(MemorySource(data={"x": X}), 16), "output_dir": str(tmp_path / "o"), **kwargs}
    with pytest.raises(error, match=message):
        Materialize(args.pop("pipeline"), args.pop("output_dir"), **args)
