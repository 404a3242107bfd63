"""The public face: `datarax_beam` holds the tour's names in one place without importing Beam,
and every source takes its config first (the earlier argument orders still work)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import datarax_beam as db
from datarax_beam.shards.writer import write_shardset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOUR = ["from_source", "OperatorNode", "ElementOperator", "ElementOperatorConfig", "MemorySource",
        "MemorySourceConfig", "ArrayRecordSourceModule", "ArrayRecordSourceConfig", "materialize",
        "from_tfds", "from_hf", "TFDSEagerSource", "TFDSEagerConfig", "HFEagerSource", "HFEagerConfig",
        "Mixture", "MixtureConfig"]


def test_star_import_gives_the_tour_names_and_does_not_import_beam():
    code = ("import sys; from datarax_beam import *; "
            f"missing = [n for n in {TOUR!r} if n not in globals()]; assert not missing, missing; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'apache_beam'); assert not bad, bad; "
            "print(materialize.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "materialize"


def test_every_exported_name_exists():
    assert sorted(db.__all__) == sorted(set(db.__all__))
    for name in db.__all__:
        assert getattr(db, name) is not None


def test_materialize_runs_the_job(tmp_path):
    src = db.MemorySource(db.MemorySourceConfig(), {"x": np.arange(6, dtype=np.float32)})
    shardset = db.materialize(db.from_source(src, 4), str(tmp_path / "out"), num_shards=2)
    assert shardset.num_records == 6 and db.ArrayRecordSourceModule(shardset.path).get_batch([5])["x"].tolist() == [5.0]


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("set") / "s")
    write_shardset(d, {"id": np.arange(12, dtype=np.int32)}, num_shards=2)
    return d


def test_reader_takes_config_first_and_every_earlier_form(shard_dir):
    config = db.ArrayRecordSourceConfig(shuffle=True, seed=3)
    readers = [db.ArrayRecordSourceModule(config, shard_dir), db.ArrayRecordSourceModule(shard_dir, config),
               db.ArrayRecordSourceModule(shard_dir, config=config), db.ArrayRecordSourceModule(config, path=shard_dir),
               db.ArrayRecordSourceModule(config=config, path=shard_dir)]
    orders = [r.epoch_order(0).tolist() for r in readers]
    assert all(o == orders[0] for o in orders) and orders[0] != list(range(12))
    assert db.ArrayRecordSourceModule(shard_dir).epoch_order(0).tolist() == list(range(12))  # path alone


@pytest.mark.parametrize("args, kwargs, message", [
    (("a", "b", "c"), {}, r"at most 2 positional arguments \(config, path\), got 3"),
    (("a",), {"path": "b"}, r"got `path` twice: 'a' and 'b'"),
    ((db.ArrayRecordSourceConfig(),), {"config": db.ArrayRecordSourceConfig()}, r"got `config` twice"),
])
def test_reader_refuses_ambiguous_arguments(args, kwargs, message):
    with pytest.raises(TypeError, match=message):
        db.ArrayRecordSourceModule(*args, **kwargs)


def test_mixture_takes_config_first_and_the_earlier_form():
    a = db.MemorySource(db.MemorySourceConfig(), {"x": np.zeros(6, np.int32)})
    b = db.MemorySource(db.MemorySourceConfig(), {"x": np.ones(3, np.int32)})
    new = db.Mixture(db.MixtureConfig(weights=(2, 1), seed=4, exhaustion="repeat"), [a, b])
    old = db.Mixture([a, b], [2, 1], 4, exhaustion="repeat")
    keywords = db.Mixture(sources=[a, b], weights=[2, 1], seed=4, exhaustion="repeat")
    assert new.config == old.config == keywords.config and new.config.weights == (2 / 3, 1 / 3)
    assert new.epoch_order(0).tolist() == old.epoch_order(0).tolist() == keywords.epoch_order(0).tolist()


@pytest.mark.parametrize("call, message", [
    (lambda a: db.Mixture(db.MixtureConfig(weights=(1,)), [a], seed=2), r"takes its settings from the MixtureConfig; got also seed"),
    (lambda a: db.Mixture([a], [1], 0, 5), r"at most 3 positional arguments, got 4"),
    (lambda a: db.Mixture([a], [1], weights=[1]), r"got `weights` twice"),
    (lambda a: db.Mixture([a], speed=1, weights=[1]), r"unexpected argument\(s\) \['speed'\]"),
    (lambda a: db.Mixture([a]), r"needs `weights` \(one per source\)"),
])
def test_mixture_refuses_mixed_or_unknown_arguments(call, message):
    a = db.MemorySource(db.MemorySourceConfig(), {"x": np.zeros(3, np.int32)})
    with pytest.raises(TypeError, match=message):
        call(a)


def test_sources_take_their_config_first():
    import inspect

    for cls in (db.MemorySource, db.HFEagerSource, db.HFStreamingSource, db.TFDSEagerSource,
                db.TFDSStreamingSource, db.Mixture):
        first = list(inspect.signature(cls.__init__).parameters)[1]
        assert first == "config", (cls.__name__, first)
