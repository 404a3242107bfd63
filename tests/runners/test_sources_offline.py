"""Dataset sources on Beam: TFDS and Hugging Face pipelines materialize to exactly what they
yield online (random-access sources read by index range, streaming ones by source shard)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before `datasets` reads its config: never touch the network
os.environ["HF_DATASETS_OFFLINE"] = "1"

import datasets  # noqa: E402
import flax.nnx as nnx  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from datarax_beam import from_source  # noqa: E402
from datarax_beam.operators import ElementOperator, ElementOperatorConfig  # noqa: E402
from datarax_beam.runners import materialize, options  # noqa: E402
from datarax_beam.sources import (  # noqa: E402
    ArrayRecordSourceModule,
    HFEagerConfig,
    HFEagerSource,
    HFStreamingConfig,
    HFStreamingSource,
    TFDSEagerConfig,
    TFDSEagerSource,
    TFDSStreamingConfig,
    TFDSStreamingSource,
)
from datarax_beam.testing import assert_same  # noqa: E402

N = 40


class DataraxOfflineTiny(tfds.core.GeneratorBasedBuilder):
    """40 records: image (4, 4, 1) uint8, label, text."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(4, 4, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=3),
            "text": tfds.features.Text(),
        }))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(N):
            yield i, {"image": np.full((4, 4, 1), i, np.uint8), "label": i % 3, "text": f"t{i}"}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    builder = DataraxOfflineTiny(data_dir=str(root), file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=3))
    return str(root)


@pytest.fixture(scope="module")
def parquet_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    files = []
    for part, start in enumerate((0, 25)):
        stop = 25 if start == 0 else N
        ds = datasets.Dataset.from_dict({
            "sentence": [f"sentence {i}" for i in range(start, stop)],
            "label": [i % 2 for i in range(start, stop)],
            "score": np.linspace(0, 1, N, dtype=np.float32)[start:stop].tolist(),
        })
        path = str(root / f"train-{part}.parquet")
        ds.to_parquet(path)
        files.append(path)
    return files


def make_source(kind, tfds_dir, parquet_files):
    if kind == "tfds_eager":
        return TFDSEagerSource(TFDSEagerConfig(name="datarax_offline_tiny", split="train",
                                               data_dir=tfds_dir, download=False))
    if kind == "tfds_streaming":
        return TFDSStreamingSource(TFDSStreamingConfig(name="datarax_offline_tiny", split="train",
                                                       data_dir=tfds_dir, download=False))
    cls, cfg = (HFEagerSource, HFEagerConfig) if kind == "hf_eager" else (HFStreamingSource, HFStreamingConfig)
    return cls(cfg(name="parquet", split="train", data_files={"train": parquet_files}))


def make_pipeline(source, numeric):
    """A deterministic op on a numeric feature and a stochastic one, keyed per record."""

    def scale(e, k):
        return e.update_data({numeric: e.data[numeric] * 2})

    def noise(e, k):
        return e.update_data({"noise": jax.random.uniform(k, ())})

    return (from_source(source, batch_size=8)
            >> ElementOperator(ElementOperatorConfig(), fn=scale)
            >> ElementOperator(ElementOperatorConfig(stochastic=True, stream_name="noise"), fn=noise,
                               rngs=nnx.Rngs(noise=7)))


def online(pipeline):
    batches = list(pipeline)
    return {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in batches[0]}


@pytest.mark.parametrize("kind,numeric", [
    ("tfds_eager", "image"), ("tfds_streaming", "image"), ("hf_eager", "score"), ("hf_streaming", "score"),
])
def test_dataset_sources_materialize_to_what_they_yield_online(tmp_path, tfds_dir, parquet_files, kind, numeric):
    source = make_source(kind, tfds_dir, parquet_files)
    if kind.endswith("streaming"):
        assert source.n_shards > 1  # read by source shard in parallel
    pipeline = make_pipeline(source, numeric)
    shardset = materialize(pipeline, str(tmp_path / "out"), num_shards=2, options=options.in_process())
    assert shardset.num_records == N
    back = ArrayRecordSourceModule(shardset.path).get_batch(np.arange(N))
    assert_same(back, online(make_pipeline(make_source(kind, tfds_dir, parquet_files), numeric)))


@pytest.mark.parametrize("kind", ["tfds_eager", "hf_eager"])
def test_random_access_dataset_sources_travel_to_worker_processes(tmp_path, tfds_dir, parquet_files, kind):
    numeric = "image" if kind.startswith("tfds") else "score"
    pipeline = make_pipeline(make_source(kind, tfds_dir, parquet_files), numeric)
    one = materialize(pipeline, str(tmp_path / "one"), num_shards=2, options=options.in_process())
    two = materialize(pipeline, str(tmp_path / "two"), num_shards=2, options=options.multi_process(2))
    for a, b in zip(one.shard_paths, two.shard_paths, strict=True):
        with open(a, "rb") as fa, open(b, "rb") as fb:
            assert fa.read() == fb.read()
