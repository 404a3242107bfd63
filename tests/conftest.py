"""Shared fixtures. JAX runs on CPU in tests unless the caller chose a platform."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import flax.nnx as nnx  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from datarax_beam.operators import ElementOperator, ElementOperatorConfig  # noqa: E402
from datarax_beam.sources import MemorySource, MemorySourceConfig  # noqa: E402


@pytest.fixture
def memory_source():
    """Builds a MemorySource of ``n`` records {"x": float32 index, "label": int index}."""

    def make(n: int = 10, *, shuffle: bool = False, seed: int = 0) -> MemorySource:
        data = {"x": np.arange(n, dtype=np.float32), "label": np.arange(n, dtype=np.int32)}
        return MemorySource(MemorySourceConfig(shuffle=shuffle, seed=seed), data)

    return make


@pytest.fixture
def noise_op():
    """Builds a stochastic operator adding uniform noise to "x" (stream "augment")."""

    def add_noise(element, key):
        return element.update_data({"x": element.data["x"] + jax.random.uniform(key)})

    def make(seed: int = 0) -> ElementOperator:
        return ElementOperator(
            ElementOperatorConfig(stochastic=True, stream_name="augment"),
            fn=add_noise,
            rngs=nnx.Rngs(augment=seed),
        )

    return make


@pytest.fixture
def double_op():
    """A deterministic operator doubling "x"."""

    def double(element, key):
        return element.update_data({"x": element.data["x"] * 2})

    return ElementOperator(ElementOperatorConfig(stochastic=False), fn=double)


@pytest.fixture
def csv_path(tmp_path):
    """A tiny CSV file: header ``a,b`` and 10 rows ``i, 2*i``."""
    path = tmp_path / "data.csv"
    path.write_text("a,b\n" + "".join(f"{i},{2 * i}\n" for i in range(10)))
    return str(path)
