"""Rendering of the progress events of :meth:`godiff.search.Search.run` on the terminal.

The search emits plain dict events (``phase``, ``evaluated``, ``iteration``); this module turns
them into one of three displays:

* ``live``: a status line on stderr kept in place by ``rich``'s :class:`~rich.live.Live` (only
  when stderr is a terminal), refreshed twice a second so the elapsed time of a long training
  phase keeps moving; a one-line record of each finished iteration is printed above it, and the
  status line is erased at the end.
* ``lines``: one plain, timestamped line per finished iteration (pipes, log files, CI).
* ``quiet``: nothing.

Log records emitted while a live line is shown go through :class:`LogHandler`, which prints
them with the live display's console, above the line.

Measured against the hand-written ANSI line it replaced (2,000 ``evaluated`` events, 5 runs, this
2-core machine): 2.3 us per event against 21 us, since an evaluation only updates the counters
and the 2 Hz refresh draws them (a forced redraw costs about 0.3 ms with rich); importing rich
adds 60 to 80 ms to the command's start.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time

from rich.console import Console
from rich.live import Live
from rich.text import Text

__all__ = ["Progress", "LogHandler", "choose_mode", "format_seconds", "format_energy"]

_active: "Progress | None" = None  # the live display currently on screen, if any


def choose_mode(*, quiet: bool, stream=None) -> str:
    """``"quiet"``, ``"live"`` (stream is a capable terminal) or ``"lines"``."""
    if quiet:
        return "quiet"
    stream = sys.stderr if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty and os.environ.get("TERM", "") != "dumb":
        return "live"
    return "lines"


def format_seconds(seconds: float | None) -> str:
    """``0.4s``, ``12s``, ``3m05s``, ``2h03m``."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = int(round(seconds))
    if seconds < 3600:
        m, s = divmod(seconds, 60)
        return f"{m}m{s:02d}s" if m else f"{s}s"
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m"


def format_energy(energy: float | None, unit: str = "eV") -> str:
    """An energy with six decimals in the system's ``unit`` (:meth:`godiff.system.System.energy_unit`),
    or ``-`` when there is none yet."""
    if energy is None or not math.isfinite(energy):
        return "-"
    return f"{energy:.6f} {unit}"


class Progress:
    """A progress callback for :meth:`Search.run`; use it as a context manager.

    Args:
        total_iterations: iterations the run will have when finished.
        samples: structures evaluated per iteration.
        mode: ``"live"``, ``"lines"`` or ``"quiet"`` (see :func:`choose_mode`).
        n_evaluations: evaluations already spent (a resumed run).
        n_failed: failed evaluations among those.
        best_energy: best energy so far (a resumed run), ``inf`` if none.
        unit: the system's energy unit (eV; ε for Lennard-Jones), for energies and temperatures.
        stream: where to write (default: ``sys.stderr`` at the time of each write).
    """

    def __init__(
        self,
        *,
        total_iterations: int,
        samples: int | None,
        mode: str,
        n_evaluations: int = 0,
        n_failed: int = 0,
        best_energy: float = math.inf,
        unit: str = "eV",
        stream=None,
        budget: int | None = None,
    ):
        if mode not in ("live", "lines", "quiet"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.total = int(total_iterations)
        self.samples = None if samples is None else int(samples)
        self.budget = budget
        self.mode = mode
        self.unit = unit
        self._stream = stream
        self.iteration: int | None = None
        self.phase = "starting"
        self.temperature: float | None = None
        self.n_evaluations = int(n_evaluations)
        self.n_failed = int(n_failed)
        self.best_energy = float(best_energy)
        self.last_seconds: dict | None = None
        self.last_cost: tuple = (None, None)  # the last iteration's network and calculator s per evaluation
        self._eval_base = self.n_evaluations
        self._evaluated = 0
        self._max_seen = 0
        self._phase_start = time.monotonic()
        self._lock = threading.RLock()
        self._live: Live | None = None

    # -- context ------------------------------------------------------------------------------
    @property
    def stream(self):
        return sys.stderr if self._stream is None else self._stream

    def __enter__(self) -> "Progress":
        global _active
        if self.mode == "live":
            console = Console(file=self.stream, force_terminal=True, highlight=False, soft_wrap=False)
            self._live = Live(
                get_renderable=self._status_text,
                console=console,
                refresh_per_second=2,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()
            _active = self
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stop refreshing and erase the status line."""
        global _active
        if _active is self:
            _active = None
        live, self._live = self._live, None
        if live is not None:
            try:
                live.stop()
            except (OSError, ValueError):  # a closed or broken stream must not stop the search
                pass

    # -- events -------------------------------------------------------------------------------
    def __call__(self, event: dict) -> None:
        kind, line = event.get("event"), None
        with self._lock:
            if kind == "phase":
                self.iteration = event.get("iteration", self.iteration)
                self.phase = event.get("phase", self.phase)
                self.temperature = event.get("temperature", self.temperature)
                self._phase_start = time.monotonic()
                if self.phase == "evaluating":
                    self._eval_base = self.n_evaluations
                    self._evaluated = 0
            elif kind == "evaluated":
                # Parallel results arrive in completion order and their n_evaluations follows the
                # input order, so count the events too and show whichever is larger.
                self._evaluated += 1
                self._max_seen = max(self._max_seen, int(event.get("n_evaluations") or 0))
                self.n_evaluations = max(self._max_seen, self._eval_base + self._evaluated)
                energy = event.get("energy")
                if energy is not None and energy < self.best_energy:
                    self.best_energy = float(energy)
            elif kind == "iteration":
                self.iteration = event.get("iteration", self.iteration)
                self.temperature = event.get("temperature", self.temperature)
                self.n_evaluations = event.get("n_evaluations", self.n_evaluations)
                self._eval_base = self.n_evaluations
                self.n_failed += int(event.get("n_failed") or 0)
                best = event.get("best_energy")
                if best is not None:
                    self.best_energy = float(best)
                self.last_seconds = event.get("seconds")
                self.last_cost = (event.get("network_per_evaluation"), event.get("calculator_per_evaluation"))
                self.phase = "done"
                if self.mode == "lines":
                    self._write(time.strftime("[%H:%M:%S] ") + self.iteration_line(event) + "\n")
                elif self.mode == "live":
                    line = self.iteration_line(event) + "\n"
        if line is not None:
            self.write_above(line)
        if self._live is not None and kind != "evaluated":  # an evaluation waits for the next refresh (2 Hz)
            self._live.refresh()  # outside our lock: the refresh thread takes the live's lock, then ours

    # -- text ---------------------------------------------------------------------------------
    def iteration_line(self, event: dict) -> str:
        """The one-line record of a finished iteration."""
        k = event.get("iteration", 0) + 1
        parts = [
            f"iteration {k}/{self.total}",
            f"T {event.get('temperature', float('nan')):.4g} {self.unit}",
            f"best {format_energy(event.get('best_energy'), self.unit)}",
        ]
        lo, med = event.get("iteration_min"), event.get("iteration_median")
        if lo is not None:
            parts.append(f"min {lo:.6g}, median {med:.6g}")
        failed = f" ({self.n_failed} failed)" if self.n_failed else ""
        parts.append(f"evaluations {event.get('n_evaluations', self.n_evaluations)}{failed}")
        sec = event.get("seconds") or {}
        parts.append(
            "time "
            + " / ".join(
                f"{name} {format_seconds(sec.get(key))}"
                for name, key in (("sample", "sampling"), ("eval", "evaluation"), ("train", "training"))
            )
        )
        network, calculator = event.get("network_per_evaluation"), event.get("calculator_per_evaluation")
        if network is not None and calculator is not None:
            parts.append(f"per evaluation: network {network:.3g}s, calculator {calculator:.3g}s")
        return "  ".join(parts)

    def status_line(self) -> str:
        """The live status line (without the terminal control characters)."""
        k = "-" if self.iteration is None else str(self.iteration + 1)
        phase = self.phase
        if phase == "evaluating":
            done = self.n_evaluations - self._eval_base
            phase = (
                f"evaluating {done}" if self.samples is None else f"evaluating {min(done, self.samples)}/{self.samples}"
            )
        phase += f" {format_seconds(time.monotonic() - self._phase_start)}"
        parts = [f"iteration {k}/{self.total}", phase]
        if self.temperature is not None:
            parts.append(f"T {self.temperature:.4g} {self.unit}")
        parts.append(f"best {format_energy(self.best_energy, self.unit)}")
        failed = f" ({self.n_failed} failed)" if self.n_failed else ""
        parts.append(f"evals {self.n_evaluations}" + (f"/{self.budget}" if self.budget else "") + failed)
        if self.last_seconds:
            s = self.last_seconds
            parts.append(
                "last: "
                + " / ".join(
                    f"{name} {format_seconds(s.get(key))}"
                    for name, key in (("sample", "sampling"), ("eval", "evaluation"), ("train", "training"))
                )
            )
        network, calculator = self.last_cost
        if network is not None and calculator is not None:
            parts.append(f"per eval: network {network:.3g}s, calc {calculator:.3g}s")
        return " | ".join(parts)

    # -- terminal -----------------------------------------------------------------------------
    def _status_text(self) -> Text:
        with self._lock:
            return Text(self.status_line(), no_wrap=True, overflow="ellipsis")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream must not stop the search
            pass

    def write_above(self, text: str) -> None:
        """Write ``text`` (ending with a newline) above the live line, which stays below it."""
        live = self._live
        if live is None:
            self._write(text)
            return
        try:
            live.console.print(Text(text.rstrip("\n")), soft_wrap=True)
        except (OSError, ValueError):
            pass


class LogHandler(logging.Handler):
    """Writes log records to the *current* ``sys.stderr``, above a live status line if shown."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + "\n"
            display = _active
            if display is not None:
                display.write_above(text)
            else:
                sys.stderr.write(text)
                sys.stderr.flush()
        except Exception:  # logging must never raise into the library
            self.handleError(record)
