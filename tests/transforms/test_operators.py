"""The operator DoFn: kernel built in setup(), compiled once across many bundles, same output
as the online kernel."""

from __future__ import annotations

import flax.nnx as nnx
import jax
import numpy as np
import pytest
from apache_beam.internal import pickler

from datarax_beam.kernels import ChainKernel, PerRecordPathWarning
from datarax_beam.operators import ElementOperator, ElementOperatorConfig
from datarax_beam.testing import assert_same
from datarax_beam.transforms import ApplyOperatorsFn, Chunk


def _ops():
    scale = ElementOperator(ElementOperatorConfig(), fn=lambda e, k: e.update_data({"x": e.data["x"] * 2}))
    noise = ElementOperator(
        ElementOperatorConfig(stochastic=True, stream_name="n"),
        fn=lambda e, k: e.update_data({"x": e.data["x"] + jax.random.uniform(k, e.data["x"].shape)}),
        rngs=nnx.Rngs(n=3),
    )
    return [scale, noise]


def _bundle(fn, chunks):
    """Runs one bundle as a runner does; returns what process() and finish_bundle() emitted."""
    fn.start_bundle()
    out = [o for chunk in chunks for o in fn.process(chunk)]
    return out + [w.value for w in fn.finish_bundle()]


def test_compiles_once_over_many_bundles_and_matches_online():
    ops = _ops()
    fn = pickler.loads(pickler.dumps(ApplyOperatorsFn(ops, batch_size=8)))  # as a runner ships it
    fn.setup()
    x = np.random.default_rng(0).random((100, 3), dtype=np.float32)
    outputs = []
    for bundle in range(10):  # chunks of varying sizes, one bundle each
        lo, hi = bundle * 10, bundle * 10 + 10
        chunks = [Chunk(0, np.arange(a, b), np.arange(a, b), {"x": x[a:b]}) for a, b in ((lo, lo + 3), (lo + 3, hi))]
        fn.start_bundle()
        first = list(fn.process(chunks[0]))
        assert first == []  # one chunk in flight: emitted once the next one is dispatched
        (out,) = fn.process(chunks[1])
        assert out.indices is chunks[0].indices and out.positions is chunks[0].positions
        (last,) = [w.value for w in fn.finish_bundle()]
        assert last.indices is chunks[1].indices
        outputs += [out.columns["x"], last.columns["x"]]
        assert all(isinstance(c.columns["x"], np.ndarray) for c in (out, last))
    assert fn._kernel.compile_count == 1
    online = ChainKernel(ops, pad_to=32)({"x": x}, np.arange(100))
    assert_same({"x": np.concatenate(outputs)}, online)


def test_kernel_is_never_pickled():
    fn = ApplyOperatorsFn(_ops(), batch_size=4)
    fn.setup()
    clone = pickler.loads(pickler.dumps(fn))
    assert clone._kernel is None and fn._kernel is not None


# -- through Beam: dtypes, counters, mixed chains, errors -------------------------------------
def _read(path):
    from datarax_beam.sources import ArrayRecordSourceModule

    reader = ArrayRecordSourceModule(path)
    return reader.get_batch(np.arange(len(reader)))


def _op(fn, name=None):
    return ElementOperator(ElementOperatorConfig(), fn=fn, name=name)


def test_64_bit_features_survive_with_and_without_operators(tmp_path):
    from datarax_beam import from_source, materialize
    from datarax_beam.sources import MemorySource

    data = {"id": np.array([2**40 + 7, 2**33], np.int64), "f": np.array([1e-50, 1e300]),
            "x": np.ones(2, np.float32)}
    plain = from_source(MemorySource(data=data), 2)
    for i, p in enumerate([plain, plain >> _op(lambda e, k: e.update_data({"x": e.data["x"] * 3}))]):
        shards = materialize(p, str(tmp_path / f"out{i}"), num_shards=1)
        assert {f.name: f.dtype for f in shards.schema.features}["id"] == "<i8"
        got = _read(shards.path)
        assert got["id"].dtype == np.int64 and got["id"].tolist() == [2**40 + 7, 2**33]
        assert got["f"].dtype == np.float64 and got["f"].tolist() == [1e-50, 1e300]
        assert got["x"].tolist() == [1.0 + 2 * i] * 2


def test_mixed_chain_offline_equals_online_and_counts_per_record_records(tmp_path):
    from datarax_beam import from_source
    from datarax_beam.operators import HostOperator
    from datarax_beam.operators.host import host_rng
    from datarax_beam.runners import counters, run
    from datarax_beam.sources import MemorySource

    n = 40
    words = np.array([f"Word{i}" for i in range(n)], dtype=object)
    data = {"w": words, "x": np.arange(n, dtype=np.float32), "id": np.arange(n, dtype=np.int64) * 2**33}

    def tokens(batch, keys):  # stochastic, on the host
        jitter = np.array([host_rng(k).integers(0, 3) for k in keys], np.int32)
        return {**batch, "n": np.array([len(w) for w in batch["w"]], np.int32) + jitter}

    chain = [
        HostOperator(tokens, ElementOperatorConfig(stochastic=True, stream_name="t"), rngs=nnx.Rngs(t=1)),
        _ops()[1],  # stochastic JAX
        _op(lambda e, k: e.update_data({"lower": e.data["w"].lower()}), name="lower"),  # per record
        _op(lambda e, k: e.update_data({"x": e.data["x"] + e.data["n"]})),
    ]
    p = from_source(MemorySource(data=data), 16)
    for op in chain:
        p = p >> op
    with pytest.warns(PerRecordPathWarning, match="Operator 'lower' runs per record"):
        batches = list(p)
        online = {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in batches[0]}
        done = run(p, str(tmp_path / "out"), num_shards=2)
    offline = _read(done.shardset.path)
    assert sorted(offline) == sorted(online) == ["id", "lower", "n", "w", "x"]
    for k in online:
        assert offline[k].dtype == online[k].dtype, k
        np.testing.assert_array_equal(offline[k], online[k])
    assert offline["id"].dtype == np.int64
    c = counters(done.result)
    assert c["records_per_record_path"] == n and c["records_transformed"] == n
    assert c["kernel_compilations"] == 2  # in-process: one worker, two JAX segments


def test_a_chain_without_text_use_never_counts_the_per_record_path(tmp_path):
    from datarax_beam import from_source
    from datarax_beam.runners import counters, run
    from datarax_beam.sources import MemorySource

    data = {"w": np.array(["a", "b", "c"], object), "x": np.arange(3, dtype=np.float32)}
    p = from_source(MemorySource(data=data), 2) >> _op(lambda e, k: e.update_data({"t": e.data["w"], "x": -e.data["x"]}))
    c = counters(run(p, str(tmp_path / "out")).result)
    assert c.get("records_per_record_path", 0) == 0 and c["records_transformed"] == 3


def test_the_dofn_dead_letters_a_failing_host_record_and_fails_on_a_trace_error():
    from datarax_beam.operators import HostOperator

    def decode(batch, keys):
        if 5 in batch["i"]:
            raise ValueError("corrupt image 5")
        return batch

    fn = ApplyOperatorsFn([HostOperator(decode, threads=1)], batch_size=4)
    fn.setup()
    idx = np.arange(8)
    out = _bundle(fn, [Chunk(0, idx, idx, {"i": idx})])
    (chunk,) = out
    assert chunk.indices.tolist() == [0, 1, 2, 3, 4, 6, 7] and chunk.columns["i"].tolist() == [0, 1, 2, 3, 4, 6, 7]
    (entry,) = chunk.failures
    assert (entry["index"], entry["stage"], entry["error_type"]) == (5, "operators", "ValueError")

    def abs_(e, k):
        return e.update_data({"x": e.data["x"] if e.data["x"] > 0 else -e.data["x"]})

    bad = ApplyOperatorsFn([_op(abs_)], batch_size=4)
    bad.setup()
    with pytest.raises(jax.errors.TracerBoolConversionError):
        _bundle(bad, [Chunk(0, idx, idx, {"x": np.zeros(8, np.float32)})])
