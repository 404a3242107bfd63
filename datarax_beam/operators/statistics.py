"""Operators that use full-pass statistics: analyze the whole dataset, then transform.

An operator declares the `StatSpec`s it needs. Before it runs, the pipeline (online) or the
Beam job (offline) analyzes the records as they are *at that point of the chain* — the output of
the operators before it — and binds the result with `with_statistics`. Both sides use the same
block-wise analysis, so the bound statistics, and hence the outputs, are bit-identical.

`analysis_plan` groups consecutive consumers into one analysis pass when the consumers between
them do not write the features analyzed (each consumer declares what it writes): a tabular chain
of seven `Normalize`/`VocabularyLookup` operators is analyzed in one pass, not seven.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import flax.nnx as nnx
import jax.numpy as jnp
import numpy as np

from datarax_beam.core.element import Element
from datarax_beam.core.operator import OperatorConfig, OperatorModule, code_fingerprint
from datarax_beam.operators.host import HostOperator
from datarax_beam.statistics.spec import StatSpec

StatsFn = Callable[[Element, Any, Mapping[str, Mapping[str, Any]]], Element]
HostStatsFn = Callable[[dict[str, Any], "np.ndarray | None", Mapping[str, Mapping[str, Any]]], Mapping[str, Any]]


def _check_specs(statistics: Sequence[StatSpec]) -> tuple[StatSpec, ...]:
    specs = tuple(statistics)
    if not specs or not all(isinstance(s, StatSpec) for s in specs):
        raise TypeError(f"`statistics` must be a non-empty list of StatSpec, got {statistics!r}")
    return specs


def _check_writes(writes: Iterable[str] | None) -> frozenset[str] | None:
    if writes is None:
        return None
    if isinstance(writes, str) or not all(isinstance(w, str) for w in writes):
        raise TypeError(f"`writes` must be a list of feature names or None, got {writes!r}")
    return frozenset(writes)


class StatisticsOperator(OperatorModule):
    """``fn(element, key, stats)`` with the statistics declared in ``statistics``.

    Args:
      config: `OperatorConfig`.
      fn: the per-record function (traced under ``jit(vmap)`` like any JAX operator).
      statistics: the `StatSpec`s it needs.
      rngs: seeds a stochastic operator.
      name: a name for messages.
      writes: the features ``fn`` writes (sets, replaces or removes); ``None`` (the default)
        means "may write anything". Declaring it lets `analysis_plan` analyze later consumers in
        the same pass as this one.

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
        writes: Iterable[str] | None = None,
    ):
        if not callable(fn):
            raise TypeError(f"`fn` must be callable as fn(element, key, stats), got {fn!r}")
        specs = _check_specs(statistics)
        super().__init__(config, rngs=rngs, name=name or getattr(fn, "__name__", type(self).__name__))
        self.fn = fn
        self.specs = specs
        self._writes = _check_writes(writes)
        self._bound: dict[str, dict[str, Any]] | None = None

    def statistics_specs(self) -> tuple[StatSpec, ...]:
        return self.specs

    def writes(self) -> frozenset[str] | None:
        """Features this operator writes; None when unknown (it may write any)."""
        return self._writes

    @property
    def is_bound(self) -> bool:
        return self._bound is not None

    @property
    def bound_statistics(self) -> dict[str, dict[str, Any]] | None:
        """The statistics bound by `with_statistics` (None before)."""
        return self._bound

    def with_statistics(self, stats: Mapping[str, Mapping[str, Any]]) -> StatisticsOperator:
        """A copy of this operator that uses ``stats`` (it must hold every declared name)."""
        missing = [s.name for s in self.specs if s.name not in stats]
        if missing:
            raise KeyError(f"Operator {self.name!r} needs statistics {missing}; got {sorted(stats)}")
        bound = copy.copy(self)
        bound._bound = {s.name: {k: _as_array(v) for k, v in stats[s.name].items()} for s in self.specs}
        bound._on_bind()
        return bound

    def _on_bind(self) -> None:
        """Hook: precompute from ``self._bound`` (tables, sorted values) once per binding."""

    def _require_bound(self) -> dict[str, dict[str, Any]]:
        if self._bound is None:
            raise RuntimeError(
                f"Operator {self.name!r} needs statistics {[s.name for s in self.specs]} that were "
                f"not computed; run it inside a pipeline (which analyzes the data first) or call "
                f"with_statistics(...)"
            )
        return self._bound

    def apply(self, element: Element, key) -> Element:
        bound = self._require_bound()
        result = self.fn(element, key, bound)
        if not isinstance(result, Element):
            raise TypeError(f"Operator {self.name!r}: fn must return an Element, got {type(result).__name__}")
        return result

    def _fingerprint_extra(self) -> bytes:
        h = hashlib.sha256(code_fingerprint(self.fn) if self.fn is not None else b"")
        h.update(repr(self.specs).encode())
        h.update(repr(sorted(self._writes) if self._writes is not None else None).encode())
        if self._bound is not None:
            h.update(json.dumps({n: {k: np.asarray(v).tolist() if isinstance(v, np.ndarray) else v
                                     for k, v in d.items()} for n, d in self._bound.items()},
                                sort_keys=True, default=repr).encode())
        return h.digest()


class HostStatisticsOperator(StatisticsOperator, HostOperator):
    """A `HostOperator` that uses full-pass statistics: ``fn(batch, keys, stats) -> batch``.

    It runs on the host over whole batches of columns (see `HostOperator`), so it may read text,
    bytes and ragged values; subclasses override `transform_with_statistics` instead of passing
    ``fn``. Analysis and binding work as for `StatisticsOperator`.

    Example:
      >>> import numpy as np
      >>> lower_than_mean = HostStatisticsOperator(
      ...     OperatorConfig(), fn=lambda b, k, s: {**b, "low": b["x"] < s["x"]["mean"]},
      ...     statistics=[StatSpec("x")], writes=["low"])
      >>> bound = lower_than_mean.with_statistics({"x": {"mean": np.array(1.5)}})
      >>> bound.apply_batch({"x": np.array([1.0, 2.0])}, None)["low"].tolist()
      [True, False]
    """

    def __init__(
        self,
        config: OperatorConfig,
        fn: HostStatsFn | None = None,
        statistics: Sequence[StatSpec] = (),
        rngs: nnx.Rngs | None = None,
        *,
        name: str | None = None,
        writes: Iterable[str] | None = None,
        threads: int | None = None,
        record_wise: bool = True,
    ):
        if fn is not None and not callable(fn):
            raise TypeError(f"`fn` must be callable as fn(batch, keys, stats), got {fn!r}")
        if fn is None and type(self).transform_with_statistics is HostStatisticsOperator.transform_with_statistics:
            raise TypeError("HostStatisticsOperator needs `fn` (or a subclass overriding transform_with_statistics)")
        specs = _check_specs(statistics)
        default = getattr(fn, "__name__", None) if fn is not None else type(self).__name__
        HostOperator.__init__(self, None, config, rngs, name=name or default or type(self).__name__,
                              threads=threads, record_wise=record_wise)
        self.fn = fn
        self.specs = specs
        self._writes = _check_writes(writes)
        self._bound = None

    def transform_with_statistics(self, batch: dict[str, Any], keys: np.ndarray | None,
                                  stats: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any]:
        return self.fn(batch, keys, stats)

    def transform(self, batch: dict[str, Any], keys: np.ndarray | None) -> Mapping[str, Any]:
        return self.transform_with_statistics(batch, keys, self._require_bound())

    def apply(self, element: Element, key) -> Element:
        self._require_bound()
        return HostOperator.apply(self, element, key)


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
        super().__init__(OperatorConfig(), fn=self._normalize, statistics=[spec], name=name or f"normalize_{feature}",
                         writes=[feature])

    def _normalize(self, element: Element, key, stats) -> Element:
        spec = self.specs[0]
        s = stats[spec.name]
        x = element.data[self.feature]
        mean, std = jnp.asarray(s["mean"]), jnp.asarray(s["std"])
        if isinstance(spec.axes, tuple) and spec.axes:
            mean, std = jnp.expand_dims(mean, spec.axes), jnp.expand_dims(std, spec.axes)
        return element.update_data({self.feature: ((x - mean) / (std + self.eps)).astype(jnp.float32)})


def analysis_plan(
    operators: Sequence[OperatorModule], given: Iterable[str] | None = None
) -> list[tuple[int, list[StatSpec]]]:
    """The analysis passes a chain needs: ``[(prefix_length, specs), ...]`` in chain order.

    Pass ``(k, specs)`` analyzes the records produced by ``operators[:k]`` (bound with the
    statistics of the earlier passes). Consecutive consumers share one pass when every consumer
    between them declares what it writes (`StatisticsOperator.writes`) and none writes a feature
    a later one analyzes; any other operator in between starts a new pass. Statistics named in
    ``given`` and those of already bound consumers are not analyzed again.

    Example:
      >>> ops = [Normalize("a"), Normalize("b"), VocabularyLookup("c", output="c_id")]
      >>> [(k, [s.name for s in specs]) for k, specs in analysis_plan(ops)]
      [(0, ['a', 'b', 'c_vocab'])]
    """
    known = set(given or ())
    plan: list[tuple[int, list[StatSpec]]] = []
    written: set[str] | None = None  # features written since the open pass's prefix; None: no open pass
    for i, op in enumerate(operators):
        if not isinstance(op, StatisticsOperator):
            written = None  # an operator that may write anything: later consumers need a new pass
            continue
        specs = op.statistics_specs()
        if op.is_bound:
            known.update(s.name for s in specs)
        missing = []
        for spec in specs:
            if spec.name not in known and all(spec.name != m.name for m in missing):
                missing.append(spec)
        if missing:
            if written is not None and not any(s.feature in written for s in missing):
                plan[-1][1].extend(missing)
            else:
                plan.append((i, missing))
                written = set()
            known.update(s.name for s in missing)
        writes = op.writes()
        if writes is None:
            written = None
        elif written is not None:
            written |= writes
    return plan


def bind_statistics(
    operators: Sequence[OperatorModule],
    statistics: Mapping[str, Mapping[str, Any]] | None,
    compute: Callable[[Sequence[OperatorModule], Sequence[StatSpec]], Mapping[str, Mapping[str, Any]]],
) -> tuple[list[OperatorModule], dict[str, Mapping[str, Any]]]:
    """Binds statistics to every consumer in the chain, computing missing ones per `analysis_plan`.

    ``compute(prefix, specs)`` analyzes the records as produced by the (already bound) operators
    ``prefix`` and returns the statistics for ``specs``; it is called once per pass of the plan.
    Operators that are already bound keep their statistics (and add them to the result).
    """
    known = dict(statistics or {})
    for op in operators:
        if isinstance(op, StatisticsOperator) and op.is_bound:
            for name, value in op.bound_statistics.items():
                known.setdefault(name, value)
    bound: list[OperatorModule] = []

    def bind_up_to(k: int) -> None:
        while len(bound) < k:
            op = operators[len(bound)]
            if isinstance(op, StatisticsOperator) and not op.is_bound:
                op = op.with_statistics(known)
            bound.append(op)

    for k, specs in analysis_plan(operators, known):
        bind_up_to(k)
        known.update(compute(list(bound), specs))
    bind_up_to(len(operators))
    return bound, known


def statistics_consumers(operators: Sequence[OperatorModule]) -> list[int]:
    """Positions of operators that need statistics."""
    return [i for i, op in enumerate(operators) if isinstance(op, StatisticsOperator)]


# VocabularyLookup lives in its own module; it is part of this one's public face.
from datarax_beam.operators.vocabulary import VocabularyLookup  # noqa: E402

__all__ = [
    "HostStatisticsOperator",
    "Normalize",
    "StatisticsOperator",
    "VocabularyLookup",
    "analysis_plan",
    "bind_statistics",
    "statistics_consumers",
]
