"""Tracking tokens: they carry what they say, any change to one is refused, tokens of
another key are refused, and every configured key is accepted (rotation)."""

from __future__ import annotations

import string

import pytest

from postroute.kit import ids
from postroute.preparation.tokens import BadToken, Tokens

TOKENS = Tokens(["current-key", "previous-key"])
MESSAGE = ids.new_id(ids.MESSAGE)
URL = "https://shop.example/order?id=1&lang=de#top"


def test_each_token_carries_what_it_was_made_with() -> None:
    assert TOKENS.read_open(TOKENS.open_token(MESSAGE)) == MESSAGE
    click = TOKENS.read_click(TOKENS.click_token(MESSAGE, 7, URL))
    assert (click.message_id, click.index, click.url) == (MESSAGE, 7, URL)
    unsubscribe = TOKENS.unsubscribe_token(MESSAGE)
    assert len(f"unsub+{unsubscribe}") <= 64  # an address's local part
    assert unsubscribe == unsubscribe.lower()
    assert TOKENS.read_unsubscribe(unsubscribe.upper()) == MESSAGE  # case may change in mail


@pytest.mark.parametrize("kind", ["open", "click"])
def test_every_one_character_change_is_refused(kind: str) -> None:
    token = TOKENS.open_token(MESSAGE) if kind == "open" else TOKENS.click_token(MESSAGE, 1, URL)
    read = TOKENS.read_open if kind == "open" else TOKENS.read_click
    for at in range(len(token)):
        for char in string.ascii_letters + string.digits + "-_":
            if char != token[at]:
                with pytest.raises(BadToken):
                    read(token[:at] + char + token[at + 1 :])
    for cut in (token[:-1], token[1:], token + "A", ""):
        with pytest.raises(BadToken):
            read(cut)


def test_a_token_of_one_kind_is_not_another() -> None:
    with pytest.raises(BadToken):
        TOKENS.read_click(TOKENS.open_token(MESSAGE))
    with pytest.raises(BadToken):
        TOKENS.read_open(TOKENS.click_token(MESSAGE, 0, URL))


def test_another_deployments_key_is_refused_and_an_older_key_of_ours_accepted() -> None:
    other = Tokens(["someone-elses-key"])
    with pytest.raises(BadToken):
        TOKENS.read_click(other.click_token(MESSAGE, 0, URL))
    with pytest.raises(BadToken):
        TOKENS.read_unsubscribe(other.unsubscribe_token(MESSAGE))
    old = Tokens(["previous-key"])
    assert TOKENS.read_open(old.open_token(MESSAGE)) == MESSAGE


def test_only_message_ids_are_made_into_tokens() -> None:
    for bad in ("msg_short", "smtp_" + MESSAGE[4:], "msg_" + "W" * 26, "msg_" + "V" * 26):
        with pytest.raises(ValueError, match="not a message id"):
            TOKENS.open_token(bad)
    with pytest.raises(ValueError, match="link index"):
        TOKENS.click_token(MESSAGE, 70_000, URL)
