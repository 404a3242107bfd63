"""Full-pass statistics (analyze, then transform): specs, accumulators, block-wise analysis.

Numpy only; the Beam side lives in `datarax_beam.transforms.statistics`.
"""

from datarax_beam.statistics.analyzer import (
    BLOCK_SIZE,
    STATISTICS_FILE,
    Statistics,
    compute_over_batches,
    load_statistics,
)
from datarax_beam.statistics.spec import StatSpec

__all__ = ["BLOCK_SIZE", "STATISTICS_FILE", "StatSpec", "Statistics", "compute_over_batches", "load_statistics"]
