"""`datarax_beam.progress`: when displays show, the tqdm bar, the writers' progress files and
the driver's poll of them, live metrics, and `materialize(progress=...)` end to end."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import threading

import numpy as np
import pytest

from datarax_beam import from_source, materialize, progress
from datarax_beam.operators import ElementOperator, ElementOperatorConfig
from datarax_beam.progress import Bar, JobProgress, Reporter, read_reports
from datarax_beam.sources import MemorySource


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def default_enabled(monkeypatch):
    monkeypatch.delenv(progress.ENV_VAR, raising=False)
    progress.set_enabled(None)
    yield
    progress.set_enabled(None)


def test_shown_in_a_terminal_and_off_otherwise_or_when_asked(monkeypatch):
    assert progress.is_enabled(stream=Terminal()) and not progress.is_enabled(stream=io.StringIO())
    assert not progress.is_enabled(False, stream=Terminal()) and progress.is_enabled(True, stream=io.StringIO())
    monkeypatch.setenv(progress.ENV_VAR, "0")
    assert not progress.is_enabled(stream=Terminal())
    monkeypatch.setenv(progress.ENV_VAR, "1")
    assert progress.is_enabled(stream=io.StringIO())
    progress.set_enabled(False)
    assert not progress.is_enabled(stream=Terminal()) and progress.is_enabled(True)


@pytest.mark.parametrize("bad", ["yes", 1, 0.5])
def test_progress_must_be_a_bool_or_none(bad):
    with pytest.raises(TypeError, match=f"`progress` must be True, False or None, got {bad!r}"):
        progress.is_enabled(bad)
    with pytest.raises(TypeError, match="`progress` must be True, False or None"):
        progress.set_enabled(bad)


def _last_line(text: str) -> str:
    # tqdm pads a line with spaces to blank out a longer previous one (a rate with more digits)
    return [s for s in re.split(r"[\r\n]", text) if s.strip()][-1].rstrip()


def test_bar_shows_records_rate_eta_and_failures():
    out = Terminal()
    with Bar(10, "job", stream=out) as bar:
        bar.update(3)
        bar.update(2, failed=1)
        bar.set(4)  # counts never go down
        assert (bar.n, bar.failed) == (5, 1)
    line = _last_line(out.getvalue())
    assert line.startswith("job:  50%|") and " 5/10 [" in line
    assert re.search(r"<\d\d:\d\d, +[\d.?]+ records/s, 1 failed\]$", line), line


def test_bar_of_unknown_total_shows_count_and_rate():
    out = Terminal()
    with Bar(None, "stream", stream=out, failed=False) as bar:
        bar.update(7)
    line = _last_line(out.getvalue())
    assert line.startswith("stream: 7 records [") and "records/s]" in line and "%" not in line


def test_a_disabled_bar_counts_and_prints_nothing():
    out = io.StringIO()
    with Bar(10, "job", stream=out) as bar:  # not a terminal: off
        bar.update(4, failed=2)
        assert not bar.active and (bar.n, bar.failed) == (4, 2)
    assert out.getvalue() == ""


def test_a_failing_display_turns_itself_off_without_raising():
    class Broken(Terminal):
        def write(self, s):
            raise OSError("display gone")

    with Bar(10, "job", stream=Broken()) as bar:
        bar.update(3)
        bar.update(3)
    assert not bar.active
    # the failed write left no lock held: another thread (a job's poll thread) still draws
    out = Terminal()
    with Bar(10, "next", stream=out) as bar:
        worker = threading.Thread(target=bar.update, args=(4,))
        worker.start()
        worker.join(timeout=60)
        assert not worker.is_alive() and bar.active
    assert " 4/10 [" in _last_line(out.getvalue())


def test_track_yields_every_item_and_counts_records():
    out = Terminal()
    items = [np.arange(4), np.arange(3), np.arange(5)]
    assert [len(x) for x in progress.track(iter(items), 12, "stats", stream=out)] == [4, 3, 5]
    assert " 12/12 [" in _last_line(out.getvalue())
    # an item without a length is passed on; only its count is lost
    assert list(progress.track([1, 2], 2, "odd", stream=Terminal())) == [1, 2]


def _files(tmp_dir):
    d = os.path.join(tmp_dir, progress.PROGRESS_DIR)
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def test_reporter_writes_its_counts_at_most_every_interval(tmp_path):
    tmp = str(tmp_path)
    rep = Reporter(tmp, interval=3600)
    rep.add(5)  # the first count is written at once
    (name,) = _files(tmp)
    path = os.path.join(tmp, progress.PROGRESS_DIR, name)
    rep.add(4, failed=1)  # within the interval: kept in memory
    assert json.load(open(path)) == {"written": 5, "failed": 0}
    rep.flush()  # end of bundle
    assert json.load(open(path)) == {"written": 9, "failed": 1}
    os.remove(path)
    rep.flush()  # nothing new: no write
    assert _files(tmp) == []
    assert Reporter(tmp).interval == 1.0 and Reporter("gs://bucket/tmp").interval == 10.0


def test_reporter_unpickles_empty_with_its_own_file(tmp_path):
    tmp = str(tmp_path)
    rep = Reporter(tmp, interval=0)
    rep.add(2)
    a, b = pickle.loads(pickle.dumps(rep)), pickle.loads(pickle.dumps(rep))
    assert (a.written, a.failed, a.interval) == (0, 0, 0)
    a.add(3, 1)
    b.add(10)
    assert len(_files(tmp)) == 3 and read_reports(tmp) == (15, 1)


def test_reporter_never_raises(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # its "progress" sub-directory cannot be made
    rep = Reporter(str(blocker), interval=0)
    rep.add(1)
    rep.flush()
    assert read_reports(str(blocker)) is None


def test_read_reports_sums_files_and_skips_unreadable_ones(tmp_path):
    tmp = str(tmp_path)
    assert read_reports(tmp) is None  # no progress yet
    d = tmp_path / progress.PROGRESS_DIR
    d.mkdir()
    (d / "a.json").write_text('{"written": 7, "failed": 1}')
    (d / "b.json").write_text('{"written": 3, "failed": 0}')
    (d / "c.json").write_text('{"writ')  # being rewritten
    (d / "note.txt").write_text("not a report")
    assert read_reports(tmp) == (10, 1)


class FakeCounter:
    def __init__(self, name, attempted, committed=None):
        self.key = type("K", (), {"metric": type("M", (), {"name": name})()})()
        self.attempted, self.committed = attempted, committed


class FakeResult:
    """A running job's result whose metrics grow (as Dataflow's do) or fail."""

    def __init__(self, written, failed, fail=False):
        self.written, self.failed, self.fail = written, failed, fail

    def metrics(self):
        if self.fail:
            raise NotImplementedError("no metrics while running")
        counters = [FakeCounter("records_written", self.written), FakeCounter("records_failed", self.failed),
                    FakeCounter("records_read", 10**6)]
        return type("Q", (), {"query": lambda _, f: {"counters": counters}})()


def test_live_counts_read_beam_metrics():
    assert progress.live_counts(FakeResult(12, 2)) == (12, 2)


def test_job_progress_shows_the_larger_of_files_and_live_metrics(tmp_path):
    tmp, out = str(tmp_path), Terminal()
    Reporter(tmp, interval=0).add(30, 2)
    with JobProgress(tmp, 100, enabled=True, stream=out, interval=3600) as display:
        assert display.poll() == (30, 2)
        display.attach(FakeResult(40, 1))
        assert display.poll() == (40, 2)
        display.refresh()
        assert " 42/100 [" in _last_line(out.getvalue())
        display.attach(FakeResult(0, 0, fail=True))  # the runner cannot say: files only
        assert display.poll() == (30, 2) and display._result is None


def test_job_progress_ends_on_the_committed_counts(tmp_path):
    out = Terminal()
    committed = type("ShardSet", (), {"num_records": 18, "num_failed": 2})()
    with JobProgress(str(tmp_path), None, enabled=True, stream=out, interval=3600) as display:
        display.finish(committed)
    line = _last_line(out.getvalue())
    assert "100%" in line and " 20/20 [" in line and line.endswith(" 2 failed]")
    with JobProgress(str(tmp_path), 5, enabled=True, stream=Terminal(), interval=3600) as display:
        display.finish(None)  # the job failed: the bar just closes
    silent = io.StringIO()
    with JobProgress(str(tmp_path), 5, stream=silent) as display:  # not a terminal
        display.refresh()
        display.finish(committed)
    assert silent.getvalue() == ""


def poison(element, key):  # label 3 becomes NaN: a failed record with check_finite
    import jax.numpy as jnp

    x = element.data["x"]
    return element.update_data({"x": jnp.where(element.data["label"] == 3, jnp.nan, x)})


def test_materialize_shows_records_rate_and_failures(tmp_path, capsys):
    data = {"x": np.arange(20, dtype=np.float32), "label": np.arange(20, dtype=np.int32) % 10}
    pipeline = from_source(MemorySource(data=data), batch_size=8) >> ElementOperator(
        ElementOperatorConfig(), fn=poison)
    shardset = materialize(pipeline, str(tmp_path / "a"), num_shards=2, check_finite=True, progress=True)
    err = capsys.readouterr().err
    assert shardset.num_records == 18
    line = _last_line(err)
    assert line.startswith("materialize: 100%|") and " 20/20 [" in line
    assert re.search(r"[\d.]+ records/s, 2 failed\]$", line), line
    materialize(pipeline, str(tmp_path / "b"), check_finite=True, progress=False)
    assert capsys.readouterr().err == ""
    with pytest.raises(RuntimeError, match="Record 3 .* failed in stage .check_finite."):  # as without progress
        materialize(pipeline, str(tmp_path / "d"), check_finite=True, on_error="raise", progress=True)
    assert "materialize:" in capsys.readouterr().err and not (tmp_path / "d" / "shardset.json").exists()
    with pytest.raises(TypeError, match="`progress` must be True, False or None, got 'yes'"):
        materialize(pipeline, str(tmp_path / "c"), progress="yes")
    assert not (tmp_path / "c").exists()


def test_online_statistics_pass_shows_records(capsys):
    from datarax_beam.operators.statistics import Normalize

    data = {"x": np.arange(3000, dtype=np.float32)}
    pipeline = from_source(MemorySource(data=data), batch_size=100) >> Normalize("x")
    progress.set_enabled(True)
    assert float(pipeline.statistics["x"]["mean"]) == pytest.approx(1499.5)
    line = _last_line(capsys.readouterr().err)
    assert line.startswith("statistics: 100%|") and " 3000/3000 [" in line and "records/s" in line


def test_first_open_of_a_remote_shard_set_shows_the_copy(tmp_path, capsys):
    from datarax_beam.shards.writer import write_shardset
    from datarax_beam.sources import ArrayRecordSourceConfig, ArrayRecordSourceModule

    from .runners.testfs import PrefixFS  # registers the testfs:// scheme (a stand-in for gs://)

    write_shardset(str(tmp_path / "set"), {"x": np.arange(30, dtype=np.float32)}, num_shards=3)
    remote = PrefixFS.PREFIX + str(tmp_path / "set")
    progress.set_enabled(True)
    reader = ArrayRecordSourceModule(remote, ArrayRecordSourceConfig(cache_dir=str(tmp_path / "cache")))
    assert len(reader) == 30
    line = _last_line(capsys.readouterr().err)
    assert line.startswith(f"fetch {remote}: 100%|") and " 30/30 [" in line and "records/s]" in line
