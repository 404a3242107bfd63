"""Statistics-consuming operators: Normalize, VocabularyLookup, StatisticsOperator, binding."""

import numpy as np
import pytest

from datarax_beam.core.element import Element
from datarax_beam.kernels import ChainKernel
from datarax_beam.operators import ElementOperator, ElementOperatorConfig, OperatorConfig
from datarax_beam.operators.statistics import (
    Normalize,
    StatisticsOperator,
    VocabularyLookup,
    bind_statistics,
    statistics_consumers,
)
from datarax_beam.statistics import StatSpec, compute_over_batches

X = np.random.default_rng(0).normal(5.0, 3.0, (64, 4, 2)).astype(np.float32)


def _stats(op, columns):
    return compute_over_batches(op.statistics_specs(), [(columns, np.arange(len(next(iter(columns.values())))))])


def test_normalize_per_channel_gives_zero_mean_unit_std():
    op = Normalize("x", axes=(0,))
    out = ChainKernel([op.with_statistics(_stats(op, {"x": X}))], pad_to=16)({"x": X}, np.arange(64))["x"]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean((0, 1)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std((0, 1)), 1.0, atol=1e-4)


def test_vocabulary_lookup_strings_and_ints_with_oov():
    words = np.array(["b", "a", "b", "c", "b", "a"], dtype=object)
    op = VocabularyLookup("w", top_k=2, output="w_id")
    out = ChainKernel([op.with_statistics(_stats(op, {"w": words}))])({"w": words}, np.arange(6))
    assert out["w_id"].tolist() == [0, 1, 0, 2, 0, 1]  # c is out of vocabulary -> 2
    ints = np.array([7, 7, 3, 9, 3, 7])
    op = VocabularyLookup("i")
    out = ChainKernel([op.with_statistics(_stats(op, {"i": ints}))], pad_to=4)({"i": ints}, np.arange(6))
    assert out["i"].tolist() == [0, 0, 1, 2, 1, 0]


def test_generic_operator_receives_its_statistics():
    op = StatisticsOperator(OperatorConfig(), fn=lambda e, k, s: e.update_data({"x": e.data["x"] - s["m"]["max"]}),
                            statistics=[StatSpec("x", name="m", axes="all")])
    bound = op.with_statistics(_stats(op, {"x": X}))
    assert float(bound(Element({"x": np.float32(X.max())})).data["x"]) == 0.0
    assert bound.fingerprint() != op.fingerprint()


def test_bind_computes_each_consumer_over_the_prefix_output():
    double = ElementOperator(ElementOperatorConfig(), fn=lambda e, k: e.update_data({"x": e.data["x"] * 2}))
    ops = [Normalize("x", "before", axes="all"), double, Normalize("x", "after", axes="all")]
    seen = []

    def compute(prefix, specs):
        seen.append((len(prefix), [s.name for s in specs]))
        data = ChainKernel(prefix)({"x": X}, np.arange(64))
        return compute_over_batches(specs, [(data, np.arange(64))])

    bound, stats = bind_statistics(ops, None, compute)
    assert seen == [(0, ["before"]), (2, ["after"])]
    assert statistics_consumers(ops) == [0, 2]
    np.testing.assert_allclose(stats["after"]["std"], 2.0, rtol=1e-5)  # normalized, then doubled
    _, stats2 = bind_statistics(ops, stats, lambda p, s: pytest.fail("should not recompute"))
    assert set(stats2) == {"before", "after"}


def test_errors():
    with pytest.raises(RuntimeError, match="needs statistics \\['x'\\] that were not computed"):
        Normalize("x")(Element({"x": np.float32(1)}))
    with pytest.raises(KeyError, match="needs statistics \\['x'\\]; got \\['y'\\]"):
        Normalize("x").with_statistics({"y": {}})
    with pytest.raises(TypeError, match="non-empty list of StatSpec"):
        StatisticsOperator(OperatorConfig(), fn=lambda e, k, s: e, statistics=["x"])
    bad = StatisticsOperator(OperatorConfig(), fn=lambda e, k, s: 3, statistics=[StatSpec("x")])
    with pytest.raises(TypeError, match="must return an Element, got int"):
        bad.with_statistics({"x": {}})(Element({"x": 1}))
