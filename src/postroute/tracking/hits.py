"""A hit: one request to an open pixel or a tracked link, as the endpoint saw it.

The endpoint writes hits to the local journal (:mod:`postroute.tracking.journal`), one
JSON line each; the recorder reads them back and turns them into events. A hit carries
its own id, made when the request came: a drain that runs again (after a crash) skips
hits whose id is stored already.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from postroute.kit import ids

OPEN = "o"
CLICK = "c"
HIT_PREFIX = "hit"
MAX_USER_AGENT = 512  # characters kept of a User-Agent header
MAX_IP = 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class BadLine(ValueError):
    """A journal line that is not a hit (a torn last line after a crash)."""


@dataclass(frozen=True, slots=True)
class Hit:
    id: str
    kind: str  # OPEN or CLICK
    message_id: str
    at: datetime
    method: str  # GET or HEAD
    user_agent: str
    ip: str
    link_index: int | None = None  # clicks only
    url: str | None = None  # clicks only


def new_hit(
    kind: str,
    message_id: str,
    at: datetime,
    method: str,
    user_agent: str,
    ip: str,
    link_index: int | None = None,
    url: str | None = None,
) -> Hit:
    return Hit(
        id=ids.new_id(HIT_PREFIX),
        kind=kind,
        message_id=message_id,
        at=at,
        method=method,
        user_agent=user_agent[:MAX_USER_AGENT],
        ip=ip[:MAX_IP],
        link_index=link_index,
        url=url,
    )


def _micros(at: datetime) -> int:
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def encode(hit: Hit) -> bytes:
    """One journal line (with its newline)."""
    line: dict[str, Any] = {
        "id": hit.id,
        "k": hit.kind,
        "m": hit.message_id,
        "t": _micros(hit.at),
        "r": hit.method,
        "a": hit.user_agent,
        "p": hit.ip,
    }
    if hit.kind == CLICK:
        line["i"] = hit.link_index
        line["u"] = hit.url
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Hit:
    try:
        raw = json.loads(line.decode())
        kind = raw["k"]
        if kind not in (OPEN, CLICK):
            raise BadLine(f"unknown kind {kind!r}")
        click = kind == CLICK
        return Hit(
            id=str(raw["id"]),
            kind=kind,
            message_id=str(raw["m"]),
            at=_EPOCH + timedelta(microseconds=int(raw["t"])),
            method=str(raw["r"]),
            user_agent=str(raw["a"]),
            ip=str(raw["p"]),
            link_index=int(raw["i"]) if click else None,
            url=str(raw["u"]) if click else None,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise BadLine(str(exc)) from None
