"""Runs `scenarios` jobs with given Beam flags, in the engines environment (``.venv-engines``).

    python driver.py SPEC.json

``SPEC`` is ``{"jobs": [...], "out": DIR, "data": DIR, "options": [flags]}``. Each job
materializes into ``out/<job>``; ``out/results.json`` records, per job, the committed record
counts and seconds, or the traceback of its failure (the other jobs still run).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import scenarios  # noqa: E402

from datarax_beam.runners import materialize  # noqa: E402


def main(spec_path: str) -> int:
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    results = {}
    for job in spec["jobs"]:
        started = time.perf_counter()
        try:
            pipeline, kwargs = scenarios.JOBS[job](spec["data"])
            shardset = materialize(pipeline, os.path.join(spec["out"], job), options=list(spec["options"]),
                                   **kwargs)
            results[job] = {"num_records": shardset.num_records, "num_failed": shardset.num_failed}
        except Exception:  # reported per job to the test, which fails with this traceback
            results[job] = {"error": traceback.format_exc()}
        results[job]["seconds"] = round(time.perf_counter() - started, 1)
        print(f"driver: {job}: {results[job]}", flush=True)
    with open(os.path.join(spec["out"], "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
