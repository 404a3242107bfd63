"""File operations never read a user's path as a glob: ``run[1]``, ``a?b``, ``c*`` are names."""

from __future__ import annotations

import os

import pytest

from datarax_beam.transforms import files

from ..runners.testfs import GlobFS, PrefixFS


@pytest.mark.parametrize("scheme", ["", PrefixFS.PREFIX, GlobFS.PREFIX], ids=["local", "literal_fs", "glob_fs"])
@pytest.mark.parametrize("name", ["run[1]", "a?b", "c*", "[x]"])
def test_delete_touches_only_the_named_path(tmp_path, scheme, name):
    # neighbours a glob of the name would match
    for other in ("run1", "aXb", "c", "cc", "x"):
        os.makedirs(tmp_path / other / "keep")
        (tmp_path / other / "file").write_bytes(b"keep")
    base = tmp_path / name
    os.makedirs(base / "sub" / "deeper")
    (base / "file").write_bytes(b"1")
    (base / "sub" / "deeper" / "part").write_bytes(b"2")
    files.delete(scheme + str(base / "file"))
    assert not (base / "file").exists()
    files.write_bytes(scheme + str(base / "new"), b"3")
    assert files.read_bytes(scheme + str(base / "new")) == b"3"
    files.delete_dir(scheme + str(base / "sub"))
    assert not (base / "sub" / "deeper" / "part").exists()
    if scheme != GlobFS.PREFIX:  # a globbing filesystem with directories keeps empty ones
        assert not (base / "sub").exists()
    files.delete(scheme + str(base / "missing"))  # not an error
    for other in ("run1", "aXb", "c", "cc", "x"):
        assert (tmp_path / other / "file").read_bytes() == b"keep"


def test_literal_pattern():
    assert files.literal("gs://b/run[1]/a?b*") == "gs://b/run[[]1[]]/a[?]b[*]"
