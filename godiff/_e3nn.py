"""Import e3nn on any supported torch.

e3nn 0.4.4 (the version mace-torch pins) loads a bundled constants file that pickles the
builtin ``slice``; torch >= 2.6 loads with ``weights_only=True`` and refuses it. mace-torch
answers by switching weights-only loading off for the whole process; we allow-list only
``slice``, which is harmless, and leave every other load safe.
"""

import warnings

import torch

# e3nn compiles its modules with TorchScript, which warns about annotations it ignores.
warnings.filterwarnings("ignore", message="The TorchScript type system", category=UserWarning)
torch.serialization.add_safe_globals([slice])

from e3nn import nn, o3  # noqa: E402

__all__ = ["nn", "o3"]
