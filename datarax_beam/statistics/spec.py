"""`StatSpec`: which full-pass statistics to compute for one feature."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class StatSpec:
    """Declares the statistics of one feature that an operator needs.

    Attributes:
      name: the key under which the statistics are stored (``stats[name]``).
      feature: the feature analyzed (after the operators that precede the consumer).
      moments: count, mean, var, std, min, max (float64 accumulators, Chan's merge).
      axes: per-record axes reduced together with the record axis (e.g. ``(0, 1)`` for one mean
        per channel of an ``(H, W, C)`` image); ``None`` keeps one statistic per element position;
        ``"all"`` reduces everything to scalars.
      histogram_bins, histogram_range: a histogram of all values in ``[lo, hi]`` (values outside
        are clipped into the end bins); quantiles are read from it.
      quantiles: number of quantile cut points (e.g. 4 -> 20/40/60/80%), from the histogram.
      vocabulary_top_k: keep the ``k`` most frequent values of a string or integer feature (ties
        broken by value); ``0`` keeps all.

    Example:
      >>> StatSpec("image").name
      'image'
    """

    feature: str
    name: str | None = None
    moments: bool = True
    axes: tuple[int, ...] | str | None = None
    histogram_bins: int | None = None
    histogram_range: tuple[float, float] | None = None
    quantiles: int | None = None
    vocabulary_top_k: int | None = None

    def __post_init__(self):
        if not isinstance(self.feature, str) or not self.feature:
            raise TypeError(f"StatSpec `feature` must be a non-empty str, got {self.feature!r}")
        if self.name is None:
            object.__setattr__(self, "name", self.feature)
        if isinstance(self.axes, list):
            object.__setattr__(self, "axes", tuple(self.axes))
        if not (self.axes is None or self.axes == "all" or
                (isinstance(self.axes, tuple) and all(isinstance(a, int) and a >= 0 for a in self.axes))):
            raise ValueError(f"StatSpec `axes` must be None, 'all' or a tuple of ints >= 0, got {self.axes!r}")
        if self.quantiles is not None and self.histogram_bins is None:
            object.__setattr__(self, "histogram_bins", 1024)
        if self.histogram_bins is not None:
            if not isinstance(self.histogram_bins, int) or self.histogram_bins < 1:
                raise ValueError(f"StatSpec `histogram_bins` must be an int >= 1, got {self.histogram_bins!r}")
            rng = self.histogram_range
            if rng is None or len(rng) != 2 or not np.isfinite(rng).all() or not rng[0] < rng[1]:
                raise ValueError(
                    f"StatSpec for {self.feature!r} needs `histogram_range=(lo, hi)` with lo < hi for a "
                    f"histogram or quantiles, got {rng!r}"
                )
            object.__setattr__(self, "histogram_range", (float(rng[0]), float(rng[1])))
        if self.quantiles is not None and (not isinstance(self.quantiles, int) or self.quantiles < 1):
            raise ValueError(f"StatSpec `quantiles` must be an int >= 1, got {self.quantiles!r}")
        if self.vocabulary_top_k is not None:
            if not isinstance(self.vocabulary_top_k, int) or self.vocabulary_top_k < 0:
                raise ValueError(f"StatSpec `vocabulary_top_k` must be an int >= 0, got {self.vocabulary_top_k!r}")
            object.__setattr__(self, "moments", False)
