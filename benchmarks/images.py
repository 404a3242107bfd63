"""Images: decode, resize 64x64, random crop 56x56 + flip, normalize, write -- three ways.

Generates N JPEGs of random sizes 32-128 px (default 20,000; smooth content, quality 90) in
memory, then times, in the same run, the same steps written to 8 zstd ArrayRecord shards:

* **ours**: ``materialize(from_source(MemorySource({"image": bytes}), 256) >> DecodeImage >>
  ResizeImage((64, 64)) >> RandomCrop((56, 56)) >> RandomFlip >> normalize)`` on the in-process
  DirectRunner (host operators in the kernel's thread pool, the rest one jitted segment);
* **(a) hand loop**: Pillow decode + resize in a thread pool, one jitted batch function (crop,
  flip, normalize with the same per-record keys), ``ArrayRecordWriter`` -- the ceiling;
* **(b) Grain**: ``MapDataset.source(bytes).map(decode+resize).random_map(crop+flip).map(normalize)
  .to_iter_dataset(ReadOptions(num_threads))`` batched and written with ``ArrayRecordWriter``.

Prints images/s and the ratios ours / (a) (goal >= 0.8) and ours / (b) (goal >= 2), and checks
that ours and (a) wrote the same pixels.

    python benchmarks/images.py [--records 20000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.nnx as nnx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from datarax_beam import from_source  # noqa: E402
from datarax_beam.core import columns as cols  # noqa: E402
from datarax_beam.operators import ElementOperator, ElementOperatorConfig  # noqa: E402
from datarax_beam.operators.image import DecodeImage, RandomCrop, RandomFlip, ResizeImage  # noqa: E402
from datarax_beam.shards import shard_name  # noqa: E402
from datarax_beam.sources import MemorySource  # noqa: E402

SHARDS = 8
BATCH = 256
#: What a user writes by hand: ArrayRecord\'s own zstd (riegeli compresses inside `write`, one
#: thread). Our shards store records compressed by us instead (docs/format.md).
HAND_OPTIONS = "group_size:1,zstd"
SIZE, CROP = (64, 64), (56, 56)
MEAN, STD = 0.5, 0.25
THREADS = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def make_jpegs(n: int, seed: int = 0) -> list[bytes]:
    """N JPEGs, 32-128 px a side: smooth (upsampled 8x8 noise) like photos, not white noise."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(32, 129, (n, 2))
    tiles = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)

    def one(i):
        buf = io.BytesIO()
        Image.fromarray(tiles[i]).resize((int(sizes[i, 1]), int(sizes[i, 0])), Image.Resampling.BILINEAR).save(
            buf, "JPEG", quality=90)
        return buf.getvalue()

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(one, range(n)))


def normalize(element, key):
    return element.update_data({"image": (element.data["image"].astype(jnp.float32) / 255.0 - MEAN) / STD})


def augmentations(seed: int = 0):
    rngs = nnx.Rngs(augment=seed)
    return RandomCrop(CROP, rngs=rngs), RandomFlip(rngs=rngs)


def ours(encoded: list[bytes], out: str) -> None:
    from datarax_beam.runners import materialize, options

    crop, flip = augmentations()
    pipeline = (from_source(MemorySource(data={"image": cols.object_column(encoded)}), BATCH)
                >> DecodeImage("image") >> ResizeImage(SIZE) >> crop >> flip
                >> ElementOperator(ElementOperatorConfig(), fn=normalize))
    materialize(pipeline, out, num_shards=SHARDS, options=options.in_process(), overwrite=True)


def decode_resize(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB").resize((SIZE[1], SIZE[0]), Image.Resampling.BILINEAR))


def hand_loop(encoded: list[bytes], out: str) -> None:
    """(a): a thread pool for Pillow, one jitted batch function, one writer per shard."""
    from array_record.python.array_record_module import ArrayRecordWriter

    crop, flip = augmentations()  # only for their base keys: the same keys as ours
    base_crop, base_flip = jnp.asarray(crop.base_key_data), jnp.asarray(flip.base_key_data)

    def one(image, index):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(base_crop), 0), index)
        off = jax.random.randint(key, (2,), 0, jnp.array([SIZE[0] - CROP[0] + 1, SIZE[1] - CROP[1] + 1]))
        x = jax.lax.dynamic_slice(image, (off[0], off[1], 0), (*CROP, 3))
        key = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(base_flip), 0), index)
        x = jnp.where(jax.random.bernoulli(jax.random.split(key)[0], 0.5), jnp.flip(x, axis=1), x)
        return (x.astype(jnp.float32) / 255.0 - MEAN) / STD

    fn = jax.jit(jax.vmap(one))
    os.makedirs(out, exist_ok=True)
    n = len(encoded)
    with ThreadPoolExecutor(THREADS) as pool:
        for s, part in enumerate(np.array_split(np.arange(n), SHARDS)):
            writer = ArrayRecordWriter(os.path.join(out, shard_name(s, SHARDS)), HAND_OPTIONS)
            for start in range(int(part[0]), int(part[-1]) + 1, BATCH) if len(part) else ():
                stop = min(start + BATCH, int(part[-1]) + 1)
                images = np.stack(list(pool.map(decode_resize, encoded[start:stop])))
                idx = np.arange(start, stop, dtype=np.int32)
                if len(idx) < BATCH:  # pad: one compilation
                    images = np.concatenate([images, np.repeat(images[-1:], BATCH - len(idx), 0)])
                    idx = np.concatenate([idx, np.repeat(idx[-1:], BATCH - len(idx))])
                for row in np.asarray(fn(images, idx))[: stop - start]:
                    writer.write(row.tobytes())
            writer.close()


def grain_job(encoded: list[bytes], out: str) -> None:
    """(b): Grain's MapDataset with the same steps (numpy augmentation), read with threads."""
    import grain
    from array_record.python.array_record_module import ArrayRecordWriter

    def augment(image, rng):
        y, x = rng.integers(0, SIZE[0] - CROP[0] + 1), rng.integers(0, SIZE[1] - CROP[1] + 1)
        image = image[y:y + CROP[0], x:x + CROP[1]]
        return image[:, ::-1] if rng.random() < 0.5 else image

    ds = (grain.MapDataset.source(encoded).map(decode_resize).random_map(augment, seed=0)
          .map(lambda x: (x.astype(np.float32) / 255.0 - MEAN) / STD)
          .to_iter_dataset(grain.ReadOptions(num_threads=THREADS, prefetch_buffer_size=2 * BATCH))
          .batch(BATCH))
    os.makedirs(out, exist_ok=True)
    bounds = [int(p[-1]) + 1 for p in np.array_split(np.arange(len(encoded)), SHARDS)]
    shard, written = 0, 0
    writer = ArrayRecordWriter(os.path.join(out, shard_name(0, SHARDS)), HAND_OPTIONS)
    for batch in ds:
        for row in batch:
            while written >= bounds[shard]:
                writer.close()
                shard += 1
                writer = ArrayRecordWriter(os.path.join(out, shard_name(shard, SHARDS)), HAND_OPTIONS)
            writer.write(np.ascontiguousarray(row).tobytes())
            written += 1
    writer.close()


def read_images(directory: str, n: int) -> np.ndarray:
    """The pixels of a directory's shards (ours decompressed per its shardset.json, the hand
    loop's as riegeli stored them)."""
    from datarax_beam.sources import ArrayRecordSourceModule
    from datarax_beam.sources.array_record import RAW_KEY, ArrayRecordSourceConfig

    paths = [os.path.join(directory, shard_name(s, SHARDS)) for s in range(SHARDS)]
    config = ArrayRecordSourceConfig(decode=False, read_threads=0, prefetch_batches=0)
    reader = ArrayRecordSourceModule(paths, config)
    records = reader.get_batch(np.arange(len(reader)))[RAW_KEY]
    reader.close()
    return np.frombuffer(b"".join(records), np.float32).reshape(n, *CROP, 3)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=1, help="best of N for each method")
    args = parser.parse_args(argv)
    n = args.records
    start = time.perf_counter()
    encoded = make_jpegs(n)
    print(f"generated {n:,} JPEGs ({sum(map(len, encoded)) / 2**20:.1f} MiB) in {time.perf_counter() - start:.1f} s;"
          f" {THREADS} threads for Pillow")
    work = tempfile.mkdtemp(prefix="bench-images-")
    methods = {"ours": ours, "(a) hand loop": hand_loop, "(b) grain": grain_job}
    try:
        for name, fn in methods.items():  # imports, compilation, thread pools: untimed
            fn(encoded[: BATCH + 3], os.path.join(work, f"warm-{name[:3]}"))
        best = {name: float("inf") for name in methods}
        for r in range(max(1, args.repeats)):
            for name, fn in methods.items():
                out = os.path.join(work, f"{name[:3]}{r}")
                start = time.perf_counter()
                fn(encoded, out)
                best[name] = min(best[name], time.perf_counter() - start)
        ours_px, hand_px = read_images(os.path.join(work, "our0"), n), read_images(os.path.join(work, "(a)0"), n)
        same = bool(np.array_equal(ours_px, hand_px))
        diff = float(np.abs(ours_px - hand_px).max())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rates = {name: n / seconds for name, seconds in best.items()}
    print(f"\nimages: {n:,} JPEGs 32-128 px -> decode, resize {SIZE[0]}x{SIZE[1]}, crop {CROP[0]}x{CROP[1]} + flip,"
          f" normalize, {SHARDS} zstd shards (best of {args.repeats})")
    for name, rate in rates.items():
        print(f"  {name:<16}{rate:>10,.0f} images/s")
    print(f"  ours / (a) hand loop = {rates['ours'] / rates['(a) hand loop']:.2f}x (goal >= 0.8);"
          f" ours / (b) grain = {rates['ours'] / rates['(b) grain']:.2f}x (goal >= 2)")
    print(f"  ours and (a) wrote the same pixels: {same} (max abs difference {diff:g})")
    return {"ours": rates["ours"], "hand": rates["(a) hand loop"], "grain": rates["(b) grain"], "identical": same}


if __name__ == "__main__":
    main()
