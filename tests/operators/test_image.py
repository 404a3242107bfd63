"""Image operators: DecodeImage and ResizeImage (host, Pillow), RandomCrop and RandomFlip (JAX,
keyed); corrupt images; offline equals online; augmentation that changes every epoch."""

from __future__ import annotations

import io

import flax.nnx as nnx
import jax
import numpy as np
import pytest
from PIL import Image

from datarax_beam import from_source
from datarax_beam.core import columns as cols
from datarax_beam.core.element import Element
from datarax_beam.kernels import ChainKernel
from datarax_beam.operators import HostOperator
from datarax_beam.operators.image import (
    DecodeImage,
    ImageDecodeError,
    RandomCrop,
    RandomFlip,
    ResizeImage,
)
from datarax_beam.operators.statistics import Normalize
from datarax_beam.runners import materialize, options
from datarax_beam.sources import ArrayRecordSourceConfig, ArrayRecordSourceModule, MemorySource


def encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, fmt)
    return buf.getvalue()


def random_images(n: int, seed: int = 0, lo: int = 12, hi: int = 30) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (rng.integers(lo, hi), rng.integers(lo, hi), 3), dtype=np.uint8) for _ in range(n)]


# -- DecodeImage -------------------------------------------------------------------------------
def test_decode_png_is_lossless_and_sizes_may_differ():
    images = random_images(5)
    out = DecodeImage("img").apply_batch({"img": cols.object_column([encode(a) for a in images])}, None)["img"]
    assert out.dtype == object and all(np.array_equal(o, a) for o, a in zip(out, images, strict=True))
    same = DecodeImage("img", output="pixels").apply_batch(
        {"img": cols.object_column([encode(images[0])] * 3)}, None)
    assert same["pixels"].shape == (3, *images[0].shape) and same["pixels"].dtype == np.uint8
    assert same["img"][0] == encode(images[0])  # the bytes are kept when output differs


def test_decode_jpeg_and_channel_conversion():
    rgb = np.tile(np.linspace(0, 255, 16, dtype=np.uint8)[None, :, None], (8, 1, 3))
    jpeg = encode(rgb, "JPEG")
    out = DecodeImage(channels=3).apply_batch({"image": cols.object_column([jpeg])}, None)["image"][0]
    assert out.shape == (8, 16, 3) and np.abs(out.astype(int) - rgb).max() < 16  # lossy, close
    gray = encode(rgb[..., 0], "PNG", "L")
    assert DecodeImage(channels=1).apply_batch({"image": cols.object_column([gray])}, None)["image"].shape == (1, 8, 16, 1)
    as_rgb = DecodeImage(channels=3).apply_batch({"image": cols.object_column([gray])}, None)["image"][0]
    assert np.array_equal(as_rgb[..., 0], rgb[..., 0]) and np.array_equal(as_rgb[..., 2], rgb[..., 0])
    rgba = DecodeImage(channels=4).apply_batch({"image": cols.object_column([encode(rgb)])}, None)["image"][0]
    assert rgba.shape == (8, 16, 4) and (rgba[..., 3] == 255).all()


def test_corrupt_truncated_and_wrong_values_name_the_feature():
    op = DecodeImage("photo")
    with pytest.raises(ImageDecodeError, match=r"feature 'photo' holds 9 bytes \(starting b'not an i'\) that Pillow cannot"):
        op.apply_batch({"photo": cols.object_column([b"not an image"[:9]])}, None)
    truncated = encode(random_images(1)[0], "JPEG")[:200]
    with pytest.raises(ImageDecodeError, match="feature 'photo' holds 200 bytes"):
        op.apply_batch({"photo": cols.object_column([truncated])}, None)
    with pytest.raises(TypeError, match="feature 'photo' must hold encoded image bytes, got str"):
        op.apply_batch({"photo": cols.object_column(["a.png"])}, None)
    with pytest.raises(TypeError, match="already decoded"):
        op.apply_batch({"photo": cols.object_column([np.zeros((2, 2, 3), np.uint8)])}, None)
    with pytest.raises(ImageDecodeError, match="cannot decode"):  # a PNG where only JPEG is allowed
        DecodeImage("photo", formats=["jpeg"]).apply_batch({"photo": cols.object_column([encode(random_images(1)[0])])}, None)
    with pytest.raises(KeyError, match="no feature 'photo'; the records have \\['image'\\]"):
        op.apply_batch({"image": cols.object_column([b""])}, None)
    with pytest.raises(ValueError, match="`channels` must be 1, 3 or 4, got 2"):
        DecodeImage(channels=2)


# -- ResizeImage -------------------------------------------------------------------------------
def test_resize_matches_pillow_and_keeps_dtype_and_channels():
    images = random_images(4)
    out = ResizeImage((10, 12)).apply_batch({"image": cols.object_column(images)}, None)["image"]
    assert out.shape == (4, 10, 12, 3) and out.dtype == np.uint8
    expected = np.asarray(Image.fromarray(images[1]).resize((12, 10), Image.Resampling.BILINEAR))
    assert np.array_equal(out[1], expected)
    gray = cols.object_column([a[..., :1] for a in images])  # (H, W, 1) keeps its channel axis
    assert ResizeImage((5, 5), filter="nearest").apply_batch({"image": gray}, None)["image"].shape == (4, 5, 5, 1)
    floats = cols.object_column([a.astype(np.float32) / 255 for a in images])
    fout = ResizeImage((6, 6)).apply_batch({"image": floats}, None)["image"]
    assert fout.dtype == np.float32 and fout.shape == (4, 6, 6, 3) and 0 <= fout.min() and fout.max() <= 1
    stacked = np.stack([images[0]] * 2)  # a fixed-shape column works too
    assert ResizeImage((3, 4)).apply_batch({"image": stacked}, None)["image"].shape == (2, 3, 4, 3)


def test_resize_errors():
    with pytest.raises(ValueError, match=r"`size` of ResizeImage must be \(height, width\)"):
        ResizeImage((0, 3))
    with pytest.raises(ValueError, match="`filter` must be one of"):
        ResizeImage((3, 3), filter="cubic")
    with pytest.raises(TypeError, match="feature 'image' has dtype int16; expected uint8 or float32"):
        ResizeImage((3, 3)).apply_batch({"image": cols.object_column([np.zeros((4, 4), np.int16)])}, None)
    with pytest.raises(ValueError, match=r"must hold \(H, W\) or \(H, W, C\) images .*got shape \(4,\)"):
        ResizeImage((3, 3)).apply_batch({"image": cols.object_column([np.zeros(4, np.uint8)])}, None)


# -- RandomCrop / RandomFlip ---------------------------------------------------------------------
def _window_offset(big: np.ndarray, crop: np.ndarray) -> tuple[int, int]:
    h, w = crop.shape[:2]
    hits = [(y, x) for y in range(big.shape[0] - h + 1) for x in range(big.shape[1] - w + 1)
            if np.array_equal(big[y:y + h, x:x + w], crop)]
    assert len(hits) == 1
    return hits[0]


def test_random_crop_is_a_window_that_depends_on_the_record_only():
    images = np.random.default_rng(0).integers(0, 256, (16, 12, 10, 3), dtype=np.uint8)
    crop = RandomCrop((5, 4), rngs=nnx.Rngs(augment=3))
    assert not isinstance(crop, HostOperator)  # a JAX operator: fuses into the jitted segment
    out = ChainKernel([crop], pad_to=8)({"image": images}, np.arange(16))["image"]
    assert out.shape == (16, 5, 4, 3) and out.dtype == np.uint8
    offsets = {_window_offset(images[i], out[i]) for i in range(16)}
    assert len(offsets) > 4
    again = ChainKernel([crop], pad_to=3)({"image": images[5:9]}, np.arange(5, 9))["image"]
    np.testing.assert_array_equal(again, out[5:9])  # batch size and position do not matter


def test_random_crop_padding_features_and_errors():
    img = np.arange(36, dtype=np.float32).reshape(6, 6)
    mask = img * 10
    crop = RandomCrop((6, 6), ["image", "mask"], padding=2, rngs=nnx.Rngs(augment=0))
    out = crop(Element({"image": img, "mask": mask}), jax.random.key(4)).data
    np.testing.assert_array_equal(np.asarray(out["mask"]), np.asarray(out["image"]) * 10)  # same window
    assert np.asarray(out["image"]).shape == (6, 6)
    with pytest.raises(ValueError, match=r"feature 'image' has shape \(3, 3\), too small for a 4x4 crop"):
        RandomCrop((4, 4), rngs=nnx.Rngs(augment=0))(Element({"image": np.zeros((3, 3))}), jax.random.key(0))
    with pytest.raises(ValueError, match="`padding` must be an int >= 0"):
        RandomCrop((4, 4), padding=-1, rngs=nnx.Rngs(augment=0))
    with pytest.raises(ValueError, match="needs `rngs`"):
        RandomCrop((4, 4), rngs=None)


def test_random_flip():
    images = np.random.default_rng(1).integers(0, 256, (64, 4, 5, 3), dtype=np.uint8)
    flip = RandomFlip(rngs=nnx.Rngs(augment=0))
    out = ChainKernel([flip], pad_to=16)({"image": images}, np.arange(64))["image"]
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images, strict=True)]
    kept = [np.array_equal(o, i) for o, i in zip(out, images, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and 16 < sum(flipped) < 48
    both = RandomFlip(horizontal=False, vertical=True, probability=1.0, rngs=nnx.Rngs(augment=0))
    np.testing.assert_array_equal(ChainKernel([both])({"image": images}, np.arange(64))["image"], images[:, ::-1])
    with pytest.raises(ValueError, match="`probability` must be a number in \\[0, 1\\], got 2"):
        RandomFlip(probability=2, rngs=nnx.Rngs(augment=0))
    with pytest.raises(ValueError, match="horizontal and/or vertical"):
        RandomFlip(horizontal=False, rngs=nnx.Rngs(augment=0))


# -- whole chains: offline equals online, bad records -------------------------------------------
N = 48


def image_bytes(corrupt: tuple[int, ...] = ()) -> np.ndarray:
    rng = np.random.default_rng(7)
    values = [encode(a, "PNG" if i % 2 else "JPEG") for i, a in enumerate(random_images(N, 7, 16, 40))]
    for i in corrupt:
        values[i] = b"\x89PNG broken" + bytes(rng.integers(0, 256, 20, dtype=np.uint8))
    return cols.object_column(values)


def image_pipeline(data: np.ndarray, batch_size: int = 16):
    rngs = nnx.Rngs(augment=11)
    src = MemorySource(data={"image": data, "label": np.arange(len(data), dtype=np.int32)})
    return (from_source(src, batch_size=batch_size)
            >> DecodeImage("image") >> ResizeImage((16, 16))
            >> RandomCrop((12, 12), rngs=rngs) >> RandomFlip(rngs=rngs)
            >> Normalize("image", axes=(0, 1)))


def test_image_chain_offline_equals_online(tmp_path):
    data = image_bytes()
    online = image_pipeline(data)
    batches = list(online)
    images = np.concatenate([np.asarray(b["image"]) for b in batches])
    assert images.shape == (N, 12, 12, 3) and images.dtype == np.float32
    np.testing.assert_allclose(images.mean((0, 1, 2)), 0.0, atol=1e-4)
    shardset = materialize(image_pipeline(data, batch_size=10), str(tmp_path / "out"), num_shards=2,
                           options=options.in_process())
    reader = ArrayRecordSourceModule(str(tmp_path / "out"))
    offline = np.concatenate([np.asarray(b["image"]) for b in from_source(reader, batch_size=N)])
    np.testing.assert_array_equal(offline, images)
    assert shardset.statistics["image"]["count"].tolist() == [N * 144] * 3


def test_corrupt_image_is_a_dead_letter_offline_and_an_error_online(tmp_path):
    data = image_bytes(corrupt=(5,))
    shardset = materialize(image_pipeline(data), str(tmp_path / "out"), num_shards=1,
                           options=options.in_process())
    assert shardset.num_failed == 1
    errors = (tmp_path / "out" / "errors").glob("*")
    import json

    letters = [json.loads(line) for f in errors for line in f.read_text().splitlines()]
    assert [(d["index"], d["stage"]) for d in letters] == [(5, "operators")]
    assert "feature 'image'" in letters[0]["message"] and "cannot decode" in letters[0]["message"]
    with pytest.raises(Exception, match="cannot decode") as info:
        list(image_pipeline(data))
    assert "5" in str(info.value) or isinstance(info.value, ImageDecodeError)


# -- augmentation after the train-time reader changes every epoch ------------------------------
def test_augmentation_after_the_reader_changes_per_epoch_and_resumes(tmp_path):
    deterministic = (from_source(MemorySource(data={"image": image_bytes()}), batch_size=16)
                     >> DecodeImage("image") >> ResizeImage((16, 16)))
    materialize(deterministic, str(tmp_path / "set"), num_shards=2, options=options.in_process())

    def train_pipeline():
        reader = ArrayRecordSourceModule(str(tmp_path / "set"), ArrayRecordSourceConfig(num_epochs=None))
        return from_source(reader, batch_size=8) >> RandomCrop((10, 10), rngs=nnx.Rngs(augment=5))

    p = train_pipeline()
    epochs = [np.concatenate([np.asarray(b["image"]) for b in p]) for _ in range(2)]
    assert epochs[0].shape == (N, 10, 10, 3)
    differ = [not np.array_equal(a, b) for a, b in zip(*epochs, strict=True)]
    assert sum(differ) > N // 2  # most records get another crop in epoch 1
    # resume mid-epoch 1 in a fresh pipeline: the same crops as the uninterrupted run
    q = train_pipeline()
    list(q)  # epoch 0
    it = iter(q)
    first = [np.asarray(next(it)["image"]) for _ in range(2)]
    state = q.get_state()
    resumed = train_pipeline()
    resumed.set_state(state)
    rest = [np.asarray(b["image"]) for b in resumed]
    np.testing.assert_array_equal(np.concatenate(first + rest), epochs[1])
