"""TFDS sources, fully offline and without TensorFlow.

Data comes from a tiny local ``GeneratorBasedBuilder`` prepared as ArrayRecord in a temp dir and
from ``tfds.testing.mock_data`` (TFDS's own fake-data tool, which works without TensorFlow for
``tfds.data_source`` / ``builder.as_data_source``).
"""

from __future__ import annotations

import json
import pickle
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from datarax_beam import from_tfds as top_level_from_tfds
from datarax_beam.sources import (
    DatasetUnavailableError,
    TFDSEagerConfig,
    TFDSEagerSource,
    TFDSStreamingConfig,
    TFDSStreamingSource,
    from_tfds,
)
from datarax_beam.testing import assert_restores_at_every_step

N_TRAIN = 23


class DataraxTinyDigits(tfds.core.GeneratorBasedBuilder):
    """23 train / 4 test records: image (2, 3, 1) uint8, label, text, id."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(2, 3, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=3),
                    "text": tfds.features.Text(),
                    "id": np.int64,
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(N_TRAIN), "test": self._generate_examples(4)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"image": np.full((2, 3, 1), i, np.uint8), "label": i % 3, "text": f"t{i}", "id": i}


NAME = "datarax_tiny_digits"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    builder = DataraxTinyDigits(data_dir=str(root), file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=3))
    return str(root)


def eager(data_dir, **kw):
    return TFDSEagerSource(TFDSEagerConfig(name=NAME, split="train", data_dir=data_dir, download=False, **kw))


def streaming(data_dir, **kw):
    cfg = TFDSStreamingConfig(name=NAME, split="train", data_dir=data_dir, download=False, **kw)
    return TFDSStreamingSource(cfg)


def test_guide_example_runs_under_mock_data():
    from datarax_beam import from_source
    from datarax_beam.dag.nodes import OperatorNode
    from datarax_beam.operators import ElementOperator, ElementOperatorConfig

    with tfds.testing.mock_data(num_examples=100):
        config = TFDSEagerConfig(name="mnist", split="train")
        train_source = TFDSEagerSource(config)

        def normalize(element, key=None):
            img = element.data["image"]
            return element.update_data({"image": img / 255.0})

        normalizer = ElementOperator(ElementOperatorConfig(stochastic=False), fn=normalize)
        train_pipeline = from_source(train_source, batch_size=32) >> OperatorNode(normalizer)
        shapes = []
        for i, batch in enumerate(train_pipeline):
            shapes.append(batch["image"].shape)
            assert float(batch["image"].max()) <= 1.0
            if i >= 2:
                break
        raw = train_source[5]
    assert shapes == [(32, 28, 28, 1)] * 3
    assert raw["image"].shape == (28, 28, 1) and raw["image"].dtype == np.uint8
    assert len(train_source) == 100 and "tensorflow" not in sys.modules


def test_mock_data_streaming_and_from_tfds():
    with tfds.testing.mock_data(num_examples=7):
        src = TFDSStreamingSource(TFDSStreamingConfig(name="mnist", split="test"))
        recs = list(src.iter_shard(0))
        picked = from_tfds("mnist", "test")
        forced = from_tfds("mnist", "test", eager=True)
    assert src.n_shards == 1 and len(recs) == 7
    assert recs[0]["image"].shape == (28, 28, 1) and recs[0]["image"].dtype == np.uint8
    # mock_data has no split metadata, so the size is unknown and the rule streams
    assert isinstance(picked, TFDSStreamingSource) and isinstance(forced, TFDSEagerSource)
    assert len(forced) == 7
    assert top_level_from_tfds is from_tfds


def test_eager_reads_records_as_numpy(data_dir):
    src = eager(data_dir)
    assert len(src) == N_TRAIN
    batch = src.get_batch([4, 0, 4])
    assert batch["image"].shape == (3, 2, 3, 1) and batch["image"].dtype == np.uint8
    assert batch["id"].dtype == np.int64 and batch["label"].tolist() == (batch["id"] % 3).tolist()
    assert batch["text"].dtype == object and batch["text"][0] == b"t%d" % batch["id"][0]
    assert np.all(batch["image"][1] == batch["id"][1])
    assert sorted(int(src[i]["id"]) for i in range(N_TRAIN)) == list(range(N_TRAIN))


def test_eager_pickles_small_and_reopens(data_dir):
    src = eager(data_dir, shuffle=True, seed=3)
    blob = pickle.dumps(src)
    assert len(blob) < 4000
    clone = pickle.loads(blob)
    np.testing.assert_array_equal(clone.get_batch([1, 2])["image"], src.get_batch([1, 2])["image"])
    assert clone.fingerprint() == src.fingerprint()


@pytest.mark.parametrize("shuffle", [False, True])
def test_eager_restores_and_shuffles_each_record_once(data_dir, shuffle):
    assert_restores_at_every_step(lambda: eager(data_dir, shuffle=shuffle, seed=1), epochs=2)
    src = eager(data_dir, shuffle=shuffle, seed=1)
    epochs = [[int(e.data["id"]) for e in src] for _ in range(2)]
    for ids in epochs:
        assert sorted(ids) == list(range(N_TRAIN))
    assert (epochs[0] != epochs[1]) == shuffle


def test_streaming_shards_match_whole_iteration(data_dir):
    src = streaming(data_dir, read_batch_size=4)
    assert src.n_shards == 3 and sum(src.shard_lengths()) == N_TRAIN
    by_shard = [r for i in range(src.n_shards) for r in src.iter_shard(i)]
    whole = list(src)
    assert [int(r["id"]) for r in by_shard] == [int(e.data["id"]) for e in whole]
    assert [e.metadata.index for e in whole] == list(range(N_TRAIN))
    assert whole[0].data["image"].shape == (2, 3, 1) and whole[0].data["image"].dtype == np.uint8
    # the same order as the eager source reads by index
    ref = eager(data_dir)
    assert [int(e.data["id"]) for e in whole] == ref.get_batch(np.arange(N_TRAIN))["id"].tolist()
    clone = pickle.loads(pickle.dumps(src))
    assert [int(r["id"]) for r in clone.iter_shard(2)] == [int(r["id"]) for r in src.iter_shard(2)]
    with pytest.raises(IndexError, match="Shard 3 is out of range"):
        src.iter_shard(3)


@pytest.mark.parametrize("shuffle", [False, True])
def test_streaming_restores_and_shuffles_each_record_once(data_dir, shuffle):
    make = lambda: streaming(data_dir, shuffle=shuffle, seed=2, shuffle_buffer_size=4, read_batch_size=3)  # noqa: E731
    assert_restores_at_every_step(make, epochs=2)
    src = make()
    epochs = [[int(e.data["id"]) for e in src] for _ in range(2)]
    for ids in epochs:
        assert sorted(ids) == list(range(N_TRAIN))
    assert (epochs[0] != epochs[1]) == shuffle


def test_include_and_exclude_keys(data_dir):
    assert sorted(eager(data_dir, include_keys=["image", "id"])[0]) == ["id", "image"]
    assert sorted(eager(data_dir, exclude_keys=["text"])[0]) == ["id", "image", "label"]
    assert sorted(next(iter(streaming(data_dir, include_keys=("label",)))).data) == ["label"]
    with pytest.raises(KeyError, match=r"include_keys.*\['nope'\]"):
        eager(data_dir, include_keys=["nope"])


def test_from_tfds_rule(data_dir):
    assert isinstance(from_tfds(NAME, "train", data_dir=data_dir, download=False), TFDSEagerSource)
    small = from_tfds(NAME, "train", data_dir=data_dir, eager_max_bytes=10, download=False)
    assert isinstance(small, TFDSStreamingSource)
    forced = from_tfds(NAME, "test", data_dir=data_dir, eager=False, download=False)
    assert isinstance(forced, TFDSStreamingSource) and len(list(forced)) == 4


def test_unavailable_dataset_gives_one_clear_error(tmp_path):
    with pytest.raises(DatasetUnavailableError, match=r"'mnist' is not prepared in .* could not be downloaded"):
        TFDSEagerSource(TFDSEagerConfig(name="mnist", split="train", data_dir=str(tmp_path), download=False))
    with pytest.raises(DatasetUnavailableError, match="'no_such_dataset_xyz' could not be found"):
        TFDSEagerSource(TFDSEagerConfig(name="no_such_dataset_xyz", split="train", data_dir=str(tmp_path)))


def test_tfrecord_only_dataset_names_the_tensorflow_extra(data_dir, tmp_path):
    # A prepared copy whose metadata says TFRecord (writing real TFRecords would need TensorFlow;
    # TFDS refuses random access from the metadata alone).
    import shutil

    src_dir = f"{data_dir}/{NAME}/1.0.0"
    dst = tmp_path / NAME / "1.0.0"
    shutil.copytree(src_dir, dst)
    info_path = dst / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["fileFormat"] = "tfrecord"
    info_path.write_text(json.dumps(info))
    for f in dst.glob("*.array_record-*"):
        f.rename(dst / f.name.replace(".array_record-", ".tfrecord-"))
    for make in (eager, streaming):
        with pytest.raises(NotImplementedError, match=r"only available in TFRecord.*datarax_beam\[tensorflow\]"):
            make(str(tmp_path))


def test_config_validation():
    with pytest.raises(ValueError, match="`split` must be a non-empty str"):
        TFDSEagerConfig(name="mnist", split="")
    with pytest.raises(ValueError, match="`shuffle_buffer_size` must be a positive int, got 0"):
        TFDSStreamingConfig(name="mnist", shuffle_buffer_size=0)
