"""Records against a fixed schema: misfits named per record, fitting records encoded in the
schema's layout, and the schema of a first batch chosen by its records' majority."""

from __future__ import annotations

import numpy as np

from datarax_beam.core.columns import object_column
from datarax_beam.shards import Schema, decode_batch
from datarax_beam.shards.codec import MISSING, FeatureSpec
from datarax_beam.shards.fit import encode_fitting, infer_schema


def test_batch_that_fits_encodes_at_once():
    batch = {"x": np.arange(6, dtype=np.float32).reshape(3, 2), "t": object_column(["a", "b", "c"])}
    schema = Schema.infer(batch)
    records, good, problems = encode_fitting(schema, batch)
    assert good.all() and problems == {} and len(records) == 3


def test_misfits_are_named_and_the_rest_kept_in_the_schemas_layout():
    schema = Schema((FeatureSpec("t", "string"), FeatureSpec("x", "tensor", "<f4", (2,))))
    batch = {
        "t": object_column(["a", np.int64(5), "c", "d", "e", MISSING]),
        # a ragged column (the batch's shapes differ): rows of shape (2,) fit the tensor feature
        "x": object_column([np.zeros(2, np.float32), np.zeros(2, np.float32), np.zeros(3, np.float32),
                            np.zeros(2, np.float64), np.ones(2, np.float32), np.ones(2, np.float32)]),
        "extra": object_column([MISSING, MISSING, MISSING, MISSING, np.float32(1), MISSING]),
    }
    records, good, problems = encode_fitting(schema, batch)
    assert good.tolist() == [True, False, False, False, False, False]
    assert problems == {
        1: "feature 't': expected string, got <i8[]",
        2: "feature 'x': expected <f4[2], got <f4[3]",
        3: "feature 'x': expected <f4[2], got <f8[2]",
        4: "feature 'extra' is not in the shard set's schema (features ['t', 'x'])",
        5: "feature 't' is missing (the schema expects string)",
    }
    assert decode_batch(schema, records)["t"].tolist() == ["a"]


def test_any_shape_fits_a_ragged_feature():
    schema = Schema((FeatureSpec("r", "ragged", "<i4", ndim=1),))
    batch = {"r": np.arange(6, dtype=np.int32).reshape(3, 2)}  # uniform in this batch
    records, good, _ = encode_fitting(schema, batch)
    assert good.all() and [v.tolist() for v in decode_batch(schema, records)["r"]] == [[0, 1], [2, 3], [4, 5]]


def test_a_string_that_cannot_be_encoded_is_a_misfit_not_a_crash():
    schema = Schema((FeatureSpec("t", "string"),))
    records, good, problems = encode_fitting(schema, {"t": object_column(["ok", "\ud800"])})
    assert good.tolist() == [True, False] and "UnicodeEncodeError" in problems[1] and len(records) == 1


def test_infer_schema_takes_the_majority_of_the_first_batch():
    batch = {"t": object_column(["a", np.int64(1), "b"]), "x": np.zeros((3, 2), np.float32)}
    assert infer_schema(batch) == Schema((FeatureSpec("t", "string"), FeatureSpec("x", "tensor", "<f4", (2,))))
    # one record lacks 'y', two have it: 'y' is in the schema
    batch = {"y": object_column([np.float32(1), MISSING, np.float32(2)])}
    assert infer_schema(batch).names == ["y"]
    # numbers of one dtype and rank but different shapes: ragged
    batch = {"r": object_column([np.zeros(1, np.int8), np.zeros(2, np.int8)])}
    assert infer_schema(batch) == Schema((FeatureSpec("r", "ragged", "|i1", ndim=1),))
    assert infer_schema({}) == Schema(())
