"""What a session needs of asyncio's machinery, whichever event loop runs it.

Production installs uvloop, whose transports have asyncio's methods but are no
subclasses of ``asyncio.Transport`` or ``asyncio.WriteTransport``: nothing here checks
a transport's class, a transport is used by its methods (:class:`Transport`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar, cast

T = TypeVar("T")

# After a goodbye the peer has this long at most to take what is still unsent (a client
# that never reads its replies), then the connection is aborted.
CLOSE_GRACE = 5.0


class Transport(Protocol):
    """What a session uses of a transport: asyncio's, uvloop's, or a TLS layer's."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def is_closing(self) -> bool: ...
    def get_write_buffer_size(self) -> int: ...


def open_transport(transport: asyncio.BaseTransport | None) -> Transport | None:
    """``transport`` while it is open (not closing), else None."""
    if transport is None or transport.is_closing():
        return None
    return cast(Transport, transport)


def hang_up(
    transport: asyncio.BaseTransport | None, loop: asyncio.AbstractEventLoop, grace: float
) -> None:
    """Close ``transport`` once what was written to it is sent; abort it if the peer has
    not taken that within ``grace`` seconds (a closing transport waits for its write
    buffer to drain: forever, with a peer that never reads)."""
    open_ = open_transport(transport)
    if open_ is None:
        return
    open_.close()
    if open_.get_write_buffer_size():
        loop.call_later(grace, open_.abort)


def abort(transport: asyncio.BaseTransport | None) -> None:
    """Drop the connection at once, whatever is unsent, also while it is closing."""
    if transport is not None:
        cast(Transport, transport).abort()


async def finish(call: Coroutine[Any, Any, T]) -> T:
    """``call``'s result; if the caller is cancelled meanwhile (aiosmtpd cancels a
    session's task when its client closes), ``call`` still runs to its end, on its own.
    A database call interrupted by a cancellation leaves its connection to be replaced,
    and with aiosqlite not always closed: a file descriptor and a thread lost each time.
    """
    task = asyncio.ensure_future(call)
    task.add_done_callback(retrieve)
    return await asyncio.shield(task)


def retrieve(task: asyncio.Future[Any]) -> None:
    """Read a finished task's exception, so that asyncio does not log it as never
    retrieved (its caller may be gone, or the exception is a reset connection)."""
    if not task.cancelled():
        task.exception()
