"""Train a small Flax NNX model from shards, checkpoint the reader with the model, and resume.

    python examples/train_reader.py [--workdir /tmp/train_reader] [--records 2000] [--steps 60]

It writes a toy classification shard set, trains for ``--steps`` steps with an Orbax checkpoint
every ``--every`` steps, then simulates a crash: a fresh process-worth of objects restores the
last checkpoint (model, optimizer AND data position, all ``nnx.state``) and finishes the run.
The resumed run sees exactly the batches the uninterrupted run saw, so the final losses match
bit for bit.
"""

from __future__ import annotations

import argparse
import os
import shutil

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from datarax_beam import from_source
from datarax_beam.shards.writer import write_shardset
from datarax_beam.sources import ArrayRecordSourceConfig, ArrayRecordSourceModule


def write_toy_data(directory: str, records: int) -> None:
    """8 features, 3 classes; the label depends on the features (so the model can learn)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(records, 8)).astype(np.float32)
    y = (x[:, :3].argmax(axis=1)).astype(np.int32)
    write_shardset(directory, {"x": x, "y": y}, num_shards=4)


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(8, 32, rngs=rngs)
        self.out = nnx.Linear(32, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))


@nnx.jit
def train_step(model: MLP, optimizer: nnx.Optimizer, x, y):
    def loss_fn(model):
        logits = model(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def build(data_dir: str, batch_size: int):
    """Model, optimizer and data pipeline, all freshly initialized (seeded)."""
    model = MLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    config = ArrayRecordSourceConfig(shuffle=True, seed=42, num_epochs=None)
    data = from_source(ArrayRecordSourceModule(config, data_dir), batch_size=batch_size)
    return model, optimizer, data


def save(manager: ocp.CheckpointManager, step: int, model, optimizer, data) -> None:
    """One checkpoint holds the model, the optimizer and the data position (all nnx.state)."""
    manager.save(step, args=ocp.args.Composite(**{
        name: ocp.args.StandardSave(nnx.state(obj))
        for name, obj in (("model", model), ("optimizer", optimizer), ("data", data))}))


def restore(manager: ocp.CheckpointManager, model, optimizer, data) -> int:
    """Restores the latest checkpoint into fresh objects; returns its step."""
    objects = {"model": model, "optimizer": optimizer, "data": data}
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(**{
        name: ocp.args.StandardRestore(nnx.state(obj)) for name, obj in objects.items()}))
    for name, obj in objects.items():
        nnx.update(obj, restored[name])  # the data state is validated at the next read
    return step


def train(model, optimizer, data, *, start: int, steps: int, every: int,
          manager: ocp.CheckpointManager, crash_at: int | None = None) -> list[float]:
    """Trains from step ``start`` to ``steps``; ``iter(data)`` yields one epoch, so loop epochs."""
    losses, step = [], start
    while step < steps:
        for batch in data:
            losses.append(float(train_step(model, optimizer, batch["x"], batch["y"])))
            step += 1
            if step % every == 0:
                save(manager, step, model, optimizer, data)
            if step == crash_at or step == steps:
                manager.wait_until_finished()
                return losses
    manager.wait_until_finished()
    return losses


def main(argv=None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/datarax_beam_train_reader")
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=25)
    args = parser.parse_args(argv)
    data_dir = os.path.join(args.workdir, "shards")
    write_toy_data(data_dir, args.records)
    for old in ("reference", "checkpoints"):  # a rerun starts from scratch
        shutil.rmtree(os.path.join(args.workdir, old), ignore_errors=True)
    options = ocp.CheckpointManagerOptions(max_to_keep=2)

    # 1. the reference: one uninterrupted run
    with ocp.CheckpointManager(os.path.join(args.workdir, "reference"), options=options) as manager:
        reference = train(*build(data_dir, args.batch_size), start=0, steps=args.steps,
                          every=args.steps + 1, manager=manager)
    # 2. a run that crashes between two checkpoints ...
    ckpt = os.path.join(args.workdir, "checkpoints")
    crash_at = args.steps * 2 // 3
    with ocp.CheckpointManager(ckpt, options=options) as manager:
        crashed = train(*build(data_dir, args.batch_size), start=0, steps=args.steps,
                        every=args.every, manager=manager, crash_at=crash_at)
    # 3. ... and is resumed from its last checkpoint by fresh objects
    model, optimizer, data = build(data_dir, args.batch_size)
    with ocp.CheckpointManager(ckpt, options=options) as manager:
        last = restore(manager, model, optimizer, data)
        resumed = crashed[:last] + train(model, optimizer, data, start=last, steps=args.steps,
                                         every=args.every, manager=manager)
    print(f"steps={args.steps} checkpoint every {args.every}, crashed at {crash_at}, resumed at {last}")
    print(f"loss: first {reference[0]:.4f}  last {reference[-1]:.4f}  resumed last {resumed[-1]:.4f}")
    print("resumed run identical to the uninterrupted run:", resumed == reference)
    held = data.source.get_batch(np.arange(min(256, len(data.source))))
    accuracy = float(jnp.mean(model(held["x"]).argmax(-1) == held["y"]))
    print(f"train accuracy on {len(held['y'])} records: {accuracy:.2f}")
    return {"reference": reference, "resumed": resumed}


if __name__ == "__main__":
    main()
