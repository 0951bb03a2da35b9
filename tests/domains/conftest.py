"""Domain fixtures: a real DNS server on loopback that the runtime's checks ask, and a
helper that adds a domain, publishes what the API asked for and verifies it."""

from __future__ import annotations

from typing import Any

import dkim
import httpx

from tests.conftest import Tenant
from tests.support.dns import DnsServer


async def add_domain(
    client: httpx.AsyncClient, tenant: Tenant, name: str = "example.com", **over: Any
) -> dict[str, Any]:
    reply = await client.post("/v1/domains", json={"name": name, **over}, headers=tenant.headers)
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


async def verify(client: httpx.AsyncClient, tenant: Tenant, domain_id: str) -> dict[str, Any]:
    reply = await client.post(f"/v1/domains/{domain_id}/verify", headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


async def verified_domain(
    client: httpx.AsyncClient,
    tenant: Tenant,
    dns: DnsServer,
    name: str = "example.com",
    **over: Any,
) -> dict[str, Any]:
    """A domain whose every record is published and verified."""
    domain = await add_domain(client, tenant, name, **over)
    dns.publish(domain["records"])
    done = await verify(client, tenant, domain["id"])
    assert done["status"] == "verified" and done["return_path"]["verified"], done
    return done


def by_purpose(domain: dict[str, Any], purpose: str) -> list[dict[str, Any]]:
    return [r for r in domain["records"] if r["purpose"] == purpose]


def dkim_results(data: bytes, dns: DnsServer) -> list[bool]:
    """dkimpy's verdict on each DKIM-Signature of ``data``, against the published keys."""
    checker = dkim.DKIM(data)
    return [checker.verify(idx=i, dnsfunc=dns.txt) for i in range(data.count(b"DKIM-Signature:"))]
