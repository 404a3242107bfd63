"""The exported-transform file format (``datarax_beam.transform`` version 1), and its validation.

A transform directory holds (specified in ``docs/serving.md``)::

    transform.json                  the manifest (this module): written last, read first
    steps/NN.jax                    a JAX segment: jax.export serialization (StableHLO)
    steps/NN/<file>                 files of a host operator (tokenizer.json, vocabulary.json)
    statistics.json                 the statistics baked into the steps (for reference)

The manifest is untrusted input: `parse_manifest` validates it whole (types, versions, names
that stay inside the directory, operators from a fixed list) before anything is used, and every
error names the field and the value. Nothing is ever unpickled; host operators are rebuilt from
data by their own ``from_config``.

Example:
  >>> parse_manifest({"format": FORMAT, "format_version": 99})
  Traceback (most recent call last):
  ...
  datarax_beam.serving.format.TransformFormatError: transform.json: field 'format_version' is 99; expected 1: ...
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from datarax_beam.core import columns as cols

FORMAT = "datarax_beam.transform"
FORMAT_VERSION = 1
MANIFEST = "transform.json"
STATISTICS = "statistics.json"
#: Where `materialize` puts the transform of a shard set (next to ``shardset.json``).
SHARDSET_DIR = "transform"

#: The host operators that export as data: manifest name -> (module, class).
HOST_OPERATORS = {
    "DecodeImage": ("datarax_beam.operators.image", "DecodeImage"),
    "ResizeImage": ("datarax_beam.operators.image", "ResizeImage"),
    "Tokenize": ("datarax_beam.operators.text", "Tokenize"),
    "VocabularyLookup": ("datarax_beam.operators.vocabulary", "VocabularyLookup"),
}
FEATURE_KINDS = ("tensor", "ragged", "string", "bytes", "object")
OUTPUT_KINDS = ("computed", "passed", "constant")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class ExportError(ValueError):
    """An operator of the chain cannot be exported; the message names it and says why."""


class TransformFormatError(ValueError):
    """A transform directory that this version cannot read; names the field and the value."""


# -- features ---------------------------------------------------------------------------------
def describe_column(name: str, column: Any) -> dict[str, Any]:
    """``{"name", "kind", ...}`` of a column: ``tensor`` (``dtype``, per-record ``shape``),
    ``ragged`` (numeric arrays of one dtype and rank: ``dtype``, ``ndim``), ``string``,
    ``bytes``, or ``object`` (anything else: mixed values, None)."""
    if isinstance(column, np.ndarray) and column.dtype.kind in cols.NUMERIC_KINDS:
        return {"name": name, "kind": "tensor", "dtype": column.dtype.str, "shape": list(column.shape[1:])}
    values = list(column)
    if values and all(type(v) is str for v in values):
        return {"name": name, "kind": "string"}
    if values and all(type(v) is bytes for v in values):
        return {"name": name, "kind": "bytes"}
    arrays = [v for v in values if isinstance(v, np.ndarray) and v.dtype.kind in cols.NUMERIC_KINDS]
    if values and len(arrays) == len(values) and len({a.dtype for a in arrays}) == 1 \
            and len({a.ndim for a in arrays}) == 1:
        return {"name": name, "kind": "ragged", "dtype": arrays[0].dtype.str, "ndim": arrays[0].ndim}
    return {"name": name, "kind": "object"}


def encode_constant(value: Any) -> dict[str, Any]:
    """A constant output value (str, bytes or None) as JSON."""
    if value is None:
        return {"none": True}
    if isinstance(value, bytes):
        return {"bytes_latin1": value.decode("latin-1")}
    return {"str": str(value)}


# -- the parsed manifest ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FileRef:
    """A file of the transform: its path relative to the directory and its SHA-256."""

    path: str
    sha256: str


@dataclasses.dataclass(frozen=True)
class HostStep:
    """A built-in host operator: its manifest name, settings and files (name -> `FileRef`)."""

    name: str
    operator: str
    config: dict[str, Any]
    files: dict[str, FileRef]


@dataclasses.dataclass(frozen=True)
class JaxStep:
    """A JAX segment: ``inputs`` ``[(feature, dtype, per-record shape)]`` feed the exported
    function (with the records' indices and the epoch); ``outputs`` ``[(feature, kind, detail)]``
    in order, detail being the position among its results (computed), the input feature
    (passed) or the value (constant). ``file`` is None when nothing is computed."""

    operators: tuple[str, ...]
    file: FileRef | None
    inputs: tuple[tuple[str, np.dtype, tuple[int, ...]], ...]
    outputs: tuple[tuple[str, str, Any], ...]


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A validated ``transform.json``."""

    raw: dict[str, Any]
    steps: tuple[HostStep | JaxStep, ...]
    input: tuple[dict[str, Any], ...]
    output: tuple[dict[str, Any], ...]
    dropped: tuple[dict[str, Any], ...]
    platforms: tuple[str, ...]
    statistics: FileRef | None
    shardset: dict[str, Any] | None


class _Check:
    """Typed access to one JSON object of the manifest; errors name ``where.field`` and the value."""

    def __init__(self, source: str, where: str, d: Any):
        self.source, self.where = source, where
        if not isinstance(d, dict):
            self.fail(where, d, "a JSON object")
        self.d = d

    def fail(self, field: str, value: Any, expected: str):
        what = f"field {field!r}" if field else "the manifest"
        raise TransformFormatError(f"{self.source}: {what} is {value!r:.200}; expected {expected}")

    def field(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, types, expected: str, *, optional: bool = False) -> Any:
        if key not in self.d:
            if optional:
                return None
            raise TransformFormatError(f"{self.source}: field {self.field(key)!r} is missing")
        value = self.d[key]
        if optional and value is None:
            return None
        if isinstance(value, types) and (bool in _tuple(types) or not isinstance(value, bool)):
            return value
        self.fail(self.field(key), value, expected)

    def obj(self, key: str, *, optional: bool = False) -> _Check | None:
        value = self.get(key, dict, "a JSON object", optional=optional)
        return None if value is None else _Check(self.source, self.field(key), value)

    def items(self, key: str) -> list[_Check]:
        values = self.get(key, list, "a JSON list")
        return [_Check(self.source, f"{self.field(key)}[{i}]", v) for i, v in enumerate(values)]

    def file(self, key: str, *, optional: bool = False) -> FileRef | None:
        ref = self.obj(key, optional=optional)
        if ref is None:
            return None
        path = ref.get("path", str, "a relative path inside the transform directory")
        parts = path.split("/")
        if not all(_PART.match(p) and p not in (".", "..") for p in parts):
            ref.fail(ref.field("path"), path, "a relative path inside the transform directory "
                     "(parts of letters, digits, '_', '.', '-'; no '..')")
        sha = ref.get("sha256", str, "a lowercase hex SHA-256")
        if not _SHA256.match(sha):
            ref.fail(ref.field("sha256"), sha, "a lowercase hex SHA-256")
        return FileRef(path, sha)


def _tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def _shape(c: _Check, key: str) -> tuple[int, ...]:
    shape = c.get(key, list, "a list of ints >= 0")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        c.fail(c.field(key), shape, "a list of ints >= 0")
    return tuple(shape)


def _dtype(c: _Check, key: str) -> np.dtype:
    text = c.get(key, str, "a numpy dtype string such as '<f4'")
    try:
        dtype = np.dtype(text)
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in cols.NUMERIC_KINDS:
        c.fail(c.field(key), text, "a numeric numpy dtype string such as '<f4'")
    return dtype


def _features(c: _Check, key: str) -> tuple[dict[str, Any], ...]:
    out = []
    for f in c.items(key):
        f.get("name", str, "a feature name")
        kind = f.get("kind", str, f"one of {FEATURE_KINDS}")
        if kind not in FEATURE_KINDS:
            f.fail(f.field("kind"), kind, f"one of {FEATURE_KINDS}")
        if kind in ("tensor", "ragged"):
            _dtype(f, "dtype")
        if kind == "tensor":
            _shape(f, "shape")
        out.append(dict(f.d))
    return tuple(out)


def _constant(c: _Check, key: str) -> Any:
    v = c.obj(key)
    if v.d == {"none": True}:
        return None
    if set(v.d) == {"str"}:
        return v.get("str", str, "a string")
    if set(v.d) == {"bytes_latin1"}:
        return v.get("bytes_latin1", str, "a latin-1 string").encode("latin-1")
    return v.fail(v.where, v.d, "{'none': true}, {'str': ...} or {'bytes_latin1': ...}")


def _jax_step(s: _Check) -> JaxStep:
    operators = s.get("operators", list, "a list of operator names")
    inputs = []
    for f in s.items("inputs"):
        inputs.append((f.get("name", str, "a feature name"), _dtype(f, "dtype"), _shape(f, "shape")))
    outputs, computed = [], 0
    for o in s.items("outputs"):
        name = o.get("name", str, "a feature name")
        kind = o.get("kind", str, f"one of {OUTPUT_KINDS}")
        if kind == "computed":
            position = o.get("position", int, "an int")
            if position != computed:
                o.fail(o.field("position"), position, f"{computed} (computed outputs in order)")
            outputs.append((name, kind, position))
            computed += 1
        elif kind == "passed":
            outputs.append((name, kind, o.get("from", str, "a feature name")))
        elif kind == "constant":
            outputs.append((name, kind, _constant(o, "value")))
        else:
            o.fail(o.field("kind"), kind, f"one of {OUTPUT_KINDS}")
    file = s.file("file", optional=True)
    if computed and file is None:
        s.fail(s.field("file"), None, "the exported function's file (the step computes outputs)")
    return JaxStep(tuple(str(o) for o in operators), file, tuple(inputs), tuple(outputs))


def _host_step(s: _Check) -> HostStep:
    operator = s.get("operator", str, f"one of {sorted(HOST_OPERATORS)}")
    if operator not in HOST_OPERATORS:
        s.fail(s.field("operator"), operator, f"one of {sorted(HOST_OPERATORS)}")
    files = s.obj("files")
    refs = {}
    for name in files.d:
        if not _PART.match(name):
            files.fail(files.field(name), name, "a plain file name")
        refs[name] = files.file(name)
    return HostStep(s.get("name", str, "an operator name"), operator, dict(s.obj("config").d), refs)


def parse_manifest(d: Any, source: str = MANIFEST) -> Manifest:
    """Validates a manifest (the parsed JSON) whole; raises `TransformFormatError`."""
    c = _Check(source, "", d)
    fmt = c.get("format", str, f"{FORMAT!r}")
    if fmt != FORMAT:
        c.fail("format", fmt, f"{FORMAT!r} (this is not an exported datarax_beam transform)")
    version = c.get("format_version", int, f"{FORMAT_VERSION}")
    if version != FORMAT_VERSION:
        c.fail("format_version", version, f"{FORMAT_VERSION}: this version of datarax_beam reads transform "
               f"format {FORMAT_VERSION} only (export it again with this version, or load it with the "
               f"version that wrote it)")
    platforms = c.get("platforms", list, "a list of platform names such as ['cpu', 'cuda']")
    if not platforms or not all(isinstance(p, str) for p in platforms):
        c.fail("platforms", platforms, "a non-empty list of platform names such as ['cpu', 'cuda']")
    steps = []
    for s in c.items("steps"):
        kind = s.get("kind", str, "'host' or 'jax'")
        if kind == "jax":
            steps.append(_jax_step(s))
        elif kind == "host":
            steps.append(_host_step(s))
        else:
            s.fail(s.field("kind"), kind, "'host' or 'jax'")
    dropped = tuple(dict(x.d) for x in c.items("dropped"))
    shardset = c.obj("shardset", optional=True)
    return Manifest(d, tuple(steps), _features(c, "input"), _features(c, "output"), dropped,
                    tuple(platforms), c.file("statistics", optional=True),
                    None if shardset is None else dict(shardset.d))


def read_manifest(directory: str) -> Manifest:
    """Reads and validates ``directory/transform.json``."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory!r} holds no exported transform ({MANIFEST} is missing)")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        d = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TransformFormatError(f"{path}: not valid JSON: {err}") from None
    return parse_manifest(d, path)


def step_json(step: HostStep | JaxStep) -> dict[str, Any]:
    """A step as manifest JSON (the inverse of the step parsers)."""
    if isinstance(step, HostStep):
        return {"kind": "host", "name": step.name, "operator": step.operator, "config": step.config,
                "files": {k: dataclasses.asdict(v) for k, v in step.files.items()}}
    outputs = []
    for name, kind, detail in step.outputs:
        key, value = {"computed": ("position", detail), "passed": ("from", detail)}.get(
            kind, ("value", encode_constant(detail) if kind == "constant" else detail))
        outputs.append({"name": name, "kind": kind, key: value})
    return {"kind": "jax", "operators": list(step.operators),
            "file": None if step.file is None else dataclasses.asdict(step.file),
            "inputs": [{"name": n, "dtype": d.str, "shape": list(s)} for n, d, s in step.inputs],
            "outputs": outputs}


def plain_json(value: Any) -> Any:
    """Checks that a host operator's settings are plain JSON (no objects sneak in)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: plain_json(v) for k, v in value.items()}
    raise TypeError(f"not plain JSON: {type(value).__name__} {value!r:.80}")
