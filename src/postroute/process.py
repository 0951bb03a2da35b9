"""Compose the long-running parts of one process; stop them on SIGTERM/SIGINT.

Stopping begins with ``runtime.stopping`` (``/readyz`` answers 503 from then on). Two
tracks then run at once: the ingress (the SMTP listeners, then the HTTP server, which
answers meanwhile) and delivery (the worker, or the worker process); the database is
closed last. Each part's stop is a step of its own: one that fails is logged with the
part's name, the others still stop, and the exit status is ``EXIT_STOP_FAILED``. A stop
that hangs meets ``STOP_DEADLINE``: a thread logs which parts had not finished and ends
the process with that status, whatever is stuck, the event loop included (the signal
handler starts the deadline's clock itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType

import uvicorn

from postroute import migrate
from postroute.api.app import create_app
from postroute.config import Settings, parse_bind
from postroute.delivery.worker import Worker
from postroute.runtime import Runtime
from postroute.smtp.listeners import SmtpServer
from postroute.stopping import Stopping
from postroute.worker_process import EXIT_DISK_FAILED, WorkerProcess, watch_supervisor

log = logging.getLogger("postroute")
STOP_GRACE = 30.0  # seconds a stopping worker gives the messages in flight
HTTP_GRACE = 10  # seconds the HTTP server gives the requests in flight
# Every part has a bound of its own (the worker process is killed STOP_GRACE + 5 s after
# its SIGTERM); past this one, something is stuck: the process exits at once.
STOP_DEADLINE = STOP_GRACE + 30.0
EXIT_STOP_FAILED = 70  # EX_SOFTWARE: a part failed to stop, or stopping passed the deadline

# the parts, as the log names them
SMTP, HTTP, WORKER, WORKER_PROCESS = "SMTP listeners", "HTTP server", "worker", "worker process"
DATABASE = "database"


@dataclass(frozen=True)
class Parts:
    api: bool = True
    worker: bool = True
    smtp: bool = False
    # serve, several cores: the worker as this many child processes, each claiming on its
    # own (0: the worker runs in this process)
    worker_processes: int = 0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: this process decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


async def serve_forever(
    settings: Settings, parts: Parts, started: Callable[[], object] | None = None
) -> int:
    """Run ``parts`` until SIGTERM/SIGINT: exit status 0, or ``EXIT_STOP_FAILED`` when a
    part failed to stop. ``EXIT_DISK_FAILED`` when the SQLite WAL could not be synced to
    disk, here or in the worker child (a supervisor restarts the process, and SQLite
    recovers the WAL on opening it). A stop that passes ``STOP_DEADLINE`` never returns:
    the process exits. ``started`` is called once every part is up."""
    setup_logging(settings)
    process = _Process(Runtime.build(settings), parts)
    with process.signals():
        watcher = asyncio.create_task(watch_supervisor(process.requested), name="supervisor")
        try:
            if settings.is_sqlite:
                await migrate.upgrade(process.rt.engine)
            await process.start()
            if started is not None:
                await process.serving()
                started()
            await process.requested.wait()
        finally:  # also after a failed start (a port in use): what started is stopped
            watcher.cancel()
            await process.stop()
    return process.status


class _Process:
    """The parts one process runs: started in order, stopped in two tracks."""

    def __init__(self, runtime: Runtime, parts: Parts) -> None:
        self.rt = runtime
        self.parts = parts
        self.status = 0
        self.requested = asyncio.Event()  # a signal, a failed fsync, serve gone (the child)
        self.stopping = Stopping(STOP_DEADLINE, lambda: self.status or EXIT_STOP_FAILED)
        self.smtp: SmtpServer | None = None
        self.http: _Server | None = None
        self.http_task: asyncio.Task[None] | None = None
        self.worker: Worker | None = None
        self.worker_task: asyncio.Task[None] | None = None
        self.children: list[WorkerProcess] = []
        if runtime.writer is not None:
            runtime.writer.on_failure = self.disk_failed

    def disk_failed(self) -> None:
        if not self.status:
            log.critical("stopping: an fsync of the database failed (see above)")
        self.status = EXIT_DISK_FAILED
        self.requested.set()

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT request the stop and start the deadline's clock, from the
        signal handler itself: even a blocked event loop cannot keep the process alive."""
        loop = asyncio.get_running_loop()

        def handler(signum: int, frame: FrameType | None) -> None:
            self.stopping.arm()
            loop.call_soon_threadsafe(self.requested.set)

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        self.stopping.start()
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
            if self.worker is not None:
                loop.remove_signal_handler(signal.SIGUSR1)

    async def start(self) -> None:
        rt, parts = self.rt, self.parts
        if parts.smtp:  # first: a port in use stops the process before anything runs
            self.smtp = SmtpServer(rt)
            await self.smtp.start()
        if parts.worker and parts.worker_processes:
            for _ in range(parts.worker_processes):
                child = WorkerProcess(stop_grace=STOP_GRACE, on_disk_failure=self.disk_failed)
                await child.start()
                self.children.append(child)
            rt.wake_worker = self._wake_children
        elif parts.worker:
            self.worker = worker = Worker(rt)
            rt.wake_worker = worker.wake
            loop = asyncio.get_running_loop()  # SIGUSR1: e.g. from serve's API process
            loop.add_signal_handler(signal.SIGUSR1, worker.wake)
            self.worker_task = asyncio.create_task(worker.run(), name="worker")
            log.info("delivery worker %s started", worker.owner)
        if parts.api:
            host, port = parse_bind(rt.settings.http_bind, 8000)
            config = uvicorn.Config(
                create_app(rt),
                host,
                port,
                lifespan="on",
                log_level="warning",
                proxy_headers=True,
                forwarded_allow_ips=rt.settings.trusted_proxies,
            )
            config.timeout_graceful_shutdown = HTTP_GRACE  # then requests in flight are cancelled
            self.http = _Server(config)
            self.http_task = asyncio.create_task(self.http.serve(), name="http")
            log.info("HTTP API on http://%s:%s", host, port)

    async def serving(self) -> None:
        """Return once the HTTP server (if any) serves, or has given up (a port in use)."""
        while self.http is not None and not self.http.started:
            if self.http_task is None or self.http_task.done():
                return
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.rt.stopping = True  # before anything stops: /readyz answers 503 at once
        self.stopping.arm()
        log.info("stopping")
        for child in self.children:
            child.stopping()  # a child that exits now is not restarted
        children = self.children or None
        parts = {SMTP: self.smtp, HTTP: self.http, WORKER: self.worker, WORKER_PROCESS: children}
        self.stopping.plan([name for name, part in parts.items() if part is not None] + [DATABASE])
        try:
            await asyncio.gather(self._stop_ingress(), self._stop_delivery())
            await self.stopping.step(DATABASE, self.rt.close)
        finally:
            self.stopping.finish()
        if self.stopping.failed:
            self.status = self.status or EXIT_STOP_FAILED
            log.error("stopped; failed to stop: %s", ", ".join(self.stopping.failed))
        else:
            log.info("stopped")

    async def _stop_ingress(self) -> None:
        """SMTP first (a message being stored still gets its reply), then HTTP, which
        answers meanwhile (/readyz: 503)."""
        if self.smtp is not None:
            await self.stopping.step(SMTP, self.smtp.stop)
        if self.http is not None:
            await self.stopping.step(HTTP, self._stop_http)

    async def _stop_delivery(self) -> None:
        if self.worker is not None:
            await self.stopping.step(WORKER, self._stop_worker)
        if self.children:
            await self.stopping.step(WORKER_PROCESS, self._stop_children)

    async def _stop_http(self) -> None:
        assert self.http is not None and self.http_task is not None
        self.http.should_exit = True
        await self.http_task

    async def _stop_worker(self) -> None:
        assert self.worker is not None and self.worker_task is not None
        await self.worker.stop(STOP_GRACE)
        await self.worker_task

    def _wake_children(self) -> None:
        for child in self.children:
            child.wake()

    async def _stop_children(self) -> str | None:
        """All at once: each finishes or releases what it holds."""
        codes = await asyncio.gather(*(child.stop() for child in self.children))
        bad = [c for c in codes if c not in (None, 0, -signal.SIGTERM, EXIT_DISK_FAILED)]
        if bad:  # 74: the status is set already
            return f"it exited with status {', '.join(map(str, bad))}"
        return None
