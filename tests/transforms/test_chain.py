"""ApplyChain: records in, transformed records out (equal to the online kernel), dead letters,
and its argument and record checks."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that

from datarax_beam import OperatorNode, from_source
from datarax_beam.operators import ElementOperator, ElementOperatorConfig, HostOperator
from datarax_beam.runners import build_options, make_runner, options
from datarax_beam.sources import MemorySource
from datarax_beam.testing import assert_same
from datarax_beam.transforms import ApplyChain, Chunk, DeadLetter
from datarax_beam.transforms.records import ToChunksFn, chunk_records

X = np.arange(20, dtype=np.float32).reshape(10, 2)


def beam_pipeline() -> beam.Pipeline:
    opts = build_options(options.in_process())
    return beam.Pipeline(runner=make_runner(opts), options=opts)


def plus_one():
    return ElementOperator(ElementOperatorConfig(), fn=lambda e, k: e.update_data({"x": e.data["x"] + 1}))


def fails_on_seven():
    def fn(batch, keys):
        if (np.asarray(batch["x"])[:, 0] == 14).any():
            raise ValueError("bad record: x starts with 14")
        return batch

    return HostOperator(fn, threads=1)


def as_dict(pairs):
    return {i: r for i, r in pairs}


def test_records_out_equal_online_and_keep_their_index_and_dtype():
    def check(pairs):
        got = as_dict(pairs)
        assert sorted(got) == list(range(10))
        stacked = {"x": np.stack([got[i]["x"] for i in range(10)]), "s": [got[i]["s"] for i in range(10)]}
        online = list(from_source(MemorySource(data={"x": X}), 4) >> OperatorNode(plus_one()))
        assert_same(stacked["x"], np.concatenate([np.asarray(b["x"]) for b in online]))
        assert stacked["s"] == [f"r{i}" for i in range(10)]  # a text feature passes through

    with beam_pipeline() as p:
        out = (p | beam.Create([(i, {"x": X[i], "s": f"r{i}"}) for i in range(10)])
                 | ApplyChain([OperatorNode(plus_one())], batch_size=4))
        assert_that(out, check)


def test_dead_letter_records_come_out_as_dead_letters_naming_index_and_error():
    def check(pairs):
        got = as_dict(pairs)
        assert sorted(got) == list(range(10))
        bad = got[7]
        assert isinstance(bad, DeadLetter)
        assert bad.entry["index"] == 7 and bad.entry["stage"] == "operators"
        assert "x starts with 14" in bad.entry["message"] and bad.entry["source"] == {"source": "ApplyChain"}
        assert all(isinstance(got[i], dict) for i in range(10) if i != 7)

    with beam_pipeline() as p:
        out = (p | beam.Create([(i, {"x": X[i]}) for i in range(10)])
                 | ApplyChain([fails_on_seven()], batch_size=4, on_error="dead_letter"))
        assert_that(out, check)


def test_raise_fails_the_job_naming_the_record():
    with pytest.raises(Exception, match=r"Record 7 .*failed in stage 'operators'.*x starts with 14"):
        with beam_pipeline() as p:
            _ = p | beam.Create([(i, {"x": X[i]}) for i in range(10)]) | ApplyChain([fails_on_seven()], 4)


def test_a_bad_record_fails_the_job_naming_its_index_and_type():
    with pytest.raises(Exception, match=r"record 3 must be a dict of features, got list"):
        with beam_pipeline() as p:
            _ = p | beam.Create([(3, [1.0, 2.0])]) | ApplyChain([plus_one()], 4)


@pytest.mark.parametrize("element, message", [
    ({"x": 1}, r"expects records as \(index, features\) pairs or Chunks, got dict"),
    (("a", {"x": 1}), r"a record's index must be an int \(its global index\), got str 'a'"),
    ((True, {"x": 1}), r"index must be an int .*got bool True"),
    ((-2, {"x": 1}), r"a record's index must be >= 0, got -2"),
    ((4, None), r"record 4 must be a dict of features, got NoneType"),
])
def test_to_chunks_names_what_is_wrong_with_a_record(element, message):
    fn = ToChunksFn(4, "ApplyChain")
    fn.start_bundle()
    with pytest.raises((TypeError, ValueError), match=message):
        list(fn.process(element))


def test_to_chunks_batches_a_bundle_in_index_order_and_keeps_dead_letters():
    fn = ToChunksFn(3, "WriteShardSet")
    fn.start_bundle()
    out = []
    for i in (5, 1, 4, 0):
        out += list(fn.process((i, {"x": np.float32(i)}) if i != 4 else (4, DeadLetter({"index": 4, "stage": "read"}))))
    out += [w.value for w in fn.finish_bundle()]
    assert [c.indices.tolist() for c in out] == [[1, 5], [0]]
    assert out[0].failures == ({"index": 4, "position": 4, "stage": "read"},)
    assert list(chunk_records(out[0]))[-1] == (4, DeadLetter({"index": 4, "position": 4, "stage": "read"}))
    chunk = Chunk(0, np.arange(2), np.arange(2), {"x": np.zeros(2)})
    assert list(fn.process(chunk)) == [chunk]  # chunks pass through


def test_records_with_differing_features_keep_them_for_the_writer_to_name():
    fn = ToChunksFn(2, "WriteShardSet")
    fn.start_bundle()
    (chunk,) = list(fn.process((0, {"x": 1.0}))) + list(fn.process((1, {"y": 2.0})))
    assert sorted(chunk.columns) == ["x", "y"]
    assert repr(chunk.columns["x"][1]) == "MISSING"


@pytest.mark.parametrize("kwargs, error, message", [
    ({"operators": plus_one()}, TypeError, r"`operators` must be a list of operators, got ElementOperator"),
    ({"operators": [plus_one, 3]}, TypeError, r"`operators\[0\]` must be an operator .*got function"),
    ({"batch_size": 0}, ValueError, r"`batch_size` must be an int >= 1, got 0"),
    ({"output": "rows"}, ValueError, r"unknown `output` 'rows'; expected one of \('records', 'chunks'\)"),
    ({"on_error": "skip"}, ValueError, r"Unknown `on_error` 'skip'"),
    ({"check_finite": 1}, TypeError, r"`check_finite` must be a bool, got 1"),
    ({"statistics": [1]}, TypeError, r"`statistics` must be a dict of statistics .*got list"),
])
def test_arguments_are_checked_when_built(kwargs, error, message):
    args = {"operators": [plus_one()], "batch_size": 4, **kwargs}
    with pytest.raises(error, match=message):
        ApplyChain(**args)
