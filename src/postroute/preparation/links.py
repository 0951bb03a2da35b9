"""The links of an HTML text, found once per content, as the places of their ``href``
values in the text as written (not as a parser would write it again).

Two readers: selectolax (Lexbor, an HTML5 parser: what a browser sees, entities decoded
as in an attribute) says which ``<a href>`` there are and what each value means; the
standard library's tokenizer (``html.parser``) says where each start tag is, and a
scan of that tag's text (the HTML5 attribute states) where its ``href`` value is. The
two must agree, link by link (Lexbor may repeat a link that misnested markup made it
clone), on every value, decoded as the HTML5 tokenizer decodes attribute values; when
they do not, :class:`Disagree` is raised and the caller leaves the part as it is.
Comments are nobody's links: a link inside ``<!--[if mso]>...<![endif]-->`` stays as
written, for both readers.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from html.entities import html5
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from selectolax.lexbor import LexborHTMLParser

NOTRACK = "data-pr-notrack"
_SPACE = " \t\n\r\f"
_URL_SPACE = str.maketrans("", "", "\t\n\r")  # what a URL parser removes inside a URL
_TRACKED = ("http", "https")
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
    if urlsplit(base).scheme.lower() not in _TRACKED:
        base = ""
    tags = _Tags(text)
    anchors = tags.anchors()
    _agree(seen, [value for value, _, _, _ in anchors])
    links = []
    for value, start, end, attributes in anchors:
        url = _clean(value)
        if NOTRACK in attributes or not url or url.startswith("#"):
            continue
        url = urljoin(base, url) if base else url
        parts = urlsplit(url)
        if parts.scheme.lower() in _TRACKED and parts.netloc:
            links.append(Link(start, end, url, text[start - 1 : start] in ("'", '"')))
    return Found(links, tags.body_end if tags.body_end is not None else len(text))


def _value(attributes: dict[str, str | None]) -> str:
    return attributes.get("href") or ""


def _clean(value: str) -> str:
    """A URL as a browser reads an attribute's value: no white space around it, no tab or
    line break inside."""
    return value.strip(_SPACE).translate(_URL_SPACE)


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


class _Tags(HTMLParser):
    """The tokenizer's start tags of ``<a>`` with an ``href``, and the last ``</body>``."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self._text = text
        self._lines = [0]
        at = text.find("\n")
        while at >= 0:
            self._lines.append(at + 1)
            at = text.find("\n", at + 1)
        self._anchors: list[tuple[str, int, int, set[str]]] = []
        self.body_end: int | None = None

    def anchors(self) -> list[tuple[str, int, int, set[str]]]:
        """(decoded value, start, end, attribute names) of each ``<a href>``."""
        self.feed(self._text)
        self.close()
        return self._anchors

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._lines[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        raw = self.get_starttag_text() or ""
        at = self._offset()
        if self._text[at : at + len(raw)] != raw:
            raise Disagree("a start tag is not where the tokenizer says")
        spans = attribute_spans(raw)
        href = next((s for s in spans if s[0] == "href"), None)
        if href is None:
            return
        _, start, end = href
        value = decode_attribute(raw[start:end])
        self._anchors.append((value, at + start, at + end, {s[0] for s in spans}))

    def handle_endtag(self, tag: str) -> None:
        if tag == "body":
            self.body_end = self._offset()


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
        name = next(
            (raw[i : i + n] for n in range(_LONGEST_ENTITY, 0, -1) if raw[i : i + n] in html5),
            None,
        )
        after = raw[i + len(name) : i + len(name) + 1] if name else ""
        historical = after == "=" or (after.isascii() and after.isalnum())
        if name is None or (not name.endswith(";") and historical):
            out.append("&")
            continue
        out.append(html5[name])
        i += len(name)
    out.append(raw[i:])
    return "".join(out)
