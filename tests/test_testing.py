import numpy as np
import pytest

from datarax_beam.sources import MemorySource, MemorySourceConfig
from datarax_beam.testing import assert_restores_at_every_step, assert_same, collect


class ForgetfulSource(MemorySource):
    """Ignores restored state: the helper must catch it."""

    def set_state(self, state):
        pass


def make_data():
    return {"x": np.arange(4), "t": ["a", "b", "c", "d"]}


def test_helper_passes_a_correct_source_and_counts_steps():
    assert assert_restores_at_every_step(lambda: MemorySource(MemorySourceConfig(), make_data())) == 8
    assert assert_restores_at_every_step(
        lambda: MemorySource(MemorySourceConfig(), make_data()), epochs=1, max_steps=2) == 2


def test_helper_catches_a_source_that_ignores_its_state():
    with pytest.raises(AssertionError, match=r"restored at step 1"):
        assert_restores_at_every_step(lambda: ForgetfulSource(MemorySourceConfig(), make_data()))


def test_assert_same_compares_dtype_shape_and_text():
    assert_same({"x": np.arange(2), "t": np.array(["a"], object)}, {"x": np.arange(2), "t": ["a"]})
    with pytest.raises(AssertionError, match=r"\['x'\]: int32\(2,\) != int64\(2,\)"):
        assert_same({"x": np.arange(2, dtype=np.int32)}, {"x": np.arange(2, dtype=np.int64)})
    with pytest.raises(AssertionError, match=r"\['t'\]\[0\]"):
        assert_same({"t": ["a"]}, {"t": ["b"]})
    assert collect([{"x": np.int32(1)}])[0]["x"] == np.array(1, np.int32)
