"""`datarax-beam` end to end: materialize a pipeline file, inspect the shard set, plot it, and
the user errors (bad target specs, paths that are not shard sets) with their one-line messages."""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import subprocess
import sys
import termios
import textwrap

import numpy as np
import pytest

from datarax_beam import cli
from datarax_beam.shards import load_shardset
from datarax_beam.sources import ArrayRecordSourceModule

N = 40

PIPELINE_FILE = '''
import numpy as np
from datarax_beam import OperatorNode, from_source
from datarax_beam.operators import ElementOperator, ElementOperatorConfig
from datarax_beam.sources import MemorySource

images = np.arange({n} * 8 * 8, dtype=np.float32).reshape({n}, 8, 8) / ({n} * 64)
data = {{"image": images, "label": np.arange({n}, dtype=np.int32) % 10,
        "name": np.array([f"r{{i}}" for i in range({n})], dtype=object)}}


def scale(element, key):
    return element.update_data({{"image": element.data["image"] * 2.0}})


pipeline = from_source(MemorySource(data=data), batch_size=16) >> OperatorNode(
    ElementOperator(ElementOperatorConfig(), fn=scale))


def build():
    return pipeline


not_a_pipeline = 42
'''


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "my_pipeline.py"
    path.write_text(PIPELINE_FILE.format(n=N))
    return str(path)


@pytest.fixture(scope="module")
def shard_dir(pipeline_file, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cli_out") / "out")
    rc = cli.main(["materialize", f"{pipeline_file}:pipeline", "--output", out, "--num-shards", "3",
                   "--runner", "DirectRunner", "--progress-interval", "0"])
    assert rc == 0
    return out


def run_cli(capsys, *argv):
    rc = cli.main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_materialize_writes_a_shard_set_equal_to_the_online_pipeline(shard_dir, pipeline_file):
    shardset = load_shardset(shard_dir)
    assert shardset.num_records == N and len(shardset.shards) == 3 and not shardset.shuffle
    reader = ArrayRecordSourceModule(shard_dir)
    batch = reader.get_batch(np.arange(N))
    expected = np.arange(N * 64, dtype=np.float32).reshape(N, 8, 8) / (N * 64) * 2.0
    np.testing.assert_allclose(batch["image"], expected, rtol=1e-6)
    assert batch["label"].tolist() == [i % 10 for i in range(N)]
    assert list(batch["name"][:2]) == ["r0", "r1"]


def test_materialize_prints_progress_and_summary(pipeline_file, tmp_path, capsys):
    out = str(tmp_path / "o")
    rc, stdout, _ = run_cli(capsys, "materialize", f"{pipeline_file}:build", "--output", out,
                            "--num-shards", "2", "--shuffle", "--seed", "3", "--progress-interval", "0")
    assert rc == 0
    lines = stdout.splitlines()
    assert lines[0] == f"materialize: {pipeline_file}:build -> {out} on DirectRunner (in-process)"
    assert lines[1].startswith(f"wrote {N} records in 2 shards (") and lines[1].endswith(f" MiB, zstd) to {out}")
    assert "records/s" in lines[2]
    assert f"records_read {N}" in lines[3] and f"records_written {N}" in lines[3]
    shardset = load_shardset(out)
    assert shardset.shuffle and shardset.seed == 3
    labels = ArrayRecordSourceModule(out).get_batch(np.arange(N))["label"].tolist()
    assert sorted(labels) == sorted(i % 10 for i in range(N)) and labels != [i % 10 for i in range(N)]
    # a committed directory is refused with a hint; --overwrite replaces it
    rc, _, err = run_cli(capsys, "materialize", f"{pipeline_file}:build", "--output", out, "--quiet")
    assert rc == 2 and err.count("\n") == 1 and "--overwrite" in err
    rc, stdout, _ = run_cli(capsys, "materialize", f"{pipeline_file}:build", "--output", out,
                            "--quiet", "--overwrite", "--direct_num_workers", "1")
    assert rc == 0 and stdout.startswith(f"wrote {N} records in 1 shard (")


def test_inspect_prints_schema_counts_and_a_sample(shard_dir, capsys):
    rc, out, err = run_cli(capsys, "inspect", shard_dir)
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"shard set   {shard_dir}"
    assert lines[1].startswith(f"records     {N} in 3 shards,") and lines[1].endswith("(zstd)")
    assert "errors      0 failed records" in lines
    schema = lines[lines.index("schema") + 1: lines.index("shards")]
    assert [s.split()[:3] for s in schema] == [["image", "tensor", "<f4"], ["label", "tensor", "<i4"],
                                               ["name", "string"]]
    assert schema[0].endswith("(8, 8)")
    shard_lines = lines[lines.index("shards") + 1: lines.index("sample (record 0)")]
    assert [s.split()[:2] for s in shard_lines] == [
        ["data-00000-of-00003.array_record", "14"], ["data-00001-of-00003.array_record", "13"],
        ["data-00002-of-00003.array_record", "13"]]
    sample = lines[lines.index("sample (record 0)") + 1:]
    assert sample[0].split()[:2] == ["image", "float32[8,"] and "min=0 " in sample[0]
    assert sample[1].split() == ["label", "int32", "0"] and sample[2].split() == ["name", "'r0'"]


def test_inspect_json(shard_dir, tmp_path, capsys):
    rc, out, _ = run_cli(capsys, "inspect", shard_dir, "--json")
    info = json.loads(out)
    assert rc == 0 and info["num_records"] == N and info["num_shards"] == 3
    assert [s[1] for s in info["shards"]] == [14, 13, 13]
    assert info["sample"]["label"] == 0 and info["sample"]["name"] == "r0"
    assert np.asarray(info["sample"]["image"]).shape == (8, 8)
    assert info["schema"][0] == {"name": "image", "kind": "tensor", "dtype": "<f4", "shape": [8, 8]}
    rc, out, err = run_cli(capsys, "inspect", shard_dir, "--json", "--plot", str(tmp_path / "p.png"))
    assert rc == 0 and json.loads(out) == info
    assert err.startswith("plot of image (images), label (bar), name (top values) written")


def test_inspect_plot_writes_a_png(shard_dir, tmp_path, capsys):
    png = tmp_path / "out.png"
    rc, out, _ = run_cli(capsys, "inspect", shard_dir, "--plot", str(png))
    assert rc == 0 and out.splitlines()[-1] == \
        f"plot of image (images), label (bar), name (top values) written to {png}"
    import matplotlib.image

    img = matplotlib.image.imread(str(png))  # a grid of 16 images, then two bar charts
    assert img.shape[1] == 720 and img.shape[0] > 3 * 220


@pytest.mark.parametrize(
    "spec, message",
    [
        ("my_pipeline.py", "must look like FILE.py:NAME or MODULE:NAME"),
        ("{file}:missing", "has no 'missing' (pipelines found: ['pipeline'])"),
        ("{file}:not_a_pipeline", "is a int, not a pipeline built with from_source(...)"),
        ("{file}:not-a-name", "'not-a-name' is not a Python name"),
        ("{dir}/nowhere.py:pipeline", "nowhere.py' does not exist"),
        ("no_such_module_xyz:pipeline", "cannot import module 'no_such_module_xyz'"),
        ("{dir}/broken.py:pipeline", "running '{dir}/broken.py' failed (line 3): ModuleNotFoundError"),
        ("{dir}/syntax.py:pipeline", "failed (line 1): SyntaxError"),
    ],
)
def test_bad_target_spec(spec, message, pipeline_file, tmp_path, capsys):
    (tmp_path / "broken.py").write_text("import numpy\n\nimport not_installed_pkg_xyz\n")
    (tmp_path / "syntax.py").write_text("pipeline = (\n")
    fmt = {"file": pipeline_file, "dir": str(tmp_path)}
    rc, out, err = run_cli(capsys, "materialize", spec.format(**fmt), "--output", str(tmp_path / "o"))
    assert rc == 2 and out == ""
    assert err.startswith("datarax-beam: error: Target") and err.count("\n") == 1
    assert message.format(**fmt) in err
    assert not (tmp_path / "o").exists()


def test_inspect_errors(tmp_path, capsys):
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "data-00000-of-00001.array_record").write_bytes(b"")
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "shardset.json").write_text("{not json")
    cases = {
        str(tmp_path / "missing"): "does not exist",
        str(tmp_path / "partial"): "has no shardset.json: it is not a committed shard set",
        str(tmp_path / "file.txt"): "is a file; inspect takes a shard-set directory",
        str(tmp_path / "bad"): "datarax-beam: error: ",
    }
    for path, message in cases.items():
        rc, out, err = run_cli(capsys, "inspect", path)
        assert rc == 2 and out == "", path
        assert err.startswith("datarax-beam: error: ") and err.count("\n") == 1 and message in err, err


def test_inspect_names_a_corrupt_record(tmp_path, capsys):
    from array_record.python.array_record_module import ArrayRecordWriter

    from datarax_beam.shards import writer_options
    from datarax_beam.shards.writer import write_shardset

    shardset = write_shardset(str(tmp_path / "set"), {"x": np.zeros((4, 8), np.float32)})
    writer = ArrayRecordWriter(shardset.shard_paths[0], writer_options("zstd"))
    writer.write(b"\x01not a zstd frame")  # record 0: the one inspect samples
    writer.close()
    rc, out, err = run_cli(capsys, "inspect", shardset.path)
    assert rc == 2 and out == ""
    assert err.startswith(f"datarax-beam: error: Shard '{shardset.shard_paths[0]}', record 0: A stored "
                          f"record's zstd frame is corrupt: ") and err.count("\n") == 1, err


def test_console_script_entry_point(shard_dir, tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "datarax-beam")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    ok = subprocess.run([script, "inspect", shard_dir], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and ok.stdout.startswith(f"shard set   {shard_dir}\nrecords     {N} in 3")
    bad = subprocess.run([script, "inspect", str(tmp_path)], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == textwrap.dedent(f"""\
        datarax-beam: error: {str(tmp_path)!r} has no shardset.json: it is not a committed shard set \
(the job that wrote it failed, was killed, or has not finished), so its files are not read
        """)


def test_failed_records_are_reported_by_materialize_and_inspect(tmp_path, capsys):
    target = tmp_path / "nan_pipeline.py"
    target.write_text(textwrap.dedent("""\
        import jax.numpy as jnp, numpy as np
        from datarax_beam import from_source
        from datarax_beam.operators import ElementOperator, ElementOperatorConfig
        from datarax_beam.sources import MemorySource

        def poison(element, key):  # records with label 3 become NaN
            x = element.data["x"]
            return element.update_data({"x": jnp.where(element.data["label"] == 3, jnp.nan, x)})

        data = {"x": np.arange(20, dtype=np.float32), "label": np.arange(20, dtype=np.int32) % 10}
        pipeline = from_source(MemorySource(data=data), batch_size=8) >> ElementOperator(
            ElementOperatorConfig(), fn=poison)
        """))
    out = str(tmp_path / "o")
    rc, stdout, _ = run_cli(capsys, "materialize", f"{target}:pipeline", "--output", out, "--quiet",
                            "--check-finite", "--on-error", "dead_letter")
    assert rc == 0 and stdout.startswith("wrote 18 records in 1 shard (")
    assert f"  2 records failed: see {out}/errors/ (datarax-beam inspect {out})" in stdout.splitlines()
    rc, stdout, _ = run_cli(capsys, "inspect", out)
    assert rc == 0 and "errors      2 failed records, 2 dead-letter entries" in stdout.splitlines()


NOISE = ("apitools not found", "Discarding unparseable args", "Logging handler created",
         "No semi_persistent_directory", "Worker: severity")


def run_in_terminal(argv: list[str]) -> tuple[int, str, str]:
    """Runs ``argv`` with stderr on a pseudo-terminal (200 columns); returns (exit status,
    stdout, what the terminal showed), reading until every process holding it has exited."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 200, 0, 0))
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("DATARAX_BEAM_PROGRESS", None)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    shown = []
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # EIO: the terminal has no writer left
            break
        if not data:
            break
        shown.append(data)
    os.close(master)
    stdout = proc.stdout.read().decode()
    proc.stdout.close()
    return proc.wait(), stdout, b"".join(shown).decode(errors="replace")


def test_materialize_in_a_terminal_shows_records_and_rate_and_no_beam_noise(pipeline_file, tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "datarax-beam")
    out = str(tmp_path / "o")
    rc, stdout, terminal = run_in_terminal([
        script, "materialize", f"{pipeline_file}:pipeline", "--output", out, "--num-shards", "3",
        "--runner", "DirectRunner", "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"])
    assert rc == 0, terminal
    assert stdout.splitlines()[1].startswith(f"wrote {N} records in 3 shards")
    lines = [s for s in re.split(r"[\r\n]+", terminal) if s.strip()]
    assert lines[0].startswith("materialize:   0%|") and f" 0/{N} [" in lines[0]
    final = lines[-1]
    assert final.startswith("materialize: 100%|") and f" {N}/{N} [" in final, terminal
    assert re.search(r"\[\d\d:\d\d<00:00, +[\d.]+ records/s, 0 failed\] *$", final), final
    assert set(lines) <= {s for s in lines if s.startswith("materialize: ")}, terminal  # nothing else
    assert not [s for s in lines if any(n in s for n in NOISE)]


def test_verbose_brings_beams_messages_back(pipeline_file, tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "datarax-beam")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run([script, "materialize", f"{pipeline_file}:pipeline", "--output", str(tmp_path / "o"),
                           "--verbose"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "apitools not found" in done.stderr and "INFO:apache_beam" in done.stderr
    assert "records/s" not in done.stderr  # stderr is not a terminal: no progress


def test_progress_and_log_level_flags(pipeline_file, tmp_path, capsys):
    out = str(tmp_path / "o")
    rc, stdout, err = run_cli(capsys, "materialize", f"{pipeline_file}:pipeline", "--output", out,
                              "--progress", "--log-level", "warning")
    assert rc == 0 and stdout.splitlines()[1].startswith(f"wrote {N} records")
    assert f" {N}/{N} [" in err and "records/s, 0 failed]" in err
    rc, _, err = run_cli(capsys, "materialize", f"{pipeline_file}:pipeline", "--output", out,
                         "--overwrite", "--progress", "--quiet")
    assert rc == 0 and err == ""  # --quiet wins
    with pytest.raises(SystemExit) as e:
        cli.main(["materialize", f"{pipeline_file}:pipeline", "--output", out, "--log-level", "LOUD"])
    assert e.value.code == 2 and "argument --log-level: Unknown `log_level` 'LOUD'" in capsys.readouterr().err
