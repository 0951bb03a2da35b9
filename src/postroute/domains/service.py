"""Sending domains: add (with their DKIM keys and the records to publish), read, delete,
rotate the DKIM keys. Verification is :mod:`postroute.domains.verification`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from postroute import errors
from postroute.domains import keys, records
from postroute.domains import repository as repo
from postroute.domains.dns import UNCHECKED
from postroute.domains.names import ascii_name
from postroute.kit import ids
from postroute.kit.clock import Clock
from postroute.kit.crypto import SecretBox
from postroute.models import Domain, DomainKey, DomainRecord
from postroute.models.domains import ACTIVE, PENDING, RETIRED

RETURN_PATH_SUB = "bounces"
TRACKING_SUB = "track"


@dataclass(frozen=True)
class Hosts:
    """Where the records point: the bounce MX and the public (tracking) host."""

    inbound: str
    public: str

    @classmethod
    def of(cls, inbound_host: str, public_url: str) -> Hosts:
        return cls(inbound_host.rstrip(".").lower(), urlsplit(public_url).hostname or "")


@dataclass(frozen=True)
class DomainView:
    domain: Domain
    keys: list[DomainKey]
    records: list[DomainRecord]


async def add(
    session: AsyncSession,
    account_id: str,
    name: str,
    algorithms: Sequence[str],
    box: SecretBox,
    hosts: Hosts,
    clock: Clock,
) -> DomainView:
    """A new domain (``pending``), its DKIM keys (RSA-2048, Ed25519 on request) and the
    records to publish. The caller commits."""
    ascii_form = ascii_name(name)
    if "rsa" not in algorithms:
        message = "rsa is required: most receivers do not check Ed25519 signatures yet"
        raise errors.ValidationFailed(
            message, details=[{"field": "dkim_algorithms", "message": message}]
        )
    if await repo.get_domain(session, account_id, ascii_form) is not None:
        raise errors.Conflict(f"the domain {ascii_form} is already added")
    if await repo.verified_elsewhere(session, account_id, ascii_form):
        raise errors.Conflict(f"the domain {ascii_form} is verified by another account")
    now = clock.now()
    domain = Domain(
        id=ids.new_id(ids.DOMAIN),
        account_id=account_id,
        name=ascii_form,
        status=PENDING,
        return_path_sub=RETURN_PATH_SUB,
        return_path_verified=False,
        tracking_sub=TRACKING_SUB,
        tracking_verified=False,
        created_at=now,
        updated_at=now,
    )
    session.add(domain)
    taken: set[str] = set()
    made = [await _new_key(domain.id, a, box, now, taken) for a in dict.fromkeys(algorithms)]
    session.add_all(made)
    try:
        await session.flush()
    except IntegrityError:  # a concurrent add of the same name won
        raise errors.Conflict(f"the domain {ascii_form} is already added") from None
    return await rebuild(session, domain, made, hosts, now)


async def rotate(
    session: AsyncSession, account_id: str, ref: str, box: SecretBox, hosts: Hosts, clock: Clock
) -> DomainView:
    """A new pending key per algorithm the domain signs with; it signs once its record is
    verified, and the key it replaces is kept published for 7 days."""
    domain = await require(session, account_id, ref)
    current = list(await repo.keys_of(session, [domain.id]))
    if any(k.state == PENDING for k in current):
        raise errors.Conflict(
            f"a new DKIM key of {domain.name} waits for its record: publish it and verify first"
        )
    now = clock.now()
    taken = {k.selector for k in current}
    algorithms = dict.fromkeys(k.algorithm for k in current if k.state == ACTIVE) or {"rsa": None}
    made = [await _new_key(domain.id, a, box, now, taken) for a in algorithms]
    session.add_all(made)
    domain.updated_at = now
    try:
        await session.flush()
    except IntegrityError:  # a concurrent rotation took the same selector
        raise errors.Conflict(f"a rotation of {domain.name}'s DKIM key is under way") from None
    return await rebuild(session, domain, [*current, *made], hosts, now)


async def rebuild(
    session: AsyncSession, domain: Domain, domain_keys: list[DomainKey], hosts: Hosts, now: datetime
) -> DomainView:
    """The records of ``domain`` made again from its keys (statuses kept where a record
    did not change); retired keys past their 7 days are dropped."""
    kept = [
        k for k in domain_keys if not (k.state == RETIRED and k.retire_at and k.retire_at <= now)
    ]
    for gone in [k for k in domain_keys if k not in kept]:
        await session.delete(gone)
    old = {
        (r.purpose, r.type, r.name, r.value): r for r in await repo.records_of(session, [domain.id])
    }
    wanted = records.wanted(
        domain.name,
        [records.PublishedKey(k.selector, k.algorithm, k.public_key) for k in kept],
        return_path_sub=domain.return_path_sub,
        tracking_sub=domain.tracking_sub,
        inbound_host=hosts.inbound,
        public_host=hosts.public,
        relay_hosts=await repo.relay_hosts(session, domain.account_id),
    )
    rows = []
    for w in wanted:
        before = old.get((w.purpose, w.type, w.name, w.value))
        rows.append(
            DomainRecord(
                id=ids.new_id(ids.DNS_RECORD),
                domain_id=domain.id,
                purpose=w.purpose,
                type=w.type,
                name=w.name,
                value=w.value,
                required=w.required,
                status=before.status if before else UNCHECKED,
                found=before.found if before else None,
                checked_at=before.checked_at if before else None,
            )
        )
    await repo.replace_records(session, domain.id, rows)
    await session.flush()
    return DomainView(domain, kept, rows)


async def view(session: AsyncSession, domain: Domain) -> DomainView:
    return DomainView(
        domain,
        list(await repo.keys_of(session, [domain.id])),
        list(await repo.records_of(session, [domain.id])),
    )


async def views(session: AsyncSession, account_id: str) -> list[DomainView]:
    domains = list(await repo.list_domains(session, account_id))
    all_keys = await repo.keys_of(session, [d.id for d in domains])
    all_records = await repo.records_of(session, [d.id for d in domains])
    return [
        DomainView(
            d,
            [k for k in all_keys if k.domain_id == d.id],
            [r for r in all_records if r.domain_id == d.id],
        )
        for d in domains
    ]


async def require(session: AsyncSession, account_id: str, ref: str) -> Domain:
    """The account's domain by id or name (a Unicode name is taken too)."""
    domain = await repo.get_domain(session, account_id, ref)
    if domain is None and not ref.startswith(f"{ids.DOMAIN}_"):
        try:
            domain = await repo.get_domain(session, account_id, ascii_name(ref))
        except errors.ValidationFailed:
            domain = None
    if domain is None:
        raise errors.NotFound(f"no domain {ref!r}")
    return domain


async def delete(session: AsyncSession, account_id: str, ref: str) -> None:
    await session.delete(await require(session, account_id, ref))
    await session.flush()


async def _new_key(
    domain_id: str, algorithm: str, box: SecretBox, now: datetime, taken: set[str]
) -> DomainKey:
    made = await asyncio.to_thread(keys.generate, algorithm)  # RSA: tens of milliseconds
    selector = keys.selector(now, algorithm, taken)
    taken.add(selector)
    return DomainKey(
        id=ids.new_id(ids.DKIM_KEY),
        domain_id=domain_id,
        selector=selector,
        algorithm=algorithm,
        private_key_enc=box.encrypt(made.private_pem),
        public_key=made.public,
        state=PENDING,
        created_at=now,
    )
