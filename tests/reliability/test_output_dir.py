"""The output directory: one job at a time (a lock checked at start and at commit, stale locks
taken over), a committed set that stays readable until its replacement commits, and names with
glob characters taken literally."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from datarax_beam import from_source
from datarax_beam.runners import materialize
from datarax_beam.shards import SHARDSET_FILE, load_shardset
from datarax_beam.sources import MemorySource
from datarax_beam.transforms import commit as commit_mod
from datarax_beam.transforms import lock as lock_mod
from datarax_beam.transforms.lock import OutputDirLocked

from ..runners.conftest import PrefixFS
from .helpers import read_all, shard_bytes

LOCK = ".datarax-lock"


def _pipeline(n=20, offset=0.0):
    return from_source(MemorySource(data={"x": np.arange(n, dtype=np.float32) + offset}), 8)


@pytest.fixture
def before_marker():
    def install(fn):
        commit_mod._before_marker = fn

    yield install
    commit_mod._before_marker = None


def test_a_second_job_is_refused_while_the_first_runs(tmp_path, before_marker):
    out = str(tmp_path / "out")
    seen = {}

    def second_job(shardset):  # runs while the first job commits, holding the directory
        for overwrite in (False, True):
            with pytest.raises(OutputDirLocked) as info:
                materialize(_pipeline(offset=100), out, overwrite=overwrite)
            seen[overwrite] = str(info.value)
        seen["job_id"] = shardset.job_id

    before_marker(second_job)
    first = materialize(_pipeline(), out, num_shards=2)
    assert seen["job_id"] == first.job_id
    for message in (seen[False], seen[True]):
        assert f"is in use by job {first.job_id} (pid {os.getpid()} on host {socket.gethostname()!r}" in message
    # the refused job touched nothing: the first one committed all its records
    assert read_all(out)["x"].tolist() == list(range(20))
    assert sorted(os.listdir(out)) == sorted([SHARDSET_FILE] + [s.name for s in first.shards])


def _write_lock(out, **fields):
    info = {"job_id": "f" * 32, "host": "another-host", "boot_id": "", "pid": 1, "pid_start": None,
            "started": time.time() - 7200, "heartbeat": time.time(), "tmp_dir": ".datarax-tmp-0123456789ab",
            "names": []}
    info.update(fields)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, LOCK), "w") as f:
        json.dump(info, f)


def test_a_job_that_lost_its_lock_does_not_commit(tmp_path, before_marker):
    out = str(tmp_path / "out")
    old = materialize(_pipeline(offset=50), out)
    before_marker(lambda shardset: _write_lock(out))  # another job took the directory over
    with pytest.raises(Exception, match=rf"lost its lock on {out!r}: it is now held by job f{{32}} "
                                        r"\(pid 1 on host 'another-host'.*nothing is committed"):
        materialize(_pipeline(), out, overwrite=True)
    assert load_shardset(out) == old and read_all(out)["x"].tolist() == [i + 50.0 for i in range(20)]
    assert sorted(os.listdir(out)) == sorted([LOCK, SHARDSET_FILE] + [s.name for s in old.shards])


@pytest.mark.parametrize("scheme", ["", PrefixFS.PREFIX], ids=["local", "testfs"])
def test_a_live_lock_is_refused_and_a_stale_one_taken_over(tmp_path, scheme):
    out = str(tmp_path / "out")
    target = scheme + out
    old = materialize(_pipeline(offset=50), target)
    dead_tmp = os.path.join(out, ".datarax-tmp-0123456789ab")
    os.makedirs(os.path.join(dead_tmp, "staged"))
    open(os.path.join(dead_tmp, "staged", "part"), "wb").close()
    renamed = os.path.join(out, "data-00000-of-00003.array_record")  # renamed, never committed
    open(renamed, "wb").close()
    victim = tmp_path / "victim.txt"
    victim.write_text("not the dead job's")
    names = ["data-00000-of-00003.array_record", old.shards[0].name, "../victim.txt", str(victim),
             "errors/../../victim.txt"]
    _write_lock(out, names=names)  # alive: a fresh heartbeat from another host
    with pytest.raises(OutputDirLocked, match=r"is in use by job f{32} \(pid 1 on host 'another-host', "
                                              r"started .* UTC, last heartbeat \d+ s ago\)\. Wait for it"):
        materialize(_pipeline(), target, overwrite=True)
    assert os.path.exists(dead_tmp) and load_shardset(target) == old  # a refused job changes nothing

    _write_lock(out, names=names, heartbeat=time.time() - lock_mod.STALE_AFTER_S - 60)  # now stale
    new = materialize(_pipeline(), target, overwrite=True)
    assert read_all(target)["x"].tolist() == list(range(20))
    assert not os.path.exists(dead_tmp) and not os.path.exists(renamed)  # its leftovers are gone
    assert victim.read_text() == "not the dead job's"  # names outside the directory are ignored
    assert sorted(os.listdir(out)) == sorted([SHARDSET_FILE] + [s.name for s in new.shards])


def test_a_lock_of_a_dead_process_on_this_host_is_stale_at_once(tmp_path):
    out = str(tmp_path / "out")
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    _write_lock(out, host=socket.gethostname(), boot_id=lock_mod._boot_id(), pid=int(proc.stdout))
    assert "is gone" in lock_mod.stale_reason(json.load(open(os.path.join(out, LOCK))))
    assert materialize(_pipeline(), out).num_records == 20
    # a live process of this host (this one) with an old heartbeat is stale only by its heartbeat
    _write_lock(out, host=socket.gethostname(), boot_id=lock_mod._boot_id(), pid=os.getpid(),
                pid_start=lock_mod._process_start(os.getpid()))
    assert lock_mod.stale_reason(json.load(open(os.path.join(out, LOCK)))) is None


def test_an_unreadable_lock_is_refused_until_it_is_old(tmp_path):
    out = str(tmp_path / "out")
    os.makedirs(out)
    with open(os.path.join(out, LOCK), "w") as f:
        f.write("{half a lock")
    with pytest.raises(OutputDirLocked, match=r"in use by an unreadable lock \(JSONDecodeError"):
        materialize(_pipeline(), out)
    old = time.time() - lock_mod.STALE_AFTER_S - 60
    os.utime(os.path.join(out, LOCK), (old, old))
    assert materialize(_pipeline(), out).num_records == 20


def test_overwrite_keeps_the_old_set_readable_until_the_new_one_commits(tmp_path, before_marker):
    out = str(tmp_path / "out")
    old = materialize(_pipeline(offset=50), out, num_shards=2)
    old_bytes = shard_bytes(out)

    def check_old_is_whole(shardset):
        assert load_shardset(out) == old and shard_bytes(out) == old_bytes
        assert read_all(out)["x"].tolist() == [i + 50.0 for i in range(20)]
        assert not set(shardset.shard_paths) & set(old.shard_paths)  # written beside, not over

    before_marker(check_old_is_whole)
    new = materialize(_pipeline(), out, num_shards=2, overwrite=True)
    assert read_all(out)["x"].tolist() == list(range(20)) and new.job_id != old.job_id
    # the replaced set's files are gone once the new one committed
    assert sorted(os.listdir(out)) == sorted([SHARDSET_FILE] + [s.name for s in new.shards])
    assert [s.name for s in new.shards] != [s.name for s in old.shards]


@pytest.mark.parametrize("scheme", ["", PrefixFS.PREFIX], ids=["local", "testfs"])
@pytest.mark.parametrize("name", ["run[1]", "a?b*"])
def test_output_dir_names_with_glob_characters(tmp_path, scheme, name):
    out = str(tmp_path / name)
    os.makedirs(tmp_path / "run1")  # what the glob run[1] would match
    (tmp_path / "run1" / "keep").write_text("keep")
    first = materialize(_pipeline(offset=50), scheme + out, num_shards=2)
    assert load_shardset(scheme + out) == first
    second = materialize(_pipeline(), scheme + out, num_shards=2, overwrite=True)
    assert read_all(scheme + out)["x"].tolist() == list(range(20))
    assert sorted(os.listdir(out)) == sorted([SHARDSET_FILE] + [s.name for s in second.shards])
    assert (tmp_path / "run1" / "keep").read_text() == "keep"
