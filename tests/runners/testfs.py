"""A non-local Beam filesystem for tests: ``testfs:///abs/path`` is ``/abs/path``.

Defining the class registers the scheme with Beam in this process. Worker processes import it
through ``--beam_plugins=tests.runners.testfs`` (see `WORKER_PLUGIN`).
"""

from __future__ import annotations

import os
import shutil

from apache_beam.io.filesystem import BeamIOError, FileMetadata, FileSystem
from apache_beam.io.localfilesystem import LocalFileSystem

#: The flag that makes Beam's worker processes register the scheme too.
WORKER_PLUGIN = "--beam_plugins=tests.runners.testfs"


class PrefixFS(FileSystem):
    """``testfs:///abs/path`` -> ``/abs/path``: a non-local scheme, as gs:// would be.

    ``delete`` takes paths literally (as HDFS and S3 do); `GlobFS` is the same over Beam's
    local filesystem, whose ``delete`` globs its paths (as gs:// does for files)."""

    PREFIX = "testfs://"

    def __init__(self, pipeline_options=None):
        super().__init__(pipeline_options)
        self._local = LocalFileSystem(pipeline_options)

    @classmethod
    def scheme(cls):
        return "testfs"

    def _p(self, path):
        assert path.startswith(self.PREFIX), path
        return path[len(self.PREFIX):]

    def _ps(self, paths):
        return [self._p(p) for p in paths]

    def join(self, basepath, *paths):
        return basepath.rstrip("/") + "/" + "/".join(p.strip("/") for p in paths)

    def split(self, path):
        head, tail = os.path.split(self._p(path))
        return self.PREFIX + head, tail

    def has_dirs(self):
        return True

    def mkdirs(self, path):
        self._local.mkdirs(self._p(path))

    def _list(self, dir_or_prefix):
        for m in self._local._list(self._p(dir_or_prefix)):
            yield FileMetadata(self.PREFIX + m.path, m.size_in_bytes, m.last_updated_in_seconds)

    def create(self, path, *args, **kwargs):
        return self._local.create(self._p(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return self._local.open(self._p(path), *args, **kwargs)

    def copy(self, source_file_names, destination_file_names):
        self._local.copy(self._ps(source_file_names), self._ps(destination_file_names))

    def rename(self, source_file_names, destination_file_names):
        self._local.rename(self._ps(source_file_names), self._ps(destination_file_names))

    def exists(self, path):
        return self._local.exists(self._p(path))

    def size(self, path):
        return self._local.size(self._p(path))

    def last_updated(self, path):
        return self._local.last_updated(self._p(path))

    def checksum(self, path):
        return self._local.checksum(self._p(path))

    def metadata(self, path):
        m = self._local.metadata(self._p(path))
        return FileMetadata(path, m.size_in_bytes, m.last_updated_in_seconds)

    def delete(self, paths):
        # Paths literally, as HDFS and S3 take them (Beam's local filesystem would glob them).
        for path in self._ps(paths):
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
            else:
                raise BeamIOError("Delete operation failed", {path: FileNotFoundError(path)})

    def report_lineage(self, path, lineage):
        pass


class GlobFS(PrefixFS):
    """``globfs:///abs/path``: like `PrefixFS`, but ``delete`` globs (Beam's local filesystem)."""

    PREFIX = "globfs://"

    @classmethod
    def scheme(cls):
        return "globfs"

    def delete(self, paths):
        self._local.delete(self._ps(paths))
