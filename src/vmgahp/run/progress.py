"""Live progress on the terminal: one status line, rewritten in place.

On a terminal the line is redrawn on every status poll; anywhere else (a
pipe, a log file, CI) a plain line is printed when the state changes and
then at most every :data:`PLAIN_EVERY` seconds, so logs stay short.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

from vmgahp.protocol.status import Status

PLAIN_EVERY = 30.0


def hms(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def size(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{nbytes} B"  # pragma: no cover


class Progress:
    def __init__(self, label: str, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self._drawn = False
        self._last_plain = 0.0
        self._last_state: str | None = None

    def line(self, status: Status, elapsed: float) -> str:
        parts = [self.label, status.state, f"elapsed {hms(elapsed)}"]
        if status.cpu_time is not None:
            parts.append(f"cpu {status.cpu_time:.1f}s")
        if status.utilization is not None and status.state == "Running":
            parts.append(f"util {status.utilization * 100:.0f}%")
        if status.memory_kib:
            parts.append(f"mem {status.memory_kib // 1024} MiB")
        return "  ".join(parts)

    def update(self, status: Status, elapsed: float) -> None:
        text = self.line(status, elapsed)
        if self.tty:
            width = shutil.get_terminal_size((100, 24)).columns - 1
            self.stream.write("\r" + text[:width] + "\x1b[K")
            self.stream.flush()
            self._drawn = True
            return
        now = time.monotonic()
        if status.state != self._last_state or now - self._last_plain >= PLAIN_EVERY:
            self._last_state = status.state
            self._last_plain = now
            self.stream.write(text + "\n")
            self.stream.flush()

    def say(self, text: str) -> None:
        """A message on its own line (the status line is cleared first)."""
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False
