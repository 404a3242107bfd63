"""Operator fingerprints: code, and the values the code uses."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from datarax_beam.core.operator import code_fingerprint
from datarax_beam.operators import ElementOperator, ElementOperatorConfig, HostOperator

SCALE = 2.0
TABLE = np.arange(4)


def scaled(m):
    return lambda e, k: e.update_data({"x": e.data["x"] * m})


def test_closure_values_count():
    assert code_fingerprint(scaled(1)) == code_fingerprint(scaled(1))
    assert code_fingerprint(scaled(1)) != code_fingerprint(scaled(3))
    assert code_fingerprint(scaled(np.ones(3))) != code_fingerprint(scaled(np.zeros(3)))
    assert code_fingerprint(scaled((1, "a"))) != code_fingerprint(scaled((1, "b")))
    a = ElementOperator(ElementOperatorConfig(), fn=scaled(1))
    assert a.fingerprint() != ElementOperator(ElementOperatorConfig(), fn=scaled(3)).fingerprint()


def test_defaults_and_globals_count():
    def f(e, k, m=1):
        return e

    def g(e, k, m=2):
        return e

    g.__name__ = g.__qualname__ = f.__qualname__
    assert code_fingerprint(f) != code_fingerprint(g)

    def uses_globals(e, k):
        return e.update_data({"x": e.data["x"] * SCALE + TABLE[0]})

    before = code_fingerprint(uses_globals)
    global SCALE
    SCALE = 3.0
    try:
        assert code_fingerprint(uses_globals) != before
    finally:
        SCALE = 2.0
    assert code_fingerprint(uses_globals) == before


def helper(x):
    return x * SCALE


def recursive(n):
    return n if n < 1 else recursive(n - 1)


def test_functions_recursively_with_a_cycle_guard():
    def outer(e, k):
        return helper(e)

    before = code_fingerprint(outer)
    global SCALE
    SCALE = 5.0
    try:
        assert code_fingerprint(outer) != before  # through the helper's own globals
    finally:
        SCALE = 2.0
    assert code_fingerprint(recursive) == code_fingerprint(recursive)


@dataclasses.dataclass(frozen=True)
class Params:
    size: int


class Opaque:
    def __init__(self, v):
        self.v = v


def test_other_values():
    assert code_fingerprint(functools.partial(helper, 1)) != code_fingerprint(functools.partial(helper, 2))
    assert code_fingerprint(scaled(Params(1))) != code_fingerprint(scaled(Params(2)))
    # other objects by type name only: deterministic, never by address
    assert code_fingerprint(scaled(Opaque(1))) == code_fingerprint(scaled(Opaque(2)))
    assert code_fingerprint(scaled({"a": {1, 2}})) == code_fingerprint(scaled({"a": {2, 1}}))


class Resize(HostOperator):
    def __init__(self, size):
        super().__init__(name="resize")
        self.size = size

    def transform(self, batch, keys):
        return batch


def test_operator_public_attributes_count_but_not_threads_or_name():
    assert Resize(64).fingerprint() == Resize(64).fingerprint() != Resize(32).fingerprint()
    a = HostOperator(scaled(1), threads=1, name="a").fingerprint()
    assert a == HostOperator(scaled(1), threads=4, name="b").fingerprint()
    assert a != HostOperator(scaled(1), record_wise=False).fingerprint()
    assert a != HostOperator(scaled(2)).fingerprint()
    assert ElementOperator(ElementOperatorConfig(), fn=helper).fingerprint() != HostOperator(helper).fingerprint()
