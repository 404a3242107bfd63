"""Issue 13 item 6: one NaN (or inf) gives the same statistics online and offline — moments leave
non-finite values out and count them — and Normalize output stays finite for the other records."""

from __future__ import annotations

import numpy as np

from datarax_beam import from_source
from datarax_beam.operators.statistics import Normalize
from datarax_beam.runners import materialize, options
from datarax_beam.sources import MemorySource

N = 1500


def pipeline():
    x = np.random.default_rng(3).normal(2.0, 1.5, (N, 3)).astype(np.float32)
    x[10, 0], x[1200, 2] = np.nan, np.inf
    other = np.arange(N, dtype=np.float32)
    return from_source(MemorySource(data={"x": x, "other": other}), batch_size=128) >> Normalize("x"), x


def test_online_statistics_ignore_and_count_nan_and_inf():
    p, x = pipeline()
    s = p.statistics["x"]
    assert s["nan_count"].tolist() == [1, 0, 0] and s["inf_count"].tolist() == [0, 0, 1]
    assert s["count"].tolist() == [N - 1, N, N - 1]
    finite = np.where(np.isfinite(x), x, np.nan).astype(np.float64)
    np.testing.assert_allclose(s["mean"], np.nanmean(finite, 0), rtol=1e-12)
    np.testing.assert_allclose(s["std"], np.nanstd(finite, 0), rtol=1e-12)
    out = np.concatenate([np.asarray(b["x"]) for b in p])
    assert np.isfinite(np.delete(out, [10, 1200], axis=0)).all()


def test_offline_statistics_equal_online(tmp_path):
    p, _ = pipeline()
    online = p.statistics
    shardset = materialize(pipeline()[0], str(tmp_path / "out"), num_shards=1, options=options.in_process())
    for key, value in online["x"].items():
        np.testing.assert_array_equal(np.asarray(shardset.statistics["x"][key]), np.asarray(value), err_msg=key)
