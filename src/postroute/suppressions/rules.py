"""The suppression list's rules, pure: what an address is keyed by, the reasons, and
which relay replies are hard bounces that suppress.

Addresses compare exactly on the local part (``Jane.Doe`` and ``jane.doe`` may be two
mailboxes, RFC 5321 section 2.4) and case-insensitively on the domain.

A relay's permanent reply suppresses its recipient only when its enhanced status code
says the address itself is bad: ``5.1.x`` (bad mailbox, bad domain, bad syntax, moved,
null MX) except ``5.1.7``/``5.1.8`` (the *sender's* address), and ``5.2.1`` (mailbox
disabled). Policy (``5.7.x``), content, capacity and relay trouble never suppress: those
are about the sender or the path, and the next message may well go. A reply without an
enhanced status code does not suppress either (nothing says it was the address).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from postroute.kit import ids

HARD_BOUNCE = "hard_bounce"
COMPLAINT = "complaint"
UNSUBSCRIBE = "unsubscribe"
MANUAL = "manual"
REASONS = (HARD_BOUNCE, COMPLAINT, UNSUBSCRIBE, MANUAL)

SOURCE_API = "api"
SOURCE_IMPORT = "import"

_STATUS = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\S)")
_SENDER_SIDE = {7, 8}  # 5.1.7 bad sender mailbox syntax, 5.1.8 bad sender's system


def key(email: str) -> str:
    """How the list stores and compares an address: local part as given, domain in
    lower case."""
    local, at, domain = email.strip().rpartition("@")
    return f"{local}@{domain.lower()}" if at else email.strip()


def enhanced_status(text: str) -> str | None:
    """The enhanced status code a reply's text starts with (``5.1.1``), if any."""
    found = _STATUS.match(text)
    return ".".join(found.groups()) if found else None


def suppresses(code: int, text: str) -> bool:
    """Whether a relay's reply (its code and text) is a hard bounce of the recipient."""
    status = enhanced_status(text)
    if code < 500 or status is None:
        return False
    klass, subject, detail = (int(p) for p in status.split("."))
    if klass != 5:
        return False
    if subject == 1:
        return detail not in _SENDER_SIDE
    return subject == 2 and detail == 1


def entry(
    account_id: str,
    email: str,
    reason: str,
    source: str,
    now: datetime,
    expires_in: timedelta | None = None,
) -> dict[str, Any]:
    """A row of the list (every column), for ``repository.upsert``."""
    return {
        "id": ids.new_id(ids.SUPPRESSION),
        "account_id": account_id,
        "email": key(email),
        "reason": reason,
        "source": source,
        "created_at": now,
        "expires_at": now + expires_in if expires_in is not None else None,
    }
