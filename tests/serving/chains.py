"""The chains the serving tests export: raw records, a deterministic chain with full-pass
statistics (`Normalize`) and a string vocabulary (`VocabularyLookup`), and their variants."""

from __future__ import annotations

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from datarax_beam import from_source
from datarax_beam.operators import ElementOperator, ElementOperatorConfig
from datarax_beam.operators.statistics import Normalize, VocabularyLookup
from datarax_beam.sources import MemorySource

N = 1100  # more than one piece of 1024 records
BATCH = 64


def raw_records(n: int = N, seed: int = 0) -> dict[str, np.ndarray]:
    """x: float32 (3,), amount: float64, word: str, cat: int64 codes, label: int32, id: int64 > 2**31."""
    rng = np.random.default_rng(seed)
    words = [f"w{int(i)}" for i in rng.zipf(1.5, n) % 40]
    return {
        "x": rng.normal(3.0, 2.0, (n, 3)).astype(np.float32),
        "amount": rng.lognormal(3.0, 1.0, n),
        "word": np.array(words, dtype=object),
        "cat": (rng.integers(0, 6, n) * 1000).astype(np.int64),
        "label": rng.integers(0, 10, n).astype(np.int32),
        "id": np.arange(n, dtype=np.int64) + 2**40,
    }


def clip_x() -> ElementOperator:
    return ElementOperator(ElementOperatorConfig(), name="clip_x",
                           fn=lambda e, k: e.update_data({"x": jnp.clip(e.data["x"], 0.0, 6.0)}))


def deterministic_ops() -> list:
    return [clip_x(), Normalize("x"), Normalize("amount", axes="all"),
            VocabularyLookup("word", top_k=25, output="word_id"),  # strings: a host step
            VocabularyLookup("cat")]                                 # int32 vocabulary: in JAX


def noise() -> ElementOperator:
    return ElementOperator(
        ElementOperatorConfig(stochastic=True, stream_name="augment"), name="noise", rngs=nnx.Rngs(augment=3),
        fn=lambda e, k: e.update_data({"x": e.data["x"] + jax.random.normal(k, e.data["x"].shape)}))


def pipeline(ops=None, data=None, batch_size: int = BATCH):
    p = from_source(MemorySource(data=raw_records() if data is None else data), batch_size)
    for op in deterministic_ops() if ops is None else ops:
        p = p >> op
    return p


def assert_same(got: dict, want: dict) -> None:
    """Bit for bit: the same features, dtypes, shapes and values (NaN equal to NaN)."""
    assert sorted(got) == sorted(want)
    for k in want:
        g, w = np.asarray(got[k]), np.asarray(want[k])
        assert g.dtype == w.dtype and g.shape == w.shape, (k, g.dtype, g.shape, w.dtype, w.shape)
        if w.dtype == object:  # text, bytes, or ragged arrays (each compared bit for bit)
            assert len(g) == len(w), k
            for a, b in zip(g, w, strict=True):
                if isinstance(b, np.ndarray):
                    assert isinstance(a, np.ndarray) and (a.dtype, a.shape) == (b.dtype, b.shape), k
                    assert a.tobytes() == b.tobytes(), k
                else:
                    assert type(a) is type(b) and a == b, k
        else:
            assert g.tobytes() == w.tobytes(), k


def in_batches(transform, data: dict, batch_size: int) -> dict:
    n = len(next(iter(data.values())))
    parts = [transform({k: v[s:s + batch_size] for k, v in data.items()}) for s in range(0, n, batch_size)]
    out = {}
    for k in parts[0]:
        values = [p[k] for p in parts]
        out[k] = (np.concatenate(values) if values[0].dtype != object
                  else np.array([x for v in values for x in v] + [None], dtype=object)[:-1])
    return out
