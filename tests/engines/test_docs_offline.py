"""docs/offline.md, "On this machine": the local-engine example runs as written, from an empty
directory, in the engines environment (its job server must match Beam 2.62.0, so tests/docs, which
runs the other blocks in this environment, leaves it to this test)."""

from __future__ import annotations

import os
import subprocess

import pytest

from datarax_beam.runners.jobserver import tail

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.engines

MARKER = "<!-- no-test: runs in tests/engines/test_docs_offline.py"


def local_engine_block() -> str:
    text = open(os.path.join(ROOT, "docs", "offline.md"), encoding="utf-8").read()
    after = text.split(MARKER, 1)[1].split("\n", 1)[1]
    assert after.startswith("```python\n"), after[:80]
    return after[len("```python\n"):].split("\n```", 1)[0]


def test_the_local_flink_example_runs_as_written(engine_python, tmp_path):
    (tmp_path / "example.py").write_text(local_engine_block())
    log = tmp_path / "example.log"
    with open(log, "w") as f:
        code = subprocess.run([engine_python, "example.py"], cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT,
                              env={**os.environ, "JAX_PLATFORMS": "cpu"}).returncode
    assert code == 0, tail(str(log), 60)
    records, job_server_log = open(log).read().strip().splitlines()[-1].split()
    assert records == "1000" and os.path.exists(job_server_log)
    assert sorted(os.listdir(tmp_path / "out" / "on_flink")) == [
        "data-00000-of-00002.array_record", "data-00001-of-00002.array_record", "shardset.json"]
