"""The delivery worker as a child process of ``postroute serve``.

Python runs one core per process. On a machine with more than one core ``serve`` keeps
the HTTP API and the SMTP listeners in its own process and runs the worker as
``postroute worker`` beside it (same settings, same database), so that accepting and
delivering each get a core. This class starts that child, restarts it if it dies, wakes
it when mail was queued (SIGUSR1: a worker looks for due mail at once) and stops it with
SIGTERM (it finishes or releases what is in flight). The child stops by itself when
this process is gone (``SUPERVISOR_ENV``), so a killed ``serve`` leaves no orphan.

The child is started with ``subprocess.Popen`` (fork + exec), not the event loop's
subprocess support: uvloop's (libuv's) resets every signal disposition in the child,
which would let an early SIGUSR1 kill it before it has installed its handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

log = logging.getLogger("postroute")
RESTART_DELAY = 1.0
CHECK_EVERY = 0.5  # seconds between looks at whether the child is still running
SUPERVISOR_ENV = "POSTROUTE_SUPERVISOR_PID"
EXIT_DISK_FAILED = 74  # EX_IOERR: a process stopped because an fsync of the database failed
WAKE_EVERY = 0.02  # at most one wake-up signal per this many seconds


class WorkerProcess:
    def __init__(
        self, stop_grace: float, on_disk_failure: Callable[[], None] | None = None
    ) -> None:
        self._grace = stop_grace
        self._on_disk_failure = on_disk_failure
        self._child: subprocess.Popen[bytes] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_wake = 0.0

    async def start(self) -> None:
        # Ignored signals stay ignored across exec: a wake-up that arrives before the child
        # has installed its handler is lost (it polls anyway) instead of killing it.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        self._spawn()
        self._task = asyncio.create_task(self._supervise(), name="worker-process")

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def wake(self) -> None:
        now = time.monotonic()
        if self._child is None or self._child.returncode is not None:
            return
        if now - self._last_wake >= WAKE_EVERY:
            self._last_wake = now
            with contextlib.suppress(ProcessLookupError):
                self._child.send_signal(signal.SIGUSR1)

    def stopping(self) -> None:
        """Shutdown has begun: a child that exits now is not restarted."""
        self._stopping = True

    async def stop(self) -> int | None:
        """SIGTERM to the child; killed if it has not exited ``stop_grace`` + 5 s later.
        Its exit status, or None when it was not running (died, or not yet restarted)."""
        self._stopping = True
        child = self._child
        running = child is not None and child.poll() is None
        if child is not None and running:
            with contextlib.suppress(ProcessLookupError):
                child.terminate()
            try:
                await asyncio.wait_for(_exited(child), self._grace + 5)
            except TimeoutError:
                log.warning("worker process %s did not stop in time: killed", child.pid)
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                await _exited(child)
        if child is not None and child.returncode == EXIT_DISK_FAILED and self._on_disk_failure:
            self._on_disk_failure()  # it failed an fsync while stopping: so does serve
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return child.returncode if child is not None and running else None

    def _spawn(self) -> None:
        env = {**os.environ, SUPERVISOR_ENV: str(os.getpid())}
        # Its own session: a Ctrl-C in the terminal reaches serve only, which stops the
        # child in order (after the listeners); serve gone, the child stops by itself.
        self._child = subprocess.Popen(
            [sys.executable, "-m", "postroute", "worker"], env=env, start_new_session=True
        )
        log.info("delivery worker process %s started", self._child.pid)

    async def _supervise(self) -> None:
        while True:
            assert self._child is not None
            code = await _exited(self._child)
            if self._stopping:
                return
            if code == EXIT_DISK_FAILED and self._on_disk_failure is not None:
                # not restarted beside a process that keeps the database open: SQLite
                # recovers the WAL only when its first connection opens it
                log.critical(
                    "worker process %s stopped: an fsync of the database failed", self._child.pid
                )
                self._on_disk_failure()
                return
            log.error("worker process exited with %s; restarting in %.0f s", code, RESTART_DELAY)
            await asyncio.sleep(RESTART_DELAY)
            if self._stopping:
                return
            self._spawn()


async def _exited(child: subprocess.Popen[bytes]) -> int:
    while (code := child.poll()) is None:  # noqa: ASYNC110 - no event for a child's exit
        await asyncio.sleep(CHECK_EVERY)
    return code


async def watch_supervisor(stop: asyncio.Event) -> None:
    """In a worker started by ``serve``: set ``stop`` once that process is gone."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor:
        return
    while os.getppid() == int(supervisor):  # noqa: ASYNC110 - no event for a parent's exit
        await asyncio.sleep(CHECK_EVERY)
    log.warning("serve process %s is gone: stopping", supervisor)
    stop.set()
