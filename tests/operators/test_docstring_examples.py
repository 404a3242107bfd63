"""The docstring examples of the built-in operators and statistics modules run as written."""

import doctest
import importlib

import pytest

MODULES = ["datarax_beam.operators.image", "datarax_beam.operators.text", "datarax_beam.operators.statistics",
           "datarax_beam.operators.vocabulary", "datarax_beam.statistics.analyzer",
           "datarax_beam.statistics.spec"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0, result
