"""Header lines put in front of a message without touching the rest of it.

A value is written verbatim when it is ASCII and the line fits in 998 octets (a long
token such as a List-Unsubscribe URL must not be folded into encoded-words), else as
RFC 2047 encoded-words (``email.header.Header``, which keeps every space inside the
encoded text: the policy-based folding of Python 3.11 loses or adds spaces between
encoded-words, CPython gh-144156).
"""

from __future__ import annotations

from collections.abc import Iterable
from email.header import Header

from postroute.kit.text import CONTROL, HEADER_NAME

MAX_LINE = 998  # RFC 5322 2.1.1, octets without the CRLF
CRLF = "\r\n"


def header_line(name: str, value: str, linesep: str = CRLF) -> str:
    """``Name: value`` and its line break: verbatim when ASCII and short enough, else
    encoded-words."""
    if value.isascii() and len(name) + 2 + len(value) <= MAX_LINE:
        return f"{name}: {value}{linesep}"
    encoded = Header(value, "utf-8", header_name=name).encode(linesep=linesep)
    return f"{name}: {encoded}{linesep}"


def line_ending(content: bytes) -> str:
    """The message's line ending: LF when its first line ends in a bare LF, else CRLF."""
    first_break = content.find(b"\n")
    return "\n" if first_break >= 0 and not content[:first_break].endswith(b"\r") else CRLF


def with_headers(content: bytes, headers: Iterable[tuple[str, str]]) -> bytes:
    """``headers`` encoded and put in front of ``content`` (a whole message: headers,
    blank line, body), which is neither parsed nor changed; the new lines use its line
    ending. Raises ValueError for an invalid header name, or a value with a line break or
    another control character but tab (they would start a header of their own)."""
    return header_block(headers, line_ending(content)) + content


def header_block(headers: Iterable[tuple[str, str]], linesep: str = CRLF) -> bytes:
    """The lines of ``headers`` (see :func:`with_headers`)."""
    lines = []
    for name, value in headers:
        if not HEADER_NAME.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        if CONTROL.search(value):
            raise ValueError(f"the {name} header value contains a control character")
        lines.append(header_line(name, value, linesep))
    return "".join(lines).encode("ascii")
