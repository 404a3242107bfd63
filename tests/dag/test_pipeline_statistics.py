"""Online analyze-then-transform: pipelines compute (or take) the statistics their operators use."""

import numpy as np
import pytest

from datarax_beam import from_source
from datarax_beam.operators import ElementOperator, ElementOperatorConfig
from datarax_beam.operators.statistics import Normalize
from datarax_beam.sources import MemorySource, MemorySourceConfig
from datarax_beam.statistics import Statistics
from datarax_beam.testing import IteratorSource

X = np.random.default_rng(1).normal(4.0, 2.0, (1500, 3)).astype(np.float32)


def pipeline(source=None, batch_size=64):
    source = source or MemorySource(MemorySourceConfig(shuffle=True, seed=2), {"x": X})
    double = ElementOperator(ElementOperatorConfig(), fn=lambda e, k: e.update_data({"x": e.data["x"] * 2}))
    return from_source(source, batch_size=batch_size) >> double >> Normalize("x", axes="all")


def test_statistics_are_over_the_prefix_output_and_normalize_works():
    p = pipeline()
    stats = p.statistics["x"]
    np.testing.assert_allclose(stats["mean"], (X.astype(np.float64) * 2).mean(), rtol=1e-6)
    out = np.concatenate([np.asarray(b["x"]) for b in p]).ravel()
    assert abs(out.mean()) < 1e-5 and abs(out.std() - 1) < 1e-4


def test_statistics_do_not_depend_on_batch_size_order_or_source_kind():
    ref = pipeline(batch_size=64).statistics["x"]
    for other in (pipeline(batch_size=7), pipeline(MemorySource(MemorySourceConfig(), {"x": X})), pipeline(IteratorSource({"x": X}, name="rows"))):
        for key, value in ref.items():
            np.testing.assert_array_equal(np.asarray(other.statistics["x"][key]), np.asarray(value), err_msg=key)


def test_with_statistics_skips_analysis_and_accepts_a_path(tmp_path):
    given = Statistics({"x": {"mean": np.array(10.0), "std": np.array(2.0)}})
    p = pipeline().with_statistics(given)
    first = next(iter(p))
    src = MemorySource(MemorySourceConfig(shuffle=True, seed=2), {"x": X})
    idx = src.epoch_order(0)[:64]
    np.testing.assert_allclose(np.asarray(first["x"]), (X[idx] * 2 - 10) / (2 + 1e-6), rtol=1e-5)
    given.save(str(tmp_path))
    assert float(pipeline().with_statistics(str(tmp_path)).statistics["x"]["mean"]) == 10.0
    with pytest.raises(TypeError, match="`statistics` must be a mapping or a path, got int"):
        pipeline().with_statistics(3)
