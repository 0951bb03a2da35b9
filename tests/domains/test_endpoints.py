"""/v1/domains with real DNS: the records to publish, verified, missing, mismatched, a
resolver that does not answer, the recheck that finds a record gone; bad input."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from postroute.config import Settings
from postroute.db import transaction
from postroute.domains.recheck import recheck_due
from postroute.kit.clock import FakeClock
from postroute.models import MessageEvent
from postroute.runtime import Runtime
from tests.conftest import Tenant, make_tenant
from tests.domains.conftest import add_domain, by_purpose, verified_domain, verify
from tests.support.dns import DnsServer, SilentDns


async def test_a_new_domain_lists_the_records_to_publish(
    client: httpx.AsyncClient, tenant: Tenant, dns: DnsServer
) -> None:
    domain = await add_domain(client, tenant, dkim_algorithms=["rsa", "ed25519"])
    assert domain["status"] == "pending" and domain["name"] == "example.com"
    kinds = [(r["purpose"], r["type"], r["required"]) for r in domain["records"]]
    assert kinds == [
        ("dkim", "TXT", True),
        ("dkim", "TXT", True),
        ("return_path_mx", "MX", True),
        ("return_path_spf", "TXT", True),
        ("tracking", "CNAME", False),
        ("spf", "TXT", False),
        ("dmarc", "TXT", False),
    ]
    rsa, ed = by_purpose(domain, "dkim")
    assert rsa["name"].endswith("._domainkey.example.com") and rsa["value"].startswith(
        "v=DKIM1; k=rsa; p=MII"
    )
    assert ed["value"].startswith("v=DKIM1; k=ed25519; p=")
    pieces = rsa["zone_value"].split('" "')
    assert len(pieces) == 2 and all(len(p.strip('"')) <= 255 for p in pieces)  # 2048 bits > 255
    (mx,) = by_purpose(domain, "return_path_mx")
    assert (mx["name"], mx["value"]) == ("bounces.example.com", "10 mx.postroute.test")
    assert domain["return_path"] == {"domain": "bounces.example.com", "verified": False}
    assert all(r["status"] == "unchecked" for r in domain["records"])


async def test_published_records_verify(
    client: httpx.AsyncClient, tenant: Tenant, dns: DnsServer
) -> None:
    done = await verified_domain(client, tenant, dns)
    assert all(r["status"] == "verified" for r in done["records"]), done["records"]
    assert [k["state"] for k in done["dkim"]] == ["active"]
    assert done["verified_at"] and done["last_checked_at"]
    listed = (await client.get("/v1/domains", headers=tenant.headers)).json()["data"]
    assert [d["status"] for d in listed] == ["verified"]


async def test_a_missing_record_and_a_wrong_value(
    client: httpx.AsyncClient, tenant: Tenant, dns: DnsServer
) -> None:
    domain = await add_domain(client, tenant)
    (mx,) = by_purpose(domain, "return_path_mx")
    dns.publish([r for r in domain["records"] if r["purpose"] != "return_path_mx"])
    dns.add(mx["name"], "MX", "10 elsewhere.example.net")
    (dkim,) = by_purpose(domain, "dkim")
    dns.remove(dkim["name"], "TXT")
    done = await verify(client, tenant, domain["id"])
    status = {r["purpose"]: (r["status"], r["found"]) for r in done["records"]}
    assert status["dkim"] == ("missing", None)
    assert status["return_path_mx"] == ("mismatch", "10 elsewhere.example.net.")
    assert done["status"] == "pending" and done["return_path"]["verified"] is False


async def test_a_resolver_that_does_not_answer_is_could_not_check(
    client: httpx.AsyncClient, tenant: Tenant, runtime: Runtime, dns: DnsServer
) -> None:
    done = await verified_domain(client, tenant, dns)
    with SilentDns() as silent:
        runtime.settings = runtime.settings.model_copy(update={"dns_resolvers": silent.resolvers})
        again = await verify(client, tenant, done["id"])
    assert {r["status"] for r in again["records"]} == {"could_not_check"}
    assert again["status"] == "verified"  # a lookup that failed changes nothing
    dns.set_servfail(True)
    runtime.settings = runtime.settings.model_copy(update={"dns_resolvers": dns.resolvers})
    failed = await verify(client, tenant, done["id"])
    assert {r["status"] for r in failed["records"]} == {"could_not_check"}
    assert "SERVFAIL" in failed["records"][0]["found"]


async def test_the_recheck_finds_a_record_gone_failing_and_an_event(
    client: httpx.AsyncClient, tenant: Tenant, runtime: Runtime, clock: FakeClock, dns: DnsServer
) -> None:
    done = await verified_domain(client, tenant, dns)
    assert await recheck_due(runtime) == 0  # not due yet
    (dkim,) = by_purpose(done, "dkim")
    dns.remove(dkim["name"], "TXT")
    clock.advance(6 * 3600 + 1)
    assert await recheck_due(runtime) == 1
    shown = (await client.get(f"/v1/domains/{done['id']}", headers=tenant.headers)).json()
    assert shown["status"] == "failing"
    assert by_purpose(shown, "dkim")[0]["status"] == "missing"
    events = await failing_events(runtime, tenant)
    assert len(events) == 1 and events[0]["domain"] == "example.com"
    assert events[0]["records"][0]["name"] == dkim["name"]


async def failing_events(runtime: Runtime, tenant: Tenant) -> list[dict[str, object]]:
    async with transaction(runtime.sessions) as session:
        stmt = sa.select(MessageEvent.data).where(
            MessageEvent.account_id == tenant.account_id, MessageEvent.type == "domain.failing"
        )
        return [dict(d) for d in (await session.scalars(stmt)).all()]


async def test_rotation_signs_with_the_new_key_only_once_verified(
    client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock, dns: DnsServer
) -> None:
    done = await verified_domain(client, tenant, dns)
    rotated = (
        await client.post(f"/v1/domains/{done['id']}/dkim/rotate", headers=tenant.headers)
    ).json()
    old, new = rotated["dkim"]
    assert (old["state"], new["state"]) == ("active", "pending")
    again = await client.post(f"/v1/domains/{done['id']}/dkim/rotate", headers=tenant.headers)
    assert again.status_code == 409  # one rotation at a time
    clock.advance(60)
    unpublished = await verify(client, tenant, done["id"])
    assert [k["state"] for k in unpublished["dkim"]] == ["active", "pending"]  # not yet
    dns.publish([r for r in rotated["records"] if new["selector"] in r["name"]])
    switched = await verify(client, tenant, done["id"])
    old, new = switched["dkim"]
    assert (old["state"], new["state"]) == ("retired", "active")
    assert old["retire_at"] is not None
    assert len(by_purpose(switched, "dkim")) == 2  # the old key stays published for 7 days
    clock.advance(7 * 86400 + 1)
    later = await verify(client, tenant, done["id"])
    assert [k["state"] for k in later["dkim"]] == ["active"]


@pytest.mark.parametrize(
    "name",
    [
        "not a domain",
        "localhost",
        "example..com",
        "-bad.example.com",
        "1.2.3.4",
        "a" * 64 + ".com",
        "x.123",
    ],
)
async def test_an_invalid_domain_name_is_422(
    client: httpx.AsyncClient, tenant: Tenant, name: str
) -> None:
    reply = await client.post("/v1/domains", json={"name": name}, headers=tenant.headers)
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["details"][0]["field"] == "name"
    assert (await client.get("/v1/domains", headers=tenant.headers)).json()["data"] == []


async def test_an_idn_is_stored_in_punycode_and_shown_both_ways(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    domain = await add_domain(client, tenant, "Bücher.Example")
    assert (domain["name"], domain["unicode_name"]) == ("xn--bcher-kva.example", "bücher.example")
    assert by_purpose(domain, "return_path_mx")[0]["name"] == "bounces.xn--bcher-kva.example"
    by_unicode = await client.get(f"/v1/domains/{domain['id']}", headers=tenant.headers)
    assert by_unicode.status_code == 200


async def test_a_domain_twice_or_verified_by_another_account_is_409(
    client: httpx.AsyncClient, tenant: Tenant, runtime: Runtime, dns: DnsServer
) -> None:
    await verified_domain(client, tenant, dns)
    twice = await client.post("/v1/domains", json={"name": "EXAMPLE.com"}, headers=tenant.headers)
    assert twice.status_code == 409 and "already added" in twice.json()["error"]["message"]
    other = await make_tenant(runtime, "globex")
    theirs = await client.post("/v1/domains", json={"name": "example.com"}, headers=other.headers)
    assert theirs.status_code == 409 and "another account" in theirs.json()["error"]["message"]
    assert (await client.get("/v1/domains", headers=other.headers)).json()["data"] == []


async def test_two_adds_of_one_domain_at_once_are_a_201_and_a_409(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """Both check that the name is free before either writes (keys take a while to make):
    the unique constraint decides, and the loser is told, not a 500."""
    replies = await asyncio.gather(
        *(
            client.post("/v1/domains", json={"name": name}, headers=tenant.headers)
            for name in ("race.example", "RACE.example")
        )
    )
    assert sorted(r.status_code for r in replies) == [201, 409], [r.text for r in replies]
    listed = (await client.get("/v1/domains", headers=tenant.headers)).json()["data"]
    assert [d["name"] for d in listed] == ["race.example"]


async def test_rsa_is_required_and_foreign_domains_are_404(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    reply = await client.post(
        "/v1/domains",
        json={"name": "example.com", "dkim_algorithms": ["ed25519"]},
        headers=tenant.headers,
    )
    assert reply.status_code == 422
    domain = await add_domain(client, tenant)
    for method, path in (
        ("GET", ""),
        ("DELETE", ""),
        ("POST", "/verify"),
        ("POST", "/dkim/rotate"),
    ):
        foreign = await client.request(
            method, f"/v1/domains/{domain['id']}{path}", headers=other_tenant.headers
        )
        assert foreign.status_code == 404, (method, path)
    gone = await client.delete(f"/v1/domains/{domain['id']}", headers=tenant.headers)
    assert gone.status_code == 204


@pytest.mark.parametrize("value", ["dns.example.com", "1.1.1.1:abc", "1.1.1.1:70000", "[::1]x"])
def test_a_resolver_setting_that_does_not_parse_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="DNS resolver"):
        Settings(_env_file=None, dns_resolvers=value)  # type: ignore[call-arg]


def test_resolvers_parse() -> None:
    settings = Settings(_env_file=None, dns_resolvers="1.1.1.1, 127.0.0.1:5353, [::1]:53")  # type: ignore[call-arg]
    assert settings.resolver_list == [("1.1.1.1", 53), ("127.0.0.1", 5353), ("::1", 53)]
    assert Settings(_env_file=None).resolver_list is None  # type: ignore[call-arg]
