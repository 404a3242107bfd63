"""Mergeable accumulators for full-pass statistics (numpy only, float64).

Each accumulator is built from one block of records and merged with Chan et al.'s parallel
formulas. To make results bit-identical whatever the runner, worker count or chunk size,
statistics are computed per fixed block of record indices and merged in block order (see
`datarax_beam.statistics.analyzer`).
"""

from __future__ import annotations

import dataclasses
import operator
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
    """count, mean, M2 (sum of squared deviations), min, max over the finite values, and the
    number of NaN and of +-inf values — all float64 arrays of the statistic's shape.

    Non-finite values are left out of every moment and counted instead, so one NaN never turns
    a dataset's mean into NaN, online and offline alike. A position with no finite value has
    ``count`` 0 and NaN mean/var/std/min/max.
    """

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray
    nan_count: np.ndarray
    inf_count: np.ndarray

    @classmethod
    def from_values(cls, values: np.ndarray, axes: tuple[int, ...]) -> Moments:
        x = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(x)
        zeros = _empty_reduce(x, axes)
        if finite.all():  # the common case: plain numpy reductions
            count = np.full_like(zeros, np.prod([x.shape[a] for a in axes]), dtype=np.float64)
            mean = np.mean(x, axis=axes) if x.size else zeros.copy()
            m2 = np.sum(np.square(x - np.expand_dims(mean, axes)), axis=axes)
            lo = np.min(x, axis=axes) if x.size else np.full_like(zeros, np.inf)
            hi = np.max(x, axis=axes) if x.size else np.full_like(zeros, -np.inf)
            return cls(count, mean, m2, lo, hi, zeros.copy(), zeros.copy())
        nan = np.isnan(x)
        count = np.sum(finite, axis=axes, dtype=np.float64)
        nan_count = np.sum(nan, axis=axes, dtype=np.float64)
        inf_count = np.sum(~finite & ~nan, axis=axes, dtype=np.float64)
        safe = np.where(finite, x, 0.0)
        mean = np.sum(safe, axis=axes) / np.where(count > 0, count, 1.0)
        dev = np.where(finite, x - np.expand_dims(mean, axes), 0.0)
        m2 = np.sum(np.square(dev), axis=axes)
        lo = np.min(np.where(finite, x, np.inf), axis=axes)
        hi = np.max(np.where(finite, x, -np.inf), axis=axes)
        return cls(count, mean, m2, lo, hi, nan_count, inf_count)

    def merge(self, other: Moments) -> Moments:
        n = self.count + other.count
        delta = other.mean - self.mean
        safe_n = np.where(n > 0, n, 1.0)
        mean = self.mean + delta * (other.count / safe_n)
        m2 = self.m2 + other.m2 + np.square(delta) * (self.count * other.count / safe_n)
        return Moments(n, mean, m2, np.minimum(self.min, other.min), np.maximum(self.max, other.max),
                       self.nan_count + other.nan_count, self.inf_count + other.inf_count)

    def finalize(self) -> dict[str, np.ndarray]:
        empty = self.count == 0
        var = self.m2 / np.where(empty, 1.0, self.count)
        out = {"count": self.count, "mean": self.mean, "var": var, "std": np.sqrt(var),
               "min": self.min, "max": self.max}
        if np.any(empty):
            out = {k: v if k == "count" else np.where(empty, np.nan, v) for k, v in out.items()}
        out["nan_count"], out["inf_count"] = self.nan_count, self.inf_count
        return out


def _empty_reduce(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.zeros([d for a, d in enumerate(x.shape) if a not in axes], dtype=np.float64)


@dataclasses.dataclass
class Histogram:
    """Counts of the finite values over ``[lo, hi]`` (values outside fall into the end bins);
    NaN and +-inf are left out, as for `Moments`."""

    counts: np.ndarray  # int64
    lo: float
    hi: float

    @classmethod
    def from_values(cls, values: np.ndarray, bins: int, lo: float, hi: float) -> Histogram:
        x = np.asarray(values, dtype=np.float64).ravel()
        finite = np.isfinite(x)
        if not finite.all():
            x = x[finite]
        counts, _ = np.histogram(np.clip(x, lo, hi), bins=bins, range=(lo, hi))
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
            idx = np.minimum(np.searchsorted(cdf, qs, side="left"), len(cdf) - 1)
            prev = np.where(idx > 0, cdf[np.maximum(idx - 1, 0)], 0.0)
            width = np.where(cdf[idx] - prev > 0, cdf[idx] - prev, 1.0)
            out["quantiles"] = edges[idx] + (qs - prev) / width * (edges[idx + 1] - edges[idx])
            out["quantile_levels"] = qs
        return out


@dataclasses.dataclass
class Vocabulary:
    """Value counts of a string, bytes or integer feature; ``None`` values are counted apart."""

    counts: Counter
    missing: int = 0

    @classmethod
    def from_values(cls, values: Any) -> Vocabulary:
        arr = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
        if arr.dtype.kind in "iub":
            uniq, counts = np.unique(arr.ravel(), return_counts=True)
            return cls(Counter(dict(zip(uniq.tolist(), counts.tolist(), strict=True))))
        if arr.dtype.kind in "US":  # a numpy string array: one flat list
            return cls(Counter(arr.ravel().tolist()))
        if arr.dtype != object:
            raise TypeError(
                f"A vocabulary needs string, bytes or integer values (or arrays of them), got "
                f"dtype {arr.dtype}"
            )
        counts = Counter(flatten_values(arr))
        missing = counts.pop(None, 0)
        _check_keys(counts)
        return cls(counts, missing)

    def merge(self, other: Vocabulary) -> Vocabulary:
        return Vocabulary.merge_all([self, other])

    @staticmethod
    def merge_all(vocabularies: list[Vocabulary]) -> Vocabulary:
        """One pass over all blocks' counts (merging pairwise would copy a growing Counter)."""
        merged: Counter = Counter()
        for v in vocabularies:
            merged.update(v.counts)
        return Vocabulary(merged, sum(v.missing for v in vocabularies))

    def finalize(self, top_k: int) -> dict[str, Any]:
        try:  # by value, then stably by count descending: both sorts in C for one value type
            items = sorted(self.counts.items())
            items.sort(key=operator.itemgetter(1), reverse=True)
        except TypeError:  # mixed types (ints and strings, str and bytes): the general key
            items = sorted(self.counts.items(), key=lambda kv: (-kv[1], _sort_key(kv[0])))
        if top_k:
            items = items[:top_k]
        return {"vocabulary": [k.item() if isinstance(k, np.generic) else k for k, _ in items],
                "vocabulary_counts": np.array([c for _, c in items], np.int64),
                "num_unique": len(self.counts), "num_missing": int(self.missing)}


def flatten_values(column: np.ndarray) -> list:
    """The values of an object column as one flat list: arrays and lists of values are spliced
    in (row-major), scalars (str, bytes, int, None) kept; numpy scalars become Python values."""
    values = column.tolist()
    if not any(issubclass(t, (np.ndarray, list, tuple)) for t in set(map(type, values))):
        return values  # the common case, checked at C speed: one value per record
    flat: list = []
    for v in values:
        if isinstance(v, np.ndarray):
            flat.extend(v.ravel().tolist())
        elif isinstance(v, (list, tuple)):
            flat.extend(np.asarray(v, dtype=object).ravel().tolist())
        else:
            flat.append(v)
    return flat


def _sort_key(value: Any) -> tuple:
    if isinstance(value, bytes):
        return (1, value.decode("latin-1"))
    if isinstance(value, str):
        return (1, value)
    return (0, value)


def _check_keys(counts: Counter) -> None:
    if all(issubclass(t, (str, bytes, int, np.integer)) for t in set(map(type, counts))):
        return
    for value in counts:
        if not isinstance(value, (str, bytes, int, np.integer)):
            raise TypeError(
                f"A vocabulary needs string, bytes or integer values (None is missing), got "
                f"{type(value).__name__}: {value!r:.60}"
            )


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
        return FeatureAccumulator.merge_all([self, other])

    @staticmethod
    def merge_all(accumulators: list[FeatureAccumulator]) -> FeatureAccumulator:
        """Merges blocks in the given order (moments left to right, so the bits are fixed)."""
        def fold(parts):
            parts = [p for p in parts if p is not None]
            if not parts:
                return None
            out = parts[0]
            for p in parts[1:]:
                out = out.merge(p)
            return out

        vocabularies = [a.vocabulary for a in accumulators if a.vocabulary is not None]
        return FeatureAccumulator(accumulators[0].spec, fold([a.moments for a in accumulators]),
                                  fold([a.histogram for a in accumulators]),
                                  Vocabulary.merge_all(vocabularies) if vocabularies else None)

    def finalize(self) -> dict[str, Any]:
        out: dict[str, Any] = {"feature": self.spec.feature}
        if self.moments is not None:
            out.update(self.moments.finalize())
        if self.histogram is not None:
            out.update(self.histogram.finalize(self.spec.quantiles))
        if self.vocabulary is not None:
            out.update(self.vocabulary.finalize(self.spec.vocabulary_top_k))
        return out
