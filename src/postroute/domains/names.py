"""Domain names as users type them (``Bücher.Example``) and as DNS stores them
(``xn--bcher-kva.example``): IDNA 2008 with UTS 46 mapping, every label checked."""

from __future__ import annotations

import ipaddress
import re

import idna

from postroute import errors

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
MAX_NAME = 253


def ascii_name(name: str, field: str = "name") -> str:
    """The domain in its DNS (ASCII, lower-case) form; ``ValidationFailed`` naming what is
    wrong with it."""
    text = name.strip().rstrip(".")
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        pass
    else:
        _refuse(field, f"{name!r} is an IP address, not a domain name")
    try:
        encoded = idna.encode(text, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        _refuse(field, f"{name!r} is not a valid domain name: {exc}")
    labels = encoded.split(".")
    if len(labels) < 2:
        _refuse(field, f"{name!r} is not a valid domain name: it needs a dot (example.com)")
    if len(encoded) > MAX_NAME:
        _refuse(field, f"{name!r} is longer than {MAX_NAME} characters")
    for label in labels:
        if not _LABEL.fullmatch(label):
            _refuse(field, f"{name!r} is not a valid domain name: bad label {label!r}")
    if labels[-1].isdigit():
        _refuse(field, f"{name!r} is not a valid domain name: the last label is a number")
    return encoded


def unicode_name(ascii_form: str) -> str:
    """The name as users read it (``bücher.example`` for ``xn--bcher-kva.example``)."""
    try:
        return str(idna.decode(ascii_form))
    except (idna.IDNAError, UnicodeError):
        return ascii_form


def from_domain(address: str) -> str:
    """The domain of an address in its DNS form (a UTF-8 local part stays as it is)."""
    domain = address.rpartition("@")[2].strip().lower().rstrip(".")
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return domain


def _refuse(field: str, message: str) -> None:
    raise errors.ValidationFailed(message, details=[{"field": field, "message": message}])
