"""The header block of a raw message, as bytes: split into fields without losing a byte,
and the few values Postroute reads decoded with the standard ``email`` package."""

from __future__ import annotations

import functools
import re
from email import policy
from email.utils import getaddresses

_FOLD = re.compile(r"\r?\n(?=[ \t])")
_FIELD_START = re.compile(rb"\r\n(?![ \t])")
_CACHED_UP_TO = 256  # characters
_ADDR = r"[^<>\s\"(),;:\\@\[\]]+@[^<>\s\"(),;:\\@\[\]]+"
_ONE_MAILBOX = re.compile(
    rf'\s*(?:[^"<>,;:\\()@]*|"[^"\\]*")\s*<(?P<angle>{_ADDR})>\s*|\s*(?P<bare>{_ADDR})\s*'
)


def split(raw: bytes) -> tuple[list[bytes], bytes]:
    """The header fields (each with its continuation lines and CRLFs) and the rest: the
    blank line and the body. Joining them gives ``raw`` back byte for byte."""
    if not raw or raw.startswith(b"\r\n"):
        return [], raw
    end = raw.find(b"\r\n\r\n")
    head, rest = (raw, b"") if end < 0 else (raw[: end + 2], raw[end + 2 :])
    starts = [0] + [m.end() for m in _FIELD_START.finditer(head) if m.end() < len(head)]
    return [head[a:b] for a, b in zip(starts, [*starts[1:], len(head)], strict=True)], rest


def name(field: bytes) -> str:
    """The field's name as written (``""`` for a line without a colon)."""
    label, colon, _ = field.partition(b":")
    return label.strip().decode("ascii", "replace") if colon else ""


def value(field: bytes) -> str:
    """The unfolded value as sent (raw UTF-8 allowed, RFC 6532)."""
    return _FOLD.sub("", field.partition(b":")[2].decode("utf-8", "replace")).strip()


def text(unstructured: str) -> str:
    """An unstructured value with its RFC 2047 encoded words decoded."""
    if "=?" not in unstructured:
        return unstructured
    return str(policy.default.header_factory("X-Text", unstructured))


def addresses(header_value: str) -> tuple[str, ...]:
    """The addr-specs of an address header; the one-mailbox forms without a full parse.
    Short values (the same From over and over) are remembered."""
    if len(header_value) <= _CACHED_UP_TO:
        return _addresses(header_value)
    return _addresses.__wrapped__(header_value)


@functools.lru_cache(maxsize=4096)
def _addresses(header_value: str) -> tuple[str, ...]:
    simple = _ONE_MAILBOX.fullmatch(header_value)
    if simple is not None:
        return (simple["angle"] or simple["bare"],)
    return tuple(address for _, address in getaddresses([header_value]) if address)
