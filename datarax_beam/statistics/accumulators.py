"""Mergeable accumulators for full-pass statistics (numpy only, float64).

Each accumulator is built from one block of records and merged with Chan et al.'s parallel
formulas. To make results bit-identical whatever the runner, worker count or chunk size,
statistics are computed per fixed block of record indices and merged in block order (see
`datarax_beam.statistics.analyzer`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import numpy as np

from datarax_beam.statistics.spec import StatSpec


def _reduce_axes(spec: StatSpec, ndim: int) -> tuple[int, ...]:
    """Axes of a stacked column (record axis first) that the statistics reduce over."""
    if spec.axes == "all":
        return tuple(range(ndim))
    extra = tuple(a + 1 for a in (spec.axes or ()))
    for a in extra:
        if a >= ndim:
            raise ValueError(
                f"StatSpec {spec.name!r}: axis {a - 1} is out of range for feature {spec.feature!r} "
                f"with per-record rank {ndim - 1}"
            )
    return (0, *extra)


@dataclasses.dataclass
class Moments:
    """count, mean, M2 (sum of squared deviations), min, max — all float64 arrays."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray

    @classmethod
    def from_values(cls, values: np.ndarray, axes: tuple[int, ...]) -> Moments:
        x = np.asarray(values, dtype=np.float64)
        count = np.full_like(np.sum(x, axis=axes), np.prod([x.shape[a] for a in axes]), dtype=np.float64)
        mean = np.mean(x, axis=axes)
        m2 = np.sum(np.square(x - np.expand_dims(mean, axes)), axis=axes)
        return cls(count, mean, m2, np.min(x, axis=axes), np.max(x, axis=axes))

    def merge(self, other: Moments) -> Moments:
        n = self.count + other.count
        delta = other.mean - self.mean
        safe_n = np.where(n > 0, n, 1.0)
        mean = self.mean + delta * (other.count / safe_n)
        m2 = self.m2 + other.m2 + np.square(delta) * (self.count * other.count / safe_n)
        return Moments(n, mean, m2, np.minimum(self.min, other.min), np.maximum(self.max, other.max))

    def finalize(self) -> dict[str, np.ndarray]:
        var = self.m2 / np.where(self.count > 0, self.count, 1.0)
        return {"count": self.count, "mean": self.mean, "var": var, "std": np.sqrt(var),
                "min": self.min, "max": self.max}


@dataclasses.dataclass
class Histogram:
    counts: np.ndarray  # int64
    lo: float
    hi: float

    @classmethod
    def from_values(cls, values: np.ndarray, bins: int, lo: float, hi: float) -> Histogram:
        x = np.clip(np.asarray(values, dtype=np.float64).ravel(), lo, hi)
        counts, _ = np.histogram(x, bins=bins, range=(lo, hi))
        return cls(counts.astype(np.int64), lo, hi)

    def merge(self, other: Histogram) -> Histogram:
        return Histogram(self.counts + other.counts, self.lo, self.hi)

    def finalize(self, quantiles: int | None) -> dict[str, np.ndarray]:
        edges = np.linspace(self.lo, self.hi, len(self.counts) + 1)
        out = {"histogram": self.counts, "bin_edges": edges}
        if quantiles:
            cdf = np.cumsum(self.counts) / max(int(self.counts.sum()), 1)
            qs = np.arange(1, quantiles + 1) / (quantiles + 1)
            # Linear interpolation inside the bin where the CDF crosses q (error <= one bin width).
            idx = np.searchsorted(cdf, qs, side="left")
            prev = np.where(idx > 0, cdf[np.maximum(idx - 1, 0)], 0.0)
            width = np.where(cdf[idx] - prev > 0, cdf[idx] - prev, 1.0)
            out["quantiles"] = edges[idx] + (qs - prev) / width * (edges[idx + 1] - edges[idx])
            out["quantile_levels"] = qs
        return out


@dataclasses.dataclass
class Vocabulary:
    counts: Counter

    @classmethod
    def from_values(cls, values: Any) -> Vocabulary:
        arr = np.asarray(values) if not isinstance(values, np.ndarray) else values
        if arr.dtype == object:
            flat = []
            for v in arr:
                if isinstance(v, np.ndarray):
                    flat.extend(v.ravel().tolist())
                else:
                    flat.append(v)
            return cls(Counter(flat))
        if arr.dtype.kind not in "iub":
            raise TypeError(f"A vocabulary needs string or integer values, got dtype {arr.dtype}")
        uniq, counts = np.unique(arr.ravel(), return_counts=True)
        return cls(Counter(dict(zip(uniq.tolist(), counts.tolist(), strict=True))))

    def merge(self, other: Vocabulary) -> Vocabulary:
        merged = Counter(self.counts)
        merged.update(other.counts)
        return Vocabulary(merged)

    def finalize(self, top_k: int) -> dict[str, Any]:
        items = sorted(self.counts.items(), key=lambda kv: (-kv[1], _sort_key(kv[0])))
        if top_k:
            items = items[:top_k]
        return {"vocabulary": [k for k, _ in items], "vocabulary_counts": np.array([c for _, c in items], np.int64),
                "num_unique": len(self.counts)}


def _sort_key(value: Any) -> tuple:
    if isinstance(value, bytes):
        return (1, value.decode("latin-1"))
    if isinstance(value, str):
        return (1, value)
    return (0, value)


@dataclasses.dataclass
class FeatureAccumulator:
    """All statistics of one `StatSpec`, for one block of records."""

    spec: StatSpec
    moments: Moments | None = None
    histogram: Histogram | None = None
    vocabulary: Vocabulary | None = None

    @classmethod
    def from_column(cls, spec: StatSpec, column: Any) -> FeatureAccumulator:
        acc = cls(spec)
        if spec.vocabulary_top_k is not None:
            acc.vocabulary = Vocabulary.from_values(column)
            return acc
        values = np.asarray(column)
        if values.dtype.kind not in "biuf":
            raise TypeError(
                f"StatSpec {spec.name!r}: feature {spec.feature!r} has dtype {values.dtype}; moments "
                f"and histograms need numeric values (use vocabulary_top_k for strings)"
            )
        if spec.moments:
            acc.moments = Moments.from_values(values, _reduce_axes(spec, values.ndim))
        if spec.histogram_bins:
            lo, hi = spec.histogram_range
            acc.histogram = Histogram.from_values(values, spec.histogram_bins, lo, hi)
        return acc

    def merge(self, other: FeatureAccumulator) -> FeatureAccumulator:
        def m(a, b):
            return a if b is None else b if a is None else a.merge(b)

        return FeatureAccumulator(self.spec, m(self.moments, other.moments),
                                  m(self.histogram, other.histogram), m(self.vocabulary, other.vocabulary))

    def finalize(self) -> dict[str, Any]:
        out: dict[str, Any] = {"feature": self.spec.feature}
        if self.moments is not None:
            out.update(self.moments.finalize())
        if self.histogram is not None:
            out.update(self.histogram.finalize(self.spec.quantiles))
        if self.vocabulary is not None:
            out.update(self.vocabulary.finalize(self.spec.vocabulary_top_k))
        return out
