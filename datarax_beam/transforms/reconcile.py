"""The commit's schema check: one schema per shard set, chosen the same way on every runner.

Writers keep each temp part to one schema (a chunk of another schema starts a new part), and a
chunk's schema is inferred from the chunk alone — chunks are cut by ``batch_size`` within the
shard plan, never by bundles — so the multiset {schema: records} over the kept parts is a
function of the data, the chain, ``batch_size`` and ``num_shards``, not of the runner.

The **reference schema** is the one most records have; a tie goes to the schema of the record at
the lowest output position. A part of another schema is then checked record by record: a record
that fits the reference (a tensor of the reference's dtype and shape that was written as ragged
because its batch also held odd shapes; numbers of the reference's dtype and rank where the
reference is ragged) is re-encoded in the reference layout and kept, in place; a record that
does not is a dead-letter entry with stage ``schema`` (or, with ``on_error="raise"``, the job
fails naming the first such record). This only runs when the parts disagree.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence

import numpy as np
from apache_beam.io.filesystems import FileSystems

from datarax_beam.core import columns as cols
from datarax_beam.shards.codec import Schema, SchemaError, decode_batch, encode_batch
from datarax_beam.transforms import dead_letter
from datarax_beam.transforms.staging import _load_npy


def _key(schema_json) -> str:
    return json.dumps(schema_json, sort_keys=True)


def read_entries(path: str | None) -> list[dict]:
    if path is None:
        return []
    with FileSystems.open(path) as f:
        return dead_letter.loads(f.read())


def reference(parts: Sequence) -> str | None:
    """The key (`_key`) of the reference schema of these parts; None when no record was written."""
    counts: dict[str, list[int]] = {}
    for p in parts:
        if p.schema is None:
            continue
        c = counts.setdefault(_key(p.schema), [0, p.start])
        c[0] += p.stop - p.start - p.num_failed
        c[1] = min(c[1], p.start)
    if not counts:
        return None
    return max(counts, key=lambda k: (counts[k][0], -counts[k][1]))


def _written_positions(part) -> np.ndarray:
    failed = {e["position"] for e in read_entries(part.errors)}
    return np.array([i for i in range(part.start, part.stop) if i not in failed], dtype=np.int64)


def fits(ref: Schema, record: Schema) -> str | None:
    """None when a one-record schema fits the reference; else the first difference."""
    if record.names != ref.names:
        return f"features {record.names}, expected {ref.names}"
    for want, got in zip(ref.features, record.features, strict=True):
        if want.kind == "ragged":
            ok = got.kind in ("tensor", "ragged") and got.dtype == want.dtype and (
                (got.ndim if got.kind == "ragged" else len(got.shape)) == want.ndim)
        elif want.kind == "tensor":
            ok = got.kind == "tensor" and got.dtype == want.dtype and got.shape == want.shape
        else:
            ok = got.kind == want.kind
        if not ok:
            return f"feature {want.name!r} is {_describe(got)}, expected {_describe(want)}"
    return None


def _describe(f) -> str:
    if f.kind == "tensor":
        return f"{f.dtype}{list(f.shape)}"
    return f"ragged {f.dtype} ndim={f.ndim}" if f.kind == "ragged" else f.kind


def _read_records(path: str) -> list[bytes]:
    from array_record.python.array_record_module import ArrayRecordReader

    local, tmp = path, None
    if "://" in path:
        tmp = tempfile.mkdtemp(prefix="datarax-fin-")
        local = os.path.join(tmp, "part")
        with FileSystems.open(path) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
    reader = ArrayRecordReader(local)
    try:
        return list(reader.read_all())
    finally:
        reader.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def violations(parts: Sequence, commit, policy: dead_letter.ErrorPolicy
               ) -> tuple[dict[str, list[bytes]], dict[int, list[dict]]]:
    """For parts of another schema than the reference: ({part path: its records that fit, in
    the reference layout}, {shard: dead-letter entries of the records that do not})."""
    ref = reference(parts)
    bad = sorted((p for p in parts if p.schema is not None and _key(p.schema) != ref), key=lambda p: p.start)
    if not bad:
        return {}, {}
    ref_schema = Schema.from_json(json.loads(ref))
    order = None
    kept: dict[str, list[bytes]] = {}
    entries: dict[int, list[dict]] = {}
    for p in bad:
        columns = decode_batch(Schema.from_json(p.schema), _read_records(p.path))
        kept[p.path] = []
        positions = _written_positions(p)
        if p.index_path is not None:
            indices = _load_npy(p.index_path)
        elif commit.order_path is not None:
            order = _load_npy(commit.order_path) if order is None else order
            indices = np.asarray(order[positions])
        else:
            indices = positions
        for i, (index, position) in enumerate(zip(indices.tolist(), positions.tolist(), strict=True)):
            one = cols.columns_from_records([{k: v[i] for k, v in columns.items()}])
            problem = fits(ref_schema, Schema.infer(one))
            if problem is None:
                kept[p.path].extend(encode_batch(ref_schema, one))
                continue
            error = SchemaError(f"Record does not fit the shard set's schema (the one most records "
                                f"have): {problem}")
            entries.setdefault(p.shard, []).append(dead_letter.failure(policy, index, position, "schema", error))
    return kept, entries
