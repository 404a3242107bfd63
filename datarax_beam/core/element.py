"""`Element` and `RecordMetadata`: one record as it flows through a pipeline.

An element is immutable: operators return a new one (``element.update_data({...})``) so the
same function runs unchanged inside ``jax.jit(jax.vmap(...))`` and on the per-record path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax


@dataclasses.dataclass(frozen=True)
class RecordMetadata:
    """Where a record came from.

    Attributes:
      index: the record's global index in its source (decides PRNG keys and shard placement).
        Inside a jitted kernel it is a traced integer scalar.
      record_key: an optional stable key of the record in its source (e.g. a TFDS key).
      epoch: the epoch in which the record was read.
      shard_id: the shard the record was read from, when the source is sharded.
      source_info: free-form description of the source (name, split, ...).

    Example:
      >>> RecordMetadata(index=3, epoch=0).index
      3
    """

    index: Any = 0
    record_key: str | None = None
    epoch: Any = 0
    shard_id: int | None = None
    source_info: Mapping[str, Any] | None = None


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class Element:
    """One record: its features (``data``), per-record ``state`` and ``metadata``.

    Example:
      >>> e = Element({"x": 1})
      >>> e.update_data({"x": 2}).data["x"], e.data["x"]
      (2, 1)
    """

    data: Mapping[str, Any]
    state: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    metadata: RecordMetadata | None = None

    def __post_init__(self):
        if not isinstance(self.data, Mapping):
            raise TypeError(
                f"Element `data` must be a mapping of feature name to value, got "
                f"{type(self.data).__name__} instead"
            )

    def update_data(self, updates: Mapping[str, Any]) -> Element:
        """Returns a new element whose data is this one's with ``updates`` merged in."""
        if not isinstance(updates, Mapping):
            raise TypeError(
                f"update_data expects a mapping of feature name to value, got "
                f"{type(updates).__name__} instead"
            )
        return dataclasses.replace(self, data={**self.data, **updates})

    def replace_data(self, data: Mapping[str, Any]) -> Element:
        """Returns a new element whose data is exactly ``data`` (drops other features)."""
        return dataclasses.replace(self, data=dict(data))

    def update_state(self, updates: Mapping[str, Any]) -> Element:
        """Returns a new element with ``updates`` merged into its per-record state."""
        return dataclasses.replace(self, state={**self.state, **updates})

    # Pytree protocol: data and state are children, metadata rides along as aux data.
    def tree_flatten(self):
        return (dict(self.data), dict(self.state)), self.metadata

    @classmethod
    def tree_unflatten(cls, metadata, children):
        data, state = children
        return cls(data=data, state=state, metadata=metadata)


def as_element(value: Any, metadata: RecordMetadata | None = None) -> Element:
    """Wraps a plain dict (what custom sources may yield) into an `Element`."""
    if isinstance(value, Element):
        if metadata is not None and value.metadata is None:
            return dataclasses.replace(value, metadata=metadata)
        return value
    if isinstance(value, Mapping):
        return Element(data=dict(value), metadata=metadata)
    raise TypeError(
        f"A source must yield an Element or a dict of features, got {type(value).__name__} instead"
    )
