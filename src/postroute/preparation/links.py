"""The links of an HTML text, found once per content, as the places of their ``href``
values in the text as written (not as a parser would write it again).

Two readers: selectolax (Lexbor, an HTML5 parser: what a browser sees, entities decoded
as in an attribute) says which ``<a href>`` there are and what each value means; a
tokenizer (:mod:`.tags`) says where each ``<a>`` start tag is, and a scan of that tag's
text (the HTML5 attribute states) where its ``href`` value is. The two must agree, link
by link (Lexbor may repeat a link that misnested markup made it clone), on every value,
decoded as the HTML5 tokenizer decodes attribute values; when they do not,
:class:`Disagree` is raised and the caller leaves the part as it is. Comments are
nobody's links: a link inside ``<!--[if mso]>...<![endif]-->`` stays as written, for
both readers.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from html.entities import html5
from urllib.parse import urljoin

from selectolax.lexbor import LexborHTMLParser

from postroute.preparation import tags as html_tags

NOTRACK = "data-pr-notrack"
_SPACE = " \t\n\r\f"
_URL_SPACE = str.maketrans("", "", "\t\n\r")  # what a URL parser removes inside a URL
_LONGEST_ENTITY = max(len(name) for name in html5)
_DECIMAL = frozenset("0123456789")
_HEX = frozenset("0123456789abcdefABCDEF")


class Disagree(Exception):
    """The parser and the tokenizer do not see the same links."""


@dataclass(frozen=True, slots=True)
class Link:
    start: int  # the href value's place in the text (inside its quotes)
    end: int
    url: str  # absolute, as a browser follows it (entities decoded, <base> applied)
    quoted: bool  # False: the value was written without quotes


@dataclass(frozen=True, slots=True)
class Found:
    links: list[Link]  # the http(s) links to track, in document order
    body_end: int  # where an open pixel goes: before the last </body>, else at the end


def find(text: str) -> Found:
    """The trackable links of ``text`` and where its body ends; :class:`Disagree`."""
    tree = LexborHTMLParser(text)
    seen = [_value(n.attributes) for n in tree.css("a") if "href" in n.attributes]
    base = next((_value(n.attributes) for n in tree.css("base") if "href" in n.attributes), "")
    base = _clean(base)
    if not _web(base):
        base = ""
    found = html_tags.scan(text)
    anchors = [a for a in (_href(text, start, end) for start, end in found.anchors) if a]
    _agree(seen, [value for value, _, _, _ in anchors])
    links = []
    for value, start, end, attributes in anchors:
        url = _clean(value)
        if NOTRACK in attributes or not url or url.startswith("#"):
            continue
        url = urljoin(base, url) if base else url
        if _web(url):
            links.append(Link(start, end, url, text[start - 1 : start] in ("'", '"')))
    return Found(links, found.body_end if found.body_end is not None else len(text))


def _value(attributes: dict[str, str | None]) -> str:
    return attributes.get("href") or ""


def _web(url: str) -> bool:
    """An absolute http(s) URL with a host."""
    head = url[:8].lower()
    start = 8 if head.startswith("https://") else 7 if head.startswith("http://") else 0
    return start > 0 and url[start : start + 1] not in ("", "/", "?", "#")


def _clean(value: str) -> str:
    """A URL as a browser reads an attribute's value: no white space around it, no tab or
    line break inside."""
    value = value.strip(_SPACE)
    if "\t" in value or "\n" in value or "\r" in value:
        value = value.translate(_URL_SPACE)
    return value


def _agree(seen: list[str], written: list[str]) -> None:
    """Lexbor's links (``seen``) and the tokenizer's (``written``) are the same, but for
    Lexbor's clones of the link before."""
    j = 0
    for value in seen:
        if j < len(written) and written[j] == value:
            j += 1
        elif j == 0 or written[j - 1] != value:
            raise Disagree(f"link {j} reads {value!r} in the parser")
    if j != len(written):
        raise Disagree(f"the parser sees {j} links, the tokenizer {len(written)}")


def _href(text: str, start: int, end: int) -> tuple[str, int, int, set[str]] | None:
    """(decoded value, start, end, attribute names) of the ``href`` of the start tag
    ``text[start:end]``; None when it has none."""
    spans = attribute_spans(text[start:end])
    href = next((s for s in spans if s[0] == "href"), None)
    if href is None:
        return None
    _, a, b = href
    return (
        decode_attribute(text[start + a : start + b]),
        start + a,
        start + b,
        {s[0] for s in spans},
    )


def attribute_spans(tag: str) -> list[tuple[str, int, int]]:
    """(lower-case name, value start, value end) of each attribute of a start tag's text,
    as the HTML5 tokenizer reads them (an attribute without a value: an empty span)."""
    n = len(tag)
    i = 1
    while i < n and tag[i] not in _SPACE and tag[i] not in "/>":
        i += 1  # the tag name
    out = []
    while i < n:
        if tag[i] in _SPACE or tag[i] == "/":
            i += 1
            continue
        if tag[i] == ">":
            break
        j = i + 1  # a name may begin with "="
        while j < n and tag[j] not in _SPACE and tag[j] not in "/>=":
            j += 1
        name, i = tag[i:j].lower(), j
        while i < n and tag[i] in _SPACE:
            i += 1
        if i >= n or tag[i] != "=":
            out.append((name, i, i))
            continue
        i += 1
        while i < n and tag[i] in _SPACE:
            i += 1
        if i < n and tag[i] in "\"'":
            close = tag.find(tag[i], i + 1)
            close = n if close < 0 else close
            out.append((name, i + 1, close))
            i = close + 1
        else:
            j = i
            while j < n and tag[j] not in _SPACE and tag[j] != ">":
                j += 1
            out.append((name, i, j))
            i = j
    return out


def decode_attribute(raw: str) -> str:
    """Character references decoded as in an attribute value (HTML5 13.2.5.72): a named
    reference without its ``;`` followed by ``=`` or a letter or digit stays as written
    (``?a=1&copy=2`` keeps ``&copy``). Line breaks are LF, as in any HTML text."""
    if "\r" in raw:
        raw = raw.replace("\r\n", "\n").replace("\r", "\n")
    if "&" not in raw:
        return raw
    out = []
    i = 0
    while (amp := raw.find("&", i)) >= 0:
        out.append(raw[i:amp])
        i = amp + 1
        if raw.startswith("#", i):
            hexadecimal = raw[i + 1 : i + 2] in ("x", "X")
            digits = _HEX if hexadecimal else _DECIMAL
            j = k = i + (2 if hexadecimal else 1)
            while k < len(raw) and raw[k] in digits:
                k += 1
            if k == j:  # no digits: not a reference
                out.append("&")
                continue
            k += 1 if raw.startswith(";", k) else 0
            out.append(html.unescape(raw[amp:k]))  # the HTML5 rules for odd numbers
            i = k
            continue
        name = _entity(raw, i)
        after = raw[i + len(name) : i + len(name) + 1] if name else ""
        historical = after == "=" or (after.isascii() and after.isalnum())
        if name is None or (not name.endswith(";") and historical):
            out.append("&")
            continue
        out.append(html5[name])
        i += len(name)
    out.append(raw[i:])
    return "".join(out)


def _entity(raw: str, i: int) -> str | None:
    """The longest entity name (with its ``;`` when it has one) at ``raw[i:]``."""
    end = i
    limit = min(len(raw), i + _LONGEST_ENTITY)
    while end < limit and raw[end].isascii() and raw[end].isalnum():
        end += 1
    if raw.startswith(";", end):
        end += 1
    for stop in range(end, i, -1):
        if raw[i:stop] in html5:
            return raw[i:stop]
    return None
