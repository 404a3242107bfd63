"""Records and chunks: the two element forms of the public composite transforms.

A *record* is ``(index, features)``: its global index (it keys the operators' PRNG and decides
where the record lands in a shard set) and a dict of feature values. A *chunk* (`Chunk`) is up to
a batch of records stored as columns, with their indices and output positions; it is what the
library's own DoFns pass around, because Beam's per-element cost is paid once per chunk.

A record that failed on the way (``on_error="dead_letter"``) is ``(index, DeadLetter(entry))``
in record form and an entry of ``Chunk.failures`` in chunk form, so a downstream `WriteShardSet`
records it under ``errors/`` and keeps the positions of the records after it.

`ToChunksFn` groups the records of a bundle into chunks (chunks pass through unchanged);
`chunk_records` turns a chunk back into records.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindows

from datarax_beam.core import columns as cols
from datarax_beam.transforms.dead_letter import concat_records
from datarax_beam.transforms.readers import Chunk


class DeadLetter(NamedTuple):
    """A record that failed, in record form: ``(index, DeadLetter(entry))``.

    ``entry`` is the dead-letter dict (``index``, ``position``, ``stage``, ``error_type``,
    ``message``, ``source``; see ``docs/reliability.md``).
    """

    entry: dict


def check_batch_size(batch_size: Any, name: str = "batch_size") -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`{name}` must be an int >= 1, got {batch_size!r}")
    return int(batch_size)


def _index(element: Any, where: str) -> tuple[int, Any]:
    if isinstance(element, Chunk):
        raise TypeError(f"{where}: got a Chunk where a record was expected")
    if not isinstance(element, tuple) or len(element) != 2:
        raise TypeError(f"{where} expects records as (index, features) pairs or Chunks, got "
                        f"{type(element).__name__} {element!r:.200}")
    index, record = element
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"{where}: a record's index must be an int (its global index), got "
                        f"{type(index).__name__} {index!r:.100}")
    if index < 0:
        raise ValueError(f"{where}: a record's index must be >= 0, got {int(index)}")
    if not isinstance(record, (Mapping, DeadLetter)):
        raise TypeError(f"{where}: record {int(index)} must be a dict of features, got "
                        f"{type(record).__name__} {record!r:.100}")
    return int(index), record


def records_to_columns(records: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Columns of records; records whose features differ keep them (`MISSING` where absent), so
    the writer can name what a record lacks instead of failing the batch."""
    try:
        return cols.columns_from_records(records)
    except ValueError:  # the records' feature names differ
        return concat_records([{k: cols.stack_values([v]) for k, v in r.items()} for r in records])


@beam.typehints.with_output_types(Chunk)
class ToChunksFn(beam.DoFn):
    """Groups the records of a bundle into chunks of up to ``batch_size`` records, in index
    order within each chunk (positions = indices); `Chunk` elements pass through as they are.

    Global-window (batch) PCollections only: chunks are emitted at the end of the bundle.
    """

    def __init__(self, batch_size: int, where: str):
        self._batch_size, self._where = int(batch_size), where

    def start_bundle(self):
        self._records: list[tuple[int, Mapping]] = []
        self._failed: list[dict] = []

    def process(self, element):
        if isinstance(element, Chunk):
            yield element
            return
        index, record = _index(element, self._where)
        if isinstance(record, DeadLetter):
            self._failed.append(dict(record.entry, index=index, position=index))
        else:
            self._records.append((index, record))
        if len(self._records) + len(self._failed) >= self._batch_size:
            yield self._flush()

    def finish_bundle(self):
        if self._records or self._failed:
            yield GlobalWindows.windowed_value(self._flush())

    def _flush(self) -> Chunk:
        records = sorted(self._records, key=lambda r: r[0])
        failures = tuple(sorted(self._failed, key=lambda f: f["position"]))
        self._records, self._failed = [], []
        indices = np.array([i for i, _ in records], dtype=np.int64)
        return Chunk(-1, indices.copy(), indices, records_to_columns([r for _, r in records]), failures)


def chunk_records(chunk: Chunk) -> Iterator[tuple[int, Any]]:
    """The records of a chunk: ``(index, {feature: value})`` in chunk order, then
    ``(index, DeadLetter(entry))`` for its failed records.

    Numeric values come out as numpy scalars or arrays of the column's dtype; text, bytes and
    ragged values as they are stored.
    """
    columns = chunk.columns
    for r, index in enumerate(chunk.indices.tolist()):
        yield index, {k: v[r] for k, v in columns.items()}
    for entry in chunk.failures:
        yield int(entry["index"]), DeadLetter(dict(entry))
