"""The examples in the public docstrings run and print what they show."""

import doctest
import importlib

import pytest

MODULES = ["godiff.score", "godiff.sde", "godiff.schedule", "godiff.loss", "godiff.energy", "godiff.system",
           "godiff.testing", "godiff.search", "godiff", "godiff.zoo.format", "godiff.zoo.registry", "godiff.zoo.similarity",
           "godiff.errors", "godiff.checks", "godiff.digests", "godiff.zoo", "godiff.manifest"]


NO_EXAMPLES = set()  # modules whose docstrings hold no runnable example


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0 or name in NO_EXAMPLES, f"{name}: no example ran"
