"""Block-wise full-pass analysis, shared by the online pipeline and the Beam job.

Records are grouped into fixed blocks of global indices (``[k*B, (k+1)*B)``). Each block's
accumulator is computed from the whole block at once, and blocks are merged in block order.
Neither chunking, bundle boundaries, worker count nor runner changes any bit of the result,
which is what lets offline equal online for operators that use statistics.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.statistics.accumulators import FeatureAccumulator
from datarax_beam.statistics.spec import StatSpec

BLOCK_SIZE = 1024
STATISTICS_FILE = "statistics.json"

BlockAccumulators = dict[str, FeatureAccumulator]


class Statistics(Mapping[str, Mapping[str, Any]]):
    """Finalized statistics: ``stats[name]["mean"]``, ``["std"]``, ``["vocabulary"]``, ...

    Example:
      >>> s = Statistics({"x": {"mean": np.array(1.5)}})
      >>> float(Statistics.from_json(s.to_json())["x"]["mean"])
      1.5
    """

    def __init__(self, values: Mapping[str, Mapping[str, Any]]):
        self._values = {k: dict(v) for k, v in values.items()}

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(f"No statistics named {name!r}; available: {sorted(self._values)}") from None

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Statistics({sorted(self._values)})"

    def to_json(self) -> dict[str, Any]:
        return {name: {k: _to_json_value(v) for k, v in d.items()} for name, d in self._values.items()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Statistics:
        out = {}
        for name, entry in d.items():
            out[name] = {k: _from_json_value(k, v) for k, v in entry.items()}
        return cls(out)

    def save(self, path: str) -> None:
        """Writes ``statistics.json`` (``path`` may be a directory or a file name)."""
        if os.path.isdir(path):
            path = os.path.join(path, STATISTICS_FILE)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, indent=1)


def _to_json_value(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        values = v.ravel().tolist()
        if v.dtype.kind == "f" and not np.isfinite(v).all():  # strict JSON: NaN/inf as strings
            values = [x if np.isfinite(x) else repr(x) for x in values]
        return {"dtype": str(v.dtype), "shape": list(v.shape), "values": values}
    if isinstance(v, np.floating) and not np.isfinite(v):
        return _to_json_value(np.asarray(v))
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, list) and any(isinstance(x, bytes) for x in v):
        # bytes survive JSON tagged (a vocabulary of bytes must still match bytes offline)
        if all(isinstance(x, bytes) for x in v):
            return {"bytes_latin1": [x.decode("latin-1") for x in v]}
        return {"tagged": [["bytes", x.decode("latin-1")] if isinstance(x, bytes) else ["value", x] for x in v]}
    return v


def _from_json_value(key: str, v: Any) -> Any:
    if isinstance(v, dict) and {"dtype", "shape", "values"} <= set(v):
        values = v["values"]
        if np.dtype(v["dtype"]).kind == "f" and any(isinstance(x, str) for x in values):
            values = [float(x) for x in values]  # "nan", "inf", "-inf"
        return np.asarray(values, dtype=v["dtype"]).reshape(v["shape"])
    if isinstance(v, dict) and set(v) == {"bytes_latin1"}:
        return [x.encode("latin-1") for x in v["bytes_latin1"]]
    if isinstance(v, dict) and set(v) == {"tagged"}:
        return [x.encode("latin-1") if tag == "bytes" else x for tag, x in v["tagged"]]
    return v


def load_statistics(path: str) -> Statistics:
    """Loads statistics from a shard-set directory, a ``statistics.json`` or a JSON file.

    Raises:
      FileNotFoundError: nothing at ``path`` holds statistics.
    """
    if os.path.isdir(path):
        candidate = os.path.join(path, STATISTICS_FILE)
        if os.path.exists(candidate):
            path = candidate
        else:
            meta = os.path.join(path, "shardset.json")
            if not os.path.exists(meta):
                raise FileNotFoundError(f"{path!r} holds neither {STATISTICS_FILE} nor shardset.json")
            with open(meta, encoding="utf-8") as f:
                stats = json.load(f).get("statistics")
            if not stats:
                raise FileNotFoundError(f"The shard set at {path!r} was written without statistics")
            return Statistics.from_json(stats)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No statistics file at {path!r}")
    with open(path, encoding="utf-8") as f:
        try:
            d = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path!r} is not valid JSON: {e}") from None
    return Statistics.from_json(d.get("statistics", d) if "format" in d else d)


# -- block accumulation --------------------------------------------------------------------
def accumulate(specs: Sequence[StatSpec], columns: Mapping[str, Any]) -> BlockAccumulators:
    """Accumulators of one complete block of records."""
    out = {}
    for spec in specs:
        if spec.feature not in columns:
            raise KeyError(
                f"StatSpec {spec.name!r} analyzes feature {spec.feature!r}, but the records at that "
                f"point of the chain have features {sorted(columns)}"
            )
        out[spec.name] = FeatureAccumulator.from_column(spec, columns[spec.feature])
    return out


def merge_in_order(blocks: Iterable[tuple[int, BlockAccumulators]]) -> BlockAccumulators:
    """Merges block accumulators in increasing block id (the only order ever used)."""
    ordered = [accs for _, accs in sorted(blocks, key=lambda kv: kv[0])]
    if not ordered:
        raise ValueError("Cannot compute statistics over an empty dataset")
    return {k: FeatureAccumulator.merge_all([accs[k] for accs in ordered]) for k in ordered[0]}


def finalize(merged: BlockAccumulators) -> Statistics:
    return Statistics({name: acc.finalize() for name, acc in merged.items()})


def split_blocks(
    columns: Mapping[str, Any], indices: np.ndarray, block_size: int = BLOCK_SIZE
) -> Iterator[tuple[int, np.ndarray, dict[str, Any]]]:
    """Cuts a chunk into per-block pieces: (block id, global indices, columns)."""
    indices = np.asarray(indices, dtype=np.int64)
    blocks = indices // block_size
    for b in np.unique(blocks):
        sel = np.nonzero(blocks == b)[0]
        yield int(b), indices[sel], cols.take(columns, sel)


def block_length(block: int, total: int | None, block_size: int = BLOCK_SIZE) -> int | None:
    """Records in block ``block`` when the dataset size is known."""
    if total is None:
        return None
    return max(0, min(block_size, total - block * block_size))


def assemble_block(pieces: Iterable[tuple[np.ndarray, Mapping[str, Any]]]) -> dict[str, Any]:
    """Joins a block's pieces in index order (pieces may arrive in any order)."""
    pieces = sorted(pieces, key=lambda p: int(p[0][0]))
    return cols.concat([p[1] for p in pieces])


def compute_over_batches(
    specs: Sequence[StatSpec], batches: Iterable[tuple[Mapping[str, Any], np.ndarray]],
    block_size: int = BLOCK_SIZE,
) -> Statistics:
    """In-process analysis over (columns, global indices) batches of any size and order.

    A block is accumulated (and its records dropped) as soon as all ``block_size`` of its
    records have arrived, so memory stays at a few blocks for in-order reads.
    """
    pending: dict[int, list] = {}
    done: list[tuple[int, BlockAccumulators]] = []
    for columns, indices in batches:
        for block, idx, piece in split_blocks(columns, indices, block_size):
            parts = pending.setdefault(block, [])
            parts.append((idx, piece))
            if sum(len(i) for i, _ in parts) == block_size:
                done.append((block, accumulate(specs, assemble_block(pending.pop(block)))))
    done.extend((b, accumulate(specs, assemble_block(p))) for b, p in pending.items())
    return finalize(merge_in_order(done))
