"""Progress notes for the command line: what is running, once it has taken
more than a second.

:class:`Progress` writes one line on a terminal (``stderr`` by default),
rewritten in place: ``what`` and the seconds so far, and ``done/total``
when the work is countable (:meth:`Progress.update`). Nothing is written
when the stream is not a terminal (a pipe, a file, a TSS reading the
``cmd`` TCTI's output), nor for work that ends within the delay. A small
daemon thread does the writing, so a call that blocks (a slow TPM command)
is reported too; the line is erased when the work ends.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Optional, TextIO

__all__ = ["Progress"]


class Progress:
    """``with Progress("replaying s.trace", total=n) as p: ... p.update(i)``."""

    def __init__(
        self,
        what: str,
        total: Optional[int] = None,
        *,
        stream: Optional[TextIO] = None,
        delay: float = 1.0,
        interval: float = 0.25,
    ) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.delay = delay
        self.interval = interval
        self.shown = False
        self._start = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def update(self, done: int) -> None:
        """Count *done* units of the total so far."""
        self.done = done

    def __enter__(self) -> Progress:
        self._start = time.monotonic()
        isatty = getattr(self.stream, "isatty", None)
        if isatty is not None and isatty():
            self._thread = threading.Thread(target=self._run, name="tpmdev-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self.shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()

    def line(self) -> str:
        """The note as it stands."""
        text = f"{self.what}: {time.monotonic() - self._start:.0f} s"
        if self.total:
            text += f", {self.done}/{self.total} ({100 * self.done // self.total}%)"
        return text

    def _run(self) -> None:
        if self._stop.wait(self.delay):
            return
        while True:
            with self._lock:
                self.stream.write("\r\x1b[K" + self.line())
                self.stream.flush()
                self.shown = True
            if self._stop.wait(self.interval):
                return
