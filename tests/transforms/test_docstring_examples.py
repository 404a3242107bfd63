"""The docstring examples of the public composite transforms run as written."""

import doctest
import importlib

import pytest

MODULES = ["datarax_beam.transforms.chain", "datarax_beam.transforms.write_set",
           "datarax_beam.transforms.read_set", "datarax_beam.transforms.job"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0, result
