"""Scale-out: `materialize` throughput with 1, 2, ... worker processes, and a 64x64x3 image job.

Two measurements, each ratio from figures of the same run:

1. **Worker scaling.** A generated random-access source (`scaling.GeneratedImages`: nothing is
   staged, nothing pickled but its size) of 28x28 float32 records, materialized into 16 shards
   by the in-process DirectRunner and by the multi-processing DirectRunner with w = 1, 2, ...
   workers, for two chains: ``normalize`` (I/O-bound) and ``normalize + 6 box blurs``
   (CPU-bound). XLA is limited to one intra-op thread per process (``XLA_FLAGS``) and each
   worker to one core (``cores_per_worker=1``), so w workers have w cores: the parallel
   efficiency ``rate(w) / (w * rate(1))`` then shows what serializes the job, not how many
   cores one worker already keeps busy. Rows ``w share`` run the default (w workers sharing
   every core). The worker zygote is warmed first, as in any session's second job.
2. **Image job.** 64x64x3 uint8 images (generated), chain: normalize, keyed flip + brightness
   (stochastic), 3x3 blur, float16 out: `materialize` in-process vs a hand loop (one jitted batch
   function + `ArrayRecordWriter` zstd, single-threaded) vs the chain alone (the jitted function
   on the same batches, no encoding or writing).

    python benchmarks/scaleout.py [--records 200000] [--workers 1,2] [--image-records 50000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

# One intra-op thread per process: w workers use w cores for JAX work (set before JAX starts;
# worker processes inherit it).
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
# worker processes unpickle DoFns that refer to this module and to scaling.GeneratedImages
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (HERE, os.path.dirname(HERE), os.environ.get("PYTHONPATH")) if p)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scaling import GeneratedImages  # noqa: E402

from datarax_beam.core.data_source import RandomAccessSource  # noqa: E402

SHARDS = 16
BATCH = 1024
BLURS = 6


def box_blur(x):
    """A 3x3 box blur of a 2-D (H, W) or 3-D (H, W, C) record, edges replicated."""
    pad = [(1, 1), (1, 1)] + [(0, 0)] * (x.ndim - 2)
    p = jnp.pad(x, pad, mode="edge")
    window = (3, 3) + (1,) * (x.ndim - 2)
    return jax.lax.reduce_window(p, 0.0, jax.lax.add, window, (1,) * x.ndim, "VALID") / 9.0


def normalize(element, key):
    return element.update_data({"image": (element.data["image"] - 0.5) / 0.25})


def normalize_blur(element, key):
    x = (element.data["image"] - 0.5) / 0.25
    for _ in range(BLURS):
        x = box_blur(x)
    return element.update_data({"image": x})


def cpu_seconds() -> float:
    """CPU time of this process, of its finished children, and of the worker zygote with its
    finished children (the workers: forks of the zygote, reaped by it when a job ends)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    from datarax_beam.runners import zygote

    z = zygote._zygote
    if z is not None and z.alive():
        try:
            with open(f"/proc/{z.process.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # u, s, cu, cs
        except OSError:
            pass
    return total


def materialize_job(source, fn, out: str, flags: list[str], operators=None) -> float:
    from datarax_beam import OperatorNode, from_source
    from datarax_beam.operators import ElementOperator, ElementOperatorConfig
    from datarax_beam.runners import materialize

    pipeline = from_source(source, BATCH)
    for op in operators or [ElementOperator(ElementOperatorConfig(), fn=fn)]:
        pipeline = pipeline >> OperatorNode(op)
    start = time.perf_counter()
    materialize(pipeline, out, num_shards=SHARDS, options=flags, overwrite=True)
    return time.perf_counter() - start


def worker_scaling(n: int, workers: list[int], work: str, repeats: int = 1) -> dict:
    """records/s and cores busy per chain and run: ``in-process``; ``w`` (w workers of one core
    each: the parallel-efficiency series); ``"w share"`` (w workers sharing every core, the
    default), where that differs from one core each. Each run's best of ``repeats``, the runs
    taking turns, so a slow spell of a shared machine falls on every run alike."""
    from datarax_beam.runners import options

    cores = len(os.sched_getaffinity(0))
    runs = {"in-process": options.in_process()}
    for w in workers:
        runs[w] = options.multi_process(w, cores_per_worker=1)
        if cores // w > 1:
            runs[f"{w} share"] = options.multi_process(w)
    rows, busy_by_chain = {}, {}
    for name, fn in (("normalize", normalize), (f"normalize + {BLURS} blurs", normalize_blur)):
        # warm: this process's kernels, and the worker zygote (its imports are once per driver;
        # each timed job still forks its workers, starts JAX in them and compiles there)
        materialize_job(GeneratedImages(BATCH), fn, os.path.join(work, "warm"), options.in_process())
        materialize_job(GeneratedImages(BATCH), fn, os.path.join(work, "warm"), options.multi_process(max(workers)))
        rates, busy = {}, {}
        for _ in range(max(1, repeats)):
            for w, flags in runs.items():
                cpu = cpu_seconds()
                seconds = materialize_job(GeneratedImages(n), fn, os.path.join(work, "o"), flags)
                if n / seconds > rates.get(w, 0):
                    rates[w], busy[w] = n / seconds, (cpu_seconds() - cpu) / seconds  # cores kept busy
        rows[name], busy_by_chain[name] = rates, busy
    return rows, busy_by_chain


class GeneratedPhotos(RandomAccessSource):
    """``n`` 64x64x3 uint8 images made on demand from their index (like `GeneratedImages`)."""

    stable_batches = True  # every read returns a new array: nothing to copy

    def __init__(self, n: int, seed: int = 0):
        super().__init__(None, name="generated_photos")
        self.n, self.seed = int(n), int(seed)

    def __len__(self) -> int:
        return self.n

    def _read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        out = np.empty((len(indices), 64, 64, 3), np.uint8)
        for b in np.unique(indices // BATCH):
            sel = indices // BATCH == b
            block = np.random.default_rng([self.seed, int(b)]).integers(0, 256, (BATCH, 64, 64, 3), np.uint8)
            out[sel] = block[indices[sel] % BATCH]
        return {"image": out}

    def fingerprint(self) -> str:
        return f"GeneratedPhotos:{self.n}:{self.seed}"


def photo_augment(element, key):
    x = element.data["image"].astype(jnp.float32) / 255.0
    x = (x - 0.5) / 0.25
    kf, kb = jax.random.split(key)
    x = jnp.where(jax.random.bernoulli(kf), x[:, ::-1, :], x)
    x = x + jax.random.uniform(kb, (), minval=-0.2, maxval=0.2)
    return element.update_data({"image": box_blur(x).astype(jnp.float16)})


def photo_chain_fn():
    """The image chain as one batched jitted function of (images, indices): the hand loop's."""
    from datarax_beam.core.element import Element, RecordMetadata
    from datarax_beam.kernels import record_key

    base = photo_operator().base_key_data

    def one(image, index):
        e = Element({"image": image}, metadata=RecordMetadata(index=index, epoch=0))
        return photo_augment(e, record_key(base, 0, index)).data["image"]

    return jax.jit(jax.vmap(one))


def photo_operator():
    import flax.nnx as nnx

    from datarax_beam.operators import ElementOperator, ElementOperatorConfig

    return ElementOperator(ElementOperatorConfig(stochastic=True, stream_name="augment"),
                           fn=photo_augment, rngs=nnx.Rngs(augment=0))


def photo_hand_loop(n: int, out: str, write: bool = True) -> float:
    from array_record.python.array_record_module import ArrayRecordWriter

    from datarax_beam.shards import shard_name

    source, fn = GeneratedPhotos(n), photo_chain_fn()
    fn(source.get_batch(np.arange(BATCH))["image"], np.arange(BATCH, dtype=np.int32)).block_until_ready()
    os.makedirs(out, exist_ok=True)
    start = time.perf_counter()
    for s, part in enumerate(np.array_split(np.arange(n), SHARDS)):
        writer = ArrayRecordWriter(os.path.join(out, shard_name(s, SHARDS)), "group_size:1,zstd") if write else None
        for a in range(int(part[0]), int(part[-1]) + 1, BATCH):
            idx = np.arange(a, min(a + BATCH, int(part[-1]) + 1))
            pad = np.concatenate([idx, np.full(BATCH - len(idx), idx[-1])])
            result = fn(source.get_batch(pad)["image"], pad.astype(np.int32))
            if writer is None:
                result.block_until_ready()
                continue
            for row in np.asarray(result)[: len(idx)]:
                writer.write(row.tobytes())
        if writer is not None:
            writer.close()
    return time.perf_counter() - start


def image_job(n: int, work: str) -> dict:
    from datarax_beam.runners import options

    materialize_job(GeneratedPhotos(BATCH), None, os.path.join(work, "pw"), options.in_process(),
                    operators=[photo_operator()])
    rates = {
        "hand loop": n / photo_hand_loop(n, os.path.join(work, "ph")),
        "materialize in-process": n / materialize_job(GeneratedPhotos(n), None, os.path.join(work, "po"),
                                                      options.in_process(), operators=[photo_operator()]),
        "chain alone": n / photo_hand_loop(n, os.path.join(work, "pc"), write=False),
    }
    return rates


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--image-records", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=2, help="best of N per worker run (taking turns)")
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",") if w]
    work = tempfile.mkdtemp(prefix="bench-scaleout-")
    try:
        # (0 records or images skips that part: benchmarks/device.sh runs them apart)
        scaling, cores = worker_scaling(args.records, workers, work, args.repeats) if args.records else ({}, {})
        images = image_job(args.image_records, work) if args.image_records else {}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if scaling:
        print(f"\nworker scaling: {args.records:,} generated 28x28 f32 records, {SHARDS} shards, "
              f"XLA 1 intra-op thread per process, {os.cpu_count()} cores; w = w workers of one core each "
              f"(--local_worker_cores=1), 'w share' = w workers sharing every core (the default); best of "
              f"{args.repeats}, runs taking turns")
        print(f"{'chain':<22}{'workers':>10}{'records/s':>12}{'vs in-proc':>11}{'efficiency':>11}{'cores busy':>11}")
        for chain, rates in scaling.items():
            one = rates[1] if 1 in rates else None
            for w, rate in rates.items():
                eff = f"{rate / (w * one):10.2f}" if isinstance(w, int) and one else f"{'-':>10}"
                print(f"{chain:<22}{w!s:>10}{rate:>12,.0f}{rate / rates['in-process']:10.2f}x{eff}"
                      f"{cores[chain][w]:11.2f}")
        print("(efficiency: rate(w) / (w x rate(1)), one core per worker; cores busy: CPU seconds of the driver "
              "and its worker processes per second of the job)")
    if images:
        print(f"\nimage job: {args.image_records:,} 64x64x3 uint8 -> normalize, keyed flip + brightness, "
              f"3x3 blur, float16")
        for name, rate in images.items():
            print(f"{name:<24}{rate:>12,.0f} records/s{rate / images['hand loop']:8.2f}x hand loop")
    return {"scaling": {c: {str(w): r for w, r in rates.items()} for c, rates in scaling.items()},
            "cores": {c: {str(w): b for w, b in busy.items()} for c, busy in cores.items()},
            "images": images, "records": args.records, "image_records": args.image_records,
            "repeats": args.repeats}


if __name__ == "__main__":
    main()
