"""JAX segments: pass-through features, dead inputs, narrowing, the per-record cut, trace errors."""

from __future__ import annotations

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datarax_beam.core import columns as cols
from datarax_beam.kernels import ChainKernel, NarrowingError, PerRecordPathWarning
from datarax_beam.kernels.segments import run_per_record
from datarax_beam.operators import ElementOperator, ElementOperatorConfig

BIG = np.array([2**40 + 7, 2**33, 5], np.int64)


def op(fn, name=None):
    return ElementOperator(ElementOperatorConfig(), fn=fn, name=name)


def double_x(e, k):
    return e.update_data({"x": e.data["x"] * 2})


def test_untouched_features_pass_through_as_the_same_column():
    batch = {"id": BIG, "f": np.array([1e-50, 1e300, 0.5]), "x": np.arange(3, dtype=np.float32)}
    k = ChainKernel([op(double_x)], pad_to=2)
    out = k(batch, np.arange(3))
    assert out["id"] is BIG and out["f"] is batch["f"]  # no copy, no device round trip
    assert out["x"].tolist() == [0.0, 2.0, 4.0] and out["x"].dtype == np.float32
    assert k.compile_count == 1


def test_features_only_dropped_or_moved_are_never_narrowed():
    def fn(e, k):
        return e.replace_data({"x": e.data["x"] + 1, "renamed": e.data["id"]})

    out = ChainKernel([op(fn)], pad_to=4)({"id": BIG, "x": np.zeros(3, np.float32)}, np.arange(3))
    assert out["renamed"] is BIG and out["x"].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(("column", "row", "shown"), [
    (np.array([1, 2**31, 3], np.int64), 1, "2147483648"),
    (np.array([0, 1, -(2**31) - 1], np.int64), 2, "-2147483649"),
    (np.array([0.5, 1e300, 2.0]), 1, "1e+300"),
    (np.array([0.5, 2.0, -1e-50]), 2, "-1e-50"),
    (np.array([1, 2, 2**32], np.uint64), 2, "4294967296"),
])
def test_a_read_value_that_does_not_survive_narrowing_is_an_error(column, row, shown):
    k = ChainKernel([op(lambda e, k: e.update_data({"y": e.data["v"] * 2}))], pad_to=2)
    idx = np.array([10, 11, 12])
    with pytest.raises(NarrowingError, match=rf"Feature 'v' of record {10 + row} holds {re.escape(shown)}, which does "
                                             rf"not survive narrowing {column.dtype} to"):
        k({"v": column}, idx)


def test_narrowing_keeps_what_survives_and_rounds_floats_like_jax():
    k = ChainKernel([op(lambda e, k: e.update_data({"i": e.data["i"] + 1, "f": e.data["f"] * 1}))], pad_to=4)
    f = np.array([0.1, np.inf, np.nan, 1e-40])
    out = k({"i": np.array([-(2**31), 7], np.int64)[[0, 1, 1, 1]], "f": f}, np.arange(4))
    assert out["i"].dtype == np.int32 and out["i"].tolist() == [-(2**31) + 1, 8, 8, 8]
    assert out["f"].dtype == np.float32  # computed by JAX: its dtype, rounded
    np.testing.assert_array_equal(out["f"], f.astype(np.float32))


def test_constant_text_outputs_stay_on_the_jitted_path():
    k = ChainKernel([op(lambda e, k: e.update_data({"split": "train", "none": None}))], pad_to=2)
    out = k({"x": np.zeros(3, np.float32)}, np.arange(3))
    assert out["split"].tolist() == ["train"] * 3 and out["none"].tolist() == [None] * 3
    assert k.records_per_record_path == 0 and k.compile_count == 1


TEXT = cols.object_column(["ab", "c", "def", "g", "hi"])


def upper(e, k):
    return e.update_data({"t": e.data["t"].upper(), "n": np.int32(len(e.data["t"]))})


def test_only_the_operator_that_uses_text_runs_per_record_and_warns_once():
    chain = [op(double_x, "double"), op(upper, "upper"), op(lambda e, k: e.update_data({"x": e.data["x"] + e.data["n"]}), "add")]
    k = ChainKernel(chain, pad_to=4)
    batch = {"x": np.arange(5, dtype=np.float32), "t": TEXT}
    with pytest.warns(PerRecordPathWarning) as record:
        out = k(batch, np.arange(5))
    (w,) = record
    assert "Operator 'upper' runs per record" in str(w.message) and "str feature 't' (upper)" in str(w.message)
    assert k.compile_count == 2  # 'double' and 'add' are jitted on either side of it
    assert k.records_per_record_path == 5
    expected = run_per_record(chain, batch, np.arange(5))
    assert out["t"].tolist() == ["AB", "C", "DEF", "G", "HI"] == expected["t"].tolist()
    np.testing.assert_array_equal(out["x"], expected["x"])
    assert out["x"].dtype == expected["x"].dtype == np.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        k(batch, np.arange(5))  # a second batch: no second warning, no recompilation
    assert k.compile_count == 2 and k.records_per_record_path == 10


RAGGED = cols.object_column([np.arange(n, dtype=np.float32) for n in (1, 3, 2)])


def test_ragged_features_moved_are_jitted_and_used_run_per_record():
    mover = ChainKernel([op(lambda e, k: e.update_data({"r2": e.data["r"], "x": e.data["x"] + 1}))], pad_to=2)
    out = mover({"r": RAGGED, "x": np.zeros(3, np.float32)}, np.arange(3))
    assert out["r2"] is RAGGED and mover.records_per_record_path == 0
    summer = ChainKernel([op(lambda e, k: e.update_data({"s": jnp.sum(e.data["r"])}), "sum")], pad_to=2)
    with pytest.warns(PerRecordPathWarning, match=r"Operator 'sum' runs per record.*object feature 'r'"):
        out = summer({"r": RAGGED}, np.arange(3))
    assert out["s"].tolist() == [0.0, 3.0, 1.0] and out["s"].dtype == np.float32


def test_per_record_path_narrows_only_what_it_reads():
    k = ChainKernel([op(upper, "upper")], pad_to=2)
    with pytest.warns(PerRecordPathWarning):
        out = k({"t": TEXT[:3], "id": BIG}, np.arange(3))
    assert out["id"].dtype == np.int64 and out["id"].tolist() == BIG.tolist()  # passed through
    reader = ChainKernel([op(lambda e, k: e.update_data({"t": e.data["t"].upper(), "j": e.data["id"] + 1}))])
    with pytest.warns(PerRecordPathWarning), pytest.raises(NarrowingError, match="Feature 'id' of record 0 holds 1099511627783"):
        reader({"t": TEXT[:3], "id": BIG}, np.arange(3))


def test_a_trace_error_propagates_even_with_text_present():
    def abs_(e, k):
        x = e.data["x"]
        return e.update_data({"x": x if x > 0 else -x})

    k = ChainKernel([op(double_x), op(abs_, "abs")])
    with pytest.raises(jax.errors.TracerBoolConversionError) as info:
        k({"x": np.arange(3, dtype=np.float32), "t": TEXT[:3]}, np.arange(3))
    assert "raised while JAX traced operator 'abs'" in "".join(getattr(info.value, "__notes__", []))
    assert k.records_per_record_path == 0


def test_keys_and_index_are_the_same_on_both_paths():
    import flax.nnx as nnx

    noisy = ElementOperator(ElementOperatorConfig(stochastic=True, stream_name="n"), rngs=nnx.Rngs(n=1),
                            fn=lambda e, k: e.update_data({"x": e.data["x"] + jax.random.uniform(k) + e.metadata.index}))
    batch = {"x": np.zeros(5, np.float32), "t": TEXT}
    jitted = ChainKernel([noisy], pad_to=2)(batch, np.arange(20, 25), 3)
    reference = run_per_record([noisy], batch, np.arange(20, 25), 3)
    np.testing.assert_array_equal(jitted["x"], reference["x"])


def test_a_dead_input_is_not_sent_but_keeps_its_shape_for_the_operator():
    def fn(e, k):
        return e.update_data({"z": jnp.zeros(e.data["img"].shape[0]) + 1.0})

    k = ChainKernel([op(fn)], pad_to=4)
    img = np.full((3, 5, 2), 7, np.int64) * 2**40  # would not survive narrowing: never read
    out = k({"img": img}, np.arange(3))
    assert out["z"].shape == (3, 5) and out["img"] is img
    (step,) = k.segments[0]._steps.values()
    assert step._info.live == ()
