"""export_transform: what is written (steps, schemas, dropped operators), what cannot be exported
(named), and copying a shard set's transform."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datarax_beam import export_transform, from_source, load_transform
from datarax_beam.kernels import ChainKernel
from datarax_beam.operators import (
    ElementOperator,
    ElementOperatorConfig,
    HostOperator,
    HostStatisticsOperator,
    OperatorConfig,
)
from datarax_beam.operators.statistics import Normalize
from datarax_beam.serving import ExportError
from datarax_beam.serving.format import read_manifest
from datarax_beam.shards import load_shardset
from datarax_beam.sources import DataSourceModule, MemorySource
from datarax_beam.statistics import StatSpec

from .chains import assert_same, clip_x, deterministic_ops, noise, pipeline, raw_records

SMALL = 200


def small():
    return {k: v[:SMALL] for k, v in raw_records().items()}


def test_manifest_lists_steps_schemas_and_statistics(tmp_path):
    p = pipeline(data=small())
    t = export_transform(p, tmp_path / "t")
    m = read_manifest(str(tmp_path / "t"))
    assert [type(s).__name__ for s in m.steps] == ["JaxStep", "HostStep", "JaxStep"]
    assert m.steps[0].operators == ("clip_x", "normalize_x", "normalize_amount")
    assert [(n, d.str, s) for n, d, s in m.steps[0].inputs] == [("x", "<f4", (3,)), ("amount", "<f4", ())]
    assert m.steps[1].operator == "VocabularyLookup" and list(m.steps[1].files) == ["vocabulary.json"]
    assert m.steps[2].operators == ("vocab_cat",) and [n for n, *_ in m.steps[2].inputs] == ["cat"]
    assert m.platforms == ("cpu", "cuda")
    assert {f["name"]: f["kind"] for f in m.input} == {
        "x": "tensor", "amount": "tensor", "word": "string", "cat": "tensor", "label": "tensor", "id": "tensor"}
    assert {f["name"]: f.get("dtype") for f in m.input}["amount"] == "<f8"  # the raw dtype, before narrowing
    assert {f["name"]: f.get("dtype") for f in m.output}["word_id"] == "<i4"
    assert m.raw["chain"]["fingerprint"] == p.fingerprint()
    np.testing.assert_array_equal(t.statistics["x"]["mean"], p.statistics["x"]["mean"])
    assert t.statistics["word_vocab"]["vocabulary"] == p.statistics["word_vocab"]["vocabulary"]
    assert sorted(os.listdir(tmp_path / "t")) == ["statistics.json", "steps", "transform.json"]


def test_output_equals_the_online_pipeline(tmp_path):
    data = small()
    p = pipeline(data=data, batch_size=32)
    batches = list(p)
    online = {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in batches[0]}
    online["word"] = data["word"]
    assert_same(export_transform(p, tmp_path / "t")(data), online)


def test_given_statistics_are_baked_in_instead_of_analyzing(tmp_path):
    data = small()
    stats = {"x": {"mean": np.zeros(3, np.float32), "std": np.full(3, 2.0, np.float32)}}
    t = export_transform(pipeline([Normalize("x")], data=data), tmp_path / "t", statistics=stats)
    np.testing.assert_array_equal(t({"x": np.full((1, 3), 4.0, np.float32)})["x"], np.full((1, 3), 4.0 / (2.0 + 1e-6), np.float32))


def test_stochastic_operators_are_dropped_and_listed(tmp_path):
    data = small()
    ops = [clip_x(), noise(), *deterministic_ops()[1:]]
    t = export_transform(pipeline(ops, data=data), tmp_path / "t")
    assert t.dropped == [{"name": "noise", "type": "ElementOperator", "position": 1,
                          "reason": "stochastic (training only)"}]
    # the statistics were taken after the noise (as in training); the transform applies the rest
    bound = [op for op in pipeline(ops, data=data).bound_operators() if not op.stochastic]
    assert_same(t(data), ChainKernel(bound)(data, np.arange(SMALL)))


def test_an_arbitrary_host_function_is_named(tmp_path):
    def lower(batch, keys):
        return {**batch, "word": [w.lower() for w in batch["word"]]}

    with pytest.raises(ExportError, match=r"Operator 'lower' \(position 1, HostOperator \(fn=.*lower\)\) runs "
                                          r"Python code on the host, which cannot be exported: only the built-in"):
        export_transform(pipeline([clip_x(), HostOperator(lower)], data=small()), tmp_path / "t")
    flag = HostStatisticsOperator(OperatorConfig(), fn=lambda b, k, s: {**b, "big": b["amount"] > s["amount"]["mean"]},
                                  statistics=[StatSpec("amount")], name="above_mean")
    with pytest.raises(ExportError, match=r"Operator 'above_mean' \(position 0, HostStatisticsOperator"):
        export_transform(pipeline([flag], data=small()), tmp_path / "t")
    assert not os.path.exists(tmp_path / "t")  # nothing written


def test_a_jax_operator_on_the_per_record_path_is_named(tmp_path):
    upper = ElementOperator(ElementOperatorConfig(), name="upper",
                            fn=lambda e, k: e.update_data({"word": e.data["word"].upper()}))
    with pytest.raises(ExportError, match=r"Operator 'upper' \(position 1, ElementOperator\) uses the value of "
                                          r"str feature 'word' \(upper\) in JAX"):
        export_transform(pipeline([clip_x(), upper], data=small()), tmp_path / "t")


def test_a_jax_segment_that_does_not_lower_names_its_operator(tmp_path):
    def host_double(e, k):
        spec = jax.ShapeDtypeStruct(e.data["amount"].shape, jnp.float32)
        return e.update_data({"amount": jax.pure_callback(lambda v: np.asarray(v) * 2, spec, e.data["amount"],
                                                          vmap_method="sequential")})

    callback = ElementOperator(ElementOperatorConfig(), fn=host_double, name="callback")
    with pytest.raises(ExportError, match=r"Operator 'callback' \(position 1, ElementOperator\) could not be "
                                          r"exported .* for platforms \['cpu', 'cuda'\]"):
        export_transform(pipeline([clip_x(), callback], data=small()), tmp_path / "t")


class Rows(DataSourceModule):
    """An iterator source (no random access) of ``{"x": float32}`` records."""

    def __init__(self, n):
        super().__init__(name="rows")
        self.n, self.i = n, 0

    def __iter__(self):
        self.i = 0
        return self

    def __next__(self):
        if self.i >= self.n:
            raise StopIteration
        self.i += 1
        return {"x": np.float32(self.i - 1)}


def test_iterator_sources_and_arguments(tmp_path):
    data = {"x": np.arange(20, dtype=np.float32)}
    p = from_source(MemorySource(data=data), 8) >> Normalize("x", axes="all")
    ref = export_transform(p, tmp_path / "a")
    streamed = export_transform(from_source(Rows(20), 8) >> Normalize("x", axes="all"), tmp_path / "s")
    assert streamed.input_features == [{"name": "x", "kind": "tensor", "dtype": "<f4", "shape": []}]
    assert_same(streamed(data), ref(data))
    with pytest.raises(FileExistsError, match="already holds an exported transform; pass overwrite=True"):
        export_transform(p, tmp_path / "a")
    export_transform(p, tmp_path / "a", overwrite=True)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="non-empty directory that holds no exported transform"):
        export_transform(p, tmp_path / "b")
    with pytest.raises(TypeError, match="`pipeline` must be a Pipeline or a shard-set directory, got dict"):
        export_transform({"x": 1}, tmp_path / "c")
    with pytest.raises(ValueError, match="`platforms` must name some of"):
        export_transform(p, tmp_path / "c", platforms=("metal",))
    with pytest.raises(ValueError, match="written to local directories; got 'gs://b/t'"):
        export_transform(p, "gs://b/t")
    with pytest.raises(ValueError, match=r"`platforms` \['tpu'\] include none of this machine's \(\['cpu'\]\)"):
        export_transform(p, tmp_path / "c", platforms=("tpu",))
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="exists and is not a directory"):
        export_transform(p, tmp_path / "file")
    with pytest.raises(ValueError, match=r"Source 'memory.*' yields no record; the export needs a few"):
        export_transform(from_source(MemorySource(data={"x": np.zeros(0, np.float32)}), 8), tmp_path / "c")
    cpu_only = export_transform(p, tmp_path / "d", platforms=("cpu",))
    assert cpu_only.manifest.platforms == ("cpu",)
    assert_same(cpu_only(data), ref(data))
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "d", "file", "s"]  # no temporary directory left behind


def test_export_next_to_a_shard_set_and_copy_it(materialized, raw, tmp_path):
    out, _, offline = materialized
    manifest = read_manifest(os.path.join(out, "transform"))
    assert manifest.shardset == {"job_id": load_shardset(out).job_id, "fingerprint": load_shardset(out).fingerprint}
    copy = export_transform(out, tmp_path / "copy")  # a shard set's transform, copied out
    assert_same(copy({k: v[:50] for k, v in raw.items()}), {k: v[:50] for k, v in offline.items()})
    with pytest.raises(ValueError, match="`statistics` applies to a pipeline"):
        export_transform(out, tmp_path / "x", statistics={})
    # the same transform from the pipeline and the shard set's statistics (a path), exported anew
    again = export_transform(pipeline(data={k: v[:10] for k, v in raw.items()}), tmp_path / "again", statistics=out)
    assert_same(again({k: v[:50] for k, v in raw.items()}), {k: v[:50] for k, v in offline.items()})




def test_a_transform_of_another_run_is_refused(materialized, tmp_path):
    import shutil

    out = str(tmp_path / "set")
    shutil.copytree(materialized[0], out)
    meta = json.loads(open(os.path.join(out, "shardset.json")).read())
    meta["job_id"] = "0" * 32
    open(os.path.join(out, "shardset.json"), "w").write(json.dumps(meta))
    with pytest.raises(ValueError, match=r"field 'shardset.job_id' is .*, but the shard set was committed by job "
                                         r"'0{32}': this transform belongs to another run"):
        load_transform(out)
