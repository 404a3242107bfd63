"""Bad records: dead-lettered, counted, and the good records' bytes unchanged."""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest

from datarax_beam import OperatorNode, from_source
from datarax_beam.core.data_source import RandomAccessSource
from datarax_beam.operators import ElementOperator, ElementOperatorConfig
from datarax_beam.runners import counters, materialize, run
from datarax_beam.shards import load_shardset
from datarax_beam.sources import MemorySource
from datarax_beam.testing import IteratorSource

from .helpers import Fault, N, errors, marker, pipeline, read_all, source


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return materialize(pipeline(), str(tmp_path_factory.mktemp("clean") / "out"), num_shards=2)


def test_operator_failures_are_dead_letters_and_good_records_are_bit_identical(clean, tmp_path):
    bad = (17, 40, 41, 150)  # two in one batch, one at a shard's first batch
    done = run(pipeline(Fault(tmp_path / "f", bad)), str(tmp_path / "out"), num_shards=2)
    shardset = done.shardset
    assert shardset.num_records == N - 4 and shardset.num_failed == 4
    assert [s.num_records for s in shardset.shards] == [100 - 3, 100 - 1]  # shards only shrink
    assert marker(shardset.path)["num_failed"] == 4 and marker(shardset.path)["num_records"] == N - 4
    assert load_shardset(shardset.path).num_failed == 4
    got, want = read_all(shardset.path), read_all(clean.path)
    keep = np.setdiff1d(np.arange(N), bad)
    for k in want:  # per-record fallback through the same compiled kernel: same bits
        assert got[k].tobytes() == want[k][keep].tobytes()
    entries = errors(shardset.path)
    assert [e["index"] for e in entries] == list(bad) == [e["position"] for e in entries]
    assert {e["stage"] for e in entries} == {"operators"}
    assert all(f"bad record {e['index']}" in e["message"] and e["error_type"] for e in entries)
    assert entries[0]["source"] == {"source": "MemorySource", "name": source().name}
    c = counters(done.result)
    assert c["records_failed"] == 4 and c["records_written"] == N - 4 and c["records_read"] == N


def test_raise_fails_the_job_naming_index_and_stage(tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(Exception, match=r"Record 17 \(output position 17\) failed in stage 'operators'"):
        materialize(pipeline(Fault(tmp_path / "f", [17])), out, num_shards=2, on_error="raise")
    with pytest.raises(FileNotFoundError):
        load_shardset(out)
    # record 17 is in the first batch, which fixes the schema on the driver: nothing was written
    assert not os.path.exists(out)
    with pytest.raises(Exception, match=r"Record 90 \(output position 90\) failed in stage 'operators'"):
        materialize(pipeline(Fault(tmp_path / "g", [90])), out, num_shards=2, on_error="raise")
    with pytest.raises(FileNotFoundError, match="not a committed shard set"):
        load_shardset(out)
    assert os.listdir(out) == []  # the failed job removed its temp files and its lock


def _nan_at_5(e, k):
    return e.update_data({"x": jnp.where(e.metadata.index == 5, jnp.nan, e.data["x"])})


def test_check_finite(tmp_path):
    p = from_source(source(64), 16) >> OperatorNode(ElementOperator(ElementOperatorConfig(), fn=_nan_at_5))
    loose = materialize(p, str(tmp_path / "loose"))
    assert loose.num_failed == 0 and np.isnan(read_all(loose.path)["x"][5]).all()
    strict = materialize(p, str(tmp_path / "strict"), check_finite=True)
    assert strict.num_records == 63 and strict.num_failed == 1
    (entry,) = errors(strict.path)
    assert (entry["index"], entry["stage"], entry["error_type"]) == (5, "check_finite", "NotFiniteError")
    assert "'x'" in entry["message"]
    assert np.isfinite(read_all(strict.path)["x"]).all()


class _BadDisk(RandomAccessSource):
    """Record 7 cannot be read (a corrupt block); every batch holding it raises."""

    def __init__(self, n):
        super().__init__(name="bad-disk")
        self.n = n

    def __len__(self):
        return self.n

    def _read(self, indices):
        if 7 in indices:
            raise OSError("checksum mismatch in block 7")
        return {"x": indices.astype(np.float32)}


def test_random_access_read_errors_are_dead_letters(tmp_path):
    shardset = materialize(from_source(_BadDisk(20), 4), str(tmp_path / "out"), num_shards=3)
    assert read_all(shardset.path)["x"].tolist() == [i for i in range(20) if i != 7]
    (entry,) = errors(shardset.path)
    assert (entry["index"], entry["stage"], entry["error_type"]) == (7, "read", "OSError")
    assert "checksum mismatch" in entry["message"] and entry["source"]["name"] == "bad-disk"


def test_unsupported_python_object_is_a_dead_letter(tmp_path):
    text = [f"r{i}" for i in range(12)]
    text[3] = object()
    shardset = materialize(from_source(MemorySourceOf(text), 4), str(tmp_path / "out"))
    assert read_all(shardset.path)["text"].tolist() == [f"r{i}" for i in range(12) if i != 3]
    (entry,) = errors(shardset.path)
    assert (entry["index"], entry["stage"], entry["error_type"]) == (3, "encode", "SchemaError")
    assert "feature 'text': expected string, got unsupported type object" in entry["message"]


def MemorySourceOf(text):
    return MemorySource(data={"text": text, "n": np.arange(len(text), dtype=np.int32)})


def _rows(src):
    # iterator-only: read sequentially, shards assigned after a GroupByKey
    return IteratorSource(src.columns, name="rows")


@pytest.mark.parametrize("kind", ["iterator_shuffled", "multi_process"])
def test_dead_letters_do_not_depend_on_path_or_runner(tmp_path, kind):
    from datarax_beam.runners import options

    bad = (3, 64, 199)
    src, kw = source(), {"num_shards": 3}
    if kind == "iterator_shuffled":
        src, kw = _rows(src), {**kw, "shuffle": True, "seed": 1}
    else:
        kw["options"] = options.multi_process(2)
    clean = read_all(materialize(pipeline(src=src), str(tmp_path / "clean"), **kw).path)
    faulty = materialize(pipeline(Fault(tmp_path / "f", bad), src=src), str(tmp_path / "faulty"), **kw)
    got = read_all(faulty.path)
    keep = ~np.isin(clean["label"], bad)
    for k in clean:
        assert got[k].tobytes() == clean[k][keep].tobytes()
    assert sorted(e["index"] for e in errors(faulty.path)) == list(bad) and faulty.num_failed == 3
    assert sum(s.num_records for s in faulty.shards) == N - 3


def test_check_finite_does_not_drop_records_from_the_statistics(tmp_path):
    from datarax_beam.core.operator import OperatorConfig
    from datarax_beam.operators.statistics import StatisticsOperator
    from datarax_beam.statistics import StatSpec

    x = np.arange(64, dtype=np.float32)
    x[5] = np.nan
    # uses the statistics of x (so the job analyzes x) but writes records unchanged: only record 5
    # is not finite, whatever the statistics are
    observe = StatisticsOperator(OperatorConfig(), statistics=[StatSpec("x", axes="all")], fn=lambda e, k, s: e)
    p = from_source(MemorySource(data={"x": x}), 16) >> OperatorNode(observe)
    online = p.statistics  # over every record, as online pipelines see them
    shardset = materialize(p, str(tmp_path / "out"), check_finite=True)
    assert set(shardset.statistics) == set(online)
    for name, stats in online.items():
        for key, value in stats.items():
            np.testing.assert_equal(shardset.statistics[name][key], value)  # NaN == NaN here
    # check_finite still drops the NaN record from the written records
    assert [e["index"] for e in errors(shardset.path)] == [5] and shardset.num_records == 63
