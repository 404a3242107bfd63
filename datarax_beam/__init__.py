"""datarax_beam: write a JAX data pipeline once; iterate it online or materialize it with Beam.

The names a user needs are here, in one place: the pipeline (`from_source`, `OperatorNode`), the
sources and their configs (config first, as in the guide: ``MemorySource(config, data)``), the
core operators, `materialize`, and the train-time reader (`ArrayRecordSourceModule`). The topic
modules ``sources``, ``operators``, ``dag``, ``transforms`` (the Beam composites), ``runners`` and
``serving`` hold the rest of the public face; everything else is internal. ``import datarax_beam`` and
``from datarax_beam import *`` never import Apache Beam: `materialize` imports it when called.
"""

from datarax_beam import logs as _logs  # noqa: F401 - first: drops Beam's import-time noise
from datarax_beam.core.data_source import DataSourceModule
from datarax_beam.core.element import Element, RecordMetadata
from datarax_beam.dag import OperatorNode, Pipeline, from_source
from datarax_beam.operators import ElementOperator, ElementOperatorConfig, HostOperator
from datarax_beam.sources import (
    ArrayRecordSourceConfig,
    ArrayRecordSourceModule,
    HFEagerConfig,
    HFEagerSource,
    HFStreamingConfig,
    HFStreamingSource,
    MemorySource,
    MemorySourceConfig,
    Mixture,
    MixtureConfig,
    TFDSEagerConfig,
    TFDSEagerSource,
    TFDSStreamingConfig,
    TFDSStreamingSource,
)
from datarax_beam.sources.hf import from_hf  # imports `datasets` only when called
from datarax_beam.sources.tfds import from_tfds  # imports `tensorflow_datasets` only when called
from datarax_beam.statistics import Statistics, StatSpec, load_statistics
from datarax_beam.version import __version__

__all__ = [
    "ArrayRecordSourceConfig",
    "ArrayRecordSourceModule",
    "DataSourceModule",
    "Element",
    "ElementOperator",
    "ElementOperatorConfig",
    "HFEagerConfig",
    "HFEagerSource",
    "HFStreamingConfig",
    "HFStreamingSource",
    "HostOperator",
    "MemorySource",
    "MemorySourceConfig",
    "Mixture",
    "MixtureConfig",
    "OperatorNode",
    "Pipeline",
    "RecordMetadata",
    "StatSpec",
    "Statistics",
    "TFDSEagerConfig",
    "TFDSEagerSource",
    "TFDSStreamingConfig",
    "TFDSStreamingSource",
    "__version__",
    "export_transform",
    "from_hf",
    "from_source",
    "from_tfds",
    "load_statistics",
    "load_transform",
    "materialize",
]


def materialize(pipeline, output_dir, **kwargs):
    """Runs ``pipeline`` on Apache Beam and commits its output as an ArrayRecord shard set.

    `datarax_beam.runners.materialize`, which this calls with the same arguments (see it for
    them); Apache Beam is imported on the first call, so importing this package never imports
    it.

    Example:
      >>> import tempfile, numpy as np
      >>> src = MemorySource(MemorySourceConfig(), {"x": np.arange(10, dtype=np.float32)})
      >>> materialize(from_source(src, 4), tempfile.mkdtemp(), num_shards=2).num_records
      10
    """
    from datarax_beam.runners.materialize import materialize as run_job

    return run_job(pipeline, output_dir, **kwargs)


def __getattr__(name: str):
    if name in ("export_transform", "load_transform"):  # jax.export and the operators' host code
        from datarax_beam import serving

        return getattr(serving, name)
    raise AttributeError(f"module 'datarax_beam' has no attribute {name!r}")
