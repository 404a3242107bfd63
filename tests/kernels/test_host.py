"""Host segments: batched calls, the thread pool, keys equal to JAX operators' keys, mixed chains."""

from __future__ import annotations

import pickle
import threading

import flax.nnx as nnx
import jax
import numpy as np
import pytest

from datarax_beam.core import columns as cols
from datarax_beam.kernels import ChainKernel, record_key, record_key_data
from datarax_beam.kernels.segments import run_per_record
from datarax_beam.operators import ElementOperator, ElementOperatorConfig, HostOperator
from datarax_beam.operators.host import host_rng

STOCHASTIC = ElementOperatorConfig(stochastic=True, stream_name="aug")
WORDS = cols.object_column(["a", "bb", "ccc", "dddd", "e", "ff", "g"])


def lengths(batch, keys):
    return {**batch, "n": np.array([len(w) for w in batch["w"]], np.int32)}


def test_a_host_operator_runs_once_per_batch_over_columns():
    calls = []

    def fn(batch, keys):
        calls.append(len(batch["w"]))
        return lengths(batch, keys)

    k = ChainKernel([HostOperator(fn, threads=1)], pad_to=4)
    out = k({"w": WORDS}, np.arange(7))
    assert calls == [7] and out["n"].tolist() == [1, 2, 3, 4, 1, 2, 1] and out["w"] is WORDS
    assert k.compile_count == 0 and k.records_per_record_path == 0


@pytest.mark.parametrize("threads", [2, 3, 16])
def test_threads_split_a_batch_into_contiguous_pieces_with_the_same_result(threads):
    seen = []

    def fn(batch, keys):
        seen.append((threading.get_ident(), list(batch["w"])))
        return {**batch, "n": [len(w) for w in batch["w"]], "k": keys[:, 1]}

    op = HostOperator(fn, ElementOperatorConfig(stochastic=True, stream_name="aug"), rngs=nnx.Rngs(aug=0),
                      threads=threads)
    one = ChainKernel([HostOperator(fn, op.config, rngs=nnx.Rngs(aug=0), threads=1)])({"w": WORDS}, np.arange(7))
    seen.clear()
    out = ChainKernel([op])({"w": WORDS}, np.arange(7))
    assert len(seen) == min(threads, 7)
    pieces = sorted((list(WORDS).index(piece[0]), piece) for _, piece in seen)
    assert [w for _, piece in pieces for w in piece] == list(WORDS)  # contiguous, covering the batch
    for key in one:
        np.testing.assert_array_equal(out[key], one[key])
    assert out["n"].dtype == one["n"].dtype


def test_kernel_threads_is_the_default_and_record_wise_false_never_splits():
    sizes = []

    def fn(batch, keys):
        sizes.append(len(batch["w"]))
        return batch

    ChainKernel([HostOperator(fn)], threads=3)({"w": WORDS}, np.arange(7))
    assert sorted(sizes) == [2, 2, 3]
    sizes.clear()
    ChainKernel([HostOperator(fn, record_wise=False)], threads=3)({"w": WORDS}, np.arange(7))
    assert sizes == [7]


def test_host_keys_are_the_keys_a_jax_operator_gets():
    got = {}

    def host(batch, keys):
        got["host"] = keys
        return batch

    def jax_fn(e, k):
        return e.update_data({"kd": jax.random.key_data(k)})

    hop = HostOperator(host, STOCHASTIC, rngs=nnx.Rngs(aug=5), threads=1)
    jop = ElementOperator(STOCHASTIC, fn=jax_fn, rngs=nnx.Rngs(aug=5))
    np.testing.assert_array_equal(hop.base_key_data, jop.base_key_data)
    idx = np.array([3, 900, 7, 41, 2])
    out = ChainKernel([hop, jop], pad_to=2)({"x": np.zeros(5, np.float32)}, idx, 2)
    assert got["host"].dtype == np.uint32 and got["host"].shape == (5, 2)
    np.testing.assert_array_equal(got["host"], out["kd"])
    expected = [np.asarray(jax.random.key_data(record_key(hop.base_key_data, 2, i))) for i in idx]
    np.testing.assert_array_equal(got["host"], np.stack(expected))
    np.testing.assert_array_equal(record_key_data(hop.base_key_data, 2, idx, 3), got["host"])


def test_mixed_chain_equals_the_reference_and_compiles_once():
    def augment(batch, keys):
        noise = np.stack([host_rng(k).normal(size=2) for k in keys]).astype(np.float32)
        return {**batch, "x": batch["x"] + noise}

    chain = [
        ElementOperator(ElementOperatorConfig(), fn=lambda e, k: e.update_data({"x": e.data["x"] * 2})),
        HostOperator(augment, STOCHASTIC, rngs=nnx.Rngs(aug=1), name="augment"),
        HostOperator(lengths, name="lengths"),
        ElementOperator(STOCHASTIC, rngs=nnx.Rngs(aug=2),
                        fn=lambda e, k: e.update_data({"x": e.data["x"] + jax.random.uniform(k) * e.data["n"]})),
    ]
    batch = {"x": np.arange(14, dtype=np.float32).reshape(7, 2), "w": WORDS}
    k = ChainKernel(chain, pad_to=4)
    out = k(batch, np.arange(7))
    k({k_: v[:3] for k_, v in batch.items()}, np.arange(3))
    assert k.compile_count == 2  # one per JAX segment, whatever the batch size
    reference = run_per_record(chain, batch, np.arange(7))
    assert sorted(out) == sorted(reference) == ["n", "w", "x"]
    np.testing.assert_array_equal(out["x"], reference["x"])
    assert out["x"].dtype == np.float32 and out["n"].dtype == np.int32


def test_record_wise_pieces_must_return_the_same_features():
    def fn(batch, keys):
        return {"a": batch["w"]} if batch["w"][0] == "a" else {"b": batch["w"]}

    with pytest.raises(ValueError, match=r"Host operator 'fn' returned features \['b'\] for one piece"):
        ChainKernel([HostOperator(fn)], threads=2)({"w": WORDS}, np.arange(7))


def test_the_kernel_is_never_pickled():
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(ChainKernel([HostOperator(lengths)]))
    with pytest.raises(ValueError, match=r"`threads` must be an int >= 1 or None, got 0"):
        ChainKernel([], threads=0)


def test_a_host_operators_new_arrays_are_copied_unless_frozen():
    frozen = np.frombuffer(bytes(range(7)), np.uint8)
    buffer = np.zeros(7, np.int64)

    def fn(batch, keys):
        buffer[:] = np.arange(7)
        view = buffer.view()
        view.flags.writeable = False  # read-only to us, but ``fn`` writes it again
        return {**batch, "frozen": frozen, "view": view}

    out = HostOperator(fn, threads=1).apply_batch({"w": WORDS}, None)
    assert out["w"] is WORDS  # passed through: the caller's own
    assert np.shares_memory(out["frozen"], frozen)  # nobody can write to it
    assert not np.shares_memory(out["view"], buffer)
