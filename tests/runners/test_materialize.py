"""The offline invariant: materialize == online, byte-identical across runners and runs."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from datarax_beam import from_source
from datarax_beam.core.data_source import RandomAccessSource
from datarax_beam.runners import counters, materialize, options, run
from datarax_beam.shards import SHARDSET_FILE, load_shardset
from datarax_beam.shards.checksum import sha256_file
from datarax_beam.sources import ArrayRecordSourceConfig, ArrayRecordSourceModule, MemorySource
from datarax_beam.testing import IteratorSource

from .conftest import NUM_RECORDS, PrefixFS, make_pipeline, online_columns, read_all, shard_bytes
from .testfs import WORKER_PLUGIN

SHARDS = 4


def _run(tmp_path_factory, pipeline, name, opts, **kw):
    out = str(tmp_path_factory.mktemp(name) / "out")
    return run(pipeline, out, num_shards=SHARDS, options=opts, **kw)


@pytest.fixture(scope="module")
def inproc(tmp_path_factory, pipeline):
    # the reference: one thread compresses each chunk inline
    return _run(tmp_path_factory, pipeline, "inproc", options.in_process(), writer_threads=1)


@pytest.fixture(scope="module")
def inproc_repeat(tmp_path_factory, pipeline):
    # A second run whose every bundle is replayed 3 extra times and the replays' outputs dropped,
    # as a retried bundle's would be: many bundles on one worker, leftover temp parts. Also 4
    # writer threads over chunks of 250 records (4 compression tasks each, in flight while the
    # next chunk is computed): the bytes must not change.
    return _run(tmp_path_factory, pipeline, "repeat",
                options.in_process() + ["--direct_runner_bundle_repeat=3"], writer_threads=4, batch_size=250)


@pytest.fixture(scope="module")
def inproc_shuffled(tmp_path_factory, pipeline):
    return _run(tmp_path_factory, pipeline, "inproc_shuf", options.in_process(), shuffle=True, seed=3)


@pytest.fixture(scope="module")
def multi(tmp_path_factory, pipeline):
    # 2 worker processes, each compressing on 2 threads, chunks of 128 records
    return _run(tmp_path_factory, pipeline, "multi", options.multi_process(2), writer_threads=2, batch_size=128)


@pytest.fixture(scope="module")
def multi_shuffled(tmp_path_factory, pipeline):
    return _run(tmp_path_factory, pipeline, "multi_shuf", options.multi_process(2), shuffle=True, seed=3)


@pytest.fixture(scope="module")
def portable(tmp_path_factory, pipeline):
    return _run(tmp_path_factory, pipeline, "portable", options.portable())


@pytest.fixture(scope="module")
def portable_shuffled(tmp_path_factory, pipeline):
    return _run(tmp_path_factory, pipeline, "portable_shuf", options.portable(), shuffle=True, seed=3)


def test_materialized_equals_online(inproc, online):
    shardset = inproc.shardset
    assert shardset.num_records == NUM_RECORDS and len(shardset.shard_paths) == SHARDS
    assert [s.num_records for s in shardset.shards] == [250] * 4
    assert sorted(os.listdir(shardset.path)) == sorted(
        [f"data-{i:05d}-of-{SHARDS:05d}.array_record" for i in range(SHARDS)] + [SHARDSET_FILE])
    decoded = read_all(shardset.path)
    assert sorted(decoded) == sorted(online)
    for k in online:
        assert decoded[k].dtype == online[k].dtype
        np.testing.assert_array_equal(decoded[k], online[k])
    # the train-time reader decompresses on its read threads: the same records
    with ArrayRecordSourceModule(shardset.path, ArrayRecordSourceConfig(read_threads=2)) as reader:
        batches = list(from_source(reader, 96))
    for k in online:
        np.testing.assert_array_equal(np.concatenate([np.asarray(b[k]) for b in batches]), online[k])
    # stored form (docs/format.md): zstd frames or raw codec bytes behind a 1-byte tag
    from array_record.python.array_record_module import ArrayRecordReader

    stored = ArrayRecordReader(shardset.shard_paths[0]).read_all()
    assert {r[0] for r in stored} <= {0, 1} and len(stored) == 250


def test_shardset_metadata(inproc, pipeline):
    loaded = load_shardset(inproc.shardset.path)
    assert loaded == inproc.shardset
    assert loaded.fingerprint == pipeline.fingerprint()
    assert {f.name: (f.dtype, f.shape) for f in loaded.schema.features} == {
        "image": ("<f4", (8, 8)), "label": ("<i8", ())}  # the source's int64 (used to be narrowed)
    assert loaded.total_bytes == sum(os.path.getsize(p) for p in loaded.shard_paths)
    assert {"datarax_beam", "apache-beam", "jax"} <= set(loaded.versions)
    # format 2: a checksum of every committed file, and a job id of its own
    for info, path in zip(loaded.shards, loaded.shard_paths, strict=True):
        assert info.sha256 == sha256_file(path)
    assert len(loaded.job_id) == 32 and int(loaded.job_id, 16) >= 0
    with open(os.path.join(loaded.path, SHARDSET_FILE)) as f:
        assert json.load(f)["format_version"] == 2


def test_counters_exact(inproc):
    c = counters(inproc.result)
    assert c["records_read"] == c["records_transformed"] == c["records_written"] == NUM_RECORDS
    assert c["bytes_written"] == inproc.shardset.total_bytes
    assert c["record_bytes_encoded"] == NUM_RECORDS * (8 * 8 * 4 + 8)  # int64 labels kept
    assert c["kernel_compilations"] == 1 and c["kernel_micro_secs"] > 0


def test_compiles_once_per_worker_over_many_bundles(inproc_repeat, inproc):
    c = counters(inproc_repeat.result)
    # the worker's DoFn ran 4 bundles (3 discarded replays + the committed one), compiled once
    assert c["worker_bundles"] == 4
    assert c["worker_kernel_compilations"] == 1
    assert c["kernel_compilations"] == 0  # the committed bundle reused the earlier compilation
    # replayed bundles left temp parts behind; the commit kept exactly one copy of each record
    assert shard_bytes(inproc_repeat.shardset.path) == shard_bytes(inproc.shardset.path)
    assert not [n for n in os.listdir(inproc_repeat.shardset.path) if n.startswith(".")]


def test_multi_process_is_byte_identical(multi, inproc):
    assert shard_bytes(multi.shardset.path) == shard_bytes(inproc.shardset.path)
    assert 1 <= counters(multi.result)["kernel_compilations"] <= 2  # once per worker


def test_portable_is_byte_identical(portable, inproc):
    assert shard_bytes(portable.shardset.path) == shard_bytes(inproc.shardset.path)


def test_shuffle_is_a_runner_independent_permutation(inproc_shuffled, multi_shuffled, portable_shuffled, online, inproc):
    a = shard_bytes(inproc_shuffled.shardset.path)
    assert a == shard_bytes(multi_shuffled.shardset.path) == shard_bytes(portable_shuffled.shardset.path)
    assert a != shard_bytes(inproc.shardset.path)
    decoded = read_all(inproc_shuffled.shardset.path)
    # every record exactly once, each identical to its online value (keys follow the record)
    ref = {online["image"][i].tobytes(): i for i in range(NUM_RECORDS)}
    found = sorted(ref[img.tobytes()] for img in decoded["image"])
    assert found == list(range(NUM_RECORDS))
    assert inproc_shuffled.shardset.shuffle and inproc_shuffled.shardset.seed == 3


class _Exploding(RandomAccessSource):
    """Fails when a worker reads record 600 or later (a job that dies mid-way)."""

    def __init__(self, n):
        super().__init__(name="exploding")
        self.n = n

    def __len__(self):
        return self.n

    def _read(self, indices):
        if indices.max() >= 600:
            raise OSError(f"disk on fire at record {int(indices.max())}")
        return {"image": np.zeros((len(indices), 8, 8), np.float32), "label": indices.astype(np.int32)}


def test_committed_dir_refused_then_failed_overwrite_keeps_it(inproc, tmp_path):
    out = str(tmp_path / "copy")
    shutil.copytree(inproc.shardset.path, out)
    before = sorted(os.listdir(out))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        materialize(make_pipeline(), out, num_shards=SHARDS)
    with pytest.raises(Exception, match="disk on fire"):  # read errors are dead letters unless
        materialize(make_pipeline(_Exploding(1000)), out, num_shards=SHARDS, overwrite=True,
                    on_error="raise")
    # the failed rerun changed nothing: the committed set is still there, whole
    assert sorted(os.listdir(out)) == before
    assert shard_bytes(out) == shard_bytes(inproc.shardset.path)
    assert load_shardset(out).job_id == inproc.shardset.job_id


def test_non_local_filesystem(tmp_path, inproc):
    # portable (LOOPBACK) workers run in this process, where the test scheme is registered; the
    # memory source is staged to, read from, and committed on testfs://
    out = PrefixFS.PREFIX + str(tmp_path / "remote" / "out")
    shardset = materialize(make_pipeline(), out, num_shards=SHARDS, options=options.portable())
    assert shardset.path == out and shardset.num_records == NUM_RECORDS
    local = str(tmp_path / "remote" / "out")
    assert sorted(os.listdir(local)) == sorted(os.listdir(inproc.shardset.path))
    assert shard_bytes(local) == shard_bytes(inproc.shardset.path)
    assert load_shardset(out).num_records == NUM_RECORDS



def _iterator_source(columns, n_shards=None):
    return IteratorSource(columns, n_shards=n_shards)


@pytest.mark.parametrize("n_shards", [None, 3])
def test_iterator_sources_match_random_access(n_shards, inproc, inproc_shuffled, pipeline, tmp_path):
    src = _iterator_source(pipeline.source.columns, n_shards)
    it_pipeline = make_pipeline(src)
    plain = materialize(it_pipeline, str(tmp_path / "plain"), num_shards=SHARDS)
    np.testing.assert_array_equal(read_all(plain.path)["image"], online_columns(it_pipeline)["image"])
    assert shard_bytes(plain.path) == shard_bytes(inproc.shardset.path)
    shuffled = materialize(it_pipeline, str(tmp_path / "shuf"), num_shards=SHARDS, shuffle=True, seed=3)
    assert shard_bytes(shuffled.path) == shard_bytes(inproc_shuffled.shardset.path)


def test_text_bytes_and_ragged_features(tmp_path):
    n = 50
    src = MemorySource(data={
        "text": [f"record {i} é" for i in range(n)],
        "raw": [bytes([i]) * i for i in range(n)],
        "ragged": [np.arange(i % 7, dtype=np.int32) for i in range(n)],
        "x": np.arange(n, dtype=np.float32),
    })
    from datarax_beam import from_source

    p = from_source(src, 16)
    shardset = materialize(p, str(tmp_path / "out"), num_shards=3)
    decoded = read_all(shardset.path)
    assert decoded["text"].tolist() == [f"record {i} é" for i in range(n)]
    assert decoded["raw"].tolist() == [bytes([i]) * i for i in range(n)]
    assert [r.tolist() for r in decoded["ragged"]] == [list(range(i % 7)) for i in range(n)]
    np.testing.assert_array_equal(decoded["x"], np.arange(n, dtype=np.float32))


def test_a_host_operator_that_reuses_its_output_buffer_stores_every_batchs_values(tmp_path):
    # The writer compresses batches while the next ones are computed: an output array written
    # to again by the next batch must not change what an earlier batch stored.
    from datarax_beam import OperatorNode, from_source
    from datarax_beam.operators import HostOperator

    buffer = np.zeros((8, 3), np.float32)

    def fill(batch, keys):
        n = len(batch["x"])
        buffer[:n] = batch["x"][:, None]
        return {"y": buffer[:n]}

    n = 64
    p = from_source(MemorySource(data={"x": np.arange(n, dtype=np.float32)}), 8) >> OperatorNode(
        HostOperator(fill, threads=1, record_wise=False))
    shardset = materialize(p, str(tmp_path / "out"), num_shards=2, options=options.in_process(), writer_threads=2)
    np.testing.assert_array_equal(read_all(shardset.path)["y"], np.repeat(np.arange(n, dtype=np.float32)[:, None], 3, 1))


class _OneBuffer(RandomAccessSource):
    """Fills the same array on every read."""

    def __init__(self, n):
        super().__init__()
        self.n, self.buffer = n, np.zeros((8, 3), np.float32)

    def __len__(self):
        return self.n

    def _read(self, indices):
        self.buffer[: len(indices)] = np.asarray(indices, np.float32)[:, None]
        return {"y": self.buffer[: len(indices)]}


def test_a_source_that_reuses_its_buffer_stores_every_batchs_values(tmp_path):
    from datarax_beam import from_source

    shardset = materialize(from_source(_OneBuffer(64), 8), str(tmp_path / "out"), num_shards=2,
                           options=options.in_process())
    np.testing.assert_array_equal(read_all(shardset.path)["y"][:, 0], np.arange(64, dtype=np.float32))


def test_empty_source_commits_empty_shards(tmp_path):
    from datarax_beam import from_source

    shardset = materialize(from_source(MemorySource(data={"x": np.zeros((0,), np.float32)}), 8),
                           str(tmp_path / "empty"), num_shards=2)
    assert shardset.num_records == 0 and len(shardset.shard_paths) == 2
    assert all(os.path.exists(p) for p in shardset.shard_paths)


def test_full_pass_statistics_operator_matches_online(tmp_path, pipeline):
    from datarax_beam import OperatorNode, from_source
    from datarax_beam.core.operator import OperatorConfig
    from datarax_beam.operators.statistics import StatisticsOperator
    from datarax_beam.statistics import StatSpec

    standardize = StatisticsOperator(
        OperatorConfig(),
        fn=lambda e, k, s: e.update_data(
            {"image": (e.data["image"] - s["image"]["mean"]) / s["image"]["std"]}),
        statistics=[StatSpec("image", axes="all")],
    )
    p = from_source(pipeline.source, 64) >> OperatorNode(standardize)
    shardset = materialize(p, str(tmp_path / "stats"), num_shards=2)
    np.testing.assert_array_equal(read_all(shardset.path)["image"], online_columns(p)["image"])
    assert set(shardset.statistics) == {"image"} and "mean" in shardset.statistics["image"]


def test_non_local_filesystem_with_worker_processes(tmp_path, inproc):
    # Worker processes register the scheme through --beam_plugins; staging, shard writes and the
    # commit all go through testfs:// from other processes.
    out = PrefixFS.PREFIX + str(tmp_path / "remote_mp" / "out")
    shardset = materialize(make_pipeline(), out, num_shards=SHARDS,
                           options=options.multi_process(2) + [WORKER_PLUGIN])
    assert shardset.path == out and shardset.num_records == NUM_RECORDS
    assert shard_bytes(str(tmp_path / "remote_mp" / "out")) == shard_bytes(inproc.shardset.path)


def test_worker_processes_read_a_memory_source_staged_in_shared_memory(tmp_path, monkeypatch, pipeline, inproc):
    from datarax_beam.transforms import staging

    made = []
    real = staging.shared_memory_dir

    def spy(nbytes, root=str(tmp_path / "shm")):  # a stand-in for /dev/shm the test can look into
        os.makedirs(root, exist_ok=True)
        made.append(real(nbytes, root))
        return made[-1]

    import importlib

    driver = importlib.import_module("datarax_beam.runners.materialize")  # the module, not the function
    monkeypatch.setattr(driver, "shared_memory_dir", spy)
    done = _run_plain(tmp_path, pipeline, options.multi_process(2))
    assert len(made) == 1 and made[0] is not None and not os.path.exists(made[0])  # used, then removed
    assert shard_bytes(done.shardset.path) == shard_bytes(inproc.shardset.path)


def _run_plain(tmp_path, pipeline, opts):
    return run(pipeline, str(tmp_path / "out"), num_shards=SHARDS, options=opts)
