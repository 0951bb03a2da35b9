"""Prefixed, time-sortable ids (``smtp_01H...``): ULID layout, 48-bit ms time + 80 random bits."""

from __future__ import annotations

import secrets
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32


def _encode(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        out.append(_ALPHABET[rem])
    return "".join(reversed(out))


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
    return f"{prefix}_{_encode(ms, 10)}{_encode(rand, 16)}"


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
