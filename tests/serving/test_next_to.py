"""The transform of a materialized shard set: where it goes and what is refused before the job
(`transform_target`), and the export after the commit (`export_next_to`)."""

from __future__ import annotations

import os
import types

import flax.nnx as nnx
import numpy as np
import pytest

from datarax_beam import load_transform
from datarax_beam.operators import HostOperator, OperatorConfig
from datarax_beam.runners import materialize, options
from datarax_beam.serving import ExportError, export_next_to
from datarax_beam.serving.next_to import transform_target

from .chains import assert_same, clip_x, noise, pipeline, raw_records


def small(n: int = 100):
    return {k: v[:n] for k, v in raw_records().items()}


def identity():
    return HostOperator(lambda b, k: b, name="identity")


def test_transform_target(tmp_path):
    p = pipeline(data=small())
    out = str(tmp_path / "set")
    assert transform_target(p, out, False) is None and transform_target(p, out, None) is None
    assert transform_target(p, out, True) == os.path.join(out, "transform")
    assert transform_target(p, out, tmp_path / "t") == str(tmp_path / "t")
    assert transform_target(p, "gs://b/set", str(tmp_path / "t")) == str(tmp_path / "t")  # a remote set, a local transform
    stochastic_host = HostOperator(lambda b, k: b, OperatorConfig(stochastic=True, stream_name="augment"),
                                   nnx.Rngs(augment=0), name="jitter")
    assert transform_target(pipeline([clip_x(), noise(), stochastic_host], data=small()), out, True)  # dropped


def test_transform_target_errors(tmp_path):
    p = pipeline(data=small())
    out = str(tmp_path / "set")
    with pytest.raises(ValueError, match=r"`export_transform=True` writes the transform next to the shards, in a "
                                         r"local `output_dir`; got 'gs://b/set'"):
        transform_target(p, "gs://b/set", True)
    with pytest.raises(ValueError, match=r"`export_transform` must be a local directory, got 's3://b/t'"):
        transform_target(p, out, "s3://b/t")
    for bad in (1, "", ["t"]):
        with pytest.raises(TypeError, match=r"`export_transform` must be a bool or a local directory, got"):
            transform_target(p, out, bad)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    (tmp_path / "file").write_text("")
    for taken in ("notes", "file"):
        with pytest.raises(FileExistsError, match=rf"directory '.*{taken}' is a file or holds other things"):
            transform_target(p, out, tmp_path / taken)
    with pytest.raises(ExportError, match=r"Operator 'identity' \(position 1, HostOperator \(fn=.*<lambda>\)\) runs "
                                          r"Python code on the host"):
        transform_target(pipeline([clip_x(), identity()], data=small()), out, True)


def test_export_next_to_a_path_and_its_errors(materialized, raw, tmp_path):
    out, _, offline = materialized
    from datarax_beam.shards import load_shardset

    shardset = load_shardset(out)
    t = export_next_to(pipeline(data=small(10)), shardset, tmp_path / "elsewhere")
    assert t.directory == str(tmp_path / "elsewhere") and t.manifest.shardset["job_id"] == shardset.job_id
    assert_same(t({k: v[:20] for k, v in raw.items()}), {k: v[:20] for k, v in offline.items()})
    remote = types.SimpleNamespace(path="gs://bucket/set", statistics={})
    with pytest.raises(ValueError, match=r"remote shard set \(gs://bucket/set\) cannot be written next to it"):
        export_next_to(pipeline(), remote)


def test_a_failed_export_says_the_set_is_committed_and_removes_a_stale_transform(tmp_path):
    p = pipeline([identity()], data=small())
    shardset = materialize(p, str(tmp_path / "set"), options=options.in_process())
    os.makedirs(tmp_path / "set" / "transform")
    (tmp_path / "set" / "transform" / "transform.json").write_text("{}")  # left by an earlier run
    with pytest.raises(ExportError, match=r"The shard set at '.*set' is committed, but its transform cannot be "
                                          r"exported: Operator 'identity' \(position 0, HostOperator"):
        export_next_to(p, shardset)
    assert not os.path.exists(tmp_path / "set" / "transform")  # the stale transform is gone
    with pytest.raises(FileNotFoundError, match=r"holds no exported transform \(materialize it with "
                                                r"export_transform=True"):
        load_transform(str(tmp_path / "set"))


def test_materialize_exports_the_transform_or_refuses_before_the_job(tmp_path):
    data = small()
    p = pipeline(data=data)
    out = str(tmp_path / "set")
    materialize(p, out, options=options.in_process(), export_transform=tmp_path / "serving")
    assert not os.path.exists(os.path.join(out, "transform"))  # only where asked
    with pytest.raises(FileNotFoundError, match="holds no exported transform"):
        load_transform(out)
    from datarax_beam.sources import ArrayRecordSourceModule

    offline = dict(ArrayRecordSourceModule(out).get_batch(np.arange(len(data["x"]))))
    assert_same(load_transform(tmp_path / "serving")(data), offline)
    for bad, error in ((pipeline([clip_x(), identity()], data=data), ExportError), (p, TypeError)):
        with pytest.raises(error, match=r"Operator 'identity'|`export_transform` must be a bool"):
            materialize(bad, str(tmp_path / "never"), options=options.in_process(),
                        export_transform=True if error is ExportError else 3)
        assert not os.path.exists(tmp_path / "never")  # refused before the job
