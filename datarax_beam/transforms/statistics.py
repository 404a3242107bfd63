"""Full-pass statistics on Beam: chunks -> block accumulators -> one statistics side input.

The analysis is the one `datarax_beam.statistics.analyzer` runs online: accumulators per fixed
block of global record indices, merged in block order. Chunks that cover a whole block become an
accumulator right away and go straight to the merge; only pieces of blocks split across chunks
travel raw through a GroupByKey and are joined in index order before accumulating. So the result
is bit-identical across runners, worker counts and chunk sizes, and equals the online result.
"""

from __future__ import annotations

from collections.abc import Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from datarax_beam.statistics.analyzer import (
    BLOCK_SIZE,
    accumulate,
    assemble_block,
    finalize,
    merge_in_order,
    split_blocks,
)
from datarax_beam.statistics.spec import StatSpec
from datarax_beam.transforms.readers import NAMESPACE, Chunk


class _BlockPiecesFn(beam.DoFn):
    """Cuts a chunk at block boundaries: whole blocks -> accumulators, partial ones -> raw."""

    def __init__(self, specs: Sequence[StatSpec], block_size: int):
        self._specs, self._block_size = tuple(specs), block_size
        self._records = Metrics.counter(NAMESPACE, "records_analyzed")

    def process(self, chunk: Chunk):
        self._records.inc(len(chunk.indices))
        if not len(chunk.indices):  # every record of the chunk failed
            return
        for block, idx, piece in split_blocks(chunk.columns, chunk.indices, self._block_size):
            if len(idx) == self._block_size:
                yield block, accumulate(self._specs, piece)
            else:
                yield beam.pvalue.TaggedOutput(_RAW, (block, (idx, piece)))


#: The output of `_BlockPiecesFn` for pieces of blocks split across chunks.
_RAW = "raw"


def _block_accumulator(item, specs):
    block, pieces = item
    pieces = list(pieces)
    indices = np.concatenate([idx for idx, _ in pieces])
    if len(np.unique(indices)) != len(indices):
        raise RuntimeError(f"Statistics block {block} was read more than once")
    return block, accumulate(specs, assemble_block(pieces))


def _merge_in_block_order(_, whole, joined):
    """The statistics JSON of every block's accumulators, merged in block order."""
    acc = list(whole) + list(joined)
    blocks = [b for b, _ in acc]
    if len(blocks) != len(set(blocks)):
        raise RuntimeError("A statistics block was accumulated twice")
    return finalize(merge_in_order(acc)).to_json()


class AnalyzeStatistics(beam.PTransform):
    """Chunks (as they are at the analyzed point of the chain) -> a singleton JSON dict.

    Args:
      specs: the statistics to compute.
      block_size: records per accumulation block (must match the online analyzer's).
    """

    def __init__(self, specs: Sequence[StatSpec], block_size: int = BLOCK_SIZE):
        super().__init__()
        self._specs, self._block_size = tuple(specs), int(block_size)

    def expand(self, chunks):
        specs = self._specs
        pieces = chunks | "BlockPieces" >> beam.ParDo(_BlockPiecesFn(specs, self._block_size)).with_outputs(
            _RAW, main="whole")
        joined = (pieces[_RAW] | "GroupBlocks" >> beam.GroupByKey()
                  | "AccumulateBlocks" >> beam.Map(_block_accumulator, specs))
        # A block read twice (whole, or whole and in pieces) reaches the merge twice: it refuses.
        # Both kinds of accumulators reach the one merge as list side inputs: each is encoded
        # and decoded once (a CombineGlobally re-encodes its output for its default value, a
        # Flatten adds a stage), and an empty input still gives its (empty) statistics once.
        return (chunks.pipeline | "Once" >> beam.Impulse()
                | "MergeInOrder" >> beam.Map(_merge_in_block_order, beam.pvalue.AsList(pieces.whole),
                                             beam.pvalue.AsList(joined)))


def add_statistics(known, new, label: str):
    """Singleton PCollection of the union of two statistics dicts (``new`` wins)."""
    return new | label >> beam.Map(lambda n, k: {**k, **n}, beam.pvalue.AsSingleton(known))
