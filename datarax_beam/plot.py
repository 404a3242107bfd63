"""``datarax-beam inspect --plot``: one panel per feature, drawn the way its values mean.

* integers with few distinct values (labels, category codes, booleans): bar chart of counts;
* vocabulary ids (an integer feature the shard set has a vocabulary for): bar chart of the most
  frequent ids, labelled with their tokens;
* image-like tensors (``(H, W)``, or ``(H, W, C)`` with 1, 3 or 4 channels): a grid of samples;
* strings: the most frequent values (bar chart); bytes and ragged features: their lengths;
* everything else numeric (floats, integers with many values): a histogram.

Values come from an evenly spaced sample of up to ``max_records`` records.

Example:
  >>> import tempfile, numpy as np
  >>> from datarax_beam.shards.writer import write_shardset
  >>> out = tempfile.mkdtemp()
  >>> data = {"label": np.arange(50) % 3, "x": np.linspace(0, 1, 50, dtype=np.float32)}
  >>> _ = write_shardset(out, data)
  >>> [(p.feature, p.chart) for p in plot_shardset(out, out + "/plot.png")]
  [('label', 'bar'), ('x', 'histogram')]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from datarax_beam.inspect import read_records
from datarax_beam.shards import load_shardset

#: Integer features with at most this many distinct values (in the sample) get a bar per value.
MAX_BARS = 40
#: Bars of the most frequent strings / vocabulary ids.
TOP = 20
DPI = 80
WIDTH_IN = 9.0
PANEL_IN = 2.8


class Panel(NamedTuple):
    """One feature's panel of the PNG.

    Attributes:
      feature: the feature's name.
      chart: ``bar``, ``vocabulary``, ``images``, ``top_values``, ``lengths`` or ``histogram``.
      axes: matplotlib axes the panel holds (one, or ``grid * grid`` for images).
      labels: the bars' labels in order (values, tokens or strings); ``()`` for other charts.
      bbox: the panel's pixel box in the PNG, ``(left, top, right, bottom)``.
    """

    feature: str
    chart: str
    axes: int
    labels: tuple[str, ...]
    bbox: tuple[int, int, int, int]


def is_image(spec) -> bool:
    shape = tuple(spec.shape or ())
    return spec.kind == "tensor" and (len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3, 4))) \
        and min(shape[:2]) >= 4


def _vocabularies(statistics: Mapping[str, Any] | None) -> dict[str, list]:
    """{feature: vocabulary} of the shard set's vocabulary statistics."""
    out = {}
    for name, entry in dict(statistics or {}).items():
        if isinstance(entry, Mapping) and "vocabulary" in entry:
            out.setdefault(entry.get("feature", name), list(entry["vocabulary"]))
    return out


def _chart(spec, values: Any, vocabularies: dict[str, list]) -> str:
    if spec.kind == "string":
        return "top_values"
    if spec.kind in ("bytes", "ragged"):
        return "lengths"
    if is_image(spec):
        return "images"
    arr = np.asarray(values)
    if arr.dtype.kind in "iub":
        if arr.dtype.kind != "b" and spec.name in vocabularies:
            return "vocabulary"
        if len(np.unique(arr)) <= MAX_BARS:
            return "bar"
    return "histogram"


def _short(value: Any, width: int = 24) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _draw_bar(ax, values: np.ndarray) -> tuple[str, ...]:
    uniq, counts = np.unique(values.ravel(), return_counts=True)
    labels = tuple(str(v) for v in uniq.tolist())
    ax.bar(range(len(uniq)), counts, color="tab:blue")
    ax.set_xticks(range(len(uniq)), labels, rotation=90 if len(uniq) > 12 else 0, fontsize=8)
    ax.set_ylabel("records")
    return labels


def _draw_vocabulary(ax, values: np.ndarray, vocab: list) -> tuple[str, ...]:
    counts = Counter(values.ravel().tolist()).most_common(TOP)
    labels = tuple("<oov>" if not 0 <= i < len(vocab) else _short(vocab[i], 16) for i, _ in counts)
    ax.bar(range(len(counts)), [c for _, c in counts], color="tab:purple")
    ax.set_xticks(range(len(counts)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("count")
    return labels


def _draw_top(ax, values: Any) -> tuple[str, ...]:
    counts = Counter(_short(v) for v in values).most_common(TOP)
    labels = tuple(v for v, _ in counts)
    ax.barh(range(len(counts)), [c for _, c in counts], color="tab:green")
    ax.set_yticks(range(len(counts)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("records")
    return labels


def _draw_histogram(ax, values: np.ndarray) -> None:
    arr = np.asarray(values, dtype=np.float64).ravel()
    finite = arr[np.isfinite(arr)]
    if np.asarray(values).dtype.kind in "iu" and len(finite):
        lo, hi = finite.min(), finite.max()
        bins = np.linspace(lo - 0.5, hi + 0.5, int(min(50, hi - lo + 1)) + 1)
    else:
        bins = 50
    ax.hist(finite, bins=bins, color="tab:blue")
    if len(finite) < len(arr):
        ax.text(0.99, 0.95, f"{len(arr) - len(finite):,} NaN/inf not shown", transform=ax.transAxes,
                ha="right", va="top", fontsize=8, color="tab:red")


def _draw_lengths(ax, values: Any) -> None:
    lengths = np.array([len(v) for v in values], dtype=np.int64)
    _draw_histogram(ax, lengths)
    ax.set_xlabel("length")


def _draw_images(panel, values: Any, grid: int) -> int:
    axes = np.ravel(panel.subplots(grid, grid))
    n = len(values)
    picks = np.unique(np.linspace(0, n - 1, min(n, len(axes))).astype(np.int64))
    for ax in axes:
        ax.axis("off")
    for ax, k in zip(axes, picks, strict=False):
        img = np.asarray(values[k])
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        if img.dtype != np.uint8:
            img = img.astype(np.float64)
            lo, hi = np.nanmin(img), np.nanmax(img)
            img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
    return len(axes)


def _height(chart: str, grid: int) -> float:
    if chart == "images":
        return 1.6 * grid + 0.4
    return max(PANEL_IN, 0.8 + 0.17 * TOP) if chart == "top_values" else PANEL_IN


def _describe(spec) -> str:
    if spec.kind != "tensor":
        return spec.kind if spec.dtype is None else f"{spec.kind} {np.dtype(spec.dtype).name}"
    return f"{np.dtype(spec.dtype).name}{list(spec.shape) if spec.shape else ''}"


def plot_shardset(path: str, out_png: str, *, max_records: int = 2000, grid: int = 4) -> list[Panel]:
    """Writes ``out_png`` with one panel per feature (see the module docstring).

    Returns:
      a `Panel` per feature, top to bottom: what was drawn and where.

    Raises:
      ValueError: the shard set has no records.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shardset = load_shardset(path)
    n = shardset.num_records
    if n == 0:
        raise ValueError(f"The shard set at {path!r} has no records to plot")
    idx = np.unique(np.linspace(0, n - 1, min(n, max_records)).astype(np.int64)).tolist()
    data = read_records(shardset, idx)
    vocabularies = _vocabularies(shardset.statistics)
    features = list(shardset.schema.features)
    charts = [_chart(f, data[f.name], vocabularies) for f in features]
    heights = [_height(c, grid) for c in charts]
    fig = plt.figure(figsize=(WIDTH_IN, sum(heights)), dpi=DPI, layout="constrained")
    subfigs = fig.subfigures(len(features), 1, height_ratios=heights, squeeze=False)[:, 0]
    drawn = []
    for panel, f, chart in zip(subfigs, features, charts, strict=True):
        values = data[f.name]
        labels: tuple[str, ...] = ()
        what = _describe(f)
        if chart == "images":
            axes = _draw_images(panel, values, grid)
            panel.suptitle(f"{f.name}  {what}: {min(axes, len(idx))} sample images")
        else:
            ax, axes = panel.subplots(), 1
            arr = values if chart in ("top_values", "lengths") else np.asarray(values)
            if chart == "bar":
                labels = _draw_bar(ax, arr)
            elif chart == "vocabulary":
                labels = _draw_vocabulary(ax, arr, vocabularies[f.name])
            elif chart == "top_values":
                labels = _draw_top(ax, values)
            elif chart == "lengths":
                _draw_lengths(ax, values)
            else:
                _draw_histogram(ax, arr)
            kind = chart.replace("_", " ")
            if chart in ("top_values", "vocabulary"):
                distinct = len({_short(v) for v in values}) if chart == "top_values" else len(np.unique(arr))
                kind = f"{'top values' if chart == 'top_values' else 'top ids'}, {len(labels)} of {distinct:,}"
            ax.set_title(f"{f.name}  {what}: {kind} ({len(idx):,} records)", fontsize=10)
        drawn.append((panel, f.name, chart, axes, labels))
    fig.canvas.draw()
    height = int(round(fig.bbox.height))
    panels = []
    for panel, name, chart, axes, labels in drawn:
        x0, y0, x1, y1 = panel.bbox.extents
        panels.append(Panel(name, chart, axes, labels,
                            (int(round(x0)), height - int(round(y1)), int(round(x1)), height - int(round(y0)))))
    fig.savefig(out_png, dpi=DPI)
    plt.close(fig)
    return panels
