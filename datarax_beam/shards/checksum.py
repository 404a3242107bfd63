"""Content checksums of shard files: the hex SHA-256 of the whole file, as ``shardset.json`` records.

Example:
  >>> import os, tempfile
  >>> path = os.path.join(tempfile.mkdtemp(), "f")
  >>> _ = open(path, "wb").write(b"abc")
  >>> sha256_file(path)[:16]
  'ba7816bf8f01cfea'
"""

from __future__ import annotations

import hashlib
from typing import BinaryIO

CHUNK = 1 << 20


def sha256_stream(f: BinaryIO) -> str:
    """The hex SHA-256 of everything left in a binary file object."""
    h = hashlib.sha256()
    while block := f.read(CHUNK):
        h.update(block)
    return h.hexdigest()


def sha256_file(path: str) -> str:
    """The hex SHA-256 of a local file's bytes."""
    with open(path, "rb") as f:
        return sha256_stream(f)
