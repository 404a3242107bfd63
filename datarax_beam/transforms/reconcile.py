"""The commit's schema check: one schema per shard set, chosen the same way on every runner.

Writers keep each temp part to one schema (a chunk of another schema starts a new part), and a
chunk's schema is inferred from the chunk alone — chunks are cut by ``batch_size`` within the
shard plan, never by bundles — so the multiset {schema: records} over the kept parts is a
function of the data, the chain, ``batch_size`` and ``num_shards``, not of the runner.

The **reference schema** is the one most records have; a tie goes to the schema of the record at
the lowest output position. Records of any other schema violate it: their parts are not
committed and every record in them becomes a dead-letter entry with stage ``schema`` (or, with
``on_error="raise"``, the job fails naming the first such record).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
from apache_beam.io.filesystems import FileSystems

from datarax_beam.shards.codec import Schema, SchemaError
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


def violations(parts: Sequence, commit, policy: dead_letter.ErrorPolicy) -> tuple[set[str], dict[int, list[dict]]]:
    """(paths of parts not to commit, {shard: dead-letter entries}) for parts of another schema."""
    ref = reference(parts)
    bad = sorted((p for p in parts if p.schema is not None and _key(p.schema) != ref), key=lambda p: p.start)
    if not bad:
        return set(), {}
    ref_schema = Schema.from_json(json.loads(ref))
    order = None
    entries: dict[int, list[dict]] = {}
    for p in bad:
        try:
            ref_schema.merge(Schema.from_json(p.schema))
            error: Exception = SchemaError("the record's schema differs from the shard set's")
        except SchemaError as e:
            error = SchemaError(f"{e} (the shard set's schema is the one most records have)")
        positions = _written_positions(p)
        if p.index_path is not None:
            indices = _load_npy(p.index_path)
        elif commit.order_path is not None:
            order = _load_npy(commit.order_path) if order is None else order
            indices = np.asarray(order[positions])
        else:
            indices = positions
        for index, position in zip(indices.tolist(), positions.tolist(), strict=True):
            entries.setdefault(p.shard, []).append(
                dead_letter.failure(policy, index, position, "schema", error))
    return {p.path for p in bad}, entries
