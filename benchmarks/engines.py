"""Engines: `materialize` on Apache Flink with 2 EXTERNAL Python workers vs the in-process DirectRunner.

    python benchmarks/engines.py --records 1000000

Both jobs materialize ``scaling.GeneratedImages`` (28x28 float32 records made from their index)
through a normalize operator into zstd shards (one per 65,536 records), and both are submitted
from the engines environment (``.venv-engines``, Apache Beam 2.62.0: the release whose Flink job
server Maven Central serves; see requirements-engines.txt), so the two differ only in the runner:

* DirectRunner in-process: one Python process reads, transforms and writes;
* Flink: Beam's portable Flink job server with an embedded cluster, parallelism 2, and a Beam
  worker pool whose 2 SDK worker processes do the reading, transforming and writing.

Each job is timed from ``materialize`` to its committed ``shardset.json``, after a small warm-up
job in the same submitting process (imports, first compile); Flink's time includes submitting the
job and starting its worker processes, which every Flink job pays. The shards of the two jobs are
checked to be byte-identical. Starting the job server and the pool is not timed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
MARK = "@@ENGINES "


def job(argv: list[str]) -> None:
    """In the engines environment: materialize ``--records`` with ``--options`` and print seconds."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--options", required=True, help="JSON list of Beam flags")
    args = parser.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from scaling import BATCH, MEAN, STD, GeneratedImages  # noqa: F401  (workers import it too)

    from datarax_beam import OperatorNode, from_source
    from datarax_beam.operators import ElementOperator, ElementOperatorConfig
    from datarax_beam.runners import materialize

    flags = json.loads(args.options)

    def pipeline(n):
        op = ElementOperator(ElementOperatorConfig(), fn=_normalize)
        return from_source(GeneratedImages(n), BATCH) >> OperatorNode(op)

    materialize(pipeline(2 * BATCH), os.path.join(args.out, "warm"), options=flags)
    start = time.perf_counter()
    shardset = materialize(pipeline(args.records), os.path.join(args.out, "out"), options=flags)
    seconds = time.perf_counter() - start
    assert shardset.num_records == args.records, shardset.num_records
    print(MARK + json.dumps({"seconds": seconds, "shards": shardset.shard_paths}), flush=True)


def _normalize(element, key):
    from scaling import MEAN, STD

    return element.update_data({"image": (element.data["image"] - MEAN) / STD})


def _engines_env():
    spec = importlib.util.spec_from_file_location("_engines_env", os.path.join(ROOT, "tools", "engines_env.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_job(python: str, records: int, out: str, flags: list[str], log_path: str) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": HERE}
    cmd = [python, os.path.abspath(__file__), "--job", "--records", str(records), "--out", out,
           "--options", json.dumps(flags)]
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=HERE)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode or not lines:
        from datarax_beam.runners.jobserver import tail

        raise RuntimeError(f"engines job {flags[0]} failed with status {proc.returncode}; {log_path}:\n"
                           f"{tail(log_path, 40)}")
    return json.loads(lines[-1][len(MARK):])


def _same_bytes(a: list[str], b: list[str]) -> bool:
    if [os.path.basename(p) for p in a] != [os.path.basename(p) for p in b]:
        return False
    for x, y in zip(a, b, strict=True):
        with open(x, "rb") as fx, open(y, "rb") as fy:
            while True:
                cx, cy = fx.read(1 << 24), fy.read(1 << 24)
                if cx != cy:
                    return False
                if not cx:
                    break
    return True


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    from datarax_beam.runners import options
    from datarax_beam.runners.jobserver import JobServer, WorkerPool

    python = _engines_env().ensure()
    code = ("import json, importlib.metadata as m; from apache_beam.options.pipeline_options import "
            "FlinkRunnerOptions as F; print(json.dumps([m.version('apache-beam'), F.PUBLISHED_FLINK_VERSIONS[-1]]))")
    beam, flink = json.loads(subprocess.run([python, "-c", code], check=True, capture_output=True,
                                            text=True).stdout.strip().splitlines()[-1])
    work = tempfile.mkdtemp(prefix="bench-engines-")
    try:
        direct = _run_job(python, args.records, os.path.join(work, "direct"), options.in_process(),
                          os.path.join(work, "direct.log"))
        with JobServer("flink", beam_version=beam, flink_version=flink,
                       log_path=os.path.join(work, "flink-job-server.log")) as server, \
                WorkerPool(python, env={"PYTHONPATH": HERE, "JAX_PLATFORMS": "cpu"},
                           log_path=os.path.join(work, "worker-pool.log")) as pool:
            flags = options.flink_local(server.endpoint, parallelism=2, environment="EXTERNAL",
                                        worker_pool=pool.endpoint)
            on_flink = _run_job(python, args.records, os.path.join(work, "flink"), flags,
                                os.path.join(work, "flink.log"))
        identical = _same_bytes(direct["shards"], on_flink["shards"])
        if not identical:
            raise AssertionError("Flink's shards differ from the DirectRunner's")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    row = {"records": args.records, "beam": beam, "flink": flink,
           "direct_seconds": direct["seconds"], "flink_seconds": on_flink["seconds"],
           "direct_rate": args.records / direct["seconds"], "flink_rate": args.records / on_flink["seconds"]}
    print(f"engines: {args.records:,} records: DirectRunner in-process {direct['seconds']:.1f} s "
          f"({row['direct_rate']:,.0f}/s); Flink {flink}, 2 EXTERNAL workers {on_flink['seconds']:.1f} s "
          f"({row['flink_rate']:,.0f}/s): {row['flink_rate'] / row['direct_rate']:.2f}x; shards identical")
    return row


if __name__ == "__main__":
    if sys.argv[1:2] == ["--job"]:
        job(sys.argv[2:])
    else:
        main()
