"""Reading files on non-local filesystems through Beam's `FileSystems`, imported lazily.

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


def copy_to_local(path: str, dest: str) -> None:
    """Copies ``path`` (any Beam filesystem) to the local file ``dest``, atomically."""
    import os
    import shutil
    import uuid

    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        raise FileNotFoundError(f"Shard {path!r} listed in shardset.json does not exist")
    tmp = f"{dest}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
