"""Verifying a domain's records, on demand and by the worker's periodic recheck.

The DNS lookups are made outside any transaction (they may take seconds); their results
are then written in one. What they decide:

* each record's status, the value found and the time;
* a pending DKIM key whose record is verified starts signing; the active key it
  replaces (same algorithm) retires and stays published for 7 days;
* the domain is ``verified`` while an active key's record is; a verified domain whose
  active key's record is gone (missing or changed) becomes ``failing``, with a
  ``domain.failing`` event; a lookup that could not be made changes no status;
* the return path (bounce address domain) is verified when its MX and SPF records are.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from postroute.db.changes import Changes, apply
from postroute.domains import records
from postroute.domains.dns import COULD_NOT_CHECK, MISMATCH, MISSING, VERIFIED, Checker, Found
from postroute.domains.records import Wanted
from postroute.domains.service import DomainView, Hosts, rebuild
from postroute.events import names
from postroute.events.record import Event, record
from postroute.models import DomainRecord
from postroute.models.domains import ACTIVE, FAILING, PENDING, RETIRED
from postroute.models.domains import VERIFIED as DOMAIN_VERIFIED

log = logging.getLogger("postroute.domains")
DOMAIN_FAILING = names.DOMAIN_FAILING
RETIRE_AFTER = timedelta(days=7)


Key = tuple[str, str, str, str]  # a record: purpose, type, name, value


def key_of(row: DomainRecord) -> Key:
    return (row.purpose, row.type, row.name, row.value)


async def check(checker: Checker, rows: list[DomainRecord]) -> dict[Key, Found]:
    """Every record looked up at once: what the DNS has for each."""
    wanted = [Wanted(r.purpose, r.type, r.name, r.value, r.required) for r in rows]
    found = await asyncio.gather(*(checker.check(w) for w in wanted))
    return {key_of(r): f for r, f in zip(rows, found, strict=True)}


async def apply_results(
    session: AsyncSession,
    shown: DomainView,
    found: dict[Key, Found],
    hosts: Hosts,
    now: datetime,
    recheck: timedelta,
) -> DomainView:
    """The lookups' results onto the domain, its keys and records (the caller commits)."""
    domain = shown.domain
    by_selector = {}
    for row in shown.records:
        result = found.get(key_of(row))
        if result is None:
            continue
        row.status, row.found, row.checked_at = result.status, result.found, now
        if row.purpose == records.DKIM:
            by_selector[row.name.split("._domainkey.")[0]] = result.status
    for key in shown.keys:
        if key.state == PENDING and by_selector.get(key.selector) == VERIFIED:
            for old in shown.keys:
                if old.state == ACTIVE and old.algorithm == key.algorithm:
                    old.state, old.retire_at = RETIRED, now + RETIRE_AFTER
            key.state, key.activated_at = ACTIVE, now
    active = [by_selector.get(k.selector) for k in shown.keys if k.state == ACTIVE]
    was = domain.status
    if active and all(s == VERIFIED for s in active):
        domain.status = DOMAIN_VERIFIED
        domain.verified_at = domain.verified_at or now
    elif was == DOMAIN_VERIFIED and any(s in (MISSING, MISMATCH) for s in active):
        domain.status = FAILING
    rp = [
        r for r in shown.records if r.purpose in (records.RETURN_PATH_MX, records.RETURN_PATH_SPF)
    ]
    if rp and all(r.status != COULD_NOT_CHECK for r in rp):
        domain.return_path_verified = all(r.status == VERIFIED for r in rp)
    tracking = [r for r in shown.records if r.purpose == records.TRACKING]
    if tracking and tracking[0].status != COULD_NOT_CHECK:
        domain.tracking_verified = tracking[0].status == VERIFIED
    domain.last_checked_at = now
    domain.next_check_at = now + recheck if domain.status != PENDING else None
    if domain.status != was or any(k.state == ACTIVE and k.activated_at == now for k in shown.keys):
        domain.updated_at = now
    if was == DOMAIN_VERIFIED and domain.status == FAILING:
        gone = [
            {"type": r.type, "name": r.name, "status": r.status, "found": r.found}
            for r in shown.records
            if r.required and r.status in (MISSING, MISMATCH)
        ]
        log.warning("domain %s is failing: a required DNS record is gone", domain.name)
        changes = Changes()
        data = {"domain": domain.name, "domain_id": domain.id, "records": gone}
        record(changes, [Event(DOMAIN_FAILING, domain.account_id, None, now, data)])
        await apply(session, changes)
    await session.flush()
    return await rebuild(session, domain, shown.keys, hosts, now)
