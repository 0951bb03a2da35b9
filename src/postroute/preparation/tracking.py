"""Open and click tracking of the HTML parts of a message, and where the tracked URLs
point (:class:`Links`). Pure, no I/O.

Once per content (:class:`~postroute.preparation.cache.Cache`, kind ``"links"``), each
HTML part that is not an attachment is decoded (transfer encoding, charset), its links
are found (:mod:`.links`) and its text is cut at every link's ``href`` value and where
the open pixel goes; the pieces are kept encoded in the part's charset. Per recipient
only tokens are made: the pieces and the new values are joined, the part is encoded
again with its own transfer encoding (a 7bit/8bit part whose line grew past 998 octets
becomes quoted-printable) and put back in place of the old one. Every other byte of the
message stays as it was: the text parts, the attachments, the boundaries, the headers
and, inside the HTML, everything but the ``href`` values of tracked links (comments,
entities, white space). A part that cannot be read the same way twice (an unknown
charset or transfer encoding, a charset that does not give its bytes back, parsers that
see different links) is sent as it is, untracked, and logged at debug level.
"""

from __future__ import annotations

import codecs
import html
import logging
import string
from dataclasses import dataclass

from postroute.preparation import links as html_links
from postroute.preparation import mime, transfer
from postroute.preparation.cache import Cache
from postroute.preparation.tokens import Tokens

log = logging.getLogger("postroute.preparation")

PIXEL_STYLE = "display:block;width:1px;height:1px;border:0;margin:0;padding:0"
_PRINTABLE = "".join(c for c in string.printable if c not in "\t\n\r\x0b\x0c")
MAX_LINKS = 0x10000  # a click token holds the index in 16 bits; more stay as they are


@dataclass(frozen=True, slots=True)
class Links:
    """Where a message's tracked URLs point: ``base`` (scheme and host, no trailing
    slash: the From domain's verified tracking host, else the public URL), the tokens,
    and the domain of the unsubscribe mailto (a verified return path, else None)."""

    base: str
    tokens: Tokens
    mailto_domain: str | None = None

    def __post_init__(self) -> None:
        if not self.base.isascii() or any(c in self.base for c in ' "<>\\^`{|}'):
            raise ValueError(f"a tracking URL base must be an ASCII URL, not {self.base!r}")


@dataclass(frozen=True, slots=True)
class _Slot:
    index: int | None  # the link's index among the message's tracked links; None: pixel
    url: str
    raw: bytes  # what stands there when it is not tracked
    quote: bytes  # put around a new value that replaces an unquoted one


@dataclass(frozen=True, slots=True)
class _Part:
    leaf: mime.Leaf
    pieces: tuple[bytes, ...]  # the part's decoded bytes around the slots
    slots: tuple[_Slot, ...]


def template(content: bytes) -> tuple[_Part, ...]:
    """The HTML parts of ``content`` cut at their links and pixel place."""
    parts = []
    count = 0
    for leaf in mime.leaves(content):
        if leaf.content_type != "text/html" or leaf.attachment:
            continue
        try:
            part = _part(content, leaf, count)
        except Exception as exc:  # untrusted HTML: a part that cannot be read stays as is
            log.debug("an HTML part is left untracked: %s", exc)
            continue
        parts.append(part)
        count += sum(1 for s in part.slots if s.index is not None)
    return tuple(parts)


def _part(content: bytes, leaf: mime.Leaf, first: int) -> _Part:
    data = transfer.decode(content[leaf.body[0] : leaf.body[1]], leaf.encoding)
    charset = codecs.lookup(leaf.charset or "utf-8").name
    if charset == "ascii":  # often UTF-8 in fact; the same where it is ASCII
        charset = "utf-8"
    if _PRINTABLE.encode(charset) != _PRINTABLE.encode("ascii"):
        raise ValueError(f"charset {charset} does not write ASCII as ASCII")
    text = data.decode(charset)
    found = html_links.find(text)
    cuts: list[tuple[int, int, _Slot]] = []
    for n, link in enumerate(found.links[: max(0, MAX_LINKS - first)]):
        raw = text[link.start : link.end].encode(charset)
        slot = _Slot(first + n, link.url, raw, b"" if link.quoted else b'"')
        cuts.append((link.start, link.end, slot))
    cuts.append((found.body_end, found.body_end, _Slot(None, "", b"", b"")))
    cuts.sort(key=lambda cut: cut[0])
    pieces, at = [], 0
    for start, end, _ in cuts:
        pieces.append(text[at:start].encode(charset))
        at = end
    pieces.append(text[at:].encode(charset))
    slots = tuple(slot for _, _, slot in cuts)
    if _join(pieces, [s.raw for s in slots]) != data:
        raise ValueError(f"charset {charset} does not give the part's bytes back in pieces")
    return _Part(leaf, tuple(pieces), slots)


def _join(pieces: list[bytes] | tuple[bytes, ...], values: list[bytes]) -> bytes:
    out = [pieces[0]]
    for value, piece in zip(values, pieces[1:], strict=True):
        out.append(value)
        out.append(piece)
    return b"".join(out)


def track(
    content: bytes,
    content_id: str | None,
    message_id: str,
    links: Links,
    *,
    opens: bool,
    clicks: bool,
    cache: Cache | None = None,
) -> bytes | None:
    """``content`` with its HTML parts tracked for ``message_id``; None when nothing
    changes (no HTML part, or no link and no open tracking)."""
    if not (opens or clicks):
        return None
    parts = (cache or Cache()).get("links", content_id, lambda: template(content))
    base = html.escape(links.base, quote=True)
    out: list[bytes] = []
    at = 0
    for part in parts:
        values = [_value(s, base, message_id, links.tokens, opens, clicks) for s in part.slots]
        if all(v is None for v in values):
            continue
        filled = [s.raw if v is None else v for s, v in zip(part.slots, values, strict=True)]
        data = _join(part.pieces, filled)
        leaf = part.leaf
        body = content[leaf.body[0] : leaf.body[1]]
        encoded = transfer.encode(
            data, leaf.encoding, leaf.linesep, line_break_after=body.endswith(b"\n")
        )
        if encoded is None:  # a line too long for 7bit/8bit: quoted-printable instead
            field = leaf.encoding_field or (leaf.head[1], leaf.head[1])
            out += [content[at : field[0]], transfer.QP_FIELD + leaf.linesep]
            at = field[1]
            encoded = transfer.quoted_printable(data)
        out += [content[at : leaf.body[0]], encoded]
        at = leaf.body[1]
    if not out:
        return None
    out.append(content[at:])
    return b"".join(out)


def _value(
    slot: _Slot, base: str, message_id: str, tokens: Tokens, opens: bool, clicks: bool
) -> bytes | None:
    """What goes in the slot's place for this message (None: what was there)."""
    if slot.index is None:
        if not opens:
            return None
        src = f"{base}/t/o/{tokens.open_token(message_id)}"
        pixel = f'<img src="{src}" width="1" height="1" alt="" style="{PIXEL_STYLE}" />'
        return pixel.encode("ascii")
    if not clicks:
        return None
    url = f"{base}/t/c/{tokens.click_token(message_id, slot.index, slot.url)}"
    return slot.quote + url.encode("ascii") + slot.quote
