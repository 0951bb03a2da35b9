"""Where a message's MIME parts sit in its bytes: their header blocks and bodies as
offsets, so that one part can be replaced and every other byte kept (boundaries,
preamble, the other parts, header order).

Multiparts are followed by their boundaries (RFC 2046 5.1.1: a delimiter is ``--`` and
the boundary at the start of a line, the line break before it belongs to it); an
encapsulated message (``message/rfc822``) is a leaf: what it holds is not this
message's own content. Header values are read with the standard ``email`` package.
"""

from __future__ import annotations

from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser

MAX_DEPTH = 20  # nested multiparts followed; deeper ones are left whole
_PARSER = BytesHeaderParser(policy=policy.compat32)
_WANTED = frozenset({"content-type", "content-disposition", "content-transfer-encoding"})


@dataclass(frozen=True, slots=True)
class Leaf:
    """A part that is not a multipart."""

    head: tuple[int, int]  # its header block (the fields with their line ends)
    body: tuple[int, int]  # its body, without the line break before the next delimiter
    content_type: str  # lower case, as ``email`` reads it (text/plain by default)
    charset: str | None
    encoding: str  # Content-Transfer-Encoding, lower case; "7bit" when none
    encoding_field: tuple[int, int] | None  # where that header field is, when present
    attachment: bool  # Content-Disposition: attachment
    linesep: bytes


def leaves(content: bytes) -> list[Leaf]:
    """The leaf parts of ``content`` (a whole message), in order."""
    found: list[Leaf] = []
    _entity(content, 0, len(content), "text/plain", 0, found)
    return found


def header_names(content: bytes) -> set[str]:
    """The lower-case names of the message's own header fields."""
    head_end, _ = split(content, 0, len(content))
    return {name for name, _, _ in _fields(content, 0, head_end)}


def split(content: bytes, start: int, end: int) -> tuple[int, int]:
    """(end of the header block, with its last field's line end; start of the body) of
    the entity at ``start``: at the first blank line, CRLF or LF, whichever comes first."""
    for blank in (b"\r\n", b"\n"):
        if content.startswith(blank, start):
            return start, start + len(blank)  # no header fields
    candidates = [
        (i + 1, i + 1 + len(blank))
        for blank in (b"\r\n", b"\n")
        if (i := content.find(b"\n" + blank, start, end)) >= 0
    ]
    return min(candidates) if candidates else (end, end)


def _fields(content: bytes, start: int, end: int) -> list[tuple[str, int, int]]:
    """(lower-case name, start, end) of each header field between ``start`` and ``end``."""
    out: list[tuple[str, int, int]] = []
    pos = start
    while pos < end:
        stop = pos
        while True:  # the field's lines: the first and its continuations
            newline = content.find(b"\n", stop, end)
            stop = end if newline < 0 else newline + 1
            if stop >= end or content[stop : stop + 1] not in (b" ", b"\t"):
                break
        name, colon, _ = content[pos:stop].partition(b":")
        if colon:
            out.append((name.strip().lower().decode("ascii", "replace"), pos, stop))
        pos = stop
    return out


def _entity(
    content: bytes, start: int, end: int, default: str, depth: int, out: list[Leaf]
) -> None:
    head_end, body_start = split(content, start, end)
    fields = _fields(content, start, head_end)
    head = _read(content, fields, default) or _read_slowly(content[start:head_end], default)
    if head.ctype.startswith("multipart/") and head.boundary and depth < MAX_DEPTH:
        child = "message/rfc822" if head.ctype == "multipart/digest" else "text/plain"
        for a, b in _parts(content, body_start, end, head.boundary.encode("utf-8", "replace")):
            _entity(content, a, b, child, depth + 1, out)
        return
    cte = [(a, b) for name, a, b in fields if name == "content-transfer-encoding"]
    first_break = content.find(b"\n", start, max(head_end, body_start))
    crlf = first_break > 0 and content[first_break - 1 : first_break] == b"\r"
    out.append(
        Leaf(
            head=(start, head_end),
            body=(body_start, end),
            content_type=head.ctype,
            charset=head.charset,
            encoding=head.encoding if len(cte) <= 1 else "",  # two: which one? (untracked)
            encoding_field=cte[0] if cte else None,
            attachment=head.disposition == "attachment",
            linesep=b"\r\n" if crlf or first_break < 0 else b"\n",
        )
    )


@dataclass(frozen=True, slots=True)
class _Head:
    ctype: str
    boundary: str | None
    charset: str | None
    disposition: str | None
    encoding: str


def _read(content: bytes, fields: list[tuple[str, int, int]], default: str) -> _Head | None:
    """The part's MIME fields, read without the ``email`` package when they are plain
    (no comment, no RFC 2231 parameter, no quoted pair); None otherwise."""
    values: dict[str, str] = {}
    for name, a, b in fields:
        if name in _WANTED and name not in values:  # the first one, as ``email`` reads
            raw = content[a:b].partition(b":")[2].decode("ascii", "replace")
            values[name] = raw.replace("\r", "").replace("\n", "").strip()  # unfolded
    ctype = _params(values.get("content-type", default))
    disposition = _params(values.get("content-disposition", ""))
    if ctype is None or disposition is None:
        return None
    main, params = ctype
    boundary = params.get("boundary")
    charset = params.get("charset")
    return _Head(
        main if main.count("/") == 1 else "text/plain",
        boundary.rstrip() if boundary is not None else None,
        charset.lower() if charset else None,
        disposition[0] or None,
        values.get("content-transfer-encoding", "7bit").strip().lower(),
    )


def _params(value: str) -> tuple[str, dict[str, str]] | None:
    """``type; name=value; name="value"`` as (lower-case type, parameters)."""
    if "(" in value or "*" in value or "\\" in value or value.count('"') % 2:
        return None
    items = [""]
    for k, piece in enumerate(value.split('"')):
        if k % 2:  # inside quotes
            items[-1] += '"' + piece + '"'
        else:
            first, *rest = piece.split(";")
            items[-1] += first
            items.extend(rest)
    params: dict[str, str] = {}
    for item in items[1:]:
        name, equals, given = item.partition("=")
        given = given.strip()
        if len(given) >= 2 and given[0] == given[-1] == '"':
            given = given[1:-1]
        if equals:
            params.setdefault(name.strip().lower(), given)
    return items[0].strip().lower(), params


def _read_slowly(block: bytes, default: str) -> _Head:
    headers: Message = _PARSER.parsebytes(block)
    if "content-type" not in headers:
        headers.set_default_type(default)
    return _Head(
        headers.get_content_type(),
        headers.get_boundary(),
        headers.get_content_charset(),
        headers.get_content_disposition(),
        str(headers.get("content-transfer-encoding", "7bit")).strip().lower(),
    )


def _parts(content: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """The (start, end) of each body part between the delimiters of ``boundary``."""
    delimiter = b"--" + boundary
    found: list[tuple[int, int]] = []
    part_start: int | None = None
    pos = start
    while (at := content.find(delimiter, pos, end)) >= 0:
        pos = at + len(delimiter)
        if at != start and content[at - 1 : at] != b"\n":
            continue
        closing = content.startswith(b"--", pos, end)
        line_end = content.find(b"\n", pos, end)
        line_end = end if line_end < 0 else line_end + 1
        rest = content[pos + (2 if closing else 0) : line_end]
        if rest.strip(b" \t\r\n"):
            continue  # a longer boundary that begins the same, or text
        if part_start is not None:
            before = 2 if content[at - 2 : at] == b"\r\n" else 1
            found.append((part_start, max(part_start, at - before)))
        if closing:
            return found
        part_start = pos = line_end
    if part_start is not None:
        found.append((part_start, end))  # no closing delimiter: the part runs to the end
    return found
