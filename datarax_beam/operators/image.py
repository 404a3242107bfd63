"""Image operators: decode and resize on the host (Pillow), crop and flip in JAX (keyed).

A typical chain reads encoded bytes (PNG/JPEG from a Hugging Face ``Image`` feature, files, or
your own source), decodes them to ``uint8`` ``(H, W, C)`` arrays of any size, resizes them to
one fixed size, and augments them:

    DecodeImage("image") >> ResizeImage((64, 64)) >> RandomCrop((56, 56), rngs=...) >> RandomFlip(rngs=...)

Why the split: `DecodeImage` and `ResizeImage` take bytes and images of any size, which JAX cannot
trace, so they are `HostOperator`s — they run over whole batches in the kernel's thread pool
(Pillow releases the GIL while it decodes and resamples). `RandomCrop` and `RandomFlip` work on
fixed-size images, so they are JAX operators: they fuse with the operators after them (e.g.
`Normalize`) into one jitted segment, on an accelerator when there is one. Given ragged images,
they still work, record by record (the slow per-record path; resize first).

Keys: a stochastic operator draws from ``(seed, stream, epoch, record index)``, so a crop
depends on the record, not on its batch, worker or runner; applied after the train-time reader it
changes every epoch (see docs/operators.md, "Augmentation that changes every epoch").

Pillow is an optional dependency: ``pip install 'datarax_beam[image]'``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from datarax_beam.core import columns as cols
from datarax_beam.core.element import Element
from datarax_beam.core.operator import OperatorConfig, OperatorModule
from datarax_beam.operators.host import HostOperator

IMAGE_EXTRA = "pip install 'datarax_beam[image]'"

#: `DecodeImage` ``channels`` -> Pillow mode.
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
#: uint8 channel count -> Pillow mode for resizing.
_UINT8_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
FILTERS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")


def _pil():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - the test extra installs Pillow
        raise ImportError(f"Image operators need Pillow: {IMAGE_EXTRA}") from None
    return Image


class ImageDecodeError(ValueError):
    """Encoded bytes that Pillow cannot decode (corrupt, truncated, or not an image)."""


def _check_feature(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"`{name}` must be a non-empty str, got {value!r}")
    return value


def _check_size(size: Any, what: str) -> tuple[int, int]:
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in size)):
        raise ValueError(f"`size` of {what} must be (height, width) with ints >= 1, got {size!r}")
    return int(size[0]), int(size[1])


class DecodeImage(HostOperator):
    """Encoded image bytes (PNG, JPEG, or any format Pillow reads) -> ``uint8`` ``(H, W, C)``.

    Images keep their own size: a batch of equal sizes becomes one ``(n, H, W, C)`` column, a
    batch of different sizes an object column of arrays (resize them with `ResizeImage`).

    Args:
      feature: the feature holding the encoded bytes.
      channels: 1 (grayscale), 3 (RGB) or 4 (RGBA); every image is converted to it (a PNG with
        a palette or transparency, a grayscale JPEG, ...). The channel axis is always there.
      output: the feature to write (default: replace ``feature``).
      formats: the Pillow formats accepted (e.g. ``("PNG", "JPEG")``); ``None``: any.
      threads: see `HostOperator` (default: the kernel's).
      name: a name for messages.

    Raises (when applied):
      ImageDecodeError: bytes Pillow cannot decode; the message names the feature and the size
        and first bytes of the value. Offline such a record becomes a dead letter (stage
        ``operators``); online the kernel's error names the record's index.

    Example:
      >>> import io, numpy as np
      >>> from PIL import Image
      >>> buf = io.BytesIO(); Image.new("RGB", (5, 4), (255, 0, 0)).save(buf, "PNG")
      >>> out = DecodeImage("image").apply_batch({"image": np.array([buf.getvalue()], dtype=object)}, None)
      >>> out["image"].shape, out["image"].dtype, out["image"][0, 0, 0].tolist()
      ((1, 4, 5, 3), dtype('uint8'), [255, 0, 0])
    """

    def __init__(self, feature: str = "image", *, channels: int = 3, output: str | None = None,
                 formats: Sequence[str] | None = None, threads: int | None = None, name: str | None = None):
        self.feature = _check_feature("feature", feature)
        self.output = feature if output is None else _check_feature("output", output)
        if channels not in _MODES:
            raise ValueError(f"`channels` must be 1, 3 or 4, got {channels!r}")
        self.channels = int(channels)
        if formats is not None and (isinstance(formats, str) or not all(isinstance(f, str) for f in formats)):
            raise TypeError(f"`formats` must be a list of Pillow format names or None, got {formats!r}")
        self.formats = None if formats is None else tuple(f.upper() for f in formats)
        super().__init__(None, OperatorConfig(), name=name or f"decode_{feature}", threads=threads)

    def transform(self, batch: dict[str, Any], keys) -> dict[str, Any]:
        if self.feature not in batch:
            raise KeyError(f"DecodeImage {self.name!r}: no feature {self.feature!r}; the records have {sorted(batch)}")
        image = _pil()
        mode = _MODES[self.channels]
        images = [self._decode(image, value, mode) for value in batch[self.feature]]
        return {**batch, self.output: cols.stack_values(images)}

    def _decode(self, image, value: Any, mode: str) -> np.ndarray:
        if isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 1:
            value = value.tobytes()
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"DecodeImage {self.name!r}: feature {self.feature!r} must hold encoded image bytes, got "
                f"{type(value).__name__}: {value!r:.60}"
                + (" (already decoded? leave DecodeImage out)" if isinstance(value, np.ndarray) else "")
            )
        try:
            with image.open(io.BytesIO(value), formats=self.formats) as img:
                img = img.convert(mode) if img.mode != mode else img
                arr = np.asarray(img, dtype=np.uint8)
        except (image.UnidentifiedImageError, image.DecompressionBombError, OSError, SyntaxError,
                ValueError) as err:
            head = bytes(value[:8])
            raise ImageDecodeError(
                f"DecodeImage {self.name!r}: feature {self.feature!r} holds {len(value)} bytes "
                f"(starting {head!r}) that Pillow cannot decode as an image: {type(err).__name__}: {err}"
            ) from None
        return arr[..., None] if arr.ndim == 2 else arr

    def _fingerprint_extra(self) -> bytes:
        return repr((self.feature, self.output, self.channels, self.formats)).encode()

    def to_config(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        """The operator as data: ``(JSON-able settings, files)``, rebuilt by `from_config`
        (how `datarax_beam.serving` exports it, never as pickled code)."""
        return {"feature": self.feature, "channels": self.channels, "output": self.output,
                "formats": None if self.formats is None else list(self.formats), "threads": self.threads,
                "name": self.name}, {}

    @classmethod
    def from_config(cls, config: dict[str, Any], files: dict[str, bytes]) -> DecodeImage:
        """The operator `to_config` describes."""
        return cls(**config)


class ResizeImage(HostOperator):
    """Resizes every image to one fixed ``(height, width)`` with Pillow (any input size).

    Filter: ``"bilinear"`` by default — Pillow widens its support by the scale factor when it
    shrinks, so downscaling is antialiased (no aliasing from skipped pixels, like
    ``jax.image.resize(..., antialias=True)``) at a fraction of bicubic/Lanczos's cost, and
    upscaling is smooth. Use ``"box"`` for strong downscaling (an area average), ``"bicubic"`` or
    ``"lanczos"`` for sharper results, ``"nearest"`` for label masks. The aspect ratio is not
    kept (crop first to keep it).

    Images are ``(H, W)`` or ``(H, W, C)``; ``uint8`` with 1-4 channels (resized in Pillow's
    L/LA/RGB/RGBA modes; RGBA/LA with premultiplied alpha) or ``float32`` (each channel in mode
    ``F``). The output keeps the dtype and the channel axis: ``(n, height, width[, C])``.

    Args:
      size: ``(height, width)``.
      feature: the image feature.
      filter: one of ``nearest``, ``box``, ``bilinear``, ``hamming``, ``bicubic``, ``lanczos``.
      output: the feature to write (default: replace ``feature``).
      threads: see `HostOperator` (default: the kernel's).
      name: a name for messages.

    Example:
      >>> import numpy as np
      >>> images = np.empty(2, dtype=object)
      >>> images[:] = [np.zeros((30, 40, 3), np.uint8), np.full((7, 9, 3), 255, np.uint8)]
      >>> out = ResizeImage((16, 16)).apply_batch({"image": images}, None)["image"]
      >>> out.shape, out.dtype, int(out[1].min())
      ((2, 16, 16, 3), dtype('uint8'), 255)
    """

    def __init__(self, size: tuple[int, int], feature: str = "image", *, filter: str = "bilinear",  # noqa: A002
                 output: str | None = None, threads: int | None = None, name: str | None = None):
        self.size = _check_size(size, "ResizeImage")
        self.feature = _check_feature("feature", feature)
        self.output = feature if output is None else _check_feature("output", output)
        if filter not in FILTERS:
            raise ValueError(f"`filter` must be one of {FILTERS}, got {filter!r}")
        self.filter = filter
        super().__init__(None, OperatorConfig(), name=name or f"resize_{feature}", threads=threads)

    def transform(self, batch: dict[str, Any], keys) -> dict[str, Any]:
        if self.feature not in batch:
            raise KeyError(f"ResizeImage {self.name!r}: no feature {self.feature!r}; the records have {sorted(batch)}")
        image = _pil()
        resample = getattr(image.Resampling, self.filter.upper())
        column = batch[self.feature]
        return {**batch, self.output: cols.stack_values([self._resize(image, np.asarray(v), resample)
                                                         for v in column])}

    def _resize(self, image, arr: np.ndarray, resample) -> np.ndarray:
        h, w = self.size
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and not 1 <= arr.shape[2] <= 4 and arr.dtype == np.uint8):
            raise ValueError(
                f"ResizeImage {self.name!r}: feature {self.feature!r} must hold (H, W) or (H, W, C) images "
                f"(uint8: C <= 4), got shape {arr.shape}"
            )
        if arr.shape[:2] == (h, w):
            return arr
        if arr.dtype == np.uint8:
            squeeze = arr.ndim == 3 and arr.shape[2] == 1
            plane = arr[..., 0] if squeeze else arr
            mode = "L" if plane.ndim == 2 else _UINT8_MODES[plane.shape[2]]
            out = np.asarray(image.fromarray(plane, mode).resize((w, h), resample))
            return out[..., None] if squeeze else out
        if arr.dtype == np.float32:
            planes = arr[..., None] if arr.ndim == 2 else arr
            out = np.stack([np.asarray(image.fromarray(planes[..., c], "F").resize((w, h), resample))
                            for c in range(planes.shape[2])], axis=-1)
            return out[..., 0] if arr.ndim == 2 else out
        raise TypeError(
            f"ResizeImage {self.name!r}: feature {self.feature!r} has dtype {arr.dtype}; expected uint8 or "
            f"float32 images (cast first)"
        )

    def _fingerprint_extra(self) -> bytes:
        return repr((self.size, self.feature, self.output, self.filter)).encode()

    def to_config(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        """The operator as data: ``(JSON-able settings, files)``, rebuilt by `from_config`."""
        return {"size": list(self.size), "feature": self.feature, "filter": self.filter, "output": self.output,
                "threads": self.threads, "name": self.name}, {}

    @classmethod
    def from_config(cls, config: dict[str, Any], files: dict[str, bytes]) -> ResizeImage:
        """The operator `to_config` describes."""
        return cls(**{**config, "size": tuple(config["size"])})


def _features(feature: str | Sequence[str]) -> tuple[str, ...]:
    names = (feature,) if isinstance(feature, str) else tuple(feature)
    if not names or not all(isinstance(f, str) and f for f in names):
        raise TypeError(f"`feature` must be a feature name or a list of them, got {feature!r}")
    return names


class RandomCrop(OperatorModule):
    """A random ``(height, width)`` window of each image, the same window for all ``feature``s.

    A JAX operator (``jax.lax.dynamic_slice`` at an offset drawn from the record's key): on
    fixed-size images it fuses into the jitted segment with the operators around it. Images are
    ``(H, W, ...)``; the dtype is kept.

    Args:
      size: ``(height, width)`` of the crop.
      feature: the image feature, or a list of features cropped with the same window (an image
        and its mask).
      rngs: the ``nnx.Rngs`` with the ``stream_name`` stream (e.g. ``nnx.Rngs(augment=0)``).
      stream_name: the stream that seeds the crops.
      padding: zero-pad this many pixels on each side first (CIFAR-style crops).
      name: a name for messages.

    Raises (when applied):
      ValueError: an image (after padding) smaller than the crop; names the feature and the shapes.

    Example:
      >>> import flax.nnx as nnx, jax, numpy as np
      >>> crop = RandomCrop((2, 2), rngs=nnx.Rngs(augment=0))
      >>> crop(Element({"image": np.arange(16).reshape(4, 4)}), jax.random.key(1)).data["image"].shape
      (2, 2)
    """

    def __init__(self, size: tuple[int, int], feature: str | Sequence[str] = "image", *,
                 rngs: nnx.Rngs, stream_name: str = "augment", padding: int = 0, name: str | None = None):
        self.size = _check_size(size, "RandomCrop")
        self.features = _features(feature)
        if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
            raise ValueError(f"`padding` must be an int >= 0, got {padding!r}")
        self.padding = int(padding)
        super().__init__(OperatorConfig(stochastic=True, stream_name=stream_name), rngs=rngs,
                         name=name or f"random_crop_{self.features[0]}")

    def apply(self, element: Element, key) -> Element:
        h, w = self.size
        p = self.padding
        images = [jnp.asarray(_get(element, f, self.name)) for f in self.features]
        shapes = {x.shape[:2] for x in images}
        for f, x in zip(self.features, images, strict=True):
            if x.ndim < 2 or x.shape[0] + 2 * p < h or x.shape[1] + 2 * p < w:
                raise ValueError(
                    f"RandomCrop {self.name!r}: feature {f!r} has shape {tuple(x.shape)}"
                    + (f" (padded by {p})" if p else "") + f", too small for a {h}x{w} crop"
                )
        if len(shapes) > 1:
            raise ValueError(f"RandomCrop {self.name!r}: features {list(self.features)} differ in height/width: "
                             f"{[tuple(x.shape) for x in images]}")
        height, width = images[0].shape[0] + 2 * p, images[0].shape[1] + 2 * p
        offset = jax.random.randint(key, (2,), 0, jnp.array([height - h + 1, width - w + 1]))
        out = {}
        for f, x in zip(self.features, images, strict=True):
            if p:
                x = jnp.pad(x, [(p, p), (p, p)] + [(0, 0)] * (x.ndim - 2))
            start = (offset[0], offset[1]) + (0,) * (x.ndim - 2)
            out[f] = jax.lax.dynamic_slice(x, start, (h, w) + tuple(x.shape[2:]))
        return element.update_data(out)

    def _fingerprint_extra(self) -> bytes:
        return repr((self.size, self.features, self.padding)).encode()


class RandomFlip(OperatorModule):
    """Flips each image left-right (and/or up-down) with probability ``probability``.

    A JAX operator (fuses into the jitted segment on fixed-size images). Images are
    ``(H, W, ...)``; all ``feature``s of a record flip together.

    Args:
      feature: the image feature, or a list of features flipped together.
      rngs: the ``nnx.Rngs`` with the ``stream_name`` stream.
      horizontal: flip left-right (the W axis).
      vertical: flip up-down (the H axis), drawn independently of ``horizontal``.
      probability: the chance of each flip.
      stream_name: the stream that seeds the flips.
      name: a name for messages.

    Example:
      >>> import flax.nnx as nnx, jax, numpy as np
      >>> flip = RandomFlip(probability=1.0, rngs=nnx.Rngs(augment=0))
      >>> flip(Element({"image": np.array([[1, 2, 3]])}), jax.random.key(0)).data["image"].tolist()
      [[3, 2, 1]]
    """

    def __init__(self, feature: str | Sequence[str] = "image", *, rngs: nnx.Rngs, horizontal: bool = True,
                 vertical: bool = False, probability: float = 0.5, stream_name: str = "augment",
                 name: str | None = None):
        self.features = _features(feature)
        if not isinstance(horizontal, bool) or not isinstance(vertical, bool) or not (horizontal or vertical):
            raise ValueError(f"RandomFlip needs horizontal and/or vertical (bools), got "
                             f"horizontal={horizontal!r}, vertical={vertical!r}")
        if isinstance(probability, bool) or not isinstance(probability, (int, float)) or not 0 <= probability <= 1:
            raise ValueError(f"`probability` must be a number in [0, 1], got {probability!r}")
        self.horizontal, self.vertical, self.probability = horizontal, vertical, float(probability)
        super().__init__(OperatorConfig(stochastic=True, stream_name=stream_name), rngs=rngs,
                         name=name or f"random_flip_{self.features[0]}")

    def apply(self, element: Element, key) -> Element:
        k_h, k_v = jax.random.split(key)
        flip_h = jax.random.bernoulli(k_h, self.probability) if self.horizontal else None
        flip_v = jax.random.bernoulli(k_v, self.probability) if self.vertical else None
        out = {}
        for f in self.features:
            x = jnp.asarray(_get(element, f, self.name))
            if x.ndim < 2:
                raise ValueError(f"RandomFlip {self.name!r}: feature {f!r} has shape {tuple(x.shape)}; "
                                 f"expected (H, W, ...)")
            if flip_h is not None:
                x = jnp.where(flip_h, jnp.flip(x, axis=1), x)
            if flip_v is not None:
                x = jnp.where(flip_v, jnp.flip(x, axis=0), x)
            out[f] = x
        return element.update_data(out)

    def _fingerprint_extra(self) -> bytes:
        return repr((self.features, self.horizontal, self.vertical, self.probability)).encode()


def _get(element: Element, feature: str, name: str) -> Any:
    try:
        return element.data[feature]
    except KeyError:
        raise KeyError(f"Operator {name!r}: no feature {feature!r}; the records have {sorted(element.data)}") from None


__all__ = ["FILTERS", "DecodeImage", "ImageDecodeError", "RandomCrop", "RandomFlip", "ResizeImage"]
