"""Serving: export the deterministic part of a chain, statistics baked in, and load it anywhere.

`export_transform(pipeline, path)` writes it (``docs/serving.md`` specifies the format);
`load_transform(path)` returns a function over batches of raw records that applies exactly that
preprocessing on CPU or GPU, importing neither Apache Beam nor the source libraries.

Example:
  >>> import tempfile, numpy as np
  >>> from datarax_beam import export_transform, from_source, load_transform
  >>> from datarax_beam.operators.statistics import Normalize, VocabularyLookup
  >>> from datarax_beam.sources import MemorySource
  >>> data = {"x": np.arange(8, dtype=np.float32), "color": np.array(list("rgbrgrrb"), dtype=object)}
  >>> chain = from_source(MemorySource(data=data), 4) >> Normalize("x", axes="all") >> VocabularyLookup("color")
  >>> path = tempfile.mkdtemp() + "/transform"
  >>> _ = export_transform(chain, path)       # mean, std and vocabulary baked in
  >>> serve = load_transform(path)             # no Beam, no source library
  >>> out = serve({"x": [3.5], "color": ["g"]})
  >>> out["x"].tolist(), out["color"].tolist()   # ids by count: r 0, then b 1 and g 2 (a tie)
  ([0.0], [2])
"""

from datarax_beam.serving.export import export_transform
from datarax_beam.serving.format import (
    FORMAT,
    FORMAT_VERSION,
    HOST_OPERATORS,
    ExportError,
    TransformFormatError,
)
from datarax_beam.serving.load import Transform, load_transform
from datarax_beam.serving.next_to import export_next_to

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
