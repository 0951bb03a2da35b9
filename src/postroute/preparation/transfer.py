"""A part's body through its Content-Transfer-Encoding and back: base64 in lines of 76,
quoted-printable in lines of at most 76 (``binascii``, C speed), 7bit/8bit/binary as
they are. A 7bit or 8bit body whose longest line no longer fits in 998 octets (RFC 5322
2.1.1; a long URL may do that) must become quoted-printable: :func:`encode` says so."""

from __future__ import annotations

import base64
import binascii

IDENTITY = frozenset({"7bit", "8bit", "binary"})
BASE64 = "base64"
QP = "quoted-printable"
MAX_LINE = 998
QP_FIELD = b"Content-Transfer-Encoding: quoted-printable"


class Undecodable(Exception):
    """A body its own encoding does not describe."""


def decode(body: bytes, encoding: str) -> bytes:
    if encoding in IDENTITY:
        return body
    if encoding == QP:
        return binascii.a2b_qp(body)
    if encoding == BASE64:
        try:  # line breaks and spaces aside, nothing but base64 (no lenient skipping)
            return binascii.a2b_base64(body.translate(None, b" \t\r\n"), strict_mode=True)
        except binascii.Error as exc:
            raise Undecodable(f"base64: {exc}") from None
    raise Undecodable(f"unknown transfer encoding {encoding!r}")


def encode(data: bytes, encoding: str, linesep: bytes, *, line_break_after: bool) -> bytes | None:
    """``data`` in ``encoding`` (``line_break_after``: whether a base64 body ends with a
    line break, as the original did); None when an identity encoding can no longer carry
    it (a line over 998 octets): the caller writes it as quoted-printable instead."""
    if encoding in IDENTITY:
        longest = max(len(line) for line in data.split(b"\n"))
        return data if longest <= MAX_LINE + 1 else None  # + 1: the CR of a CRLF
    if encoding == QP:
        return quoted_printable(data)
    text = base64.encodebytes(data)  # lines of 76 and "\n" after each
    if linesep != b"\n":
        text = text.replace(b"\n", linesep)
    return text if line_break_after or not text else text[: -len(linesep)]


def quoted_printable(data: bytes) -> bytes:
    """Quoted-printable text: lines of at most 76, the line breaks of ``data`` kept."""
    return binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
