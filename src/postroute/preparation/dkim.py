"""DKIM signatures (RFC 6376; Ed25519 by RFC 8463), relaxed/relaxed, made with
``cryptography`` (OpenSSL): a fraction of a millisecond for RSA-2048, where pure-Python
RSA takes several.

What is the same for every recipient of a submission is computed once per content and
kept (:class:`~postroute.preparation.cache.Cache`): the body hash and the canonical form
of the content's header fields. Per recipient only the headers Postroute puts in front
(``Message-ID``...) are canonicalised, and the signature itself is made. A body that
differs per recipient (tracked links) is hashed per recipient: the caller gives no
content key then (its canonical form is made on the whole body at once, at C speed).

No ``t=`` tag: the signature of a message is the same whenever it is made, so
``GET /v1/messages/{id}/raw`` shows exactly the bytes that were relayed.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from postroute.preparation import mime
from postroute.preparation.cache import Cache

__all__ = ["SIGNED", "Cache", "DkimKey", "PrivateKey", "canonical_body", "sign"]

# Signed when present, in this order (From twice: a From added later breaks the signature).
SIGNED = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-unsubscribe",
    "list-unsubscribe-post",
)
_WSP = re.compile(rb"[ \t]+")
_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_FIELD_START = re.compile(rb"\r?\n(?![ \t])")
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class DkimKey:
    domain: str  # d=
    selector: str  # s=
    private: PrivateKey

    @property
    def algorithm(self) -> str:
        return (
            "ed25519-sha256"
            if isinstance(self.private, ed25519.Ed25519PrivateKey)
            else "rsa-sha256"
        )


@dataclass(frozen=True)
class _Fields:
    """A content's header fields in canonical form (name -> lines, in order), and the
    header block they were read from."""

    block: bytes
    by_name: dict[str, list[bytes]]


def sign(
    keys: Sequence[DkimKey],
    head: bytes,
    content: bytes,
    *,
    content_key: str | None = None,
    cache: Cache | None = None,
    own_body: bool = False,
) -> bytes:
    """The ``DKIM-Signature`` header lines (one per key, CRLF ends) for the message
    ``head + content``: ``head`` are header lines put in front of ``content``.
    ``own_body``: this recipient's body is not the content's (tracked links): its hash
    is made for it alone; the header fields are kept per content all the same (when
    their bytes are those kept)."""
    if not keys:
        return b""
    cache = cache or Cache()
    head_end, body_start = mime.split(content, 0, len(content))
    block = content[:head_end]
    shared = cache.get("dkim-head", content_key, lambda: _read_fields(block))
    if shared.block != block:
        shared = _read_fields(block)
    if own_body:
        body_hash = _body_hash(content[body_start:])
    else:
        body_hash = cache.get("dkim-body", content_key, lambda: _body_hash(content[body_start:]))
    fields: dict[str, list[bytes]] = {}
    for name, line in _canonical_fields(head):
        fields.setdefault(name, []).append(line)
    for name, lines in shared.by_name.items():
        fields.setdefault(name, []).extend(lines)
    names: list[str] = []
    signed: list[bytes] = []
    for name in SIGNED:
        found = list(fields.get(name, ()))
        # bottom-up: the last instance first (RFC 6376 5.4.2); here one is the usual case
        while found:
            names.append(name)
            signed.append(found.pop())
    names.append("from")  # over-signed: a second From cannot be added unnoticed
    out = []
    for key in keys:
        tags = (
            f"v=1; a={key.algorithm}; c=relaxed/relaxed; d={key.domain}; s={key.selector}; "
            f"h={':'.join(names)}; bh={body_hash}; b="
        )
        data = b"".join(line + b"\r\n" for line in signed) + b"dkim-signature:" + tags.encode()
        b = base64.b64encode(_signature(key.private, data)).decode()
        out.append(_fold(tags, b))
    return "".join(out).encode("ascii")


def _signature(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(hashlib.sha256(data).digest())
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def _fold(tags: str, b: str) -> str:
    """The header as written: tags on lines of their own, ``b=`` in 72-character pieces
    (folding white space changes nothing in the relaxed canonical form)."""
    lines = ["DKIM-Signature: " + tags.replace("; h=", ";\r\n\th=").replace("; bh=", ";\r\n\tbh=")]
    pieces = [b[i : i + 72] for i in range(0, len(b), 72)] or [""]
    return lines[0] + "\r\n\t".join(pieces) + "\r\n"


def _read_fields(block: bytes) -> _Fields:
    fields: dict[str, list[bytes]] = {}
    for name, line in _canonical_fields(block):
        fields.setdefault(name, []).append(line)
    return _Fields(block, fields)


def _body_hash(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(canonical_body(body)).digest()).decode()


def _canonical_fields(head: bytes) -> list[tuple[str, bytes]]:
    """Each header field of ``head`` as (lower-case name, relaxed canonical line)."""
    out = []
    for field in _FIELD_START.split(head.strip(b"\r\n")):
        name, colon, value = field.partition(b":")
        if not colon:
            continue
        lower = name.strip().lower()
        unfolded = _FOLD.sub(b"", value)
        clean = _WSP.sub(b" ", unfolded.replace(b"\r", b"").replace(b"\n", b"")).strip(b" ")
        out.append((lower.decode("ascii", "replace"), lower + b":" + clean))
    return out


def canonical_body(body: bytes) -> bytes:
    """The relaxed canonical body (RFC 6376 3.4.4): white space runs as one space, none at
    line ends, no empty lines at the end, CRLF line ends. On the whole body at once (C
    speed: a body hashed per recipient costs little); line by line it is the same."""
    text = body.replace(b"\r\n", b"\n")
    if b"\t" in text or b"  " in text:  # else every run is one space already
        text = _WSP.sub(b" ", text)  # a run never spans a line break
    text = text.replace(b" \n", b"\n")  # the one space a line may end with now
    if text.endswith(b" "):
        text = text[:-1]
    text = text.rstrip(b"\n")
    return text.replace(b"\n", b"\r\n") + b"\r\n" if text else b""
