"""The public composites together, in user pipelines: ReadFromParquet / Create -> ApplyChain ->
WriteShardSet read back with the NNX reader equals online iteration; materialize's shards are
byte-identical to the same job written with the transforms; ReadShardSet feeds a second job."""

from __future__ import annotations

import apache_beam as beam
import flax.nnx as nnx
import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datarax_beam import OperatorNode, from_source
from datarax_beam.operators import ElementOperator, ElementOperatorConfig
from datarax_beam.operators.statistics import Normalize
from datarax_beam.runners import build_options, make_runner, materialize, options
from datarax_beam.shards import load_shardset
from datarax_beam.sources import ArrayRecordSourceModule, MemorySource
from datarax_beam.testing import assert_same
from datarax_beam.transforms import ApplyChain, ReadShardSet, WriteShardSet

N = 90
RNG = np.random.default_rng(3)
DATA = {"x": RNG.normal(size=(N, 3)).astype(np.float32), "label": np.arange(N, dtype=np.int64) % 7}


def beam_pipeline() -> beam.Pipeline:
    opts = build_options(options.in_process())
    return beam.Pipeline(runner=make_runner(opts), options=opts)


def chain():
    scale = ElementOperator(ElementOperatorConfig(), fn=lambda e, k: e.update_data({"x": e.data["x"] * 2.0}))
    noise = ElementOperator(
        ElementOperatorConfig(stochastic=True, stream_name="augment"),
        fn=lambda e, k: e.update_data({"x": e.data["x"] + jax.random.normal(k, e.data["x"].shape)}),
        rngs=nnx.Rngs(augment=11),
    )
    return [scale, noise]


def online(ops, batch_size=16, data=DATA):
    pipeline = from_source(MemorySource(data=data), batch_size)
    for op in ops:
        pipeline = pipeline >> OperatorNode(op)
    batches = list(pipeline)
    return {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in batches[0]}


def read_back(path) -> dict[str, np.ndarray]:
    reader = ArrayRecordSourceModule(path)
    return reader.get_batch(np.arange(len(reader)))


def records(data=DATA):
    n = len(next(iter(data.values())))
    return [(i, {k: v[i] for k, v in data.items()}) for i in range(n)]


def test_parquet_to_apply_chain_to_write_shard_set_reads_back_as_online(tmp_path):
    table = pa.table({"row": np.arange(N), "x": list(DATA["x"]), "label": DATA["label"]})
    pq.write_table(table, tmp_path / "rows.parquet", row_group_size=25)
    out = str(tmp_path / "out")

    def to_record(row):
        return row["row"], {"x": np.asarray(row["x"], np.float32), "label": np.int64(row["label"])}

    with beam_pipeline() as p:
        _ = (p | beam.io.ReadFromParquet(str(tmp_path / "rows.parquet"))
               | beam.Map(to_record)
               | ApplyChain(chain(), batch_size=16)
               | WriteShardSet(out, num_shards=3, batch_size=16))
    shardset = load_shardset(out)
    assert shardset.num_records == N and len(shardset.shards) == 3
    assert [s.num_records for s in shardset.shards] == [30, 30, 30]
    assert_same(read_back(out), online(chain()))


def test_apply_chain_with_statistics_computed_over_its_input_equals_online(tmp_path):
    ops = [Normalize("x", "x_stats", axes=(0,))] + chain()
    with beam_pipeline() as p:
        _ = (p | beam.Create(records()) | ApplyChain(ops, batch_size=16)
               | WriteShardSet(str(tmp_path / "out"), num_shards=2, batch_size=16))
    assert_same(read_back(str(tmp_path / "out")), online(ops))


def test_materialize_is_byte_identical_to_the_same_job_written_with_the_transforms(tmp_path):
    ops = chain()
    pipeline = from_source(MemorySource(data=DATA), 16) >> OperatorNode(ops[0]) >> OperatorNode(ops[1])
    done = materialize(pipeline, str(tmp_path / "driver"), num_shards=4, shuffle=True, seed=5,
                       options=options.in_process())
    with beam_pipeline() as p:
        _ = (p | beam.Create(records())
               | ApplyChain(ops, batch_size=16, output="chunks")
               | WriteShardSet(str(tmp_path / "transforms"), num_shards=4, shuffle=True, seed=5, batch_size=16))
    mine = load_shardset(str(tmp_path / "transforms"))
    assert mine.schema == done.schema
    assert [s.sha256 for s in mine.shards] == [s.sha256 for s in done.shards]
    assert [s.num_records for s in mine.shards] == [s.num_records for s in done.shards]


def test_read_shard_set_feeds_a_downstream_job_that_equals_online_over_the_reader(tmp_path):
    first = from_source(MemorySource(data=DATA), 16) >> OperatorNode(chain()[0])
    upstream = materialize(first, str(tmp_path / "up"), num_shards=3, options=options.in_process())
    noise = chain()[1]
    with beam_pipeline() as p:
        _ = (p | ReadShardSet(upstream.path, records_per_split=20)
               | ApplyChain([noise], batch_size=16)
               | WriteShardSet(str(tmp_path / "down"), num_shards=2, batch_size=16))
    expected = from_source(ArrayRecordSourceModule(upstream.path), 16) >> OperatorNode(noise)
    batches = list(expected)
    assert_same(read_back(str(tmp_path / "down")),
                {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in batches[0]})


def test_the_transforms_run_in_worker_processes(tmp_path):
    """Pickled DoFns, CombineFns and the BoundedSource, no memory shared with this process."""
    opts = build_options(options.multi_process(2))
    with beam.Pipeline(runner=make_runner(opts), options=opts) as p:
        _ = (p | beam.Create(records())
               | ApplyChain(chain(), batch_size=16)
               | WriteShardSet(str(tmp_path / "first"), num_shards=3, batch_size=16))
    with beam.Pipeline(runner=make_runner(opts), options=opts) as p:
        _ = (p | ReadShardSet(str(tmp_path / "first"), records_per_split=25)
               | WriteShardSet(str(tmp_path / "copy"), num_shards=3, batch_size=16))
    assert_same(read_back(str(tmp_path / "first")), online(chain()))
    first, copy = load_shardset(str(tmp_path / "first")), load_shardset(str(tmp_path / "copy"))
    assert [s.sha256 for s in copy.shards] == [s.sha256 for s in first.shards]
