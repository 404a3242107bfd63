"""The docstring examples of the serving modules run as written."""

import doctest
import importlib

import pytest

MODULES = ["datarax_beam.serving", "datarax_beam.serving.export", "datarax_beam.serving.format",
           "datarax_beam.serving.load", "datarax_beam.serving.next_to"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0, result
