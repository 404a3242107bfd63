"""Core types: `Element`, `RecordMetadata`, `DataSourceModule`, the operator base."""

from datarax_beam.core.data_source import DataSourceModule, RandomAccessSource, SourceCursor
from datarax_beam.core.element import Element, RecordMetadata
from datarax_beam.core.operator import OperatorConfig, OperatorModule

__all__ = [
    "DataSourceModule",
    "Element",
    "OperatorConfig",
    "OperatorModule",
    "RandomAccessSource",
    "RecordMetadata",
    "SourceCursor",
]
