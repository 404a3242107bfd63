"""`load_transform`: an exported transform as a function over batches of raw records.

The transform runs its steps in order, as the kernel ran the chain: a host step is the built-in
operator rebuilt from its settings and files (`HostSegment`, threaded as in the kernel); a JAX
step is the deserialized ``jax.export`` function, called on pieces of at most `MAX_PIECE` records,
each padded to a power of two by repeating its last record (so one batch size of any value costs
at most a few compilations per step). Neither Apache Beam nor the source libraries are imported,
nor the operators' Python code: the JAX steps are StableHLO.

Example:
  >>> import tempfile, numpy as np
  >>> from datarax_beam import export_transform, from_source
  >>> from datarax_beam.operators.statistics import Normalize
  >>> from datarax_beam.sources import MemorySource
  >>> path = tempfile.mkdtemp() + "/t"
  >>> _ = export_transform(from_source(MemorySource(data={"x": np.arange(4.0)}), 2) >> Normalize("x"), path)
  >>> t = load_transform(path)
  >>> t.input_features, t.output_features[0]["dtype"]   # float64 in, float32 out (x64 off)
  ([{'name': 'x', 'kind': 'tensor', 'dtype': '<f8', 'shape': []}], '<f4')
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.kernels.device import host_column, narrow, narrowed_dtype
from datarax_beam.kernels.host import HostSegment, _Pool, default_threads
from datarax_beam.serving import format as fmt

#: Records per call of an exported function (a power of two); longer batches are cut.
MAX_PIECE = 1024
SERVING_EXTRA = "pip install 'datarax_beam[serving]'"


def read_file(directory: str, ref: fmt.FileRef) -> bytes:
    """A file of the transform, checked against its recorded SHA-256."""
    path = os.path.join(directory, *ref.path.split("/"))
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise fmt.TransformFormatError(f"{directory}: the manifest names {ref.path!r}, which is missing") from None
    got = hashlib.sha256(data).hexdigest()
    if got != ref.sha256:
        raise fmt.TransformFormatError(f"{path}: SHA-256 is {got}; the manifest records {ref.sha256} "
                                       f"(the file changed or is corrupt)")
    return data


def deserialize(data: bytes, where: str):
    """A ``jax.export.Exported`` from its serialization."""
    try:
        from jax import export as jax_export

        return jax_export.deserialize(bytearray(data))
    except ImportError as err:
        raise ImportError(f"Loading an exported transform needs `flatbuffers`: {SERVING_EXTRA} ({err})") from err
    except Exception as err:  # noqa: BLE001 - flatbuffers reports corrupt input in many ways
        raise fmt.TransformFormatError(
            f"{where}: not a jax.export serialization that JAX {jax.__version__} reads: "
            f"{type(err).__name__}: {err}") from None


def device_platform(device: Any) -> str:
    """The ``jax.export`` platform name of a device ("cpu", "cuda", "rocm", "tpu")."""
    platform = device.platform
    if platform == "gpu":
        version = str(getattr(device.client, "platform_version", "")).lower()
        return "rocm" if "rocm" in version else "cuda"
    return platform


def _bucket(m: int) -> int:
    return min(MAX_PIECE, 1 << max(m - 1, 0).bit_length())


def _pad(column: np.ndarray, size: int) -> np.ndarray:
    m = len(column)
    if m == size:
        return column
    return np.concatenate([column, np.repeat(column[-1:], size - m, axis=0)])


class JaxRunner:
    """Runs one JAX step: its exported function over the step's input features."""

    def __init__(self, step: fmt.JaxStep, exported, device, where: str):
        self.step, self.device = step, device
        self._call = None
        if exported is not None:
            _check_exported(step, exported, where)
            self._call = jax.jit(exported.call)

    def run(self, batch: Mapping[str, Any], indices: np.ndarray, on_device: bool = False) -> dict[str, Any]:
        n, step = len(indices), self.step
        pieces = []
        if self._call is not None:
            args = [self._input(name, dtype, shape, batch, indices) for name, dtype, shape in step.inputs]
            idx32 = np.asarray(indices).astype(np.int32)
            epoch = jax.device_put(np.int32(0), self.device)
            for start in range(0, n, MAX_PIECE):
                m = min(MAX_PIECE, n - start)
                size = _bucket(m)
                values = jax.device_put([_pad(a[start:start + m], size) for a in args], self.device)
                index = jax.device_put(_pad(idx32[start:start + m], size), self.device)
                pieces.append((self._call(values, index, epoch), m))
        out = {}
        for name, kind, detail in step.outputs:
            if kind == "computed":
                out[name] = _gather([(outs[detail], m) for outs, m in pieces], on_device)
            elif kind == "passed":
                if detail in batch:  # a feature left out of the batch (a label) stays out
                    out[name] = batch[detail]
            else:
                out[name] = cols.object_column([detail] * n)
        return out

    def _input(self, name: str, dtype: np.dtype, shape: tuple, batch, indices) -> np.ndarray:
        who = f"the JAX operators {list(self.step.operators)}"
        if name not in batch:
            raise KeyError(f"Feature {name!r} is read by {who}, but the batch has only {sorted(batch)}")
        col = host_column(batch[name])
        if not cols.is_numeric_column(col):
            raise TypeError(f"Feature {name!r} is read by {who} as {dtype}{list(shape)} per record; the batch "
                            f"holds {fmt.describe_column(name, col)}")
        if tuple(col.shape[1:]) != shape:
            raise ValueError(f"Feature {name!r} is read by {who} with per-record shape {list(shape)}; the batch "
                             f"holds shape {list(col.shape[1:])} (the transform was exported for that shape)")
        if col.dtype == dtype:
            return col
        if np.can_cast(col.dtype, dtype, "safe"):
            return col.astype(dtype)
        if col.dtype.kind == dtype.kind and narrowed_dtype(col.dtype) == dtype:
            return narrow(name, col, indices)  # as the kernel does; refuses values that would not survive
        raise TypeError(f"Feature {name!r} is read by {who} as {dtype}; the batch holds {col.dtype}, which does "
                        f"not convert without loss")


def _gather(pieces, on_device: bool):
    if on_device:
        parts = [a if m == len(a) else jax.lax.slice_in_dim(a, 0, m) for a, m in pieces]
        return parts[0] if len(parts) == 1 else jax.numpy.concatenate(parts)
    parts = [np.asarray(a)[:m] for a, m in pieces]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _check_exported(step: fmt.JaxStep, exported, where: str) -> None:
    avals = exported.in_avals
    want = [(d, s) for _, d, s in step.inputs] + [(np.dtype(np.int32), None), (np.dtype(np.int32), ())]
    ok = len(avals) == len(want) and all(
        np.dtype(a.dtype) == d and (s is None or tuple(a.shape[1:]) == s) for a, (d, s) in zip(avals, want, strict=True))
    computed = sum(1 for _, kind, _ in step.outputs if kind == "computed")
    if not ok or len(exported.out_avals) != computed:
        raise fmt.TransformFormatError(
            f"{where}: the exported function takes {[str(a) for a in avals]} and returns {len(exported.out_avals)} "
            f"arrays; the manifest's step says inputs {[(n, d.str, list(s)) for n, d, s in step.inputs]} "
            f"(+ index, epoch) and {computed} computed outputs")


class HostRunner:
    """Runs one host step: the built-in operator rebuilt from its settings and files."""

    def __init__(self, op, pool: _Pool):
        self.op = op
        self._segment = HostSegment(op, pool, None)

    def run(self, batch: Mapping[str, Any], indices: np.ndarray, on_device: bool = False) -> dict[str, Any]:
        return self._segment.run(batch, indices, 0)


def rebuild_host_operator(step: fmt.HostStep, files: dict[str, bytes], where: str):
    """The built-in operator of a host step (only those of `format.HOST_OPERATORS`)."""
    module, name = fmt.HOST_OPERATORS[step.operator]
    cls = getattr(importlib.import_module(module), name)
    try:
        return cls.from_config(dict(step.config), files)
    except (TypeError, ValueError, KeyError) as err:
        raise fmt.TransformFormatError(
            f"{where}: {step.operator} {step.name!r} cannot be rebuilt from its config "
            f"{step.config!r:.300}: {type(err).__name__}: {err}") from None


class Transform:
    """An exported preprocessing transform: ``transform(batch) -> batch`` over raw records.

    ``batch`` is a dict of columns, one value per record in each: numpy arrays, lists, or object
    arrays of bytes / str. Features the chain only passes through (a label) may be left out: they
    are then absent from the output too; a feature the transform does not know is an error.

    Attributes:
      input_features, output_features: the schema (``{"name", "kind", "dtype", "shape"}`` dicts)
        of the raw records and of the output, as seen when the transform was exported.
      dropped: the stochastic (training-only) operators left out of the export.
      manifest: the validated manifest.
    """

    def __init__(self, directory: str, manifest: fmt.Manifest, runners: Sequence[Any], device, output: str):
        self.directory, self.manifest, self.device = directory, manifest, device
        self._runners, self._output = list(runners), output
        self._inputs = {f["name"]: f for f in manifest.input}

    @property
    def input_features(self) -> list[dict[str, Any]]:
        return [dict(f) for f in self.manifest.input]

    @property
    def output_features(self) -> list[dict[str, Any]]:
        return [dict(f) for f in self.manifest.output]

    @property
    def dropped(self) -> list[dict[str, Any]]:
        return [dict(d) for d in self.manifest.dropped]

    @property
    def statistics(self):
        """The statistics baked into the transform (`datarax_beam.statistics.Statistics`)."""
        import json

        from datarax_beam.statistics import Statistics

        ref = self.manifest.statistics
        if ref is None:
            return Statistics({})
        return Statistics.from_json(json.loads(read_file(self.directory, ref).decode("utf-8")))

    def __repr__(self) -> str:
        return (f"Transform({self.directory!r}, inputs={[f['name'] for f in self.manifest.input]}, "
                f"outputs={[f['name'] for f in self.manifest.output]})")

    def __call__(self, batch: Mapping[str, Any], indices: Sequence[int] | np.ndarray | None = None) -> dict[str, Any]:
        """Applies the transform to every record of ``batch``.

        ``indices`` are the records' indices as operators see them (``metadata.index``); they
        matter only to operators that read it (default ``0 .. n-1``). The epoch is 0.
        """
        columns, n = self._columns(batch)
        if indices is None:
            indices = np.arange(n, dtype=np.int64)
        indices = np.asarray(indices)
        if indices.shape != (n,) or indices.dtype.kind not in "iu":
            raise ValueError(f"`indices` must be {n} integers (one per record), got {indices.dtype}{list(indices.shape)}")
        if n == 0:
            return columns
        on_device = self._output == "jax"
        for runner in self._runners:
            columns = runner.run(columns, indices.astype(np.int64), on_device)
        if on_device:
            return {k: jax.device_put(v, self.device) if isinstance(v, np.ndarray) and cols.is_numeric_column(v)
                    and narrowed_dtype(v.dtype) == v.dtype else v for k, v in columns.items()}
        return {k: host_column(v) for k, v in columns.items()}

    def _columns(self, batch: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
        if not isinstance(batch, Mapping):
            raise TypeError(f"A transform takes a dict of columns (feature -> values), got {type(batch).__name__}")
        unknown = [k for k in batch if k not in self._inputs]
        if unknown:
            raise ValueError(f"Features {unknown} are not inputs of this transform; it takes "
                             f"{list(self._inputs)} (drop the others, or pass them around the transform)")
        out, n = {}, None
        for name, values in batch.items():
            col = _column(self._inputs[name], values)
            if n is None:
                n = len(col)
            elif len(col) != n:
                raise ValueError(f"Feature {name!r} has {len(col)} values; {next(iter(out))!r} has {n} "
                                 f"(every column holds one value per record)")
            out[name] = col
        return out, n or 0


def _column(spec: Mapping[str, Any], values: Any) -> Any:
    name, kind = spec["name"], spec["kind"]
    if isinstance(values, jax.Array):
        values = np.asarray(values)
    if isinstance(values, np.ndarray):
        if values.ndim == 0:
            raise ValueError(f"Feature {name!r} must be a column (one value per record), got a scalar {values!r}")
        if values.dtype.kind in "US" and kind != "tensor":
            return cols.object_column(values.tolist())
        return values
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"Feature {name!r} must be a numpy array or a list (one value per record), got "
                        f"{type(values).__name__}")
    if kind == "tensor":
        try:
            return np.asarray(values, dtype=np.dtype(spec["dtype"]))
        except (ValueError, TypeError, OverflowError) as err:
            raise ValueError(f"Feature {name!r}: cannot make {spec['dtype']} values of per-record shape "
                             f"{spec['shape']} from the list given: {err}") from None
    return cols.object_column(list(values))


def _open(path: str) -> tuple[str, fmt.Manifest]:
    """The transform directory of ``path`` (a transform, or a shard set holding one) and its manifest."""
    from datarax_beam.shards.shardset import SHARDSET_FILE, load_shardset

    if not os.path.isfile(os.path.join(path, SHARDSET_FILE)):
        return path, fmt.read_manifest(path)
    shardset = load_shardset(path)
    directory = os.path.join(path, fmt.SHARDSET_DIR)
    if not os.path.isfile(os.path.join(directory, fmt.MANIFEST)):
        raise FileNotFoundError(f"Shard set {path!r} holds no exported transform (materialize it with "
                                f"export_transform=True, or export_transform(pipeline, path, statistics={path!r}))")
    manifest = fmt.read_manifest(directory)
    recorded = (manifest.shardset or {}).get("job_id")
    if shardset.job_id is not None and recorded != shardset.job_id:
        raise fmt.TransformFormatError(
            f"{os.path.join(directory, fmt.MANIFEST)}: field 'shardset.job_id' is {recorded!r}, but the shard set "
            f"was committed by job {shardset.job_id!r}: this transform belongs to another run")
    return directory, manifest


def load_transform(path: str | os.PathLike, *, device: Any = None, output: str = "numpy",
                   threads: int | None = None) -> Transform:
    """Loads an exported transform (`datarax_beam.export_transform`) as a function over batches.

    Args:
      path: a transform directory, or a materialized shard set holding one (``transform/``).
      device: the ``jax.Device`` the JAX steps run on (default: JAX's default device); CPU or GPU.
      output: ``"numpy"`` (default): numpy columns; ``"jax"``: numeric features as ``jax.Array``s
        on ``device`` (text and bytes stay object arrays).
      threads: threads for host steps (default: the usable cores, at most 8).

    Raises:
      FileNotFoundError: nothing exported at ``path``.
      TransformFormatError: an unknown format version, a malformed manifest, a changed file;
        the message names the field (or file) and the value.

    Example:
      >>> import tempfile, numpy as np
      >>> from datarax_beam import export_transform, from_source
      >>> from datarax_beam.operators.statistics import Normalize
      >>> from datarax_beam.sources import MemorySource
      >>> src = MemorySource(data={"x": np.arange(8, dtype=np.float32)})
      >>> path = tempfile.mkdtemp() + "/t"
      >>> _ = export_transform(from_source(src, 4) >> Normalize("x", axes="all"), path)
      >>> load_transform(path)({"x": [3.5]})["x"].tolist()   # (x - mean) / (std + eps)
      [0.0]
    """
    if output not in ("numpy", "jax"):
        raise ValueError(f"`output` must be 'numpy' or 'jax', got {output!r}")
    directory, manifest = _open(os.fspath(path))
    device = jax.devices()[0] if device is None else device
    platform = device_platform(device)
    if platform not in manifest.platforms:
        raise ValueError(f"The transform at {directory!r} was exported for platforms {list(manifest.platforms)}; "
                         f"device {device} is {platform!r}")
    pool = _Pool(threads or default_threads())
    runners = []
    for i, step in enumerate(manifest.steps):
        where = f"{os.path.join(directory, fmt.MANIFEST)} steps[{i}]"
        if isinstance(step, fmt.HostStep):
            files = {k: read_file(directory, ref) for k, ref in step.files.items()}
            runners.append(HostRunner(rebuild_host_operator(step, files, where), pool))
        else:
            exported = None
            if step.file is not None:
                exported = deserialize(read_file(directory, step.file), os.path.join(directory, step.file.path))
            runners.append(JaxRunner(step, exported, device, where))
    return Transform(directory, manifest, runners, device, output)
