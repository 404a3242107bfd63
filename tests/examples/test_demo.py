"""Smoke test of `make demo` (examples/demo.py) on a subset of the digits."""

import importlib.util
import os

from datarax_beam.inspect import describe

DEMO = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "demo.py")


def test_demo_runs_end_to_end_and_beats_chance(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("demo", DEMO)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    accuracy = demo.main(["--output", str(tmp_path), "--subset", "500", "--epochs", "4", "--num-shards", "2"])
    out = capsys.readouterr().out
    assert accuracy > 0.3, out  # chance is 0.1
    info = describe(str(tmp_path / "train"))
    assert info["num_records"] == 400 and info["num_shards"] == 2
    assert "pixels" in info["statistics"]
    assert "held-out accuracy" in out and "materializing with Apache Beam" in out


def test_cli_materializes_the_example_pipeline_file(tmp_path, capsys):
    from datarax_beam.cli import main

    target = os.path.join(os.path.dirname(DEMO), "digits_pipeline.py") + ":pipeline"
    assert main(["materialize", target, "--output", str(tmp_path / "digits"), "--num-shards", "2", "--quiet"]) == 0
    assert main(["inspect", str(tmp_path / "digits")]) == 0
    out = capsys.readouterr().out
    assert "1,438 records in 2 shards" in out and "image" in out and "pixels" in out
