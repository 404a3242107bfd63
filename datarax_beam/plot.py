"""``datarax-beam inspect --plot``: a histogram per numeric feature and a grid of sample images."""

from __future__ import annotations

import numpy as np

from datarax_beam.inspect import read_records
from datarax_beam.shards import load_shardset


def _is_image(spec) -> bool:
    shape = spec.shape or ()
    return spec.kind == "tensor" and (len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3, 4))) \
        and min(shape[:2]) >= 4


def plot_shardset(path: str, out_png: str, *, max_records: int = 2000, grid: int = 4) -> list[str]:
    """Writes ``out_png``; returns the plotted feature names.

    Reads an evenly spaced sample of up to ``max_records`` records.
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
    numeric = [f for f in shardset.schema.features if f.kind == "tensor"]
    images = [f for f in numeric if _is_image(f)]
    if not numeric:
        raise ValueError(f"The shard set at {path!r} has no numeric feature to plot")
    rows = len(numeric) + len(images)
    fig = plt.figure(figsize=(8, 3 * len(numeric) + 8 * len(images) / grid * 2))
    sub = fig.subfigures(rows, 1, squeeze=False)[:, 0] if rows > 1 else [fig]
    for panel, f in zip(sub, numeric, strict=False):
        ax = panel.subplots()
        values = np.asarray(data[f.name], dtype=np.float64).ravel()
        ax.hist(values[np.isfinite(values)], bins=50, color="tab:blue")
        ax.set_title(f"{f.name}  {f.dtype}{list(f.shape)}  ({len(idx):,} records)")
    for panel, f in zip(sub[len(numeric):], images, strict=False):
        axes = panel.subplots(grid, grid)
        for k, ax in enumerate(np.ravel(axes)):
            ax.axis("off")
            if k < len(idx):
                img = np.asarray(data[f.name][k * max(1, len(idx) // (grid * grid))], dtype=np.float64)
                img = img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img
                lo, hi = img.min(), img.max()
                ax.imshow((img - lo) / (hi - lo) if hi > lo else img * 0, cmap="gray")
        panel.suptitle(f"{f.name}: sample images")
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return [f.name for f in numeric]
