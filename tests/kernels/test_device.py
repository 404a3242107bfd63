"""Where columns live: deferred device outputs, online placement, narrowing checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datarax_beam.kernels import NarrowingError
from datarax_beam.kernels.device import Deferred, device_column, host_column, narrow, to_device


def test_deferred_columns_drop_padding_once_on_either_side():
    col = Deferred([(jnp.arange(4), 4), (jnp.arange(4, 8), 2)])
    assert len(col) == 6
    host = col.host()
    assert isinstance(host, np.ndarray) and host.tolist() == [0, 1, 2, 3, 4, 5]
    dev = col.device()
    assert isinstance(dev, jax.Array) and dev.tolist() == [0, 1, 2, 3, 4, 5]
    one = jnp.arange(3)
    assert Deferred([(one, 3)]).device() is one  # a whole piece: no copy


def test_online_placement_keeps_dtypes_and_values():
    batch = {"x": np.ones(2, np.float32), "u8": np.ones(2, np.uint8), "id": np.array([2**40, 1]),
             "t": np.array(["a", "b"], object), "dev": jnp.zeros(2)}
    out = to_device(batch)
    assert isinstance(out["x"], jax.Array) and isinstance(out["u8"], jax.Array) and out["u8"].dtype == np.uint8
    assert out["id"] is batch["id"]  # int64 with x64 off: stays numpy, exact
    assert out["t"] is batch["t"] and out["dev"] is batch["dev"]
    assert isinstance(host_column(out["x"]), np.ndarray)
    assert device_column(batch["dev"]) is batch["dev"]


def test_narrow_checks_every_value_and_names_the_first_bad_one():
    ok = np.array([1, -5, 2**31 - 1], np.int64)
    assert narrow("a", ok, np.arange(3)).dtype == np.int32
    f32 = np.array([1.5], np.float32)
    assert narrow("f", f32, np.arange(1)) is f32  # nothing to narrow
    with pytest.raises(NarrowingError, match=r"Feature 'img' of record 8 holds 1e\+200"):
        narrow("img", np.array([[0.0, 1.0], [2.0, 1e200]]), np.array([7, 8]))
    with pytest.raises(NarrowingError, match=r"Feature 'z' of record 0 holds \(1e-60\+0j\)"):
        narrow("z", np.array([1e-60 + 0j]), np.array([0]))
    nan_inf = np.array([np.nan, -np.inf, 0.0, 3e38])
    assert np.isnan(narrow("f", nan_inf, np.arange(4))[0])


def test_device_inputs_are_sliced_and_padded_on_the_device():
    from datarax_beam.kernels import ChainKernel
    from datarax_beam.operators import ElementOperator, ElementOperatorConfig

    op = ElementOperator(ElementOperatorConfig(), fn=lambda e, k: e.update_data({"x": e.data["x"] + 1}))
    k = ChainKernel([op], pad_to=4, online=True)
    with jax.transfer_guard("disallow"):
        out = k({"x": jnp.arange(6.0)}, np.arange(6))
    assert isinstance(out["x"], jax.Array) and out["x"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
