"""Data sources. Importing this module never imports Apache Beam."""

from datarax_beam.core.data_source import DataSourceModule, RandomAccessSource
from datarax_beam.sources.memory import MemorySource, MemorySourceConfig

__all__ = ["DataSourceModule", "MemorySource", "MemorySourceConfig", "RandomAccessSource"]
