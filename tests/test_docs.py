"""The examples in the docstrings of every godiff module run and print what they show: modules are
discovered, not listed, so a new module's examples run without anyone adding it here."""

import doctest
import importlib
import pkgutil

import pytest

import godiff

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(godiff.__path__, "godiff.") if not m.name.startswith("godiff._shipped_zoo")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # an optional extra that is not installed (agox)
        pytest.skip(f"{name}: {exc}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed (python -m doctest -v)"


@pytest.mark.parametrize(
    "name", ["godiff", "godiff.energy.evaluator", "godiff.trust", "godiff.search", "godiff.system", "godiff.zoo"]
)
def test_the_public_modules_carry_examples(name):
    assert doctest.testmod(importlib.import_module(name), report=False, optionflags=doctest.ELLIPSIS).attempted > 0
