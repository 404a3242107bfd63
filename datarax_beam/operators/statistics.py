"""Operators that use full-pass statistics: analyze the whole dataset, then transform.

An operator declares the `StatSpec`s it needs. Before it runs, the pipeline (online) or the
Beam job (offline) analyzes the records as they are *at that point of the chain* — the output of
the operators before it — and binds the result with `with_statistics`. Both sides use the same
block-wise analysis, so the bound statistics, and hence the outputs, are bit-identical.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.nnx as nnx
import jax.numpy as jnp
import numpy as np

from datarax_beam.core.element import Element
from datarax_beam.core.operator import OperatorConfig, OperatorModule, code_fingerprint
from datarax_beam.statistics.spec import StatSpec

StatsFn = Callable[[Element, Any, Mapping[str, Mapping[str, Any]]], Element]


class StatisticsOperator(OperatorModule):
    """``fn(element, key, stats)`` with the statistics declared in ``statistics``.

    Example:
      >>> import numpy as np
      >>> from datarax_beam.statistics import Statistics
      >>> op = StatisticsOperator(OperatorConfig(), fn=lambda e, k, s: e.update_data({"x": e.data["x"] - s["x"]["mean"]}),
      ...                         statistics=[StatSpec("x")])
      >>> bound = op.with_statistics(Statistics({"x": {"mean": np.array(2.0)}}))
      >>> float(bound(Element({"x": np.float32(5.0)})).data["x"])
      3.0
    """

    def __init__(
        self,
        config: OperatorConfig,
        fn: StatsFn,
        statistics: Sequence[StatSpec],
        rngs: nnx.Rngs | None = None,
        *,
        name: str | None = None,
    ):
        if not callable(fn):
            raise TypeError(f"`fn` must be callable as fn(element, key, stats), got {fn!r}")
        specs = tuple(statistics)
        if not specs or not all(isinstance(s, StatSpec) for s in specs):
            raise TypeError(f"`statistics` must be a non-empty list of StatSpec, got {statistics!r}")
        super().__init__(config, rngs=rngs, name=name or getattr(fn, "__name__", type(self).__name__))
        self.fn = fn
        self.specs = specs
        self._bound: dict[str, dict[str, Any]] | None = None

    def statistics_specs(self) -> tuple[StatSpec, ...]:
        return self.specs

    @property
    def is_bound(self) -> bool:
        return self._bound is not None

    def with_statistics(self, stats: Mapping[str, Mapping[str, Any]]) -> StatisticsOperator:
        """A copy of this operator that uses ``stats`` (it must hold every declared name)."""
        missing = [s.name for s in self.specs if s.name not in stats]
        if missing:
            raise KeyError(f"Operator {self.name!r} needs statistics {missing}; got {sorted(stats)}")
        bound = copy.copy(self)
        bound._bound = {s.name: {k: _as_array(v) for k, v in stats[s.name].items()} for s in self.specs}
        return bound

    def apply(self, element: Element, key) -> Element:
        if self._bound is None:
            raise RuntimeError(
                f"Operator {self.name!r} needs statistics {[s.name for s in self.specs]} that were "
                f"not computed; run it inside a pipeline (which analyzes the data first) or call "
                f"with_statistics(...)"
            )
        result = self.fn(element, key, self._bound)
        if not isinstance(result, Element):
            raise TypeError(f"Operator {self.name!r}: fn must return an Element, got {type(result).__name__}")
        return result

    def _fingerprint_extra(self) -> bytes:
        h = hashlib.sha256(code_fingerprint(self.fn))
        h.update(repr(self.specs).encode())
        if self._bound is not None:
            h.update(json.dumps({n: {k: np.asarray(v).tolist() if isinstance(v, np.ndarray) else v
                                     for k, v in d.items()} for n, d in self._bound.items()},
                                sort_keys=True, default=str).encode())
        return h.digest()


def _as_array(v: Any) -> Any:
    return v if not isinstance(v, (list, tuple)) or not v or not isinstance(v[0], (int, float)) else np.asarray(v)


class Normalize(StatisticsOperator):
    """``(x - mean) / (std + eps)`` with the dataset's mean and std of ``feature``.

    Args:
      feature: the feature to normalize.
      stats: the statistics name (defaults to the feature name).
      axes: per-record axes reduced with the record axis (``(0, 1)``: per channel of HWC images;
        ``"all"``: one scalar mean/std; ``None``: per element position).
      eps: added to the std.
    """

    def __init__(self, feature: str, stats: str | None = None, *, axes=None, eps: float = 1e-6,
                 name: str | None = None):
        self.feature, self.eps = feature, float(eps)
        spec = StatSpec(feature=feature, name=stats or feature, axes=axes)
        super().__init__(OperatorConfig(), fn=self._normalize, statistics=[spec], name=name or f"normalize_{feature}")

    def _normalize(self, element: Element, key, stats) -> Element:
        spec = self.specs[0]
        s = stats[spec.name]
        x = element.data[self.feature]
        mean, std = jnp.asarray(s["mean"]), jnp.asarray(s["std"])
        if isinstance(spec.axes, tuple) and spec.axes:
            mean, std = jnp.expand_dims(mean, spec.axes), jnp.expand_dims(std, spec.axes)
        return element.update_data({self.feature: ((x - mean) / (std + self.eps)).astype(jnp.float32)})


class VocabularyLookup(StatisticsOperator):
    """Maps a string or integer feature to its id in the dataset's vocabulary (top-k by count).

    Values outside the vocabulary map to ``len(vocabulary)`` (one out-of-vocabulary id).
    """

    def __init__(self, feature: str, stats: str | None = None, *, top_k: int = 0,
                 output: str | None = None, name: str | None = None):
        self.feature, self.output = feature, output or feature
        spec = StatSpec(feature=feature, name=stats or f"{feature}_vocab", vocabulary_top_k=top_k)
        super().__init__(OperatorConfig(), fn=self._lookup, statistics=[spec], name=name or f"vocab_{feature}")
        self._table: dict | None = None

    def _lookup(self, element: Element, key, stats) -> Element:
        vocab = stats[self.specs[0].name]["vocabulary"]
        value = element.data[self.feature]
        if isinstance(value, (str, bytes)):
            if self._table is None:
                self._table = {v: i for i, v in enumerate(vocab)}
            return element.update_data({self.output: np.int32(self._table.get(value, len(vocab)))})
        values = jnp.asarray(np.asarray(vocab, dtype=np.int64))
        order = jnp.argsort(values)
        sorted_vals = values[order]
        pos = jnp.clip(jnp.searchsorted(sorted_vals, value), 0, len(vocab) - 1)
        hit = sorted_vals[pos] == value
        ids = jnp.where(hit, order[pos], len(vocab)).astype(jnp.int32)
        return element.update_data({self.output: ids})


def bind_statistics(
    operators: Sequence[OperatorModule],
    statistics: Mapping[str, Mapping[str, Any]] | None,
    compute: Callable[[Sequence[OperatorModule], Sequence[StatSpec]], Mapping[str, Mapping[str, Any]]],
) -> tuple[list[OperatorModule], dict[str, Mapping[str, Any]]]:
    """Binds statistics to every consumer in the chain, computing missing ones in order.

    ``compute(prefix, specs)`` analyzes the records as produced by the (already bound) operators
    ``prefix`` and returns the statistics for ``specs``.
    """
    known = dict(statistics or {})
    bound: list[OperatorModule] = []
    for op in operators:
        if isinstance(op, StatisticsOperator):
            missing = [s for s in op.statistics_specs() if s.name not in known]
            if missing:
                known.update(compute(list(bound), missing))
            op = op.with_statistics(known)
        bound.append(op)
    return bound, known


def statistics_consumers(operators: Sequence[OperatorModule]) -> list[int]:
    """Positions of operators that need statistics."""
    return [i for i, op in enumerate(operators) if isinstance(op, StatisticsOperator)]
