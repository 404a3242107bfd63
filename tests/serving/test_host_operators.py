"""The built-in host operators export as data (settings and files, rebuilt by ``from_config``):
an image and text chain (DecodeImage, ResizeImage, Normalize, Tokenize) loads and equals the
materialized records bit for bit; a rebuilt operator that does not match its files is refused."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from datarax_beam import export_transform, from_source, load_transform
from datarax_beam.core import columns as cols
from datarax_beam.operators.image import DecodeImage, ResizeImage
from datarax_beam.operators.statistics import Normalize, VocabularyLookup
from datarax_beam.operators.text import Tokenize
from datarax_beam.runners import materialize, options
from datarax_beam.serving import TransformFormatError
from datarax_beam.serving.format import MANIFEST
from datarax_beam.sources import ArrayRecordSourceModule, MemorySource

from .chains import assert_same, in_batches

N = 40
SENTENCES = [f"the {w} number {i} jumps" if i % 3 else f"a {w}" for i, w in enumerate(["cat", "fox", "cow"] * 14)][:N]


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def tokenizer():
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordPieceTrainer(
        vocab_size=100, special_tokens=["[PAD]", "[UNK]"], show_progress=False))
    return tok


def raw() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (rng.integers(9, 20), rng.integers(9, 20), 3), dtype=np.uint8) for _ in range(N)]
    return {"image": cols.object_column([png(a) for a in images]), "text": cols.object_column(SENTENCES),
            "label": np.arange(N, dtype=np.int32) % 3}


def ops(tokenizer) -> list:
    return [DecodeImage("image"), ResizeImage((8, 8), "image", filter="bicubic"), Normalize("image", axes="all"),
            Tokenize(tokenizer, "text", max_length=6)]


def test_image_and_text_chain_equals_the_materialized_records(tokenizer, tmp_path):
    p = from_source(MemorySource(data=raw()), 16)
    for op in ops(tokenizer):
        p = p >> op
    out = str(tmp_path / "set")
    materialize(p, out, num_shards=1, options=options.in_process())
    offline = dict(ArrayRecordSourceModule(out).get_batch(np.arange(N)))
    t = export_transform(p, tmp_path / "t")
    assert [s.get("operator") for s in t.manifest.raw["steps"]] == ["DecodeImage", "ResizeImage", None, "Tokenize"]
    assert sorted(os.listdir(tmp_path / "t" / "steps" / "03")) == ["tokenizer.json"]
    assert {f["name"]: f["kind"] for f in t.input_features} == {"image": "bytes", "text": "string", "label": "tensor"}
    for batch_size in (1, 7, N):
        assert_same(in_batches(t, raw(), batch_size), offline)


def test_to_config_round_trips_every_built_in_host_operator(tokenizer):
    data = raw()
    vocab = VocabularyLookup("text", top_k=5, output="text_id").with_statistics(
        {"text_vocab": {"vocabulary": ["a cat", "a fox"], "counts": [3, 2]}})
    for op in [*[o for o in ops(tokenizer) if o.on_host], DecodeImage(channels=1, output="px", formats=["PNG"]), vocab]:
        config, files = op.to_config()
        assert json.loads(json.dumps(config)) == config  # plain JSON
        rebuilt = type(op).from_config(config, files)
        assert rebuilt.to_config() == (config, files)
        batch = data if not isinstance(op, ResizeImage) else DecodeImage().apply_batch(data, None)
        assert_same(rebuilt.apply_batch(dict(batch), None), op.apply_batch(dict(batch), None))


def test_a_changed_tokenizer_file_is_refused(tokenizer, tmp_path):
    p = from_source(MemorySource(data={"text": cols.object_column(SENTENCES)}), 8) >> Tokenize(tokenizer, max_length=4)
    export_transform(p, tmp_path / "t")
    manifest_path = tmp_path / "t" / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    (tmp_path / "t" / "steps" / "00" / "tokenizer.json").write_text(tokenizer.to_str().replace("[UNK]", "[UNKNOWN]"))
    with pytest.raises(TransformFormatError, match=r"tokenizer\.json: SHA-256 is [0-9a-f]{64}; the manifest records"):
        load_transform(tmp_path / "t")
    # the file and its recorded SHA-256 agree, but the operator's own setting does not: named
    manifest["steps"][0]["files"]["tokenizer.json"]["sha256"] = __import__("hashlib").sha256(
        (tmp_path / "t" / "steps" / "00" / "tokenizer.json").read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(TransformFormatError, match=r"steps\[0\]: Tokenize 'tokenize_text' cannot be rebuilt from "
                                                   r"its config .*: ValueError: Tokenize: tokenizer\.json has SHA-256"):
        load_transform(tmp_path / "t")
