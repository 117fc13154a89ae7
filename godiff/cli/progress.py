"""Rendering of the progress events of :meth:`godiff.search.Search.run` on the terminal.

The search emits plain dict events (``phase``, ``evaluated``, ``iteration``); this module turns
them into one of three displays:

* ``live``: a status line on stderr redrawn in place with ``\\r`` and ANSI erase-line (only when
  stderr is a terminal); a one-line record of each finished iteration is printed above it. A
  background thread redraws the line twice a second so the elapsed time of a long training
  phase keeps moving.
* ``lines``: one plain, timestamped line per finished iteration (pipes, log files, CI).
* ``quiet``: nothing.

No third-party dependency: ``rich`` is not installed in the project environment and a status
line needs nothing it offers. Log records emitted while a live line is shown go through
:class:`LogHandler`, which clears the line, writes the record and redraws the line.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import threading
import time

__all__ = ["Progress", "LogHandler", "choose_mode", "format_seconds", "format_energy"]

_CLEAR = "\r\033[K"
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

    def __init__(self, *, total_iterations: int, samples: int, mode: str, n_evaluations: int = 0,
                 n_failed: int = 0, best_energy: float = math.inf, unit: str = "eV", stream=None):
        if mode not in ("live", "lines", "quiet"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.total = int(total_iterations)
        self.samples = int(samples)
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
        self._eval_base = self.n_evaluations
        self._evaluated = 0
        self._max_seen = 0
        self._phase_start = time.monotonic()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._shown = False

    # -- context ------------------------------------------------------------------------------
    @property
    def stream(self):
        return sys.stderr if self._stream is None else self._stream

    def __enter__(self) -> "Progress":
        global _active
        if self.mode == "live":
            _active = self
            self._thread = threading.Thread(target=self._tick, name="godiff-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stop redrawing and erase the status line."""
        global _active
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        with self._lock:
            if self._shown:
                self._write(_CLEAR)
                self._shown = False
        if _active is self:
            _active = None

    # -- events -------------------------------------------------------------------------------
    def __call__(self, event: dict) -> None:
        kind = event.get("event")
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
                self.phase = "done"
                if self.mode == "lines":
                    self._write(time.strftime("[%H:%M:%S] ") + self.iteration_line(event) + "\n")
                elif self.mode == "live":
                    self._write(_CLEAR + self.iteration_line(event) + "\n")
                    self._shown = False
            if self.mode == "live":
                self._redraw()

    # -- text ---------------------------------------------------------------------------------
    def iteration_line(self, event: dict) -> str:
        """The one-line record of a finished iteration."""
        k = event.get("iteration", 0) + 1
        parts = [f"iteration {k}/{self.total}", f"T {event.get('temperature', float('nan')):.4g} {self.unit}",
                 f"best {format_energy(event.get('best_energy'), self.unit)}"]
        lo, med = event.get("iteration_min"), event.get("iteration_median")
        if lo is not None:
            parts.append(f"min {lo:.6g}, median {med:.6g}")
        failed = f" ({self.n_failed} failed)" if self.n_failed else ""
        parts.append(f"evaluations {event.get('n_evaluations', self.n_evaluations)}{failed}")
        sec = event.get("seconds") or {}
        parts.append("time " + " / ".join(
            f"{name} {format_seconds(sec.get(key))}"
            for name, key in (("sample", "sampling"), ("eval", "evaluation"), ("train", "training"))
        ))
        return "  ".join(parts)

    def status_line(self) -> str:
        """The live status line (without the terminal control characters)."""
        k = "-" if self.iteration is None else str(self.iteration + 1)
        phase = self.phase
        if phase == "evaluating":
            phase = f"evaluating {min(self.n_evaluations - self._eval_base, self.samples)}/{self.samples}"
        phase += f" {format_seconds(time.monotonic() - self._phase_start)}"
        parts = [f"iteration {k}/{self.total}", phase]
        if self.temperature is not None:
            parts.append(f"T {self.temperature:.4g} {self.unit}")
        parts.append(f"best {format_energy(self.best_energy, self.unit)}")
        failed = f" ({self.n_failed} failed)" if self.n_failed else ""
        parts.append(f"evals {self.n_evaluations}{failed}")
        if self.last_seconds:
            s = self.last_seconds
            parts.append("last: " + " / ".join(
                f"{name} {format_seconds(s.get(key))}"
                for name, key in (("sample", "sampling"), ("eval", "evaluation"), ("train", "training"))
            ))
        return " | ".join(parts)

    # -- terminal -----------------------------------------------------------------------------
    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream must not stop the search
            pass

    def _redraw(self) -> None:
        width = shutil.get_terminal_size((100, 24)).columns
        line = self.status_line()
        if len(line) > width - 1:
            line = line[: max(0, width - 2)] + "…"
        self._write(_CLEAR + line)
        self._shown = True

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                if not self._stop.is_set():
                    self._redraw()

    def write_above(self, text: str) -> None:
        """Write ``text`` (ending with a newline) above the live line, then redraw it."""
        with self._lock:
            if self._shown:
                self._write(_CLEAR)
            self._write(text)
            if self._shown and not self._stop.is_set():
                self._redraw()


class LogHandler(logging.Handler):
    """Writes log records to the *current* ``sys.stderr``, above a live status line if shown."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + "\n"
            display = _active
            if display is not None and display._shown:
                display.write_above(text)
            else:
                sys.stderr.write(text)
                sys.stderr.flush()
        except Exception:  # logging must never raise into the library
            self.handleError(record)
