"""Describing a committed shard set: what ``datarax-beam inspect DIR`` prints.

Reads only ``shardset.json``, the dead-letter files and one record; never imports Beam.
"""

from __future__ import annotations

import glob
import os
from typing import Any

import numpy as np

from datarax_beam.shards import load_shardset
from datarax_beam.shards.reader import read_columns
from datarax_beam.shards.shardset import ERRORS_DIR, ShardSet


def read_records(shardset: ShardSet, indices: list[int]) -> dict[str, Any]:
    """Decodes records by global index (shards in order), decompressed as the set says."""
    return read_columns(shardset, indices)


def count_error_lines(path: str) -> int:
    """Dead-letter records written under ``path/errors/`` (JSON lines)."""
    return sum(
        sum(1 for line in open(f, encoding="utf-8") if line.strip())
        for f in sorted(glob.glob(os.path.join(path, ERRORS_DIR, "*")))
        if os.path.isfile(f)
    )


def describe(path: str) -> dict[str, Any]:
    """A JSON-able summary of the shard set at ``path`` (see `format_report`)."""
    shardset = load_shardset(path)
    sample = read_records(shardset, [0]) if shardset.num_records else {}
    return {
        "path": path,
        "num_records": shardset.num_records,
        "num_shards": len(shardset.shards),
        "total_bytes": shardset.total_bytes,
        "compression": shardset.compression,
        "shuffle": shardset.shuffle,
        "seed": shardset.seed,
        "fingerprint": shardset.fingerprint,
        "num_failed": shardset.num_failed,
        "error_lines": count_error_lines(path),
        "schema": shardset.schema.to_json()["features"],
        "shards": [(s.name, s.num_records, s.num_bytes) for s in shardset.shards],
        "statistics": dict(shardset.statistics or {}),
        "versions": dict(shardset.versions),
        "sample": {k: v[0] for k, v in sample.items()},
    }


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n} B"


def _fmt_value(v: Any) -> str:
    if isinstance(v, np.generic):
        return f"{v.dtype} {v.item()!r}"
    if isinstance(v, np.ndarray):
        if v.size <= 8:
            return f"{v.dtype}{list(v.shape)} {np.array2string(v, precision=4)}"
        return (f"{v.dtype}{list(v.shape)} min={v.min():.4g} max={v.max():.4g} "
                f"mean={v.astype(np.float64).mean():.4g}")
    return repr(v)[:120]


def format_report(info: dict[str, Any]) -> str:
    """Human-readable text of `describe`'s summary."""
    lines = [
        f"shard set   {info['path']}",
        f"records     {info['num_records']:,} in {info['num_shards']} shards, "
        f"{_fmt_bytes(info['total_bytes'])} ({info['compression']})",
        f"shuffle     {info['shuffle']} (seed {info['seed']}), fingerprint {info['fingerprint'] or '-'}",
        f"errors      {info['num_failed']} failed records"
        + (f", {info['error_lines']} dead-letter entries" if info["error_lines"] else ""),
        "schema",
    ]
    for f in info["schema"]:
        shape = f.get("shape")
        lines.append(f"  {f['name']:<20} {f['kind']:<7} {f.get('dtype', ''):<6} "
                     f"{'' if shape is None else tuple(shape)}")
    lines.append("shards")
    for name, n, size in info["shards"][:10]:
        lines.append(f"  {name}  {n:>10,} records  {_fmt_bytes(size):>10}")
    if len(info["shards"]) > 10:
        lines.append(f"  ... {len(info['shards']) - 10} more")
    if info["statistics"]:
        lines.append("statistics")
        for name, entry in info["statistics"].items():
            keys = ", ".join(k for k in entry if k != "feature")
            lines.append(f"  {name:<20} of {entry.get('feature', name)}: {keys}")
    if info["sample"]:
        lines.append("sample (record 0)")
        for k, v in info["sample"].items():
            lines.append(f"  {k:<20} {_fmt_value(v)}")
    return "\n".join(lines)
