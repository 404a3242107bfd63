"""Reading small files on non-local filesystems through Beam's `FileSystems`, imported lazily.

The train-time reader only imports this for ``scheme://`` paths, so local reading never pulls
Apache Beam in.
"""

from __future__ import annotations


def read_bytes(path: str) -> bytes:
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        raise FileNotFoundError(f"{path!r} does not exist: not a committed shard set")
    with FileSystems.open(path) as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")
