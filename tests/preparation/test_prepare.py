"""``prepare``: the per-recipient headers in front of the shared content, the pool
header last; a failover swaps that one line and nothing else."""

from __future__ import annotations

import email
import email.policy

import pytest

from postroute.preparation import POOL_HEADER, Outgoing, prepare
from postroute.preparation.headers import with_headers

CONTENT = b"From: shop@example.com\r\nTo: a@example.org\r\nSubject: Hi\r\n\r\nHello.\r\n"
OUT = Outgoing(
    "msg_1", "acct_1", "<msg_1@example.com>", "shop@example.com", "a@example.org", CONTENT
)


def test_the_headers_go_in_front_of_the_content_untouched() -> None:
    prepared = prepare(OUT, "smtp_A")
    assert prepared.mail_from == "shop@example.com"
    head, _, _ = prepared.data.partition(b"From: ")
    assert head == (
        b"Message-ID: <msg_1@example.com>\r\n"
        b"X-Postroute-Message-ID: msg_1\r\n"
        b"X-Postroute-Account-ID: acct_1\r\n"
        b"X-Postroute-Pool-ID: smtp_A\r\n"
    )
    assert prepared.data.endswith(CONTENT)
    parsed = email.message_from_bytes(prepared.data, policy=email.policy.SMTP)
    assert parsed[POOL_HEADER] == "smtp_A" and parsed["Subject"] == "Hi"


def test_failover_swaps_only_the_pool_header() -> None:
    first = prepare(OUT, "smtp_A")
    second = first.for_pool("smtp_Backup")
    assert second.data == first.data.replace(
        b"X-Postroute-Pool-ID: smtp_A\r\n", b"X-Postroute-Pool-ID: smtp_Backup\r\n"
    )
    assert second.data[second.pool] == b"X-Postroute-Pool-ID: smtp_Backup\r\n"
    assert second.for_pool("smtp_A") == first  # and back
    assert second.mail_from == first.mail_from


def test_without_a_pool_there_is_no_pool_header_until_one_is_chosen() -> None:
    bare = prepare(OUT, None)
    assert POOL_HEADER.encode() not in bare.data
    assert bare.data[bare.pool] == b""
    assert bare.for_pool("smtp_A") == prepare(OUT, "smtp_A")


def test_a_message_with_bare_lf_gets_lf_headers() -> None:
    lf = Outgoing("msg_2", "acct_1", "<msg_2@example.com>", "s@example.com", "a@example.org",
                  b"Subject: Hi\n\nHello.\n")  # fmt: skip
    data = prepare(lf, "smtp_A").data
    assert b"\r" not in data and data.startswith(b"Message-ID: <msg_2@example.com>\n")


@pytest.mark.parametrize("value", ["a\r\nBcc: x@example.net", "a\x0bb", "a\x00"])
def test_no_control_character_reaches_a_header(value: str) -> None:
    with pytest.raises(ValueError, match="control character"):
        with_headers(CONTENT, [("X-Test", value)])
    with pytest.raises(ValueError, match="invalid header name"):
        with_headers(CONTENT, [("X Test", "v")])


def test_non_ascii_values_are_encoded_words() -> None:
    data = with_headers(CONTENT, [("X-Note", "Grüße")])
    assert data.startswith(b"X-Note: =?utf-8?")
    assert email.message_from_bytes(data, policy=email.policy.default)["X-Note"] == "Grüße"
