"""One stop's steps and the deadline over them (:class:`Stopping`): a part whose stop
fails is logged by name and the others still stop; past the deadline a thread logs what
had not finished and ends the process, whatever is stuck, the event loop included."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable

log = logging.getLogger("postroute")
LAST_WORDS = 2.0  # seconds the deadline waits for its log line to be written


class Stopping:
    """The steps of one stop (one that fails is logged by name) and a deadline over them:
    ``deadline`` s after ``arm()``, unless ``finish()`` came first, a thread logs the parts
    still stopping and those not begun, and exits the process with ``status()``."""

    def __init__(self, deadline: float, status: Callable[[], int]) -> None:
        self.failed: list[str] = []
        self._deadline = deadline
        self._status = status
        self._lock = threading.Lock()
        self._waiting: list[str] = []
        self._running: list[str] = []
        self._finished = threading.Event()
        self._armed, self._arm = -1, -1  # a write to _arm starts the clock
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the deadline's thread (the clock starts with ``arm()``)."""
        self._armed, self._arm = os.pipe()
        os.set_blocking(self._arm, False)
        self._thread = threading.Thread(target=self._watch, name="stop-deadline", daemon=True)
        self._thread.start()

    def arm(self) -> None:
        """Start the clock (once; later calls change nothing). No lock: a signal handler
        may call it whatever the code it interrupted holds."""
        fd = self._arm
        if fd >= 0:
            with contextlib.suppress(OSError):  # the pipe is full: armed already
                os.write(fd, b"!")

    def plan(self, names: list[str]) -> None:
        self._waiting = list(names)  # one assignment: the thread sees the old list or this

    async def step(self, name: str, stop: Callable[[], Awaitable[str | None]]) -> None:
        """Run ``stop``: it raises, or returns how the part did not stop cleanly, or None."""
        with self._lock:
            self._waiting.remove(name)
            self._running.append(name)
        try:
            if problem := await stop():
                log.error("stopping: the %s did not stop cleanly: %s", name, problem)
                self.failed.append(name)
        except Exception:
            log.exception("stopping: the %s failed to stop; stopping the rest", name)
            self.failed.append(name)
        finally:
            with self._lock:
                self._running.remove(name)

    def finish(self) -> None:
        self._finished.set()
        if self._thread is None:
            return
        self.arm()  # wakes the thread if the clock never started
        self._thread.join()
        fds, self._arm = (self._arm, self._armed), -1  # a late signal writes nothing
        for fd in fds:
            os.close(fd)

    def _watch(self) -> None:
        os.read(self._armed, 1)
        if self._finished.wait(self._deadline):
            return
        with self._lock:
            running, waiting = list(self._running), list(self._waiting)
        status = self._status()
        what = (
            f"still stopping: {', '.join(running) or 'nothing'}; "
            f"not begun: {', '.join(waiting) or 'nothing'}"
            if running or waiting
            else "stopping never began (the event loop is blocked)"
        )
        line = f"stopping did not finish in {self._deadline:g} s; {what}; exit status {status}"
        writer = threading.Thread(target=_log_and_flush, args=(line,), daemon=True)
        writer.start()
        writer.join(LAST_WORDS)  # what is stuck may hold the log's lock: not forever
        os._exit(status)


def _log_and_flush(line: str) -> None:
    log.critical(line)
    for handler in (*log.handlers, *logging.getLogger().handlers):
        handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
