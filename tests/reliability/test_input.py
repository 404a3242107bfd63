"""Bad configuration and input: each a clear error naming the field and value, or a dead letter."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest

from datarax_beam import OperatorNode, from_source
from datarax_beam.operators import HostOperator
from datarax_beam.runners import materialize
from datarax_beam.shards import SHARDSET_FILE, SchemaError, load_shardset
from datarax_beam.shards.writer import write_shardset
from datarax_beam.sources import MemorySource
from datarax_beam.testing import IteratorSource

from .helpers import errors, pipeline, read_all


@pytest.mark.parametrize("kw, error, message", [
    ({"output_dir": 42}, TypeError, "`output_dir` must be a path string.*got int"),
    ({"output_dir": b"/tmp/x"}, TypeError, "got bytes"),
    ({"num_shards": 0}, ValueError, "`num_shards` must be an int >= 1 or None, got 0"),
    ({"num_shards": 2.5}, ValueError, "`num_shards`.*got 2.5"),
    ({"compression": "lz4"}, ValueError, "Unknown compression 'lz4'"),
    ({"on_error": "ignore"}, ValueError, r"Unknown `on_error` 'ignore'; expected one of \('dead_letter', 'raise'\)"),
    ({"check_finite": "yes"}, TypeError, "`check_finite` must be a bool, got 'yes'"),
])
def test_bad_configuration(tmp_path, kw, error, message):
    kw = {"output_dir": str(tmp_path / "out"), **kw}
    with pytest.raises(error, match=message):
        materialize(pipeline(), **kw)
    assert not os.path.exists(tmp_path / "out")  # checked before anything is written


def test_pathlib_output_dir_is_fine(tmp_path):
    assert materialize(from_source(MemorySource(data={"x": np.arange(3.0)}), 2), tmp_path / "o").num_records == 3


def _iterator_source(values, fail_at=None):
    return IteratorSource({"x": np.asarray(values, dtype=np.float32)}, name="flaky", fail_at=fail_at)


def test_iterator_source_raising_mid_iteration_names_the_position(tmp_path):
    with pytest.raises(Exception, match=r"Source 'flaky' raised while reading the record at position 5 "
                                        r"\(after 5 records\): ConnectionError: stream reset by peer"):
        materialize(from_source(_iterator_source(range(10), fail_at=5), 4), str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError):
        load_shardset(str(tmp_path / "out"))


@pytest.mark.parametrize("make", [
    lambda: MemorySource(data={"x": np.zeros((0, 3), np.float32)}),
    lambda: _iterator_source([]),
], ids=["random_access", "iterator"])
def test_empty_source_is_a_valid_empty_shard_set(tmp_path, make):
    shardset = materialize(from_source(make(), 4), str(tmp_path / "out"), num_shards=2)
    assert shardset.num_records == 0 and shardset.num_failed == 0 and len(shardset.shards) == 2
    assert load_shardset(shardset.path) == shardset and errors(shardset.path) == []


def _reshape_some(batch, keys):
    # on the host (a JAX operator has fixed shapes): records 10 and 30 (x[0] == 2 * index) get
    # another shape for this feature
    xs = [np.concatenate([x, x]) if int(x[0]) // 2 in (10, 30) else x for x in batch["x"]]
    return {**batch, "x": xs}


@pytest.mark.parametrize("iterator", [False, True], ids=["random_access", "iterator"])
def test_chain_changing_a_shape_between_records(tmp_path, iterator):
    n = 40
    data = {"x": np.arange(2 * n, dtype=np.float32).reshape(n, 2), "t": [f"r{i}" for i in range(n)]}
    src = MemorySource(data=data)
    if iterator:
        src = _iterator_like(data)
    p = from_source(src, 8) >> OperatorNode(HostOperator(_reshape_some))
    shardset = materialize(p, str(tmp_path / "out"), num_shards=3)
    # the schema is fixed from the first batch, x: float32[2]; only the two misfits are dropped,
    # their batch-mates are kept in the schema's layout
    assert {f.name: (f.kind, f.shape) for f in shardset.schema.features}["x"] == ("tensor", (2,))
    got = read_all(shardset.path)
    keep = [i for i in range(n) if i not in (10, 30)]
    np.testing.assert_array_equal(got["x"], data["x"][keep])
    assert got["t"].tolist() == [f"r{i}" for i in keep]
    entries = errors(shardset.path)
    assert [(e["index"], e["stage"]) for e in entries] == [(10, "encode"), (30, "encode")]
    assert "feature 'x': expected <f4[2], got <f4[4] (the shard set's schema was fixed" in entries[0]["message"]
    assert shardset.num_failed == 2 and shardset.num_records == n - 2
    with pytest.raises(Exception, match=r"Record 10 \(output position 10\) failed in stage 'encode'"):
        materialize(p, str(tmp_path / "raise"), num_shards=3, on_error="raise")
    assert not os.path.exists(tmp_path / "raise" / SHARDSET_FILE)


def _iterator_like(data):
    return IteratorSource({"x": data["x"], "t": data["t"]}, name="rows")


def test_shard_metadata_is_json_only(tmp_path):
    out = str(tmp_path / "set")
    write_shardset(out, {"x": np.arange(4, dtype=np.int32)})
    meta = pathlib.Path(out, SHARDSET_FILE)
    committed = json.loads(meta.read_text())
    pickled = "cos\nsystem\n(S'touch " + str(tmp_path / "pwned") + "'\ntR."  # a protocol-0 pickle
    meta.write_text(pickled)  # a pickle instead of JSON is refused, not loaded
    with pytest.raises(SchemaError, match="is not valid JSON"):
        load_shardset(out)
    meta.write_bytes(b"\x80\x04\x95" + pickled.encode())  # binary pickle framing too
    with pytest.raises(SchemaError, match="is not valid JSON"):
        load_shardset(out)
    committed["extra"] = {"note": pickled}  # inside JSON, pickle-ish text stays text: data
    meta.write_text(json.dumps(committed))
    assert load_shardset(out).extra["note"] == pickled
    assert not os.path.exists(tmp_path / "pwned")
