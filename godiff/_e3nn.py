"""Import e3nn on any supported torch, and compile each of its generated graphs once per process.

e3nn 0.4.4 (the version mace-torch pins) loads a bundled constants file that pickles the
builtin ``slice``; torch >= 2.6 loads with ``weights_only=True`` and refuses it. mace-torch
answers by switching weights-only loading off for the whole process; we allow-list only
``slice``, which is harmless, and leave every other load safe.

e3nn generates the code of every tensor product and linear map with ``torch.fx`` and compiles
it with TorchScript, once per module instance. A score network holds eight tensor products of
the same irreps and as many linear maps, so building one compiled the same graphs over and over:
1.66 s a network, 0.77 s when each distinct graph is compiled once and copied (measured here,
one thread, default :class:`godiff.score.ScoreConfig`; same weights, same outputs to the bit).
Every run, resume, zoo load and benchmark process builds one. :func:`_compile_once` is that
cache: it is keyed by the graph's generated code and the values of its constants, and each
module gets its own copy of the compiled module, so nothing is shared between networks.
"""

import copy
import hashlib
import warnings

import torch

# e3nn compiles its modules with TorchScript, which warns about annotations it ignores.
warnings.filterwarnings("ignore", message="The TorchScript type system", category=UserWarning)
torch.serialization.add_safe_globals([slice])

import e3nn  # noqa: E402
from e3nn import nn, o3  # noqa: E402
from e3nn.util.codegen import _mixin  # noqa: E402

__all__ = ["nn", "o3"]

_COMPILED: dict = {}
_E3NN_REGISTER = _mixin.CodeGenMixin._codegen_register  # e3nn's own, which compiles every time


def _graph_key(graphmod) -> str:
    """A digest of a generated graph: its code and every constant it holds."""
    digest = hashlib.sha256(graphmod.code.encode())
    tensors = sorted([*graphmod.named_buffers(), *graphmod.named_parameters()], key=lambda item: item[0])
    for name, tensor in tensors:
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _compile_once(self, funcs) -> None:
    """``CodeGenMixin._codegen_register`` with TorchScript compilation cached per distinct graph."""
    from opt_einsum_fx import jitable

    if not hasattr(self, "__codegen__"):
        self.__codegen__ = []
    self.__codegen__.extend(funcs.keys())
    script = e3nn.get_optimization_defaults()["jit_script_fx"]
    for name, graphmod in funcs.items():
        if not script:
            setattr(self, name, graphmod)
            continue
        key = _graph_key(graphmod)
        if key not in _COMPILED:
            _COMPILED[key] = torch.jit.script(jitable(graphmod))
        setattr(self, name, copy.deepcopy(_COMPILED[key]))


if e3nn.__version__ == "0.4.4":  # the version whose method this replaces, line for line
    _mixin.CodeGenMixin._codegen_register = _compile_once
