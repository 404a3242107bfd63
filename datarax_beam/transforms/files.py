"""File operations of the writer on any Beam filesystem, never treating a user's path as a glob.

Beam's `FileSystems.delete` (and ``match``) read ``[``, ``?`` and ``*`` as wildcards, so an output
directory named ``run[1]`` cannot be deleted or listed through them as it is. Local paths are
handled with ``os``/``shutil`` directly; other schemes get their wildcard characters escaped
(``[`` -> ``[[]``), so the pattern matches exactly the one path. Nothing in the writer lists a
directory: every file it removes is named by the job's own records (its lock, its temp
directory, the committed ``shardset.json``).
"""

from __future__ import annotations

import io
import os
import re
import shutil

from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from datarax_beam.shards import shardset as ss

_WILDCARD = re.compile(r"([\[\]*?])")


def is_local(path: str) -> bool:
    return "://" not in path


def literal(path: str) -> str:
    """``path`` as a Beam match pattern that matches only itself."""
    return _WILDCARD.sub(r"[\1]", path)


def exists(path: str) -> bool:
    return os.path.exists(path) if is_local(path) else FileSystems.exists(path)


def _delete_remote(path: str) -> None:
    """Deletes one path on a non-local filesystem, literally.

    Some filesystems glob the paths given to ``delete`` (gs://, and those built on Beam's local
    one), others do not (s3://). The escaped pattern matches only ``path`` where paths are
    globbed and nothing where they are not; the plain path is used only if that left ``path``
    in place, i.e. where it is literal.
    """
    if _WILDCARD.search(path):
        try:
            FileSystems.delete([literal(path)])
        except BeamIOError:
            pass  # a filesystem that takes paths literally: nothing has that escaped name
        if not FileSystems.exists(path):
            return
    FileSystems.delete([path])


def delete(path: str) -> None:
    """Deletes a file (or a directory, on filesystems that have them); a path that does not
    exist is not an error."""
    if is_local(path):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)
        return
    if FileSystems.exists(path):
        _delete_remote(path)


def delete_dir(path: str) -> None:
    """Deletes a directory with everything under it (object stores: every object under it).

    On a filesystem with directories that globs ``delete``'s paths (as Beam's local one does)
    and a path holding wildcard characters, the files under it are deleted and the empty
    directory may remain; nowhere is anything outside ``path`` matched."""
    if is_local(path):
        delete(path)
        return
    if not FileSystems.get_filesystem(path).has_dirs():
        try:
            FileSystems.delete([path.rstrip("/") + "/"])  # recursive by prefix; no glob
        except BeamIOError:
            pass  # nothing was under it
        return
    if not FileSystems.exists(path):
        return
    wild = bool(_WILDCARD.search(path))
    if wild:
        try:
            FileSystems.delete([literal(path.rstrip("/")) + "/**"])  # where paths are globbed
        except BeamIOError:
            pass  # where they are not, no path has that escaped name
    try:
        FileSystems.delete([path])
    except BeamIOError:
        if not wild:
            raise


def mkdirs(path: str) -> None:
    if is_local(path):
        os.makedirs(path, exist_ok=True)
    elif not FileSystems.exists(path):
        FileSystems.mkdirs(path)


def write_bytes(path: str, data: bytes) -> None:
    """Writes a whole file (local: to a temp name, then an atomic rename)."""
    if is_local(path):
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return
    with FileSystems.create(path) as f:
        f.write(data)


def read_bytes(path: str) -> bytes:
    if is_local(path):
        with open(path, "rb") as f:
            return f.read()
    with FileSystems.open(path) as f:
        return f.read()


def upload(local: str, dest: str) -> None:
    """Copies a local file to ``dest`` on any filesystem."""
    if is_local(dest):
        shutil.copyfile(local, dest)
        return
    with open(local, "rb") as src, FileSystems.create(dest) as dst:
        shutil.copyfileobj(src, dst, 1 << 22)


def download(path: str, local: str) -> None:
    with FileSystems.open(path) as src, open(local, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 22)


def rename(src: str, dest: str) -> None:
    """Moves ``src`` over ``dest`` (replacing it)."""
    if is_local(src):
        os.replace(src, dest)
    else:
        FileSystems.rename([src], [dest])


def open_read(path: str) -> io.BufferedIOBase:
    return open(path, "rb") if is_local(path) else FileSystems.open(path)


join = ss.join
