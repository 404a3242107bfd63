"""`VocabularyLookup`: values of a categorical feature -> ids in a vocabulary built from the data.

The vocabulary is a full-pass statistic (`StatSpec(vocabulary_top_k=k)`): the ``k`` most frequent
values of the feature at that point of the chain, ties broken by value; ``None`` values are
counted as missing and never enter it. Ids are ``int32``; every value outside the vocabulary,
``None`` included, maps to one out-of-vocabulary id, ``len(vocabulary)``.

Where it runs is decided when the statistics are bound, from the vocabulary:

* a vocabulary of integers (that fit ``int32``) over a column that had no ``None``: in JAX,
  a ``searchsorted`` over the sorted vocabulary, fused into the chain's jitted segment;
* anything else — strings, bytes, ``None``, arrays of strings per record, integers too large for
  ``int32``: on the host, one dict lookup per value over the whole batch (a host segment).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.core.element import Element
from datarax_beam.core.operator import OperatorConfig
from datarax_beam.operators.statistics import HostStatisticsOperator, StatisticsOperator
from datarax_beam.statistics.accumulators import flatten_values
from datarax_beam.statistics.analyzer import Statistics
from datarax_beam.statistics.spec import StatSpec

_INT32 = np.iinfo(np.int32)


class VocabularyLookup(HostStatisticsOperator):
    """Maps a string, bytes or integer feature (or arrays of them) to vocabulary ids.

    Args:
      feature: the feature to look up: one value per record (str, bytes, int, None) or an array
        / list of values per record (e.g. tokens; the ids then have the same shape).
      stats: the statistics name (default ``f"{feature}_vocab"``).
      top_k: keep the ``top_k`` most frequent values (``0``: all).
      output: the feature the ids are written to (default: replace ``feature``).
      name: a name for messages.

    Example:
      >>> import numpy as np
      >>> op = VocabularyLookup("color", top_k=2, output="color_id")
      >>> bound = op.with_statistics({"color_vocab": {"vocabulary": ["red", "blue"]}})
      >>> colors = np.array(["blue", None, "green", "red"], dtype=object)
      >>> bound.apply_batch({"color": colors}, None)["color_id"].tolist()  # unknown and None -> 2
      [1, 2, 2, 0]
    """

    def __init__(self, feature: str, stats: str | None = None, *, top_k: int = 0,
                 output: str | None = None, name: str | None = None):
        if not isinstance(feature, str) or not feature:
            raise TypeError(f"`feature` must be a non-empty str, got {feature!r}")
        if output is not None and (not isinstance(output, str) or not output):
            raise TypeError(f"`output` must be a non-empty str or None, got {output!r}")
        self.feature, self.output = feature, output or feature
        spec = StatSpec(feature=feature, name=stats or f"{feature}_vocab", vocabulary_top_k=top_k)
        super().__init__(OperatorConfig(), statistics=[spec], name=name or f"vocab_{feature}",
                         writes=[self.output], threads=1)
        self._table: dict | None = None

    def with_statistics(self, stats: Mapping[str, Mapping[str, Any]]) -> StatisticsOperator:
        """Binds the vocabulary; returns the JAX form for a plain ``int32`` vocabulary (module doc)."""
        bound = super().with_statistics(stats)
        entry = bound._bound[self.specs[0].name]
        vocab = entry["vocabulary"]
        if _fits_jax(vocab) and not int(entry.get("num_missing", 0) or 0):
            return _IntegerLookup(self, bound._bound)
        return bound

    #: The file `to_config` puts the bound vocabulary (its statistics entry) in.
    VOCABULARY_FILE = "vocabulary.json"

    def to_config(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        """The bound host form as data: ``(settings, {"vocabulary.json": its statistics entry})``,
        rebuilt by `from_config` (how `datarax_beam.serving` exports it, never as pickled code)."""
        spec = self.specs[0]
        entry = self._require_bound()[spec.name]
        config = {"feature": self.feature, "stats": spec.name, "top_k": spec.vocabulary_top_k,
                  "output": self.output, "name": self.name}
        text = json.dumps(Statistics({spec.name: entry}).to_json(), sort_keys=True)
        return config, {self.VOCABULARY_FILE: text.encode("utf-8")}

    @classmethod
    def from_config(cls, config: dict[str, Any], files: dict[str, bytes]) -> VocabularyLookup:
        """The bound host form `to_config` describes (always the host form, as exported)."""
        op = cls(**config)
        stats = Statistics.from_json(json.loads(files[cls.VOCABULARY_FILE].decode("utf-8")))
        return HostStatisticsOperator.with_statistics(op, stats)

    def _on_bind(self) -> None:
        vocab = _vocabulary(self._bound[self.specs[0].name]["vocabulary"])
        self._table = {v: i for i, v in enumerate(vocab)}
        self._oov = len(vocab)

    def transform_with_statistics(self, batch, keys, stats):
        if self.feature not in batch:
            raise KeyError(f"VocabularyLookup {self.name!r}: no feature {self.feature!r}; the records have "
                           f"{sorted(batch)}")
        return {**batch, self.output: self._lookup(batch[self.feature])}

    def _lookup(self, column: Any) -> np.ndarray:
        table, oov = self._table, self._oov
        arr = column if isinstance(column, np.ndarray) else np.asarray(column)
        if arr.dtype != object:  # numeric or numpy str/bytes: one flat pass, same shape out
            flat = arr.ravel().tolist()
            return self._ids(flat, table, oov).reshape(arr.shape)
        values = arr.tolist()
        if not any(issubclass(t, (np.ndarray, list, tuple)) for t in set(map(type, values))):
            return self._ids(values, table, oov)  # one value per record (checked at C speed)
        ids = self._ids(flatten_values(arr), table, oov)
        out, pos = [], 0
        for v in values:  # split the flat ids back into one array per record
            shape = np.shape(v) if isinstance(v, (np.ndarray, list, tuple)) else ()
            size = int(np.prod(shape)) if shape else 1
            out.append(ids[pos:pos + size].reshape(shape))
            pos += size
        return cols.stack_values(out)

    def _ids(self, values: list, table: dict, oov: int) -> np.ndarray:
        try:  # dict.get mapped in C: no Python frame per value
            return np.fromiter(map(table.get, values, itertools.repeat(oov, len(values))), dtype=np.int32,
                               count=len(values))
        except TypeError:
            bad = next(v for v in values if not _hashable(v))
            raise TypeError(
                f"VocabularyLookup {self.name!r}: feature {self.feature!r} holds a "
                f"{type(bad).__name__} ({bad!r:.60}); expected str, bytes, int or None values, or "
                f"arrays of them"
            ) from None


class _IntegerLookup(StatisticsOperator):
    """The JAX form of a bound `VocabularyLookup` over an ``int32`` vocabulary (jit/vmap-able)."""

    def __init__(self, lookup: VocabularyLookup, bound: dict[str, dict[str, Any]]):
        super().__init__(OperatorConfig(), fn=self._lookup_one, statistics=lookup.specs,
                         name=lookup.name, writes=[lookup.output])
        self.feature, self.output = lookup.feature, lookup.output
        self._bound = bound
        self._on_bind()

    def _on_bind(self) -> None:
        vocab = np.asarray(self._bound[self.specs[0].name]["vocabulary"], dtype=np.int64)
        order = np.argsort(vocab, kind="stable").astype(np.int32)
        self._sorted, self._order = vocab[order].astype(np.int32), order
        self._table = {int(v): i for i, v in enumerate(vocab)}

    def _lookup_one(self, element: Element, key, stats) -> Element:
        value = element.data[self.feature]
        n = len(self._sorted)
        if not isinstance(value, (np.ndarray, np.generic, jnp.ndarray, int)) or isinstance(value, bool):
            # per-record path only: a value a JAX segment cannot hold (None, str, a list)
            ids = np.vectorize(lambda v: self._table.get(v, n), otypes=[np.int32])(
                np.asarray(value, dtype=object))
            return element.update_data({self.output: ids if ids.ndim else np.int32(ids)})
        if n == 0:
            return element.update_data({self.output: jnp.zeros(jnp.shape(value), jnp.int32)})
        x = jnp.asarray(value)
        pos = jnp.clip(jnp.searchsorted(jnp.asarray(self._sorted), x.astype(jnp.int32)), 0, n - 1)
        in_range = (x >= _INT32.min) & (x <= _INT32.max) if x.dtype.itemsize > 4 else True
        hit = (jnp.asarray(self._sorted)[pos] == x) & in_range
        ids = jnp.where(hit, jnp.asarray(self._order)[pos], n).astype(jnp.int32)
        return element.update_data({self.output: ids})


def _vocabulary(vocab: Any) -> list:
    values = vocab.tolist() if isinstance(vocab, np.ndarray) else list(vocab)
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def _fits_jax(vocab: Any) -> bool:
    values = _vocabulary(vocab)
    return bool(values) and all(
        isinstance(v, int) and not isinstance(v, bool) and _INT32.min <= v <= _INT32.max for v in values
    )


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


__all__ = ["VocabularyLookup"]
