"""Records against a fixed schema: which fit, the encoding of those that do, and a batch's schema.

A shard set has one schema, fixed before the job writes (declared, or `infer_schema` over the
operator chain's output on the first batch). Each chunk is then encoded against it by
`encode_fitting`: a chunk that fits encodes in one `encode_batch` call; otherwise every record is
checked on its own, the records that fit are encoded in the schema's layout (a ``float32[2]``
row of a ragged column is written as a tensor, any shape is written into a ragged feature) and
each one that does not gets a message naming the feature, what the schema expects and what the
record holds. Nothing here depends on other chunks, so workers decide in parallel and the
result is the same on every runner.

Columns may hold `MISSING` for records without a feature (an operator dropped it for them).

Example:
  >>> import numpy as np
  >>> from datarax_beam.core.columns import object_column
  >>> schema = Schema.infer({"t": object_column(["a"])})
  >>> records, good, problems = encode_fitting(schema, {"t": object_column(["x", np.int64(3)])})
  >>> good.tolist(), problems
  ([True, False], {1: "feature 't': expected string, got <i8[]"})
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.shards.codec import (
    MISSING,
    FeatureSpec,
    Schema,
    SchemaError,
    _dtype_name,
    _le,
    describe_spec,
    describe_value,
    encode_batch,
)


def _as_numeric(value: Any) -> np.ndarray | None:
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype.kind in cols.NUMERIC_KINDS:
        return np.asarray(value)
    return None


def value_problem(f: FeatureSpec, value: Any) -> str | None:
    """None when one record's ``value`` fits feature ``f``; else what is wrong, naming both."""
    if value is MISSING:
        return f"feature {f.name!r} is missing (the schema expects {describe_spec(f)})"
    if f.kind == "string":
        ok = isinstance(value, str)
    elif f.kind == "bytes":
        ok = isinstance(value, (bytes, bytearray, memoryview))
    else:
        arr = _as_numeric(value)
        ok = arr is not None and _le(arr.dtype) == _le(f.dtype) and (
            arr.shape == f.shape if f.kind == "tensor" else arr.ndim == f.ndim)
    return None if ok else f"feature {f.name!r}: expected {describe_spec(f)}, got {describe_value(value)}"


def record_problem(schema: Schema, columns: Mapping[str, Any], row: int) -> str | None:
    """None when record ``row`` of ``columns`` fits ``schema``; else the first problem."""
    names = set(schema.names)
    for name, column in columns.items():
        if name not in names and column[row] is not MISSING:
            return f"feature {name!r} is not in the shard set's schema (features {schema.names})"
    for f in schema.features:
        if f.name not in columns:
            return value_problem(f, MISSING)
        problem = value_problem(f, columns[f.name][row])
        if problem is not None:
            return problem
    return None


def encode_fitting(schema: Schema, columns: Mapping[str, Any],
                   block: bool = False) -> tuple[list[bytes], np.ndarray, dict[int, str]]:
    """(encoded records that fit, in order; boolean mask of them; {row: problem} of the others).

    ``block``: a chunk that fits a schema of tensors only may come back as one `FixedRecords`."""
    n = cols.num_rows(columns)
    try:
        return encode_batch(schema, columns, block), np.ones(n, dtype=bool), {}
    except (SchemaError, ValueError, OverflowError, struct.error):
        pass  # some record misfits or cannot be encoded: check them one by one
    problems, records = {}, []
    for row in range(n):
        problem = record_problem(schema, columns, row)
        if problem is None:
            one = {f.name: _one(f, columns[f.name][row]) for f in schema.features}
            try:
                records.extend(encode_batch(schema, one))
            except (SchemaError, ValueError, OverflowError, struct.error) as e:  # e.g. a lone surrogate in a str
                problem = f"record cannot be encoded: {type(e).__name__}: {e}"
        if problem is not None:
            problems[row] = problem
    good = np.ones(n, dtype=bool)
    good[list(problems)] = False
    return records, good, problems


def _one(f: FeatureSpec, value: Any) -> Any:
    """A one-record column of ``value`` in the layout `encode_batch` takes for ``f``."""
    return np.asarray(value)[None] if f.kind == "tensor" else cols.object_column([value])


def _value_class(value: Any):
    if isinstance(value, str):
        return ("string",)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ("bytes",)
    arr = _as_numeric(value)
    if arr is not None:
        return ("numeric", _dtype_name(arr.dtype), arr.ndim)
    return None


def _most_common(items: list) -> Any:
    """The most frequent item; a tie goes to the one that appears first."""
    counts = Counter(items)
    first = {}
    for i, item in enumerate(items):
        first.setdefault(item, i)
    return max(counts, key=lambda item: (counts[item], -first[item]))


def _uniform(column: Any) -> bool:
    """Whether ``column`` is a numeric array: every record one value of its dtype and row shape
    (what `_value_class` would find record by record, found at once)."""
    return isinstance(column, np.ndarray) and column.dtype.kind in cols.NUMERIC_KINDS and column.ndim >= 1


def _uniform_spec(name: str, column: np.ndarray) -> FeatureSpec:
    return FeatureSpec(name, "tensor", _dtype_name(column.dtype), tuple(column.shape[1:]))


def infer_schema(columns: Mapping[str, Any]) -> Schema:
    """The schema of a batch of records (the chain's output on the first batch).

    Each choice is the one most records of the batch make (a tie goes to the earliest record): the set of features, then per
    feature the kind (and dtype and rank for numbers); a numeric feature is a ``tensor`` when
    those records share one shape, ``ragged`` otherwise. The records that disagree are the
    misfits `encode_fitting` will report.

    Raises:
      SchemaError: a feature has no value of a supported type (numbers, str, bytes) in the batch.
    """
    n = cols.num_rows(columns)
    if not n:
        return Schema(())
    uniform = {k: c for k, c in columns.items() if _uniform(c)}
    if len(uniform) == len(columns):  # every record has every feature, in one dtype and shape
        return Schema(tuple(_uniform_spec(k, c) for k, c in sorted(uniform.items())))
    present = [frozenset(k for k, c in columns.items() if k in uniform or c[r] is not MISSING) for r in range(n)]
    names = _most_common(present)
    rows = [r for r in range(n) if present[r] == names]
    features = []
    for name in sorted(names):
        if name in uniform and len(rows) == n:
            features.append(_uniform_spec(name, uniform[name]))
            continue
        values = [columns[name][r] for r in rows]
        classes = [_value_class(v) for v in values]
        known = [c for c in classes if c is not None]
        if not known:
            raise SchemaError(f"Cannot fix the schema of feature {name!r} from the first batch: it holds "
                              f"{describe_value(values[0])}; expected numeric arrays, str or bytes")
        winner = _most_common(known)
        if winner[0] != "numeric":
            features.append(FeatureSpec(name, winner[0]))
            continue
        shapes = {np.shape(v) for v, c in zip(values, classes, strict=True) if c == winner}
        if len(shapes) == 1:
            features.append(FeatureSpec(name, "tensor", winner[1], shapes.pop()))
        else:
            features.append(FeatureSpec(name, "ragged", winner[1], None, winner[2]))
    return Schema(tuple(features))
