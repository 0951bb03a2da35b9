"""What the tracking tests share: the tokens, a message id, single-part and multipart
contents, and the exact HTML a tracked part must become."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

from postroute.kit import ids
from postroute.preparation import Cache, Links, Outgoing, Tokens, prepare
from postroute.preparation.tracking import PIXEL_STYLE

TOKENS = Tokens(["tracking-test-secret"])
BASE = "https://track.example.com"
LINKS = Links(BASE, TOKENS, "bounces.example.com")
MID = ids.new_id("msg")
HEAD = (
    b"From: Shop <shop@example.com>\r\nTo: a@example.org\r\nSubject: Hi\r\n"
    b"Date: Fri, 04 Dec 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n"
)


def single(body: bytes, *, cte: str = "7bit", ctype: str = 'text/html; charset="utf-8"') -> bytes:
    """A message whose one part is ``body`` as written (already encoded)."""
    return (
        HEAD + f"Content-Type: {ctype}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n".encode() + body
    )


def outgoing(
    content: bytes,
    *,
    opens: bool = True,
    clicks: bool = True,
    unsubscribe: bool = False,
    message_id: str = MID,
    content_id: str | None = "cnt_1",
) -> Outgoing:
    return Outgoing(
        message_id, "acct_1", f"<{message_id}@example.com>", "shop@example.com",
        "a@example.org", content, content_id, None, opens, clicks, unsubscribe,
    )  # fmt: skip


def relayed(
    content: bytes, cache: Cache | None = None, *, opens: bool = True, clicks: bool = True
) -> bytes:
    """The message as prepared for one recipient, its own header lines taken off."""
    data = prepare(outgoing(content, opens=opens, clicks=clicks), None, None, cache, LINKS).data
    return data[data.index(b"From: ") :]


def click(index: int, url: str, message_id: str = MID) -> str:
    return f"{BASE}/t/c/{TOKENS.click_token(message_id, index, url)}"


def pixel(message_id: str = MID) -> str:
    src = f"{BASE}/t/o/{TOKENS.open_token(message_id)}"
    return f'<img src="{src}" width="1" height="1" alt="" style="{PIXEL_STYLE}" />'


def html_of(data: bytes) -> str:
    """The decoded text of the message's first HTML part that is not an attachment."""
    parsed = email.message_from_bytes(data, policy=email.policy.SMTP)
    assert isinstance(parsed, EmailMessage)
    for part in parsed.walk():
        if part.get_content_type() == "text/html" and not part.is_attachment():
            return str(part.get_content())
    raise AssertionError("no HTML part")
