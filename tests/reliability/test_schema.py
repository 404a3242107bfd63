"""The schema is fixed before the job writes; only the records that do not fit it are dead letters.

The chain's output on the first batch (run on the driver) or ``materialize(schema=...)`` fixes it;
each worker then checks its records against it, per record, and names the feature and what was
expected for every misfit.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from datarax_beam import OperatorNode, from_source
from datarax_beam.operators import ElementOperator, ElementOperatorConfig
from datarax_beam.operators.host import HostOperator
from datarax_beam.runners import materialize
from datarax_beam.shards import FeatureSpec, Schema, load_shardset
from datarax_beam.shards.validate import ShardSetError
from datarax_beam.sources import MemorySource
from datarax_beam.transforms import FailureBudgetExceeded

from .helpers import errors, read_all

N = 200
BAD = [i for i in range(N) if i % 20 == 7]  # 10 of 200


def _source():
    return MemorySource(data={"t": [f"r{i}" for i in range(N)], "x": np.arange(N, dtype=np.float32)})


def _int_for_some(batch, keys):
    t = list(batch["t"])
    for j, x in enumerate(np.asarray(batch["x"])):
        if int(x) in BAD:
            t[j] = int(x)  # the string feature becomes a number for these records
    return {**batch, "t": t}


def test_only_misfits_are_dead_letters(tmp_path):
    p = from_source(_source(), 32) >> OperatorNode(HostOperator(_int_for_some))
    shardset = materialize(p, str(tmp_path / "out"), num_shards=2)
    assert shardset.num_records == N - len(BAD) and shardset.num_failed == len(BAD)
    got = read_all(shardset.path)
    assert got["t"].tolist() == [f"r{i}" for i in range(N) if i not in BAD]
    entries = errors(shardset.path)
    assert [e["index"] for e in entries] == BAD and {e["stage"] for e in entries} == {"encode"}
    assert all("feature 't': expected string, got <i" in e["message"] for e in entries)
    assert {f.name: f.kind for f in shardset.schema.features} == {"t": "string", "x": "tensor"}


def _every_50th(e):
    # reads the text feature ("r<index>"), so the operator runs on the per-record path, where a
    # record's features may differ from its batch-mates'
    return int(e.data["t"][1:]) % 50 == 3


def _drop_y(e, k):
    return e.replace_data({k2: v for k2, v in e.data.items() if k2 != "y"}) if _every_50th(e) else e


def _add_z(e, k):
    return e.update_data({"z": np.float32(1)}) if _every_50th(e) else e


@pytest.mark.parametrize("fn, message", [
    (_drop_y, "feature 'y' is missing (the schema expects <f4[])"),
    (_add_z, "feature 'z' is not in the shard set's schema (features ['t', 'x', 'y'])"),
], ids=["drops_a_key", "adds_a_key"])
def test_operators_that_change_the_keys_of_some_records(tmp_path, fn, message):
    src = MemorySource(data={"t": [f"r{i}" for i in range(N)], "x": np.arange(N, dtype=np.float32),
                             "y": np.ones(N, np.float32)})
    p = from_source(src, 32) >> OperatorNode(ElementOperator(ElementOperatorConfig(), fn=fn))
    shardset = materialize(p, str(tmp_path / "out"), num_shards=2)
    assert shardset.num_failed == 4 and shardset.num_records == N - 4
    entries = errors(shardset.path)
    assert [(e["index"], e["stage"]) for e in entries] == [(3, "encode"), (53, "encode"), (103, "encode"),
                                                          (153, "encode")]
    assert all(message in e["message"] for e in entries)
    assert read_all(shardset.path)["x"].tolist() == [i for i in range(N) if i % 50 != 3]


def _ragged(n=64):  # variable-length, but the first batch (16 records) happens to be uniform
    return MemorySource(data={"r": [np.arange(2 if i < 16 else i % 5, dtype=np.int64) for i in range(n)]})


def test_a_ragged_feature_uniform_in_the_first_batch_needs_a_declared_schema(tmp_path):
    p = from_source(_ragged(), 16)
    with pytest.raises(FailureBudgetExceeded, match=r"38 of 64 records failed .*feature 'r': expected <i8\[2\], "
                                                    r"got <i8\[1\].*declare another with materialize\(schema=...\)"):
        materialize(p, str(tmp_path / "inferred"))
    assert os.listdir(tmp_path / "inferred") == []  # nothing committed, nothing left behind
    declared = Schema((FeatureSpec("r", "ragged", np.int64, ndim=1),))
    for i, schema in enumerate([declared, declared.to_json()]):
        shardset = materialize(p, str(tmp_path / f"declared{i}"), schema=schema)
        assert shardset.num_failed == 0 and shardset.schema == declared
        assert [v.tolist() for v in read_all(shardset.path)["r"]] == [list(range(2 if i < 16 else i % 5))
                                                                      for i in range(64)]


def test_declared_schema_misfits_name_the_declaration(tmp_path):
    schema = Schema((FeatureSpec("r", "ragged", "<i8", ndim=1), FeatureSpec("s", "string")))
    with pytest.raises(FailureBudgetExceeded, match=r"64 of 64 records failed .*feature 's' is missing "
                                                    r"\(the schema expects string\) \(the schema declared"):
        materialize(from_source(_ragged(), 16), str(tmp_path / "out"), schema=schema)
    with pytest.raises(FileNotFoundError):
        load_shardset(str(tmp_path / "out"))


@pytest.mark.parametrize("schema, error, message", [
    ({"codec": "datarax_beam.record/v1", "features": [{"name": "", "kind": "string"}]}, ShardSetError,
     r"Field `schema.features\[0\].name` must have 1 to 1024 characters, got ''"),
    ({"codec": "datarax_beam.record/v1", "features": [{"name": "a", "kind": "tensor", "dtype": "<f4"}]},
     ShardSetError, r"Field `schema.features\[0\].shape` is missing for a 'tensor' feature"),
    ("x: float32", TypeError, "`schema` must be a datarax_beam Schema or its JSON dict, got str"),
])
def test_bad_declared_schema_is_refused_before_anything_is_written(tmp_path, schema, error, message):
    with pytest.raises(error, match=message):
        materialize(from_source(_ragged(), 16), str(tmp_path / "out"), schema=schema)
    assert not os.path.exists(tmp_path / "out")


def test_a_feature_name_a_reader_would_refuse_is_refused_at_build_time(tmp_path):
    src = MemorySource(data={"": np.arange(4, dtype=np.float32)})
    with pytest.raises(ShardSetError, match=r"Field `schema.features\[0\].name` must have 1 to 1024 characters"):
        materialize(from_source(src, 4), str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")
