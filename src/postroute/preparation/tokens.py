"""Tracking tokens: what an open pixel, a tracked link and an unsubscribe address carry.

A token holds the message id (16 bytes), for a click the link's index and its URL, and
an HMAC-SHA256 (truncated to 128 bits) under a key derived (HKDF) from the secret key:
checking one reads no database, and a click can only ever lead to the URL that was in
the message. Every configured secret key is tried, the first one signs (rotation).

Open and click tokens are base64url; unsubscribe tokens are lower-case base32 (52
characters) so that ``unsub+<token>@<return-path domain>`` stays within the 64
characters of a local part and survives mail systems that change its case.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from postroute.kit import ids

OPEN = b"o"
CLICK = b"c"
UNSUBSCRIBE = b"u"
_MAC = 16
_ID = 16
_VERSION = b"\x01"
_MAX_INDEX = 0xFFFF
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUV"
_DIGITS = frozenset(_ALPHABET)
_ID_CHARS = 26


class BadToken(Exception):
    """Not a token this deployment made (altered, forged, another key, truncated)."""


@dataclass(frozen=True, slots=True)
class Click:
    message_id: str
    index: int  # the link's place among the message's tracked links, from 0
    url: str


def _derive(secret: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"postroute", info=b"tracking-v1"
    ).derive(secret.encode())


def _id_bytes(message_id: str) -> bytes:
    prefix, _, body = message_id.partition("_")
    if prefix != ids.MESSAGE or len(body) != _ID_CHARS:
        raise ValueError(f"not a message id: {message_id!r}")
    if not _DIGITS.issuperset(body):
        raise ValueError(f"not a message id: {message_id!r}")
    value = int(body, 32)  # base32hex is base 32 with the digits int() knows
    if value >> (8 * _ID):
        raise ValueError(f"not a message id: {message_id!r}")
    return value.to_bytes(_ID, "big")


def _id_text(raw: bytes) -> str:
    return f"{ids.MESSAGE}_{ids.encode(int.from_bytes(raw, 'big'))}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(token: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise BadToken("not base64url") from None
    if _b64(raw) != token:  # one spelling per token: no altered padding bits
        raise BadToken("not base64url")
    return raw


class Tokens:
    """Makes tokens with the first of ``secret_keys`` and reads those of any."""

    def __init__(self, secret_keys: list[str]) -> None:
        if not secret_keys:
            raise ValueError("at least one secret key is needed")
        # keyed once: a copy per token costs less than keying again (a token per link)
        self._keys = [hmac.new(_derive(k), digestmod=hashlib.sha256) for k in secret_keys]

    def _mac(self, key: hmac.HMAC, kind: bytes, payload: bytes) -> bytes:
        mac = key.copy()
        mac.update(kind + payload)
        return mac.digest()[:_MAC]

    def _seal(self, kind: bytes, payload: bytes) -> bytes:
        return payload + self._mac(self._keys[0], kind, payload)

    def _open(self, kind: bytes, raw: bytes, least: int) -> bytes:
        if len(raw) < least + _MAC:
            raise BadToken("too short")
        payload, mac = raw[:-_MAC], raw[-_MAC:]
        if not any(hmac.compare_digest(mac, self._mac(k, kind, payload)) for k in self._keys):
            raise BadToken("signature does not match")
        return payload

    def open_token(self, message_id: str) -> str:
        return _b64(self._seal(OPEN, _VERSION + _id_bytes(message_id)))

    def click_token(self, message_id: str, index: int, url: str) -> str:
        if not 0 <= index <= _MAX_INDEX:
            raise ValueError(f"link index out of range: {index}")
        payload = _VERSION + _id_bytes(message_id) + index.to_bytes(2, "big") + url.encode()
        return _b64(self._seal(CLICK, payload))

    def unsubscribe_token(self, message_id: str) -> str:
        raw = self._seal(UNSUBSCRIBE, _id_bytes(message_id))
        return base64.b32encode(raw).rstrip(b"=").decode().lower()

    def read_open(self, token: str) -> str:
        """The message id of an open token; :class:`BadToken` otherwise."""
        payload = self._open(OPEN, _unb64(token), 1 + _ID)
        if payload[:1] != _VERSION or len(payload) != 1 + _ID:
            raise BadToken("unknown layout")
        return _id_text(payload[1:])

    def read_click(self, token: str) -> Click:
        payload = self._open(CLICK, _unb64(token), 1 + _ID + 2)
        if payload[:1] != _VERSION:
            raise BadToken("unknown layout")
        index = int.from_bytes(payload[1 + _ID : 3 + _ID], "big")
        try:
            url = payload[3 + _ID :].decode()
        except UnicodeDecodeError:
            raise BadToken("the URL is not UTF-8") from None
        return Click(_id_text(payload[1 : 1 + _ID]), index, url)

    def read_unsubscribe(self, token: str) -> str:
        text = token.strip().upper()
        try:
            raw = base64.b32decode(text + "=" * (-len(text) % 8))
        except (binascii.Error, ValueError):
            raise BadToken("not base32") from None
        if base64.b32encode(raw).rstrip(b"=").decode() != text:
            raise BadToken("not base32")
        payload = self._open(UNSUBSCRIBE, raw, _ID)
        if len(payload) != _ID:
            raise BadToken("unknown layout")
        return _id_text(payload)
