"""Type names used in signatures (``from datarax_beam.typing import Element``)."""

from datarax_beam.core.element import Element, RecordMetadata

Batch = dict  # feature name -> stacked values
__all__ = ["Batch", "Element", "RecordMetadata"]
