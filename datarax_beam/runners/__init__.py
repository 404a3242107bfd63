"""Running pipelines on Apache Beam: `materialize`, `run`, and runner option helpers."""

from datarax_beam.runners import options
from datarax_beam.runners.materialize import (
    Materialized,
    counters,
    default_num_shards,
    materialize,
    run,
)
from datarax_beam.runners.options import build_options, make_runner

__all__ = [
    "Materialized",
    "build_options",
    "counters",
    "default_num_shards",
    "make_runner",
    "materialize",
    "options",
    "run",
]
