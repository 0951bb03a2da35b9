"""Prefixed, time-sortable ids (``smtp_01H...``): ULID layout, 48-bit ms time + 80 random bits,
written in base32hex (``0-9A-V``), whose alphabet sorts like the numbers it encodes."""

from __future__ import annotations

import base64
import secrets
import threading
import time

_last = (0, 0)
_lock = threading.Lock()


def new_id(prefix: str) -> str:
    """Ids from one process sort in creation order, also within one millisecond."""
    global _last
    with _lock:
        ms = time.time_ns() // 1_000_000
        last_ms, last_rand = _last
        if ms <= last_ms:  # same millisecond (or clock step back): count up, as ULID does
            ms, rand = last_ms, (last_rand + 1) & ((1 << 80) - 1)
        else:
            rand = secrets.randbits(79)  # room to count up within the millisecond
        _last = (ms, rand)
    value = (ms << 80) | rand
    return f"{prefix}_{base64.b32hexencode(value.to_bytes(20, 'big')).decode()[6:]}"


# Prefixes, one per object kind.
ACCOUNT = "acct"
USER = "user"
API_KEY = "key"
POOL = "smtp"
MESSAGE = "msg"
BATCH = "batch"
CONTENT = "cnt"
EVENT = "evt"
ATTEMPT = "att"
IP_CREDENTIAL = "ipc"
