"""load_transform: the loaded transform equals the materialized records bit for bit, at any batch
size, in this process and in a fresh one that never imports Beam; raw inputs are checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from datarax_beam import load_transform
from datarax_beam.kernels import NarrowingError

from .chains import N, assert_same, in_batches


@pytest.mark.parametrize("batch_size", [1, 7, 1024])
def test_loaded_transform_equals_the_materialized_records(materialized, raw, batch_size):
    out, exported, offline = materialized
    assert exported.directory == os.path.join(out, "transform") and exported.dropped == []
    transform = load_transform(out)  # the shard set's own transform/
    data = raw if batch_size > 1 else {k: v[:150] for k, v in raw.items()}  # 1100 single calls add nothing
    got = in_batches(transform, data, batch_size)
    assert_same(got, {k: v[: len(data["x"])] for k, v in offline.items()})


def test_the_same_in_a_fresh_process_without_beam(materialized, raw, tmp_path):
    out, _, offline = materialized
    np.savez(tmp_path / "raw.npz", **{k: v for k, v in raw.items() if v.dtype != object})
    (tmp_path / "words.json").write_text(json.dumps(raw["word"].tolist()))
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        import datarax_beam
        raw = dict(np.load({str(tmp_path / "raw.npz")!r}))
        raw["word"] = np.array(json.load(open({str(tmp_path / "words.json")!r})), dtype=object)
        t = datarax_beam.load_transform({out!r})
        results = {{}}
        for bs in (1, 7, 1024):
            n = 100 if bs == 1 else len(raw["x"])
            parts = [t({{k: v[s:s + bs] for k, v in raw.items()}}) for s in range(0, n, bs)]
            for k in parts[0]:
                if k == "word":
                    results[f"{{bs}}/{{k}}"] = np.array(json.dumps([w for p in parts for w in p[k].tolist()]))
                else:
                    results[f"{{bs}}/{{k}}"] = np.concatenate([p[k] for p in parts])
        np.savez({str(tmp_path / "out.npz")!r}, **results)
        print(json.dumps(sorted(m for m in ("apache_beam", "tensorflow_datasets", "datasets", "tensorflow")
                                if m in sys.modules)))
    """)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []  # neither Beam nor a source library
    results = np.load(tmp_path / "out.npz")
    for bs in (1, 7, 1024):
        n = 100 if bs == 1 else N
        got = {k.split("/")[1]: results[k] for k in results.files if k.startswith(f"{bs}/")}
        got["word"] = np.array(json.loads(str(got["word"])) + [None], dtype=object)[:-1]
        assert_same(got, {k: v[:n] for k, v in offline.items()})


def test_features_only_passed_through_may_be_left_out(materialized, raw):
    transform = load_transform(materialized[0])
    serving = {k: raw[k][:5] for k in ("x", "amount", "word", "cat")}  # no label, no id at serving time
    got = transform(serving)
    assert sorted(got) == ["amount", "cat", "word", "word_id", "x"]
    assert_same(got, {k: materialized[2][k][:5] for k in got})


def test_lists_and_numpy_strings_are_accepted(materialized, raw):
    transform = load_transform(materialized[0])
    got = transform({"x": raw["x"][:3].tolist(), "amount": raw["amount"][:3].tolist(),
                     "word": np.array(raw["word"][:3].tolist()), "cat": raw["cat"][:3].tolist()})
    assert_same(got, {k: materialized[2][k][:3] for k in got})
    assert transform({"x": np.zeros((0, 3), np.float32)})["x"].shape == (0, 3)  # empty: as it is


def test_indices_are_checked(materialized, raw):
    transform = load_transform(materialized[0])
    batch = {k: v[:4] for k, v in raw.items()}
    assert_same(transform(batch, indices=[10, 11, 12, 13]), transform(batch))
    with pytest.raises(ValueError, match=r"`indices` must be 4 integers"):
        transform(batch, indices=[1, 2])


def test_raw_input_errors_name_the_feature(materialized, raw):
    transform = load_transform(materialized[0])
    batch = {k: v[:4] for k, v in raw.items()}
    with pytest.raises(ValueError, match=r"Features \['extra'\] are not inputs of this transform"):
        transform({**batch, "extra": np.zeros(4)})
    with pytest.raises(KeyError, match=r"Feature 'x' is read by the JAX operators \['clip_x', 'normalize_x'"):
        transform({k: v for k, v in batch.items() if k != "x"})
    with pytest.raises(ValueError, match=r"Feature 'x' is read by .* with per-record shape \[3\]; the batch holds "
                                         r"shape \[2\]"):
        transform({**batch, "x": batch["x"][:, :2]})
    with pytest.raises(TypeError, match=r"Feature 'cat' is read by .* as int32; the batch holds float64"):
        transform({**batch, "cat": batch["cat"].astype(np.float64)})
    with pytest.raises(TypeError, match=r"Feature 'x' is read by .* holds \{'name': 'x', 'kind': 'string'"):
        transform({**batch, "x": np.array(["a", "b", "c", "d"], dtype=object)})
    with pytest.raises(NarrowingError, match=r"Feature 'cat' of record 2 holds 4294967296"):
        transform({**batch, "cat": np.array([0, 1000, 2**32, 0], dtype=np.int64)})
    with pytest.raises(ValueError, match=r"Feature 'word' has 3 values; 'x' has 4"):
        transform({**batch, "word": batch["word"][:3]})
    with pytest.raises(TypeError, match=r"Feature 'x' must be a numpy array or a list"):
        transform({**batch, "x": 3})
    with pytest.raises(TypeError, match=r"takes a dict of columns"):
        transform([batch])
    with pytest.raises(ValueError, match=r"Feature 'amount' must be a column \(one value per record\), got a scalar"):
        transform({**batch, "amount": np.array(2.0)})
    with pytest.raises(ValueError, match=r"Feature 'x': cannot make <f4 values of per-record shape \[3\] from the list"):
        transform({**batch, "x": [[1.0, 2.0, 3.0], [1.0]] * 2})


def test_device_and_output_options(materialized, raw):
    import jax

    transform = load_transform(materialized[0], device=jax.devices("cpu")[0], output="jax")
    got = transform({k: v[:8] for k, v in raw.items()})
    assert isinstance(got["x"], jax.Array) and isinstance(got["label"], jax.Array)
    assert isinstance(got["id"], np.ndarray) and got["id"].dtype == np.int64  # 64-bit stays exact, as online
    assert_same({k: np.asarray(v) for k, v in got.items()}, {k: v[:8] for k, v in materialized[2].items()})
    with pytest.raises(ValueError, match=r"`output` must be 'numpy' or 'jax', got 'torch'"):
        load_transform(materialized[0], output="torch")
