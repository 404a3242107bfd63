"""The transform of a materialized shard set (what ``materialize(..., export_transform=...)`` does).

`transform_target` runs before the job: it validates the argument, resolves where the transform
goes (``output_dir/transform/``, or a local directory given), and refuses a chain with a host
operator that cannot be exported before a single record is processed. `export_next_to` runs once
the shard set is committed: it exports the chain with the statistics the job computed, so the
transform reproduces the shards' records exactly, and records the set's job id in the manifest
(`load_transform` of the shard set refuses a transform left by another run).

Example:
  >>> import tempfile, numpy as np
  >>> from datarax_beam import from_source, load_transform, materialize
  >>> from datarax_beam.operators.statistics import Normalize
  >>> from datarax_beam.sources import MemorySource
  >>> chain = from_source(MemorySource(data={"x": np.arange(8, dtype=np.float32)}), 4) >> Normalize("x", axes="all")
  >>> out = tempfile.mkdtemp() + "/set"
  >>> _ = export_next_to(chain, materialize(chain, out))    # out/transform/, next to the shards
  >>> load_transform(out)({"x": [3.5]})["x"].tolist()
  [0.0]
"""

from __future__ import annotations

import os
from typing import Any

from datarax_beam.dag.pipeline import Pipeline
from datarax_beam.serving import format as fmt
from datarax_beam.serving.export import PLATFORMS, build, host_class, remove, write
from datarax_beam.serving.load import Transform, load_transform


def _local(value: str, what: str) -> str:
    if "://" in value:
        raise ValueError(f"{what} must be a local directory, got {value!r}")
    return os.path.abspath(value)


def transform_target(pipeline: Pipeline, output_dir: str, export: bool | str | os.PathLike | None) -> str | None:
    """Where ``materialize`` exports the transform: None (``export`` False), ``output_dir/transform``
    (True), or the local directory ``export``; checked before the job runs.

    Raises:
      TypeError, ValueError: ``export`` is neither a bool nor a local path; True with a remote
        ``output_dir``.
      FileExistsError: the directory is a file, or holds other things than a transform.
      ExportError: a host operator of the chain cannot be exported (named).
    """
    if export is None or export is False:
        return None
    if export is True:
        if "://" in output_dir:
            raise ValueError(f"`export_transform=True` writes the transform next to the shards, in a local "
                             f"`output_dir`; got {output_dir!r}: pass export_transform='a/local/directory'")
        target = os.path.join(output_dir, fmt.SHARDSET_DIR)
    elif isinstance(export, (str, os.PathLike)) and os.fspath(export):
        target = _local(os.fspath(export), "`export_transform`")
    else:
        raise TypeError(f"`export_transform` must be a bool or a local directory, got {type(export).__name__} "
                        f"{export!r}")
    if os.path.exists(target) and not (os.path.isdir(target) and (
            not os.listdir(target) or os.path.isfile(os.path.join(target, fmt.MANIFEST)))):
        raise FileExistsError(f"`export_transform` directory {target!r} is a file or holds other things than an "
                              f"exported transform; choose a new path")
    for position, op in enumerate(pipeline.operators):
        if op.on_host and not op.stochastic:
            host_class(position, op)  # before the job, not after it
    return target


def export_next_to(pipeline: Pipeline, shardset: Any, path: str | os.PathLike | None = None) -> Transform:
    """Exports ``pipeline``'s transform for the committed ``shardset`` (a `ShardSet`), baking in
    the statistics the job computed, to ``path`` (default: ``shardset.path/transform/``, where
    `load_transform` of the shard set finds it); a transform already there is replaced.

    Returns:
      the written transform, loaded.

    Raises:
      ExportError: an operator cannot be exported (named); the message says the shard set itself
        is committed. A transform left next to the shard set by an earlier run is removed.
    """
    if path is None and "://" in shardset.path:
        raise ValueError(f"The transform of a remote shard set ({shardset.path}) cannot be written next to it; "
                         f"pass a local `path`")
    default = os.path.join(shardset.path, fmt.SHARDSET_DIR)
    target = default if path is None else _local(os.fspath(path), "`path`")
    next_to = target == default
    if shardset.statistics:
        pipeline = pipeline.with_statistics(shardset.statistics)
    try:
        manifest, files = build(pipeline, PLATFORMS, {"job_id": shardset.job_id, "fingerprint": shardset.fingerprint})
    except fmt.ExportError as err:
        if next_to:
            remove(target)
        raise fmt.ExportError(f"The shard set at {shardset.path!r} is committed, but its transform cannot be "
                              f"exported: {err}") from err
    write(target, manifest, files, overwrite=True)
    return load_transform(target)
