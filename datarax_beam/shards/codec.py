"""The record codec: one record <-> bytes, and a whole batch of records decoded at once.

Layout (codec ``datarax_beam.record/v1``, specified in ``docs/format.md``): a record is

1. the **fixed part**: every fixed-shape numeric (``tensor``) feature, in schema order, as raw
   little-endian C-order bytes — so a batch of records decodes with one ``np.frombuffer``;
2. the **variable part**: for every other feature, in schema order,
   ``string``/``bytes``: ``u32 length`` + bytes (UTF-8 for strings);
   ``ragged`` (numeric, shape varies per record): ``u32 ndim``, ``ndim × u32 dims``, raw bytes.

The schema (names, kinds, dtypes, shapes) lives in ``shardset.json``, not in the records.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from datarax_beam.core import columns as cols

CODEC = "datarax_beam.record/v1"
KINDS = ("tensor", "ragged", "string", "bytes")
_U32 = struct.Struct("<I")


class _Missing:
    """The value of a feature a record does not have (an operator dropped it for this record)."""

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self):
        return "MISSING"  # unpickles to this module's singleton


#: Placeholder in an object column for a record without that feature (see `fit`).
MISSING = _Missing()


class SchemaError(ValueError):
    """A record or batch does not match the schema (names the feature and the values)."""


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """One feature: ``kind`` in {tensor, ragged, string, bytes}, numpy ``dtype``, ``shape``.

    ``shape`` is the per-record shape for tensors, ``None`` otherwise (``ndim`` is kept for
    ragged features).
    """

    name: str
    kind: str
    dtype: str | None = None
    shape: tuple[int, ...] | None = None
    ndim: int | None = None

    def __post_init__(self):
        if self.dtype is not None and not isinstance(self.dtype, str):  # np.float32, np.dtype(...)
            object.__setattr__(self, "dtype", _dtype_name(np.dtype(self.dtype)))
        if self.shape is not None and not isinstance(self.shape, tuple):
            object.__setattr__(self, "shape", tuple(self.shape))
        if self.kind not in KINDS:
            raise SchemaError(f"Feature {self.name!r} has unknown kind {self.kind!r}; expected one of {KINDS}")

    @property
    def nbytes(self) -> int:
        """Bytes per record in the fixed part (tensors only)."""
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.dtype is not None:
            d["dtype"] = self.dtype
        if self.shape is not None:
            d["shape"] = list(self.shape)
        if self.ndim is not None:
            d["ndim"] = self.ndim
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FeatureSpec:
        try:
            shape = d.get("shape")
            return cls(name=str(d["name"]), kind=str(d["kind"]), dtype=d.get("dtype"),
                       shape=None if shape is None else tuple(int(s) for s in shape),
                       ndim=d.get("ndim"))
        except KeyError as e:
            raise SchemaError(f"Feature entry {dict(d)!r} is missing {e}") from None


@dataclasses.dataclass(frozen=True)
class Schema:
    """The ordered features of a record.

    Example:
      >>> import numpy as np
      >>> s = Schema.infer({"x": np.zeros((2, 3), np.float32), "t": np.array(["a", "b"], object)})
      >>> [(f.name, f.kind) for f in s.features]
      [('t', 'string'), ('x', 'tensor')]
      >>> decode_batch(s, encode_batch(s, {"x": np.ones((2, 3), np.float32), "t": np.array(["a", "bc"], object)}))["t"].tolist()
      ['a', 'bc']
    """

    features: tuple[FeatureSpec, ...]
    codec: str = CODEC

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def tensors(self) -> list[FeatureSpec]:
        return [f for f in self.features if f.kind == "tensor"]

    @property
    def variable(self) -> list[FeatureSpec]:
        return [f for f in self.features if f.kind != "tensor"]

    @property
    def fixed_nbytes(self) -> int:
        return sum(f.nbytes for f in self.tensors)

    @property
    def record_nbytes(self) -> int | None:
        """Codec bytes of every record when all features are tensors; None when sizes vary."""
        return None if self.variable or not self.features else self.fixed_nbytes

    @classmethod
    def infer(cls, batch: Mapping[str, Any]) -> Schema:
        """Infers the schema of a columnar batch (features sorted by name)."""
        return cls(tuple(_infer_feature(name, batch[name]) for name in sorted(batch)))

    def merge(self, other: Schema) -> Schema:
        """Checks that two batches agree; raises `SchemaError` naming the first difference."""
        if self == other:
            return self
        if self.names != other.names:
            raise SchemaError(f"Records have different features: {self.names} vs {other.names}")
        for a, b in zip(self.features, other.features, strict=True):
            if a != b:
                raise SchemaError(
                    f"Feature {a.name!r} changes between records: {describe_spec(a)} vs {describe_spec(b)}"
                )
        return self

    def to_json(self) -> dict[str, Any]:
        return {"codec": self.codec, "features": [f.to_json() for f in self.features]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Schema:
        codec = d.get("codec")
        if codec != CODEC:
            raise SchemaError(
                f"Unknown record codec {codec!r}; this version of datarax_beam reads {CODEC!r}"
            )
        return cls(tuple(FeatureSpec.from_json(f) for f in d.get("features", [])), codec=codec)


def describe_spec(f: FeatureSpec) -> str:
    """``<f4[2]``, ``ragged <i8 ndim=1``, ``string``, ``bytes``."""
    if f.kind == "tensor":
        return f"{f.dtype}{list(f.shape)}"
    if f.kind == "ragged":
        return f"ragged {f.dtype} ndim={f.ndim}"
    return f.kind


def _infer_feature(name: str, column: Any) -> FeatureSpec:
    if isinstance(column, np.ndarray) and column.dtype.kind in cols.NUMERIC_KINDS:
        return FeatureSpec(name, "tensor", _dtype_name(column.dtype), tuple(column.shape[1:]))
    values = list(column)
    if not values:
        raise SchemaError(f"Cannot infer the type of feature {name!r} from an empty column")
    if all(isinstance(v, str) for v in values):
        return FeatureSpec(name, "string")
    if all(isinstance(v, (bytes, bytearray, memoryview)) for v in values):
        return FeatureSpec(name, "bytes")
    arrays = [v for v in values if isinstance(v, np.ndarray) and v.dtype.kind in cols.NUMERIC_KINDS]
    if len(arrays) == len(values):
        dtypes = {a.dtype for a in arrays}
        ndims = {a.ndim for a in arrays}
        if len(dtypes) == 1 and len(ndims) == 1:
            return FeatureSpec(name, "ragged", _dtype_name(arrays[0].dtype), None, arrays[0].ndim)
        raise SchemaError(
            f"Feature {name!r} mixes dtypes {sorted(map(str, dtypes))} or ranks {sorted(ndims)} across records"
        )
    kinds = sorted({describe_value(v) for v in values})
    raise SchemaError(f"Feature {name!r} mixes values of different types across records: {kinds[:4]}; "
                      f"expected all numeric arrays, all str or all bytes")


def describe_value(value: Any) -> str:
    """A short description of one record's value, for error messages (``<f4[2]``, ``str``)."""
    if isinstance(value, np.ndarray) and value.dtype.kind in cols.NUMERIC_KINDS:
        return f"{_dtype_name(value.dtype)}{list(value.shape)}"
    if isinstance(value, np.generic) and value.dtype.kind in cols.NUMERIC_KINDS:
        return f"{_dtype_name(value.dtype)}[]"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes"
    if value is MISSING:
        return "nothing (the feature is missing)"
    return f"unsupported type {type(value).__name__}"


def _dtype_name(dtype: np.dtype) -> str:
    """Numpy dtype string with explicit little-endian order, e.g. ``<f4``, ``|u1``."""
    dtype = np.dtype(dtype)
    return dtype.newbyteorder("<").str if dtype.itemsize > 1 else dtype.str


def _le(dtype_name: str) -> np.dtype:
    return np.dtype(dtype_name).newbyteorder("<") if np.dtype(dtype_name).itemsize > 1 else np.dtype(dtype_name)


# -- encoding ---------------------------------------------------------------------------------
class FixedRecords(Sequence):
    """Records of equal ``size`` held in one buffer nobody writes to: record ``i`` is
    ``blob[(start + i) * size : (start + i + 1) * size]``.

    What `encode_batch` returns with ``block=True`` for a schema of tensors only: the batch in
    one buffer instead of one bytes object per record, which the compressor hands to zstd whole
    (`datarax_beam.shards.compress`). ``blob`` is ``bytes``, or a read-only memoryview of memory
    that cannot change (a JAX array's or a ``bytes`` object's: see `frozen_buffer`). Items and
    iteration give bytes like a list of records; a slice is a view of the same buffer.
    """

    __slots__ = ("blob", "size", "start", "stop")

    def __init__(self, blob: bytes, size: int, start: int = 0, stop: int | None = None):
        self.blob, self.size, self.start = blob, size, start
        self.stop = len(blob) // size if stop is None else stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i):
        if isinstance(i, slice):
            a, b, step = i.indices(len(self))
            if step != 1:
                return [self[k] for k in range(a, b, step)]
            return FixedRecords(self.blob, self.size, self.start + a, self.start + max(a, b))
        if not -len(self) <= i < len(self):
            raise IndexError(f"record {i} of {len(self)}")
        o = (self.start + i % len(self)) * self.size
        return bytes(self.blob[o : o + self.size])

    def __iter__(self):
        blob, size = self.blob, self.size
        for o in range(self.start * size, self.stop * size, size):
            yield bytes(blob[o : o + size])  # (a slice of bytes is bytes already: not copied again)

    @property
    def nbytes(self) -> int:
        return len(self) * self.size

    def buffer(self) -> memoryview:
        """The records' bytes, back to back (no copy)."""
        return memoryview(self.blob)[self.start * self.size : self.stop * self.size]


def frozen_buffer(array: np.ndarray) -> bytes | memoryview:
    """``array``'s bytes in a buffer nobody will write to: a view when its memory cannot change
    (`datarax_beam.core.columns.is_frozen`: a JAX array's, or a ``bytes`` object's), else a copy.

    A kernel's outputs reach the writer as numpy views of device buffers on the CPU; copying
    3 MiB per batch under the GIL took 12% of an in-process job. Anything writable (a source's
    array, a host operator's output) may be written to after the batch is handed over while
    the writer still compresses it, so it is copied.

    Example:
      >>> import jax.numpy as jnp
      >>> type(frozen_buffer(np.zeros(4, np.uint8))).__name__
      'bytes'
      >>> type(frozen_buffer(np.asarray(jnp.zeros(4, jnp.uint8)))).__name__
      'memoryview'
    """
    if array.flags.c_contiguous and cols.is_frozen(array):
        return memoryview(array.reshape(-1).view(np.uint8))
    return array.tobytes()


def records_nbytes(records: Sequence[bytes]) -> int:
    """The bytes of all ``records`` (a list or `FixedRecords`)."""
    return records.nbytes if isinstance(records, FixedRecords) else sum(map(len, records))


def encode_batch(schema: Schema, batch: Mapping[str, Any], block: bool = False) -> list[bytes] | FixedRecords:
    """Encodes every record of a columnar batch; checks it against ``schema``.

    With ``block``, a schema of tensors only (of a non-zero record size) encodes to one
    `FixedRecords` buffer (the same bytes, without a bytes object per record)."""
    if set(batch) != set(schema.names):
        raise SchemaError(f"Record features {sorted(batch)} do not match the schema's {schema.names}")
    n = cols.num_rows(batch)
    parts = []
    for f in schema.tensors:
        col = np.asarray(batch[f.name])
        if (col.dtype.kind not in cols.NUMERIC_KINDS or tuple(col.shape[1:]) != f.shape
                or _le(col.dtype) != _le(f.dtype)):  # no silent casts: data keeps its dtype
            got = f"{_dtype_name(col.dtype)}{list(col.shape[1:])}" if col.dtype != object else "mixed values"
            raise SchemaError(f"Feature {f.name!r}: expected {describe_spec(f)} per record, got {got}")
        col = np.ascontiguousarray(col, dtype=_le(f.dtype))
        parts.append(col.reshape(n, -1).view(np.uint8))
    fixed = np.concatenate(parts, axis=1) if len(parts) > 1 else (parts[0] if parts else None)
    var = schema.variable
    if block and not var and fixed is not None and n and fixed.shape[1]:
        return FixedRecords(frozen_buffer(fixed), fixed.shape[1])
    out = []
    for i in range(n):
        rec = fixed[i].tobytes() if fixed is not None else b""
        if var:
            rec += b"".join(_encode_var(f, batch[f.name][i]) for f in var)
        out.append(rec)
    return out


def _encode_var(f: FeatureSpec, value: Any) -> bytes:
    if f.kind == "string":
        if not isinstance(value, str):
            raise SchemaError(f"Feature {f.name!r}: expected str, got {describe_value(value)}")
        raw = value.encode("utf-8")
        return _U32.pack(len(raw)) + raw
    if f.kind == "bytes":
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise SchemaError(f"Feature {f.name!r}: expected bytes, got {describe_value(value)}")
        raw = bytes(value)
        return _U32.pack(len(raw)) + raw
    arr = np.asarray(value) if isinstance(value, (np.ndarray, np.generic)) else None
    if arr is None or arr.dtype.kind not in cols.NUMERIC_KINDS or arr.ndim != f.ndim or _le(arr.dtype) != _le(f.dtype):
        raise SchemaError(f"Feature {f.name!r}: expected {describe_spec(f)}, got {describe_value(value)}")
    arr = np.ascontiguousarray(arr, dtype=_le(f.dtype))
    return struct.pack(f"<I{arr.ndim}I", arr.ndim, *arr.shape) + arr.tobytes()


# -- decoding ---------------------------------------------------------------------------------
def decode_batch(schema: Schema, records: Sequence[bytes]) -> dict[str, Any]:
    """Decodes many records into columns; fixed-shape features in one ``np.frombuffer``."""
    n = len(records)
    fixed_size = schema.fixed_nbytes
    var = schema.variable
    if not var:
        buf = b"".join(records)
        if len(buf) != n * fixed_size:
            bad = next(i for i, r in enumerate(records) if len(r) != fixed_size)
            raise SchemaError(
                f"Record {bad} of the batch has {len(records[bad])} bytes, expected {fixed_size}"
            )
    else:
        buf = b"".join(memoryview(r)[:fixed_size] for r in records)
    out: dict[str, Any] = {}
    tensors = schema.tensors
    if tensors:
        raw = np.frombuffer(buf, dtype=np.uint8).reshape(n, fixed_size) if fixed_size else None
        offset = 0
        for f in tensors:
            size = f.nbytes
            if len(tensors) == 1 and raw is not None:
                block = raw.copy()
            else:
                block = np.ascontiguousarray(raw[:, offset : offset + size]) if raw is not None else np.zeros((n, 0), np.uint8)
            out[f.name] = block.view(_le(f.dtype)).reshape((n, *f.shape)).astype(np.dtype(f.dtype).newbyteorder("="), copy=False)
            offset += size
    if var:
        values = {f.name: [] for f in var}
        for i, rec in enumerate(records):
            mv = memoryview(rec)
            pos = fixed_size
            for f in var:
                try:
                    value, pos = _decode_var(f, mv, pos)
                except (struct.error, ValueError) as e:
                    raise SchemaError(f"Record {i} of the batch: cannot decode feature {f.name!r}: {e}") from None
                values[f.name].append(value)
            if pos != len(mv):
                raise SchemaError(f"Record {i} of the batch has {len(mv) - pos} trailing bytes")
        for f in var:
            out[f.name] = cols.object_column(values[f.name])
    return {name: out[name] for name in schema.names}


def _decode_var(f: FeatureSpec, mv: memoryview, pos: int) -> tuple[Any, int]:
    if f.kind in ("string", "bytes"):
        (length,) = _U32.unpack_from(mv, pos)
        pos += 4
        if pos + length > len(mv):
            raise ValueError(f"length {length} runs past the end of the record")
        raw = bytes(mv[pos : pos + length])
        return (raw.decode("utf-8") if f.kind == "string" else raw), pos + length
    (ndim,) = _U32.unpack_from(mv, pos)
    dims = struct.unpack_from(f"<{ndim}I", mv, pos + 4)
    pos += 4 + 4 * ndim
    dtype = _le(f.dtype)
    size = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if pos + size > len(mv):
        raise ValueError(f"array of shape {dims} runs past the end of the record")
    arr = np.frombuffer(mv[pos : pos + size], dtype=dtype).reshape(dims).copy()
    return arr, pos + size


def decode_record(schema: Schema, record: bytes) -> dict[str, Any]:
    """Decodes one record (a dict of per-record values)."""
    return {k: v[0] for k, v in decode_batch(schema, [record]).items()}
