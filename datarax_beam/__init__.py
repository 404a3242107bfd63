"""datarax_beam: write a JAX data pipeline once; iterate it online or materialize it with Beam.

The public face is this module and the topic modules ``sources``, ``operators``, ``dag``,
``transforms``, ``runners`` and ``serving``; everything else is internal.
"""

from datarax_beam import logs as _logs  # noqa: F401 - first: drops Beam's import-time noise
from datarax_beam.core.element import Element, RecordMetadata
from datarax_beam.dag import OperatorNode, Pipeline, from_source
from datarax_beam.sources.hf import from_hf  # imports `datasets` only when called
from datarax_beam.sources.tfds import from_tfds  # imports `tensorflow_datasets` only when called
from datarax_beam.statistics import Statistics, StatSpec, load_statistics
from datarax_beam.version import __version__

__all__ = [
    "Element",
    "OperatorNode",
    "Pipeline",
    "RecordMetadata",
    "__version__",
    "from_hf",
    "from_source",
    "from_tfds",
    "load_statistics",
    "Statistics",
    "StatSpec",
    "export_transform",
    "load_transform",
    "materialize",
]


def __getattr__(name: str):
    # `materialize` imports Apache Beam; load it only when asked for, so `import datarax_beam`
    # (and the train-time reader) never pulls Beam in.
    if name == "materialize":
        from datarax_beam.runners.materialize import materialize

        return materialize
    if name in ("export_transform", "load_transform"):  # jax.export and the operators' host code
        from datarax_beam import serving

        return getattr(serving, name)
    raise AttributeError(f"module 'datarax_beam' has no attribute {name!r}")
