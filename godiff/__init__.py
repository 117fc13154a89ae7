"""godiff: data-free, amortized global structure optimization with a self-trained diffusion model.

Example:
    >>> import godiff
    >>> system = godiff.load_system("lj13")
    >>> result = godiff.Search(system, iterations=2, samples=8).run()   # doctest: +SKIP
    >>> result.best_energy, result.best_atoms                           # doctest: +SKIP

Importing godiff prints nothing and opens no connection.
"""

import logging

__version__ = "0.2.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

_LAZY = {
    "System": "godiff.system",
    "load_system": "godiff.system",
    "Search": "godiff.search",
    "SearchConfig": "godiff.search",
    "Result": "godiff.search",
    "SamplerConfig": "godiff.sampler",
    "ScoreConfig": "godiff.score",
    "ScoreModel": "godiff.score",
    "Evaluator": "godiff.energy",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    # Lazy so that `import godiff` (and the CLI's --help) does not pay for importing torch.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'godiff' has no attribute {name!r}")
