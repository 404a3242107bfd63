"""Operators: per-record transforms that kernels batch, jit and key.

JAX operators (`ElementOperator`, `RandomCrop`, `RandomFlip`, `Normalize`) are traced per record
and fused into jitted segments; host operators (`HostOperator`, `DecodeImage`, `ResizeImage`,
`Tokenize`, `VocabularyLookup` over text) run over whole batches of columns on the host.
The built-ins live in `datarax_beam.operators.image`, `datarax_beam.operators.text` and
`datarax_beam.operators.statistics`; Pillow and tokenizers are imported only when an image or
text operator runs or is built.
"""

from datarax_beam.core.operator import OperatorConfig, OperatorModule
from datarax_beam.operators import image, statistics, text
from datarax_beam.operators.element_operator import ElementOperator, ElementOperatorConfig
from datarax_beam.operators.host import HostOperator, host_rng
from datarax_beam.operators.image import (
    DecodeImage,
    ImageDecodeError,
    RandomCrop,
    RandomFlip,
    ResizeImage,
)
from datarax_beam.operators.statistics import (
    HostStatisticsOperator,
    Normalize,
    StatisticsOperator,
    VocabularyLookup,
    analysis_plan,
)
from datarax_beam.operators.text import Tokenize

__all__ = [
    "DecodeImage",
    "ElementOperator",
    "ElementOperatorConfig",
    "HostOperator",
    "HostStatisticsOperator",
    "ImageDecodeError",
    "Normalize",
    "OperatorConfig",
    "OperatorModule",
    "RandomCrop",
    "RandomFlip",
    "ResizeImage",
    "StatisticsOperator",
    "Tokenize",
    "VocabularyLookup",
    "analysis_plan",
    "host_rng",
    "image",
    "statistics",
    "text",
]
