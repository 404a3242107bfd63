"""`plot_shardset`: which chart each kind of feature gets, and what the PNG holds where."""

from __future__ import annotations

import numpy as np
import pytest

from datarax_beam.plot import DPI, WIDTH_IN, plot_shardset
from datarax_beam.shards.writer import write_shardset

N = 120


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    rng = np.random.default_rng(0)
    words = np.array(["cat", "dog", "emu"], dtype=object)
    data = {
        "blob": np.array([bytes(i % 5) for i in range(N)], dtype=object),
        "flag": np.arange(N) % 3 == 0,
        "height": np.where(np.arange(N) == 7, np.nan, rng.normal(170, 10, N)).astype(np.float32),
        "image": rng.random((N, 12, 12)).astype(np.float32),
        "label": (np.arange(N) % 10).astype(np.int32),
        "name": np.array([f"n{i % 4}" for i in range(N)], dtype=object),
        "rgb": rng.integers(0, 255, (N, 8, 8, 3)).astype(np.uint8),
        "user": rng.integers(0, 10**6, N).astype(np.int64),
        "word": (np.arange(N) % 4).astype(np.int32),  # ids; 3 is out of vocabulary
    }
    statistics = {"word_vocab": {"feature": "word", "vocabulary": list(words),
                                 "vocabulary_counts": [30, 30, 30], "num_unique": 4}}
    path = str(tmp_path_factory.mktemp("plot") / "set")
    write_shardset(path, data, num_shards=2, statistics=statistics)
    return path


def read_png(path):
    import matplotlib.image

    return matplotlib.image.imread(path)


def ink(img, box) -> float:
    """Share of non-white pixels in a (left, top, right, bottom) box."""
    left, top, right, bottom = box
    region = img[top:bottom, left:right, :3]
    return float((region < 0.95).any(axis=-1).mean())


def test_each_feature_gets_the_chart_its_values_mean(shard_dir, tmp_path):
    png = str(tmp_path / "p.png")
    panels = plot_shardset(shard_dir, png)
    charts = {p.feature: p.chart for p in panels}
    assert charts == {"blob": "lengths", "flag": "bar", "height": "histogram", "image": "images",
                      "label": "bar", "name": "top_values", "rgb": "images", "user": "histogram",
                      "word": "vocabulary"}
    by = {p.feature: p for p in panels}
    assert by["label"].labels == tuple(str(i) for i in range(10)) and by["label"].axes == 1
    assert by["flag"].labels == ("False", "True")
    assert by["word"].labels == ("cat", "dog", "emu", "<oov>")
    assert by["name"].labels == ("n0", "n1", "n2", "n3")
    assert by["image"].axes == 16 and by["rgb"].axes == 16 and by["height"].labels == ()


def test_the_png_holds_every_panel_where_the_description_says(shard_dir, tmp_path):
    png = str(tmp_path / "p.png")
    panels = plot_shardset(shard_dir, png, grid=3)
    img = read_png(png)
    height, width = img.shape[:2]
    assert width == int(WIDTH_IN * DPI)
    assert [p.bbox[1] for p in panels] == sorted(p.bbox[1] for p in panels)  # top to bottom
    assert panels[0].bbox[1] == 0 and abs(panels[-1].bbox[3] - height) <= 1
    for p in panels:
        left, top, right, bottom = p.bbox
        assert (left, right) == (0, width) and bottom - top > 100, p
        assert ink(img, p.bbox) > 0.02, p.feature  # something is drawn there
    images = next(p for p in panels if p.feature == "image")
    assert images.axes == 9
    # sample images are grey: their pixels' channels are equal; the rgb grid has colour
    left, top, right, bottom = images.bbox
    grey = img[top:bottom, left:right, :3]
    assert np.abs(grey[..., 0] - grey[..., 1]).max() < 1e-6
    rgb = next(p for p in panels if p.feature == "rgb").bbox
    colour = img[rgb[1]:rgb[3], rgb[0]:rgb[2], :3]
    assert np.abs(colour[..., 0] - colour[..., 1]).max() > 0.2


def test_an_empty_shard_set_is_refused(tmp_path):
    path = str(tmp_path / "empty")
    write_shardset(path, {"x": np.zeros(0, dtype=np.float32)})
    with pytest.raises(ValueError, match="has no records to plot"):
        plot_shardset(path, str(tmp_path / "p.png"))
