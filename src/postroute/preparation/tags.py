"""Where the ``<a>`` start tags and the last ``</body>`` are in an HTML text: the tag
level of the HTML5 tokenizer (WHATWG 13.2.5), written for this one question.

It follows the tokenizer's states from one ``<`` to the next with ``str.find`` (C speed:
the text between tags is never looked at one character at a time): comments (``<!--``
to ``-->`` or ``--!>``, and the abrupt ``<!-->``, ``<!--->``), bogus comments (``<!``,
``<?``, ``</`` not followed by a letter), doctype, start and end tags with their
quoted and unquoted attribute values (a ``>`` inside quotes does not end a tag), and
the elements whose content is text: ``script``, ``style``, ``xmp``, ``iframe``,
``noembed``, ``noframes``, ``title``, ``textarea`` up to their end tag, ``plaintext``
to the end. What it does not model (script escapes, CDATA in SVG, ``<template>``
content) the caller finds out by comparing with an HTML5 parser.

The stdlib ``html.parser`` answers the same question but is slower (it calls back for
every tag and decodes every text) and reads ``<title>`` and ``<textarea>`` content as
markup.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_SPACE = " \t\n\r\f"
_NAME_END = frozenset(_SPACE + "/>")
_TEXT_ELEMENTS = frozenset(
    {"script", "style", "xmp", "iframe", "noembed", "noframes", "title", "textarea"}
)
_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass
class Tags:
    anchors: list[tuple[int, int]] = field(default_factory=list)  # each <a ...> (start, end)
    body_end: int | None = None  # where the last </body> starts


def scan(text: str) -> Tags:
    """The ``<a>`` start tags of ``text`` and its last ``</body>``."""
    lower = text.lower()  # tag names compare in ASCII lower case
    if len(lower) != len(text):  # a letter whose lower case is longer: offsets must hold
        lower = text.translate(_LOWER)
    found = Tags()
    n = len(text)
    i = text.find("<")
    while 0 <= i < n - 1:
        c = text[i + 1]
        if c == "!":
            i = _declaration(text, i)
        elif c == "/":
            if text[i + 2 : i + 3].isascii() and text[i + 2 : i + 3].isalpha():
                name, end = _tag(text, lower, i + 2)
                if name == "body" and end < n:
                    found.body_end = i
                i = end + 1
            elif text[i + 2 : i + 3] == ">":
                i += 3
            else:
                i = _to(text, ">", i + 2)
        elif c == "?":
            i = _to(text, ">", i + 2)
        elif c.isascii() and c.isalpha():
            name, end = _tag(text, lower, i + 1)
            if end >= n:  # the text ends inside the tag: no tag at all
                break
            if name == "a":
                found.anchors.append((i, end + 1))
            i = end + 1
            if name in _TEXT_ELEMENTS:
                i = _end_tag(lower, name, i)
            elif name == "plaintext":
                break
        else:
            i += 1
        i = text.find("<", i) if i < n else -1
    return found


def _to(text: str, what: str, start: int) -> int:
    """Just after the next ``what`` from ``start``; the end of the text without one."""
    at = text.find(what, start)
    return len(text) if at < 0 else at + len(what)


def _declaration(text: str, i: int) -> int:
    """After a comment, doctype or bogus comment starting with ``<!`` at ``i``."""
    if text.startswith("--", i + 2):
        if text.startswith(">", i + 4):  # <!-->
            return i + 5
        if text.startswith("->", i + 4):  # <!--->
            return i + 6
        ends = [at for at in (text.find("-->", i + 4), text.find("--!>", i + 4)) if at >= 0]
        if not ends:
            return len(text)
        end = min(ends)
        return end + (3 if text.startswith("-->", end) else 4)
    return _to(text, ">", i + 2)  # doctype, CDATA outside SVG, anything else


def _tag(text: str, lower: str, start: int) -> tuple[str, int]:
    """A tag's lower-case name (it starts at ``start``) and where its ``>`` is (the end of
    the text when it has none). Attribute values in quotes may hold ``>``."""
    n = len(text)
    i = start
    while i < n and text[i] not in _NAME_END:
        i += 1
    name = lower[start:i]
    while True:
        gt = text.find(">", i)
        if gt < 0:
            return name, n
        eq = text.find("=", i, gt)
        if eq < 0:
            return name, gt
        j = eq + 1
        while j < n and text[j] in _SPACE:
            j += 1
        if j < n and text[j] in "\"'":
            close = text.find(text[j], j + 1)
            if close < 0:
                return name, n
            i = close + 1
        else:  # unquoted: up to white space or ">"
            while j < n and text[j] not in _SPACE and text[j] != ">":
                j += 1
            i = j


def _end_tag(lower: str, name: str, start: int) -> int:
    """Where the end tag of a text-only element begins (the end of the text without one)."""
    n = len(lower)
    at = start
    while (at := lower.find("</" + name, at)) >= 0:
        after = at + 2 + len(name)
        if after >= n or lower[after] in _NAME_END:
            return at
        at = after
    return n
