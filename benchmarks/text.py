"""Text: tokenize N sentences to 64 ids with a locally trained WordPiece tokenizer, write to disk.

Generates N sentences (default 100,000) from a made-up vocabulary, trains a WordPiece tokenizer on
them (untimed), then times, in the same run:

* **ours**: ``materialize(from_source(MemorySource({"text": ...}), 1024) >> Tokenize(tok,
  max_length=64) >> keep ids and mask)`` on the in-process DirectRunner (zstd ArrayRecord);
* **HF**: ``Dataset.from_dict({"text": ...})`` (built before the clock starts), then
  ``ds.map(fn, batched=True, batch_size=1024, remove_columns=["text"])`` with ``fn`` calling the
  same tokenizer's ``encode_batch`` with the same padding and truncation, and ``save_to_disk``.

Prints sentences/s and ours / HF (goal >= 1), and checks that both wrote identical ids.

    python benchmarks/text.py [--records 100000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from datarax_beam import from_source  # noqa: E402
from datarax_beam.core import columns as cols  # noqa: E402
from datarax_beam.operators import HostOperator  # noqa: E402
from datarax_beam.operators.text import Tokenize  # noqa: E402
from datarax_beam.sources import MemorySource  # noqa: E402

SHARDS = 8
BATCH = 1024
LENGTH = 64


def make_sentences(n: int, seed: int = 0) -> list[str]:
    """Sentences of 5-80 words drawn (Zipf-like) from 5,000 made-up words."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(5000)]
    p = 1.0 / np.arange(1, len(words) + 1)
    picks = rng.choice(len(words), size=n * 80, p=p / p.sum())
    lengths = rng.integers(5, 81, n)
    out, pos = [], 0
    for length in lengths:
        out.append(" ".join(words[i] for i in picks[pos:pos + length]) + ".")
        pos += length
    return out


def train_tokenizer(sentences: list[str]):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(sentences[:20_000], trainers.WordPieceTrainer(
        vocab_size=8000, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"], show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


def _ids_only(batch, keys):
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def ours(sentences: list[str], tok, out: str) -> None:
    from datarax_beam.runners import materialize, options

    pipeline = (from_source(MemorySource(data={"text": cols.object_column(sentences)}), BATCH)
                >> Tokenize(tok, "text", max_length=LENGTH) >> HostOperator(_ids_only, name="ids_only"))
    materialize(pipeline, out, num_shards=SHARDS, options=options.in_process(), overwrite=True)


def hf_tokenizer(tok):
    from tokenizers import Tokenizer

    hf = Tokenizer.from_str(tok.to_str())
    hf.enable_truncation(LENGTH)
    hf.enable_padding(length=LENGTH, pad_id=hf.token_to_id("[PAD]"), pad_token="[PAD]")
    return hf


def run_hf(ds, tok, out: str) -> None:
    hf = hf_tokenizer(tok)

    def fn(batch):
        encodings = hf.encode_batch(batch["text"])
        return {"input_ids": [e.ids for e in encodings], "attention_mask": [e.attention_mask for e in encodings]}

    ds.map(fn, batched=True, batch_size=BATCH, remove_columns=["text"], load_from_cache_file=False).save_to_disk(out)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=1, help="best of N for each side")
    args = parser.parse_args(argv)
    import datasets

    datasets.disable_progress_bars()
    n = args.records
    sentences = make_sentences(n)
    tok = train_tokenizer(sentences)
    ds = datasets.Dataset.from_dict({"text": sentences})
    work = tempfile.mkdtemp(prefix="bench-text-")
    try:
        ours(sentences[:BATCH], tok, os.path.join(work, "warm"))  # imports, untimed
        run_hf(ds.select(range(BATCH)), tok, os.path.join(work, "warm-hf"))
        best = {"ours": float("inf"), "hf": float("inf")}
        for r in range(max(1, args.repeats)):
            for name, fn in (("ours", lambda out: ours(sentences, tok, out)), ("hf", lambda out: run_hf(ds, tok, out))):
                start = time.perf_counter()
                fn(os.path.join(work, f"{name}{r}"))
                best[name] = min(best[name], time.perf_counter() - start)
        from datarax_beam.sources import ArrayRecordSourceModule

        reader = ArrayRecordSourceModule(os.path.join(work, "ours0"))
        our_ids = np.concatenate([np.asarray(b["input_ids"]) for b in from_source(reader, batch_size=8192)])
        hf_ids = np.asarray(datasets.load_from_disk(os.path.join(work, "hf0")).with_format("numpy")["input_ids"])
        identical = our_ids.shape == hf_ids.shape and bool(np.array_equal(our_ids, hf_ids))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rates = {name: n / seconds for name, seconds in best.items()}
    print(f"\ntext: {n:,} sentences -> WordPiece ids, length {LENGTH}, batches of {BATCH}, write to disk"
          f" (best of {args.repeats})")
    print(f"  materialize, in-process, {SHARDS} zstd shards   {rates['ours']:>10,.0f} sentences/s")
    print(f"  HF map(batched=True) + save_to_disk        {rates['hf']:>10,.0f} sentences/s")
    print(f"  ours / HF = {rates['ours'] / rates['hf']:.2f}x (goal >= 1); identical ids: {identical}")
    return {**rates, "identical": identical}


if __name__ == "__main__":
    main()
