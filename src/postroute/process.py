"""Compose the long-running parts of one process and stop them cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn

from postroute import migrate
from postroute.api.app import create_app
from postroute.api.runtime import Runtime
from postroute.config import Settings, parse_bind
from postroute.delivery.worker import Worker
from postroute.smtp.listeners import SmtpServer
from postroute.worker_process import EXIT_DISK_FAILED, WorkerProcess, watch_supervisor

log = logging.getLogger("postroute")
STOP_GRACE = 30.0  # seconds a stopping worker gives the messages in flight


@dataclass(frozen=True)
class Parts:
    api: bool = True
    worker: bool = True
    smtp: bool = False
    worker_process: bool = False  # the worker as a child process (serve, several cores)


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


async def serve_forever(settings: Settings, parts: Parts) -> int:
    """Run ``parts`` until SIGTERM/SIGINT (exit status 0), or until the SQLite WAL could
    not be synced to disk, here or in the worker child (``EXIT_DISK_FAILED``: a
    supervisor restarts the process, and SQLite recovers the WAL on opening it)."""
    setup_logging(settings)
    runtime = Runtime.build(settings)
    if settings.is_sqlite:
        await migrate.upgrade(runtime.engine)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    status = 0

    def disk_failed() -> None:
        nonlocal status
        if not status:
            log.critical("stopping: an fsync of the database failed (see above)")
        status = EXIT_DISK_FAILED
        stop.set()

    if runtime.writer is not None:
        runtime.writer.on_failure = disk_failed

    tasks: list[asyncio.Task[None]] = []
    worker: Worker | None = None
    child: WorkerProcess | None = None
    server: _Server | None = None
    smtp: SmtpServer | None = None
    if parts.smtp:  # first: a port in use stops the process before anything runs
        smtp = SmtpServer(runtime)
        await smtp.start()
    if parts.worker and parts.worker_process:
        child = WorkerProcess(stop_grace=STOP_GRACE, on_disk_failure=disk_failed)
        await child.start()
        runtime.wake_worker = child.wake
    elif parts.worker:
        worker = Worker(runtime)
        runtime.wake_worker = worker.wake
        loop.add_signal_handler(signal.SIGUSR1, worker.wake)  # e.g. from serve's API process
        tasks.append(asyncio.create_task(worker.run(), name="worker"))
        log.info("delivery worker %s started", worker.owner)
    if parts.api:
        host, port = parse_bind(settings.http_bind, 8000)
        config = uvicorn.Config(
            create_app(runtime), host=host, port=port, log_level="warning", lifespan="on"
        )
        server = _Server(config)
        tasks.append(asyncio.create_task(server.serve(), name="http"))
        log.info("HTTP API on http://%s:%s", host, port)

    watcher = asyncio.create_task(watch_supervisor(stop), name="supervisor")
    await stop.wait()
    watcher.cancel()
    log.info("stopping")
    try:
        if child is not None:
            child.stopping()
        if smtp is not None:  # first: no new mail while the rest stops
            await smtp.stop()
        if server is not None:
            server.should_exit = True
        if worker is not None:
            await worker.stop(STOP_GRACE)
    except Exception:
        if not status:
            raise
        log.exception("stopping after the failed fsync")  # the exit status stays 74
    finally:  # whatever failed above: the child, the tasks and the database are closed
        if child is not None:
            await child.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runtime.close()
    log.info("stopped")
    return status
