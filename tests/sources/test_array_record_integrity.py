"""Reader-side integrity: checksums, stale caches, foreign state, names outside the set.

Shard sets here get their per-shard ``sha256`` and ``job_id`` from `_sealed` (computed by the
test) so the checks do not depend on which writer filled them in.
"""

import dataclasses
import json
import os
import uuid

import flax.nnx as nnx
import numpy as np
import pytest

from datarax_beam import from_source
from datarax_beam.shards import SHARDSET_FILE, SchemaError
from datarax_beam.shards.shardset import load_shardset
from datarax_beam.shards.writer import commit, write_shard_file, write_shardset
from datarax_beam.sources import ArrayRecordSourceConfig, ArrayRecordSourceModule
from datarax_beam.sources._shards import file_sha256
from datarax_beam.sources.array_record import ShardIntegrityError

from ..runners.conftest import PrefixFS  # registers the testfs:// scheme with Beam

N = 30


def _sealed(d, values, job_id=None, num_shards=3):
    """A shard set whose shardset.json records each shard's SHA-256 and a job id."""
    write_shardset(d, {"x": np.asarray(values, dtype=np.int64)}, num_shards=num_shards)
    ss = load_shardset(d)
    shards = tuple(dataclasses.replace(s, sha256=file_sha256(os.path.join(d, s.name))) for s in ss.shards)
    commit(dataclasses.replace(ss, shards=shards, job_id=job_id or uuid.uuid4().hex))
    return d


def _edit_meta(d, edit):
    path = os.path.join(d, SHARDSET_FILE)
    with open(path) as f:
        meta = json.load(f)
    edit(meta)
    with open(path, "w") as f:
        json.dump(meta, f)


def _xs(reader):
    return reader.get_batch(np.arange(len(reader)))["x"].tolist()


# -- checksums ---------------------------------------------------------------------------------
def test_a_swapped_shard_is_refused_naming_the_file(tmp_path):
    d = _sealed(str(tmp_path / "set"), range(N))
    a, b = (os.path.join(d, f"data-0000{i}-of-00003.array_record") for i in (0, 1))
    tmp = a + ".swap"
    os.rename(a, tmp), os.rename(b, a), os.rename(tmp, b)  # same counts, other content
    reader = ArrayRecordSourceModule(d)
    assert reader.get_batch([25])["x"].tolist() == [25]  # an intact shard still reads
    with pytest.raises(ShardIntegrityError, match=f"Shard '{a}' has SHA-256 .* but shardset.json records"):
        reader.get_batch([0])
    assert ArrayRecordSourceModule(d, ArrayRecordSourceConfig(verify=False)).get_batch([0])["x"].tolist() == [10]


def test_an_edited_shard_with_the_same_size_and_count_is_refused(tmp_path):
    d = _sealed(str(tmp_path / "set"), range(N))
    path = os.path.join(d, "data-00001-of-00003.array_record")
    size = os.path.getsize(path)
    write_shard_file(path, [np.int64(-i).tobytes() for i in range(10)])
    with open(path, "ab") as f:  # pad to the recorded size, as shard files are padded to blocks
        f.write(b"\0" * max(0, size - os.path.getsize(path)))
    with pytest.raises(ShardIntegrityError, match="data-00001-of-00003.array_record"):
        list(from_source(ArrayRecordSourceModule(d), batch_size=8))


def test_each_shard_is_hashed_once(tmp_path, monkeypatch):
    from datarax_beam.sources import _shards

    d = _sealed(str(tmp_path / "set"), range(N))
    calls = []
    real = _shards.file_sha256
    monkeypatch.setattr(_shards, "file_sha256", lambda p: calls.append(p) or real(p))
    reader = ArrayRecordSourceModule(d, ArrayRecordSourceConfig(shuffle=True))
    for _ in range(2):
        assert sorted(_ for b in from_source(reader, 7) for _ in np.asarray(b["x"]).tolist()) == list(range(N))
    assert sorted(calls) == sorted(reader.paths)


# -- a regenerated set: new fingerprint, no stale cache ----------------------------------------
def test_a_regenerated_set_has_another_fingerprint_and_refuses_old_state(tmp_path):
    d = str(tmp_path / "set")
    old = ArrayRecordSourceModule(_sealed(d, range(N)))
    state = {**old.get_state(), "position": 12}
    new = ArrayRecordSourceModule(_sealed(d, range(100, 100 + N)))  # same names, counts, sizes
    assert new.get_state()["fingerprint"] != state["fingerprint"]
    with pytest.raises(ValueError, match="saved from a different shard set .*regenerated"):
        new.set_state(state)
    # the same content rewritten by another job is another set too
    again = ArrayRecordSourceModule(_sealed(d, range(100, 100 + N)))
    assert again.get_state()["fingerprint"] != new.get_state()["fingerprint"]


def test_a_regenerated_remote_set_is_not_read_from_a_stale_cache(tmp_path):
    d, cache = str(tmp_path / "set"), str(tmp_path / "cache")
    remote = PrefixFS.PREFIX + d
    _sealed(d, range(N))
    config = ArrayRecordSourceConfig(cache_dir=cache)
    assert _xs(ArrayRecordSourceModule(remote, config)) == list(range(N))
    _sealed(d, range(100, 100 + N))  # day 2: same names, record counts and padded sizes
    assert _xs(ArrayRecordSourceModule(remote, config)) == list(range(100, 100 + N))
    assert _xs(ArrayRecordSourceModule(d)) == list(range(100, 100 + N))


# -- state from elsewhere ----------------------------------------------------------------------
@pytest.mark.parametrize("saved, ours, message", [
    (dict(shuffle=False), dict(shuffle=True), "saved with shuffle off, but this reader shuffles with seed 0"),
    (dict(shuffle=True), dict(shuffle=False), "saved with shuffle on, but this reader reads in index order"),
    (dict(shuffle=True, seed=1), dict(shuffle=True, seed=2), "shuffle on and another seed, but this reader shuffles with seed 2"),
])
def test_state_with_another_shuffle_setting_is_refused(tmp_path, saved, ours, message):
    d = _sealed(str(tmp_path / "set"), range(N))
    theirs = ArrayRecordSourceModule(d, ArrayRecordSourceConfig(**saved))
    reader = ArrayRecordSourceModule(d, ArrayRecordSourceConfig(**ours))
    with pytest.raises(ValueError, match=message):
        reader.set_state({**theirs.get_state(), "position": 3})


@pytest.mark.parametrize("change", ["data", "shuffle", "position"])
def test_state_applied_with_nnx_update_is_validated_like_set_state(tmp_path, change):
    d, other = _sealed(str(tmp_path / "set"), range(N)), _sealed(str(tmp_path / "other"), range(N))
    if change == "data":
        theirs = ArrayRecordSourceModule(other)
    else:
        theirs = ArrayRecordSourceModule(d, ArrayRecordSourceConfig(shuffle=change == "shuffle"))
    ours = ArrayRecordSourceModule(d)
    pipeline = from_source(ours, batch_size=4)
    bad = {**theirs.get_state(), "position": 5 if change != "position" else N + 1}
    with pytest.raises(ValueError) as by_set_state:
        ArrayRecordSourceModule(d).set_state(bad)
    state = nnx.state(theirs)
    nnx.replace_by_pure_dict(state, {"epoch": 0, "position": bad["position"],
                                     "data_fingerprint": bad["fingerprint"], "shuffle_id": bad["shuffle"]})
    nnx.update(ours, state)
    for read in (lambda: list(pipeline), lambda: next(ours)):
        with pytest.raises(ValueError) as by_update:
            read()
        assert str(by_update.value) == str(by_set_state.value)


def test_state_restores_on_another_host_count(tmp_path):
    """Issue 13 #5: saved on 2 hosts at step 3 and restored on 4, the next records are exactly
    the ones after those 2 x 3 batches of the global order (no longer refused: elastic)."""
    d = _sealed(str(tmp_path / "set"), range(N))

    def host(i, k):
        return from_source(ArrayRecordSourceModule(
            d, ArrayRecordSourceConfig(shard_index=i, shard_count=k)), batch_size=2)

    two = [host(i, 2) for i in range(2)]
    for p in two:
        it = iter(p)
        for _ in range(3):
            next(it)
    state = two[0].get_state()
    assert state["position"] == 12
    four = [host(i, 4) for i in range(4)]
    for p in four:
        p.set_state(state)
    assert [np.asarray(next(iter(p))["x"]).tolist() for p in four] == [[12, 13], [14, 15], [16, 17], [18, 19]]


# -- names that leave the directory ------------------------------------------------------------
@pytest.mark.parametrize("name", ["../victim/data-00000-of-00001.array_record", "ABSOLUTE", "sub/x.array_record"])
def test_shard_names_outside_the_set_are_never_opened(tmp_path, name, monkeypatch):
    victim = tmp_path / "victim"
    write_shardset(str(victim), {"x": np.full(10, 666, np.int64)})
    d = _sealed(str(tmp_path / "set"), range(10), num_shards=1)
    target = str(victim / "data-00000-of-00001.array_record") if name == "ABSOLUTE" else name
    _edit_meta(d, lambda m: m["shards"][0].update(name=target, sha256=None))
    opened = []
    import builtins

    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    with pytest.raises((SchemaError, ValueError), match="not a plain file name|shard name"):
        _xs(ArrayRecordSourceModule(d))
    with pytest.raises((SchemaError, ValueError), match="not a plain file name|shard name"):
        ArrayRecordSourceModule(os.path.join(d, "data-00000-of-00001.array_record"))  # a sibling file
    assert not [p for p in opened if "victim" in p]
