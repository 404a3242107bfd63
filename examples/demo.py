"""The main job, end to end and offline: ``make demo``.

1. scikit-learn's bundled digits (1,797 real 8x8 images) -> a datarax_beam pipeline:
   dataset-statistics normalization (analyze, then transform) + a stochastic augmentation;
2. ``materialize`` it with Apache Beam (DirectRunner) into ArrayRecord shards in demo_output/;
3. the Flax NNX reader streams the shards back, globally shuffled, into a small NNX classifier
   trained with optax; it prints held-out accuracy and where the shards are.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import flax.nnx as nnx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import datarax_beam  # noqa: E402
from datarax_beam import from_source  # noqa: E402
from datarax_beam.dag.nodes import OperatorNode  # noqa: E402
from datarax_beam.operators import ElementOperator, ElementOperatorConfig  # noqa: E402
from datarax_beam.operators.statistics import Normalize  # noqa: E402
from datarax_beam.sources import (  # noqa: E402
    ArrayRecordSourceConfig,
    ArrayRecordSourceModule,
    MemorySource,
    MemorySourceConfig,
)


def log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_digits(subset: int | None):
    from sklearn.datasets import load_digits as sk_load

    digits = sk_load()
    images, labels = digits.images.astype(np.float32), digits.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(labels))
    if subset:
        order = order[:subset]
    n_test = max(len(order) // 5, 1)
    test, train = order[:n_test], order[n_test:]
    return ({"image": images[train], "label": labels[train]}, {"image": images[test], "label": labels[test]})


def augment(element, key):
    """Random shift by up to one pixel plus a little Gaussian noise (keyed per record)."""
    k_shift, k_noise = jax.random.split(key)
    shift = jax.random.randint(k_shift, (2,), -1, 2)
    img = jnp.roll(element.data["image"], shift, axis=(0, 1))
    return element.update_data({"image": img + 0.05 * jax.random.normal(k_noise, img.shape)})


def build_pipeline(train):
    source = MemorySource(MemorySourceConfig(), train, name="digits-train")
    augmenter = ElementOperator(ElementOperatorConfig(stochastic=True, stream_name="augment"),
                                fn=augment, rngs=nnx.Rngs(augment=0))
    return (from_source(source, batch_size=64)
            >> OperatorNode(Normalize("image", "pixels", axes="all"))
            >> OperatorNode(augmenter))


class Classifier(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(64, 128, rngs=rngs)
        self.out = nnx.Linear(128, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x.reshape((x.shape[0], -1)))))


@nnx.jit
def train_step(model, optimizer, image, label):
    def loss_fn(m):
        return optax.softmax_cross_entropy_with_integer_labels(m(image), label).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def predict(model, image):
    return jnp.argmax(model(image), axis=-1)


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="demo_output")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--subset", type=int, default=None, help="use only this many digits (smoke test)")
    parser.add_argument("--num-shards", type=int, default=4)
    args, beam_args = parser.parse_known_args(argv)
    logging.getLogger().setLevel(logging.ERROR)  # Beam's import-time notices about cloud clients
    t0 = time.time()

    train, test = load_digits(args.subset)
    log(f"digits: {len(train['label'])} train / {len(test['label'])} held-out images of 8x8")
    pipeline = build_pipeline(train)

    out_dir = os.path.join(args.output, "train")
    log(f"materializing with Apache Beam ({' '.join(beam_args) or 'DirectRunner, in-process'}) ...")
    shardset = datarax_beam.materialize(pipeline, out_dir, num_shards=args.num_shards,
                                        options=beam_args or None, overwrite=True)
    log(f"wrote {shardset.num_records} records in {len(shardset.shards)} shards "
        f"({shardset.total_bytes / 1024:.0f} KiB) to {out_dir}")
    pixels = shardset.statistics["pixels"]
    log(f"dataset statistics (full pass): pixel mean {float(pixels['mean']):.3f}, std {float(pixels['std']):.3f}")

    reader = ArrayRecordSourceModule(ArrayRecordSourceConfig(shuffle=True, seed=0, num_epochs=args.epochs), out_dir)
    train_batches = from_source(reader, batch_size=64)
    model = Classifier(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    for epoch in range(args.epochs):
        losses = [float(train_step(model, optimizer, b["image"], b["label"])) for b in train_batches]
        log(f"epoch {epoch + 1}/{args.epochs}: loss {np.mean(losses):.3f} over {len(losses)} shuffled batches")

    # Held-out data goes through the same normalization, with the training set's statistics.
    test_pipeline = from_source(MemorySource(MemorySourceConfig(), test, name="digits-test"), batch_size=256) \
        >> OperatorNode(Normalize("image", "pixels", axes="all"))
    test_pipeline = test_pipeline.with_statistics(shardset.statistics)
    correct = total = 0
    for b in test_pipeline:
        correct += int((predict(model, b["image"]) == b["label"]).sum())
        total += len(b["label"])
    accuracy = correct / total
    log(f"held-out accuracy: {accuracy:.1%} on {total} images (chance: 10%)")
    log(f"shards: {os.path.abspath(out_dir)}  (try: datarax-beam inspect {out_dir})")
    log(f"done in {time.time() - t0:.0f} s")
    return accuracy


if __name__ == "__main__":
    main(sys.argv[1:])
