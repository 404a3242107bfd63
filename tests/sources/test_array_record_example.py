"""The docs/reader.md training loop (examples/train_reader.py) runs and resumes exactly."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_example():
    spec = importlib.util.spec_from_file_location(
        "train_reader_example", os.path.join(ROOT, "examples", "train_reader.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_loop_checkpoints_and_resumes_the_reader(tmp_path):
    example = _load_example()
    out = example.main(["--workdir", str(tmp_path), "--records", "200", "--batch-size", "16",
                        "--steps", "40", "--every", "10"])
    assert len(out["reference"]) == 40
    assert out["resumed"] == out["reference"]  # same batches, same updates, bit for bit
    assert out["reference"][-1] < out["reference"][0]
    # the Orbax checkpoint really carries a mid-run data position (epoch 3 of 13 batches each)
    model, optimizer, data = example.build(str(tmp_path / "shards"), 16)
    with example.ocp.CheckpointManager(str(tmp_path / "checkpoints")) as manager:
        assert example.restore(manager, model, optimizer, data) == 40
    state = data.get_state()
    assert (state["epoch"], state["position"]) == (3, 1 * 16)
    assert data.source.get_state() == state  # the reader's own cursor is the pipeline's
