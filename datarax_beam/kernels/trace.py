"""Tracing a run of JAX operators: what each output is, and which inputs are really read.

`trace_chain` traces ``ops`` on one record (under ``jit(vmap)``) for a batch signature and
returns a `TraceInfo`: every output feature is either *computed* (a JAX output), *passed through*
(the very value of an input feature: the same tracer, or a text placeholder, so the kernel copies
the input column untouched, with its dtype and without a device round trip) or a *constant*
(``str``/``bytes``/None that does not depend on the record). `live_inputs` finds the numeric
inputs the computed outputs depend on (dead code elimination over the jaxpr); only those are
narrowed (x64 off), checked and sent to the device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np

from datarax_beam.core.element import Element, RecordMetadata
from datarax_beam.core.operator import OperatorModule
from datarax_beam.kernels import opaque as opq
from datarax_beam.kernels.keys import record_key
from datarax_beam.kernels.programs import compile_lowered

#: Output kinds.
COMPUTED, PASSED, CONSTANT = "computed", "passed", "constant"


@dataclasses.dataclass(frozen=True)
class Signature:
    """A batch's shape, as a JAX segment sees it (the compile cache key).

    ``features``: ``(name, "num", per-record shape, dtype fed to JAX)`` or ``(name, kind)`` with
    kind "str"/"bytes"/"object", in batch order; ``size``: the padded batch size.
    """

    features: tuple
    size: int

    @property
    def numeric(self) -> list[tuple]:
        return [f for f in self.features if f[1] == "num"]


@dataclasses.dataclass
class TraceInfo:
    """What tracing found: ``outputs`` is ``[(name, kind, detail)]`` in output order, where
    detail is the input name (passed), the value (constant) or the position among computed
    outputs (computed); ``live`` the names of numeric inputs that computed outputs read."""

    outputs: list = dataclasses.field(default_factory=list)
    live: tuple = ()
    failed_at: int = -1  # index of the operator being traced (for errors)


def apply_ops(ops: Sequence[OperatorModule], element: Element, keys: Sequence[Any], info: TraceInfo) -> Element:
    """Applies ``ops`` in order; ``info.failed_at`` tracks the operator running (for errors)."""
    for i, (op, key) in enumerate(zip(ops, keys, strict=True)):
        info.failed_at = i
        element = op.apply(element, key)
        if not isinstance(element, Element):
            raise TypeError(f"Operator {op.name!r} must return an Element, got {type(element).__name__}")
    info.failed_at = -1
    return element


def classify(out: dict[str, Any], inputs: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """Sorts an operator chain's outputs into passed-through, constant and computed."""
    by_id = {id(v): k for k, v in inputs.items()}
    result, n = [], 0
    for name, value in out.items():
        if id(value) in by_id and inputs[by_id[id(value)]] is value:
            result.append((name, PASSED, by_id[id(value)]))
        elif opq.source_key(value) is not None:  # a placeholder of an input (moved twice)
            result.append((name, PASSED, opq.source_key(value)))
        elif value is None or isinstance(value, (str, bytes)):
            result.append((name, CONSTANT, value))
        else:
            result.append((name, COMPUTED, n))
            n += 1
    return result


def _record_fn(ops, bases, sig: Signature, dead: frozenset, info: TraceInfo):
    """The chain on one record: (numeric values of the fed inputs, index, epoch) -> computed."""
    fed = [f for f in sig.numeric if f[0] not in dead]

    def chain(values, index, epoch):
        given = dict(zip((f[0] for f in fed), values, strict=True))
        data = {}
        for f in sig.features:
            if f[1] != "num":
                data[f[0]] = opq.opaque(f[1], f[0])
            elif f[0] in given:
                data[f[0]] = given[f[0]]
            else:  # not read by any computed output: a stand-in of the same shape and dtype
                data[f[0]] = jnp.zeros(f[2], f[3])
        keys = [None if b is None else record_key(b, epoch, index) for b in bases]
        element = Element(data=data, metadata=RecordMetadata(index=index, epoch=epoch))
        out = apply_ops(ops, element, keys, info).data
        info.outputs = classify(out, data)
        return [out[name] for name, kind, _ in info.outputs if kind == COMPUTED]

    return jax.vmap(chain, in_axes=(0, 0, None)), fed


def chain_function(ops, bases, sig: Signature, info: TraceInfo, dead: frozenset = frozenset()):
    """The batched chain that `trace_chain` jits, for callers that lower it themselves.

    Returns ``(fn, fed)``: ``fn(values, index, epoch) -> [computed outputs]`` is
    ``vmap(chain, in_axes=(0, 0, None))`` over the numeric features ``fed`` of ``sig`` (as
    ``(name, "num", shape, dtype)``, in order; those in ``dead`` get zero stand-ins instead), and
    tracing it fills ``info`` (outputs, ``failed_at``). `datarax_beam.serving` exports it with a
    symbolic batch size.
    """
    return _record_fn(ops, bases, sig, dead, info)


def _specs(fed, sig: Signature):
    values = [jax.ShapeDtypeStruct((sig.size, *f[2]), np.dtype(f[3])) for f in fed]
    return values, jax.ShapeDtypeStruct((sig.size,), np.int32), jax.ShapeDtypeStruct((), np.int32)


def trace_chain(ops, bases, sig: Signature, info: TraceInfo):
    """Traces ``ops`` for ``sig``; returns (info, compiled function of the live inputs).

    Raises whatever an operator raises while traced (`NeedsRecordPath` included), with
    ``info.failed_at`` naming it.
    """
    fn, fed = _record_fn(ops, bases, sig, frozenset(), info)
    traced = jax.jit(fn).trace(*_specs(fed, sig))
    live_idx = live_inputs(traced.jaxpr.jaxpr, len(fed))
    info.live = tuple(f[0] for i, f in enumerate(fed) if i in live_idx)
    if len(info.live) == len(fed):
        return compile_lowered(traced.lower())
    # Retrace without the dead inputs so they are never narrowed, checked or sent to the device.
    outputs = info.outputs
    dead = frozenset(f[0] for f in fed) - set(info.live)
    fn, fed = _record_fn(ops, bases, sig, dead, info)
    compiled = compile_lowered(jax.jit(fn).trace(*_specs(fed, sig)).lower())
    if [(n, k) for n, k, _ in info.outputs] != [(n, k) for n, k, _ in outputs]:
        raise RuntimeError(
            f"Operators {[op.name for op in ops]} returned different features in two traces of "
            f"the same batch signature; operators must be pure functions of their inputs"
        )
    return compiled


def live_inputs(jaxpr: Any, count: int) -> set[int]:
    """Positions among the first ``count`` invars of ``jaxpr`` that its outputs depend on (or
    that an effectful equation, e.g. a callback or debug print, reads)."""
    needed = {v for v in jaxpr.outvars if not isinstance(v, jex.Literal)}
    for eqn in reversed(jaxpr.eqns):
        if eqn.effects or any(o in needed for o in eqn.outvars):
            needed.update(v for v in eqn.invars if not isinstance(v, jex.Literal))
    return {i for i, v in enumerate(jaxpr.invars[:count]) if v in needed}
