"""Where MIME parts are: the plain Content-Type, Content-Disposition and
Content-Transfer-Encoding fields read without the ``email`` package say what it says."""

from __future__ import annotations

import pytest

from postroute.preparation import mime

BLOCKS = [
    b"",
    b"Content-Type: text/html\r\n",
    b'Content-Type: Text/HTML; Charset="UTF-8"\r\n',
    b"Content-Type: text/html; charset=iso-8859-1; format=flowed\r\n",
    b'Content-Type: multipart/mixed;\r\n boundary="==  odd;boundary ==" \r\n',
    b"Content-Type: multipart/alternative; boundary=simple\r\n",
    b'Content-Type: multipart/related; type="text/html"; boundary="b"\r\n',
    b"Content-Type: text\r\nContent-Transfer-Encoding: BASE64\r\n",
    b"Content-Type: text/html; charset*=utf-8''x\r\n",
    b"Content-Type: text/html (a comment); charset=utf-8\r\n",
    b'Content-Disposition: attachment; filename="a;b.html"\r\nContent-Type: text/html\r\n',
    b"Content-Disposition: INLINE\r\nContent-Transfer-Encoding:  quoted-printable \r\n",
    b"Content-Type: text/plain\r\nContent-Type: text/html\r\n",
    b'Content-Type: text/html; charset="utf\\-8"\r\n',
]


# Fields the plain reader leaves to the email package: RFC 2231 parameters, comments,
# quoted pairs.
SLOW = {b"charset*=", b"(a comment)", b"\\-"}


@pytest.mark.parametrize("block", BLOCKS)
def test_the_fields_read_as_the_email_package_reads_them(block: bytes) -> None:
    content = block + b"\r\nbody\r\n"
    fields = mime._fields(content, 0, len(block))
    fast = mime._read(content, fields, "text/plain")
    slow = mime._read_slowly(block, "text/plain")
    if any(mark in block for mark in SLOW):
        assert fast is None  # left to the email package
    else:
        assert fast == slow


def test_a_digest_holds_messages_and_nested_multiparts_are_followed() -> None:
    content = (
        b'Content-Type: multipart/digest; boundary="d"\r\n\r\n--d\r\n\r\nSubject: x\r\n\r\nhi\r\n'
        b'--d\r\nContent-Type: multipart/alternative; boundary="d2"\r\n\r\n--d2\r\n'
        b"Content-Type: text/html\r\n\r\n<p>x</p>\r\n--d2--\r\n--d--\r\n"
    )
    leaves = mime.leaves(content)
    assert [leaf.content_type for leaf in leaves] == ["message/rfc822", "text/html"]
    html = leaves[1]
    assert content[html.body[0] : html.body[1]] == b"<p>x</p>"
