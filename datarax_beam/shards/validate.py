"""Validating ``shardset.json`` whole, once, against a declared schema, before any of it is used.

Metadata read from disk is untrusted input. `validate_shardset` checks every field of the parsed
JSON object — types, ranges, names that stay inside the directory, sums that agree — and raises
one `ShardSetError` naming the field (a JSON path such as ``shards[3].name``) and the value. The
rules are data (`SHARDSET`, built from a few small spec classes), not code scattered over the
loader, and they hold for the schema a job fixes before it writes (`validate_schema`), so a
feature name the reader would refuse is refused at build time with the same message.

No Beam, no third-party validator: the train-time reader imports this.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from datarax_beam.shards.codec import CODEC, KINDS, SchemaError
from datarax_beam.shards.compress import COMPRESSIONS

FORMAT = "datarax_beam.shardset"
FORMAT_VERSION = 2

#: Largest record/byte count accepted (2**53: exact in a JSON double, far above any real set).
MAX_COUNT = 2**53
#: Longest feature name accepted.
MAX_NAME = 1024
#: Largest fixed part of one record (ArrayRecord records must stay well below 2 GiB).
MAX_RECORD_BYTES = 2**31
#: Deepest nesting accepted in the free-form fields (``extra``, ``statistics`` values).
MAX_DEPTH = 16

#: A shard file name: plain (no directory part), ours (``data-...``), not hidden.
SHARD_NAME = re.compile(r"data-[0-9]{5,}-of-[0-9]{5,}(-[0-9a-f]{12})?\.array_record")


class ShardSetError(SchemaError):
    """``shardset.json`` (or a schema a job would write into it) breaks a rule of the format."""


class _Invalid(Exception):
    def __init__(self, path: str, what: str, value: Any):
        super().__init__(path, what, value)
        self.path, self.what, self.value = path, what, value


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'} of {len(value)} entries"
    text = repr(value)
    return text if len(text) <= 100 else text[:60] + " ... " + text[-30:]


def _json_type(value: Any) -> str:
    for t, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
                    (list, "an array"), (dict, "an object"), (type(None), "null")):
        if isinstance(value, t):
            return name
    return type(value).__name__


# -- the spec classes ------------------------------------------------------------------------
class Int:
    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = lo, hi

    def check(self, value, path):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(path, f"must be an integer, not {_json_type(value)}", value)
        if not self.lo <= value <= self.hi:
            raise _Invalid(path, f"must be in [{self.lo}, {self.hi}]", value)


class Bool:
    def check(self, value, path):
        if not isinstance(value, bool):
            raise _Invalid(path, f"must be true or false, not {_json_type(value)}", value)


class Str:
    def __init__(self, *, max_len: int = 256, min_len: int = 0, pattern: re.Pattern | None = None,
                 enum: tuple[str, ...] | None = None, what: str = ""):
        self.max_len, self.min_len, self.pattern, self.enum, self.what = max_len, min_len, pattern, enum, what

    def check(self, value, path):
        if not isinstance(value, str):
            raise _Invalid(path, f"must be a string, not {_json_type(value)}", value)
        if self.enum is not None and value not in self.enum:
            raise _Invalid(path, f"must be one of {list(self.enum)}", value)
        if not self.min_len <= len(value) <= self.max_len:
            raise _Invalid(path, f"must have {self.min_len} to {self.max_len} characters", value)
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise _Invalid(path, f"must be {self.what or 'of the form ' + self.pattern.pattern}", value)


class Nullable:
    def __init__(self, spec):
        self.spec = spec

    def check(self, value, path):
        if value is not None:
            self.spec.check(value, path)


class Arr:
    def __init__(self, item, *, min_len: int = 0, max_len: int = 1 << 20):
        self.item, self.min_len, self.max_len = item, min_len, max_len

    def check(self, value, path):
        if not isinstance(value, list):
            raise _Invalid(path, f"must be an array, not {_json_type(value)}", value)
        if not self.min_len <= len(value) <= self.max_len:
            raise _Invalid(path, f"must have {self.min_len} to {self.max_len} entries", value)
        for i, item in enumerate(value):
            self.item.check(item, f"{path}[{i}]")


class Obj:
    """A JSON object with these fields (``optional`` may be absent); no other fields."""

    def __init__(self, fields: dict[str, Any], optional: tuple[str, ...] = ()):
        self.fields, self.optional = fields, frozenset(optional)

    def check(self, value, path):
        if not isinstance(value, dict):
            raise _Invalid(path, f"must be an object, not {_json_type(value)}", value)
        for name in value:
            if name not in self.fields:
                raise _Invalid(_join(path, name), f"is not a field of this format (expected {sorted(self.fields)})",
                               value[name])
        for name, spec in self.fields.items():
            if name in value:
                spec.check(value[name], _join(path, name))
            elif name not in self.optional:
                raise _Invalid(_join(path, name), "is missing", None)


class Map:
    """A JSON object with any string keys (``key``) and values of one spec."""

    def __init__(self, value, *, key: Str | None = None, max_len: int = 1 << 16):
        self.value, self.key, self.max_len = value, key or Str(max_len=MAX_NAME), max_len

    def check(self, value, path):
        if not isinstance(value, dict):
            raise _Invalid(path, f"must be an object, not {_json_type(value)}", value)
        if len(value) > self.max_len:
            raise _Invalid(path, f"must have at most {self.max_len} entries", value)
        for k, v in value.items():
            self.key.check(k, _join(path, k))
            self.value.check(v, _join(path, k))


class Json:
    """Any JSON value nested at most ``depth`` levels (checked without recursion)."""

    def __init__(self, depth: int = MAX_DEPTH):
        self.depth = depth

    def check(self, value, path):
        # Parsed JSON holds only JSON values (NaN/Infinity included: Python's JSON accepts them
        # and statistics may hold NaN); what is left to check is the nesting. Only containers
        # are visited, so a 50,000-word vocabulary costs one pass of isinstance, no paths.
        stack = [(value, path, 0)] if isinstance(value, (dict, list)) else []
        while stack:
            v, p, d = stack.pop()
            if d >= self.depth:
                raise _Invalid(p, f"nests deeper than {self.depth} levels", v)
            if isinstance(v, dict):
                stack.extend((x, _join(p, k), d + 1) for k, x in v.items() if isinstance(x, (dict, list)))
            else:
                stack.extend((x, f"{p}[{k}]", d + 1) for k, x in enumerate(v) if isinstance(x, (dict, list)))


def _join(path: str, name: str) -> str:
    return name if not path else f"{path}.{name}"


DTYPE = re.compile(r"[<|][biufc][0-9]{1,2}")
FEATURE = Obj({
    "name": Str(min_len=1, max_len=MAX_NAME),
    "kind": Str(enum=KINDS),
    "dtype": Str(pattern=DTYPE, what="a little-endian numpy dtype string such as '<f4', '<i8', '|u1' or '|b1'"),
    "shape": Arr(Int(0, 2**31 - 1), max_len=32),
    "ndim": Int(0, 32),
}, optional=("dtype", "shape", "ndim"))
SCHEMA = Obj({"codec": Str(enum=(CODEC,)), "features": Arr(FEATURE, max_len=1 << 16)})
SHARD = Obj({
    "name": Str(max_len=255, pattern=SHARD_NAME,
                what="a shard name: a plain file name inside the shard set, like "
                     "'data-00000-of-00008.array_record'"),
    "num_records": Int(0, MAX_COUNT),
    "num_bytes": Int(0, MAX_COUNT),
    "sha256": Str(pattern=re.compile(r"[0-9a-f]{64}"), what="64 lowercase hex digits (SHA-256)"),
    "num_failed": Int(0, MAX_COUNT),
})
#: The whole ``shardset.json`` (format version 2).
SHARDSET = Obj({
    "format": Str(enum=(FORMAT,)),
    "format_version": Int(FORMAT_VERSION, FORMAT_VERSION),
    "job_id": Str(pattern=re.compile(r"[0-9a-f]{32}"), what="32 lowercase hex digits"),
    "num_records": Int(0, MAX_COUNT),
    "total_bytes": Int(0, MAX_COUNT),
    "num_failed": Int(0, MAX_COUNT),
    "compression": Str(enum=COMPRESSIONS),
    "seed": Int(-(2**63), 2**64 - 1),
    "shuffle": Bool(),
    "fingerprint": Str(max_len=256),
    "schema": SCHEMA,
    "shards": Arr(SHARD, min_len=1, max_len=1 << 20),
    "statistics": Nullable(Map(Map(Json(MAX_DEPTH), max_len=256))),
    "versions": Map(Str(max_len=256), max_len=64),
    "extra": Json(MAX_DEPTH),
}, optional=("extra",))


# -- checks across fields --------------------------------------------------------------------
def _check_features(features: list[dict], path: str) -> None:
    seen: dict[str, int] = {}
    for i, f in enumerate(features):
        where = f"{path}[{i}]"
        kind, keys = f["kind"], set(f) - {"name", "kind"}
        need = {"tensor": {"dtype", "shape"}, "ragged": {"dtype", "ndim"}}.get(kind, set())
        if keys != need:
            extra, missing = sorted(keys - need), sorted(need - keys)
            field = _join(where, (extra or missing)[0])
            raise _Invalid(field, f"{'must not be set' if extra else 'is missing'} for a {kind!r} feature",
                           f.get((extra or missing)[0]))
        if "dtype" in f:
            try:
                dtype = np.dtype(f["dtype"])
            except TypeError:
                raise _Invalid(_join(where, "dtype"), "is not a numpy dtype", f["dtype"]) from None
            canonical = dtype.newbyteorder("<").str if dtype.itemsize > 1 else dtype.str
            if canonical != f["dtype"]:
                raise _Invalid(_join(where, "dtype"), f"must be written {canonical!r}", f["dtype"])
            if kind == "tensor":
                nbytes = math.prod(f["shape"]) * dtype.itemsize
                if nbytes > MAX_RECORD_BYTES:
                    raise _Invalid(_join(where, "shape"), f"makes a record of {nbytes} bytes (at most "
                                   f"{MAX_RECORD_BYTES})", f["shape"])
        if f["name"] in seen:
            raise _Invalid(_join(where, "name"), f"repeats the name of features[{seen[f['name']]}]", f["name"])
        seen[f["name"]] = i


def validate_schema(schema: Mapping[str, Any], path: str = "schema") -> None:
    """Checks a record schema's JSON form (`Schema.to_json`); raises `ShardSetError`."""
    try:
        SCHEMA.check(schema, path)
        _check_features(schema["features"], _join(path, "features"))
    except _Invalid as e:
        raise ShardSetError(f"Field `{e.path}` {e.what}, got {_show(e.value)}") from None


def validate_shardset(d: Any, where: str) -> None:
    """Checks a parsed ``shardset.json`` whole; raises one `ShardSetError` naming the first bad
    field and its value. ``where`` names the file in the message."""
    try:
        if not isinstance(d, dict):
            raise _Invalid("", f"must hold a JSON object, not {_json_type(d)}", d)
        if d.get("format") != FORMAT:
            raise ShardSetError(f"{where} is not a datarax_beam shard set (format={_show(d.get('format'))})")
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            hint = (" (written before shard checksums were recorded: materialize it again)"
                    if version == 1 else "")
            raise ShardSetError(f"{where} has format_version {_show(version)}; this version of "
                                f"datarax_beam reads {FORMAT_VERSION}{hint}")
        SHARDSET.check(d, "")
        _check_features(d["schema"]["features"], "schema.features")
        shards = d["shards"]
        names: dict[str, int] = {}
        for i, s in enumerate(shards):
            if s["name"] in names:
                raise _Invalid(f"shards[{i}].name", f"repeats the name of shards[{names[s['name']]}]", s["name"])
            names[s["name"]] = i
        for field in ("num_records", "num_bytes", "num_failed"):
            total = sum(s[field] for s in shards)
            top = {"num_bytes": "total_bytes"}.get(field, field)
            if d[top] != total:
                raise _Invalid(top, f"must equal the sum of shards[].{field} ({total})", d[top])
        if not d["schema"]["features"] and d["num_records"]:
            raise _Invalid("schema.features", f"is empty, but the set holds {d['num_records']} records",
                           d["schema"]["features"])
    except _Invalid as e:
        field = f"`{e.path}`" if e.path else "the document"
        raise ShardSetError(f"{where}: {field} {e.what}, got {_show(e.value)}") from None
