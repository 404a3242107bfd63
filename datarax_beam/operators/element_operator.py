"""`ElementOperator`: wraps a user function ``fn(element, key) -> element``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.nnx as nnx
import jax

from datarax_beam.core.element import Element
from datarax_beam.core.operator import OperatorConfig, OperatorModule


@dataclasses.dataclass(frozen=True)
class ElementOperatorConfig(OperatorConfig):
    """Config of `ElementOperator` (``stochastic``, ``stream_name``)."""


class ElementOperator(OperatorModule):
    """Applies ``fn(element, key)`` to every record.

    ``fn`` runs batched under ``jax.jit(jax.vmap(...))``, together with the JAX operators next to
    it in the chain. Text, bytes and ragged features may be moved or dropped there; an ``fn`` that
    uses their values runs per record instead (slow: the kernel warns; write such steps as a
    `HostOperator`). A stochastic operator gets a key that depends only on its seed, stream, the
    epoch and the record's global index, never on batch position.

    Example:
      >>> import jax.numpy as jnp
      >>> op = ElementOperator(ElementOperatorConfig(), fn=lambda e, k: e.update_data({"x": e.data["x"] * 2}))
      >>> int(op(Element({"x": jnp.int32(3)})).data["x"])
      6
    """

    def __init__(
        self,
        config: ElementOperatorConfig,
        fn: Callable[[Element, jax.Array | None], Element],
        rngs: nnx.Rngs | None = None,
        *,
        name: str | None = None,
    ):
        if not callable(fn):
            raise TypeError(f"`fn` must be callable as fn(element, key), got {fn!r}")
        super().__init__(config, rngs=rngs, name=name or getattr(fn, "__name__", "ElementOperator"))
        self.fn = fn

    def apply(self, element: Element, key: jax.Array | None) -> Element:
        result = self.fn(element, key)
        if not isinstance(result, Element):
            raise TypeError(
                f"Operator {self.name!r}: fn must return an Element (e.g. element.update_data(...)), "
                f"got {type(result).__name__}: {result!r:.100} instead"
            )
        return result
