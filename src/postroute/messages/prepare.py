"""The per-recipient headers put in front of the shared content right before relaying."""

from __future__ import annotations

from typing import Protocol

from postroute.messages.compose import with_headers


class Addressed(Protocol):
    @property
    def message_id(self) -> str: ...
    @property
    def account_id(self) -> str: ...
    @property
    def message_id_header(self) -> str: ...


def recipient_headers(msg: Addressed, pool_id: str | None) -> list[tuple[str, str]]:
    headers = [
        ("Message-ID", msg.message_id_header),
        ("X-Postroute-Message-ID", msg.message_id),
        ("X-Postroute-Account-ID", msg.account_id),
    ]
    if pool_id:
        headers.append(("X-Postroute-Pool-ID", pool_id))
    return headers


def prepared_mime(msg: Addressed, content: bytes, pool_id: str | None) -> bytes:
    """The exact bytes relayed for this recipient (and shown by ``GET .../raw``)."""
    return with_headers(content, recipient_headers(msg, pool_id))
