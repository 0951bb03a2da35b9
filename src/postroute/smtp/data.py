"""Reading the DATA of one transaction in large chunks rather than line by line.

aiosmtpd reads DATA one line at a time (a Python call, a debug log call and a list
append per line), which costs event-loop time in proportion to the number of lines.
Here the stream is read up to each ``.\\r\\n``: a whole base64 attachment comes in a few
calls, since its lines never end in a dot. Only text lines ending in a full stop add
a call. Nothing past the end-of-data line is consumed, so pipelined commands that
follow it stay in the stream for the command loop.
"""

from __future__ import annotations

import asyncio

DOT_LINE = b".\r\n"
END = b"\r\n.\r\n"
STUFFED = b"\r\n."  # a line that starts with a dot (the dot added by dot-stuffing)


async def read_message(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    """The message up to the end-of-data line, dot-unstuffed (RFC 5321 4.5.2); None
    when it is longer than ``limit`` bytes (then read to its end and discarded). As RFC
    1870 4 says, the size counts neither the end-of-data line nor the dots added by
    dot-stuffing.

    The idle timeout is the protocol's: it is pushed back whenever bytes arrive (a chunk
    here ends only at a line ending in a dot, so it may be the whole message).
    Raises ``asyncio.IncompleteReadError`` when the client goes away mid-message.
    """
    buf = bytearray()
    tail = b""  # the last bytes seen, once an over-size message is being discarded
    discarding = False
    stuffed = 0  # lines starting with a dot so far (at most one more than the dots added)
    edge = b"\r\n"  # the bytes before the chunk: the message starts a line
    while True:
        try:
            chunk = await reader.readuntil(DOT_LINE)
        except asyncio.LimitOverrunError as exc:  # no ".\r\n" in a full buffer
            chunk = await reader.read(exc.consumed)
        if discarding:
            tail = (tail + chunk[-len(END) :])[-len(END) :]
            if tail == END:
                return None
            continue
        buf += chunk
        if buf == DOT_LINE or buf.endswith(END):
            break
        seen = edge + chunk
        stuffed += seen.count(STUFFED)
        edge = seen[-2:]
        if len(buf) - stuffed > limit + len(DOT_LINE):  # too long even once unstuffed
            discarding, tail = True, bytes(buf[-len(END) :])
            buf = bytearray()
    del buf[-len(DOT_LINE) :]  # the end-of-data line; the CRLF before it is the message's
    data = bytes(buf)
    if data.startswith(b"."):
        data = data[1:]
    data = data.replace(STUFFED, b"\r\n")
    return None if len(data) > limit else data
