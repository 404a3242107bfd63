"""`compile_lowered`: identical programs compile once; anything that could differ is never shared."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datarax_beam.kernels import ChainKernel, programs
from datarax_beam.kernels.programs import compile_lowered
from datarax_beam.operators import ElementOperator, ElementOperatorConfig

SPEC = jax.ShapeDtypeStruct((8,), np.float32)
X = np.arange(8, dtype=np.float32)


@pytest.fixture(autouse=True)
def fresh():
    programs.clear()
    yield
    programs.clear()


def lower(fn):
    return jax.jit(fn).trace(SPEC).lower()


def test_the_same_program_compiles_once_and_another_does_not_reuse_it():
    a = compile_lowered(lower(lambda x: x * 2 + 1))
    assert compile_lowered(lower(lambda y: y * 2 + 1)) is a
    c1, c2 = np.arange(8, dtype=np.float32), np.arange(8, dtype=np.float32) * 3  # same shape, other values
    b1, b2 = compile_lowered(lower(lambda x: x + c1)), compile_lowered(lower(lambda x: x + c2))
    assert b1 is not b2
    np.testing.assert_array_equal(b1(X), X + c1)
    np.testing.assert_array_equal(b2(X), X + c2)


def test_unused_arguments_of_other_shapes_are_other_programs():
    def program(n):
        spec = jax.ShapeDtypeStruct((n,), np.int32)
        return compile_lowered(jax.jit(lambda x, unused: x * 2).trace(SPEC, spec).lower())

    two, sixteen = program(2), program(16)
    assert two is not sixteen
    np.testing.assert_array_equal(sixteen(X, np.zeros(16, np.int32)), X * 2)


def test_host_callbacks_are_never_shared():
    def program(scale):
        def fn(x):
            return jax.pure_callback(lambda v: np.asarray(v) * scale, SPEC, x)
        return compile_lowered(lower(fn))

    two, three = program(2.0), program(3.0)
    assert two is not three
    np.testing.assert_array_equal(three(X), X * 3)


def test_device_array_constants_stay_apart():
    c1, c2 = jnp.arange(8, dtype=jnp.float32), jnp.arange(8, dtype=jnp.float32) * 5
    b1, b2 = compile_lowered(lower(lambda x: x + c1)), compile_lowered(lower(lambda x: x + c2))
    np.testing.assert_array_equal(b2(X), X + np.asarray(c2))
    np.testing.assert_array_equal(b1(X), X + np.asarray(c1))


class _Lowering:
    def __init__(self, const_args):
        self.const_args = const_args


class _Lowered:
    """The parts of a `jax.stages.Lowered` that `compile_lowered` reads, saying whether JAX
    hoisted constants out of the text (where this JAX version does so)."""

    in_tree = out_tree = in_avals = donate_argnums = "*"

    def __init__(self, const_args):
        if const_args != "unsaid":
            self._lowering = _Lowering(const_args)

    def as_text(self):
        return "module @same { }"

    def compile(self):
        return object()


@pytest.mark.parametrize("const_args", [[np.ones(3)], "unsaid"])
def test_programs_with_constants_outside_the_text_are_never_shared(const_args):
    assert compile_lowered(_Lowered(const_args)) is not compile_lowered(_Lowered(const_args))
    assert compile_lowered(_Lowered([])) is compile_lowered(_Lowered([]))


def test_least_recently_used_programs_are_dropped(monkeypatch):
    monkeypatch.setattr(programs, "MAX_PROGRAMS", 2)
    first = compile_lowered(lower(lambda x: x + 1))
    compile_lowered(lower(lambda x: x + 2))
    compile_lowered(lower(lambda x: x + 3))  # drops x + 1
    again = compile_lowered(lower(lambda x: x + 1))
    assert again is not first
    np.testing.assert_array_equal(again(X), X + 1)


def test_two_kernels_of_the_same_chain_share_the_compile_and_stay_correct():
    def op(offset):
        return ElementOperator(ElementOperatorConfig(),
                               fn=lambda e, k: e.update_data({"x": e.data["x"] + offset}))

    batch = {"x": np.arange(6, dtype=np.float32)}
    k1, k2, k3 = ChainKernel([op(1.0)], pad_to=4), ChainKernel([op(1.0)], pad_to=4), ChainKernel([op(2.0)], pad_to=4)
    assert k1(batch, np.arange(6))["x"].tolist() == [1, 2, 3, 4, 5, 6]
    assert k2(batch, np.arange(6))["x"].tolist() == [1, 2, 3, 4, 5, 6]
    assert k3(batch, np.arange(6))["x"].tolist() == [2, 3, 4, 5, 6, 7]
    assert len(programs._programs) == 2  # k2 reused k1's executable; k3's constant differs
    assert (k1.compile_count, k2.compile_count, k3.compile_count) == (1, 1, 1)  # each kernel planned once
