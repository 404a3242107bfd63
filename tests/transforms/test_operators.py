"""The operator DoFn: kernel built in setup(), compiled once across many bundles, same output
as the online kernel."""

from __future__ import annotations

import flax.nnx as nnx
import jax
import numpy as np
from apache_beam.internal import pickler

from datarax_beam.kernels import ChainKernel
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
