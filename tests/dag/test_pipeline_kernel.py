"""The pipeline's use of the kernel: batches straight from the device, errors naming records."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from datarax_beam import from_source
from datarax_beam.kernels import OperatorError
from datarax_beam.operators import ElementOperator, ElementOperatorConfig, HostOperator
from datarax_beam.sources import MemorySource


def _double(e, k):
    return e.update_data({"x": e.data["x"] * 2})


def test_batches_come_from_the_device_without_implicit_transfers():
    data = {"x": np.arange(10, dtype=np.float32), "label": np.arange(10, dtype=np.int32),
            "id": np.arange(10, dtype=np.int64) + 2**40}
    p = from_source(MemorySource(data=data), 4) >> ElementOperator(ElementOperatorConfig(), fn=_double)
    with jax.transfer_guard("disallow"):  # only explicit, single transfers (no numpy round trip)
        batches = list(p)
    assert all(isinstance(b["x"], jax.Array) and isinstance(b["label"], jax.Array) for b in batches)
    assert [b["x"].tolist() for b in batches][-1] == [16.0, 18.0]
    assert batches[0]["id"].dtype == np.int64 and batches[0]["id"][0] == 2**40  # exact, numpy
    assert p.kernel.compile_count == 1


def test_a_host_and_jax_chain_transfers_explicitly_too():
    import flax.nnx as nnx

    def shift(batch, keys):
        return {**batch, "x": batch["x"] + keys[:, 0].astype(np.float32) % 3}

    host = HostOperator(shift, ElementOperatorConfig(stochastic=True, stream_name="s"), rngs=nnx.Rngs(s=0))
    p = from_source(MemorySource(data={"x": np.zeros(6, np.float32)}), 4) >> host >> ElementOperator(
        ElementOperatorConfig(), fn=_double)
    with jax.transfer_guard("disallow"):
        batches = list(p)
    out = np.concatenate([np.asarray(b["x"]) for b in batches])
    assert out.shape == (6,) and set(out.tolist()) <= {0.0, 2.0, 4.0}


def test_an_online_operator_error_names_the_record():
    def decode(batch, keys):
        if any(b == b"corrupt" for b in batch["img"]):
            raise ValueError("cannot identify image file")
        return batch

    imgs = np.array([b"ok"] * 9 + [b"corrupt"] + [b"ok"] * 2, dtype=object)
    p = from_source(MemorySource(data={"img": imgs}), 4) >> HostOperator(decode, name="decode")
    with pytest.raises(OperatorError, match=r"Operator 'decode' failed on record 9 \(epoch 0\): "
                                            r"ValueError: cannot identify image file"):
        list(p)


def test_batches_kept_by_the_user_survive_a_host_operator_reusing_its_output_buffer():
    raw = np.zeros(8 + 16, np.float32)  # 64-byte aligned: JAX on the CPU may alias it, not copy
    start = (-raw.ctypes.data % 64) // 4
    buffer = raw[start : start + 8].reshape(4, 2)  # written again by every batch

    def fill(batch, keys):
        buffer[: len(batch["x"])] = batch["x"][:, None]
        return {"y": buffer[: len(batch["x"])]}

    p = from_source(MemorySource(data={"x": np.arange(10, dtype=np.float32)}), 4) >> HostOperator(
        fill, threads=1, record_wise=False)
    batches = list(p)  # every batch kept, then read
    np.testing.assert_array_equal(np.concatenate([np.asarray(b["y"])[:, 0] for b in batches]), np.arange(10))
    # a feature passed through is the source's own column, not copied
    ident = from_source(MemorySource(data={"x": np.arange(4, dtype=np.float32)}), 4) >> HostOperator(
        lambda b, k: b, threads=1)
    assert next(iter(ident))["x"].tolist() == [0, 1, 2, 3]
