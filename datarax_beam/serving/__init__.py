"""Serving: export the deterministic part of a chain, statistics baked in, and load it anywhere.

`export_transform(pipeline, path)` writes it (``docs/serving.md`` specifies the format);
`load_transform(path)` returns a function over batches of raw records that applies exactly that
preprocessing on CPU or GPU, importing neither Apache Beam nor the source libraries.
"""

from datarax_beam.serving.export import export_next_to, export_transform
from datarax_beam.serving.format import (
    FORMAT,
    FORMAT_VERSION,
    HOST_OPERATORS,
    ExportError,
    TransformFormatError,
)
from datarax_beam.serving.load import Transform, load_transform

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "HOST_OPERATORS",
    "ExportError",
    "Transform",
    "TransformFormatError",
    "export_next_to",
    "export_transform",
    "load_transform",
]
