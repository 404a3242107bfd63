"""Data sources. Importing this module never imports Apache Beam."""

from datarax_beam.core.data_source import DataSourceModule, RandomAccessSource
from datarax_beam.sources.array_record import ArrayRecordSourceConfig, ArrayRecordSourceModule
from datarax_beam.sources.memory import MemorySource, MemorySourceConfig

__all__ = [
    "ArrayRecordSourceConfig",
    "ArrayRecordSourceModule",
    "DataSourceModule",
    "MemorySource",
    "MemorySourceConfig",
    "RandomAccessSource",
]
