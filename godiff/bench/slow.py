"""A stand-in for an expensive energy function, to check and measure parallel dispatch.

:class:`SlowEMT` is ASE's EMT taking a set time per calculation (asleep, so that many of them
in parallel cost one slot's time even on a 2-core machine). This module imports nothing heavy:
a Dask worker that unpickles one starts in the time it takes to import ASE.
"""

from __future__ import annotations

import time

from ase.calculators.emt import EMT

__all__ = ["SlowEMT"]


class SlowEMT(EMT):
    """ASE's EMT, sleeping ``seconds`` in every calculation.

    Example:
        >>> from ase.build import bulk
        >>> atoms = bulk("Cu", cubic=True)
        >>> atoms.calc = SlowEMT(seconds=0.01)
        >>> round(float(atoms.get_potential_energy()), 4)
        -0.0227
    """

    def __init__(self, seconds: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.seconds = float(seconds)

    def calculate(self, *args, **kwargs):
        time.sleep(self.seconds)
        super().calculate(*args, **kwargs)
