"""Tracking inside a MIME message: the HTML part is decoded and encoded again with its
own transfer encoding (quoted-printable and base64 lines of at most 76, a 7bit line
that grows past 998 octets makes the part quoted-printable), in its own charset; text
parts, attachments (an HTML file too), encapsulated messages, the boundaries, preamble
and epilogue keep every byte."""

from __future__ import annotations

import base64
import binascii

from tests.preparation.tracking_support import (
    HEAD,
    click,
    html_of,
    pixel,
    relayed,
    single,
)

HTML = (
    "<html><body>\r\n<p>Grüße aus Köln, «tschüss» " + "lang " * 30 + "</p>\r\n"
    '<a href="https://shop.example/bestellung/1?x=1&amp;y=2">Bestellung</a>\r\n'
    "</body></html>\r\n"
)
URL = "https://shop.example/bestellung/1?x=1&y=2"
TRACKED = HTML.replace("https://shop.example/bestellung/1?x=1&amp;y=2", click(0, URL)).replace(
    "</body>", pixel() + "</body>"
)


def test_a_quoted_printable_part_is_quoted_printable_again() -> None:
    encoded = binascii.b2a_qp(HTML.encode(), istext=True)
    out = relayed(single(encoded, cte="quoted-printable"))
    assert html_of(out) == TRACKED
    assert max(len(line) for line in out.split(b"\r\n")) <= 76
    assert b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" in out


def test_a_base64_part_is_base64_again_in_lines_of_76() -> None:
    encoded = base64.encodebytes(HTML.encode()).replace(b"\n", b"\r\n")
    out = relayed(single(encoded, cte="base64"))
    assert html_of(out) == TRACKED
    lines = out[out.index(b"base64\r\n\r\n") + 10 :].split(b"\r\n")
    assert lines[-1] == b""  # it ends with a line break, as the original part did
    assert {len(line) for line in lines[:-2]} == {76} and 0 < len(lines[-2]) <= 76


def test_a_7bit_line_that_grows_past_998_octets_makes_the_part_quoted_printable() -> None:
    urls = [f"https://shop.example/product/{n}/" + "p" * 30 for n in range(12)]
    line = " ".join(f'<a href="{u}">{n}</a>' for n, u in enumerate(urls))
    assert len(line) < 998
    html = f"<html><body>\r\n{line}\r\n</body></html>\r\n"
    out = relayed(single(html.encode()))
    assert out.count(b"Content-Transfer-Encoding") == 1
    assert b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" in out
    expected = " ".join(f'<a href="{click(n, u)}">{n}</a>' for n, u in enumerate(urls))
    assert html_of(out) == html.replace(line, expected).replace("</body>", pixel() + "</body>")
    # a part without the header gets one
    bare = HEAD + b'Content-Type: text/html; charset="us-ascii"\r\n\r\n' + html.encode()
    out = relayed(bare)
    assert b"Content-Transfer-Encoding: quoted-printable\r\n\r\n<html>" in out


def test_a_charset_of_its_own_is_kept_byte_for_byte() -> None:
    html = '<p>caf\xe9 \xa9</p><a href="https://shop.example/caf\xe9">x</a>'
    out = relayed(single(html.encode("latin-1"), ctype="text/html; charset=iso-8859-1"))
    expected = html.replace(
        "https://shop.example/caf\xe9", click(0, "https://shop.example/caf\xe9")
    )
    assert out == single(
        (expected + pixel()).encode("latin-1"), ctype="text/html; charset=iso-8859-1"
    )


def test_a_part_in_a_charset_that_is_not_ascii_based_or_unknown_stays_as_it_is() -> None:
    html = '<a href="https://shop.example/">x</a>'
    utf16 = single(html.encode("utf-16"), cte="binary", ctype="text/html; charset=utf-16")
    assert relayed(utf16) == utf16
    unknown = single(html.encode(), ctype="text/html; charset=x-no-such-charset")
    assert relayed(unknown) == unknown
    broken = single(b"!!!", cte="base64")
    assert relayed(broken) == broken


MIXED = (
    HEAD + b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
    b"This is a preamble with --outer-not-a-boundary in it.\r\n"
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
    b"--alt\r\n"
    b'Content-Type: text/plain; charset="us-ascii"\r\n\r\n'
    b"See https://shop.example/text-link\r\n"
    b"--alt\r\n"
    b'Content-Type: multipart/related; boundary="rel"; type="text/html"\r\n\r\n'
    b"--rel\r\n"
    b'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n'
    b'<html><body><a href="https://shop.example/html-link">x</a><img src="cid:logo">'
    b"</body></html>\r\n"
    b"--rel\r\n"
    b"Content-Type: image/png\r\nContent-ID: <logo>\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"iVBORw0KGgo=\r\n"
    b"--rel--\r\n"
    b"--alt--\r\n"
    b"--outer\r\n"
    b'Content-Type: text/html; name="page.html"\r\n'
    b'Content-Disposition: attachment; filename="page.html"\r\n\r\n'
    b'<a href="https://shop.example/attached">not mine</a>\r\n'
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n\r\n"
    b'Subject: forwarded\r\nContent-Type: text/html\r\n\r\n<a href="https://fw.example/">fw</a>\r\n'
    b"--outer--\r\n"
    b"An epilogue.\r\n"
)


def test_only_the_html_body_changes_in_a_multipart_message() -> None:
    out = relayed(MIXED)
    old = b'<a href="https://shop.example/html-link">x</a><img src="cid:logo"></body>'
    new = (
        f'<a href="{click(0, "https://shop.example/html-link")}">x</a><img src="cid:logo">'
        f"{pixel()}</body>"
    ).encode()
    assert out == MIXED.replace(old, new)


def test_a_message_with_lf_line_ends_keeps_them() -> None:
    content = single(b'<a href="https://shop.example/">x</a>\r\n').replace(b"\r\n", b"\n")
    out = relayed(content, opens=False)
    assert out == content.replace(
        b"https://shop.example/", click(0, "https://shop.example/").encode()
    )
