"""Pipeline nodes: what ``>>`` accepts and what ``.batch``/``.shuffle`` record."""

from __future__ import annotations

import dataclasses

import numpy as np

from datarax_beam.core.operator import OperatorModule


class OperatorNode:
    """Wraps an operator so it can be chained with ``pipeline >> OperatorNode(op)``.

    Example:
      >>> from datarax_beam.operators import ElementOperator, ElementOperatorConfig
      >>> node = OperatorNode(ElementOperator(ElementOperatorConfig(), fn=lambda e, k: e))
      >>> type(node.operator).__name__
      'ElementOperator'
    """

    def __init__(self, operator: OperatorModule):
        if not isinstance(operator, OperatorModule):
            raise TypeError(
                f"OperatorNode expects an operator (e.g. ElementOperator), got "
                f"{type(operator).__name__}: {operator!r}"
            )
        self.operator = operator

    def __repr__(self) -> str:
        return f"OperatorNode({self.operator.name})"


@dataclasses.dataclass(frozen=True)
class BatchNode:
    """Groups records into batches of ``batch_size`` (the last one kept unless ``drop_remainder``)."""

    batch_size: int
    drop_remainder: bool = False

    def __post_init__(self):
        object.__setattr__(self, "batch_size", check_positive_int("batch_size", self.batch_size))
        if not isinstance(self.drop_remainder, (bool, np.bool_)):
            raise TypeError(f"`drop_remainder` must be a bool, got {self.drop_remainder!r}")
        object.__setattr__(self, "drop_remainder", bool(self.drop_remainder))


@dataclasses.dataclass(frozen=True)
class ShuffleNode:
    """Shuffles records through a buffer of ``buffer_size``, reseeded from (seed, epoch)."""

    buffer_size: int
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "buffer_size", check_positive_int("buffer_size", self.buffer_size))
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool):
            raise TypeError(f"`seed` must be an int, got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))


def check_positive_int(name: str, value) -> int:
    """Returns ``value`` as an int, or raises naming the argument ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1, got {value}")
    return int(value)


def as_operator(stage) -> OperatorModule:
    """What ``pipeline >> stage`` accepts: an `OperatorNode` or an operator."""
    if isinstance(stage, OperatorNode):
        return stage.operator
    if isinstance(stage, OperatorModule):
        return stage
    hint = (
        "; wrap a function as ElementOperator(ElementOperatorConfig(), fn=...)"
        if callable(stage)
        else ""
    )
    raise TypeError(
        f"`>>` expects an OperatorNode or an operator, got {type(stage).__name__}: "
        f"{stage!r:.100}{hint}"
    )
