"""``--setup_file ./setup.py`` (Dataflow, Flink and Spark clusters): the sdist Beam builds from it
and ships to the workers holds the whole package, and a clean virtualenv that installs it imports
and runs it. Mirrors docs/offline.md, "On a cluster"."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import sysconfig
import tarfile

from apache_beam.runners.portability.stager import Stager

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHECK = """
import os, sys, tempfile
import numpy as np
from importlib import resources
import datarax_beam
from datarax_beam import from_source
from datarax_beam.runners import materialize, options
from datarax_beam.sources import MemorySource
assert datarax_beam.__file__.startswith(sys.prefix), datarax_beam.__file__
for runner in ("flink", "spark"):
    assert resources.files("datarax_beam.runners").joinpath(f"java/{runner}.pom.xml").is_file()
src = MemorySource(data={"x": np.arange(10, dtype=np.float32)})
print(materialize(from_source(src, 4), tempfile.mkdtemp(), num_shards=2, options=options.in_process()).num_records)
"""


def test_the_sdist_workers_install_imports_and_runs_from_a_clean_virtualenv(tmp_path):
    # the tarball Beam's stager builds for --setup_file (what a worker pip-installs)
    tarball = Stager._build_setup_package(os.path.join(ROOT, "setup.py"), str(tmp_path))
    with tarfile.open(tarball) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    package = {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "datarax_beam", "**", "*.py"),
                                                           recursive=True)}
    assert package <= names, sorted(package - names)
    assert {"datarax_beam/runners/java/flink.pom.xml", "datarax_beam/runners/java/spark.pom.xml"} <= names
    assert {"setup.py", "README.md"} <= names  # setup.py reads README.md and version.py

    venv = tmp_path / "clean"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    # as a worker installs it, but without its dependencies: the build backend pyproject.toml
    # names (setuptools, wheel) comes from PyPI or pip's cache, nothing from this tree
    install = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                              "--no-deps", tarball], capture_output=True, text=True, cwd=str(tmp_path))
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    # dependencies: this environment's, after the clean one's own site-packages (a worker gets
    # them from PyPI; setup.py's install_requires names them)
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(purelib, "zz_dependencies.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([python, "-c", CHECK], capture_output=True, text=True, cwd=str(tmp_path),
                         env={**env, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "10"
