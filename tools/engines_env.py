"""Builds (once) the virtualenv that the engine tests and benchmark submit Beam jobs from.

    python tools/engines_env.py [VENV_DIR]      # default .venv-engines; prints its python

The environment has ``requirements-engines.txt`` (Apache Beam 2.62.0, whose Flink and Spark job
servers Maven Central serves; see that file for why it is not the project's Beam) and imports
``datarax_beam`` from this source tree (a ``.pth`` file), so it never needs reinstalling when the
code changes. pip runs again only when the requirements file or the Python version change (a stamp
file records both). Standard library only: it runs before anything is installed.

While pip installs, Maven downloads the Flink and Spark job servers' jars into ``~/.m2``
(`prefetch_jars`: the poms in ``datarax_beam/runners/java/`` at their default versions, which are
this environment's Beam and Flink line); both are downloads, so on a fresh machine the two overlap
instead of adding up. `JobServer` later resolves its classpath from ``~/.m2`` in seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIREMENTS = os.path.join(ROOT, "requirements-engines.txt")
DEFAULT_DIR = os.path.join(ROOT, ".venv-engines")
STAMP = ".installed"
POMS = [os.path.join(ROOT, "datarax_beam", "runners", "java", f"{r}.pom.xml") for r in ("flink", "spark")]


def _python(venv_dir: str) -> str:
    return os.path.join(venv_dir, "Scripts" if os.name == "nt" else "bin", "python")


def _fingerprint() -> str:
    with open(REQUIREMENTS, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return f"{digest} python{sys.version_info.major}.{sys.version_info.minor}\n"


def _site_packages(python: str) -> str:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def prefetch_jars(log_dir: str, mvn: str = "mvn") -> list[tuple[subprocess.Popen, str]]:
    """Starts Maven downloading the job servers' jars (``mvn dependency:resolve`` on each pom);
    returns the running processes with their logs. Nothing starts without Maven on PATH."""
    if shutil.which(mvn) is None:
        return []
    os.makedirs(log_dir, exist_ok=True)
    running = []
    for pom in POMS:
        log_path = os.path.join(log_dir, "prefetch-" + os.path.basename(pom).replace(".pom.xml", ".log"))
        with open(log_path, "w", encoding="utf-8") as log:
            running.append((subprocess.Popen([mvn, "-B", "-f", pom, "dependency:resolve"], stdout=log,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL), log_path))
    return running


def _wait_prefetch(running: list[tuple[subprocess.Popen, str]]) -> None:
    for proc, log_path in running:
        if proc.wait() != 0:  # not fatal: JobServer resolves again and reports what is missing
            print(f"engines_env: Maven's prefetch failed (status {proc.returncode}); see {log_path}",
                  file=sys.stderr, flush=True)


def ensure(venv_dir: str = DEFAULT_DIR, *, quiet: bool = True) -> str:
    """Creates or refreshes the environment in ``venv_dir``; returns its interpreter."""
    venv_dir = os.path.abspath(venv_dir)
    python, stamp = _python(venv_dir), os.path.join(venv_dir, STAMP)
    want = _fingerprint()
    if os.path.exists(python) and os.path.exists(stamp):
        with open(stamp, encoding="utf-8") as f:
            if f.read() == want:
                return python
    print(f"engines_env: building {venv_dir} from {os.path.relpath(REQUIREMENTS, ROOT)} "
          f"(once per machine; a few minutes)", file=sys.stderr, flush=True)
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", venv_dir], check=True)
    prefetch = prefetch_jars(venv_dir)
    q = ["-q"] if quiet else []
    try:
        subprocess.run([python, "-m", "pip", "install", *q, "--disable-pip-version-check",
                        "-r", REQUIREMENTS], check=True)
    finally:
        _wait_prefetch(prefetch)
    with open(os.path.join(_site_packages(python), "datarax_beam_source_tree.pth"), "w",
              encoding="utf-8") as f:
        f.write(ROOT + "\n")
    check = "import datarax_beam.runners.materialize, apache_beam; print(apache_beam.__version__)"
    version = subprocess.run([python, "-c", check], check=True, capture_output=True, text=True,
                             env={**os.environ, "JAX_PLATFORMS": "cpu"}).stdout.strip().splitlines()[-1]
    print(f"engines_env: {venv_dir} ready (apache-beam {version})", file=sys.stderr, flush=True)
    with open(stamp, "w", encoding="utf-8") as f:
        f.write(want)
    return python


def main(argv: list[str]) -> int:
    print(ensure(argv[0] if argv else DEFAULT_DIR))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
