"""`export_transform`: the deterministic part of a pipeline's chain, written for serving.

The chain is taken with its statistics bound (full-pass statistics and vocabularies become
constants), stochastic operators are left out (training-only; listed in the manifest), and the
rest is cut as the kernel cuts it: each built-in host operator becomes a host step (its settings
and files, rebuilt by its ``from_config`` when loaded), each run of JAX operators one
``jax.export`` function (StableHLO) with a symbolic batch size ``b``, lowered for CPU and CUDA.
The first records of the source fix the input schema; they are run through the exported steps
(as the loader will run them) to fix the output schema.

Example:
  >>> import tempfile, numpy as np
  >>> from datarax_beam import from_source
  >>> from datarax_beam.operators.statistics import Normalize
  >>> from datarax_beam.sources import MemorySource
  >>> chain = from_source(MemorySource(data={"x": np.arange(4, dtype=np.float32)}), 2) >> Normalize("x", axes="all")
  >>> manifest, files = build(chain)   # what export_transform writes
  >>> [s["kind"] for s in manifest["steps"]], sorted(files)
  (['jax'], ['statistics.json', 'steps/00.jax'])
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.dag.order import epoch_records
from datarax_beam.dag.pipeline import Pipeline
from datarax_beam.kernels.device import host_column
from datarax_beam.kernels.host import _Pool, default_threads
from datarax_beam.kernels.opaque import NeedsRecordPath
from datarax_beam.kernels.segments import signature
from datarax_beam.kernels.trace import TraceInfo, chain_function, live_inputs
from datarax_beam.serving import format as fmt
from datarax_beam.serving.load import (
    SERVING_EXTRA,
    HostRunner,
    JaxRunner,
    Transform,
    deserialize,
    device_platform,
    load_transform,
    read_file,
)
from datarax_beam.version import __version__

#: Platforms the JAX steps are lowered for: the transform runs on CPU or an NVIDIA GPU.
PLATFORMS = ("cpu", "cuda")
#: Records of the source that fix the input and output schema.
SAMPLE_RECORDS = 64


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sample(pipeline: Pipeline) -> dict[str, Any]:
    source = pipeline.source
    if source.is_random_access:
        n = min(len(source), SAMPLE_RECORDS)
        batch = dict(source.get_batch(np.arange(n, dtype=np.int64))) if n else {}
    else:
        state = source.get_state()
        try:
            records = [e.data for _, e in itertools.islice(epoch_records(source, 0), SAMPLE_RECORDS)]
        finally:
            source.set_state(state)
        batch = cols.columns_from_records(records)
    if not batch or not cols.num_rows(batch):
        raise ValueError(f"Source {source.name!r} yields no record; the export needs a few to fix the input schema")
    return batch


def _groups(kept: Sequence[tuple[int, Any]]) -> list[list[tuple[int, Any]]]:
    """Host operators alone, consecutive JAX operators together (as the kernel cuts a chain)."""
    groups, run = [], []
    for item in kept:
        if item[1].on_host:
            if run:
                groups.append(run)
                run = []
            groups.append([item])
        else:
            run.append(item)
    return groups + ([run] if run else [])


def host_class(position: int, op) -> type:
    """The built-in class of host operator ``op`` (at ``position`` in the chain).

    Raises:
      ExportError: ``op`` runs Python code (not one of `format.HOST_OPERATORS`, or a subclass).
    """
    kind = type(op).__name__
    entry = fmt.HOST_OPERATORS.get(kind)
    cls = getattr(importlib.import_module(entry[0]), entry[1]) if entry else None
    if cls is None or type(op) is not cls:
        fn = getattr(op, "fn", None)
        code = f" (fn={getattr(fn, '__qualname__', type(fn).__name__)})" if fn is not None else ""
        raise fmt.ExportError(
            f"Operator {op.name!r} (position {position}, {kind}{code}) runs Python code on the host, which "
            f"cannot be exported: only the built-in host operators {sorted(fmt.HOST_OPERATORS)} export, as "
            f"data. Export a chain without it (apply it in the serving code), or write it as a JAX operator")
    return cls


def _host_step(k: int, position: int, op, files: dict[str, bytes]):
    cls, kind = host_class(position, op), type(op).__name__
    config, op_files = op.to_config()
    config = fmt.plain_json(config)
    refs = {}
    for name, data in op_files.items():
        rel = f"steps/{k:02d}/{name}"
        files[rel] = bytes(data)
        refs[name] = fmt.FileRef(rel, _sha(files[rel]))
    step = fmt.HostStep(op.name, kind, config, refs)
    return step, cls.from_config(config, dict(op_files))  # what the loader will run


def _symbolic_specs(fed, size):
    values = [jax.ShapeDtypeStruct((size, *f[2]), np.dtype(f[3])) for f in fed]
    return values, jax.ShapeDtypeStruct((size,), np.int32), jax.ShapeDtypeStruct((), np.int32)


def _trace(group, batch, info: TraceInfo, dead=frozenset()):
    ops = [op for _, op in group]
    return chain_function(ops, (None,) * len(ops), signature(batch, 1), info, dead)


def _export(group, batch, platforms, info: TraceInfo):
    """``(exported, fed)`` of a run of JAX operators; raises what tracing or lowering raises."""
    from jax import export as jax_export

    fn, fed = _trace(group, batch, info)
    jaxpr = jax.jit(fn).trace(*_symbolic_specs(fed, 1)).jaxpr.jaxpr  # which inputs are read
    live = live_inputs(jaxpr, len(fed))
    fn, fed = _trace(group, batch, info, frozenset(f[0] for i, f in enumerate(fed) if i not in live))
    (size,) = jax_export.symbolic_shape("b")
    return jax_export.export(jax.jit(fn), platforms=tuple(platforms))(*_symbolic_specs(fed, size)), fed


def _culprit(group, batch, platforms) -> str:
    """Which operator of a segment that failed to lower fails alone (an error path only)."""
    from datarax_beam.kernels import ChainKernel

    indices = np.arange(cols.num_rows(batch))
    for position, op in group:
        try:
            _export([(position, op)], batch, platforms, TraceInfo())
        except Exception:  # noqa: BLE001 - this one fails alone: name it
            return f"Operator {op.name!r} (position {position}, {type(op).__name__})"
        batch = ChainKernel([op])(batch, indices)
    return f"The JAX segment {[op.name for _, op in group]} (positions {[p for p, _ in group]})"


def _jax_step(k: int, group, batch: Mapping[str, Any], platforms: Sequence[str], files: dict[str, bytes]):
    names = tuple(op.name for _, op in group)
    info = TraceInfo()
    try:
        exported, fed = _export(group, batch, platforms, info)
    except NeedsRecordPath as need:
        position, op = group[max(info.failed_at, 0)]
        raise fmt.ExportError(
            f"Operator {op.name!r} (position {position}, {type(op).__name__}) uses the value of {need.kind} "
            f"feature {need.feature!r} ({need.use}) in JAX, which runs only on the per-record path and cannot "
            f"be exported. Use a built-in host operator for it (e.g. VocabularyLookup, Tokenize), or pad "
            f"ragged features to a fixed shape first"
        ) from None
    except Exception as exc:  # noqa: BLE001 - re-raised naming the operator
        if info.failed_at >= 0:
            position, op = group[info.failed_at]
            who = f"Operator {op.name!r} (position {position}, {type(op).__name__}) failed while traced and"
        else:
            who = _culprit(group, batch, platforms)
        raise fmt.ExportError(
            f"{who} could not be exported with a symbolic batch size for platforms {list(platforms)}: "
            f"{type(exc).__name__}: {exc}") from exc
    try:
        blob = bytes(exported.serialize())
    except ImportError as err:
        raise ImportError(f"Exporting a transform needs `flatbuffers`: {SERVING_EXTRA} ({err})") from err
    outputs = tuple(info.outputs)
    computed = any(kind == "computed" for _, kind, _ in outputs)
    file = None
    if computed:
        rel = f"steps/{k:02d}.jax"
        files[rel] = blob
        file = fmt.FileRef(rel, _sha(blob))
    inputs = tuple((f[0], np.dtype(f[3]), tuple(f[2])) for f in fed)
    step = fmt.JaxStep(names, file, inputs, outputs)
    return step, (deserialize(blob, f"step {k}") if computed else None)


def build(pipeline: Pipeline, platforms: Sequence[str] = PLATFORMS,
          shardset: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and files of ``pipeline``'s transform (nothing written yet).

    Raises:
      ExportError: an operator that cannot be exported (named).
    """
    platforms = tuple(platforms)
    if not platforms or not all(p in ("cpu", "cuda", "rocm", "tpu") for p in platforms):
        raise ValueError(f"`platforms` must name some of 'cpu', 'cuda', 'rocm', 'tpu', got {platforms!r}")
    devices = [*jax.devices("cpu"), *jax.devices()]
    local = {device_platform(d) for d in devices}
    if not local & set(platforms):
        raise ValueError(f"`platforms` {list(platforms)} include none of this machine's ({sorted(local)}): the export "
                         f"runs its steps on a few records to check them and fix the output schema; add "
                         f"{sorted(local)[0]!r}")
    ops = pipeline.bound_operators()
    dropped = [{"name": op.name, "type": type(op).__name__, "position": i, "reason": "stochastic (training only)"}
               for i, op in enumerate(ops) if op.stochastic]
    kept = [(i, op) for i, op in enumerate(ops) if not op.stochastic]
    sample = _sample(pipeline)
    files: dict[str, bytes] = {}
    steps = []
    device = next(d for d in devices if device_platform(d) in platforms)
    pool = _Pool(default_threads())
    batch, indices = dict(sample), np.arange(cols.num_rows(sample), dtype=np.int64)
    try:
        for group in _groups(kept):
            k = len(steps)
            if group[0][1].on_host:
                step, op = _host_step(k, group[0][0], group[0][1], files)
                runner = HostRunner(op, pool)
            else:
                step, exported = _jax_step(k, group, batch, platforms, files)
                runner = JaxRunner(step, exported, device, f"step {k}")
            batch = runner.run(batch, indices)
            steps.append(step)
    finally:
        pool.shutdown()
    stats = pipeline.statistics
    stats_ref = None
    if len(stats):
        files[fmt.STATISTICS] = json.dumps(stats.to_json(), indent=1, sort_keys=True).encode("utf-8")
        stats_ref = {"path": fmt.STATISTICS, "sha256": _sha(files[fmt.STATISTICS])}
    manifest = {
        "format": fmt.FORMAT,
        "format_version": fmt.FORMAT_VERSION,
        "created_by": {"datarax_beam": __version__, "jax": jax.__version__},
        "chain": {"fingerprint": pipeline.fingerprint(), "operators": [op.name for op in ops]},
        "shardset": None if shardset is None else dict(shardset),
        "platforms": list(platforms),
        "input": [fmt.describe_column(k, v) for k, v in sample.items()],
        "output": [fmt.describe_column(k, host_column(v)) for k, v in batch.items()],
        "dropped": dropped,
        "statistics": stats_ref,
        "steps": [fmt.step_json(s) for s in steps],
    }
    fmt.parse_manifest(json.loads(json.dumps(manifest)), "the manifest being written")  # self-check
    return manifest, files


def _local(path: str) -> str:
    if "://" in path:
        raise ValueError(f"Transforms are written to local directories; got {path!r}")
    return os.path.abspath(path)


def remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)


def write(path: str, manifest: Mapping[str, Any], files: Mapping[str, bytes], overwrite: bool) -> None:
    """Writes a transform directory: files, then the manifest, in a temporary directory renamed
    into place (an existing transform is replaced only with ``overwrite``)."""
    path = _local(path)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise FileExistsError(f"{path!r} exists and is not a directory")
        if os.path.exists(os.path.join(path, fmt.MANIFEST)):
            if not overwrite:
                raise FileExistsError(f"{path!r} already holds an exported transform; pass overwrite=True")
        elif os.listdir(path):
            raise FileExistsError(f"{path!r} is a non-empty directory that holds no exported transform; "
                                  f"choose a new path")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        for rel, data in files.items():
            target = os.path.join(tmp, *rel.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(data)
        os.makedirs(tmp, exist_ok=True)
        with open(os.path.join(tmp, fmt.MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
        old = None
        if os.path.exists(path):
            old = f"{path}.old-{uuid.uuid4().hex[:12]}"
            os.rename(path, old)
        os.rename(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        remove(tmp)


def export_transform(pipeline: Pipeline | str | os.PathLike, path: str | os.PathLike, *,
                     statistics: Mapping[str, Any] | str | os.PathLike | None = None, overwrite: bool = False,
                     platforms: Sequence[str] = PLATFORMS) -> Transform:
    """Writes the deterministic part of a pipeline's chain to ``path``, for serving.

    Args:
      pipeline: a `Pipeline` (its statistics are computed in-process unless given), or a
        materialized shard-set directory holding its exported transform (``transform/``, written
        by ``materialize(..., export_transform=True)``), which is then copied to ``path``.
      path: a new (or empty) local directory.
      statistics: statistics to bake in instead of analyzing the source (e.g. a materialized
        training set's ``shardset.statistics``, or its directory: the transform then applies
        exactly that training set's normalization and vocabularies).
      overwrite: replace a transform already at ``path``.
      platforms: what the JAX steps are lowered for (default CPU and CUDA).

    Returns:
      the written transform, loaded (`load_transform`).

    Raises:
      ExportError: an operator that cannot be exported: a Python host function, an operator that
        JAX runs only per record; the message names it.

    Example:
      >>> import tempfile, numpy as np
      >>> from datarax_beam import from_source
      >>> from datarax_beam.operators.statistics import Normalize
      >>> from datarax_beam.sources import MemorySource
      >>> src = MemorySource(data={"x": np.arange(8, dtype=np.float32), "y": np.zeros(8, np.int32)})
      >>> t = export_transform(from_source(src, 4) >> Normalize("x", axes="all"), tempfile.mkdtemp() + "/t")
      >>> [f["name"] for f in t.input_features], t({"x": [3.5]})["x"].tolist()
      (['x', 'y'], [0.0])
    """
    path = os.fspath(path)
    if isinstance(pipeline, (str, os.PathLike)):
        if statistics is not None:
            raise ValueError("`statistics` applies to a pipeline; a shard set's transform has its own baked in")
        return _copy(os.fspath(pipeline), path, overwrite)
    if not isinstance(pipeline, Pipeline):
        raise TypeError(f"`pipeline` must be a Pipeline or a shard-set directory, got {type(pipeline).__name__}")
    _local(path)
    if statistics is not None:
        pipeline = pipeline.with_statistics(os.fspath(statistics) if isinstance(statistics, os.PathLike) else statistics)
    manifest, files = build(pipeline, platforms)
    write(path, manifest, files, overwrite)
    return load_transform(path)


def _copy(source: str, path: str, overwrite: bool) -> Transform:
    from datarax_beam.serving.load import _open

    directory, manifest = _open(source)
    refs = [ref for step in manifest.steps for ref in (
        step.files.values() if isinstance(step, fmt.HostStep) else [step.file] if step.file else [])]
    refs += [manifest.statistics] if manifest.statistics is not None else []
    files = {ref.path: read_file(directory, ref) for ref in refs}
    write(path, manifest.raw, files, overwrite)
    return load_transform(path)
