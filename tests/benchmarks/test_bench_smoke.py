"""`make bench` smoke test: ``run_all.py --quick`` runs every benchmark and prints one table."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# run_all's engines step starts a Flink job server (Java, Maven, .venv-engines)
@pytest.mark.engines
def test_run_all_quick_prints_and_writes_the_table(tmp_path):
    results = tmp_path / "results.md"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "run_all.py"), "--quick", "--write",
         "--results", str(results)],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for step in ("offline.py", "reader.py", "hf_compare.py", "images.py", "text.py", "tabular.py",
                 "scaleout.py", "scaling.py --records 4000", "engines.py"):
        assert f"== {step}" in out
    table = results.read_text()
    assert table.startswith("# Benchmark results (`make bench`)\n\nMeasured ")
    assert "--quick sizes: a smoke test, not a measurement" in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    # scaleout.py: per chain, efficiency and vs in-process (+ 1 worker with every core, where a
    # machine has more than one core)
    share = 2 if len(os.sched_getaffinity(0)) > 1 else 0
    n = 18 + 2 + share
    assert len(rows) == 2 + n + 3  # two headers, the comparisons, three scaling sizes
    comparisons = rows[1 : 1 + n]
    assert sum("parallel efficiency" in r for r in comparisons) == 2  # scaleout.py: two chains
    assert sum("vs in-process" in r for r in comparisons) == 2
    assert sum("every core" in r for r in comparisons) == share
    assert sum(r.startswith("| image job") for r in comparisons) == 2
    restore = [r for r in comparisons if "restore mid-epoch" in r]
    assert len(restore) == 1 and " s** | < 1 s" in restore[0]  # a time, not a ratio
    assert all("**" in r and r.count("x**") == 1 for r in comparisons if r not in restore)
    assert [r.split("|")[1].strip() for r in rows[-3:]] == ["1,000 records", "2,000 records", "4,000 records"]
    assert table.split("\n\n", 1)[1].strip() in out  # the printed table is the written one
