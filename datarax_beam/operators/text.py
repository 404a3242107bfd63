"""Text operators: `Tokenize` with a Hugging Face ``tokenizers`` tokenizer, on the host.

Text cannot be traced by JAX, so tokenizing is a `HostOperator`: it runs over a whole batch
with the tokenizer's batch encoder (Rust, parallel, outside the GIL) and writes fixed-length
``int32`` columns that the JAX operators after it can use.

The tokenizer travels as its JSON (``Tokenizer.to_str()``): that is what is pickled into a Beam
job, and each process rebuilds the live Rust tokenizer once, on first use.

``tokenizers`` is an optional dependency: ``pip install 'datarax_beam[text]'``.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

import numpy as np

from datarax_beam.core.operator import OperatorConfig
from datarax_beam.operators.host import HostOperator

TEXT_EXTRA = "pip install 'datarax_beam[text]'"

_LIVE: dict[tuple, Any] = {}  # (json sha256, settings) -> configured Tokenizer, per process
_LIVE_LOCK = threading.Lock()


def _tokenizers():
    try:
        import tokenizers
    except ImportError:  # pragma: no cover - the test extra installs tokenizers
        raise ImportError(f"Tokenize needs the Hugging Face tokenizers package: {TEXT_EXTRA}") from None
    return tokenizers


def _tokenizer_json(tokenizer: Any) -> str:
    """The JSON of a `tokenizers.Tokenizer`, a transformers fast tokenizer, or a tokenizer.json path."""
    if isinstance(tokenizer, (str, os.PathLike)):
        path = os.fspath(tokenizer)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Tokenize: no tokenizer file at {path!r} (expected a tokenizer.json)")
        tok = _tokenizers().Tokenizer.from_file(path)
        return tok.to_str()
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)  # transformers' fast tokenizers
    to_str = getattr(backend, "to_str", None)
    if not callable(to_str):
        raise TypeError(
            f"`tokenizer` must be a tokenizers.Tokenizer, a transformers fast tokenizer or a path to a "
            f"tokenizer.json, got {type(tokenizer).__name__}"
        )
    return to_str()


class Tokenize(HostOperator):
    """Text -> fixed-length ``input_ids`` and ``attention_mask`` (``int32``, ``(n, max_length)``).

    Sequences longer than ``max_length`` are truncated, shorter ones padded with the pad token;
    the mask is 1 on real tokens and 0 on padding. Special tokens (e.g. ``[CLS]``/``[SEP]``) are
    added as the tokenizer's post-processor says. The settings given here replace any padding or
    truncation stored in the tokenizer's JSON. Ids are those of ``tokenizer.encode_batch`` with
    the same settings.

    Args:
      tokenizer: a ``tokenizers.Tokenizer``, a transformers fast tokenizer, or the path of a
        ``tokenizer.json``.
      feature: the text feature (``str``, or UTF-8 ``bytes``).
      max_length: the fixed output length.
      pair: an optional second text feature, encoded as the pair of ``feature`` (e.g. premise and
        hypothesis).
      pad_token: the padding token; its id is looked up in the tokenizer's vocabulary.
      pad_id: the padding id (default: the id of ``pad_token``).
      add_special_tokens: add the post-processor's special tokens.
      truncation_side, padding_side: ``"right"`` (default) or ``"left"``.
      ids, mask: the output feature names.
      threads: see `HostOperator`; default 1, because the tokenizer already encodes a batch on
        all cores.
      name: a name for messages.

    Raises:
      ValueError: ``pad_token`` is not in the vocabulary and no ``pad_id`` was given.
      TypeError (when applied): a value that is not text; names the feature and the value.

    Example:
      >>> from tokenizers import Tokenizer, models, pre_tokenizers
      >>> tok = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "hello": 2, "world": 3}, unk_token="[UNK]"))
      >>> tok.pre_tokenizer = pre_tokenizers.Whitespace()
      >>> op = Tokenize(tok, "text", max_length=4)
      >>> out = op.apply_batch({"text": np.array(["hello world", "world moon"], dtype=object)}, None)
      >>> out["input_ids"].tolist(), out["attention_mask"].tolist()
      ([[2, 3, 0, 0], [3, 1, 0, 0]], [[1, 1, 0, 0], [1, 1, 0, 0]])
    """

    def __init__(self, tokenizer: Any, feature: str = "text", *, max_length: int, pair: str | None = None,
                 pad_token: str = "[PAD]", pad_id: int | None = None, add_special_tokens: bool = True,
                 truncation_side: str = "right", padding_side: str = "right", ids: str = "input_ids",
                 mask: str = "attention_mask", threads: int | None = 1, name: str | None = None):
        for arg, value in (("feature", feature), ("ids", ids), ("mask", mask), ("pad_token", pad_token)):
            if not isinstance(value, str) or not value:
                raise TypeError(f"`{arg}` must be a non-empty str, got {value!r}")
        if pair is not None and (not isinstance(pair, str) or not pair):
            raise TypeError(f"`pair` must be a feature name or None, got {pair!r}")
        if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 1:
            raise ValueError(f"`max_length` must be an int >= 1, got {max_length!r}")
        for arg, value in (("truncation_side", truncation_side), ("padding_side", padding_side)):
            if value not in ("left", "right"):
                raise ValueError(f"`{arg}` must be 'left' or 'right', got {value!r}")
        if not isinstance(add_special_tokens, bool):
            raise TypeError(f"`add_special_tokens` must be a bool, got {add_special_tokens!r}")
        self._json = _tokenizer_json(tokenizer)
        self.tokenizer_sha256 = hashlib.sha256(self._json.encode()).hexdigest()
        self.feature, self.pair, self.ids, self.mask = feature, pair, ids, mask
        self.max_length = int(max_length)
        self.add_special_tokens = add_special_tokens
        self.truncation_side, self.padding_side = truncation_side, padding_side
        self.pad_token = pad_token
        if pad_id is None:
            pad_id = _tokenizers().Tokenizer.from_str(self._json).token_to_id(pad_token)
            if pad_id is None:
                raise ValueError(
                    f"Tokenize: the pad token {pad_token!r} is not in the tokenizer's vocabulary; pass "
                    f"pad_token= one that is, or pad_id="
                )
        if isinstance(pad_id, bool) or not isinstance(pad_id, (int, np.integer)) or pad_id < 0:
            raise ValueError(f"`pad_id` must be an int >= 0, got {pad_id!r}")
        self.pad_id = int(pad_id)
        super().__init__(None, OperatorConfig(), name=name or f"tokenize_{feature}", threads=threads)

    @property
    def tokenizer(self) -> Any:
        """The configured live tokenizer of this process (built once from the JSON)."""
        key = (self.tokenizer_sha256, self.max_length, self.pad_token, self.pad_id,
               self.truncation_side, self.padding_side)
        tok = _LIVE.get(key)
        if tok is None:
            with _LIVE_LOCK:
                tok = _LIVE.get(key)
                if tok is None:
                    tok = _tokenizers().Tokenizer.from_str(self._json)
                    tok.no_padding()
                    tok.no_truncation()
                    tok.enable_truncation(self.max_length, direction=self.truncation_side)
                    tok.enable_padding(direction=self.padding_side, pad_id=self.pad_id,
                                       pad_token=self.pad_token, length=self.max_length)
                    _LIVE[key] = tok
        return tok

    def transform(self, batch: dict[str, Any], keys) -> dict[str, Any]:
        texts = self._texts(batch, self.feature)
        inputs = texts if self.pair is None else list(zip(texts, self._texts(batch, self.pair), strict=True))
        tok = self.tokenizer
        encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
        encodings = encode(inputs, add_special_tokens=self.add_special_tokens)
        n, length = len(encodings), self.max_length
        ids = np.array([e.ids for e in encodings], dtype=np.int32).reshape(n, length)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int32).reshape(n, length)
        return {**batch, self.ids: ids, self.mask: mask}

    def _texts(self, batch: dict[str, Any], feature: str) -> list[str]:
        if feature not in batch:
            raise KeyError(f"Tokenize {self.name!r}: no feature {feature!r}; the records have {sorted(batch)}")
        values = batch[feature]
        values = values.tolist() if isinstance(values, np.ndarray) else list(values)
        if all(type(v) is str for v in values):
            return values
        out = []
        for v in values:
            if isinstance(v, (bytes, bytearray)):
                try:
                    v = bytes(v).decode("utf-8")
                except UnicodeDecodeError as err:
                    raise ValueError(f"Tokenize {self.name!r}: feature {feature!r} holds bytes that are not "
                                     f"UTF-8 ({err}): {bytes(v)[:40]!r}") from None
            if not isinstance(v, str):
                raise TypeError(f"Tokenize {self.name!r}: feature {feature!r} must hold text (str or UTF-8 "
                                f"bytes), got {type(v).__name__}: {v!r:.60}")
            out.append(str(v))
        return out

    #: The file `to_config` puts the tokenizer's JSON in.
    TOKENIZER_FILE = "tokenizer.json"

    def to_config(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        """The operator as data: ``(JSON-able settings, {"tokenizer.json": the tokenizer's JSON})``,
        rebuilt by `from_config` (how `datarax_beam.serving` exports it, never as pickled code)."""
        config = {"feature": self.feature, "max_length": self.max_length, "pair": self.pair,
                  "pad_token": self.pad_token, "pad_id": self.pad_id, "add_special_tokens": self.add_special_tokens,
                  "truncation_side": self.truncation_side, "padding_side": self.padding_side, "ids": self.ids,
                  "mask": self.mask, "threads": self.threads, "name": self.name,
                  "tokenizer_sha256": self.tokenizer_sha256}
        return config, {self.TOKENIZER_FILE: self._json.encode("utf-8")}

    @classmethod
    def from_config(cls, config: dict[str, Any], files: dict[str, bytes]) -> Tokenize:
        """The operator `to_config` describes; the tokenizer JSON must match its recorded SHA-256."""
        config = dict(config)
        expected = config.pop("tokenizer_sha256", None)
        text = files[cls.TOKENIZER_FILE].decode("utf-8")
        got = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if expected is not None and got != expected:
            raise ValueError(f"Tokenize: {cls.TOKENIZER_FILE} has SHA-256 {got}, the configuration "
                             f"records {expected}")
        op = cls(_tokenizers().Tokenizer.from_str(text), **config)
        op._json, op.tokenizer_sha256 = text, got  # exactly the exported JSON, not a re-serialization
        return op

    def _fingerprint_extra(self) -> bytes:
        settings = (self.tokenizer_sha256, self.feature, self.pair, self.max_length, self.pad_token, self.pad_id,
                    self.add_special_tokens, self.truncation_side, self.padding_side, self.ids, self.mask)
        return repr(settings).encode()


__all__ = ["TEXT_EXTRA", "Tokenize"]
