"""Runs every benchmark script in this directory (``make bench``); extra args are passed on.

Usage: ``python benchmarks/run_all.py [--records N]``
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    scripts = sorted(p for p in glob.glob(os.path.join(here, "*.py"))
                     if not os.path.basename(p).startswith(("_", "run_all")))
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    failed = []
    for script in scripts:
        print(f"== {os.path.basename(script)}", flush=True)
        rc = subprocess.call([sys.executable, script, *sys.argv[1:]], env=env)
        if rc:
            failed.append(os.path.basename(script))
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
