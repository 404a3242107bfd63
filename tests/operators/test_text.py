"""Tokenize: fixed-length ids and mask equal to the tokenizer's own batch encoding, from a
Tokenizer, a tokenizer.json path or its pickle; offline equals online."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from datarax_beam import from_source
from datarax_beam.core import columns as cols
from datarax_beam.operators.text import Tokenize
from datarax_beam.runners import materialize, options
from datarax_beam.shards.reader import read_columns
from datarax_beam.sources import MemorySource

SENTENCES = [f"the {w} number {i} jumps over the lazy dog" if i % 3 else f"a short {w}"
             for i, w in enumerate(["cat", "fox", "bird", "fish", "cow"] * 8)]


@pytest.fixture(scope="module")
def tokenizer():
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"], show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


def reference(tok, texts, length, pairs=None):
    ref = Tokenizer.from_str(tok.to_str())
    ref.enable_truncation(length)
    ref.enable_padding(length=length, pad_id=ref.token_to_id("[PAD]"), pad_token="[PAD]")
    encs = ref.encode_batch(texts if pairs is None else list(zip(texts, pairs, strict=True)))
    return np.array([e.ids for e in encs]), np.array([e.attention_mask for e in encs])


def test_ids_and_mask_equal_the_tokenizers_batch_encoding(tokenizer):
    out = Tokenize(tokenizer, max_length=8).apply_batch({"text": cols.object_column(SENTENCES)}, None)
    ids, mask = reference(tokenizer, SENTENCES, 8)
    assert out["input_ids"].dtype == np.int32 and out["input_ids"].shape == (len(SENTENCES), 8)
    np.testing.assert_array_equal(out["input_ids"], ids)
    np.testing.assert_array_equal(out["attention_mask"], mask)
    assert mask[0, -1] == 0 and out["input_ids"][0, -1] == tokenizer.token_to_id("[PAD]")  # "a short cat": padded
    assert mask[1].all() and out["input_ids"][1, -1] == tokenizer.token_to_id("[SEP]")  # truncated
    assert out["text"].tolist() == SENTENCES  # other features are kept


def test_pairs_bytes_options_and_outputs(tokenizer):
    texts = cols.object_column([s.encode() for s in SENTENCES[:4]])
    op = Tokenize(tokenizer, "premise", pair="hypothesis", max_length=12, ids="ids", mask="m")
    out = op.apply_batch({"premise": texts, "hypothesis": cols.object_column(SENTENCES[4:8])}, None)
    ids, mask = reference(tokenizer, SENTENCES[:4], 12, SENTENCES[4:8])
    np.testing.assert_array_equal(out["ids"], ids)
    np.testing.assert_array_equal(out["m"], mask)
    left = Tokenize(tokenizer, max_length=6, padding_side="left", add_special_tokens=False)
    row = left.apply_batch({"text": cols.object_column(["a short cat"])}, None)
    n = len(tokenizer.encode("a short cat", add_special_tokens=False).ids)
    assert row["attention_mask"].tolist() == [[0] * (6 - n) + [1] * n]


def test_from_a_file_and_pickled_as_json(tokenizer, tmp_path):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    op = Tokenize(str(path), max_length=10)
    clone = pickle.loads(pickle.dumps(op))
    batch = {"text": cols.object_column(SENTENCES[:5])}
    np.testing.assert_array_equal(clone.apply_batch(batch, None)["input_ids"],
                                  Tokenize(tokenizer, max_length=10).apply_batch(batch, None)["input_ids"])
    assert clone.fingerprint() == op.fingerprint()
    assert Tokenize(tokenizer, max_length=11).fingerprint() != op.fingerprint()


def test_errors(tokenizer, tmp_path):
    op = Tokenize(tokenizer, "text", max_length=4)
    with pytest.raises(TypeError, match="feature 'text' must hold text .*got NoneType: None"):
        op.apply_batch({"text": cols.object_column(["a", None])}, None)
    with pytest.raises(ValueError, match="feature 'text' holds bytes that are not UTF-8"):
        op.apply_batch({"text": cols.object_column([b"\xff\xfe"])}, None)
    with pytest.raises(KeyError, match="no feature 'text'; the records have \\['body'\\]"):
        op.apply_batch({"body": cols.object_column(["a"])}, None)
    with pytest.raises(ValueError, match="the pad token '<pad>' is not in the tokenizer's vocabulary"):
        Tokenize(tokenizer, max_length=4, pad_token="<pad>")
    with pytest.raises(FileNotFoundError, match="no tokenizer file at"):
        Tokenize(str(tmp_path / "missing.json"), max_length=4)
    with pytest.raises(TypeError, match="`tokenizer` must be a tokenizers.Tokenizer"):
        Tokenize(object(), max_length=4)
    with pytest.raises(ValueError, match="`max_length` must be an int >= 1, got 0"):
        Tokenize(tokenizer, max_length=0)


def test_offline_equals_online(tokenizer, tmp_path):
    def pipeline():
        src = MemorySource(data={"text": cols.object_column(SENTENCES)})
        return from_source(src, batch_size=16) >> Tokenize(tokenizer, max_length=8)

    online = list(pipeline())
    ids = np.concatenate([np.asarray(b["input_ids"]) for b in online])
    np.testing.assert_array_equal(ids, reference(tokenizer, SENTENCES, 8)[0])
    shardset = materialize(pipeline(), str(tmp_path / "out"), num_shards=2, options=options.in_process())
    offline = read_columns(shardset)
    np.testing.assert_array_equal(np.asarray(offline["input_ids"]), ids)
    assert list(offline["text"]) == SENTENCES
