"""Checking the records a domain should publish, with real DNS (dnspython) against the
configured resolvers.

Each record comes out ``verified``, ``missing`` (the name has no such record),
``mismatch`` (there is one, with another value: the value found is kept) or
``could_not_check`` (a timeout, SERVFAIL, no resolver answering): never ``missing`` for a
lookup that failed.
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from postroute.domains import records
from postroute.domains.records import Wanted

UNCHECKED = "unchecked"
VERIFIED = "verified"
MISSING = "missing"
MISMATCH = "mismatch"
COULD_NOT_CHECK = "could_not_check"


@dataclass(frozen=True)
class Found:
    status: str
    found: str | None  # what the DNS has (values joined with " | "), or why it could not tell


class Checker:
    def __init__(self, resolvers: list[tuple[str, int]] | None, timeout: float) -> None:
        resolver = dns.asyncresolver.Resolver(configure=resolvers is None)
        if resolvers is not None:
            resolver.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in resolvers]
        resolver.lifetime = timeout
        resolver.timeout = timeout
        resolver.cache = None
        self._resolver = resolver

    async def check(self, want: Wanted) -> Found:
        try:
            answer = await self._resolver.resolve(want.name, want.type, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return Found(MISSING, None)
        except dns.resolver.LifetimeTimeout:
            return Found(COULD_NOT_CHECK, "no answer from the DNS resolvers in time")
        except dns.resolver.NoNameservers:
            return Found(COULD_NOT_CHECK, "the DNS resolvers failed to answer (SERVFAIL)")
        except dns.exception.DNSException as exc:
            return Found(COULD_NOT_CHECK, f"DNS lookup failed: {type(exc).__name__}")
        if want.type == "TXT":
            values = [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        else:
            values = [r.to_text() for r in answer]
        return _compare(want, values)


def _compare(want: Wanted, values: list[str]) -> Found:
    found = " | ".join(values)
    if want.type == "MX":
        host = want.value.split()[-1].rstrip(".").lower()
        hosts = {v.split()[-1].rstrip(".").lower() for v in values}
        return Found(VERIFIED if host in hosts else MISMATCH, found)
    if want.type == "CNAME":
        targets = {v.rstrip(".").lower() for v in values}
        return Found(VERIFIED if want.value.rstrip(".").lower() in targets else MISMATCH, found)
    if want.purpose == records.DKIM:
        return _dkim(want.value, values, found)
    if want.purpose == records.DMARC_ADVICE:
        if any(v.replace(" ", "").upper().startswith("V=DMARC1") for v in values):
            return Found(VERIFIED, found)
        return Found(MISSING, found or None)
    return _spf(want.value, values, found)


def _dkim(value: str, values: list[str], found: str) -> Found:
    wanted = _tags(value)
    keys = [_tags(v) for v in values if "p=" in v.replace(" ", "")]
    if not keys:
        return Found(MISSING, found or None)
    for tags in keys:
        if tags.get("p") == wanted["p"] and tags.get("k", "rsa") == wanted.get("k", "rsa"):
            return Found(VERIFIED, found)
    return Found(MISMATCH, found)


def _spf(value: str, values: list[str], found: str) -> Found:
    spf = [v for v in values if v.strip().lower().startswith("v=spf1")]
    if not spf:
        return Found(MISSING, found or None)
    needed = {t for t in value.lower().split() if t.startswith("include:")}
    have = set(spf[0].lower().split())
    return Found(VERIFIED if needed <= have and len(spf) == 1 else MISMATCH, " | ".join(spf))


def _tags(text: str) -> dict[str, str]:
    """``v=DKIM1; k=rsa; p=AB CD`` → ``{"v": "DKIM1", "k": "rsa", "p": "ABCD"}`` (white
    space inside a value dropped, as DKIM does for ``p=``)."""
    out = {}
    for part in text.split(";"):
        name, eq, val = part.partition("=")
        if eq:
            out[name.strip().lower()] = "".join(val.split())
    return out
