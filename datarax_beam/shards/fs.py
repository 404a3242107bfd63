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


def size(path: str) -> int:
    """The size in bytes of ``path`` on any Beam filesystem."""
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        raise FileNotFoundError(f"Shard {path!r} listed in shardset.json does not exist")
    return FileSystems.get_filesystem(path).size(path)


class RangeReader:
    """Byte ranges of one file on any Beam filesystem (``gs://``...): one stream per thread,
    opened on first use, so threads fetch ranges of the same file concurrently."""

    def __init__(self, path: str):
        import threading

        self.path = path
        self._local = threading.local()

    def read(self, offset: int, length: int) -> bytes:
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems

        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = FileSystems.open(
                self.path, compression_type=CompressionTypes.UNCOMPRESSED)
        stream.seek(offset)
        data = stream.read(length)
        if len(data) != length:
            raise OSError(f"{self.path!r}: read {len(data)} bytes at offset {offset}, expected "
                          f"{length} (the file is shorter than shardset.json says)")
        return data
