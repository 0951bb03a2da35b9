"""List-Unsubscribe (https and mailto) and List-Unsubscribe-Post for a message that asks
for them; a message with its own List-Unsubscribe keeps it and gets no second one; the
tokens name the message."""

from __future__ import annotations

import email
import email.policy

from postroute.preparation import Cache, Links, prepare
from postroute.preparation.unsubscribe import LIST_UNSUBSCRIBE, LIST_UNSUBSCRIBE_POST
from tests.preparation.tracking_support import BASE, LINKS, MID, TOKENS, outgoing, single

TEXT = single(b"Hello.\r\n", ctype="text/plain")


def fields(data: bytes) -> email.message.Message:
    return email.message_from_bytes(data, policy=email.policy.SMTP)


def test_both_fields_with_an_https_url_and_a_mailto_on_the_return_path_domain() -> None:
    data = prepare(outgoing(TEXT, unsubscribe=True), "smtp_A", None, None, LINKS).data
    token = TOKENS.unsubscribe_token(MID)
    assert (
        f"List-Unsubscribe: <{BASE}/t/u/{token}>, "
        f"<mailto:unsub+{token}@bounces.example.com>\r\n"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        "X-Postroute-Pool-ID: smtp_A\r\n"
    ).encode() in data
    assert TOKENS.read_unsubscribe(token) == MID
    assert len(f"unsub+{token}") <= 64  # a local part's limit


def test_without_a_verified_return_path_there_is_no_mailto() -> None:
    links = Links("http://127.0.0.1:8000", TOKENS)
    parsed = fields(prepare(outgoing(TEXT, unsubscribe=True), None, None, None, links).data)
    token = TOKENS.unsubscribe_token(MID)
    assert parsed[LIST_UNSUBSCRIBE] == f"<http://127.0.0.1:8000/t/u/{token}>"
    assert parsed[LIST_UNSUBSCRIBE_POST] == "List-Unsubscribe=One-Click"


def test_off_or_without_links_there_is_none() -> None:
    for data in (
        prepare(outgoing(TEXT, unsubscribe=False), None, None, None, LINKS).data,
        prepare(outgoing(TEXT, unsubscribe=True), None).data,
    ):
        assert b"List-Unsubscribe" not in data


def test_a_message_with_its_own_list_unsubscribe_keeps_it_alone() -> None:
    own = b"List-Unsubscribe: <https://shop.example/unsubscribe?u=1>\r\n" + TEXT
    cache = Cache()
    for _ in range(2):  # the answer kept per content is the same
        parsed = fields(prepare(outgoing(own, unsubscribe=True), None, None, cache, LINKS).data)
        assert parsed.get_all(LIST_UNSUBSCRIBE) == ["<https://shop.example/unsubscribe?u=1>"]
        assert parsed.get_all(LIST_UNSUBSCRIBE_POST) is None
    post_only = b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" + TEXT
    parsed = fields(prepare(outgoing(post_only, unsubscribe=True), None, None, None, LINKS).data)
    assert len(parsed.get_all(LIST_UNSUBSCRIBE) or []) == 1
    assert parsed.get_all(LIST_UNSUBSCRIBE_POST) == ["List-Unsubscribe=One-Click"]
