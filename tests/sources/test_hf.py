"""Hugging Face sources, offline: datasets built with Dataset.from_dict, parquet/json/csv files,
save_to_disk directories, and a local directory laid out like the Hub's glue repository."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before `datasets` reads its config: never touch the network
os.environ["HF_DATASETS_OFFLINE"] = "1"

import io  # noqa: E402
import pickle  # noqa: E402

import datasets  # noqa: E402
import huggingface_hub.constants  # noqa: E402
import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import pytest  # noqa: E402

from datarax_beam import from_hf as top_level_from_hf  # noqa: E402
from datarax_beam.operators.image import DecodeImage  # noqa: E402
from datarax_beam.sources import (  # noqa: E402
    DatasetUnavailableError,
    HFEagerConfig,
    HFEagerSource,
    HFStreamingConfig,
    HFStreamingSource,
    from_hf,
)
from datarax_beam.testing import assert_restores_at_every_step  # noqa: E402

N = 30  # glue/sst2 stand-in: 30 train records in 2 parquet shards


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cache = tmp_path_factory.mktemp("hf_cache")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)


def sst2_like(n=N, start=0):
    return datasets.Dataset.from_dict(
        {
            "sentence": [f"sentence number {i}" for i in range(start, start + n)],
            "label": [i % 2 for i in range(start, start + n)],
            "idx": list(range(start, start + n)),
        }
    )


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory):
    """A directory holding ``glue/``, laid out like the Hub repository (README configs)."""
    root = tmp_path_factory.mktemp("hub")
    sst2 = root / "glue" / "sst2"
    sst2.mkdir(parents=True)
    sst2_like(20).to_parquet(str(sst2 / "train-00000-of-00002.parquet"))
    sst2_like(10, start=20).to_parquet(str(sst2 / "train-00001-of-00002.parquet"))
    sst2_like(4).to_parquet(str(sst2 / "validation-00000-of-00001.parquet"))
    (root / "glue" / "README.md").write_text(
        "---\nconfigs:\n- config_name: sst2\n  data_files:\n  - split: train\n"
        "    path: sst2/train-*\n  - split: validation\n    path: sst2/validation-*\n---\n"
    )
    return root


def glue_cfg(hub_dir, cls=HFEagerConfig, **kw):
    return cls(name=str(hub_dir / "glue"), config_name="sst2", split="train", **kw)


def test_guide_example_with_local_glue(hub_dir, monkeypatch):
    monkeypatch.chdir(hub_dir)  # `./glue` stands in for the Hub's glue: HF resolves local dirs first
    from datarax_beam import from_source
    from datarax_beam.dag.nodes import OperatorNode
    from datarax_beam.operators import ElementOperator, ElementOperatorConfig

    config = HFEagerConfig(name="glue", config_name="sst2", split="train", streaming=True)
    train_source = HFEagerSource(config)

    def extract_fields(element, key=None):
        return element.update_data({"text": element.data["sentence"], "label": element.data["label"]})

    extractor = ElementOperator(ElementOperatorConfig(stochastic=False), fn=extract_fields)
    pipeline = from_source(train_source, batch_size=16) >> OperatorNode(extractor)
    batches = []
    for i, batch in enumerate(pipeline):
        batches.append(batch)
        if i >= 2:
            break
    assert len(batches) == 2  # 30 records: 16 + 14
    assert list(batches[0]["text"][:2]) == ["sentence number 0", "sentence number 1"]
    assert batches[1]["label"].tolist() == [i % 2 for i in range(16, 30)]
    assert top_level_from_hf is from_hf


def test_map_style_reads_batches_as_numpy(hub_dir):
    src = HFEagerSource(glue_cfg(hub_dir))
    assert len(src) == N
    batch = src.get_batch([5, 0, 29])
    assert batch["idx"].dtype == np.int64 and batch["idx"].tolist() == [5, 0, 29]
    assert batch["sentence"].dtype == object and batch["sentence"][2] == "sentence number 29"
    assert isinstance(batch["sentence"][0], str)
    assert src[7]["label"] == 1


def png(value: int, shape=(4, 5, 3)) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(np.full(shape, value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_in_memory_dataset_gives_image_bytes_and_arrays():
    ds = datasets.Dataset.from_dict(
        {
            "img": [PIL.Image.fromarray(np.full((4, 5, 3), i, np.uint8)) for i in range(6)],
            "vec": [[i, i + 1] for i in range(6)],
            "ragged": [list(range(i)) for i in range(6)],
            "text": [f"t{i}" for i in range(6)],
        }
    )
    for src in (HFEagerSource(dataset=ds), HFStreamingSource(dataset=ds)):
        rec = next(iter(src)).data
        assert isinstance(rec["img"], bytes) and rec["img"].startswith(b"\x89PNG")  # not decoded
        assert rec["vec"].tolist() == [0, 1] and rec["text"] == "t0"
    batch = HFEagerSource(dataset=ds).get_batch([3, 4])
    assert batch["img"].dtype == object and all(isinstance(b, bytes) for b in batch["img"])
    decoded = DecodeImage("img").apply_batch(batch, None)["img"]
    assert decoded.shape == (2, 4, 5, 3) and np.all(decoded[0] == 3)
    assert batch["ragged"].dtype == object and batch["ragged"][1].tolist() == [0, 1, 2, 3]


@pytest.fixture
def image_folder(tmp_path):
    """An imagefolder layout: train/<label>/<file>, PNG and JPEG, sizes differ."""
    for label in ("cat", "dog"):
        (tmp_path / "photos" / "train" / label).mkdir(parents=True)
    for i in range(6):
        label = ("cat", "dog")[i % 2]
        (tmp_path / "photos" / "train" / label / f"{i}.png").write_bytes(png(i * 10, (4 + i, 5, 3)))
    return tmp_path / "photos"


def test_local_imagefolder_is_map_style_with_bytes(image_folder):
    src = from_hf("imagefolder", data_dir=str(image_folder))
    assert isinstance(src, HFEagerSource) and len(src) == 6
    batch = src.get_batch(np.arange(6))
    assert sorted(batch) == ["image", "label"] and all(b.startswith(b"\x89PNG") for b in batch["image"])
    images = DecodeImage().apply_batch(batch, None)["image"]
    assert sorted(int(a[0, 0, 0]) for a in images) == [0, 10, 20, 30, 40, 50]
    assert sorted(a.shape[0] for a in images) == [4, 5, 6, 7, 8, 9]
    files = from_hf("imagefolder", data_files={"train": str(image_folder / "train" / "*" / "*.png")})
    assert isinstance(files, HFEagerSource) and len(files) == 6
    stream = from_hf("imagefolder", data_dir=str(image_folder), streaming=True)
    assert isinstance(stream, HFStreamingSource)
    assert sorted(r["image"] for r in stream.iter_shard(0)) == sorted(batch["image"].tolist())


def test_image_bytes_conversion_errors():
    from datarax_beam.sources._hf_convert import image_bytes

    assert image_bytes({"bytes": b"x", "path": None}, "img") == b"x"
    with pytest.raises(OSError, match="Image feature 'img': cannot read the image file '/nope.png'"):
        image_bytes({"bytes": None, "path": "/nope.png"}, "img")
    with pytest.raises(TypeError, match="Image feature 'img': expected encoded bytes or a path"):
        image_bytes(3, "img")


def test_local_files_and_save_to_disk(tmp_path):
    ds = sst2_like(8)
    ds.to_json(str(tmp_path / "a.jsonl"))
    ds.to_csv(str(tmp_path / "a.csv"), index=False)
    datasets.DatasetDict({"train": ds, "test": sst2_like(3)}).save_to_disk(str(tmp_path / "saved"))
    sources = [
        HFEagerSource(HFEagerConfig(name="json", data_files=str(tmp_path / "a.jsonl"))),
        HFEagerSource(HFEagerConfig(name="csv", data_files={"train": str(tmp_path / "a.csv")})),
        HFEagerSource(HFEagerConfig(name=str(tmp_path / "saved"), split="train")),
        HFStreamingSource(HFStreamingConfig(name=str(tmp_path / "saved"), split="train")),
    ]
    for src in sources:
        assert [int(e.data["idx"]) for e in src] == list(range(8))
        assert next(iter(src)).data["sentence"] == "sentence number 0"
    assert len(HFEagerSource(HFEagerConfig(name=str(tmp_path / "saved"), split="test"))) == 3


def test_pickles_small_and_reopens(hub_dir):
    for src in (HFEagerSource(glue_cfg(hub_dir, shuffle=True)), HFStreamingSource(glue_cfg(hub_dir, HFStreamingConfig))):
        blob = pickle.dumps(src)
        assert len(blob) < 4000, len(blob)
        clone = pickle.loads(blob)
        assert clone.fingerprint() == src.fingerprint()
    eager = HFEagerSource(glue_cfg(hub_dir))
    clone = pickle.loads(pickle.dumps(eager))
    assert clone.get_batch([3, 9])["sentence"].tolist() == eager.get_batch([3, 9])["sentence"].tolist()


def test_streaming_shards_match_whole_iteration(hub_dir):
    src = HFStreamingSource(glue_cfg(hub_dir, HFStreamingConfig, read_batch_size=7))
    assert src.n_shards == 2
    shards = [[int(r["idx"]) for r in src.iter_shard(i)] for i in range(src.n_shards)]
    assert shards == [list(range(20)), list(range(20, 30))]
    whole = list(src)
    assert [int(e.data["idx"]) for e in whole] == list(range(N))
    assert [e.metadata.index for e in whole] == list(range(N))
    assert isinstance(whole[0].data["sentence"], str)
    clone = pickle.loads(pickle.dumps(src))
    assert [int(r["idx"]) for r in clone.iter_shard(1)] == shards[1]


@pytest.mark.parametrize("shuffle", [False, True])
def test_sources_restore_and_shuffle_each_record_once(hub_dir, shuffle):
    makers = [
        lambda: HFEagerSource(glue_cfg(hub_dir, shuffle=shuffle, seed=4)),
        lambda: HFEagerSource(glue_cfg(hub_dir, shuffle=shuffle, seed=4, streaming=True)),
        lambda: HFStreamingSource(
            glue_cfg(hub_dir, HFStreamingConfig, shuffle=shuffle, seed=4, shuffle_buffer_size=5, read_batch_size=8)
        ),
    ]
    for make in makers:
        assert_restores_at_every_step(make, epochs=2, max_steps=None if shuffle else 12)
        src = make()
        epochs = [[int(e.data["idx"]) for e in src] for _ in range(2)]
        for ids in epochs:
            assert sorted(ids) == list(range(N))
        assert (epochs[0] != epochs[1]) == shuffle


def test_streaming_set_epoch_replays_that_epochs_order(hub_dir):
    make = lambda: HFStreamingSource(glue_cfg(hub_dir, HFStreamingConfig, shuffle=True, shuffle_buffer_size=5))  # noqa: E731
    src = make()
    epochs = [[int(e.data["idx"]) for e in src] for _ in range(3)]
    fresh = make()
    fresh.set_epoch(2)
    assert [int(e.data["idx"]) for e in fresh] == epochs[2]
    assert fresh.get_state() == {"epoch": 3, "position": 0, "shard_pos": 0, "offset": 0}


def test_include_and_exclude_keys(hub_dir):
    assert sorted(HFEagerSource(glue_cfg(hub_dir, include_keys=["sentence"]))[0]) == ["sentence"]
    assert sorted(HFEagerSource(glue_cfg(hub_dir, exclude_keys=["idx"]))[0]) == ["label", "sentence"]
    stream = HFStreamingSource(glue_cfg(hub_dir, HFStreamingConfig, exclude_keys=["sentence"]))
    assert sorted(next(iter(stream)).data) == ["idx", "label"]
    with pytest.raises(KeyError, match=r"exclude_keys.*\['text'\]"):
        HFEagerSource(glue_cfg(hub_dir, exclude_keys=["text"]))
    with pytest.raises(ValueError, match="leave no feature"):
        HFEagerSource(glue_cfg(hub_dir, include_keys=["idx"], exclude_keys=["idx"]))


def test_from_hf_rule(hub_dir):
    assert isinstance(from_hf(str(hub_dir / "glue"), "train", config_name="sst2"), HFEagerSource)
    # local data is map-style whatever its size: the threshold is for downloads
    local = from_hf(str(hub_dir / "glue"), "train", config_name="sst2", eager_max_bytes=10)
    assert isinstance(local, HFEagerSource) and len(local) == N
    files = str(hub_dir / "glue" / "sst2" / "train-*.parquet")
    assert isinstance(from_hf("parquet", data_files=files, eager_max_bytes=10), HFEagerSource)
    streamed = from_hf(str(hub_dir / "glue"), "train", config_name="sst2", streaming=True)
    assert isinstance(streamed, HFStreamingSource) and streamed.n_shards == 2
    assert isinstance(from_hf(sst2_like(3)), HFEagerSource)
    assert isinstance(from_hf(sst2_like(3).to_iterable_dataset()), HFStreamingSource)
    assert isinstance(from_hf(datasets.DatasetDict({"test": sst2_like(2)}), "test"), HFEagerSource)


def test_unavailable_dataset_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./glue here: "glue" means the Hub, which is offline
    pattern = r"Hugging Face dataset 'glue' \(config 'sst2'\), split 'train' could not be downloaded"
    with pytest.raises(DatasetUnavailableError, match=pattern) as info:
        HFEagerSource(HFEagerConfig(name="glue", config_name="sst2", split="train", streaming=True))
    assert info.value.__cause__ is None and info.value.__suppress_context__
    with pytest.raises(DatasetUnavailableError, match=pattern):
        HFStreamingSource(HFStreamingConfig(name="glue", config_name="sst2", split="train"))
    with pytest.raises(DatasetUnavailableError, match="'glue'"):
        from_hf("glue", "train", config_name="sst2")
    with pytest.raises(DatasetUnavailableError, match="'parquet'"):
        HFEagerSource(HFEagerConfig(name="parquet", data_files=str(tmp_path / "missing.parquet")))


def test_config_validation():
    with pytest.raises(TypeError, match="`streaming` must be a bool"):
        HFEagerConfig(name="glue", streaming="yes")
    with pytest.raises(ValueError, match="`num_shards` must be a positive int, got 0"):
        HFStreamingConfig(name="glue", num_shards=0)
    with pytest.raises(TypeError, match="stream an IterableDataset with HFStreamingSource"):
        HFEagerSource(dataset=sst2_like(2).to_iterable_dataset())
