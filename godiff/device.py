"""Where the network runs: ``cpu``, ``cuda`` (``cuda:N``) or ``auto`` (a GPU when there is one).

The score network, the system graph and the template context live on the device; sampling
and training run their forward and backward passes there. Every random number is still drawn
on the CPU from the run's seeded generators and then moved, and positions come back to the CPU
before they are evaluated or saved, so the random streams a resume relies on do not depend on
the device, and a resumed run is bit-identical to an uninterrupted one on the same device.
(Across devices the floating-point results differ in their last bits, so a run resumed on
another device continues correctly but not bit for bit.) Evaluations run wherever the
evaluator sends them (:mod:`godiff.cluster`), independently of this.

Example:
    >>> resolve_device("cpu"), resolve_device(None)
    (device(type='cpu'), device(type='cpu'))
"""

from __future__ import annotations

import torch

from godiff.errors import ConfigError, shown

__all__ = ["resolve_device", "DEVICES"]

DEVICES = ("cpu", "cuda", "auto")


def resolve_device(name: str | torch.device | None) -> torch.device:
    """The :class:`torch.device` of ``name`` (``None``: the CPU); ``auto`` is the first GPU when
    one is available, else the CPU. A GPU that is not there is a
    :class:`~godiff.errors.ConfigError` (exit 2) naming what torch sees."""
    if name is None:
        return torch.device("cpu")
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(str(name))
        except (RuntimeError, ValueError):
            raise ConfigError(f"--device {shown(name)}: expected cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            built = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ConfigError(
                f"--device {shown(str(name))}: no such GPU here (torch {torch.__version__}, {built}, "
                f"{count} GPU(s) visible); use --device cpu or auto"
            )
    elif device.type != "cpu":
        raise ConfigError(f"--device {shown(str(name))}: expected cpu, cuda, cuda:N or auto")
    return device
