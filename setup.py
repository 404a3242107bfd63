"""datarax_beam: write a JAX data pipeline once, run it online or materialize it with Apache Beam.

This ``setup.py`` is what Beam's ``--setup_file`` ships to remote workers (Dataflow, Flink,
Spark), so the package installs the same way on a laptop and on a cluster.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

_VERSION = re.search(
    r'__version__ = "([^"]+)"', Path(__file__).with_name("datarax_beam").joinpath("version.py").read_text()
).group(1)

setup(
    name="datarax_beam",
    version=_VERSION,
    description="Offline preprocessing of JAX training data with Apache Beam, read back with Flax NNX.",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["datarax_beam", "datarax_beam.*"]),
    # the Maven poms from which `runners.jobserver` resolves the Flink and Spark job servers
    package_data={"datarax_beam.runners": ["java/*.pom.xml"]},
    # The job servers for Flink and Spark must run the submitting SDK's Beam release
    # (`datarax_beam.runners.jobserver`). Where Maven Central serves them that is any release; the
    # Maven Central our CI machines reach resolves them for Beam 2.62.0 only (2.63-2.77: runner or
    # job-service artifacts missing; the shaded *-job-server jars: missing for every release).
    # Beam 2.62.0 is NOT pinned here: it needs dill<0.3.2, and every `multiprocess` wheel that
    # `datasets` (the HF sources) depends on needs dill>=0.3.2, so pip finds no resolution
    # (ResolutionImpossible with binary wheels; the only older multiprocess, 0.70.9, is an sdist
    # that predates Python 3.11). Instead `make test`/`make bench` submit the engine jobs from a
    # second environment, .venv-engines (requirements-engines.txt: Beam 2.62.0 and these
    # requirements but `datasets`), built by tools/engines_env.py. Everything else uses this Beam.
    install_requires=[
        "apache-beam>=2.60",
        "jax>=0.4.30",
        "flax>=0.10",
        "array-record>=0.5",
        "pyarrow>=14",
        "numpy>=1.26",
        # record-level zstd of shard records (releases the GIL: writers compress on threads)
        "zstandard>=0.22",
        "tensorflow-datasets>=4.9.6",
        # TFDS needs it to prepare datasets (DatasetBuilder.code_path) but only declares it for
        # Python < 3.9.
        "importlib_resources",
        "datasets>=2.19",
        # progress bars of long jobs (datarax_beam.progress)
        "tqdm>=4.62",
    ],
    extras_require={
        # Optional operators: image (DecodeImage, ResizeImage) and text (Tokenize).
        "image": ["Pillow>=9.1"],
        "text": ["tokenizers>=0.15"],
        # export_transform / load_transform: jax.export serializes with flatbuffers.
        "serving": ["flatbuffers>=24"],
        # orbax: checkpointing tests and examples
        "test": ["pytest>=8", "ruff", "orbax-checkpoint", "Pillow>=9.1", "tokenizers>=0.15", "flatbuffers>=24"],
        "demo": ["scikit-learn>=1.3", "optax>=0.2", "matplotlib>=3.7", "Pillow>=9.1", "tokenizers>=0.15"],
        "bench": ["grain>=0.2", "psutil", "Pillow>=9.1", "tokenizers>=0.15", "pandas"],
        "plot": ["matplotlib>=3.7"],
        # TFRecord-format TFDS datasets need TensorFlow; everything else works without it.
        "tensorflow": ["tensorflow>=2.15"],
    },
    entry_points={"console_scripts": ["datarax-beam=datarax_beam.cli:main"]},
)
