"""A real DNS server for tests (dnslib), on an ephemeral UDP port of 127.0.0.1, in a
thread: its zone is a dict the test changes as it goes, and it can answer SERVFAIL.
``SilentDns`` takes queries and never answers (a resolver that times out).

    with DnsServer() as dns:
        dns.add("sel._domainkey.example.com", "TXT", "v=DKIM1; k=rsa; p=...")
        settings.dns_resolvers = dns.resolvers   # "127.0.0.1:PORT"
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from dnslib import CNAME, MX, QTYPE, RCODE, RR, TXT
from dnslib.server import BaseResolver, DNSLogger, DNSServer

HOST = "127.0.0.1"


class _Zone(BaseResolver):  # type: ignore[misc]
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        self.servfail = False
        self.lock = threading.Lock()

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        kind = QTYPE[request.q.qtype]
        with self.lock:
            if self.servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            values = list(self.records.get((name, kind), ()))
            known = any(n == name for n, _ in self.records)
        if not values and not known:
            reply.header.rcode = RCODE.NXDOMAIN
        for value in values:
            reply.add_answer(RR(name, QTYPE.reverse[kind], rdata=_rdata(kind, value), ttl=60))
        return reply


def _rdata(kind: str, value: str) -> Any:
    if kind == "TXT":
        raw = value.encode()
        return TXT([raw[i : i + 255] for i in range(0, len(raw), 255)])
    if kind == "MX":
        preference, _, host = value.partition(" ")
        return MX(host, int(preference))
    if kind == "CNAME":
        return CNAME(value)
    raise ValueError(f"unsupported record type {kind}")


class DnsServer:
    def __init__(self) -> None:
        self.zone = _Zone()
        self._server = DNSServer(
            self.zone,
            address=HOST,
            port=0,
            logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data"),
        )

    @property
    def port(self) -> int:
        return int(self._server.server.server_address[1])

    @property
    def resolvers(self) -> str:
        """``POSTROUTE_DNS_RESOLVERS`` for this server."""
        return f"{HOST}:{self.port}"

    def add(self, name: str, kind: str, value: str) -> None:
        with self.zone.lock:
            self.zone.records.setdefault((name.rstrip(".").lower(), kind), []).append(value)

    def remove(self, name: str, kind: str) -> None:
        with self.zone.lock:
            self.zone.records.pop((name.rstrip(".").lower(), kind), None)

    def set_servfail(self, on: bool) -> None:
        with self.zone.lock:
            self.zone.servfail = on

    def txt(self, name: bytes, timeout: int = 5) -> bytes | None:
        """dkimpy's ``dnsfunc``: the TXT value published at ``name`` (what a receiving
        server's DKIM check fetches)."""
        with self.zone.lock:
            values = self.zone.records.get((name.decode().rstrip(".").lower(), "TXT"))
        return values[0].encode() if values else None

    def publish(self, records: list[dict[str, Any]]) -> None:
        """Publish what the API asked for (its ``records``, advice included)."""
        for r in records:
            self.add(r["name"], r["type"], r["value"])

    def __enter__(self) -> DnsServer:
        self._server.start_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()
        self._server.server.server_close()


class SilentDns:
    """Takes DNS queries on a UDP port and never answers."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((HOST, 0))

    @property
    def resolvers(self) -> str:
        return f"{HOST}:{self._sock.getsockname()[1]}"

    def __enter__(self) -> SilentDns:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()
