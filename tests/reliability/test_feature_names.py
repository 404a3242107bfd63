"""Any feature name works in every mode: names never become file names (staged columns are
named by position), so ``../../ESCAPED``, 300 characters or a NUL write nothing outside the job's
temp directory and fail nowhere."""

from __future__ import annotations

import os

import numpy as np
import pytest

from datarax_beam import from_source
from datarax_beam.runners import materialize, options
from datarax_beam.sources import MemorySource

from .helpers import read_all

NAMES = ["../../ESCAPED", "n" * 300, "nul\x00name", "/abs/path", ".."]


@pytest.mark.parametrize("opts", [options.in_process(), options.multi_process(2)], ids=["in_process", "processes"])
def test_feature_names_are_data_not_paths(tmp_path, opts):
    data = {name: np.arange(10, dtype=np.float32) + i for i, name in enumerate(NAMES)}
    data["t"] = [f"r{i}" for i in range(10)]  # an object column: staged through the codec
    out = tmp_path / "deep" / "er" / "out"
    shardset = materialize(from_source(MemorySource(data=data), 4), str(out), num_shards=2, options=opts)
    assert shardset.schema.names == sorted(data)
    got = read_all(shardset.path)
    for i, name in enumerate(NAMES):
        np.testing.assert_array_equal(got[name], np.arange(10, dtype=np.float32) + i)
    escaped = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs if "ESCAPED" in f]
    assert escaped == []
    assert sorted(os.listdir(out)) == sorted(["shardset.json"] + [s.name for s in shardset.shards])
