"""The command line's progress notes (tpmdev._progress)."""

from __future__ import annotations

import io
import threading
import time

from tpmdev._progress import Progress


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def wait_for(condition: object, limit: float = 10.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_shown_on_a_terminal_after_the_delay_and_erased_at_the_end() -> None:
    out = Terminal()
    with Progress("replaying x", 200, stream=out, delay=0.05, interval=0.01) as progress:
        progress.update(50)
        assert wait_for(lambda: "replaying x: " in out.getvalue() and "50/200 (25%)" in out.getvalue())
    assert out.getvalue().endswith("\r\x1b[K")  # the line is erased
    assert not any(t.name == "tpmdev-progress" for t in threading.enumerate())


def test_silent_when_quick_or_not_a_terminal() -> None:
    quick = Terminal()
    with Progress("quick", stream=quick, delay=60):
        pass
    assert quick.getvalue() == ""
    piped = io.StringIO()  # not a terminal: a TSS reading tpmdev tcti's output, a log file
    with Progress("slow", stream=piped, delay=0, interval=0.01):
        time.sleep(0.05)
    assert piped.getvalue() == ""


def test_line_without_a_total() -> None:
    progress = Progress("tpmdev tcti: TPM2_CreatePrimary running", stream=io.StringIO())
    with progress:
        assert progress.line().startswith("tpmdev tcti: TPM2_CreatePrimary running: ")
        assert progress.line().endswith(" s")
