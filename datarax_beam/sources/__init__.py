"""Data sources. Importing this module never imports Apache Beam."""

from datarax_beam.core.data_source import DataSourceModule, RandomAccessSource
from datarax_beam.sources._common import DatasetUnavailableError
from datarax_beam.sources.array_record import ArrayRecordSourceConfig, ArrayRecordSourceModule
from datarax_beam.sources.hf import (
    HFEagerConfig,
    HFEagerSource,
    HFStreamingConfig,
    HFStreamingSource,
    from_hf,
)
from datarax_beam.sources.memory import MemorySource, MemorySourceConfig
from datarax_beam.sources.mixture import Mixture, MixtureConfig
from datarax_beam.sources.tfds import (
    TFDSEagerConfig,
    TFDSEagerSource,
    TFDSStreamingConfig,
    TFDSStreamingSource,
    from_tfds,
)

__all__ = [
    "ArrayRecordSourceConfig",
    "ArrayRecordSourceModule",
    "DataSourceModule",
    "DatasetUnavailableError",
    "HFEagerConfig",
    "HFEagerSource",
    "HFStreamingConfig",
    "HFStreamingSource",
    "MemorySource",
    "MemorySourceConfig",
    "Mixture",
    "MixtureConfig",
    "RandomAccessSource",
    "TFDSEagerConfig",
    "TFDSEagerSource",
    "TFDSStreamingConfig",
    "TFDSStreamingSource",
    "from_hf",
    "from_tfds",
]
