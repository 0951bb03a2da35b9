"""The local journal of hits: append-only files, group-fsynced, drained into the database.

A request appends its line and waits for the fsync that covers it: lines that arrive
while one fsync runs go to disk together in the next one (no timer, so an idle journal
answers after one fsync and a busy one writes large batches). Nothing here reads or
writes the database.

Files are *segments*, ``<dir>/<time>-<pid>-<n>.jsonl``. The process that writes one
holds an exclusive ``flock`` on it from its creation (made under a ``.tmp`` name, locked,
then renamed) until it has been drained and unlinked; the recorder takes the segment
being written with :meth:`Journal.seal` and the next line starts a new one. A segment
that nobody holds belongs to a process that died: :func:`claim_leftovers` takes it,
and two processes never drain one segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from postroute.kit.clock import Clock

log = logging.getLogger("postroute.tracking")

SUFFIX = ".jsonl"
_STAGING = ".tmp"
_READ_BYTES = 1 << 20


@dataclass
class Segment:
    """A journal file this process holds (its ``flock``) until :meth:`remove` or
    :meth:`release`. ``horizon``: every hit made before it is in this segment or an
    earlier one; None for a segment complete in itself (a dead process's)."""

    path: Path
    fd: int
    horizon: datetime | None

    def remove(self) -> None:
        """Drained: unlink, then let go of the lock."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.release()

    def release(self) -> None:
        """Let go of it, file left in place (a later drain takes it)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """Appends lines to this process's current segment; ``append`` resolves once the
    line is on disk."""

    def __init__(self, directory: Path, clock: Clock) -> None:
        self.directory = directory
        self._clock = clock
        self._io = ThreadPoolExecutor(1, thread_name_prefix="postroute-tracking-journal")
        self._lock = asyncio.Lock()  # one write or seal at a time
        self._buffer: list[bytes] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._current: Segment | None = None
        self._lines = 0  # in the current segment
        self._made = 0  # segments made by this process

    def append(self, line: bytes) -> asyncio.Future[None]:
        """Queue ``line`` (synchronously: lines keep the order of the calls); the future
        resolves when it is on disk, or raises the ``OSError`` that prevented it."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._buffer.append(line)
        self._waiters.append(done)
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush(), name="tracking-journal")
        return done

    async def _flush(self) -> None:
        try:
            while self._buffer:
                async with self._lock:
                    data, waiters = b"".join(self._buffer), self._waiters
                    count, taken_at = len(self._buffer), self._clock.now()
                    self._buffer, self._waiters = [], []
                    loop = asyncio.get_running_loop()
                    try:
                        await loop.run_in_executor(self._io, self._write, data)
                    except (OSError, RuntimeError) as exc:  # RuntimeError: closed
                        self._broken(exc)
                        for waiter in waiters:
                            if not waiter.done():
                                waiter.set_exception(exc)
                        continue
                    self._lines += count
                    assert self._current is not None
                    self._current.horizon = taken_at
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
        finally:
            self._flusher = None

    def _broken(self, exc: Exception) -> None:
        """A write or fsync failed: what reached the file is unknown, so the segment is
        left for a later drain (released, not removed) and the next line starts anew."""
        log.error("tracking journal: writing %s failed: %s", self.directory, exc)
        if self._current is not None:
            self._current.release()
        self._current, self._lines = None, 0

    def _write(self, data: bytes) -> None:
        """In the journal's thread: append ``data`` and fdatasync (the size included)."""
        if self._current is None:
            self._current = self._create()
        fd = self._current.fd
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fdatasync(fd)

    def _create(self) -> Segment:
        # private, as the data dir is (hits hold readers' addresses and User-Agents)
        self.directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.mkdir(mode=0o700, exist_ok=True)
        self._made += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._made}"
        staging = self.directory / (name + _STAGING)
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path = staging.with_suffix(SUFFIX)
            os.rename(staging, path)
            _fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            raise
        return Segment(path, fd, self._clock.now())

    async def seal(self) -> Segment | None:
        """The segment being written, once what was written to it is on disk (None when
        nothing was); the next line starts a new one."""
        async with self._lock:
            segment, lines = self._current, self._lines
            self._current, self._lines = None, 0
        if segment is not None and not lines:  # made, but its first write failed
            segment.remove()
            return None
        return segment

    def pending(self) -> int:
        """Lines appended and not yet on disk."""
        return len(self._buffer)

    async def close(self) -> None:
        """Wait for the lines appended so far, then stop the journal's thread."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)
        self._io.shutdown(wait=True)


def claim_leftovers(directory: Path, limit: int) -> list[Segment]:
    """Up to ``limit`` segments that no live process holds, oldest first, each locked by
    this process now (staging files left by a crash are removed)."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    claimed: list[Segment] = []
    for name in names:
        if len(claimed) >= limit:
            break
        path = directory / name
        if name.endswith(_STAGING):
            if (fd := _lock(path)) is not None:
                path.unlink(missing_ok=True)  # never renamed: holds nothing
                os.close(fd)
        elif name.endswith(SUFFIX) and (fd := _lock(path)) is not None:
            claimed.append(Segment(path, fd, None))
    return claimed


def _lock(path: Path) -> int | None:
    """An fd holding ``path``'s exclusive lock; None when another process holds it, or
    the file went away (drained by its owner meanwhile)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino == os.stat(path).st_ino:
            return fd
    except (BlockingIOError, FileNotFoundError):
        pass
    os.close(fd)
    return None


def read_lines(path: Path, offset: int, limit: int) -> tuple[list[bytes], int, bool]:
    """Up to ``limit`` complete lines of ``path`` from byte ``offset``: the lines, the
    offset after them, and whether the file ends there. A last line without its newline
    (a write cut short by a crash, never acknowledged) is not a line."""
    lines: list[bytes] = []
    with path.open("rb") as file:
        file.seek(offset)
        while len(lines) < limit:
            chunk = file.readline(_READ_BYTES)
            if not chunk.endswith(b"\n"):
                if len(chunk) == _READ_BYTES:  # a line too long to be ours: skip it
                    offset += len(chunk)
                    continue
                return lines, offset, True
            lines.append(chunk)
            offset += len(chunk)
        at_end = file.read(1) == b""
    return lines, offset, at_end
