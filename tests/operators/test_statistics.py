"""Statistics-consuming operators: Normalize, VocabularyLookup, StatisticsOperator, binding."""

import numpy as np
import pytest

from datarax_beam.core.element import Element
from datarax_beam.kernels import ChainKernel
from datarax_beam.operators import (
    ElementOperator,
    ElementOperatorConfig,
    HostOperator,
    OperatorConfig,
)
from datarax_beam.operators.statistics import (
    HostStatisticsOperator,
    Normalize,
    StatisticsOperator,
    VocabularyLookup,
    analysis_plan,
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


# -- analysis plan: one pass for consecutive consumers ------------------------------------------
def _tabular_chain():
    return ([VocabularyLookup(c, output=f"{c}_id") for c in ("a", "b", "c")]
            + [Normalize(f) for f in ("x", "y", "z", "w")])


def test_analysis_plan_groups_consumers_that_do_not_write_what_later_ones_analyze():
    ops = _tabular_chain()
    plan = analysis_plan(ops)
    assert [(k, [s.name for s in specs]) for k, specs in plan] == [
        (0, ["a_vocab", "b_vocab", "c_vocab", "x", "y", "z", "w"])]
    double = ElementOperator(ElementOperatorConfig(), fn=lambda e, k: e.update_data({"x": e.data["x"] * 2}))
    # an operator that may write anything starts a new pass; so does a consumer writing an analyzed feature
    mixed = [Normalize("x", "x1"), Normalize("y"), double, Normalize("x", "x2"), Normalize("x", "x3")]
    assert [(k, [s.name for s in specs]) for k, specs in analysis_plan(mixed)] == [
        (0, ["x1", "y"]), (3, ["x2"]), (4, ["x3"])]
    # given statistics and already bound consumers are not analyzed again, but still lie in between
    assert [(k, [s.name for s in sp]) for k, sp in analysis_plan(mixed, given={"x1", "x2"})] == [(1, ["y"]), (4, ["x3"])]
    bound_first = [Normalize("x", "x1").with_statistics({"x1": {"mean": 0.0, "std": 1.0}}), Normalize("y")]
    assert [(k, [s.name for s in sp]) for k, sp in analysis_plan(bound_first)] == [(1, ["y"])]
    unknown = StatisticsOperator(OperatorConfig(), fn=lambda e, k, s: e, statistics=[StatSpec("y", name="u")])
    assert [k for k, _ in analysis_plan([Normalize("x"), unknown, Normalize("z")])] == [0, 2]


def test_bind_statistics_computes_a_tabular_chain_in_one_pass():
    rng = np.random.default_rng(0)
    data = {**{c: np.array([f"{c}{i % 5}" for i in range(40)], dtype=object) for c in "abc"},
            **{f: rng.normal(size=40) for f in "xyzw"}}
    calls = []

    def compute(prefix, specs):
        calls.append(len(prefix))
        return compute_over_batches(specs, [(data, np.arange(40))])

    bound, stats = bind_statistics(_tabular_chain(), None, compute)
    assert calls == [0] and len(stats) == 7 and all(op.is_bound for op in bound)
    assert stats["a_vocab"]["vocabulary"] == ["a0", "a1", "a2", "a3", "a4"]


def test_host_statistics_operator_is_a_host_operator_and_needs_binding():
    op = HostStatisticsOperator(OperatorConfig(), fn=lambda b, k, s: {**b, "c": b["x"] - s["x"]["mean"]},
                                statistics=[StatSpec("x")], writes=["c"])
    assert isinstance(op, HostOperator) and isinstance(op, StatisticsOperator) and op.writes() == {"c"}
    with pytest.raises(RuntimeError, match="needs statistics \\['x'\\] that were not computed"):
        op.apply_batch({"x": np.zeros(2)}, None)
    bound = op.with_statistics({"x": {"mean": np.array(1.0)}})
    assert bound.apply_batch({"x": np.array([1.0, 3.0])}, None)["c"].tolist() == [0.0, 2.0]
    assert float(bound(Element({"x": np.float64(4.0)})).data["c"]) == 3.0  # per-record form
    assert bound.fingerprint() != op.fingerprint()
    with pytest.raises(TypeError, match="needs `fn`"):
        HostStatisticsOperator(OperatorConfig(), statistics=[StatSpec("x")])
    with pytest.raises(TypeError, match="`writes` must be a list of feature names"):
        HostStatisticsOperator(OperatorConfig(), fn=lambda b, k, s: b, statistics=[StatSpec("x")], writes="c")
